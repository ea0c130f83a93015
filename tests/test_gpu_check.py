"""bench/gpu_check.py --tiny: the GPU check's own code path, on CPU with tiny shapes, so it cannot rot."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_tiny_on_cpu(tmp_path):
    out = tmp_path / "tiny.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--tiny", "--out", str(out), "--work", str(tmp_path / "w")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    check = json.loads(out.read_text())
    assert check["tiny"] and check["gpu"] == "cpu" and not check["skipped"]
    for size, lengths in (("7b", ("512", "1024")), ("14b", ("1024",))):
        for length in lengths:
            train = check[f"train_{size}"][length]
            assert train["tokens"] >= int(length) and train["tokens_per_second"] > 0 and train["nf4"] == check["nf4"]
            setup = train["setup"]  # stage 05's own setup: checkpointing on, no float32 copies of the base
            assert setup["gradient_checkpointing"] and setup["embed_tokens"] == setup["lm_head"] == "torch.bfloat16"
        nb06 = check[f"nb06_{size}"]
        assert nb06["adapters"] == ["distilled", "sft"] and {"base", "sft", "distilled"} <= set(nb06)
    for run in check["rollout_7b"]:
        assert run["mode"] == "batched-reuse" and run["steps"] == 6
        assert 0 < run["prompt_tokens_computed"] < run["prompt_tokens_sent"]  # the KV caches were reused
        assert run["generated_tokens"] == run["batch"] * run["steps"] * run["new_tokens"]
        assert sorted(run["store_mib_at_step"]) == ["2", "4", "6"] and run["store_mib_after_release"] == 0
    assert [r["batch"] for r in check["rollout_7b"]] == [2, 4]
