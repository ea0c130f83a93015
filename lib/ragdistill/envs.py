"""The two benchmarks behind one small interface, so every stage takes `env="alfworld"` or `env="webshop"`.

A task is an ALFWorld game or a WebShop goal: its id (what episode records call `game_id`), its type (ALFWorld's
six task types; WebShop's five product categories, the hint types there) and its split. `open_env(task_id)`
gives an environment with `reset() -> (observation, task)`, `step(action)` and `close()`; an id says which
benchmark it belongs to (ALFWorld ids start with their split, WebShop ids with `synthetic/` or `human/`).

Each benchmark is one object (`AlfworldBenchmark`, `WebShopBenchmark`) with the same methods; a third benchmark
is one more class in BENCHMARKS. The module-level functions are what the stages and notebooks call.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .tasktypes import balanced_by_type, counts_by_type


@dataclass(frozen=True)
class Task:
    """One ALFWorld game or WebShop goal, as the stages see it."""

    game_id: str
    task_type: str
    split: str
    env: str


class Benchmark:
    """What a stage needs from a benchmark; the settings are the paper's (evaluation split, step limit, hints per
    failure, LoRA rank and alpha for a 7B-14B model)."""

    name: str
    splits: tuple[str, ...]
    eval_splits: tuple[str, ...]  # the first is the paper's
    max_steps: int
    max_hints: int
    lora: tuple[int, int]

    def types(self) -> tuple[str, ...]:
        """The task types in their display order (the hint types)."""
        raise NotImplementedError

    def list_tasks(self, split: str) -> list[Task]:
        raise NotImplementedError

    def get_task(self, task_id: str) -> Task:
        raise NotImplementedError

    def is_reserved(self, task_id: str) -> bool:
        raise NotImplementedError

    def training_tasks(self) -> list[Task]:
        raise NotImplementedError

    def reserved_tasks(self) -> list[Task]:
        raise NotImplementedError

    def is_training_task(self, task_id: str) -> bool:
        raise NotImplementedError

    def open(self, task_id: str):
        raise NotImplementedError

    def expert_actions(self, task_id: str) -> list[str]:
        raise NotImplementedError


class AlfworldBenchmark(Benchmark):
    """ALFWorld: text games in six task types; evaluation on valid_unseen (134 games), 50 steps."""

    name = "alfworld"
    eval_splits = ("valid_unseen", "valid_seen")
    max_steps, max_hints, lora = 50, 4, (64, 128)

    @property
    def splits(self) -> tuple[str, ...]:
        from .data import ALFWORLD_SPLITS

        return ALFWORLD_SPLITS

    def types(self) -> tuple[str, ...]:
        from .alfworld_env import TYPE_ORDER

        return TYPE_ORDER

    @staticmethod
    def _task(game) -> Task:
        return Task(game.game_id, game.task_type, game.split, "alfworld")

    def list_tasks(self, split: str) -> list[Task]:
        from .alfworld_env import list_games

        return [self._task(g) for g in list_games(split)]

    def get_task(self, task_id: str) -> Task:
        from .alfworld_env import get_game

        return self._task(get_game(task_id))

    def is_reserved(self, task_id: str) -> bool:
        from .alfworld_env import is_reserved

        return is_reserved(task_id)

    def training_tasks(self) -> list[Task]:
        from .alfworld_env import training_pool

        return [self._task(g) for g in training_pool()]

    def reserved_tasks(self) -> list[Task]:
        from .alfworld_env import reserved_games

        return [self._task(g) for g in reserved_games()]

    def is_training_task(self, task_id: str) -> bool:
        return task_id.startswith("train/") and self.get_task(task_id).split == "train" and not self.is_reserved(task_id)

    def open(self, task_id: str):
        from .alfworld_env import AlfworldEnv

        return AlfworldEnv(task_id)

    def expert_actions(self, task_id: str) -> list[str]:
        """The game's stored walkthrough."""
        from .alfworld_env import get_game, walkthrough

        return walkthrough(get_game(task_id))


