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
# No numeric pins: the smoke model's weights sit on a grid, so every processor builds the same bytes
# (ragdistill/checks/numerics.py).
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _no_protocol_phase(monkeypatch):
    """Each test starts outside any protocol phase; a stage config made in a test sets one only for that test."""
    monkeypatch.delenv("RAGDISTILL_PHASE", raising=False)

# Fixtures that need the smoke model (built once, then cached).
_NEEDS_SMOKE = {"smoke_model", "served_smoke", "chain"}


def pytest_collection_modifyitems(config, items):
    """Test files that need no smoke model run first. When some test needs it and it is not built yet, its
    build starts at once in the background (one thread), so that the other tests run meanwhile; the tests that
    need it wait on the build's lock. (Under pytest-xdist every worker collects and starts one; the second
    waits on the lock and finds the model built.)"""
    needs = {item.path for item in items if _NEEDS_SMOKE & set(item.fixturenames)}
    items.sort(key=lambda item: item.path in needs)  # stable: file order kept within each group
    from ragdistill.miniature.smoke import SmokeSpec, smoke_dest

    if needs and not (smoke_dest(SmokeSpec()) / "config.json").is_file():
        import subprocess
        import sys

        folder = smoke_dest(SmokeSpec()).parent
        folder.mkdir(parents=True, exist_ok=True)  # a fresh cache has no models folder yet
        log = open(folder / f".{os.getpid()}-build.log", "w")
        # One thread: the test processes run beside it, and a second thread that waits for a busy core at every
        # parallel step makes the build several times slower, not faster.
        config._smoke_build = subprocess.Popen([sys.executable, "-m", "ragdistill.miniature.smoke", "--threads", "1"],
                                               stdout=log, stderr=log)


def pytest_sessionfinish(session):
    """A build started here is let finish (another process may be waiting for it)."""
    build = getattr(session.config, "_smoke_build", None)
    if build is not None:
        build.wait()


@pytest.fixture(scope="session")
def alfworld_root():
    """The ALFWorld data folder; a missing one fails with the message that says how to get it."""
    from ragdistill.benchmarks.data import require_alfworld

    return require_alfworld()


@pytest.fixture(scope="session")
def webshop_root(tmp_path_factory):
    """WEBSHOP_DATA when it holds data; else the small set unpacked from WEBSHOP_ARCHIVE (or ../shared/data)."""
    from ragdistill.benchmarks import data

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
    from ragdistill.models.loading import load_model

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


