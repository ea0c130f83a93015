"""WebShop's heuristic hint extractor: replay a failed episode and name what kept it from a full reward.

The shop is deterministic, so a record's actions stepped again in a fresh WebShopEnv rebuild the whole
episode: the pages it went through, the items it opened and, when it bought something, the reward's
terms (product type, attributes, options, price). `diagnose` compares those with the goal and maps each
shortfall to a fixed, general rule, most telling first: a malformed answer, then how far the episode got
(never searched, never opened an item, never bought, or which reward term a purchase missed), then how it
wasted steps (loops, repeated searches, clicks on things the page does not show). The rules name at most
an option kind of the goal (`size`, `color`) or one short missing attribute phrase, never a product id or
the instruction, and hold no digits, so they validate for either benchmark and carry over to other goals
of the category.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from ragdistill.benchmarks.webshop.data import Product, Shop
from ragdistill.benchmarks.webshop.env import WebShopEnv, parse_action
from ragdistill.benchmarks.webshop.reward import attributes_matched, goal_options, options_matched

HINTS = {
    "format": "End every answer with exactly one action, search[query] or click[button], spelled as the page shows it.",
    "search_first": "Start with search[...] naming the product type and its key features, then open a matching result.",
    "open_result": "After a search, open a promising result by clicking its product id instead of searching again.",
    "buy": "Once an item fits, click each asked option and then buy now; do not browse until the steps run out.",
    "wrong_type": "Search for the product type the instruction names and buy only an item whose title is of that type.",
    "options": "On the item page, click each asked option value ({kinds}) before you click buy now.",
    "option_missing": "Buy only an item whose options include the asked {kinds}; otherwise go back and open another.",
    "attributes": "Before buying, check the title, features or description show each asked feature, like '{phrase}'.",
    "attributes_plain": "Before buying, check the title, features or description show each feature the instruction asks.",
    "price": "Compare the item's price with the price limit and never buy one above it; look for a cheaper match.",
    "loop": "If an action changes nothing, do not send it again; go back to search or open another result.",
    "repeat_search": "Do not repeat a search; if its results do not fit, change the words or look at the next page.",
    "only_shown": "Click only buttons listed on the current page, spelled as shown; search only from the search page.",
    "generic": "Before buy now, check the item's type, features, asked options and price against the instruction.",
}
# A goal's option name or attribute may appear in a hint only as a short phrase of plain words (at most
# 30 characters, so every filled template stays within MAX_CHARS).
_PHRASE = re.compile(r"^[a-z][a-z ,'&-]{0,28}[a-z]$")


# ---------------------------------------------------------------- replay


@dataclass
class Trace:
    """A replayed episode: the env at its end and what the actions did on the way."""

    env: WebShopEnv
    steps: int = 0
    searches: list[str] = field(default_factory=list)  # the query of every search the shop ran
    opened: list[str] = field(default_factory=list)  # product ids of the item pages opened, in order
    malformed: int = 0  # answers that are neither search[...] nor click[...]
    not_offered: int = 0  # well-formed actions the page did not offer


def page(env: WebShopEnv) -> str:
    """The page the env is on: search, results, item, description, features, reviews, or done (bought)."""
    return env._require().page


def current_product(env: WebShopEnv) -> Product | None:
    """The product whose page is open (or that was bought); None on the search and results pages."""
    state = env._require()
    return env.shop.products[state.asin] if state.asin and page(env) not in ("search", "results") else None


def trace(record: dict, shop: Shop | None = None) -> Trace:
    """Step the record's actions again in a fresh env for its goal, noting what each did."""
    env = WebShopEnv(record["game_id"], shop)
    env.reset()
    t = Trace(env)
    for step in record["trajectory"]:
        if page(env) == "done":
            break
        before = page(env)
        result = env.step(step["action"])
        t.steps += 1
        parsed = parse_action(step["action"])
        if parsed is None:
            t.malformed += 1
            continue
        if not result.admissible:
            t.not_offered += 1
        elif parsed[0] == "search":
            t.searches.append(parsed[1])
        elif before == "results" and page(env) == "item":
            t.opened.append(current_product(env).asin)
    return t


def replay(record: dict, shop: Shop | None = None) -> WebShopEnv:
    """A fresh env for the record's goal with every action of its trajectory stepped again."""
    return trace(record, shop).env


# ---------------------------------------------------------------- diagnosis


def _kinds(names: list[str]) -> str:
    """`size`, `size and color`, `size, color and fit type`; `options` when an odd name or the list is too long."""
    names = list(dict.fromkeys(names))
    text = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return text if _PHRASE.match(text) else "options"


def _many(count: int, steps: int) -> bool:
    """At least two, and at least a third of the episode's steps."""
    return count >= 2 and 3 * count >= steps


def _purchase_hints(env: WebShopEnv) -> list[str]:
    """What a purchase missed: its type first (it scales the whole reward), then options, attributes, price."""
    goal, bought, reward = env.goal, current_product(env), env.purchase
    found = []
    if reward.r_type < 1:
        found.append(HINTS["wrong_type"])
    if reward.options_matched < len(goal.options):
        chosen = list(env.chosen_options.values())
        offered = [v for values in bought.options.values() for v in values]
        # Each option as the reward compares it, beside its name for the hint's wording.
        missed = [(name, wanted) for (name, _), wanted in zip(goal.options, goal_options(goal))
                  if not options_matched([wanted], chosen)]
        unclicked = [name for name, wanted in missed if options_matched([wanted], offered)]
        lacking = [name for name, wanted in missed if not options_matched([wanted], offered)]
        if unclicked:
            found.append(HINTS["options"].format(kinds=_kinds(unclicked)))
        if lacking:
            found.append(HINTS["option_missing"].format(kinds=_kinds(lacking)))
    if reward.attributes_matched < len(goal.attributes):
        missing = [a for a in goal.attributes if not attributes_matched([a], bought)]
        phrase = next((a.lower() for a in missing if _PHRASE.match(a.lower())), None)
        found.append(HINTS["attributes"].format(phrase=phrase) if phrase else HINTS["attributes_plain"])
    if not reward.price_ok:
        found.append(HINTS["price"])
    return found


def diagnose(record: dict, shop: Shop | None = None) -> list[str]:
    """General hints for what kept one episode from a full reward, most important first (none for a win)."""
    t = trace(record, shop)
    env = t.env
    found: list[str] = []
    if _many(t.malformed, t.steps):
        found.append(HINTS["format"])
    if env.purchase is not None:
        found += _purchase_hints(env)
    elif not t.searches:
        found.append(HINTS["search_first"])
    elif not t.opened:
        found.append(HINTS["open_result"])
    else:
        found.append(HINTS["buy"])
    if record.get("stop_reason") == "repeated_action":
        found.append(HINTS["loop"])
    if t.searches and max(Counter(t.searches).values()) >= 2:
        found.append(HINTS["repeat_search"])
    if _many(t.not_offered, t.steps):
        found.append(HINTS["only_shown"])
    return list(dict.fromkeys(found))


def heuristic_hints(record: dict, max_hints: int = 2, shop: Shop | None = None) -> list[str]:
    """The first `max_hints` diagnoses (at least one: a generic rule when nothing specific went wrong)."""
    return diagnose(record, shop)[:max_hints] or [HINTS["generic"]]
