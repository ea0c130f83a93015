"""What a small model's base agent can do, with and without a hint block: the two skills the method needs.

Plays a balanced subset of tasks that no stage uses for choosing a design (ALFWorld `valid_seen`; WebShop
goals of the reserved products that the model's demonstrations left out) twice: as the base agent, and
with k=3 hints retrieved by BM25 from the demonstration bank (curriculum.py: the extractor's templates
filled from reserved tasks, never a stage's bank). Prints wins, score, mean steps, tokens per episode, and
the paired count of tasks won only with hints vs only without.

    python bench/skill_eval.py --profile smoke --env alfworld --games 24
    python bench/skill_eval.py --model ~/.cache/ragdistill/models/smoke-<key> --env webshop --games 20
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

from ragdistill.benchmarks.protocol import DESIGN, set_phase  # noqa: E402
from ragdistill.method.analysis import wilson  # noqa: E402
from ragdistill.generation.backends import TransformersBackend  # noqa: E402
from ragdistill.benchmarks import balanced, list_tasks, reserved_tasks  # noqa: E402
from ragdistill.method.teacher import BM25Retriever, query_text  # noqa: E402
from ragdistill.method.rollout.lockstep import EpisodeSpec, RolloutConfig, read_episodes, run_rollouts  # noqa: E402


def design_tasks(env: str, n: int, seed: int) -> list:
    """Tasks for choosing a design: ALFWorld valid_seen; WebShop reserved goals outside the demonstrations."""
    if env == "alfworld":
        return balanced(list_tasks("alfworld", "valid_seen"), n, seed)
    from ragdistill.benchmarks.webshop.data import get_goal
    from ragdistill.miniature.webshop_demos import demo_goals

    reserved = reserved_tasks("webshop")
    shown = {g.goal_id for g in demo_goals([get_goal(t.game_id) for t in reserved], 10_000)}
    return balanced([t for t in reserved if t.game_id not in shown], n, seed)


def demo_bank(env: str) -> dict:
    """The demonstration bank of the reserved tasks (the same one the small models were shown)."""
    if env == "alfworld":
        from ragdistill.miniature.curriculum import demo_bank as alfworld_bank

        return alfworld_bank([{"game_id": t.game_id, "task_type": t.task_type} for t in reserved_tasks("alfworld")])
    from ragdistill.benchmarks.webshop.data import get_goal
    from ragdistill.miniature.webshop_demos import demo_bank as web_bank

    return web_bank([get_goal(t.game_id) for t in reserved_tasks("webshop")])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--model", default=None, help="a model folder instead of the profile's model")
    parser.add_argument("--env", default="alfworld")
    parser.add_argument("--games", type=int, default=24)
    parser.add_argument("--agents", default="react,stateact")
    parser.add_argument("--max-steps", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="episodes JSONL (default: a file under /tmp, resumable)")
    args = parser.parse_args()
    set_phase(DESIGN)  # a design tool: benchmarks.open_env refuses the result split's games
    torch.set_num_threads(1)

    from ragdistill.models.loading import LoadedModel, load_model

    if args.model:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ragdistill.models.profiles import get_profile

        tokenizer = AutoTokenizer.from_pretrained(args.model, padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
        loaded = LoadedModel(model, tokenizer, get_profile(args.profile), args.model, False, 0.0)
    else:
        loaded = load_model(args.profile, device="cpu")
    batch, lanes = loaded.profile.rollout_batch, loaded.profile.rollout_lanes  # as the chain plays
    backend = TransformersBackend(loaded, batch_size=batch, mode="batched-reuse", lanes=lanes)
    tasks = design_tasks(args.env, args.games, args.seed)
    retriever = BM25Retriever(demo_bank(args.env))

    def hints_at_t0(starting):
        return [[h.text for h in retriever.retrieve(t, query_text(obs, task), 3)] for _, t, obs, task in starting]

    agents = args.agents.split(",")
    tag = Path(loaded.path).name
    out = Path(args.out or f"/tmp/skill_eval-{tag}-{args.env}-{args.games}-{args.max_steps}.jsonl")
    cfg = RolloutConfig(max_steps=args.max_steps, batch_size=batch, workers=0, fewshot=False)
    start = time.perf_counter()
    base = [EpisodeSpec(t.game_id, a, "base") for a in agents for t in tasks]
    hinted = [EpisodeSpec(t.game_id, a, "hints") for a in agents for t in tasks]
    run_rollouts(base, backend, out, tag, cfg)
    run_rollouts(hinted, backend, out, tag, cfg, hint_source=hints_at_t0)
    report = {"model": loaded.path, "env": args.env, "games": len(tasks), "max_steps": args.max_steps,
              "seconds": round(time.perf_counter() - start, 1), "rows": {}}
    won = {}
    for cond, specs in (("base", base), ("hints", hinted)):
        eps = read_episodes(out, specs)
        won[cond] = {(e["game_id"], e["agent"]): e["won"] for e in eps}
        wins = sum(e["won"] for e in eps)
        lo, hi = wilson(wins, len(eps))
        report["rows"][cond] = {
            "wins": wins, "episodes": len(eps), "interval95": [lo, hi],
            "score": round(100 * sum(e.get("reward", e["won"]) for e in eps) / len(eps), 1),
            "mean_steps": round(sum(e["steps"] for e in eps) / len(eps), 1),
            "tokens_per_episode": round(sum(e["prompt_tokens"] + e["completion_tokens"] for e in eps) / len(eps)),
            "invalid_rate": round(sum(e["invalid_actions"] for e in eps) / max(1, sum(e["steps"] for e in eps)), 3),
            "per_agent": {a: sum(e["won"] for e in eps if e["agent"] == a) for a in agents},
        }
    report["only_hints"] = sum(w and not won["base"][k] for k, w in won["hints"].items())
    report["only_base"] = sum(w and not won["hints"][k] for k, w in won["base"].items())
    for cond, row in report["rows"].items():
        print(f"{cond:6s} {row['wins']}/{row['episodes']} won (95% {row['interval95'][0]}-{row['interval95'][1]}%), "
              f"score {row['score']}, steps {row['mean_steps']}, tokens/ep {row['tokens_per_episode']}, "
              f"invalid {row['invalid_rate']}, per agent {row['per_agent']}")
    print(f"won only with hints: {report['only_hints']}, only without: {report['only_base']}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
