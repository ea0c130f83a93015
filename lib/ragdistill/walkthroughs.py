"""Expert demonstrations: replay a game's stored walkthrough through the environment and record it."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

from tqdm.auto import tqdm

from .alfworld_env import AlfworldEnv, Game, get_game, walkthrough
from .io import read_jsonl, write_jsonl


def _visit_elsewhere(env: AlfworldEnv, game: Game, plan: list[str], detours: int, steps: list[dict]) -> None:
    """Visit up to `detours` other receptacles before the plan's first `go to`, as a searching agent would.

    A visit is recorded only when the target object is not in sight there, so the demonstration never
    walks past what it looks for. `go to` answers do not depend on where the agent came from, so a visit
    left out of the record leaves the rest of it exact.
    """
    import random

    rng = random.Random(game.game_id)
    target = game.task_folder.split("-")[1].lower()
    first_go = next((a for a in plan if a.startswith("go to ")), None)
    if first_go is None or detours <= 0:
        return
    options = [c for c in env.admissible_commands if c.startswith("go to ") and c != first_go]
    for action in rng.sample(options, k=min(len(options), rng.randint(0, detours))):
        step = env.step(action)
        if target not in step.observation.lower():
            steps.append({"action": action, "observation": step.observation, "admissible": step.admissible})


def replay(game: Game | str, detours: int = 0) -> dict:
    """Play the stored walkthrough, optionally after up to `detours` searching visits; returns the transcript."""
    game = get_game(game) if isinstance(game, str) else game
    env = AlfworldEnv(game)
    try:
        observation, task = env.reset()
        steps, won = [], False
        plan = walkthrough(game)
        _visit_elsewhere(env, game, plan, detours, steps)
        for action in plan:
            step = env.step(action)
            steps.append({"action": action, "observation": step.observation, "admissible": step.admissible})
            won = step.won
            if step.done:
                break
    finally:
        env.close()
    return {
        "game_id": game.game_id,
        "split": game.split,
        "task_type": game.task_type,
        "observation": observation,
        "task": task,
        "steps": steps,
        "won": won,
    }


def replay_many(
    games: list[Game], workers: int = 1, detours: int = 0, desc: str = "replaying walkthroughs"
) -> list[dict]:
    """Replay many games, in worker processes when workers > 1 (each reset costs about 0.6 s)."""
    from functools import partial

    ids = [g.game_id for g in games]
    play = partial(replay, detours=detours)
    if workers <= 1:
        return [play(i) for i in tqdm(ids, desc=desc)]
    # fork, not spawn: spawn re-imports the caller's __main__, which reruns unguarded scripts.
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(workers) as pool:
        return list(tqdm(pool.imap(play, ids), total=len(ids), desc=desc))


def cached_replays(games: list[Game], cache_file: Path, workers: int = 1, detours: int = 0) -> list[dict]:
    """Replays stored in a JSONL cache; only games missing from it are played."""
    have = {r["game_id"]: r for r in read_jsonl(cache_file)}
    todo = [g for g in games if g.game_id not in have]
    if todo:
        for record in replay_many(todo, workers=workers, detours=detours):
            have[record["game_id"]] = record
        write_jsonl(cache_file, sorted(have.values(), key=lambda r: r["game_id"]))
    return [have[g.game_id] for g in games]


def transcript_text(record: dict) -> str:
    """A plain-text rendering, handy for tokenizer corpora and for reading."""
    lines = [record["observation"]]
    for s in record["steps"]:
        lines += [f"> {s['action']}", s["observation"]]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - manual inspection
    import sys

    print(json.dumps(replay(sys.argv[1]), indent=2))