def bench_module(name: str):
    """A script of bench/ loaded as a module (bench/ is no package), so that a test calls its functions."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    from ragdistill.generation.server import ManagedServer, ServerSpec

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

    from ragdistill.checks.regression import REFERENCE, differences, key_figures

    reference = json.loads(REFERENCE.read_text())[env]
    measured = key_figures(run_dir)
    if measured["model"] != reference["model"]:
        pytest.fail(f"The smoke model built here ({measured['model']}) does not answer the probes as the one the "
                    f"reference was made with ({reference['model']}): its build changed. If that was meant, run "
                    f"`make reference` and commit the new {REFERENCE.name} with the reason.")
    assert differences(measured, reference) == []


def assert_distilled_path_runs(run_dir) -> None:
    """Not vacuous: the teacher won an episode the base agent lost, examples from teacher and base successes,
    the leak check over every one of them with a non-empty bank, both students trained, and all four
    conditions played."""
    import json

    from ragdistill.method.agents import HINT_BEGIN
    from ragdistill.benchmarks import is_training_task
    from ragdistill.run.io import read_jsonl

    metrics = lambda stage: json.loads((run_dir / stage / "metrics.json").read_text())  # noqa: E731
    won = lambda stage: {(e["game_id"], e["agent"]) for e in read_jsonl(run_dir / stage / "episodes.jsonl") if e["won"]}  # noqa: E731
    base_won, teacher_won = won("01_failures"), won("03_teacher")
    assert teacher_won - base_won, "the hints changed no outcome: the teacher won only episodes the base agent won"
    dehint = metrics("04_dehint")
    distilled = list(read_jsonl(run_dir / "04_dehint" / "distilled.jsonl"))
    sft = list(read_jsonl(run_dir / "04_dehint" / "sft.jsonl"))
    assert 0 < len(distilled) == dehint["distilled"]["examples"] <= len(teacher_won)
    assert 0 < len(sft) == dehint["sft"]["examples"] <= len(base_won)
    # The distilled set holds an episode only the teacher won: the two students learn from different data.
    assert {(e["game_id"], e["agent"]) for e in distilled} - base_won
    check = dehint["leak_check"]
    assert check["leaks"] == 0 and check["examples_checked"] == len(distilled) + len(sft) and check["hint_texts_checked"] > 0
    assert all(HINT_BEGIN not in json.dumps(e["messages"]) and is_training_task(e["game_id"]) for e in distilled + sft)
    student = metrics("05_student")
    for name, examples in (("distilled", distilled), ("sft", sft)):
        adapter = student["adapters"][name]
        assert not adapter["skipped"] and adapter["examples"] == len(examples) and adapter["steps"] >= 1, name
        assert (run_dir / "05_student" / "adapters" / name / "adapter_config.json").is_file()
    evaluation = metrics("06_eval")
    assert set(evaluation["conditions_played"]) == {"base", "hints", "sft", "distilled"}
    episodes = list(read_jsonl(run_dir / "06_eval" / "episodes.jsonl"))
    assert all(sum(e["condition"] == c for e in episodes) > 0 for c in evaluation["conditions_played"])
    # The paired tests: teacher vs base and the distilled student vs base, SFT and the teacher, counted again here.
    from ragdistill.method.eval.tables import PAIRED_TESTS

    outcome = {(e["condition"], e["game_id"], e["agent"]): e["won"] for e in episodes}
    assert set(evaluation["paired"]) == {f"{a} vs {b}" for a, b in PAIRED_TESTS}
    for a, b in PAIRED_TESTS:
        pairs = [(g, agent) for c, g, agent in outcome if c == a and (b, g, agent) in outcome]
        test = evaluation["paired"][f"{a} vs {b}"]
        assert test["pairs"] == len(pairs) > 0
        assert test[f"only_{a}"] == sum(outcome[(a, *p)] and not outcome[(b, *p)] for p in pairs)
        assert test[f"only_{b}"] == sum(outcome[(b, *p)] and not outcome[(a, *p)] for p in pairs)


def assert_planted_leak_is_caught(run_dir) -> None:
    """One of the teacher's own hints, added to a real distilled example, fails the leak check."""
    import json

    from ragdistill.method.dehint import LeakError, leak_check
    from ragdistill.method.rollout.episodes import episode_key
    from ragdistill.method.hints import load_bank
    from ragdistill.run.io import read_jsonl

    distilled = list(read_jsonl(run_dir / "04_dehint" / "distilled.jsonl"))
    bank = [h.text for hs in load_bank(run_dir / "02_hints" / "bank.jsonl").values() for h in hs]
    teacher = {episode_key(e["game_id"], e["agent"], e["condition"], e["seed"]): e
               for e in read_jsonl(run_dir / "03_teacher" / "teacher.jsonl")}
    assert leak_check(distilled, bank)["examples_checked"] == len(distilled) > 0
    given = [(i, teacher[e["id"].split(":", 1)[1]]["hints"]) for i, e in enumerate(distilled)]
    i, hints = next((i, hints) for i, hints in given if hints)  # an example whose episode was given hints
    planted = json.loads(json.dumps(distilled))
    planted[i]["messages"][0]["content"] += "\n- " + hints[0]  # one this very episode was given
    with pytest.raises(LeakError, match="1 student example"):
        leak_check(planted, bank)
