"""WebShop behind the Benchmark interface: the shop (data.py, env.py, search.py, reward.py), its heuristic hints."""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

from ragdistill.benchmarks.base import Benchmark, Task

_PRODUCT_ID = re.compile(r"\bb0[0-9a-z]{8}\b", re.IGNORECASE)  # WebShop's ASINs


class WebShopBenchmark(Benchmark):
    """WebShop: shopping goals in five product categories; evaluation on the 100 test goals, 15 steps."""

    name = "webshop"
    kinds = ("synthetic", "human")  # the first part of a goal id
    eval_splits = ("test",)
    max_steps, max_hints, lora = 15, 2, (16, 32)

    @property
    def splits(self) -> tuple[str, ...]:
        from ragdistill.benchmarks.webshop.data import WEBSHOP_SPLITS

        return WEBSHOP_SPLITS

    def types(self) -> tuple[str, ...]:
        from ragdistill.benchmarks.webshop.data import WEBSHOP_CATEGORIES

        return WEBSHOP_CATEGORIES

    @staticmethod
    def _task(goal, split: str) -> Task:
        return Task(goal.goal_id, goal.category, split, "webshop")

    @staticmethod
    def _split(goal_id: str) -> str:
        from ragdistill.benchmarks.webshop.data import load_shop

        shop = load_shop()
        if goal_id.startswith("human/"):
            return "human"
        return "test" if goal_id in {g.goal_id for g in shop.test} else "train"

    @staticmethod
    def _reserved_product(asin: str) -> bool:
        """About 1 in 10 products, with every goal on it."""
        return int(hashlib.sha256(asin.encode()).hexdigest(), 16) % 10 == 0

    def list_tasks(self, split: str) -> list[Task]:
        from ragdistill.benchmarks.webshop.data import list_goals

        return [self._task(g, split) for g in list_goals(split)]

    def get_task(self, task_id: str) -> Task:
        from ragdistill.benchmarks.webshop.data import get_goal

        return self._task(get_goal(task_id), self._split(task_id))

    def is_reserved(self, task_id: str) -> bool:
        return (task_id.startswith("synthetic/") and self._split(task_id) == "train"
                and self._reserved_product(task_id.split("/")[1]))

    def training_tasks(self) -> list[Task]:
        """Train goals off the reserved products (their products are disjoint from the 100 test goals')."""
        from ragdistill.benchmarks.webshop.data import list_goals

        return [self._task(g, "train") for g in list_goals("train") if not self._reserved_product(g.asin)]

    def reserved_tasks(self) -> list[Task]:
        from ragdistill.benchmarks.webshop.data import list_goals

        return [self._task(g, "train") for g in list_goals("train") if self._reserved_product(g.asin)]

    def is_training_task(self, task_id: str) -> bool:
        return self._split(task_id) == "train" and not self.is_reserved(task_id)

    def open(self, task_id: str):
        from ragdistill.benchmarks.webshop.env import WebShopEnv

        return WebShopEnv(task_id)

    def expert_actions(self, task_id: str) -> list[str]:
        """The oracle purchase: search the goal product's title, open it, choose the goal options, buy."""
        from ragdistill.benchmarks.webshop.env import WebShopEnv
        from ragdistill.benchmarks.webshop.oracle import oracle_actions

        return oracle_actions(WebShopEnv(task_id))

    extractor_system = (
        "You improve a web-shopping agent (WebShop). You read one failed episode: it bought a {task_type} product "
        "that matched the instruction only in part (reward below 1), or bought nothing. Write {min_hints} to "
        "{max_hints} short rules that would have made it buy the right product with the right options under the "
        "price limit. Each rule is one imperative sentence of at most 120 characters, general enough for other "
        "{task_type} products: no product ids, do not copy the instruction. "
        'Answer with JSON only, in this form: {{"hints": ["rule one", "rule two"]}}'
    )

    def heuristic_hints(self, record: dict, max_hints: int) -> list[str]:
        """What kept the purchase from a full reward, replayed in the shop (hints.py)."""
        from ragdistill.benchmarks.webshop.hints import heuristic_hints

        return heuristic_hints(record, max_hints)

    def episode_note(self, record: dict) -> str:
        return f"Reward of the episode: {record.get('reward', 0.0):.2f} (1.00 is a full match)"

    def hint_problem(self, hint: str) -> str | None:
        product = _PRODUCT_ID.search(hint)
        return f"names the product {product.group(0)!r}; write a rule for any product" if product else None

    def placebo_vocabulary(self) -> dict[str, tuple[str, ...]]:
        return _vocabulary()

    def placebo(self, hints: list[str], task_id: str, seed: int = 0) -> list[str]:
        """Only a hint's slots change (the asked option kinds, a quoted feature): the templates' own words, which
        a feature may share ("price"), stay."""
        from ragdistill.benchmarks.base import swap_names

        slots = [m for hint in hints for m in _SLOT.finditer(hint)]
        swapped = iter(swap_names([m.group(0) for m in slots], self.placebo_vocabulary(), f"{seed}:{task_id}"))
        return [_SLOT.sub(lambda m: next(swapped), hint) for hint in hints]

    def fill_placeholders(self, hint: str, task_id: str) -> str:
        return hint  # WebShop hints have no placeholders


# A WebShop hint's slots: the option kinds it asks for, "(size and color)" or "the asked size;", and a quoted feature.
_SLOT = re.compile(r"\([^()]*\)|asked [a-z ,]+;|'[^']*'")


@lru_cache(maxsize=1)
def _vocabulary() -> dict[str, tuple[str, ...]]:
    """The option kinds and the short feature phrases of the train goals (hints name nothing else)."""
    from ragdistill.benchmarks.webshop.data import list_goals
    from ragdistill.benchmarks.webshop.hints import _PHRASE

    kinds, features = set(), set()
    for goal in list_goals("train"):
        kinds.update(name.lower() for name, _ in goal.options if _PHRASE.match(name.lower()))
        features.update(a.lower() for a in goal.attributes if _PHRASE.match(a.lower()))
    return {"option kind": tuple(sorted(kinds)), "feature": tuple(sorted(features - kinds))}
