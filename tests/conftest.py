"""Shared fixtures: offline, one thread per process, real ALFWorld data from ALFWORLD_DATA."""

from __future__ import annotations

import os
import socket
from pathlib import Path

# Before torch is imported anywhere: tests never touch the network and use one thread each.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Portable numerics (the AVX2 code paths of torch, MKL and oneDNN): the smoke model and everything it computes
# give the same floats on every x86-64 machine, so the regression figures hold anywhere.
from ragdistill.numerics import portable_env  # noqa: E402  (imports no torch)

os.environ.update(portable_env())

import pytest  # noqa: E402

# Fixtures that need the smoke model (built once, about 8 minutes on one core, then cached).
_NEEDS_SMOKE = {"smoke_model", "served_smoke", "chain"}


def pytest_collection_modifyitems(config, items):
    """Test files that need no smoke model run first. When some test needs it and it is not built yet, its
    build starts at once in the background (one thread), so that the other tests run meanwhile; the tests that
    need it wait on the build's lock. (Under pytest-xdist every worker collects and starts one; the second
    waits on the lock and finds the model built.)"""
    needs = {item.path for item in items if _NEEDS_SMOKE & set(item.fixturenames)}
    items.sort(key=lambda item: item.path in needs)  # stable: file order kept within each group
    from ragdistill.smoke import SmokeSpec, smoke_dest

    if needs and not (smoke_dest(SmokeSpec()) / "config.json").is_file():
        import subprocess
        import sys

        folder = smoke_dest(SmokeSpec()).parent
        folder.mkdir(parents=True, exist_ok=True)  # a fresh cache has no models folder yet
        log = open(folder / f".{os.getpid()}-build.log", "w")
        config._smoke_build = subprocess.Popen([sys.executable, "-m", "ragdistill.smoke"], stdout=log, stderr=log)


def pytest_sessionfinish(session):
    """A build started here is let finish (another process may be waiting for it)."""
    build = getattr(session.config, "_smoke_build", None)
    if build is not None:
        build.wait()


@pytest.fixture(scope="session")
def alfworld_root():
    """The ALFWorld data folder; a missing one fails with the message that says how to get it."""
    from ragdistill.data import require_alfworld

    return require_alfworld()


@pytest.fixture(scope="session")
def webshop_root(tmp_path_factory):
    """WEBSHOP_DATA when it holds data; else the small set unpacked from WEBSHOP_ARCHIVE (or ../shared/data)."""
    from ragdistill import data

    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "webshop_small_1000.tar.xz"
    archive = os.environ.get("WEBSHOP_ARCHIVE") or (str(shared) if shared.is_file() else "")
    if data.webshop_is_ready() or not archive:
        yield data.require_webshop()  # with no data at all: fails with the message that says how to get it
        return
    root = data.fetch_webshop(archive, tmp_path_factory.mktemp("webshop"))
    before = os.environ.get("WEBSHOP_DATA")
    os.environ["WEBSHOP_DATA"] = str(root)
    yield root
    if before is None:
        os.environ.pop("WEBSHOP_DATA", None)
    else:
        os.environ["WEBSHOP_DATA"] = before


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


@pytest.fixture(scope="module")
def module_outputs(tmp_path_factory):
    """Run outputs go to a temporary folder for a whole test module (a chain run shared by its tests)."""
    saved = os.environ.get("RAGDISTILL_OUTPUTS")
    folder = tmp_path_factory.mktemp("outputs")
    os.environ["RAGDISTILL_OUTPUTS"] = str(folder)
    try:
        yield folder
    finally:
        if saved is None:
            os.environ.pop("RAGDISTILL_OUTPUTS", None)
        else:
            os.environ["RAGDISTILL_OUTPUTS"] = saved


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def served_smoke(smoke_model, tmp_path_factory):
    """`transformers serve` on loopback, offline, started and stopped by the project's own ManagedServer; it loads
    the model folder each request names (the smoke model, or any other local folder), so one server serves every
    test."""
    from ragdistill.server import ManagedServer, ServerSpec

    hub_cache = tmp_path_factory.mktemp("hub")
    spec = ServerSpec("transformers-serve", smoke_model.path,
                      env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache), "OMP_NUM_THREADS": "1"})
    with ManagedServer(spec, tmp_path_factory.mktemp("serve") / "serve.log", ready_timeout=180) as server:
        yield server.base_url


def send_chat_completion(handler, text: str, model: str = "m") -> None:
    """Answer an OpenAI chat-completions request from a test's own HTTP handler with `text`."""
    import json

    reply = {"id": "x", "object": "chat.completion", "created": 0, "model": model,
             "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
             "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}}
    data = json.dumps(reply).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def assert_key_figures_equal_reference(run_dir, env: str) -> None:
    """A smoke chain's key figures equal its benchmark's part of tests/reference/smoke_chain.json (same model)."""
    import json

    from ragdistill.numerics import applies
    from ragdistill.regression import REFERENCE, differences, key_figures

    reference = json.loads(REFERENCE.read_text())[env]
    measured = key_figures(run_dir)
    if measured["model"] != reference["model"]:
        if not applies():
            pytest.skip("the smoke model's portable numerics exist for x86-64 only: this machine built other weights")
        pytest.fail(f"The smoke model built here ({measured['model']}) is not the one the reference was made with "
                    f"({reference['model']}): its build changed. If that was meant, run `make reference` and commit "
                    f"the new {REFERENCE.name} with the reason.")
    assert differences(measured, reference) == []
