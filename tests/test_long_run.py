"""bench/long_run.py: a seed's figures kept in short form, summarized per agent and pooled, and spread over seeds;
run_chain's per-stage parameters are checked before anything runs."""

import json
import os

import pytest
from conftest import bench_module


def _rows(wins: dict[str, set], conditions=("base", "hints", "sft", "distilled")) -> list[dict]:
    """Episodes of 4 games x 2 agents x the conditions (the four by default); `wins[condition]` holds the (game, agent) pairs won."""
    rows = []
    for condition in conditions:
        for game in range(4):
            for agent in ("react", "stateact"):
                won = (game, agent) in wins.get(condition, set())
                rows.append({"game_id": f"valid_unseen/g{game}", "task_type": "put", "agent": agent,
                             "condition": condition, "won": won, "reward": float(won), "steps": 5 if won else 15,
                             "prompt_tokens": 100, "completion_tokens": 10, "invalid_actions": 0, "stop_reason": "x"})
    return rows


def test_a_seed_is_summarized_per_agent_and_pooled_and_seeds_are_spread(tmp_path):
    long_run = bench_module("long_run")
    everything = {(g, a) for g in range(4) for a in ("react", "stateact")}
    seeds = {"long-x-alfworld-s0": {"base": {(0, "react")}, "hints": everything, "distilled": {(0, "react"), (1, "react")}},
             "long-x-alfworld-s1": {"base": set(), "hints": {(0, "stateact")}, "distilled": everything}}
    for name, wins in seeds.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "06_episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(wins)))
    summary = long_run.summarize(tmp_path, list(seeds))
    first = summary["runs"]["long-x-alfworld-s0"]
    assert first["games"] == 4
    assert first["success"]["hints"]["pooled"] == {"wins": 8, "episodes": 8, "percent": 100.0, "ci": [67.6, 100.0]}
    assert first["success"]["base"]["react"]["wins"] == 1 and first["success"]["base"]["stateact"]["wins"] == 0
    pooled = first["tests"]["pooled"]["hints vs base"]
    assert (pooled["only_hints"], pooled["only_base"], pooled["difference"]) == (7, 0, 87.5)
    assert pooled["holm_p"] >= pooled["mcnemar_p"]
    assert first["tests"]["react"]["hints vs base"]["only_hints"] == 3  # the react family alone
    spread = summary["spread"]
    assert spread["success"]["distilled"]["values"] == [25.0, 100.0]
    assert (spread["success"]["distilled"]["min"], spread["success"]["distilled"]["max"]) == (25.0, 100.0)
    assert spread["difference"]["hints vs base"]["values"] == [87.5, 12.5]
    assert json.loads((tmp_path / "summary.json").read_text())["spread"] == spread


def test_per_stage_parameters_name_a_notebook_and_one_of_its_parameters(outputs):
    from ragdistill.run.pipeline import run_chain

    with pytest.raises(ValueError, match="no notebook named '07_nothing'"):
        run_chain("smoke", run="x", per_stage={"07_nothing": {"n_games": 1}})
    with pytest.raises(ValueError, match="06_evaluation has no parameter named n_gmaes"):
        run_chain("smoke", run="x", per_stage={"06_evaluation": {"n_gmaes": 1}})


def test_the_placebo_ablation_is_its_own_family_and_spreads_over_seeds(tmp_path):
    long_run = bench_module("long_run")
    assert "placebo" in long_run.CONDITIONS
    everything = {(g, a) for g in range(4) for a in ("react", "stateact")}
    seeds = {"long-x-alfworld-s0": {"base": set(), "hints": everything, "placebo": {(0, "react")}},
             "long-x-alfworld-s1": {"base": set(), "hints": {(0, "react")}, "placebo": set()}}
    for name, wins in seeds.items():
        rows = _rows(wins, ("base", "hints", "placebo"))
        (tmp_path / name).mkdir()
        (tmp_path / name / "06_episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = long_run.summarize(tmp_path, list(seeds), long_run.summary_file(tmp_path, "x", "alfworld"))
    first = summary["runs"]["long-x-alfworld-s0"]
    assert set(first["tests"]["pooled"]) == {"hints vs base"}  # the method's family holds no placebo test
    ablation = first["ablation"]["pooled"]
    assert (ablation["hints vs placebo"]["only_hints"], ablation["hints vs placebo"]["only_placebo"]) == (7, 0)
    assert ablation["placebo vs base"]["only_placebo"] == 1 and set(first["ablation"]) == {"react", "stateact", "pooled"}
    assert summary["spread"]["difference"]["hints vs placebo"]["values"] == [87.5, 12.5]
    assert (tmp_path / "summary-x-alfworld.json").is_file()
    table = long_run.markdown(summary)
    # per agent, then pooled, each with its Wilson interval
    assert "| hints | 4/4 (100.0%, 51-100%) | 4/4 (100.0%, 51-100%) | 8/8 (100.0%, 68-100%) |" in table
    assert "| hints vs placebo | pooled | 7 : 0 | +87.5 |" in table
    assert table.count("`long-x-alfworld-s") == 2


def test_a_kept_run_holds_its_sizes_times_and_short_episodes(tmp_path):
    long_run = bench_module("long_run")
    run = tmp_path / "runs" / "long-x-alfworld-s3"
    (run / "06_eval").mkdir(parents=True)
    (run / "01_failures").mkdir()
    (run / "01_failures" / "metrics.json").write_text(json.dumps({"wins": 2}))
    (run / "pipeline.json").write_text(json.dumps({"seconds": {"01_failures": 60.0, "06_eval": 540.0}}))
    rows = [{**r, "prompt": "long text", "trajectory": ["a"] * 3} for r in _rows({"hints": {(1, "react")}})]
    (run / "06_eval" / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = {"profile": "x", "env": "alfworld", "seed": 3, "train_games": 24, "eval_games": 4}
    folder = long_run.keep(run, tmp_path / "kept", settings)
    kept = [json.loads(line) for line in (folder / "06_episodes.jsonl").read_text().splitlines()]
    assert len(kept) == len(rows) == 32 and set(kept[0]) == set(long_run.SHORT)
    assert sum(r["won"] for r in kept) == 1
    assert json.loads((folder / "01_failures.metrics.json").read_text()) == {"wins": 2}
    summary = long_run.summarize(tmp_path / "kept", [run.name])["runs"][run.name]
    assert summary["settings"]["train_games"] == 24 and summary["minutes"] == 10.0


def test_the_notebooks_kernels_get_one_thread_unless_told(monkeypatch):
    long_run = bench_module("long_run")
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    monkeypatch.setenv("MKL_NUM_THREADS", "8")
    long_run.use_threads(1)
    assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "1"
    with pytest.raises(ValueError, match="at least 1"):
        long_run.use_threads(0)
