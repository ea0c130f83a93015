"""Replay every stored walkthrough of a split through the environment wrapper: all must be won.

    python bench/replay_walkthroughs.py --split valid_unseen --workers 2
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

from ragdistill.benchmarks.alfworld.env import list_games
from ragdistill.miniature.walkthroughs import replay_many


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="valid_unseen")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    games = list_games(args.split)
    start = time.perf_counter()
    results = replay_many(games, workers=args.workers)
    seconds = time.perf_counter() - start
    won = Counter(r["task_type"] for r in results if r["won"])
    total = Counter(r["task_type"] for r in results)
    steps = sum(len(r["steps"]) for r in results)
    for t in total:
        print(f"{t:8} {won[t]:3}/{total[t]}")
    print(f"{args.split}: {sum(won.values())}/{len(results)} walkthroughs won")
    print(f"{seconds:.1f}s for {len(results)} games and {steps} steps with {args.workers} workers: "
          f"{len(results) / seconds:.2f} games/s, {seconds / len(results):.2f}s per game")
    lost = [r["game_id"] for r in results if not r["won"]]
    for g in lost:
        print("not won:", g)
    return 1 if lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