class WebShopBenchmark(Benchmark):
    """WebShop: shopping goals in five product categories; evaluation on the 100 test goals, 15 steps."""

    name = "webshop"
    kinds = ("synthetic", "human")  # the first part of a goal id
    eval_splits = ("test",)
    max_steps, max_hints, lora = 15, 2, (16, 32)

    @property
    def splits(self) -> tuple[str, ...]:
        from .webshop_data import WEBSHOP_SPLITS

        return WEBSHOP_SPLITS

    def types(self) -> tuple[str, ...]:
        from .webshop_data import WEBSHOP_CATEGORIES

        return WEBSHOP_CATEGORIES

    @staticmethod
    def _task(goal, split: str) -> Task:
        return Task(goal.goal_id, goal.category, split, "webshop")

    @staticmethod
    def _split(goal_id: str) -> str:
        from .webshop_data import load_shop

        shop = load_shop()
        if goal_id.startswith("human/"):
            return "human"
        return "test" if goal_id in {g.goal_id for g in shop.test} else "train"

    @staticmethod
    def _reserved_product(asin: str) -> bool:
        """About 1 in 10 products, with every goal on it."""
        return int(hashlib.sha256(asin.encode()).hexdigest(), 16) % 10 == 0

    def list_tasks(self, split: str) -> list[Task]:
        from .webshop_data import list_goals

        return [self._task(g, split) for g in list_goals(split)]

    def get_task(self, task_id: str) -> Task:
        from .webshop_data import get_goal

        return self._task(get_goal(task_id), self._split(task_id))

    def is_reserved(self, task_id: str) -> bool:
        return (task_id.startswith("synthetic/") and self._split(task_id) == "train"
                and self._reserved_product(task_id.split("/")[1]))

    def training_tasks(self) -> list[Task]:
        """Train goals off the reserved products (their products are disjoint from the 100 test goals')."""
        from .webshop_data import list_goals

        return [self._task(g, "train") for g in list_goals("train") if not self._reserved_product(g.asin)]

    def reserved_tasks(self) -> list[Task]:
        from .webshop_data import list_goals

        return [self._task(g, "train") for g in list_goals("train") if self._reserved_product(g.asin)]

    def is_training_task(self, task_id: str) -> bool:
        return self._split(task_id) == "train" and not self.is_reserved(task_id)

    def open(self, task_id: str):
        from .webshop_env import WebShopEnv

        return WebShopEnv(task_id)

    def expert_actions(self, task_id: str) -> list[str]:
        """The oracle purchase: search the goal product's title, open it, choose the goal options, buy."""
        from .webshop_env import WebShopEnv, oracle_actions

        return oracle_actions(WebShopEnv(task_id))


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (AlfworldBenchmark(), WebShopBenchmark())}
ENVS = tuple(BENCHMARKS)
# The paper's settings per benchmark, by name (configs and recipes read these).
EVAL_SPLIT = {name: b.eval_splits[0] for name, b in BENCHMARKS.items()}
EVAL_SPLITS = {name: b.eval_splits for name, b in BENCHMARKS.items()}
MAX_STEPS = {name: b.max_steps for name, b in BENCHMARKS.items()}
MAX_HINTS = {name: b.max_hints for name, b in BENCHMARKS.items()}
LORA = {name: b.lora for name, b in BENCHMARKS.items()}


class UnknownEnvError(ValueError):
    """The env name is not one of ENVS."""


def check_env(env: str) -> str:
    if env not in ENVS:
        raise UnknownEnvError(f"unknown env {env!r}: choose 'alfworld' or 'webshop'")
    return env


def benchmark(env: str) -> Benchmark:
    """The benchmark object of a name."""
    return BENCHMARKS[check_env(env)]


def env_of(task_id: str) -> str:
    """Which benchmark a task id belongs to."""
    return "webshop" if task_id.split("/", 1)[0] in WebShopBenchmark.kinds else "alfworld"


def _of(task_id: str) -> Benchmark:
    return BENCHMARKS[env_of(task_id)]


def type_order(env: str) -> tuple[str, ...]:
    """The task types of a benchmark in their display order (the hint types)."""
    return benchmark(env).types()


def get_task(task_id: str) -> Task:
    """Look a task up by its id (a KeyError names the id when it does not exist)."""
    return _of(task_id).get_task(task_id)


def is_reserved(task_id: str) -> bool:
    """About 1 in 10 train tasks is reserved for the small models' warm-starts and used by no stage: ALFWorld
    per game, WebShop per product (every goal of a reserved product)."""
    return _of(task_id).is_reserved(task_id)


def training_tasks(env: str) -> list[Task]:
    """Tasks the method's stages may learn from: train minus the reserved warm-start slice."""
    return benchmark(env).training_tasks()


def reserved_tasks(env: str) -> list[Task]:
    """The reserved warm-start slice of train (the smoke and cpu models learn from it)."""
    return benchmark(env).reserved_tasks()


def eval_tasks(env: str, split: str = "") -> list[Task]:
    """Evaluation tasks: an ALFWorld validation split, or WebShop's 100 test goals."""
    bench = benchmark(env)
    split = split or bench.eval_splits[0]
    if split not in bench.eval_splits:
        raise ValueError(f"split={split!r} is not an evaluation split of {env}: choose {', '.join(bench.eval_splits)}")
    return bench.list_tasks(split)


def balanced(tasks: list[Task], n: int, seed: int = 0) -> list[Task]:
    """n tasks spread evenly over the types (round-robin in type order), reproducible for a seed."""
    return balanced_by_type(tasks, n, seed, type_order(tasks[0].env)) if tasks else []


def is_training_task(task_id: str) -> bool:
    """May this task's episodes train a student (not an evaluation task, not reserved for warm-starts)?"""
    return _of(task_id).is_training_task(task_id)


def open_env(task_id: str):
    """A fresh environment for a task: AlfworldEnv or WebShopEnv."""
    return _of(task_id).open(task_id)


def list_tasks(env: str, split: str) -> list[Task]:
    """Every task of a split (ALFWorld: train, valid_seen, valid_unseen; WebShop: train, test, human)."""
    return benchmark(env).list_tasks(split)


def split_counts(env: str):
    """Tasks per split and type, as a table (rows: types and total; columns: splits)."""
    bench = benchmark(env)
    return counts_by_type({s: [t.task_type for t in bench.list_tasks(s)] for s in bench.splits}, bench.types())


def expert_actions(task_id: str) -> list[str]:
    """A winning action sequence, for tours and tests (never shown to an agent)."""
    return _of(task_id).expert_actions(task_id)
