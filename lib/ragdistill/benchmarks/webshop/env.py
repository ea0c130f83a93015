"""A WebShop text shop that behaves as the original environment's text mode: search, pages, purchases, no server.

Observations are WebShop's text mode, page by page: the visible texts joined by ` [SEP] `. Actions are
`search[<query>]` (from any page, as the original allows) and `click[<button, product id or option value>]`,
read as WebShop reads them: the argument lower-cased, the verb as written. The search is WebShop's engine
(search.py); `<c> dept`, `<q> query`, `<a> attribute` and `<r>` are its listing shortcuts (a department,
a scraped query, an attribute, 50 random products). An action the page does not offer changes nothing: the
page stays as it was and the step is marked not admissible. Buying ends the episode with WebShop's reward (see
reward.py) on WebShop's done page. In a rollout loop:

    env = WebShopEnv(get_goal(goal_id))       # or WebShopEnv(goal_id); goals from list_goals("test")
    observation, instruction = env.reset()
    step = env.step("search[red dress]")      # Step(observation, done, won, admissible, reward)
    ...                                       # env.reward: the episode's reward (0 until a purchase)
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from ragdistill.benchmarks.base import Step
from ragdistill.run.paths import cache_dir
from ragdistill.benchmarks.webshop.data import WEBSHOP_CATEGORIES, WEBSHOP_SPLITS, Goal, Product, Shop, get_goal, list_goals, load_shop
from ragdistill.benchmarks.webshop.reward import Reward, purchase_reward
from ragdistill.benchmarks.webshop.search import TOP_K, SearchIndex

# The goal helpers are re-exported so a rollout loop needs only this module.
__all__ = ["WEBSHOP_CATEGORIES", "WEBSHOP_SPLITS", "Goal", "SearchIndex", "Step", "WebShopEnv", "get_goal",
           "list_goals"]

SEP = " [SEP] "
PAGE_SIZE = 10
# Bump when the indexed text or the analysis changes, so cached indexes are rebuilt.
INDEX_VERSION = "2"
FULL_HASH_LIMIT = 64 << 20  # bigger files are keyed by size, mtime and their first and last 8 MiB

BACK, PREV, NEXT, BUY = "back to search", "< prev", "next >", "buy now"
SUBPAGES = ("description", "features", "reviews")
# WebShop's action syntax, matched as its engine matches it: from the start, greedy, on one line.
_ACTION = re.compile(r"(.+)\[(.+)\]")
# What WebShop's done page prints around the purchase (its text mode keeps the MTurk page's labels).
_DONE_BEFORE = ["Thank you for shopping with us!", "Your code:", "None", "(Paste it in your MTurk interface.)",
                "Purchased", "asin"]
_DONE_AFTER = ["attrs", "None", "category", "None", "query", "None", "product category", "None", "Target", "asin",
               "options", "attrs", "price upper", "instuction text", "category", "product category", "query", "Goal",
               "None", "Reward", "Your score (min 0.0, max 1.0)"]


def file_key(path: Path) -> str:
    """A content key for a data file: sha256 of the whole file, or of size, mtime and its ends when big."""
    stat = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        if stat.st_size <= FULL_HASH_LIMIT:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        else:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
            digest.update(f.read(8 << 20))
            f.seek(-(8 << 20), os.SEEK_END)
            digest.update(f.read())
    return digest.hexdigest()[:24]


def index_folder(products_file: Path) -> Path:
    """Where the index of a products file is cached: <project cache>/webshop_index/<key>."""
    return cache_dir() / "webshop_index" / f"{file_key(products_file)}-v{INDEX_VERSION}"


_INDEXES: dict[str, SearchIndex] = {}


def shop_index(shop: Shop) -> SearchIndex:
    """The shop's search index: from memory, else from the disk cache, else built once and cached."""
    key = str(shop.files["products"])
    if key not in _INDEXES:
        folder = index_folder(shop.files["products"])
        if (folder / "ids.json").is_file():
            _INDEXES[key] = SearchIndex.load(folder)
        else:
            products = list(shop.products.values())
            _INDEXES[key] = SearchIndex.build([p.search_text() for p in products], [p.asin for p in products])
            _INDEXES[key].save(folder)
    return _INDEXES[key]


