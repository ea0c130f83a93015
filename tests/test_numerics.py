"""Portable numerics: the smoke model's weights do not depend on which kernels the processor would pick."""

import json
import os
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from ragdistill.numerics import PORTABLE_ENV, applies, is_portable, weights_hash
from ragdistill.smoke import SmokeSpec

pytestmark = pytest.mark.skipif(not applies(), reason="the numeric pins exist for x86-64 only")
TINY = SmokeSpec(games_per_type=1, webshop_goals=2, train_steps=3, variants=1, chain_tasks=2, chain_repeats=1)
NATIVE = {k: "" for k in PORTABLE_ENV}  # empty: each library picks the fastest path this processor has


def _build(dest: Path, outer: dict, spec: SmokeSpec = TINY, pinned_child: bool = True) -> str:
    """Build `spec` from a process started with `outer` over this environment; the weights' hash."""
    env = {k: v for k, v in {**os.environ, **outer}.items() if v != ""}
    if pinned_child:  # the project's entry point: it pins its own numerics
        code = "import sys; from ragdistill.smoke import main; sys.exit(main(sys.argv[1:]))"
    else:  # the build itself, in whatever numerics the process has: the control
        code = ("import json, sys; from pathlib import Path; from ragdistill.smoke import SmokeSpec, _build; "
                "_build(SmokeSpec(**json.loads(sys.argv[2])), Path(sys.argv[4]), False)")
    args = ["--spec", json.dumps(asdict(spec)), "--dest", str(dest)]
    subprocess.run([sys.executable, "-c", code, *args], env=env, check=True, capture_output=True, timeout=900)
    return weights_hash(dest)


def test_the_suite_runs_with_portable_numerics():
    assert is_portable()


def test_smoke_build_gives_the_same_weights_whatever_kernels_the_caller_has(alfworld_root, webshop_root, tmp_path):
    callers = {
        "native": NATIVE,  # AVX-512 where the processor has it
        "scalar kernels, MKL compatible": {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE",
                                           "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    }
    hashes = {name: _build(tmp_path / f"m{i}", outer) for i, (name, outer) in enumerate(callers.items())}
    assert len(set(hashes.values())) == 1, hashes
    # The control: the same build without the pins, on scalar kernels, gives other weights, so the pins are
    # what makes the hashes equal (and this test could tell if they stopped working).
    assert _build(tmp_path / "control", {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"},
                  pinned_child=False) != hashes["native"]
    info = json.loads((tmp_path / "m0" / "smoke_build.json").read_text())
    assert info["demonstrations"]["alfworld"] > 0 and info["demonstrations"]["webshop"] > 0
    assert all(g.startswith(("train/", "synthetic/")) for g in info["train_games"])


def test_the_makefile_pins_what_the_library_pins():
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    line = re.search(r"^PORTABLE := (.*)$", makefile, re.MULTILINE).group(1)
    assert dict(pair.split("=", 1) for pair in line.split()) == PORTABLE_ENV
