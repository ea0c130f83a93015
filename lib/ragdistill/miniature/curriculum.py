"""What the small models learn from: expert demonstrations of reserved tasks, about half of them played
under a retrieved hint block that the demonstration follows.

The paper's 7B base model brings two skills to the method: it acts in the game's command language, and it
follows a rule written in its prompt. The `smoke` and `cpu` models learn both here, from the reserved
slice of train only (never a task any stage uses, never an evaluation task):

- ALFWorld: each reserved game played by a searching agent (`search_demo`: the room's receptacles in order
  until the object is in sight, then the expert's plan), or its walkthrough after a few receptacles drawn at
  random (`Mix.search`). With hints, its system prompt carries the hint block
  that BM25 retrieves for it (k=3, queried as in stage 03) from a bank made like stage 02's: the heuristic
  extractor's templates filled from the reserved games' expert plans (where each object was found, which
  appliance a task needs, the generic rules). When the block says where objects of its kind are kept, the
  demonstration searches those receptacles first, in order, then goes where the object is.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from ragdistill.benchmarks.alfworld.env import folder_names
from ragdistill.benchmarks.alfworld.hints import GENERIC, appliance_hint, location_hint, location_of, source_place
from ragdistill.method.hints import Hint
from ragdistill.run.paths import cache_dir

# The generic rules a reserved game's bank holds, per task type (the extractor's templates, unfilled).
_GENERIC_RULES = ("search", "take_seen", "open", "no_repeat", "no_revisit", "finish", "format")
_TYPE_RULES = {"puttwo": ("second",), "examine": ("lamp_first",)}


@dataclass(frozen=True)
class Mix:
    """How a demonstration set is made."""

    seed: int = 0
    hint_share: float = 0.5  # share of demonstrations played under a hint block
    k: int = 3  # hints per block, as stage 03 retrieves
    # How a demonstration searches before the expert plan takes over: "random" visits up to `detours`
    # receptacles drawn at random (hinted kinds first, in number order, under a hint); "ordered" visits them
    # in the order the room lists them until the object is in sight (search_demo), within `max_visits`.
    search: str = "random"
    detours: int = 3
    max_visits: int = 8


def demo_bank(records: list[dict]) -> dict[str, list[Hint]]:
    """Hints of the reserved games, per task type, made with the heuristic extractor's templates."""
    texts: dict[str, dict[str, str]] = {}
    for r in records:
        ttype, obj = r["task_type"], folder_names(r["game_id"])[0]
        own = texts.setdefault(ttype, {})
        place = source_place(r["game_id"], obj)
        if place:
            own.setdefault(location_hint(obj, place), r["game_id"])
    for ttype, own in texts.items():
        for name in (*_GENERIC_RULES, *_TYPE_RULES.get(ttype, ())):
            own.setdefault(GENERIC[name], "")
        if appliance_hint(ttype):
            own.setdefault(appliance_hint(ttype), "")
    return {t: [Hint(f"{t}-demo-{i:03d}", t, text, "", game, "", "demo") for i, (text, game) in enumerate(own.items())]
            for t, own in texts.items()}


def hint_blocks(records: list[dict], mix: Mix) -> list[list[str]]:
    """Per record: the hint texts its demonstration is played under ([] for one without hints)."""
    from ragdistill.method.teacher import BM25Retriever, query_text

    retriever = BM25Retriever(demo_bank(records))
    rng = random.Random(mix.seed)
    blocks = []
    for r in records:
        hinted = rng.random() < mix.hint_share
        query = query_text(r["observation"], r["task"])
        blocks.append([h.text for h in retriever.retrieve(r["task_type"], query, mix.k)] if hinted else [])
    return blocks


def guides_of(hints: list[str], obj: str) -> tuple[str, ...]:
    """The receptacle kinds the hints name for this object, in the block's order."""
    kinds = [loc[1] for loc in map(location_of, hints) if loc and loc[0] == obj]
    return tuple(dict.fromkeys(kinds))


def room_receptacles(observation: str) -> list[str]:
    """The receptacles of the room description, in the order it lists them."""
    m = re.search(r"you see (.+?)\.\s*(?:\n|$)", observation)
    if not m:
        return []
    parts = re.split(r", and |, | and ", m.group(1))
    return [re.sub(r"^an? ", "", p.strip()) for p in parts if p.strip()]


