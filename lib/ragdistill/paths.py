"""Where the project, its caches and its run outputs live."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    """Project cache (built models, checkpoints): RAGDISTILL_CACHE or ~/.cache/ragdistill."""
    root = os.environ.get("RAGDISTILL_CACHE") or Path.home() / ".cache" / "ragdistill"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def outputs_dir() -> Path:
    """Root of everything runs write: RAGDISTILL_OUTPUTS or <project>/outputs."""
    root = os.environ.get("RAGDISTILL_OUTPUTS") or PROJECT_ROOT / "outputs"
    return Path(root).expanduser()


def data_dir() -> Path:
    """Small files the project ships itself (few-shot examples, configs)."""
    return PROJECT_ROOT / "data"
