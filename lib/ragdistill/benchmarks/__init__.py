"""The two benchmarks behind one small interface, so every stage takes `env="alfworld"` or `env="webshop"`.

A task is an ALFWorld game or a WebShop goal: its id (what episode records call `game_id`), its type (ALFWorld's
six task types; WebShop's five product categories, the hint types there) and its split. `open_env(task_id)`
gives an environment with `reset() -> (observation, task)`, `step(action)` and `close()`; an id says which
benchmark it belongs to (ALFWorld ids start with their split, WebShop ids with `synthetic/` or `human/`).

Each benchmark is one object (`AlfworldBenchmark`, `WebShopBenchmark`) with the same methods; a third benchmark
is one more class in BENCHMARKS. The module-level functions are what the stages and notebooks call.
"""

from __future__ import annotations

from ragdistill.benchmarks.alfworld import AlfworldBenchmark
from ragdistill.benchmarks.base import Benchmark, Step, Task
from ragdistill.benchmarks.protocol import DESIGN, check_task, current_phase
from ragdistill.benchmarks.tasktypes import balanced_by_type, counts_by_type
from ragdistill.benchmarks.webshop import WebShopBenchmark

__all__ = ["Benchmark", "Step", "Task", "AlfworldBenchmark", "WebShopBenchmark"]


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
    """A fresh environment for a task: AlfworldEnv or WebShopEnv. In the design phase (stages 00-05, design tools)
    a game of the result split is refused with a ProtocolError (protocol.py)."""
    bench = _of(task_id)
    if current_phase() == DESIGN:
        check_task(task_id, bench.get_task(task_id).split, bench.eval_splits[0])
    return bench.open(task_id)


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
