"""The notebook chain on the smoke profile, executed once as `make run` executes it (a headless pipeline process),
then checked stage by stage, and for what its terminal showed and what a reader opens afterwards."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_distilled_path_runs, assert_key_figures_equal_reference, assert_planted_leak_is_caught
from ragdistill.run.io import read_jsonl
from ragdistill.run.pipeline import CHAIN_PARAMS, run_chain

pytestmark = pytest.mark.slow
SMOKE = CHAIN_PARAMS["smoke"]


@pytest.fixture(scope="module")
def chain_terminal(alfworld_root, smoke_model, module_outputs):
    """outputs/runs/chain/ after `python -m ragdistill.run.pipeline --profile smoke` ran every stage in order (the sizes
    `make run` uses on smoke), and what it printed: stdout and stderr together, as a terminal shows them (the
    kernels' own stderr included)."""
    proc = subprocess.run([sys.executable, "-m", "ragdistill.run.pipeline", "--profile", "smoke", "--run", "chain"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    (module_outputs / "terminal.txt").write_text(proc.stdout)  # to read when a test below fails
    assert proc.returncode == 0, proc.stdout[-4000:]
    return module_outputs / "runs" / "chain", proc.stdout


@pytest.fixture(scope="module")
def chain(chain_terminal):
    """outputs/runs/chain/ of the smoke chain run."""
    return chain_terminal[0]


def _bank_texts(run_dir) -> dict[str, set[str]]:
    """Stage 02's hint texts per task type."""
    from ragdistill.method.hints import load_bank

    return {t: {h.text for h in hs} for t, hs in load_bank(run_dir / "02_hints" / "bank.jsonl").items()}


def _metrics(run_dir, stage):
    return json.loads((run_dir / stage / "metrics.json").read_text())


def test_every_stage_wrote_its_folder(chain):
    from ragdistill.run.pipeline import STAGES

    for notebook, stage in STAGES.items():
        folder = chain / stage
        assert (folder / "metrics.json").is_file() and (folder / f"{notebook}.ipynb").is_file(), stage
        config = json.loads((folder / "config.json").read_text())
        assert config["stage"] == stage and config["profile"] == "smoke" and config["run"] == "chain"
    executed = json.loads((chain / "06_eval" / "06_evaluation.ipynb").read_text())
    assert any(c.get("outputs") for c in executed["cells"] if c["cell_type"] == "code")


def test_00_tour(chain):
    metrics = _metrics(chain, "00_tour")
    assert metrics["games_per_split"] == {"train": 3553, "valid_seen": 140, "valid_unseen": 134}
    assert metrics["expert_won"] is True and metrics["expert_steps"] > 0
    assert metrics["model"]["profile"] == "smoke" and metrics["model"]["new_tokens"] > 0


def test_01_failures(chain):
    metrics = _metrics(chain, "01_failures")
    n_games, max_steps = SMOKE["01_failure_collection"]["n_games"], SMOKE["01_failure_collection"]["max_steps"]
    episodes = list(read_jsonl(chain / "01_failures" / "episodes.jsonl"))
    assert metrics["games"] == n_games and metrics["episodes"] == len(episodes) == 2 * n_games
    assert metrics["successes"] + metrics["failures"] == len(episodes)
    assert set(metrics["per_agent"]) == {"react", "stateact"}
    assert all(e["split"] == "train" and 1 <= e["steps"] <= max_steps for e in episodes)
    # Each episode stopped for the reason it gives, and not a step earlier or later.
    for e in episodes:
        actions = [t["action"] for t in e["trajectory"]]
        reason = e["stop_reason"]
        assert reason in ("won", "max_steps", "repeated_action"), reason
        assert e["won"] == (reason == "won")
        if reason == "max_steps":
            assert e["steps"] == max_steps
        if reason == "repeated_action":
            assert len(set(actions[-5:])) == 1 and (len(actions) < 6 or len(set(actions[-6:])) == 2)
        assert reason != "max_steps" or len(set(actions[-6:-1])) > 1  # five repeats a step earlier stop it first
    assert metrics["prompt_tokens"] == sum(e["prompt_tokens"] for e in episodes)
    assert all(e["prompt_tokens"] == sum(t["prompt_tokens"] for t in e["trajectory"]) for e in episodes)
    config = json.loads((chain / "01_failures" / "config.json").read_text())
    assert config["n_games"] == n_games and config["max_steps"] == max_steps


def test_the_smoke_model_learned_the_games_stage_01_plays(chain, smoke_model):
    """The smoke model is a fixture that has seen the chain's training games (and no evaluation game): if the
    chain's sizes or seed change without its spec, this says so before the wins vanish."""
    build = json.loads((Path(smoke_model.path) / "smoke_build.json").read_text())
    played = {e["game_id"] for e in read_jsonl(chain / "01_failures" / "episodes.jsonl")}
    evaluated = {e["game_id"] for e in read_jsonl(chain / "06_eval" / "episodes.jsonl")}
    assert played and played <= set(build["train_games"])
    assert not evaluated & set(build["train_games"])


def test_02_hints_come_from_train_failures_only(chain):
    from ragdistill.method.hints import load_bank, validate_hints

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
    metrics = _metrics(chain, "03_teacher")
    base = list(read_jsonl(chain / "01_failures" / "episodes.jsonl"))
    teacher = list(read_jsonl(chain / "03_teacher" / "episodes.jsonl"))
    assert sorted((e["game_id"], e["agent"]) for e in teacher) == sorted((e["game_id"], e["agent"]) for e in base)
    assert all(e["condition"] == "hints" for e in teacher)
    bank = _bank_texts(chain)
    for e in teacher:  # up to k=3 of its type's hints: none for a type whose failures gave none
        assert len(e["hints"]) == min(3, len(bank.get(e["task_type"], ()))) and set(e["hints"]) <= bank.get(e["task_type"], set())
    assert any(e["hints"] for e in teacher)
    # Different games of the chain get different hint sets (the paper's BM25 ablation gave all the same).
    assert metrics["distinct_hint_sets"] == len({tuple(e["hints"]) for e in teacher}) > 1
    kept = list(read_jsonl(chain / "03_teacher" / "teacher.jsonl"))
    assert len(kept) == metrics["teacher_set"] == sum(e["won"] for e in teacher) and all(e["won"] for e in kept)
    all_row = next(r for r in metrics["paired_vs_base"] if r["task_type"] == "all")
    assert all_row["pairs"] == len(base) and all_row["base wins"] == sum(e["won"] for e in base)
    base_won = {(e["game_id"], e["agent"]) for e in base if e["won"]}
    teacher_won = {(e["game_id"], e["agent"]) for e in teacher if e["won"]}
    assert all_row["only teacher"] == len(teacher_won - base_won)
    # The teacher's prompts carry the hint block: on the same game and agent its first prompt is longer than the
    # base agent's where hints were retrieved, and the same where none were (later steps differ with the play).
    first = {(e["game_id"], e["agent"]): e["trajectory"][0]["prompt_tokens"] for e in base}
    for e in teacher:
        own, plain = e["trajectory"][0]["prompt_tokens"], first[(e["game_id"], e["agent"])]
        assert own > plain if e["hints"] else own == plain, (e["game_id"], e["agent"], e["hints"])


def test_04_dehint_examples_are_hint_free(chain):
    from ragdistill.method.agents import HINT_BEGIN

    metrics = _metrics(chain, "04_dehint")
    teacher = list(read_jsonl(chain / "03_teacher" / "teacher.jsonl"))
    base_wins = [e for e in read_jsonl(chain / "01_failures" / "episodes.jsonl") if e["won"]]
    distilled = list(read_jsonl(chain / "04_dehint" / "distilled.jsonl"))
    sft = list(read_jsonl(chain / "04_dehint" / "sft.jsonl"))
    d, s = metrics["distilled"], metrics["sft"]
    assert d["episodes"] == len(teacher) and s["episodes"] == len(base_wins)
    assert d["examples"] == len(distilled) == d["episodes"] - d["overlong_dropped"] - d["echoed_hints"]
    assert s["examples"] == len(sft) == s["episodes"] - s["overlong_dropped"] - s["echoed_hints"]
    assert metrics["leak_check"]["leaks"] == 0 and metrics["leak_check"]["eval_games"] == 0
    for e in distilled + sft:
        assert e["game_id"].startswith("train/") and HINT_BEGIN not in json.dumps(e["messages"])
        assert e["messages"][-1]["role"] == "assistant" and e["n_tokens"] <= metrics["max_length"]
    assert d["tokens_total"] == sum(e["n_tokens"] for e in distilled)
    assert metrics["empty"] == (not distilled)
    check = metrics["leak_check"]
    assert check["examples_checked"] == d["examples"] + s["examples"] and check["hint_texts_checked"] > 0


def test_05_student_trained_what_there_was(chain):
    metrics = _metrics(chain, "05_student")
    for name in ("distilled", "sft"):
        examples = len(list(read_jsonl(chain / "04_dehint" / f"{name}.jsonl")))
        adapter = metrics["adapters"][name]
        assert adapter["skipped"] == (examples == 0), name
        if examples:
            assert adapter["examples"] == examples and adapter["steps"] >= 1
            assert (chain / "05_student" / "adapters" / name / "adapter_config.json").is_file()


def test_06_eval_plays_every_condition_on_evaluation_games_only(chain):
    metrics = _metrics(chain, "06_eval")
    params = SMOKE["06_evaluation"]
    episodes = list(read_jsonl(chain / "06_eval" / "episodes.jsonl"))
    played = metrics["conditions_played"]
    trained = {n for n, a in _metrics(chain, "05_student")["adapters"].items() if not a["skipped"]}
    assert set(played) == {"base", "hints"} | trained and set(metrics["conditions_skipped"]) == {"sft", "distilled"} - trained
    assert metrics["episodes"] == len(episodes) == params["n_games"] * 2 * len(played)
    assert all(e["split"] == "valid_unseen" and e["steps"] <= params["max_steps"] for e in episodes)
    bank = _bank_texts(chain)
    for e in episodes:  # hints for the teacher's condition only, as many as its type has up to k=3
        expected = min(3, len(bank.get(e["task_type"], ()))) if e["condition"] == "hints" else 0
        assert len(e["hints"]) == expected and set(e["hints"]) <= bank.get(e["task_type"], set())
    assert any(e["hints"] for e in episodes)
    train_games = {e["game_id"] for e in read_jsonl(chain / "04_dehint" / "distilled.jsonl")}
    train_games |= {e["game_id"] for e in read_jsonl(chain / "04_dehint" / "sft.jsonl")}
    assert not train_games & {e["game_id"] for e in episodes}
    for cond in played:
        eps = [e for e in episodes if e["condition"] == cond]
        assert len(eps) == params["n_games"] * 2, cond
        summary = metrics["per_condition"][cond]["all"]
        assert summary["episodes"] == len(eps) and summary["successes"] == sum(e["won"] for e in eps)
    assert metrics["prompt_tokens"] == sum(e["prompt_tokens"] for e in episodes)


def test_04_to_06_the_distilled_path_runs(chain):
    assert_distilled_path_runs(chain)


def test_04_leak_check_catches_a_hint_planted_in_a_real_example(chain):
    assert_planted_leak_is_caught(chain)


def test_key_figures_equal_the_committed_reference(chain):
    """Update deliberately with `make reference`, which prints what changed."""
    assert_key_figures_equal_reference(chain, "alfworld")


def test_one_step_fewer_in_stage_01_fails_the_reference(chain):
    """The reference stays sensitive: stage 01 played with `max_steps` 14 instead of 15 gives other figures."""
    from ragdistill.checks.regression import differences, key_figures, reference

    expected = reference("alfworld")["01_failures"]
    assert differences(key_figures(chain)["01_failures"], expected) == []  # the chain's own stage 01 agrees
    shorter = run_chain("smoke", run="chain-14", only=["01_failure_collection"], extra={"max_steps": 14})
    assert differences(key_figures(shorter)["01_failures"], expected)


def test_a_rerun_of_a_finished_run_skips_every_stage(chain):
    before = {p: p.stat().st_mtime for p in chain.glob("*/metrics.json")}
    run_chain("smoke", run="chain")
    assert {p: p.stat().st_mtime for p in chain.glob("*/metrics.json")} == before


# What a newcomer reads while and after `make run` runs.
FALSE_ALARMS = ("running over TCP without encryption", "gemm_4bit_forward", "kernels-community",
                "is_gradient_checkpointing")
EPISODE_STAGES = {"01_failure_collection", "03_teacher_generation", "06_evaluation"}


def _executed_notebooks(run_dir):
    from ragdistill.run.pipeline import STAGES

    return {nb: json.loads((run_dir / stage / f"{nb}.ipynb").read_text()) for nb, stage in STAGES.items()}


def test_the_terminal_shows_each_stage_s_progress_and_time(chain_terminal):
    """Every stage has its status lines while it runs (cells, bars); the stages that play episodes show their bar
    with the condition, episodes done of all, and the time left; each stage ends with its time."""
    from ragdistill.run.pipeline import STAGES

    _, text = chain_terminal
    for notebook in STAGES:
        status = [line for line in text.splitlines() if re.match(rf"\[\d+:\d\d\] {notebook}  ", line)]
        assert any(" cell " in line for line in status), notebook
        assert re.search(rf"^\[chain\] {notebook}.ipynb: done in \d+:\d\d$", text, re.M), notebook
        if notebook in EPISODE_STAGES:
            timed = [line for line in status
                     if re.search(r"(base|hints|sft|distilled): \d+/\d+ episodes \|.*\| +\d+%.* \d+:\d\d left$", line)]
            assert timed, f"{notebook}: no episode bar with the time left"


def test_no_false_alarm_in_the_terminal_or_the_notebooks(chain_terminal):
    """The kernel transport warning, bitsandbytes' missing-kernels message and the is_gradient_checkpointing
    FutureWarning appear nowhere, and no executed notebook holds a stderr block."""
    run_dir, text = chain_terminal
    assert not [alarm for alarm in FALSE_ALARMS if alarm in text], text[:3000]
    assert not re.findall(r".*\w+Warning: .*", text)  # nor any other Python warning, ours (the report's) included
    for notebook, nb in _executed_notebooks(run_dir).items():
        outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
        shown = json.dumps(outputs)
        assert not [alarm for alarm in FALSE_ALARMS if alarm in shown], notebook
        stderr = [o for o in outputs if o["output_type"] == "stream" and o["name"] == "stderr"]
        assert not stderr, f"{notebook}: {''.join(stderr[0]['text'])[:500]}"


def test_the_end_of_the_run_prints_the_result_table_and_the_report_s_path(chain_terminal):
    run_dir, text = chain_terminal
    metrics = json.loads((run_dir / "06_eval" / "metrics.json").read_text())
    end = text[text.index("[chain] 06_evaluation.ipynb: done in"):]
    from ragdistill.method.eval.tables import LABELS

    for condition in metrics["conditions_played"]:
        row = next(line for line in end.splitlines() if line.startswith(LABELS[condition] + " "))
        figures = metrics["intervals"][LABELS[condition]]
        assert f"{figures['wins']}" in row and figures["95% CI"] in row and str(figures["tokens/episode"]) in row
    assert "95% CI" in end and "tokens/episode" in end and "McNemar p" in end
    for test in metrics["paired"]:
        a, b = test.split(" vs ")
        assert f"{LABELS[a]} vs {LABELS[b]}" in end
    assert f"report (every stage's tables and figures, opens in any browser): {run_dir / 'report.html'}" in end
    assert f"figures (" in end and f"metrics: {run_dir / 'metrics.json'}" in end
    assert json.loads((run_dir / "metrics.json").read_text())["stages"]["06_eval"] == metrics


def test_the_html_report_holds_every_stage_s_tables_and_figures(chain):
    """report.html needs no Jupyter: each executed notebook's HTML tables and PNG figures are in it, in stage order,
    and each figure is also a PNG file of its own."""
    import base64

    html = (chain / "report.html").read_text()
    position = 0
    pngs = 0
    for notebook, nb in _executed_notebooks(chain).items():
        outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
        start = html.index(f'id="{notebook_stage(notebook)}"', position)
        for o in outputs:
            data = o.get("data", {})
            if "image/png" in data:
                png = "".join(data["image/png"]).replace("\n", "")
                assert html.index(png, start) > start, notebook
                pngs += 1
            table = "".join(data.get("text/html", ""))
            if "<table" in table:  # the report re-serializes the HTML: compared without the line breaks
                table = table[table.index("<table"):table.index("</table>") + len("</table>")]
                assert _joined(table) in _joined(html[start:]), notebook
        position = start
    figures = sorted((chain / "figures").glob("*.png"))
    assert len(figures) == pngs > 0
    assert all(base64.b64encode(f.read_bytes()).decode() in html for f in figures)


def _joined(html: str) -> str:
    return re.sub(r"\s*\n\s*", "", html)


def notebook_stage(notebook: str) -> str:
    from ragdistill.run.pipeline import STAGES

    return STAGES[notebook]


def test_no_executed_notebook_holds_a_widget(chain):
    """Headless bars leave text, not widgets frozen as first drawn."""
    for notebook, nb in _executed_notebooks(chain).items():
        outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
        assert not [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})], notebook
        assert "widgets" not in nb["metadata"], notebook