def search_demo(game_id: str, guides: tuple[str, ...] = (), max_visits: int = 8) -> dict:
    """One demonstration of a searching agent: it visits the receptacles in the order the room lists them
    (those of the `guides` kinds first, in number order), opening closed ones, until it sees an object of the
    task's kind; there it takes it and finishes the task as the game's expert plan does (with that instance).

    A visit where the object is in sight but the plan cannot be finished with that instance is played again
    without the visit. `won` is False when the search would need more than `max_visits` visits.
    """
    from ragdistill.benchmarks.alfworld.env import AlfworldEnv, get_game, walkthrough

    game = get_game(game_id)
    plan = walkthrough(game)
    target = folder_names(game_id)[0]
    take_at = next(i for i, a in enumerate(plan) if a.startswith("take "))
    plan_instance, plan_place = re.match(r"take (.+?) from (.+)$", plan[take_at]).groups()
    first_go = next(i for i, a in enumerate(plan) if a.startswith("go to "))
    skip: set[str] = set()
    while True:
        env = AlfworldEnv(game)
        try:
            observation, task = env.reset()
            listed = room_receptacles(observation)
            number = lambda r: int(r.rsplit(" ", 1)[1])  # noqa: E731
            guided = [r for kind in guides for r in sorted((x for x in listed if x.rsplit(" ", 1)[0] == kind), key=number)]
            record = {"game_id": game_id, "split": game.split, "task_type": game.task_type, "observation": observation,
                      "task": task, "steps": [], "won": False, "guides": list(guides)}
            steps, opened, found, visits = record["steps"], set(), None, 0

            def act(action: str):
                step = env.step(action)
                steps.append({"action": action, "observation": step.observation, "admissible": step.admissible})
                return step

            for place in dict.fromkeys(guided + listed):
                if place in skip:
                    continue
                if place == plan_place:
                    break  # the plan goes there next
                if visits == max_visits:
                    return record  # too long a search for a demonstration
                visits += 1
                seen = act(f"go to {place}").observation
                if "is closed" in seen:
                    seen = act(f"open {place}").observation
                    opened.add(place)
                m = re.search(rf"\b{re.escape(target)} (\d+)", seen)
                if m:
                    found = (f"{target} {m.group(1)}", place)
                    break
            if found:
                instance, place = found
                actions = [f"take {instance} from {place}"] + [a.replace(plan_instance, instance) for a in plan[take_at + 1:]]
            else:
                actions = plan[first_go:]
            for action in actions:
                if action.startswith("open ") and action[5:] in opened:
                    continue  # opened while searching
                step = act(action)
                record["won"] = step.won
                if step.done:
                    break
        finally:
            env.close()
        if record["won"] or found is None:
            return record
        skip.add(found[1])


def _cached(jobs: list[tuple[str, tuple[str, ...]]], cache_file, workers: int) -> list[dict]:
    """search_demo for each (game, guides), through a JSONL cache; missing ones in worker processes."""
    import multiprocessing as mp

    from ragdistill.run.io import read_jsonl, write_jsonl

    key = lambda game_id, guides: "|".join([game_id, *guides])  # noqa: E731
    have = {key(r["game_id"], r.get("guides", ())): r for r in read_jsonl(cache_file)}
    todo = [j for j in dict.fromkeys(jobs) if key(*j) not in have]
    if todo:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(max(1, workers)) as pool:
            for record in pool.starmap(search_demo, todo):
                have[key(record["game_id"], record.get("guides", ()))] = record
        write_jsonl(cache_file, [have[k] for k in sorted(have)])
    return [have[key(*j)] for j in jobs]


def alfworld_demos(games: list, mix: Mix, workers: int = 2) -> list[dict]:
    """Searching demonstrations of `games`, each with its `hints` (maybe none) and the `guides` it followed;
    won ones only."""
    from ragdistill.miniature.walkthroughs import cached_replays

    folder = cache_dir() / "walkthroughs"
    if mix.search == "ordered":
        file = folder / f"reserved-search{mix.max_visits}.jsonl"
        plain = _cached([(g.game_id, ()) for g in games], file, workers)
    else:
        plain = cached_replays(games, folder / f"reserved-detours{mix.detours}.jsonl", workers=workers, detours=mix.detours)
    blocks = hint_blocks([{"game_id": g.game_id, "task_type": g.task_type, **r} for g, r in zip(games, plain)], mix)
    guides = [guides_of(b, folder_names(g.game_id)[0]) for g, b in zip(games, blocks)]
    if mix.search == "ordered":
        records = _cached([(g.game_id, gd) for g, gd in zip(games, guides)], file, workers)
    else:
        at = [i for i, gd in enumerate(guides) if gd]
        guided = cached_replays([games[i] for i in at], folder / "reserved-guided.jsonl", workers=workers,
                                guides=[guides[i] for i in at])
        records = list(plain)
        for i, record in zip(at, guided):
            records[i] = record
    return [{**r, "hints": b} for r, b in zip(records, blocks) if r["won"]]


def demo_chat(record: dict, agent_name: str, thoughts: str = "plain") -> list[dict]:
    """A demonstration as the agent's own chat (no few-shot examples, its hint block if any), ending on its
    last answer (`thoughts`: demos.annotate)."""
    from ragdistill.method.agents import get_agent
    from ragdistill.miniature.demos import demo_turns

    agent = get_agent(agent_name)
    turns = demo_turns(agent_name, record, thoughts)
    return agent.messages(record["task_type"], record["observation"], turns, record.get("hints") or None, fewshot=False)[:-1]
