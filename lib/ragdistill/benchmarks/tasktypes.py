"""Helpers over anything that has a `task_type` (ALFWorld games, tasks of either benchmark): a sample balanced
over the types, and a count per split and type."""

from __future__ import annotations

import random
from typing import Sequence, TypeVar

T = TypeVar("T")


def balanced_by_type(items: Sequence[T], n: int, seed: int, order: Sequence[str]) -> list[T]:
    """n items spread evenly over the types (round-robin in `order`), reproducible for a seed."""
    by_type: dict[str, list[T]] = {t: [] for t in order}
    for item in items:
        by_type[item.task_type].append(item)
    rng = random.Random(seed)
    for pool in by_type.values():
        rng.shuffle(pool)
    picked: list[T] = []
    i = 0
    while len(picked) < n and any(i < len(p) for p in by_type.values()):
        for t in order:
            if i < len(by_type[t]) and len(picked) < n:
                picked.append(by_type[t][i])
        i += 1
    return picked


def counts_by_type(types_per_split: dict[str, list[str]], order: Sequence[str]):
    """A table of counts: rows the types in `order` and a total, columns the splits."""
    import pandas as pd

    rows = {split: pd.Series(types, dtype=object).value_counts() for split, types in types_per_split.items()}
    table = pd.DataFrame(rows).reindex(list(order)).fillna(0).astype(int)
    table.loc["total"] = table.sum()
    return table