@dataclass
class _State:
    page: str = "search"  # search, results, item, description, features, reviews, done
    query: str = ""
    results: list[str] = field(default_factory=list)
    page_no: int = 1
    asin: str = ""
    chosen: dict[str, str] = field(default_factory=dict)  # in the order first chosen, as WebShop keeps them


def parse_action(action: str) -> tuple[str, str] | None:
    """(`search` or `click`, lower-cased argument) as WebShop parses an action, or None for anything else."""
    match = _ACTION.match(action)
    if match is None or match[1] not in ("search", "click"):
        return None
    return match[1], match[2].lower()


class WebShopEnv:
    """One WebShop goal as a text environment: reset(), step(action), available_actions(), reward."""

    def __init__(self, goal: Goal | str, shop: Shop | None = None):
        self.shop = shop or load_shop()
        self.goal = self.shop.goal(goal) if isinstance(goal, str) else goal
        self.index = shop_index(self.shop)
        self.task = self.goal.instruction
        self.reward = 0.0  # the episode's reward: 0 until something is bought
        self.purchase: Reward | None = None
        self._state: _State | None = None
        self._rng = random.Random()

    # Pages -------------------------------------------------------------------------------------------

    @property
    def _product(self) -> Product:
        return self.shop.products[self._state.asin]

    def _header(self) -> list[str]:
        return ["Instruction:", self.task]

    def _page_results(self) -> list[str]:
        s = self._state
        start = (s.page_no - 1) * PAGE_SIZE
        # WebShop always offers `Next >`, even on the last page or with no results.
        parts = self._header() + ["Back to Search", f"Page {s.page_no} (Total results: {len(s.results)})"]
        parts += (["< Prev"] if s.page_no > 1 else []) + ["Next >"]
        for asin in s.results[start : start + PAGE_SIZE]:
            product = self.shop.products[asin]
            parts += [asin, product.title.strip(), product.price_tag]
        return parts

    def _page_item(self) -> list[str]:
        product = self._product
        parts = self._header() + ["Back to Search", "< Prev"]
        for name, values in product.options.items():
            parts += [name.strip(), *values]
        return parts + [product.title.strip(), f"Price: {product.price_tag}", "Rating: N.A.", "Description",
                        "Features", "Reviews", "Buy Now"]

    def _page_sub(self) -> list[str]:
        product, page = self._product, self._state.page
        body = {"description": [product.description], "features": list(product.bullets), "reviews": []}[page]
        # A page shows each text stripped; an empty one shows nothing.
        return self._header() + ["Back to Search", "< Prev"] + [b.strip() for b in body if b.strip()]

    def _page_done(self) -> list[str]:
        r, s = self.purchase, self._state
        return [*_DONE_BEFORE, s.asin, "options", json.dumps(s.chosen), *_DONE_AFTER, str(r.reward),
                "Reward Details", "None"]

    def observation(self) -> str:
        """The current page as text."""
        page = self._require().page
        if page == "search":
            return SEP.join(["WebShop", "Instruction:", self.task, "Search"])
        if page == "results":
            return SEP.join(self._page_results())
        if page == "item":
            return SEP.join(self._page_item())
        if page == "done":
            return SEP.join(self._page_done())
        return SEP.join(self._page_sub())

    # Actions -----------------------------------------------------------------------------------------

    def _require(self) -> _State:
        if self._state is None:
            raise RuntimeError("call reset() first")
        return self._state

    @property
    def has_search_bar(self) -> bool:
        return self._require().page == "search"

    def clickables(self) -> list[str]:
        """What can be clicked on the current page, in WebShop's order: buttons, products, option values."""
        s = self._require()
        if s.page == "results":
            start = (s.page_no - 1) * PAGE_SIZE
            buttons = [BACK] + ([PREV] if s.page_no > 1 else []) + [NEXT]
            return buttons + [a.lower() for a in s.results[start : start + PAGE_SIZE]]
        if s.page == "item":
            values = [v for vals in self._product.options.values() for v in vals]
            return list(dict.fromkeys([BACK, PREV, *SUBPAGES, BUY, *values]))
        if s.page in SUBPAGES:
            return [BACK, PREV]
        return []

    def available_actions(self) -> list[str]:
        """Actions the current page offers; on the search page, the template `search[<query>]`."""
        if self.has_search_bar:
            return ["search[<query>]"]
        return [f"click[{c}]" for c in self.clickables()]

    def reset(self) -> tuple[str, str]:
        """Open the search page: (observation, instruction)."""
        self._state = _State()
        self.reward, self.purchase = 0.0, None
        self._rng = random.Random(f"webshop-random-search:{self.goal.goal_id}")
        return self.observation(), self.task

    def step(self, action: str) -> Step:
        """Take one action; one WebShop would ignore leaves the page as it was and is not admissible."""
        s = self._require()
        if s.page == "done":
            # No exception: a loop that stops only on `won` (ALFWorld's habit) must not crash on a lost purchase.
            text = "The episode is over: something was bought. Call reset() to start again."
            return Step(text, True, self.purchase.won, False, self.reward)
        parsed = parse_action(action)
        if parsed is None or not self._apply(*parsed):
            return Step(self.observation(), False, False, False)
        if s.page == "done":
            r = self.purchase
            return Step(self.observation(), True, r.won, True, r.reward)
        return Step(self.observation(), False, False, True)

    def search_results(self, query: str) -> list[str]:
        """Product ids a search lists, as WebShop's engine finds them (its listing shortcuts included)."""
        words = query.split(" ")
        products = self.shop.products.values()
        if words[0] == "<r>":
            return self._rng.sample(list(self.shop.products), k=min(TOP_K, len(self.shop.products)))
        if words[0] == "<c>":
            department = words[1].strip() if len(words) > 1 else ""
            return [p.asin for p in products if p.department == department]
        if words[0] == "<q>":
            scraped = " ".join(words[1:]).strip()
            return [p.asin for p in products if p.query == scraped]
        if words[0] == "<a>":
            attribute = " ".join(words[1:]).strip()
            return [p.asin for p in products if attribute in p.attributes]
        return self.index.search(query)

    def _apply(self, verb: str, arg: str) -> bool:
        """Change the state for an action WebShop acts on and return True; return False (state untouched) otherwise."""
        s = self._state
        if verb == "search":
            s.query, s.results, s.page_no, s.page, s.asin = arg, self.search_results(arg), 1, "results", ""
            return True
        if arg not in self.clickables():
            return False
        if arg == BACK:
            self._state = _State()
        elif s.page == "results":
            if arg == NEXT:
                s.page_no += 1
            elif arg == PREV:
                s.page_no -= 1
            else:
                s.asin = next(a for a in s.results if a.lower() == arg)
                s.page, s.chosen = "item", {}
        elif s.page in SUBPAGES:
            s.page = "item"  # < prev: back to the item, options kept
        elif arg == PREV:
            s.page = "results"
        elif arg in SUBPAGES:
            s.page = arg
        elif arg == BUY:
            self._buy()
        else:
            # An option value selects the last option that offers it: WebShop maps each value to its last button.
            name = [n for n, vals in self._product.options.items() if arg in vals][-1]
            s.chosen[name] = arg
        return True

    def _buy(self) -> None:
        product = self._product
        self.purchase = purchase_reward(product, self._state.chosen, product.price, self.goal)
        self.reward = self.purchase.reward
        self._state.page = "done"

    @property
    def chosen_options(self) -> dict[str, str]:
        """Options selected on the current item page."""
        return dict(self._require().chosen)

    def close(self) -> None:
        """Nothing to release: kept so a rollout loop can treat WebShop and ALFWorld alike."""
