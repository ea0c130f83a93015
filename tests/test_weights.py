"""One base for the whole run: what each stage records it played on, stage 06's refusal to compare conditions
across different weights, and what the gpu profiles' vLLM serves (the NF4 base stage 05 trains on, fetched before
the server starts, with a share of the card from its free memory)."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from ragdistill.models import weights
from ragdistill.models.weights import NF4, MixedWeightsError, Weights

GPU_PROFILES = ("gpu-7b", "gpu-14b")


def _stage(run_dir, stage: str, w: Weights | None) -> None:
    (run_dir / stage).mkdir(parents=True, exist_ok=True)
    (run_dir / stage / "metrics.json").write_text(json.dumps({"weights": w.to_dict()} if w else {}))


def _vllm_program(monkeypatch, tmp_path):
    program = tmp_path / "vllm"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    monkeypatch.setenv("RAGDISTILL_VLLM", str(program))


def test_weights_differ_by_checkpoint_quantization_or_revision_but_not_by_compute_dtype():
    nf4 = Weights("Qwen/Qwen2.5-7B-Instruct", NF4, "bfloat16", "abc")
    assert nf4.differs(Weights("Qwen/Qwen2.5-7B-Instruct", NF4, "float16", "abc")) is None
    assert "quantized differently" in nf4.differs(Weights("Qwen/Qwen2.5-7B-Instruct", "none", "bfloat16"))
    assert "different checkpoints" in nf4.differs(Weights("Qwen/Qwen2.5-14B-Instruct-AWQ", "awq", "float16"))
    assert "different revisions" in nf4.differs(Weights("Qwen/Qwen2.5-7B-Instruct", NF4, "bfloat16", "def"))
    assert "cannot tell" in nf4.differs(weights.external("Qwen/Qwen2.5-7B-Instruct"))
    assert nf4.label == f"Qwen/Qwen2.5-7B-Instruct ({NF4})" and Weights("m", "none", "float32").label == "m"


def test_a_model_loaded_in_process_records_its_checkpoint_quantization_and_dtype():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    w = weights.of_model(LlamaForCausalLM(config), "/models/tiny")
    assert w == Weights("/models/tiny", "none", "float32", "")
    # The quantization stage 05 trains on (models.bnb_config) is recorded as the NF4 that vLLM serves in flight.
    from ragdistill.models.loading import bnb_config

    config.quantization_config = bnb_config(torch.bfloat16)
    assert weights.quantization_of(config) == NF4


def test_stage_06_refuses_conditions_on_other_weights_than_earlier_stages_unless_told(tmp_path):
    run = tmp_path / "run"
    nf4 = Weights("Qwen/Qwen2.5-7B-Instruct", NF4, "bfloat16")
    _stage(run, "01_failures", nf4)
    _stage(run, "03_teacher", nf4)
    _stage(run, "05_student", nf4)
    assert weights.refuse_mixed(run, nf4, allow=False) == {}
    bf16 = Weights("Qwen/Qwen2.5-7B-Instruct", "none", "bfloat16")
    with pytest.raises(MixedWeightsError, match=r"(?s)05_student: Qwen/Qwen2\.5-7B-Instruct quantized differently.*"
                                                r"mixed_weights=True"):
        weights.refuse_mixed(run, bf16, allow=False)
    said = []
    assert set(weights.refuse_mixed(run, bf16, allow=True, say=said.append)) == {"01_failures", "03_teacher", "05_student"}
    assert "mixed_weights=True" in said[0]
    _stage(run, "03_teacher", None)  # a stage that recorded nothing (an older run) is not held against the others
    assert set(weights.mismatches(run, bf16)) == {"01_failures", "05_student"}


class _Unplayable:
    """Conditions' models that answer no request: the refusal has to come before any episode."""

    def __init__(self, w: Weights):
        self.weights = w

    def missing(self, condition):
        return None

    def backend(self, condition):
        raise AssertionError("an episode was played before the weights were compared")


def test_play_conditions_checks_the_weights_before_any_episode(tmp_path, monkeypatch):
    from ragdistill.method.eval.conditions import play_conditions
    from ragdistill.run.config import EvalConfig

    monkeypatch.setenv("RAGDISTILL_OUTPUTS", str(tmp_path))
    cfg = EvalConfig.from_params({"profile": "smoke", "run": "r", "conditions": ["base"]})
    _stage(cfg.run_dir, "05_student", Weights("Qwen/Qwen2.5-7B-Instruct", NF4, "bfloat16"))
    with pytest.raises(MixedWeightsError, match="05_student"):
        play_conditions(cfg, [], {}, False, _Unplayable(Weights("Qwen/Qwen2.5-7B-Instruct", "awq", "float16")),
                        tmp_path / "episodes.jsonl", progress=False)


