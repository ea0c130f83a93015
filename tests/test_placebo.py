"""The placebo ablation: the retrieved hints with the objects and receptacles they name swapped for others of the
benchmark (Benchmark.placebo), played by stage 06 as the `placebo` condition and tested in its own family."""

from __future__ import annotations

import re

import pytest

from ragdistill.benchmarks import benchmark, training_tasks
from ragdistill.benchmarks.alfworld.hints import location_hint, location_of
from ragdistill.benchmarks.base import swap_names

LOCATION = location_hint("apple", "countertop")
APPLIANCE = "Heat the {object} with the microwave before you move it to the {receptacle}."
GENERIC = "Go to each receptacle in turn, opening closed ones, until you see the {object}."
NOTHING = "Open a closed receptacle before searching it; closed ones hide the objects inside."
TAKE = "Take the apple from the countertop first."


def test_swapping_keeps_placeholders_plurals_and_one_name_for_one_name():
    vocabulary = {"object": ("apple", "mug", "pen"), "receptacle": ("countertop", "drawer", "shelf")}
    texts = ["Search the countertops for the apple.", "Take the {object} from the countertop; not the apple pie",
             "The applet {apple} stays."]
    swapped = swap_names(texts, vocabulary, "seed")
    first, second, third = swapped
    new_receptacle = first.split("the ")[1].split("s ")[0]
    new_object = first.rstrip(".").rsplit(" ", 1)[1]
    assert new_receptacle in ("drawer", "shelf") and new_object in ("mug", "pen")
    assert second == f"Take the {{object}} from the {new_receptacle}; not the {new_object} pie"
    assert third == texts[2]  # a longer word and a placeholder are no names
    assert swap_names(texts, vocabulary, "seed") == swapped  # the same seed, the same placebo


def test_alfworld_placebo_keeps_the_templates_and_names_other_things(alfworld_root):
    alfworld = benchmark("alfworld")
    vocabulary = alfworld.placebo_vocabulary()
    assert len(vocabulary["object"]) > 20 and len(vocabulary["receptacle"]) > 10
    assert {"microwave", "fridge", "sinkbasin", "countertop"} <= set(vocabulary["receptacle"])
    from ragdistill.benchmarks.alfworld.hints import task_names

    games = [t.game_id for t in training_tasks("alfworld")[:40]]
    placebos = [alfworld.placebo([LOCATION, APPLIANCE, GENERIC, TAKE, NOTHING], game, seed=0) for game in games]
    for game, (location, appliance, generic, take, nothing) in zip(games, placebos):
        names = task_names(game)
        obj, place = location_of(location)  # still the location template
        assert obj != "apple" and obj in vocabulary["object"] and place != "countertop"
        # The placeholders are filled with the game's names, and those swapped: no slot points at the task's things.
        assert "{" not in appliance + generic and not re.search(rf"\b{names['object']}\b", appliance + generic)
        assert appliance.startswith("Heat the ") and " with the microwave " not in appliance
        assert generic.startswith("Go to each receptacle in turn, opening closed ones, until you see the ")
        assert take == f"Take the {obj} from the {place} first."  # one name, one swap, across an episode's hints
        assert nothing == NOTHING  # a rule that names nothing stays
    assert len({p[0] for p in placebos}) > 10  # drawn per game, not one fixed placebo
    assert alfworld.placebo([LOCATION], games[0], 0) == placebos[0][:1]
    assert len({alfworld.placebo([LOCATION], games[0], s)[0] for s in range(8)}) > 1  # and per seed


def test_webshop_placebo_changes_only_the_slots(webshop_root):
    from ragdistill.benchmarks.webshop.hints import HINTS

    webshop = benchmark("webshop")
    vocabulary = webshop.placebo_vocabulary()
    assert {"size", "color"} <= set(vocabulary["option kind"]) and len(vocabulary["feature"]) > 20
    feature = vocabulary["feature"][0]
    hints = [HINTS["options"].format(kinds="size and color"), HINTS["option_missing"].format(kinds="size"),
             HINTS["attributes"].format(phrase=feature), HINTS["price"]]
    game = training_tasks("webshop")[0].game_id
    options, missing, attributes, price = webshop.placebo(hints, game, seed=0)
    assert options != hints[0] and options.startswith("On the item page, click each asked option value (")
    assert "size" not in options.split("(")[1] and " and " in options
    assert missing.startswith("Buy only an item whose options include the asked ") and "size;" not in missing
    assert attributes != hints[2] and attributes.endswith("'.") and feature not in attributes
    assert price == hints[3]  # no slot: the template's own words stay


