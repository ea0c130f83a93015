"""The memoized engine plays every game exactly as TextWorld does without it."""

import json
import os
import subprocess
import sys

import pytest

# Plays each game twice in one process (the second start reuses the first's translation): its walkthrough with
# an invalid command and a revisit mixed in, recording everything the agent or the chain reads at each step.
PLAY = r"""
import json, sys
from ragdistill.benchmarks.alfworld import engine_memo
from ragdistill.benchmarks.alfworld.env import AlfworldEnv, get_game, walkthrough
mode, game_ids = sys.argv[1], json.loads(sys.argv[2])  # read first: the PDDL translator rewrites sys.argv
if mode == "plain":
    engine_memo.install = lambda: None  # the engine as shipped
out = []
for game_id in game_ids:
    for _ in range(2):
        game = get_game(game_id)
        env = AlfworldEnv(game)
        observation, task = env.reset()
        rows = [[observation, task, env.admissible_commands]]
        plan = walkthrough(game)
        for action in plan[:1] + ["jump around", "look"] + plan[1:]:
            step = env.step(action)
            rows.append([action, step.observation, step.won, step.done, step.admissible, env.admissible_commands])
            if step.done:
                break
        env.close()
        out.append(rows)
# The replanner (which AlfworldEnv never asks for) still plans: the memo hands it the plain translation.
import textworld
from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos
if mode != "plain":
    engine_memo.install()
infos = textworld.EnvInfos(won=True, admissible_commands=True, policy_commands=True)
tw = textworld.start(str(get_game(game_ids[0]).path), request_infos=infos, wrappers=[AlfredDemangler(), AlfredInfos])
plan = tw.reset()["policy_commands"]
print(json.dumps({"episodes": out, "installed": engine_memo.installed(), "plan": plan}))
"""


def _play(mode: str, game_ids: list[str]) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run([sys.executable, "-c", PLAY, mode, json.dumps(game_ids)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_memoized_engine_gives_the_same_steps_as_the_plain_engine(alfworld_root):
    from ragdistill.benchmarks.alfworld.env import list_games

    games = list_games("valid_seen")
    # one game of each of three task types, so the grammar's rules for cleaning and heating are derived too
    picked = [next(g for g in games if g.task_type == t).game_id for t in ("put", "clean", "heat")]
    plain, memo = _play("plain", picked), _play("memo", picked)
    assert not plain["installed"] and memo["installed"]
    assert len(memo["episodes"]) == 6
    assert sum(len(rows) for rows in memo["episodes"]) > 30
    assert all(rows[-1][2] for rows in memo["episodes"])  # every walkthrough still wins
    assert memo["episodes"] == plain["episodes"]
    assert memo["plan"] and memo["plan"] == plain["plan"]
