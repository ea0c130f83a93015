"""Shared fixtures: offline, one thread per process, real ALFWorld data from ALFWORLD_DATA."""

from __future__ import annotations

import os

# Before torch is imported anywhere: tests never touch the network and use one thread each.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def alfworld_root():
    """The ALFWorld data folder; a missing one fails with the message that says how to get it."""
    from ragdistill.data import require_alfworld

    return require_alfworld()


@pytest.fixture(scope="session")
def smoke_model(alfworld_root):
    """The smoke profile's model, built once (cached under RAGDISTILL_CACHE)."""
    from ragdistill.models import load_model

    return load_model("smoke")


@pytest.fixture()
def outputs(tmp_path, monkeypatch):
    """Run outputs go to a temporary folder."""
    monkeypatch.setenv("RAGDISTILL_OUTPUTS", str(tmp_path / "outputs"))
    return tmp_path / "outputs"
