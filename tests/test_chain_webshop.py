"""The notebook chain on the smoke profile with env=webshop, executed once with papermill, checked stage by stage.

The smoke model learnt only ALFWorld's command style, so on WebShop it buys nothing: every episode fails, the
hints come from those failures, and with no teacher success the students are skipped with a reason. What is
checked is the plumbing: goals, splits, step limits, categories as hint types, scores, and no test goal
before notebook 06.
"""

import json

import pytest

from ragdistill.envs import get_task, is_training_task
from ragdistill.io import read_jsonl
from ragdistill.pipeline import CHAIN_PARAMS, STAGES, run_chain
from ragdistill.webshop_data import WEBSHOP_CATEGORIES

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


def test_04_and_05_handle_an_empty_teacher_set(chain):
    dehint = _metrics(chain, "04_dehint")
    teacher_wins = sum(e["won"] for e in read_jsonl(chain / "03_teacher" / "episodes.jsonl"))
    assert dehint["distilled"]["examples"] <= teacher_wins and dehint["leak_check"]["leaks"] == 0
    assert dehint["empty"] == (dehint["distilled"]["examples"] == 0)
    student = _metrics(chain, "05_student")
    for name in ("distilled", "sft"):
        examples = len(list(read_jsonl(chain / "04_dehint" / f"{name}.jsonl")))
        assert student["adapters"][name]["skipped"] == (examples == 0), name
    config = json.loads((chain / "05_student" / "config.json").read_text())
    assert config["env"] == "webshop"


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