def test_stage_06_accepts_the_placebo_condition_and_tests_it_in_its_own_family():
    import pandas as pd

    from ragdistill.method.eval.tables import ABLATION_TESTS, LABELS, PAIRED_TESTS, paired_tests_per_agent
    from ragdistill.run.config import ConfigError, EvalConfig

    cfg = EvalConfig.from_params({"profile": "smoke", "conditions": ["base", "hints", "placebo"]})
    assert cfg.conditions == ["base", "hints", "placebo"] and "placebo" in LABELS
    with pytest.raises(ConfigError, match="choose from"):
        EvalConfig.from_params({"profile": "smoke", "conditions": ["base", "nocebo"]})
    # 6 games x 2 agents: hints win every pair, placebo two, base none.
    rows = [{"game_id": f"g{g}", "agent": agent, "condition": c, "won": c == "hints" or (c == "placebo" and g < 1),
             "task_type": "put", "tokens": 100, "reward": 0.0} for g in range(6) for agent in ("react", "stateact") for c in ("base", "hints", "placebo")]
    df = pd.DataFrame(rows)
    main = paired_tests_per_agent(df)
    ablation = paired_tests_per_agent(df, ABLATION_TESTS)
    assert set(main["pooled"]) == {f"{a} vs {b}" for a, b in PAIRED_TESTS if {a, b} <= {"base", "hints"}}
    assert set(ablation["pooled"]) == {"hints vs placebo", "placebo vs base"}
    assert ablation["pooled"]["hints vs placebo"]["only_hints"] == 10
    assert ablation["pooled"]["placebo vs base"]["only_placebo"] == 2
    assert set(ablation) == {"react", "stateact", "pooled"}


def test_stage_06_plays_the_placebo_with_the_teachers_hints_swapped(smoke_model, outputs, alfworld_root, tmp_path):
    """The placebo condition retrieves what the hints condition retrieves for each (game, agent), and plays those
    hints with their names swapped: the same number of hints, the placeholders filled with other objects."""
    from ragdistill.benchmarks import balanced, eval_tasks
    from ragdistill.method.eval.conditions import LocalModels, play_conditions
    from ragdistill.method.hints import Hint
    from ragdistill.run.config import EvalConfig
    from ragdistill.run.io import read_jsonl

    cfg = EvalConfig.from_params({"profile": "smoke", "run": "pl", "agents": ["react"], "max_steps": 2, "workers": 0,
                                  "batch_size": 3, "n_games": 3, "conditions": ["hints", "placebo"], "split": "valid_seen"})
    games = balanced(eval_tasks("alfworld", "valid_seen"), cfg.n_games, seed=0)
    bank = {g.task_type: [Hint(f"{g.task_type}-{i}", g.task_type, t, "e", "g", "react", "heuristic")
                          for i, t in enumerate([LOCATION, GENERIC, NOTHING])] for g in games}
    with LocalModels(cfg, {}) as models:
        played = play_conditions(cfg, games, bank, False, models, tmp_path / "episodes.jsonl", progress=False)
    assert not played.skipped
    records = {(r["game_id"], r["condition"]): r for r in read_jsonl(tmp_path / "episodes.jsonl")}
    assert len(records) == 2 * len(games)
    for game in games:
        real, placebo = records[(game.game_id, "hints")]["hints"], records[(game.game_id, "placebo")]["hints"]
        assert len(real) == len(placebo) == cfg.k and real != placebo
        assert placebo == benchmark("alfworld").placebo(real, game.game_id, cfg.seed)
        assert GENERIC in real and GENERIC not in placebo
    from ragdistill.method.eval.tables import placebo_changed

    # Each episode's first two hints name or stand for the game's things; the third names nothing.
    assert placebo_changed(list(records.values())) == {"hints": 9, "hints_changed": 6, "episodes": 3,
                                                      "episodes_changed": 3}


def test_the_warmstart_ablation_sets_this_runs_gains_beside_the_newest_hintfree_run(outputs):
    import json

    from conftest import bench_module
    import os
    import time

    import pandas as pd

    from ragdistill.method.eval.tables import hintfree_runs, paired_tests, warmstart_ablation

    rows = [{"game_id": f"g{g}", "agent": "react", "condition": c, "task_type": "put", "tokens": 1, "reward": 0.0,
             "won": (c == "hints" and g < 4) or (c == "distilled" and g < 2)} for g in range(8)
            for c in ("base", "hints", "distilled")]
    tests = paired_tests(pd.DataFrame(rows))
    assert "no finished cpu-hintfree run on alfworld" in warmstart_ablation(tests, "alfworld", "cpu")
    later = {"hints vs base": dict(tests["hints vs base"], difference=-12.5)}
    long_name = bench_module("long_run").run_name("cpu-hintfree", "alfworld", 0)  # the long run's own naming
    runs = ((long_name, later), ("cpu-hintfree-20261201-100000", tests), ("cpu-hintfree-webshop-20261202-100000", tests),
            ("cpu-20261203-100000", tests))
    for order, (name, paired) in enumerate(runs):  # finished in this order
        metrics = outputs / "runs" / name / "06_eval" / "metrics.json"
        metrics.parent.mkdir(parents=True)
        metrics.write_text(json.dumps({"paired": paired}))
        os.utime(metrics, (time.time() + order, time.time() + order))
    (outputs / "runs" / "cpu-hintfree-20261203-000000" / "06_eval").mkdir(parents=True)  # unfinished: no metrics
    assert [p.name for p in hintfree_runs("alfworld")] == [long_name, "cpu-hintfree-20261201-100000"]
    table = warmstart_ablation(tests, "alfworld", "cpu")
    this, other = "this run (cpu)", "cpu-hintfree-20261201-100000 (hint-free warm-start)"
    assert table.loc[(this, "hints vs base"), "difference (points)"] == tests["hints vs base"]["difference"] == 50.0
    assert table.loc[(other, "distilled vs base"), "pairs"] == 8 and len(table) == 4
