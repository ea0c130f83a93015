"""Rollout throughput: episodes per minute at batch 1, 4 and 8, where the time goes, and the prompt tokens
the model prefills per episode. With --all-modes each batch size runs in every backend mode: left-padded
batches ("batched"), per-episode KV cache reuse one chat at a time ("reuse": only each step's new turn is
prefilled), and reuse with the batch decoded together ("batched-reuse"); the ratios are printed. --modes
picks the modes to run. Measured on the cpu profile (ReAct, 4 train games, 10 steps, batch 4, few-shot off,
one thread, a shared 2-core machine; two runs, the modes in opposite orders): batched 1.82-2.09, reuse
2.85-2.93, batched-reuse 3.85-4.61 episodes/min, the same answer at every step in all three.

    python bench/rollout.py --profile smoke --games 8 --max-steps 10
    python bench/rollout.py --profile cpu --games 8 --max-steps 8 --threads 1
    python bench/rollout.py --profile cpu --games 4 --max-steps 10 --batches 4 --all-modes --fewshot off
    python bench/rollout.py --profile cpu --games 4 --max-steps 10 --batches 4 --modes reuse,batched-reuse
    python bench/rollout.py --profile cpu --games 24 --max-steps 15 --batches 8,24 --lanes 1,2 --workers 2 --fewshot off

Lanes (the rows of a batched-reuse batch split over threads), measured on the cpu profile in the chain's setting
(12 valid_seen games x both agents, 15 steps, no few-shot examples, 2 env workers, a 2-core machine; one run
each): batch 8 380 s, batch 24 288 s (x1.32), batch 8 in 2 lanes 317 s (x1.20), batch 24 in 2 lanes 205 s
(x1.85); the same 295 steps, 11,522 generated tokens and 4 wins in all four. On 24 valid_seen games x both agents
(48 episodes, stage 06's size), in 2 lanes: batch 24 401 s, batch 48 345 s (x1.16), the same 573 steps, 22,203
generated tokens and 9 wins.

--backend server plays the same episodes through an OpenAI-compatible server twice, in lockstep batches and
asynchronously (each episode sends its next request as soon as its game answered, --concurrency in flight), and
prints the episodes per minute of each and their ratio. The server is `transformers serve` started for the run
(or the one at --base-url, e.g. a vLLM):

    python bench/rollout.py --profile smoke --backend server --games 8 --max-steps 10 --batches 4 --concurrency 4

Measured on smoke (a shared 2-core machine, one thread, 16 ReAct episodes of at most 10 steps, batch 8 against 8
in flight): `transformers serve`, which answers one request at a time, async x1.09 (16.3 -> 17.9 episodes/min);
with --server-args=--continuous-batching, which batches pending requests as vLLM does, x1.58 (10.5 -> 16.6).
The same episodes (texts and token counts) both ways in every run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from ragdistill.benchmarks.alfworld.env import balanced_sample, training_pool  # noqa: E402
from ragdistill.generation.backends import MODES, TransformersBackend  # noqa: E402
from ragdistill.models.loading import load_model  # noqa: E402
from ragdistill.models.profiles import get_profile  # noqa: E402
from ragdistill.method.rollout.lockstep import EpisodeSpec, RolloutConfig, read_episodes, run_rollouts  # noqa: E402


def _run(loaded, specs, cfg, mode: str | None, label: str, lanes: int = 1) -> dict:
    backend = TransformersBackend(loaded, batch_size=cfg.batch_size, mode=mode, lanes=lanes)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "episodes.jsonl"
        start = time.perf_counter()
        stats = run_rollouts(specs, backend, out, label, cfg, progress=False)
        wall = time.perf_counter() - start
        eps = {r["game_id"]: r for r in read_episodes(out)}
    n = len(eps)
    return {
        "mode": backend.mode + (f" x{lanes} lanes" if lanes > 1 else ""),
        "batch": cfg.batch_size,
        "epm": n / wall * 60,
        "model": stats.model_seconds / wall,
        "env": stats.env_seconds / wall,
        "prompt": backend.stats.prompt_tokens / n,  # what an API would bill
        "prefilled": backend.stats.prefilled_tokens / n,  # what the model computed
        "padding": backend.stats.padding_tokens / n,
        "new": backend.stats.generated_tokens / n,
        "steps": sum(r["steps"] for r in eps.values()) / n,
        "won": sum(r["won"] for r in eps.values()),
        "outputs": {g: [t["output"] for t in r["trajectory"]] for g, r in eps.items()},
        "cache_mb": backend.cache_bytes() / 2**20,  # the store at the end of the run
    }


def _run_server(backend, specs, cfg, label: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "episodes.jsonl"
        start = time.perf_counter()
        stats = run_rollouts(specs, backend, out, label, cfg, progress=False)
        wall = time.perf_counter() - start
        eps = {(r["game_id"], r["agent"]): r for r in read_episodes(out)}
    n = len(eps)
    return {"epm": n / wall * 60, "wall": wall, "steps": stats.steps, "won": sum(r["won"] for r in eps.values()),
            "outputs": {k: [t["output"] for t in r["trajectory"]] for k, r in eps.items()},
            "tokens": {k: (r["prompt_tokens"], r["completion_tokens"]) for k, r in eps.items()}}


def server_main(args, specs, fewshot: bool) -> int:
    """Lockstep batches against asynchronous episodes, on one server, in one run."""
    from ragdistill.generation.backends import server_spec
    from ragdistill.run.config import FailureConfig
    from ragdistill.generation.remote import OpenAIBackend
    from ragdistill.generation.server import ManagedServer

    server = None
    if args.base_url:
        url, model, kind = args.base_url, args.api_model, "auto"
    else:
        cfg = FailureConfig.from_params({"profile": args.profile, "backend": "transformers-serve", "server_args": args.server_args})
        server = ManagedServer(server_spec(cfg, "transformers-serve"), Path(tempfile.mkdtemp()) / "server.log").start()
        url, model, kind = server.base_url, server.spec.served_name, "transformers"
    try:
        rows = {}
        for name, concurrency in (("lockstep", 0), ("async", args.concurrency)):
            backend = OpenAIBackend(model, base_url=url, concurrency=max(args.concurrency, int(args.batches.split(",")[0])),
                                    server=kind)
            cfg = RolloutConfig(max_steps=args.max_steps, batch_size=int(args.batches.split(",")[0]), workers=args.workers,
                                fewshot=fewshot, concurrency=concurrency)
            rows[name] = _run_server(backend, specs, cfg, args.profile)
            print(f"  done: {name}: {rows[name]['epm']:.2f} episodes/min", flush=True)
    finally:
        if server:
            server.stop()
    a, b = rows["lockstep"], rows["async"]
    same = a["outputs"] == b["outputs"] and a["tokens"] == b["tokens"]
    print(f"\n{len(specs)} episodes against {url} (batch {args.batches.split(',')[0]} in lockstep, "
          f"{args.concurrency} in flight asynchronously)")
    for name, r in rows.items():
        print(f"  {name:>8}: {r['epm']:.2f} episodes/min ({r['wall']:.0f} s, {r['steps']} steps, {r['won']} won)")
    print(f"  async vs lockstep: episodes/min x{b['epm'] / a['epm']:.2f}; same episodes (texts and tokens): {same}")
    return 0


def _same_steps(a: dict, b: dict) -> float:
    """Share of steps whose answer is the same in both runs (greedy: should be all of them)."""
    same = total = 0
    for game, outs in a["outputs"].items():
        other = b["outputs"].get(game, [])
        total += max(len(outs), len(other))
        same += sum(x == y for x, y in zip(outs, other))
    return same / max(total, 1)


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
    parser.add_argument("--all-modes", action="store_true",
                        help="run each batch size in every mode (batched, reuse, batched-reuse), and print the ratios")
    parser.add_argument("--modes", default="", help=f"comma-separated modes to run per batch size ({', '.join(MODES)}); "
                        "default: the backend's default, or all of them with --all-modes")
    parser.add_argument("--lanes", default="1", help="comma-separated lane counts to run per batch size and mode "
                        "(batched-reuse: the rows of a batch split over that many threads)")
    parser.add_argument("--backend", choices=["local", "server"], default="local")
    parser.add_argument("--base-url", default="", help="--backend server: a running server (default: start transformers serve)")
    parser.add_argument("--api-model", default="", help="--backend server with --base-url: the model name it serves")
    parser.add_argument("--concurrency", type=int, default=8, help="--backend server: requests in flight, asynchronously")
    parser.add_argument("--server-args", default="", help="--backend server: more arguments for the started server")
    parser.add_argument("--untrained", action="store_true",
                        help="the profile's model before its warm-start (cpu: SmolLM2-135M-Instruct as released)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    fewshot = get_profile(args.profile).fewshot if args.fewshot == "auto" else args.fewshot == "on"
    games = balanced_sample(training_pool(), args.games, seed=0)
    specs = [EpisodeSpec(g.game_id, args.agent) for g in games]
    if args.backend == "server":
        return server_main(args, specs, fewshot)
    loaded = load_model(args.profile, untrained=args.untrained)
    print(f"{args.profile} ({Path(loaded.path).name}, {loaded.device}): {len(specs)} {args.agent} episodes, "
          f"max {args.max_steps} steps, few-shot {fewshot}, {args.threads} thread(s), {args.workers} env workers")
    if args.modes:
        modes = args.modes.split(",")
        unknown = [m for m in modes if m not in MODES]
        if unknown:
            parser.error(f"unknown mode(s) {', '.join(unknown)}: pick from {', '.join(MODES)}")
    else:
        modes = list(MODES) if args.all_modes else ["batched-reuse"]  # the backend's default mode
    variants = [(mode, int(lanes)) for mode in modes for lanes in args.lanes.split(",")]
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        cfg = RolloutConfig(max_steps=args.max_steps, batch_size=batch, workers=args.workers, fewshot=fewshot)
        for mode, lanes in variants:
            rows.append(_run(loaded, specs, cfg, mode, args.profile, lanes))
            r = rows[-1]
            print(f"  done: {r['mode']} batch {batch}: {r['epm']:.2f} episodes/min, {r['prefilled']:.0f} prefilled tok/ep",
                  flush=True)

    base = rows[0]["epm"]
    print(f"\n{'mode':>24} {'batch':>5} {'episodes/min':>12} {'x first':>7} {'model %':>7} {'env %':>5} "
          f"{'prompt tok/ep':>13} {'prefilled tok/ep':>16} {'pad tok/ep':>10} {'new tok/ep':>10} "
          f"{'prefilled/new':>13} {'steps/ep':>8} {'won':>3} {'kept MB':>8}")
    for r in rows:
        print(f"{r['mode']:>24} {r['batch']:5d} {r['epm']:12.2f} {r['epm'] / base:7.2f} {100 * r['model']:7.1f} "
              f"{100 * r['env']:5.1f} {r['prompt']:13.0f} {r['prefilled']:16.0f} {r['padding']:10.0f} {r['new']:10.0f} "
              f"{r['prefilled'] / max(r['new'], 1):13.1f} {r['steps']:8.1f} {r['won']:3d} {r['cache_mb']:8.1f}")
    if len(variants) > 1:
        print("\neach mode against the others at the same batch size:")
        for at in range(0, len(rows), len(variants)):
            group = rows[at : at + len(variants)]
            for i, r in enumerate(group):
                for ref in group[:i]:
                    print(f"  batch {r['batch']}: {r['mode']} vs {ref['mode']}: episodes/min x{r['epm'] / ref['epm']:.2f} "
                          f"({ref['epm']:.2f} -> {r['epm']:.2f}), prefilled tokens/episode "
                          f"x{r['prefilled'] / max(ref['prefilled'], 1):.3f} ({ref['prefilled']:.0f} -> {r['prefilled']:.0f}), "
                          f"same answers at {100 * _same_steps(ref, r):.1f}% of steps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
