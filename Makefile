# Two commands do everything on a fresh machine:  make run   and   make test
# Both create .venv from the pinned files when it is missing or stale, register its Jupyter kernel,
# get the benchmark data, then run.

PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# auto: gpu-7b where a CUDA GPU is present, else cpu (ragdistill.models.profiles.default_profile; the notebooks' default too)
PROFILE ?= auto
RUN     ?=
SET     ?=
BENCHMARK ?= alfworld
PIP     := $(BIN)/python -m pip

# Data locations follow alfworld's own convention; archives are used when given (CI: ../shared/data).
SHARED_DATA      ?= ../shared/data
ALFWORLD_DATA    ?= $(HOME)/.cache/alfworld
ALFWORLD_ARCHIVE ?= $(wildcard $(SHARED_DATA)/alfworld_json_2.1.3.tar.xz)
# WebShop is optional for `make data`: fetched when an archive is given or WEBSHOP_DATA exists already.
WEBSHOP_DATA     ?= $(HOME)/.cache/webshop
WEBSHOP_ARCHIVE  ?= $(wildcard $(SHARED_DATA)/webshop_small_1000.tar.xz)
export ALFWORLD_DATA ALFWORLD_ARCHIVE WEBSHOP_DATA WEBSHOP_ARCHIVE

# One thread per process: torch's default thread count is far slower on a busy small machine. No numeric pins: the
# smoke model trains in float64 with its weights rounded to a grid after every step, so any processor builds the
# same bytes (lib/ragdistill/checks/numerics.py).
TEST_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false

.PHONY: run test data venv vllm clean-venv help reference

help:
	@echo "make run     run the notebook chain on PROFILE=$(PROFILE) on BENCHMARK=$(BENCHMARK) (alfworld or webshop) into outputs/runs/ (RUN=<dir> resumes one;"
	@echo "             SET='backend=vllm base_url=http://host:8000/v1' sets notebook parameters of the stages that have them)"
	@echo "make test    run the test suite"
	@echo "make reference  rerun both smoke chains and rewrite the regression tests' reference figures"
	@echo "make vllm    vLLM (the gpu profiles' engine) in its own environment, .venv-vllm (a CUDA machine)"
	@echo "make data    unpack or download the ALFWorld data into ALFWORLD_DATA=$(ALFWORLD_DATA)"
	@echo "             and the WebShop data into WEBSHOP_DATA=$(WEBSHOP_DATA) (from WEBSHOP_ARCHIVE)"

$(STAMP): pyproject.toml requirements/constraints.txt requirements/no-deps.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -c requirements/constraints.txt torch==2.13.0
	$(PIP) install -c requirements/constraints.txt -e ".[dev]"
	$(PIP) install --no-deps -r requirements/no-deps.txt
	$(BIN)/python -m ipykernel install --sys-prefix --name ragdistill --display-name "Python (ragdistill)"
	touch $(STAMP)

venv: $(STAMP)

# vLLM pins its own torch and transformers (vllm 0.33: torch 2.14, transformers < 5.21), which cannot share .venv;
# the stages start `.venv-vllm/bin/vllm serve` as a server and talk to it over HTTP.
VLLM_VENV := .venv-vllm
$(VLLM_VENV)/bin/vllm: requirements/vllm.txt
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -r requirements/vllm.txt
	touch $@

vllm: $(VLLM_VENV)/bin/vllm

data: $(STAMP)
	$(BIN)/ragdistill-data

# Two test processes (pytest-xdist), a test file each at a time; the smoke model builds beside them (conftest.py).
TEST_WORKERS ?= 2

# The smoke model (the tests' fixture) is built first, on every core up to SMOKE_THREADS, when the cache lacks it:
# alone on the cores it builds several times faster than beside the tests (a no-op once cached).
SMOKE_THREADS ?= 2

test: $(STAMP) data
	$(TEST_ENV) $(BIN)/python -m ragdistill.miniature.smoke --threads $(SMOKE_THREADS)
	$(TEST_ENV) $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# torch's default thread count is many times slower when the cores are also busy with the game
# worker processes (measured 6x and more on 2 cores); raise THREADS on a larger machine.
THREADS ?= 1

run: $(STAMP) data
	OMP_NUM_THREADS=$(THREADS) MKL_NUM_THREADS=$(THREADS) HF_HUB_DISABLE_TELEMETRY=1 $(BIN)/python -m ragdistill.run.pipeline --profile $(PROFILE) --env $(BENCHMARK) $(if $(RUN),--run $(RUN)) $(foreach s,$(SET),--set $(s))

# Rerun both smoke chains and rewrite tests/reference/smoke_chain.json; prints every figure that changed.
reference: $(STAMP) data
	$(TEST_ENV) $(BIN)/python -m ragdistill.checks.regression --update

clean-venv:
	rm -rf $(VENV)
