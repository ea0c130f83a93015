"""How often the `cpu` profile's base agent wins after its warm-start (or before, with --untrained).

Plays a balanced subset of valid_seen (a design split: valid_unseen gives the result and chooses nothing) without
few-shot examples, as the later stages do with this
profile, and prints wins/episodes with a 95% Wilson interval, mean steps, the invalid-action rate and the
seconds per episode. Episodes run as the chain plays them: the profile's batch and lanes (cpu: up to 48 at once, over
two threads) through the backend's batched-reuse mode (each episode's KV cache kept between its turns: only the
new observation is prefilled at each step).

    python bench/warmstart_eval.py --games 12 --agents react,stateact --max-steps 30
    python bench/warmstart_eval.py --games 12 --agents react --untrained
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from ragdistill.benchmarks.alfworld.env import balanced_sample, list_games  # noqa: E402
from ragdistill.benchmarks.protocol import DESIGN, set_phase  # noqa: E402
from ragdistill.method.analysis import wilson  # noqa: E402
from ragdistill.generation.backends import TransformersBackend  # noqa: E402
from ragdistill.models.loading import load_model  # noqa: E402
from ragdistill.models.profiles import get_profile  # noqa: E402
from ragdistill.method.rollout.lockstep import EpisodeSpec, RolloutConfig, read_episodes, run_rollouts  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--split", default="valid_seen", choices=("train", "valid_seen"),
                        help="a design split (valid_unseen is the result's, played by stage 06 only)")
    parser.add_argument("--games", type=int, default=12)
    parser.add_argument("--agents", default="react,stateact")
    parser.add_argument("--max-steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--untrained", action="store_true", help="the model before its warm-start")
    parser.add_argument("--out", default=None, help="episodes JSONL (default: a file under /tmp, resumable)")
    args = parser.parse_args()
    set_phase(DESIGN)  # a design tool: benchmarks.open_env refuses the result split's games
    torch.set_num_threads(1)

    loaded = load_model(args.profile, untrained=args.untrained, device="cpu")
    profile = get_profile(args.profile)
    backend = TransformersBackend(loaded, batch_size=profile.rollout_batch, mode="batched-reuse", lanes=profile.rollout_lanes)
    games = balanced_sample(list_games(args.split), args.games, seed=args.seed)
    agents = args.agents.split(",")
    specs = [EpisodeSpec(g.game_id, a) for a in agents for g in games]
    tag = "untrained" if args.untrained else Path(loaded.path).name
    out = Path(args.out or f"/tmp/warmstart_eval-{tag}-{args.split}-{args.games}-{args.max_steps}.jsonl")
    cfg = RolloutConfig(max_steps=args.max_steps, batch_size=profile.rollout_batch, workers=0, fewshot=False)
    start = time.perf_counter()
    run_rollouts(specs, backend, out, f"{args.profile}:{tag}", cfg)
    wall = time.perf_counter() - start
    episodes = read_episodes(out, specs)

    report = {"model": loaded.path, "split": args.split, "games": args.games, "max_steps": args.max_steps, "rows": {}}
    for agent in agents + ["all"]:
        eps = [e for e in episodes if agent == "all" or e["agent"] == agent]
        if not eps:
            continue
        wins = sum(e["won"] for e in eps)
        steps = sum(e["steps"] for e in eps)
        lo, hi = wilson(wins, len(eps))
        row = {
            "wins": wins,
            "episodes": len(eps),
            "rate": round(100 * wins / len(eps), 1),
            "interval95": [lo, hi],
            "mean_steps": round(steps / len(eps), 1),
            "invalid_rate": round(100 * sum(e["invalid_actions"] for e in eps) / max(1, steps), 1),
            "seconds_per_episode": round(sum(e["seconds"] for e in eps) / len(eps), 1),
            "by_type": {t: f"{sum(e['won'] for e in eps if e['task_type'] == t)}/{sum(e['task_type'] == t for e in eps)}"
                        for t in dict.fromkeys(e["task_type"] for e in eps)},
        }
        report["rows"][agent] = row
        print(
            f"{agent:9s} {wins}/{len(eps)} won = {row['rate']}% (95% {lo}-{hi}%), mean steps {row['mean_steps']}, "
            f"invalid {row['invalid_rate']}%, {row['seconds_per_episode']} s/episode; by type {row['by_type']}"
        )
    report["wall_seconds_this_run"] = round(wall, 1)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
