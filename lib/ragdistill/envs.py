"""The two benchmarks behind one small interface, so every stage takes `env="alfworld"` or `env="webshop"`.

A task is an ALFWorld game or a WebShop goal: its id (what episode records call `game_id`), its type (ALFWorld's
six task types; WebShop's five product categories, the hint types there) and its split. `open_env(task_id)`
gives an environment with `reset() -> (observation, task)`, `step(action)` and `close()`; an id says which
benchmark it belongs to (ALFWorld ids start with their split, WebShop ids with `synthetic/` or `human/`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .tasktypes import balanced_by_type, counts_by_type

ENVS = ("alfworld", "webshop")
# The paper's settings per benchmark: evaluation split, step limit, hints per failure, LoRA rank.
EVAL_SPLIT = {"alfworld": "valid_unseen", "webshop": "test"}
EVAL_SPLITS = {"alfworld": ("valid_unseen", "valid_seen"), "webshop": ("test",)}
MAX_STEPS = {"alfworld": 50, "webshop": 15}
MAX_HINTS = {"alfworld": 4, "webshop": 2}
LORA = {"alfworld": (64, 128), "webshop": (16, 32)}
_WEBSHOP_KINDS = ("synthetic", "human")


class UnknownEnvError(ValueError):
    """The env name is not one of ENVS."""


def check_env(env: str) -> str:
    if env not in ENVS:
        raise UnknownEnvError(f"unknown env {env!r}: choose 'alfworld' or 'webshop'")
    return env


@dataclass(frozen=True)
class Task:
    """One ALFWorld game or WebShop goal, as the stages see it."""

    game_id: str
    task_type: str
    split: str
    env: str


def env_of(task_id: str) -> str:
    """Which benchmark a task id belongs to."""
    return "webshop" if task_id.split("/", 1)[0] in _WEBSHOP_KINDS else "alfworld"


def type_order(env: str) -> tuple[str, ...]:
    """The task types of a benchmark in their display order (the hint types)."""
    if check_env(env) == "alfworld":
        from .alfworld_env import TYPE_ORDER

        return TYPE_ORDER
    from .webshop_data import WEBSHOP_CATEGORIES

    return WEBSHOP_CATEGORIES


def _webshop_task(goal, split: str) -> Task:
    return Task(goal.goal_id, goal.category, split, "webshop")


def _webshop_split(goal_id: str) -> str:
    from .webshop_data import load_shop

    shop = load_shop()
    if goal_id.startswith("human/"):
        return "human"
    return "test" if goal_id in {g.goal_id for g in shop.test} else "train"


def get_task(task_id: str) -> Task:
    """Look a task up by its id (a KeyError names the id when it does not exist)."""
    if env_of(task_id) == "alfworld":
        from .alfworld_env import get_game

        g = get_game(task_id)
        return Task(g.game_id, g.task_type, g.split, "alfworld")
    from .webshop_data import get_goal

    return _webshop_task(get_goal(task_id), _webshop_split(task_id))


def is_reserved(task_id: str) -> bool:
    """About 1 in 10 train tasks is reserved for the small models' warm-starts and used by no stage: ALFWorld
    per game, WebShop per product (every goal of a reserved product)."""
    if env_of(task_id) == "alfworld":
        from .alfworld_env import is_reserved as alfworld_reserved

        return alfworld_reserved(task_id)
    return task_id.startswith("synthetic/") and _webshop_split(task_id) == "train" and _reserved_product(task_id.split("/")[1])


def training_tasks(env: str) -> list[Task]:
    """Tasks the method's stages may learn from: train minus the reserved warm-start slice (WebShop's train
    goals are on products disjoint from the 100 test goals')."""
    if check_env(env) == "alfworld":
        from .alfworld_env import training_pool

        return [Task(g.game_id, g.task_type, g.split, "alfworld") for g in training_pool()]
    from .webshop_data import list_goals

    return [_webshop_task(g, "train") for g in list_goals("train") if not _reserved_product(g.asin)]


def reserved_tasks(env: str) -> list[Task]:
    """The reserved warm-start slice of train (the smoke and cpu models learn from it)."""
    if check_env(env) == "alfworld":
        from .alfworld_env import reserved_games

        return [Task(g.game_id, g.task_type, g.split, "alfworld") for g in reserved_games()]
    from .webshop_data import list_goals

    return [_webshop_task(g, "train") for g in list_goals("train") if _reserved_product(g.asin)]


def _reserved_product(asin: str) -> bool:
    import hashlib

    return int(hashlib.sha256(asin.encode()).hexdigest(), 16) % 10 == 0


def eval_tasks(env: str, split: str = "") -> list[Task]:
    """Evaluation tasks: an ALFWorld validation split, or WebShop's 100 test goals."""
    split = split or EVAL_SPLIT[check_env(env)]
    if split not in EVAL_SPLITS[env]:
        raise ValueError(f"split={split!r} is not an evaluation split of {env}: choose {', '.join(EVAL_SPLITS[env])}")
    if env == "alfworld":
        from .alfworld_env import list_games

        return [Task(g.game_id, g.task_type, g.split, "alfworld") for g in list_games(split)]
    from .webshop_data import list_goals

    return [_webshop_task(g, "test") for g in list_goals("test")]


def balanced(tasks: list[Task], n: int, seed: int = 0) -> list[Task]:
    """n tasks spread evenly over the types (round-robin in type order), reproducible for a seed."""
    return balanced_by_type(tasks, n, seed, type_order(tasks[0].env)) if tasks else []


def is_training_task(task_id: str) -> bool:
    """May this task's episodes train a student (not an evaluation task, not reserved for warm-starts)?"""
    if env_of(task_id) == "alfworld":
        return task_id.startswith("train/") and get_task(task_id).split == "train" and not is_reserved(task_id)
    return _webshop_split(task_id) == "train" and not is_reserved(task_id)


def open_env(task_id: str):
    """A fresh environment for a task: AlfworldEnv or WebShopEnv."""
    if env_of(task_id) == "alfworld":
        from .alfworld_env import AlfworldEnv

        return AlfworldEnv(task_id)
    from .webshop_env import WebShopEnv

    return WebShopEnv(task_id)


def list_tasks(env: str, split: str) -> list[Task]:
    """Every task of a split (ALFWorld: train, valid_seen, valid_unseen; WebShop: train, test, human)."""
    if check_env(env) == "alfworld":
        from .alfworld_env import list_games

        return [Task(g.game_id, g.task_type, g.split, "alfworld") for g in list_games(split)]
    from .webshop_data import list_goals

    return [_webshop_task(g, split) for g in list_goals(split)]


def split_counts(env: str):
    """Tasks per split and type, as a table (rows: types and total; columns: splits)."""
    if check_env(env) == "alfworld":
        from .data import ALFWORLD_SPLITS as splits
    else:
        from .webshop_data import WEBSHOP_SPLITS as splits
    return counts_by_type({s: [t.task_type for t in list_tasks(env, s)] for s in splits}, type_order(env))


def expert_actions(task_id: str) -> list[str]:
    """A winning action sequence, for tours and tests (never shown to an agent): ALFWorld's stored walkthrough,
    WebShop's oracle purchase (search the goal product's title, open it, choose the goal options, buy)."""
    if env_of(task_id) == "alfworld":
        from .alfworld_env import get_game, walkthrough

        return walkthrough(get_game(task_id))
    from .webshop_env import WebShopEnv, oracle_actions

    return oracle_actions(WebShopEnv(task_id))
