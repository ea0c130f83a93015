"""Hint extraction: the schema, the heuristic extractor, dedup, and the LLM path against real local servers."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from ragdistill.benchmarks.alfworld.env import TYPE_ORDER, list_games
from ragdistill.generation.backends import OpenAIBackend
from ragdistill.benchmarks.alfworld.hints import diagnose
from ragdistill.method.hints import (
    MAX_CHARS,
    HintFormatError,
    build_bank,
    extract_all,
    heuristic_hints,
    load_bank,
    save_bank,
    similarity,
    validate_hints,
)
from ragdistill.run.io import read_jsonl

from conftest import free_port, send_chat_completion


def test_schema_accepts_good_answers():
    assert validate_hints('{"hints": ["Open the {receptacle} first."]}') == ["Open the {receptacle} first."]
    fenced = '```json\n{"hints": ["Heat the {object} in the microwave.", "Then  move it."]}\n```'
    assert validate_hints(fenced) == ["Heat the {object} in the microwave.", "Then move it."]
    assert validate_hints(["Look in the fridge."]) == ["Look in the fridge."]


@pytest.mark.parametrize(
    "answer, message",
    [
        ("I think you should open the drawer.", "not valid JSON"),
        ('{"rules": ["x"]}', "without a 'hints' key"),
        ('{"hints": "Open it."}', "should be a list"),
        ('{"hints": []}', "0 hints"),
        ('{"hints": ["a.", "b.", "c.", "d.", "e."]}', "5 hints"),
        ('{"hints": ["' + "x" * (MAX_CHARS + 1) + '"]}', f"{MAX_CHARS + 1} characters"),
        ('{"hints": ["Take apple 1 from the countertop."]}', "names the instance 'apple 1'"),
        ('{"hints": [3]}', "is int"),
        ('{"hints": ["  "]}', "is empty"),
    ],
)
def test_schema_rejects_bad_answers(answer, message):
    with pytest.raises(HintFormatError, match=message):
        validate_hints(answer)


def _game(task_type, alfworld_root):
    return next(g for g in list_games("train") if g.task_type == task_type)


def _record(game, steps, stop="max_steps"):
    traj = [{"action": a, "observation": o, "valid": o != "Nothing happens.", "output": f"action: {a}",
             "parsed": True, "prompt_tokens": 10, "completion_tokens": 3} for a, o in steps]
    return {"game_id": game.game_id, "task_type": game.task_type, "agent": "react", "condition": "base", "seed": 0,
            "won": False, "steps": len(traj), "stop_reason": stop, "task": "t", "first_observation": "room",
            "trajectory": traj, "split": "train"}


def test_heuristic_sees_a_skipped_heating_step(alfworld_root):
    game = _game("heat", alfworld_root)
    obj = game.task_folder.split("-")[1].lower()
    rec = game.task_folder.split("-")[3].lower()
    steps = [("go to countertop 1", f"You arrive at countertop 1. On the countertop 1, you see a {obj} 1."),
             (f"take {obj} 1 from countertop 1", f"You pick up the {obj} 1 from the countertop 1."),
             (f"go to {rec} 1", f"You arrive at {rec} 1."),
             (f"move {obj} 1 to {rec} 1", f"You move the {obj} 1 to the {rec} 1.")]
    hints = heuristic_hints(_record(game, steps))
    assert hints[0] == "Heat the {object} with the microwave before you move it to the {receptacle}."


def test_heuristic_sees_looping_and_prose(alfworld_root):
    game = _game("put", alfworld_root)
    steps = [("You are in a room and I think", "Nothing happens.")] * 5
    found = diagnose(_record(game, steps, stop="repeated_action"))
    assert any("exactly one game command" in h for h in found)
    assert any("do not repeat it" in h for h in found)
    obj = game.task_folder.split("-")[1].lower()
    assert any(h.startswith(f"To find the {obj}, search the ") for h in found)  # from the expert's plan


def test_heuristic_hints_are_valid_for_every_type(alfworld_root):
    for ttype in TYPE_ORDER:
        game = _game(ttype, alfworld_root)
        for steps in ([("look", "You are in the middle of a room.")], [("inventory", "Nothing happens.")] * 6):
            hints = heuristic_hints(_record(game, steps))
            assert 1 <= len(hints) <= 4
            assert validate_hints(hints) == hints  # <= 120 characters, no instance names


def test_dedup_within_type_only():
    entries = [
        {"status": "ok", "task_type": "heat", "episode": "e1", "game_id": "g1", "agent": "react", "extractor": "x",
         "hints": ["Heat the {object} with the microwave first.", "Open closed receptacles."]},
        {"status": "ok", "task_type": "heat", "episode": "e2", "game_id": "g2", "agent": "react", "extractor": "x",
         "hints": ["Heat the {object} with the microwave, first.", "Use the lamp."]},
        {"status": "ok", "task_type": "cool", "episode": "e3", "game_id": "g3", "agent": "react", "extractor": "x",
         "hints": ["Heat the {object} with the microwave first."]},
        {"status": "skipped", "task_type": "cool", "episode": "e4", "game_id": "g4", "agent": "react", "extractor": "x",
         "hints": []},
    ]
    assert similarity(entries[0]["hints"][0], entries[1]["hints"][0]) > 0.85
    bank, stats = build_bank(entries)
    assert stats["heat"] == {"raw": 4, "kept": 3} and stats["cool"] == {"raw": 1, "kept": 1}
    heat = [h for h in bank if h.task_type == "heat"]
    assert [h.episode for h in heat] == ["e1", "e1", "e2"]  # the first of near-duplicates is kept
    assert [h.id for h in heat] == ["heat-000", "heat-001", "heat-002"]


def test_bank_round_trip(tmp_path):
    bank, _ = build_bank([{"status": "ok", "task_type": "put", "episode": "e", "game_id": "g", "agent": "react",
                           "extractor": "heuristic", "hints": ["Look first.", "Then act."]}])
    save_bank(tmp_path / "bank.jsonl", bank)
    assert [h.text for h in load_bank(tmp_path / "bank.jsonl")["put"]] == ["Look first.", "Then act."]


def _failures(alfworld_root, n=3):
    games = [_game(t, alfworld_root) for t in TYPE_ORDER[:n]]
    return [_record(g, [("look", "You are in the middle of a room.")] * 2) for g in games]


def test_malformed_json_from_a_served_model_is_counted_and_nothing_is_lost(served_smoke, smoke_model, alfworld_root, tmp_path):
    """The smoke model behind `transformers serve` cannot write JSON: every answer is malformed."""
    failures = _failures(alfworld_root)
    backend = OpenAIBackend(smoke_model.path, base_url=served_smoke, max_retries=1, backoff=0.1)
    log = tmp_path / "extractions.jsonl"
    entries = extract_all(failures, log, "llm", backend, max_retries=1, max_new_tokens=24, progress=False)
    assert len(entries) == 3 and all(e["status"] == "skipped" for e in entries)
    assert all(len(e["attempts"]) == 2 and all(a["error"] for a in e["attempts"]) for e in entries)
    assert all(e["reason"].startswith("malformed after 2 attempts") for e in entries)
    assert all(isinstance(a["raw"], str) for e in entries for a in e["attempts"])  # the raw answers are kept
    bank, stats = build_bank(entries)
    assert bank == [] and sum(s["raw"] for s in stats.values()) == 0
    # A rerun does not ask again for episodes already logged.
    assert len(extract_all(failures, log, "llm", backend, progress=False)) == 3


class _Corrects(BaseHTTPRequestHandler):
    """An OpenAI-compatible server that answers in prose first and with valid JSON once told it was rejected."""

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        rejected = any("was rejected" in m["content"] for m in body["messages"] if m["role"] == "user")
        text = '{"hints": ["Open the {receptacle} before looking inside."]}' if rejected else "Sure! Here are hints:"
        send_chat_completion(self, text, body["model"])

    def log_message(self, *args):
        pass


def test_a_malformed_answer_is_asked_again(alfworld_root, tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _Corrects)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        backend = OpenAIBackend("m", base_url=f"http://127.0.0.1:{server.server_port}/v1", max_retries=0)
        entries = extract_all(_failures(alfworld_root, 2), tmp_path / "x.jsonl", "llm", backend, progress=False)
    finally:
        server.shutdown()
    assert [e["status"] for e in entries] == ["ok", "ok"]
    assert all(e["hints"] == ["Open the {receptacle} before looking inside."] for e in entries)
    assert all([a["error"] is not None for a in e["attempts"]] == [True, False] for e in entries)


def test_an_unreachable_server_stops_with_a_clear_message_and_logs_nothing(alfworld_root, tmp_path):
    backend = OpenAIBackend("m", base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=0)
    log = tmp_path / "x.jsonl"
    with pytest.raises(RuntimeError, match="cannot reach the server .* rerun to continue"):
        extract_all(_failures(alfworld_root, 2), log, "llm", backend, progress=False)
    assert list(read_jsonl(log)) == []  # both episodes are tried again on the next run
