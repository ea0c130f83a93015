"""The notebook chain on the smoke profile with env=webshop, executed once with papermill, checked stage by stage.

The smoke model learnt WebShop's actions from reserved goals and, as a fixture, the goals the chain's stages 01
and 03 play (smoke.demo_chats): here it buys, some purchases earn the full reward, and the method's whole path
runs: teacher successes, distilled and SFT examples, the leak check over them, both students trained and all
four conditions evaluated. Goals, splits, step limits, categories as hint types and scores are checked too,
and no test goal is seen before notebook 06.
"""

import json
from pathlib import Path

import pytest

from conftest import assert_distilled_path_runs, assert_key_figures_equal_reference, assert_planted_leak_is_caught
from ragdistill.benchmarks import get_task, is_training_task
from ragdistill.run.io import read_jsonl
from ragdistill.run.pipeline import CHAIN_PARAMS, STAGES, run_chain
from ragdistill.benchmarks.webshop.data import WEBSHOP_CATEGORIES

pytestmark = pytest.mark.slow
SMOKE = CHAIN_PARAMS["smoke"]


@pytest.fixture(scope="module")
def chain(webshop_root, smoke_model, module_outputs):
    return run_chain("smoke", run="webshop", env="webshop")


def _metrics(run_dir, stage):
    return json.loads((run_dir / stage / "metrics.json").read_text())


def test_every_stage_ran_on_webshop(chain):
    for notebook, stage in STAGES.items():
        assert (chain / stage / "metrics.json").is_file() and (chain / stage / f"{notebook}.ipynb").is_file(), stage
        assert json.loads((chain / stage / "config.json").read_text())["env"] == "webshop", stage
    tour = _metrics(chain, "00_tour")
    assert tour["games_per_split"]["test"] == 100 and tour["expert_won"] is True
    assert set(tour["games_per_type"]["train"]) == set(WEBSHOP_CATEGORIES)


def test_01_and_03_play_train_goals_within_fifteen_steps(chain):
    n_games = SMOKE["01_failure_collection"]["n_games"]
    base = list(read_jsonl(chain / "01_failures" / "episodes.jsonl"))
    teacher = list(read_jsonl(chain / "03_teacher" / "episodes.jsonl"))
    assert len(base) == len(teacher) == 2 * n_games
    assert {(e["game_id"], e["agent"]) for e in base} == {(e["game_id"], e["agent"]) for e in teacher}
    for e in base + teacher:
        assert e["split"] == "train" and is_training_task(e["game_id"]) and 1 <= e["steps"] <= 15
        assert e["task_type"] == get_task(e["game_id"]).task_type in WEBSHOP_CATEGORIES
        assert 0.0 <= e["reward"] <= 1.0 and e["won"] == (e["reward"] == 1.0)
    assert {e["task_type"] for e in base} == set(WEBSHOP_CATEGORIES)  # 6 goals spread over the 5 categories
    assert _metrics(chain, "01_failures")["score"] == round(100 * sum(e["reward"] for e in base) / len(base), 1)


def test_02_bank_is_typed_by_category_with_at_most_two_hints_per_failure(chain):
    metrics = _metrics(chain, "02_hints")
    extractions = list(read_jsonl(chain / "02_hints" / "extractions.jsonl"))
    failures = [e for e in read_jsonl(chain / "01_failures" / "episodes.jsonl") if not e["won"]]
    assert metrics["failures"] == len(failures) == len(extractions)
    assert all(1 <= len(x["hints"]) <= 2 for x in extractions if x["status"] == "ok")
    assert set(metrics["per_type"]) == set(WEBSHOP_CATEGORIES) and metrics["bank_size"] > 0
    bank = [json.loads(line) for line in (chain / "02_hints" / "bank.jsonl").read_text().splitlines()]
    assert all(h["task_type"] == get_task(h["game_id"]).task_type for h in bank)


def test_03_teacher_hints_come_from_the_goal_category(chain):
    bank = {}
    for line in (chain / "02_hints" / "bank.jsonl").read_text().splitlines():
        h = json.loads(line)
        bank.setdefault(h["task_type"], set()).add(h["text"])
    for e in read_jsonl(chain / "03_teacher" / "episodes.jsonl"):
        assert e["condition"] == "hints" and set(e["hints"]) <= bank.get(e["task_type"], set())
        assert len(e["hints"]) == min(3, len(bank.get(e["task_type"], ())))


def test_04_to_06_the_distilled_path_runs(chain):
    assert_distilled_path_runs(chain)
    assert json.loads((chain / "05_student" / "config.json").read_text())["env"] == "webshop"
    n_games = SMOKE["06_evaluation"]["n_games"]
    episodes = list(read_jsonl(chain / "06_eval" / "episodes.jsonl"))
    assert all(sum(e["condition"] == c for e in episodes) == 2 * n_games for c in ("base", "hints", "sft", "distilled"))


def test_04_leak_check_catches_a_hint_planted_in_a_real_example(chain):
    assert_planted_leak_is_caught(chain)


def test_the_smoke_model_learned_the_goals_stage_01_plays(chain, smoke_model):
    build = json.loads((Path(smoke_model.path) / "smoke_build.json").read_text())
    played = {e["game_id"] for e in read_jsonl(chain / "01_failures" / "episodes.jsonl")}
    tested = {e["game_id"] for e in read_jsonl(chain / "06_eval" / "episodes.jsonl")}
    assert played and played <= set(build["train_games"]) and not tested & set(build["train_games"])


def test_06_scores_the_test_goals(chain):
    metrics = _metrics(chain, "06_eval")
    n_games = SMOKE["06_evaluation"]["n_games"]
    episodes = list(read_jsonl(chain / "06_eval" / "episodes.jsonl"))
    assert metrics["env"] == "webshop" and metrics["split"] == "test" and metrics["games"] == n_games
    assert all(e["split"] == "test" and not is_training_task(e["game_id"]) and e["steps"] <= 15 for e in episodes)
    assert {"base", "hints"} <= set(metrics["conditions_played"])
    for cond in metrics["conditions_played"]:
        eps = [e for e in episodes if e["condition"] == cond]
        assert metrics["per_condition"][cond]["all"]["score"] == round(100 * sum(e["reward"] for e in eps) / len(eps), 1)
    assert metrics["headline"].startswith("score")


def test_key_figures_equal_the_committed_reference(chain):
    """The WebShop chain's figures, distilled and SFT examples and both students included (`make reference`)."""
    assert_key_figures_equal_reference(chain, "webshop")
