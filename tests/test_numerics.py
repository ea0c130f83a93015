"""Every processor builds the same smoke model: the weights on a grid make the kernels, the thread count and the
processor's last bits irrelevant (numerics.py); bench/numerics.py does the same for the whole model and both smoke
chains."""

import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from ragdistill.checks.numerics import PROBE_TASKS, behaviour, probe_chats, weights_hash
from ragdistill.miniature.smoke import SmokeSpec, snap

# Trained long enough for differences to compound over the steps, small enough to build twice in a few minutes.
SMALL = SmokeSpec(games_per_type=1, webshop_goals=2, train_steps=40, batch_tokens=2048, variants=1, chain_tasks=2,
                  chain_repeats=1)
OTHER_KERNELS = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
                 "ONEDNN_MAX_CPU_ISA": "ALL"}


def _build(dest: Path, spec: SmokeSpec, extra_env: dict, threads: int, dtype: str = "float64") -> Path:
    """Build `spec` in a fresh process whose libraries start with `extra_env` over this environment."""
    env = {**os.environ, **extra_env, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "ragdistill.miniature.smoke", "--spec", json.dumps(asdict(spec)), "--dest", str(dest),
           "--threads", str(threads), "--dtype", dtype]
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=900)
    return dest


def test_the_probes_cover_both_benchmarks_and_both_agents():
    chats = probe_chats()
    assert len(chats) == 2 * len(PROBE_TASKS)
    assert {env for env, _, _ in PROBE_TASKS} == {"alfworld", "webshop"}
    assert len({json.dumps(c) for c in chats}) == len(chats)  # no two alike


def test_snap_rounds_to_the_grid_and_reports_the_closest_midpoint():
    p = torch.nn.Parameter(torch.tensor([0.1, -0.30001, 2**-4 + 2**-6 * 0.49], dtype=torch.float64))
    closest = snap([p], 6)
    assert torch.equal(p.data * 64, torch.round(p.data * 64))  # every value on the grid of 1/64
    assert p.data.tolist() == [6 / 64, -19 / 64, 4 / 64]
    assert closest == pytest.approx(0.01)  # the third value was 0.49 of a step from its grid point
    q = torch.nn.Parameter(torch.tensor([0.1], dtype=torch.float64))
    assert snap([q], None) == 0.5 and q.item() == 0.1  # no grid: nothing rounded


def test_smoke_models_built_under_other_kernels_and_threads_have_the_same_bytes(alfworld_root, webshop_root, tmp_path):
    native = _build(tmp_path / "native", SMALL, {}, threads=1)
    other = _build(tmp_path / "other", SMALL, OTHER_KERNELS, threads=2)
    info = json.loads((native / "smoke_build.json").read_text())
    assert info["dtype"] == "float64" and info["demonstrations"]["alfworld"] > 0 and info["demonstrations"]["webshop"] > 0
    assert weights_hash(native) == weights_hash(other)
    a = behaviour(native)
    assert all(text.strip() for text in a["answers"])  # it says something to every probe
    # Nothing near a tie: the closest greedy choice is many orders of magnitude above float64's noise, and so is the
    # closest any weight came to a rounding midpoint (in absolute terms).
    assert a["margin"] > 1e-8
    assert info["closest_to_a_midpoint"] * 2.0 ** -SMALL.grid_bits > 1e-15


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="the kernel switches of this test are x86-64's")
def test_without_the_grid_those_kernels_build_other_bytes(alfworld_root, webshop_root, tmp_path):
    """The control of the test above: the same switches do change the float64 weights' bytes when nothing rounds
    them, so equal bytes there are the grid's doing."""
    spec = replace(SMALL, grid_bits=None, train_steps=10)
    native = _build(tmp_path / "native", spec, {}, threads=1)
    other = _build(tmp_path / "other", spec, OTHER_KERNELS, threads=2)
    assert weights_hash(native) != weights_hash(other)


def test_a_float32_control_is_built_in_float32_into_its_folder_only(alfworld_root, webshop_root, tmp_path):
    """bench/numerics.py's float32 control: the same spec with float32 weights, never put in the cache."""
    from ragdistill.miniature.smoke import build_smoke_model

    spec = replace(SMALL, grid_bits=None, train_steps=2)
    plain = _build(tmp_path / "f32", spec, {}, threads=1, dtype="float32")
    info = json.loads((plain / "smoke_build.json").read_text())
    assert info["dtype"] == "float32" and info["spec"] == asdict(spec)
    from safetensors import safe_open

    with safe_open(str(plain / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}
    with pytest.raises(ValueError, match="name its folder"):
        build_smoke_model(spec, dtype="float32")
