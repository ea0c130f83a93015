"""The evaluation protocol: designs are chosen on train and valid_seen only; valid_unseen gives the result."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_warm_start_design_tool_refuses_the_result_split():
    """bench/warmstart_eval.py measures designs: it plays valid_seen by default and refuses valid_unseen."""
    script = str(ROOT / "bench" / "warmstart_eval.py")
    shown = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, check=True).stdout
    assert "valid_seen" in shown
    refused = subprocess.run([sys.executable, script, "--split", "valid_unseen"], capture_output=True, text=True)
    assert refused.returncode == 2 and "invalid choice: 'valid_unseen'" in refused.stderr


def test_a_design_phase_refuses_a_game_of_the_result_split(alfworld_root, webshop_root):
    from ragdistill.benchmarks import balanced, list_tasks, open_env
    from ragdistill.benchmarks.protocol import ProtocolError, current_phase, design_phase

    for env, result, design in (("alfworld", "valid_unseen", "valid_seen"), ("webshop", "test", "train")):
        unseen = balanced(list_tasks(env, result), 1)[0].game_id
        seen = balanced(list_tasks(env, design), 1)[0].game_id
        with design_phase():
            with pytest.raises(ProtocolError, match=f"{result}, the split that gives the result"):
                open_env(unseen)
            open_env(seen).close()  # a design split opens
        assert current_phase() == ""
        open_env(unseen).close()  # outside a design (stage 06) it opens


def test_game_workers_inherit_the_design_phase(alfworld_root):
    """Stage 01 and 03 play through worker processes: a result-split game fails there too, naming the rule."""
    from ragdistill.benchmarks import balanced, list_tasks
    from ragdistill.benchmarks.pool import EnvPool
    from ragdistill.benchmarks.protocol import design_phase

    unseen = balanced(list_tasks("alfworld", "valid_unseen"), 1)[0].game_id
    with design_phase(), EnvPool(workers=1) as pool:
        with pytest.raises(RuntimeError, match="ProtocolError: .*valid_unseen, the split that gives the result"):
            pool.reset_many([(0, unseen)])


def test_every_stage_before_06_is_a_design_and_06_the_result(outputs):
    from ragdistill.benchmarks.protocol import DESIGN, RESULT, current_phase
    from ragdistill.run import config

    classes = {c.STAGE: c for c in vars(config).values() if isinstance(c, type) and getattr(c, "STAGE", "")}
    assert sorted(classes) == ["00_tour", "01_failures", "02_hints", "03_teacher", "04_dehint", "05_student",
                               "06_eval"]
    for stage, cls in sorted(classes.items()):
        cls.from_params({"profile": "smoke"})
        assert current_phase() == (RESULT if stage == "06_eval" else DESIGN), stage


def test_every_recipe_states_the_protocol_the_code_holds():
    from ragdistill.benchmarks import ENVS, benchmark
    from ragdistill.method.eval.tables import PAIRED_TESTS
    from ragdistill.models.profiles import RECIPES

    for name, recipe in RECIPES.items():
        protocol = recipe["protocol"]
        for env in ENVS:
            bench = benchmark(env)
            assert protocol["result_split"][env] == bench.eval_splits[0], (name, env)  # the split open_env guards
            assert protocol["result_split"][env] not in protocol["design_splits"][env]
            assert set(protocol["design_splits"][env]) <= set(bench.splits), (name, env)
        assert protocol["tests"] == [f"{a} vs {b}" for a, b in PAIRED_TESTS], name
        assert protocol["families"] == ["react", "stateact", "pooled"], name
        # the size make run plays is the size the protocol names
        assert recipe["chain"].get("06_evaluation", {}).get("n_games", 0) == protocol["result_games"], name


def test_notebook_06_says_whether_a_run_is_the_protocols_result():
    from ragdistill.method.eval.tables import protocol_table

    table = protocol_table("cpu", "alfworld", "valid_unseen", 24)
    assert table.loc["the result on", "protocol (recipe)"] == "valid_unseen"
    assert table.loc["this run is the protocol's result", "this run"] == "yes"
    other = protocol_table("cpu", "alfworld", "valid_seen", 12)
    assert other.loc["this run is the protocol's result", "this run"].startswith("no")
