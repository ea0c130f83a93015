"""bench/gpu_check.py --tiny: the GPU check's own code path, on CPU with tiny shapes, so it cannot rot."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import bench_module

ROOT = Path(__file__).resolve().parents[1]


def _run_tiny(tmp_path, *extra) -> dict:
    out = tmp_path / "tiny.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--tiny", "--out", str(out), "--work", str(tmp_path / "w"),
                           *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_gpu_check_runs_tiny_on_cpu(tmp_path):
    check = _run_tiny(tmp_path)
    assert check["tiny"] and check["gpu"] == "cpu" and not check["skipped"]
    assert check["nf4_matmul"] is True and check["nf4"]  # one real 4-bit matmul agreed with its dequantized weight
    for size, lengths in (("7b", ("512", "1024")), ("14b", ("1024",))):
        for length in lengths:
            train = check[f"train_{size}"][length]
            assert train["tokens"] >= int(length) and train["tokens_per_second"] > 0 and train["nf4"] == check["nf4"]
            setup = train["setup"]  # stage 05's own setup: checkpointing on, no float32 copies of the base
            assert setup["gradient_checkpointing"] and setup["embed_tokens"] == setup["lm_head"] == "torch.bfloat16"
        nb06 = check[f"nb06_{size}"]
        assert nb06["adapters"] == ["distilled", "sft"] and {"base", "sft", "distilled"} <= set(nb06)
    for run in check["rollout_7b"]:  # the scripted episode's whole 50 steps, with the store marks of the GPU run
        assert run["mode"] == "batched-reuse" and run["steps"] == 50
        assert 0 < run["prompt_tokens_computed"] < run["prompt_tokens_sent"]  # the KV caches were reused
        assert run["generated_tokens"] == run["batch"] * run["steps"] * run["new_tokens"]
        assert sorted(run["store_mib_at_step"], key=int) == ["10", "30", "50"] and run["store_mib_after_release"] == 0
    assert [r["batch"] for r in check["rollout_7b"]] == [2, 4]
    # Every adapter's optimizer started from no paged state left by the one before.
    assert all(r["paged_optimizer_bytes_at_start"] == 0 for size in ("7b", "14b") for r in check[f"train_{size}"].values())


@pytest.mark.slow
def test_gpu_check_without_bitsandbytes_trains_in_bf16_with_a_plain_optimizer(tmp_path):
    check = _run_tiny(tmp_path, "--without-bitsandbytes")
    assert check["nf4"] is False and "bitsandbytes" in check["nf4_matmul"] and not check["skipped"]
    assert check["optimizer"] == "adamw_torch"
    for train in (*check["train_7b"].values(), *check["train_14b"].values()):
        assert train["steps"] == 2 and train["nf4"] is False and train["setup"]["optimizer"] == "adamw_torch"
    assert check["nb06_7b"]["nf4"] is False and all(r["steps"] == 50 for r in check["rollout_7b"])


def test_the_check_plans_a_gpu_run_like_a_whole_24_gb_card():
    check = bench_module("gpu_check")
    # No bitsandbytes: TRL's 8-bit optimizer would raise ImportError; the plain one trains anywhere.
    assert check.training_optimizer(nf4=False, cuda=True) == "adamw_torch"
    assert check.training_optimizer(nf4=True, cuda=True) == "paged_adamw_8bit"
    # torch's allocator gets the emulated card less the CUDA context, so the process as a whole fits 22.5 GiB.
    gib = 2**30
    assert check.allocator_fraction(22.5, gib // 2, 141 * gib) * 141 * gib == pytest.approx(22 * gib)
    # The largest batch comes first and may use all the time up to the end: it reaches step 50.
    deadlines = check.rollout_deadlines((8, 32), now=100.0, end=400.0)
    assert list(deadlines) == [32, 8] and deadlines[32] == 400.0
