"""A WebShop-compatible text shop: BM25 search, result pages, item pages and purchases, with no server.

Pages and actions follow WebShop's text mode: segments joined by ` [SEP] `, actions `search[<query>]` and
`click[<button or value, lower-cased>]`. An action the current page does not offer changes nothing and
says so. Buying ends the episode with WebShop's reward (see webshop_reward). In a rollout loop:

    env = WebShopEnv(get_goal(goal_id))       # or WebShopEnv(goal_id); goals from list_goals("test")
    observation, instruction = env.reset()
    step = env.step("search[red dress]")      # WebShopStep(observation, done, won, admissible, reward)
    ...                                       # env.reward: the episode's reward (0 until a purchase)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from .io import publish_dir, staging_dir
from .paths import cache_dir
from .webshop_data import WEBSHOP_CATEGORIES, WEBSHOP_SPLITS, Goal, Product, Shop, get_goal, list_goals, load_shop
from .webshop_reward import Reward, purchase_reward

# The goal helpers are re-exported so a rollout loop needs only this module.
__all__ = ["WEBSHOP_CATEGORIES", "WEBSHOP_SPLITS", "Goal", "SearchIndex", "WebShopEnv", "WebShopStep", "get_goal",
           "list_goals", "oracle_actions"]

SEP = " [SEP] "
TOP_K = 50  # WebShop's search returns at most 50 products
PAGE_SIZE = 10
K1, B = 0.9, 0.4  # WebShop's Lucene engine (pyserini defaults)
# Bump when the indexed text or the tokenizer changes, so cached indexes are rebuilt.
INDEX_VERSION = "1"
FULL_HASH_LIMIT = 64 << 20  # bigger files are keyed by size, mtime and their first and last 8 MiB

BACK, PREV, NEXT, BUY = "back to search", "< prev", "next >", "buy now"
SUBPAGES = ("description", "features", "reviews")
_ACTION = re.compile(r"^(search|click)\[(.*)\]$", re.DOTALL)


@lru_cache(maxsize=1)
def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def _tokenize(texts: list[str], show_progress: bool = False):
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", stemmer=_stemmer(), show_progress=show_progress)


class SearchIndex:
    """BM25 (Lucene variant, English stemming and stopwords) over product texts."""

    def __init__(self, retriever, ids: Sequence[str]):
        self.retriever = retriever
        self.ids = list(ids)

    @classmethod
    def build(cls, texts: list[str], ids: Sequence[str], show_progress: bool = False) -> "SearchIndex":
        """Index `texts` (one per id) in memory."""
        import bm25s

        retriever = bm25s.BM25(k1=K1, b=B, method="lucene")
        retriever.index(_tokenize(texts, show_progress), show_progress=show_progress)
        return cls(retriever, ids)

    def save(self, folder: Path) -> None:
        """Write the index into a new folder, atomically (a temp folder renamed into place)."""
        tmp = staging_dir(folder)
        try:
            self.retriever.save(str(tmp), show_progress=False)
            (tmp / "ids.json").write_text(json.dumps(self.ids), encoding="utf-8")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        publish_dir(tmp, folder)

    @classmethod
    def load(cls, folder: Path) -> "SearchIndex":
        """Read an index written by save()."""
        import bm25s

        retriever = bm25s.BM25.load(str(folder), show_progress=False, verbosity=0)
        ids = json.loads((folder / "ids.json").read_text(encoding="utf-8"))
        return cls(retriever, ids)

    def search(self, query: str, k: int = TOP_K) -> list[str]:
        """Ids of the best `k` documents that share a term with the query, best first (ties by index order)."""
        import bm25s

        tokens = bm25s.tokenize([query], stopwords="en", stemmer=_stemmer(), return_ids=False, show_progress=False)[0]
        token_ids = self.retriever.get_tokens_ids([t for t in tokens if t])
        if not token_ids:
            return []
        scores = self.retriever.get_scores(token_ids)
        hits = np.flatnonzero(scores > 0)
        if len(hits) > k:
            hits = hits[np.argpartition(-scores[hits], k - 1)[:k]]
        order = np.lexsort((hits, -scores[hits]))  # score descending, then index order
        return [self.ids[i] for i in hits[order]]


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
class WebShopStep:
    """What one action did (the ALFWorld Step's fields plus the purchase reward)."""

    observation: str
    done: bool
    won: bool
    admissible: bool  # was the action one the page offers
    reward: float = 0.0


@dataclass
class _State:
    page: str = "search"  # search, results, item, description, features, reviews, done
    query: str = ""
    results: list[str] = field(default_factory=list)
    page_no: int = 1
    asin: str = ""
    chosen: dict[str, str] = field(default_factory=dict)


def parse_action(action: str) -> tuple[str, str] | None:
    """`search[...]` / `click[...]` as (verb, lower-cased argument), or None."""
    match = _ACTION.match(" ".join(action.strip().split()).lower())
    return (match[1], match[2].strip()) if match else None


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

    # Pages -------------------------------------------------------------------------------------------

    @property
    def _product(self) -> Product:
        return self.shop.products[self._state.asin]

    def _header(self) -> list[str]:
        return ["Instruction:", self.task]

    def _page_results(self) -> list[str]:
        s = self._state
        start = (s.page_no - 1) * PAGE_SIZE
        parts = self._header() + ["Back to Search", f"Page {s.page_no} (Total results: {len(s.results)})"]
        if s.page_no > 1:
            parts.append("< Prev")
        if start + PAGE_SIZE < len(s.results):
            parts.append("Next >")
        for asin in s.results[start : start + PAGE_SIZE]:
            product = self.shop.products[asin]
            parts += [asin, product.title, product.price_tag]
        return parts

    def _page_item(self) -> list[str]:
        product = self._product
        parts = self._header() + ["Back to Search", "< Prev"]
        for name, values in product.options.items():
            parts += [name, *values]
        return parts + [product.title, f"Price: {product.price_tag}", "Rating: N.A.", "Description", "Features",
                        "Reviews", "Buy Now"]

    def _page_sub(self) -> list[str]:
        product, page = self._product, self._state.page
        body = {"description": [product.description], "features": list(product.bullets), "reviews": []}[page]
        return self._header() + ["Back to Search", "< Prev"] + [b for b in body if b.strip()]

    def observation(self) -> str:
        """The current page as text."""
        page = self._require().page
        if page == "search":
            return SEP.join(["WebShop", "Instruction:", self.task, "Search"])
        if page == "results":
            return SEP.join(self._page_results())
        if page == "item":
            return SEP.join(self._page_item())
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
        """What can be clicked on the current page, lower-cased as WebShop's actions spell it."""
        s = self._require()
        if s.page == "results":
            start = (s.page_no - 1) * PAGE_SIZE
            buttons = [BACK] + ([PREV] if s.page_no > 1 else [])
            buttons += [NEXT] if start + PAGE_SIZE < len(s.results) else []
            return buttons + [a.lower() for a in s.results[start : start + PAGE_SIZE]]
        if s.page == "item":
            values = [v for vals in self._product.options.values() for v in vals]
            return [BACK, PREV, *dict.fromkeys(values), *SUBPAGES, BUY]
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
        return self.observation(), self.task

    def step(self, action: str) -> WebShopStep:
        """Take one action; one the page does not offer leaves the state as it was."""
        s = self._require()
        if s.page == "done":
            # No exception: a loop that stops only on `won` (ALFWorld's habit) must not crash on a lost purchase.
            text = "The episode is over: something was bought. Call reset() to start again."
            return WebShopStep(text, True, self.purchase.won, False, self.reward)
        parsed = parse_action(action)
        if parsed is None or not self._apply(*parsed):
            listed = ", ".join(self.available_actions())
            return WebShopStep(f"Invalid action: {action.strip()}. Available actions: {listed}", False, False, False)
        if s.page == "done":
            r = self.purchase
            product = self.shop.products[s.asin]
            text = SEP.join(["Thank you for shopping with us!", "Purchased", product.asin, product.title,
                             "Your score (min 0.0, max 1.0)", f"{r.reward:.4f}"])
            return WebShopStep(text, True, r.won, True, r.reward)
        return WebShopStep(self.observation(), False, False, True)

    def _apply(self, verb: str, arg: str) -> bool:
        """Change the state for a valid action and return True; return False (state untouched) otherwise."""
        s = self._state
        if verb == "search":
            if s.page != "search" or not arg:
                return False
            s.query, s.results, s.page_no, s.page = arg, self.index.search(arg), 1, "results"
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
            # An option value: select it in the first option that offers it (replacing that option's choice).
            name = next(n for n, vals in self._product.options.items() if arg in vals)
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


def oracle_actions(env: WebShopEnv, max_pages: int = TOP_K // PAGE_SIZE) -> list[str]:
    """Play the goal's own purchase (search its title, find it, choose its options, buy) and return the actions."""
    env.reset()
    goal, taken = env.goal, []

    def act(action: str) -> WebShopStep:
        taken.append(action)
        return env.step(action)

    act(f"search[{env.shop.products[goal.asin].title}]")
    for _ in range(max_pages):
        if f"click[{goal.asin.lower()}]" in env.available_actions():
            break
        if "click[next >]" not in env.available_actions():
            break
        act("click[next >]")
    step = act(f"click[{goal.asin.lower()}]")
    if step.admissible:
        for _, value in goal.options:
            act(f"click[{value}]")
        act("click[buy now]")
    return taken
