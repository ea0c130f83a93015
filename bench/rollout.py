"""Rollout throughput at batch 1, 4 and 8: episodes per minute, where the time goes, and the prompt
tokens prefilled again at every step (what keeping each episode's KV cache between steps would save).

    python bench/rollout.py --profile smoke --games 8 --max-steps 10
    python bench/rollout.py --profile cpu --games 8 --max-steps 8 --threads 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ragdistill.alfworld_env import balanced_sample, training_pool
from ragdistill.backends import TransformersBackend
from ragdistill.models import load_model
from ragdistill.profiles import get_profile
from ragdistill.rollout import EpisodeSpec, RolloutConfig, read_episodes, run_rollouts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--games", type=int, default=8)
    parser.add_argument("--agent", default="react")
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--batches", default="1,4,8")
    parser.add_argument("--workers", type=int, default=0, help="environment worker processes (0: in process)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--fewshot", choices=["auto", "on", "off"], default="auto")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    loaded = load_model(args.profile)
    fewshot = get_profile(args.profile).fewshot if args.fewshot == "auto" else args.fewshot == "on"
    games = balanced_sample(training_pool(), args.games, seed=0)
    specs = [EpisodeSpec(g.game_id, args.agent) for g in games]
    print(f"{args.profile}: {len(specs)} {args.agent} episodes, max {args.max_steps} steps, few-shot {fewshot}, "
          f"{args.threads} thread(s), {args.workers} env workers")
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "episodes.jsonl"
            cfg = RolloutConfig(max_steps=args.max_steps, batch_size=batch, workers=args.workers, fewshot=fewshot)
            start = time.perf_counter()
            stats = run_rollouts(specs, TransformersBackend(loaded, batch_size=batch), out, args.profile, cfg, progress=False)
            wall = time.perf_counter() - start
            eps = read_episodes(out)
        prefill = sum(r["prompt_tokens"] for r in eps) / len(eps)
        new = sum(r["completion_tokens"] for r in eps) / len(eps)
        rows.append((batch, len(eps) / wall * 60, stats.model_seconds / wall, stats.env_seconds / wall, prefill, new,
                     sum(r["steps"] for r in eps) / len(eps), sum(r["won"] for r in eps)))
    base = rows[0][1]
    print(f"{'batch':>5} {'episodes/min':>12} {'x batch 1':>9} {'model %':>8} {'env %':>6} "
          f"{'prefill tok/ep':>14} {'new tok/ep':>10} {'prefill/new':>11} {'steps/ep':>8} {'won':>4}")
    for batch, epm, model, env, prefill, new, steps, won in rows:
        print(f"{batch:5d} {epm:12.2f} {epm / base:9.2f} {100 * model:8.1f} {100 * env:6.1f} "
              f"{prefill:14.0f} {new:10.0f} {prefill / max(new, 1):11.1f} {steps:8.1f} {won:4d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
