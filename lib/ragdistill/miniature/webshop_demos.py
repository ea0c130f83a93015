"""WebShop demonstrations for the small models: a plain shopper's episodes on reserved goals, about half of
them played under a retrieved hint block that the shopper follows.

The shopper searches the instruction's own words, opens the first result, and buys it. Only goals whose own product comes first for that search are demonstrated, so every
demonstration is a purchase of the right product. Without a hint the shopper chooses the asked options on
only some goals (`option_share`) and otherwise buys at once; when its hint block tells it to click the asked
options, it always does. The hints come from a bank made like stage 02's, retrieved with stage 03's BM25: the
WebShop extractor's rules filled with the reserved goals' option kinds and attributes (`bank="templates"`), or
what stage 02's extractor itself says about each goal's plain purchase, which skips the options
(`bank="failures"`).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from ragdistill.method.hints import Hint

_PRICE = re.compile(r",? and price lower than [\d.]+ dollars$")
_OPENING = re.compile(r"^(find me|i am looking for|i'm looking for|i want|i need)\s+")


@dataclass(frozen=True)
class WebMix:
    """How a WebShop demonstration set is made."""

    seed: int = 0
    hint_share: float = 0.5  # share of demonstrations played under a hint block
    option_share: float = 0.5  # without an options rule: share of demonstrations that choose the options
    k: int = 3
    short_search: bool = False  # search_words(short=True)
    bank: str = "templates"  # the hints' bank: demo_bank ("templates") or failure_bank ("failures")
    # Thoughts that plan from the first step: what the shopper will do once the item is open (click each asked
    # option, or buy at once), and the rule that says so when its hint block holds one.
    planned: bool = False


def search_words(goal, short: bool = False) -> str:
    """The search a demonstration sends, lower-cased: the whole instruction (its options and price limit are
    words of the goal product's page too: the product comes first for about 60% of the goals), or, `short`,
    its first three words after the opening and the asked option values (about as often first, and a short
    copy for a tiny model)."""
    if not short:
        return goal.instruction.strip().lower()
    words = _OPENING.sub("", goal.instruction.strip().lower()).split()[:3]
    return " ".join(words + [value for _, value in goal.options])


def demo_goals(goals: list, n: int, seed: int = 0, per_product: int = 3, short_search: bool = False) -> list:
    """Up to n goals, balanced over the categories, at most `per_product` per product, each on a product that
    comes first for its `search_words`."""
    from ragdistill.benchmarks import balanced, get_task
    from ragdistill.benchmarks.webshop.data import load_shop
    from ragdistill.benchmarks.webshop.env import shop_index

    index = shop_index(load_shop())
    rng = random.Random(seed)
    by_product: dict[str, list] = {}
    for g in goals:
        by_product.setdefault(g.asin, []).append(g)
    picked = []
    for _, group in sorted(by_product.items()):
        rng.shuffle(group)
        picked += [g for g in group if index.search(search_words(g, short_search), 1)[:1] == [g.asin]][:per_product]
    by_id = {g.goal_id: g for g in picked}
    return [by_id[t.game_id] for t in balanced([get_task(g.goal_id) for g in picked], n, seed)]


def _as_bank(texts: dict[str, dict[str, None]]) -> dict[str, list[Hint]]:
    """Hint texts per category as a bank's hints."""
    return {c: [Hint(f"{c}-demo-{i:03d}", c, t, "", "", "", "demo") for i, t in enumerate(own)] for c, own in texts.items()}


def demo_bank(goals: list) -> dict[str, list[Hint]]:
    """The WebShop extractor's rules per category, filled with the goals' option kinds and attributes."""
    from ragdistill.benchmarks.webshop.hints import HINTS, _PHRASE, _kinds

    texts: dict[str, dict[str, None]] = {}
    for g in goals:
        own = texts.setdefault(g.category, {})
        if g.options:
            kinds = _kinds([n for n, _ in g.options])
            own[HINTS["options"].format(kinds=kinds)] = None
            own[HINTS["option_missing"].format(kinds=kinds)] = None
        phrase = next((a.lower() for a in g.attributes if _PHRASE.match(a.lower())), None)
        own[HINTS["attributes"].format(phrase=phrase) if phrase else HINTS["attributes_plain"]] = None
        for name in ("format", "search_first", "open_result", "buy", "wrong_type", "price", "loop", "repeat_search",
                     "only_shown", "generic"):
            own[HINTS[name]] = None
    return _as_bank(texts)


def failure_bank(goals: list, mix: "WebMix") -> dict[str, list[Hint]]:
    """What stage 02's extractor (benchmarks.webshop.hints.heuristic_hints) says about each goal's plain purchase (search,
    open the first result, buy without choosing an option), per category; goals bought in full add nothing."""
    from ragdistill.benchmarks.webshop.hints import heuristic_hints

    texts: dict[str, dict[str, None]] = {}
    for goal in goals:
        plain = play(goal, [], False, mix)
        if plain["won"]:
            continue
        record = {"game_id": goal.goal_id, "trajectory": [{"action": s["action"]} for s in plain["steps"]]}
        for text in heuristic_hints(record):
            texts.setdefault(goal.category, {})[text] = None
    return _as_bank(texts)


BANKS = {"templates": lambda goals, mix: demo_bank(goals), "failures": failure_bank}


def says_choose_options(hints: list[str]) -> bool:
    """Whether a hint block tells the shopper to click the asked options before buying."""
    from ragdistill.benchmarks.webshop.hints import HINTS

    lead = HINTS["options"].split("(")[0]
    return any(h.startswith(lead) for h in hints)


def play(goal, hints: list[str], choose_options: bool, mix: "WebMix") -> dict:
    """One demonstration in the shop: search, open the first result, maybe choose the options, buy."""
    from ragdistill.benchmarks.webshop.env import WebShopEnv

    env = WebShopEnv(goal)
    observation, task = env.reset()
    steps = []

    def act(action: str, thought: str) -> None:
        step = env.step(action)
        steps.append({"action": action, "observation": step.observation, "thought": thought, "page": page,
                      "chosen": dict(chosen)})

    chosen: dict[str, str] = {}
    rule = "A rule says to click each asked option. " if says_choose_options(hints) else ""
    picks = choose_options and bool(goal.options)
    plan = ("" if not mix.planned else " Then I open it, click each asked option and buy it." if picks
            else " Then I open it and buy it.")
    page = "search page"
    act(f"search[{search_words(goal, mix.short_search)}]",
        f"{rule if mix.planned and picks else ''}I am on the search page. I search for the product with its main features.{plan}")
    page = "results page 1"
    then = "" if not mix.planned else " to click each asked option" if picks else " to buy it"
    # The product id as the page spells it (upper case), not lower-cased as the agents' instructions ask: the shop
    # reads either, and a tiny model copies a page's spelling far sooner than it learns to change its case.
    act(f"click[{goal.asin}]",
        f"{goal.asin} comes first and fits the instruction. I open it{then}.")
    page = f"item {goal.asin}"
    if choose_options:
        for name, value in goal.options:
            act(f"click[{value}]", f"{rule}I choose {name} {value}.")
            chosen[name] = value
    act("click[buy now]", "The item fits the instruction and the price limit. I buy it.")
    return {"game_id": goal.goal_id, "task_type": goal.category, "observation": observation, "task": task,
            "steps": steps, "hints": hints, "won": bool(env.purchase and env.purchase.won),
            "reward": env.reward, "env": "webshop"}


def webshop_demos(goals: list, mix: WebMix) -> list[dict]:
    """Demonstrations of `goals`, retrieved hint blocks on about `hint_share` of them: every one buys the goal's
    own product, and those that skip the asked options earn less than a full reward."""
    from ragdistill.method.teacher import BM25Retriever, query_text
    from ragdistill.benchmarks.webshop.env import WebShopEnv

    if mix.bank not in BANKS:
        raise ValueError(f"unknown bank {mix.bank!r}: choose one of {', '.join(BANKS)}")
    retriever = BM25Retriever(BANKS[mix.bank](goals, mix))
    rng = random.Random(mix.seed)
    records = []
    for goal in goals:
        hinted = rng.random() < mix.hint_share
        coin = rng.random() < mix.option_share
        hints = []
        if hinted:
            observation, task = WebShopEnv(goal).reset()
            hints = [h.text for h in retriever.retrieve(goal.category, query_text(observation, task), mix.k)]
        records.append(play(goal, hints, says_choose_options(hints) or coin, mix))
    return records


def answer(agent: str, goal_text: str, step: dict) -> str:
    """One step as the agent writes it (the formats of data/fewshot/webshop_*.json)."""
    if agent == "react":
        return f"think: {step['thought']}\naction: {step['action']}"
    chosen = ", ".join(f"{k}: {v}" for k, v in step["chosen"].items()) or "nothing"
    return (f"goal: {goal_text}\npage: {step['page']}\nchosen: {chosen}\nthought: {step['thought']}\n"
            f"action: {step['action']}")


def demo_chat(record: dict, agent_name: str) -> list[dict]:
    """A WebShop demonstration as the agent's chat (no few-shot example, its hint block if any), ending on
    its last answer."""
    from ragdistill.method.agents import get_agent

    agent = get_agent(agent_name, "webshop")
    goal_text = _PRICE.sub("", record["task"]).strip()
    turns = [(answer(agent_name, goal_text, s), s["observation"]) for s in record["steps"]]
    return agent.messages(record["task_type"], record["observation"], turns, record.get("hints") or None, fewshot=False)[:-1]