@pytest.mark.parametrize("profile", GPU_PROFILES)
def test_stage_06_vllm_serves_the_nf4_base_stage_05_trains_on_under_its_own_name(profile, monkeypatch, tmp_path):
    from ragdistill.generation.backends import server_spec, spec_weights
    from ragdistill.models.checkpoints import model_path
    from ragdistill.run.config import EvalConfig
    from ragdistill.models.loading import bnb_config
    from ragdistill.models.profiles import get_profile
    from ragdistill.generation.server import server_command

    _vllm_program(monkeypatch, tmp_path)
    cfg = EvalConfig.from_params({"profile": profile, "run": "r"})
    spec = server_spec(cfg, "vllm", {"sft": "/r/sft", "distilled": "/r/distilled"})
    line = " ".join(server_command(spec))
    model_id = get_profile(profile).model_id
    assert f"serve {model_id} " in line and f"--served-model-name {model_id} " in line
    assert "--quantization bitsandbytes" in line and "AWQ" not in line
    assert "--lora-modules sft=/r/sft distilled=/r/distilled" in line
    # What stage 05's load_base reads (model_path) with the quantization it loads (models.bnb_config).
    from transformers import PretrainedConfig

    trained = PretrainedConfig(quantization_config=bnb_config(torch.bfloat16))
    stage05 = Weights(model_path(get_profile(profile), cfg.env), weights.quantization_of(trained), "bfloat16")
    assert spec_weights(spec).differs(stage05) is None
    # load_4bit=False serves bf16: recorded as such, so stage 06 would refuse it against the NF4 students.
    bf16 = server_spec(EvalConfig.from_params({"profile": profile, "run": "r", "load_4bit": False}), "vllm")
    assert "--quantization" not in server_command(bf16) and spec_weights(bf16).differs(stage05)


@pytest.mark.parametrize("profile", GPU_PROFILES)
def test_transformers_serve_is_refused_on_the_gpu_profiles(profile):
    from ragdistill.generation.backends import resolve_backend
    from ragdistill.run.config import EvalConfig

    cfg = EvalConfig.from_params({"profile": profile, "run": "r", "backend": "transformers-serve"})
    with pytest.raises(ValueError, match="(?s)unquantized.*backend='vllm'"):
        resolve_backend(cfg)
    smoke = EvalConfig.from_params({"profile": "smoke", "run": "r", "backend": "transformers-serve"})
    assert resolve_backend(smoke) == "transformers-serve"


def test_vllms_share_of_the_card_comes_from_the_memory_free_at_start():
    from ragdistill.generation.serving import GIB, GpuMemory, memory_share, parse_nvidia_smi
    from ragdistill.generation.server import ServerError

    card = parse_nvidia_smi("21504, 24564, 8.9\n")[0]  # an RTX 4090 whose display holds 3 GB
    assert card == GpuMemory(21504 * 2**20, 24564 * 2**20, 8.9) and card.bf16
    share = memory_share(card, need_bytes=8 * GIB)
    assert share == int(100 * (card.free - GIB) / card.total) / 100 == 0.83
    assert share * card.total <= card.free - GIB  # vLLM starts only when the free memory holds its share
    assert memory_share(GpuMemory(24 * GIB, 24 * GIB, 8.6), 8 * GIB) == 0.95
    with pytest.raises(ServerError, match=r"only 6\.0 of its 24\.0 GiB are free.*--gpu-memory-utilization"):
        memory_share(GpuMemory(6 * GIB, 24 * GIB, 8.9), need_bytes=8 * GIB)


def _hub_cache(root, repo: str, commit: str = "0123456789abcdef0123456789abcdef01234567"):
    """A Hugging Face cache holding one complete snapshot of `repo`, laid out as the Hub client writes it."""
    folder = root / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    (snapshot / "config.json").write_text("{}")
    (snapshot / "model.safetensors").write_bytes(b"\0" * 4096)
    return snapshot


def test_vllm_starts_offline_from_the_fetched_snapshot_with_its_memory_share(monkeypatch, tmp_path):
    import huggingface_hub.constants

    from ragdistill.generation.backends import server_spec, spec_weights
    from ragdistill.run.config import FailureConfig
    from ragdistill.generation.server import server_command
    from ragdistill.generation.serving import GIB, GpuMemory, prepare_vllm

    _vllm_program(monkeypatch, tmp_path)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = _hub_cache(tmp_path / "hub", "Qwen/Qwen2.5-7B-Instruct")
    spec = server_spec(FailureConfig.from_params({"profile": "gpu-7b", "run": "r"}), "vllm")
    said = []
    ready = prepare_vllm(spec, GpuMemory(20 * GIB, 24 * GIB, 8.9), say=said.append)
    line = " ".join(server_command(ready))
    assert f"serve {snapshot} " in line and "--served-model-name Qwen/Qwen2.5-7B-Instruct " in line
    assert ready.env["HF_HUB_OFFLINE"] == "1" and "--gpu-memory-utilization 0.79" in line
    assert "0.79" in said[-1]
    assert spec_weights(ready).revision == snapshot.name  # the exact snapshot is recorded
    # A share set in server_args is the user's: none is derived.
    spec = server_spec(FailureConfig.from_params({"profile": "gpu-7b", "run": "r",
                                                  "server_args": "--gpu-memory-utilization 0.5"}), "vllm")
    assert server_command(prepare_vllm(spec, GpuMemory(20 * GIB, 24 * GIB, 8.9))).count("--gpu-memory-utilization") == 1


def test_a_snapshot_missing_from_the_cache_is_fetched_before_the_server_starts(monkeypatch, tmp_path):
    import huggingface_hub.constants

    from ragdistill.generation.serving import fetch_snapshot

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    said = []
    with pytest.raises(Exception, match="(?i)offline|local|cannot find|connection"):  # no network here: it tried
        fetch_snapshot("Qwen/Qwen2.5-7B-Instruct", say=said.append)
    assert said and "fetching Qwen/Qwen2.5-7B-Instruct" in said[0]
    assert fetch_snapshot(str(tmp_path)) == tmp_path  # a folder is used as it is
    assert sys.modules.get("vllm") is None
