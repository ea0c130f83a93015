"""What the small models learn from: expert demonstrations of reserved tasks, about half of them played
under a retrieved hint block that the demonstration follows.

The paper's 7B base model brings two skills to the method: it acts in the game's command language, and it
follows a rule written in its prompt. The `smoke` and `cpu` models learn both here, from the reserved
slice of train only (never a task any stage uses, never an evaluation task):

- ALFWorld: each reserved game's walkthrough, replayed through the game. Without hints the demonstration
  first searches a few receptacles drawn at random. With hints, its system prompt carries the hint block
  that BM25 retrieves for it (k=3, queried as in stage 03) from a bank made like stage 02's: the heuristic
  extractor's templates filled from the reserved games' expert plans (where each object was found, which
  appliance a task needs, the generic rules). When the block says where objects of its kind are kept, the
  demonstration searches those receptacles first, in order, then goes where the object is.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .hints import GENERIC, Hint, appliance_hint, location_hint, location_of, source_place
from .paths import cache_dir

# The generic rules a reserved game's bank holds, per task type (the extractor's templates, unfilled).
_GENERIC_RULES = ("search", "take_seen", "open", "no_repeat", "no_revisit", "finish", "format")
_TYPE_RULES = {"puttwo": ("second",), "examine": ("lamp_first",)}


@dataclass(frozen=True)
class Mix:
    """How a demonstration set is made."""

    seed: int = 0
    hint_share: float = 0.5  # share of demonstrations played under a hint block
    k: int = 3  # hints per block, as stage 03 retrieves
    detours: int = 3  # random searching visits of the demonstrations without hints


def target_of(game_id: str) -> str:
    """The task's object type from the folder name `<type>-<Object>-<Mrecep>-<Receptacle>-<scene>`."""
    return game_id.split("/")[1].split("-")[1].lower()


def demo_bank(records: list[dict]) -> dict[str, list[Hint]]:
    """Hints of the reserved games, per task type, made with the heuristic extractor's templates."""
    texts: dict[str, dict[str, str]] = {}
    for r in records:
        ttype, obj = r["task_type"], target_of(r["game_id"])
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
    from .retrieval import BM25Retriever, query_text

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


def alfworld_demos(games: list, mix: Mix, workers: int = 2) -> list[dict]:
    """Replayed demonstrations of `games`, each with its `hints` (maybe none) and the `guides` it followed."""
    from .walkthroughs import cached_replays

    folder = cache_dir() / "walkthroughs"
    plain = cached_replays(games, folder / f"reserved-detours{mix.detours}.jsonl", workers=workers, detours=mix.detours)
    blocks = hint_blocks(plain, mix)
    guides = [guides_of(b, target_of(g.game_id)) for g, b in zip(games, blocks)]
    guided_idx = [i for i, g in enumerate(guides) if g]
    guided = cached_replays([games[i] for i in guided_idx], folder / "reserved-guided.jsonl", workers=workers,
                            guides=[guides[i] for i in guided_idx])
    records = list(plain)
    for i, record in zip(guided_idx, guided):
        records[i] = record
    return [{**r, "hints": b} for r, b in zip(records, blocks) if r["won"]]


def demo_chat(record: dict, agent_name: str) -> list[dict]:
    """A demonstration as the agent's own chat (no few-shot examples, its hint block if any), ending on its
    last answer."""
    from .agents import get_agent
    from .demos import demo_turns

    agent = get_agent(agent_name)
    turns = demo_turns(agent_name, record)
    return agent.messages(record["task_type"], record["observation"], turns, record.get("hints") or None, fewshot=False)[:-1]
