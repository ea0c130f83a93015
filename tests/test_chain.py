"""The notebook chain on the smoke profile, executed once with papermill, then checked stage by stage."""

import json
import os

import pytest

from ragdistill.io import read_jsonl
from ragdistill.pipeline import CHAIN_PARAMS, run_chain

pytestmark = pytest.mark.slow
SMOKE = CHAIN_PARAMS["smoke"]


@pytest.fixture(scope="module")
def chain(alfworld_root, smoke_model, tmp_path_factory):
    """outputs/runs/chain/ after running every stage in order (the sizes `make run` uses on smoke)."""
    saved = os.environ.get("RAGDISTILL_OUTPUTS")
    os.environ["RAGDISTILL_OUTPUTS"] = str(tmp_path_factory.mktemp("outputs"))
    try:
        yield run_chain("smoke", run="chain", only=["01_failures", "02_hints", "03_teacher"])
    finally:
        if saved is None:
            os.environ.pop("RAGDISTILL_OUTPUTS", None)
        else:
            os.environ["RAGDISTILL_OUTPUTS"] = saved


def _metrics(run_dir, stage):
    return json.loads((run_dir / stage / "metrics.json").read_text())


def test_01_failures(chain):
    metrics = _metrics(chain, "01_failures")
    n_games, max_steps = SMOKE["01_failure_collection"]["n_games"], SMOKE["01_failure_collection"]["max_steps"]
    episodes = list(read_jsonl(chain / "01_failures" / "episodes.jsonl"))
    assert metrics["games"] == n_games and metrics["episodes"] == len(episodes) == 2 * n_games
    assert metrics["successes"] + metrics["failures"] == len(episodes)
    assert set(metrics["per_agent"]) == {"react", "stateact"}
    assert all(e["split"] == "train" and 1 <= e["steps"] <= max_steps for e in episodes)
    assert metrics["prompt_tokens"] == sum(e["prompt_tokens"] for e in episodes)
    assert all(e["prompt_tokens"] == sum(t["prompt_tokens"] for t in e["trajectory"]) for e in episodes)
    config = json.loads((chain / "01_failures" / "config.json").read_text())
    assert config["n_games"] == n_games and config["max_steps"] == max_steps


def test_02_hints_come_from_train_failures_only(chain):
    from ragdistill.hints import load_bank, validate_hints

    metrics = _metrics(chain, "02_hints")
    failures = [e for e in read_jsonl(chain / "01_failures" / "episodes.jsonl") if not e["won"]]
    assert metrics["extractor"] == "heuristic" and metrics["failures"] == len(failures)
    assert metrics["extracted"] + metrics["skipped"] == len(failures)
    bank = load_bank(chain / "02_hints" / "bank.jsonl")
    hints = [h for hs in bank.values() for h in hs]
    assert len(hints) == metrics["bank_size"] > 0
    failed_keys = {f"{e['game_id']}|{e['agent']}|{e['condition']}|{e['seed']}" for e in failures}
    assert all(h.episode in failed_keys and h.game_id.startswith("train/") for h in hints)
    assert all(validate_hints([h.text]) == [h.text] for h in hints)
    assert all(h.task_type == t for t, hs in bank.items() for h in hs)
    assert sum(v["kept"] for v in metrics["per_type"].values()) == len(hints)


def test_03_teacher_plays_the_same_games_with_retrieved_hints(chain):
    from ragdistill.hints import load_bank

    metrics = _metrics(chain, "03_teacher")
    base = list(read_jsonl(chain / "01_failures" / "episodes.jsonl"))
    teacher = list(read_jsonl(chain / "03_teacher" / "episodes.jsonl"))
    assert sorted((e["game_id"], e["agent"]) for e in teacher) == sorted((e["game_id"], e["agent"]) for e in base)
    assert all(e["condition"] == "hints" for e in teacher)
    bank = {t: {h.text for h in hs} for t, hs in load_bank(chain / "02_hints" / "bank.jsonl").items()}
    for e in teacher:
        assert 1 <= len(e["hints"]) <= 3 and set(e["hints"]) <= bank.get(e["task_type"], set())
    # Different games of the chain get different hint sets (the paper's BM25 ablation gave all the same).
    assert metrics["distinct_hint_sets"] == len({tuple(e["hints"]) for e in teacher}) > 1
    kept = list(read_jsonl(chain / "03_teacher" / "teacher.jsonl"))
    assert len(kept) == metrics["teacher_set"] == sum(e["won"] for e in teacher) and all(e["won"] for e in kept)
    all_row = next(r for r in metrics["paired_vs_base"] if r["task_type"] == "all")
    assert all_row["pairs"] == len(base) and all_row["base wins"] == sum(e["won"] for e in base)
    # The teacher's prompts carry the hint block: more prompt tokens per step than the base agent.
    per_step = lambda eps: sum(e["prompt_tokens"] for e in eps) / sum(e["steps"] for e in eps)  # noqa: E731
    assert per_step(teacher) > per_step(base)
