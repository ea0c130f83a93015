"""Portable CPU numerics: the same floats from the smoke model on any x86-64 machine.

A training run's floats depend on the kernels the processor gets: torch picks vectorised kernels by the
instruction set it finds (AVX-512 here, AVX2 there), and MKL and oneDNN do the same for matrix products.
Summation orders differ between them, and 1,000 training steps turn a last-bit difference into a different
model. Pinning every library to its AVX2 code path (which every x86-64 processor of the last decade has)
makes the processor irrelevant. The pins are read when the libraries start, so they must be in the
environment before torch is imported: `make test` exports them, the test suite's conftest sets them, and
the smoke model is always built in a child process that has them.
"""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path

PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own vectorised kernels (softmax, SiLU, norms, attention)
    "MKL_CBWR": "AVX2",  # MKL's conditional numerical reproducibility: one code path on every processor
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN, for the operators torch hands to it
}


def applies() -> bool:
    """The pins exist for x86-64; elsewhere the libraries have other kernels and no such switches."""
    return platform.machine().lower() in ("x86_64", "amd64")


def portable_env(base: dict | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with the pins set."""
    env = dict(os.environ if base is None else base)
    if applies():
        env.update(PORTABLE_ENV)
    return env


def is_portable() -> bool:
    """Whether this process runs with the pins (torch's kernels included, which cannot change once loaded)."""
    if not applies():
        return False
    if any(os.environ.get(k) != v for k, v in PORTABLE_ENV.items()):
        return False
    import torch

    return torch.backends.cpu.get_cpu_capability() == "AVX2"


def weights_hash(folder: str | Path) -> str:
    """SHA-256 (first 16 hex digits) of a model folder's weight files: the model's identity."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).glob("*.safetensors")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
