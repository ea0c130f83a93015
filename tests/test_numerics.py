"""The smoke model's decisions do not depend on the kernels, the thread count or the processor that built it
(numerics.py); bench/numerics.py does the same for the whole model and both smoke chains."""

import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from ragdistill.checks.numerics import PROBE_TASKS, behaviour, probe_chats, weights_hash
from ragdistill.miniature.smoke import SmokeSpec

# Trained long enough for differences to compound over the steps, small enough to build twice in a few minutes.
SMALL = SmokeSpec(games_per_type=1, webshop_goals=2, train_steps=40, batch_tokens=2048, variants=1, chain_tasks=2,
                  chain_repeats=1)
OTHER_KERNELS = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
                 "ONEDNN_MAX_CPU_ISA": "ALL"}


def _build(dest: Path, extra_env: dict, threads: int) -> Path:
    """Build SMALL in a fresh process whose libraries start with `extra_env` over this environment."""
    env = {**os.environ, **extra_env, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "ragdistill.miniature.smoke", "--spec", json.dumps(asdict(SMALL)), "--dest", str(dest),
           "--threads", str(threads)]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=900)
    return dest


def test_the_probes_cover_both_benchmarks_and_both_agents():
    chats = probe_chats()
    assert len(chats) == 2 * len(PROBE_TASKS)
    assert {env for env, _, _ in PROBE_TASKS} == {"alfworld", "webshop"}
    assert len({json.dumps(c) for c in chats}) == len(chats)  # no two alike


def test_smoke_models_built_under_other_kernels_and_threads_decide_alike(alfworld_root, webshop_root, tmp_path):
    native = _build(tmp_path / "native", {}, threads=1)
    other = _build(tmp_path / "other", OTHER_KERNELS, threads=2)
    info = json.loads((native / "smoke_build.json").read_text())
    assert info["dtype"] == "float64" and info["demonstrations"]["alfworld"] > 0 and info["demonstrations"]["webshop"] > 0
    a, b = behaviour(native), behaviour(other)
    assert a["answers"] == b["answers"] and a["id"] == b["id"]
    assert all(text.strip() for text in a["answers"])  # it says something to every probe
    # Nothing near a tie: the closest greedy choice is many orders of magnitude above float64's noise.
    assert min(a["margin"], b["margin"]) > 1e-8
    if platform.machine().lower() in ("x86_64", "amd64"):  # there the two kernel sets sum differently
        assert weights_hash(native) != weights_hash(other)
