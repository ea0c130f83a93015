"""Expert demonstrations: replay a game's stored walkthrough through the environment and record it."""

from __future__ import annotations

import json
import multiprocessing as mp
import re
from pathlib import Path

from ragdistill.run.progress import tqdm

from ragdistill.benchmarks.alfworld.env import AlfworldEnv, Game, folder_names, get_game, walkthrough
from ragdistill.run.io import read_jsonl, write_jsonl


def _visit_elsewhere(env: AlfworldEnv, game: Game, plan: list[str], detours: int, steps: list[dict]) -> None:
    """Visit up to `detours` other receptacles before the plan's first `go to`, as a searching agent would.

    A visit is recorded only when the target object is not in sight there, so the demonstration never
    walks past what it looks for. `go to` answers do not depend on where the agent came from, so a visit
    left out of the record leaves the rest of it exact.
    """
    import random

    rng = random.Random(game.game_id)
    target = folder_names(game.game_id)[0]
    first_go = next((a for a in plan if a.startswith("go to ")), None)
    if first_go is None or detours <= 0:
        return
    options = [c for c in env.admissible_commands if c.startswith("go to ") and c != first_go]
    for action in rng.sample(options, k=min(len(options), rng.randint(0, detours))):
        step = env.step(action)
        if target not in step.observation.lower():
            steps.append({"action": action, "observation": step.observation, "admissible": step.admissible})


def _visit_guided(env: AlfworldEnv, game: Game, plan: list[str], guides: tuple[str, ...], steps: list[dict],
                  limit: int = 4) -> None:
    """Search as a rule says: the receptacles of each guided kind in turn (`countertop 1`, `countertop 2`, ...),
    up to `limit` visits, stopping where the plan's own first `go to` leads (the plan goes there next).

    As in `_visit_elsewhere`, a visit is recorded only when the target object is not in sight there.
    """
    target = folder_names(game.game_id)[0]
    first_go = next((a for a in plan if a.startswith("go to ")), None)
    if first_go is None:
        return
    visits = 0
    for kind in guides:
        numbered = [c for c in env.admissible_commands if re.fullmatch(rf"go to {re.escape(kind)} \d+", c)]
        for action in sorted(numbered, key=lambda c: int(c.rsplit(" ", 1)[1])):
            if action == first_go or visits >= limit:
                return
            step = env.step(action)
            visits += 1
            if target not in step.observation.lower():
                steps.append({"action": action, "observation": step.observation, "admissible": step.admissible})


def replay(game: Game | str, detours: int = 0, guides: tuple[str, ...] = ()) -> dict:
    """Play the stored walkthrough after some searching visits; returns the transcript.

    With `guides` (receptacle kinds a hint named), the search visits those kinds first, in order; without,
    up to `detours` receptacles drawn at random.
    """
    game = get_game(game) if isinstance(game, str) else game
    env = AlfworldEnv(game)
    try:
        observation, task = env.reset()
        steps, won = [], False
        plan = walkthrough(game)
        if guides:
            _visit_guided(env, game, plan, tuple(guides), steps)
        else:
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
        "guides": list(guides),
    }


def _play(job: tuple[str, int, tuple[str, ...]]) -> dict:
    game_id, detours, guides = job
    return replay(game_id, detours=detours, guides=guides)


def replay_many(
    games: list[Game], workers: int = 1, detours: int = 0, desc: str = "replaying walkthroughs",
    guides: list[tuple[str, ...]] | None = None,
) -> list[dict]:
    """Replay many games (with per-game `guides` when given), in worker processes when workers > 1 (each
    reset costs about 0.6 s)."""
    jobs = [(g.game_id, detours, tuple(guides[i]) if guides else ()) for i, g in enumerate(games)]
    if workers <= 1:
        return [_play(j) for j in tqdm(jobs, desc=desc)]
    # fork, not spawn: spawn re-imports the caller's __main__, which reruns unguarded scripts.
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(workers) as pool:
        return list(tqdm(pool.imap(_play, jobs), total=len(jobs), desc=desc))


def _cache_key(game_id: str, guides) -> str:
    return "|".join([game_id, *guides])


def cached_replays(games: list[Game], cache_file: Path, workers: int = 1, detours: int = 0,
                   guides: list[tuple[str, ...]] | None = None) -> list[dict]:
    """Replays stored in a JSONL cache (keyed by game and guides); only the missing ones are played."""
    wanted = [tuple(guides[i]) if guides else () for i in range(len(games))]
    have = {_cache_key(r["game_id"], r.get("guides", ())): r for r in read_jsonl(cache_file)}
    todo = [(g, w) for g, w in zip(games, wanted) if _cache_key(g.game_id, w) not in have]
    if todo:
        records = replay_many([g for g, _ in todo], workers=workers, detours=detours, guides=[w for _, w in todo])
        for record in records:
            have[_cache_key(record["game_id"], record["guides"])] = record
        write_jsonl(cache_file, [have[k] for k in sorted(have)])
    return [have[_cache_key(g.game_id, w)] for g, w in zip(games, wanted)]


def transcript_text(record: dict) -> str:
    """A plain-text rendering, handy for tokenizer corpora and for reading."""
    lines = [record["observation"]]
    for s in record["steps"]:
        lines += [f"> {s['action']}", s["observation"]]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - manual inspection
    import sys

    print(json.dumps(replay(sys.argv[1]), indent=2))
