"""The result held out: the whole chain at a size where a 10-15 point effect can show, on every game of the result
split, for several stage-01 draws (seeds), separate from the default `make run`.

Each seed is one run (`outputs/runs/long-<profile>-<env>-s<seed>`): the chain of `make run` with the recipe's
settings, stage 01 drawing `--train-games` train games with that seed, stage 06 playing `--eval-games` games of the
result split (0: every one; ALFWorld's 134 `valid_unseen` games are 268 pairs per condition) under the paper's four
conditions and the placebo ablation (base with the retrieved hints' objects and receptacles swapped). A rerun resumes:
finished stages are skipped and unfinished ones resume their episode files. As each seed finishes, its figures go
to `<out>/<run>/`: every stage's metrics.json and stage 06's episodes in short form (game, agent, condition, won,
steps, tokens), small enough to commit, so that another machine can go on from them. The summary
(`<out>/summary-<profile>-<env>.json`, printed) gives per seed the success of each condition per agent and pooled
with Wilson intervals, the four paired tests per agent and pooled with McNemar's exact p, Holm's adjusted p and each
difference's interval resampling games, and the ablation's two tests (hints vs placebo, placebo vs base) as a family
of their own; then each figure's spread over the seeds. The other ablation is a profile: `--profile cpu-hintfree`
plays the same chain on a warm-start that never saw a hint block.

    .venv/bin/python bench/long_run.py                                 # cpu, alfworld, seeds 0 1 2, 48 train games
    .venv/bin/python bench/long_run.py --profile cpu-hintfree          # the same on the hint-free warm-start
    .venv/bin/python bench/long_run.py --seeds 0 --summary-only        # the summary of what is there
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "long_run"
SHORT = ("game_id", "task_type", "agent", "condition", "won", "reward", "steps", "prompt_tokens", "completion_tokens",
         "invalid_actions", "stop_reason")


def run_name(profile: str, env: str, seed: int) -> str:
    return f"long-{profile}-{env}-s{seed}"


# Stage 06 plays the paper's four conditions and the placebo ablation (the same hints pointing at other things).
CONDITIONS = ["base", "hints", "sft", "distilled", "placebo"]


def play(profile: str, env: str, seed: int, train_games: int, eval_games: int, max_steps: int,
         conditions: list[str] = CONDITIONS) -> Path:
    """One seed's whole chain (resumed where it stopped)."""
    from ragdistill.run.pipeline import run_chain

    per_stage = {"01_failure_collection": {"n_games": train_games},
                 "06_evaluation": {"n_games": eval_games, "conditions": list(conditions)}}
    for notebook in ("01_failure_collection", "03_teacher_generation", "06_evaluation"):
        per_stage.setdefault(notebook, {})["max_steps"] = max_steps
    return run_chain(profile, run=run_name(profile, env, seed), env=env, per_stage=per_stage, extra={"seed": seed})


def keep(run_dir: Path, out: Path, settings: dict | None = None) -> Path:
    """A finished run's figures in short form under `out/<run>/`: with the sizes it was played at (`settings`, the
    command's options) and its stage times (the run's pipeline.json), so that runs of one name at other sizes are
    not mistaken for each other."""
    from ragdistill.run.io import atomic_write_json, read_jsonl
    from ragdistill.run.paths import STAGES

    folder = out / run_dir.name
    folder.mkdir(parents=True, exist_ok=True)
    if settings is not None:
        atomic_write_json(folder / "settings.json", settings)
    if (run_dir / "pipeline.json").is_file():
        atomic_write_json(folder / "pipeline.json", json.loads((run_dir / "pipeline.json").read_text()))
    for stage in STAGES.values():
        metrics = run_dir / stage / "metrics.json"
        if metrics.is_file():
            atomic_write_json(folder / f"{stage}.metrics.json", json.loads(metrics.read_text()))
    rows = [{k: e.get(k) for k in SHORT} for e in read_jsonl(run_dir / "06_eval" / "episodes.jsonl")]
    tmp = folder / "06_episodes.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(folder / "06_episodes.jsonl")
    return folder


def seed_summary(rows: list[dict]) -> dict:
    """One seed's figures: success per condition (per agent and pooled), the paired tests per family, and the
    placebo ablation's tests (a family of their own) when it was played."""
    from ragdistill.method.analysis import episodes_frame, wilson
    from ragdistill.method.eval.tables import ABLATION_TESTS, paired_tests_per_agent

    df = episodes_frame(rows)
    success = {}
    for (condition, agent), g in list(df.groupby(["condition", "agent"])) + [((c, "pooled"), g) for c, g in
                                                                             df.groupby("condition")]:
        low, high = wilson(int(g["won"].sum()), len(g))
        success.setdefault(condition, {})[agent] = {"wins": int(g["won"].sum()), "episodes": len(g),
                                                    "percent": round(float(100 * g["won"].mean()), 1),
                                                    "ci": [round(low, 1), round(high, 1)]}
    tests = paired_tests_per_agent(df)
    ablation = paired_tests_per_agent(df, ABLATION_TESTS) if "placebo" in success else {}
    return {"games": int(df["game_id"].nunique()), "success": success, "tests": tests, "ablation": ablation}


def spread(per_seed: dict[str, dict]) -> dict:
    """Each pooled success rate and each pooled difference over the seeds: every value, mean, min and max."""
    def stats(values: list[float]) -> dict:
        return {"values": values, "mean": round(statistics.fmean(values), 1), "min": min(values), "max": max(values)}

    seeds = list(per_seed.values())
    conditions = sorted(set.intersection(*(set(s["success"]) for s in seeds)))
    pooled = [{**s["tests"]["pooled"], **s.get("ablation", {}).get("pooled", {})} for s in seeds]
    tests = sorted(set.intersection(*(set(p) for p in pooled)))
    return {"success": {c: stats([s["success"][c]["pooled"]["percent"] for s in seeds]) for c in conditions},
            "difference": {t: stats([p[t]["difference"] for p in pooled]) for t in tests}}


def summary_file(out: Path, profile: str, env: str) -> Path:
    return out / f"summary-{profile}-{env}.json"


def summarize(out: Path, names: list[str], file: Path | None = None) -> dict:
    from ragdistill.run.io import atomic_write_json, read_jsonl

    per_seed = {n: seed_summary(list(read_jsonl(out / n / "06_episodes.jsonl"))) for n in names
                if (out / n / "06_episodes.jsonl").is_file()}
    for n, s in per_seed.items():  # the sizes each seed was played at, and its time, where kept
        if (out / n / "settings.json").is_file():
            s["settings"] = json.loads((out / n / "settings.json").read_text())
        if (out / n / "pipeline.json").is_file():
            s["minutes"] = round(sum(json.loads((out / n / "pipeline.json").read_text())["seconds"].values()) / 60, 1)
    summary = {"runs": per_seed, "spread": spread(per_seed) if per_seed else {}}
    atomic_write_json(file or out / "summary.json", summary)
    return summary


def test_rows(seed: dict, ablation_label: str = " (ablation)"):
    """A seed's paired tests in order, the method's family then the ablation's: (family, with `ablation_label` after
    an ablation's; test; its figures; the two conditions compared)."""
    families = [*seed["tests"].items(), *((f + ablation_label, t) for f, t in seed.get("ablation", {}).items())]
    for family, tests in families:
        for test, t in tests.items():
            yield (family, test, t, *test.split(" vs "))


def show(summary: dict) -> None:
    for name, s in summary["runs"].items():
        played = s.get("settings", {})
        sizes = (f", {played['train_games']} train games in stage 01" if played else "") + (
            f", {s['minutes']} minutes" if "minutes" in s else "")
        print(f"\n{name}: {s['games']} games{sizes}")
        for condition, by_agent in s["success"].items():
            print(f"  {condition:10} " + "  ".join(f"{a} {v['wins']}/{v['episodes']} ({v['ci'][0]:.0f}-{v['ci'][1]:.0f}%)"
                                              for a, v in by_agent.items()))
        for family, test, t, a, b in test_rows(s):
            print(f"  {family:8} {test:20} {t[f'only_{a}']}:{t[f'only_{b}']}  {t['difference']:+.1f} points "
                  f"({t['ci_low']:+.1f} to {t['ci_high']:+.1f})  p={t['mcnemar_p']:.3g}  Holm p={t['holm_p']:.3g}")
    if summary["spread"]:
        print("\nover the seeds (pooled):")
        for kind, figures in summary["spread"].items():
            for name, st in figures.items():
                sign = "+" if kind == "difference" else ""
                print(f"  {kind:10} {name:20} mean {st['mean']:{sign}.1f}  range {st['min']:{sign}.1f} to "
                      f"{st['max']:{sign}.1f}  {st['values']}")


def markdown(summary: dict) -> str:
    """Each seed's figures as the README's tables: success per condition (per agent and pooled, with Wilson
    intervals), then every paired test per agent and pooled (the method's family, then the ablation's)."""
    lines = []
    for name, s in summary["runs"].items():
        agents = [a for a in next(iter(s["success"].values())) if a != "pooled"] + ["pooled"]
        lines += [f"`{name}` ({s['games']} games)", "", "| condition | " + " | ".join(agents) + " |",
                  "|---|" + "---|" * len(agents)]
        for condition, by_agent in s["success"].items():
            cells = [f"{v['wins']}/{v['episodes']} ({v['percent']:.1f}%, {v['ci'][0]:.0f}-{v['ci'][1]:.0f}%)"
                     for v in (by_agent[a] for a in agents)]
            lines.append(f"| {condition} | " + " | ".join(cells) + " |")
        lines += ["", "| test | agent | only first : only second | difference (points) | 95% CI (games resampled) "
                      "| McNemar p | Holm p |", "|---|---|---|---|---|---|---|"]
        for agent, test, t, a, b in test_rows(s, ablation_label=""):
            lines.append(f"| {test} | {agent} | {t[f'only_{a}']} : {t[f'only_{b}']} | {t['difference']:+.1f} | "
                         f"{t['ci_low']:+.1f} to {t['ci_high']:+.1f} | {t['mcnemar_p']:.3g} | {t['holm_p']:.3g} |")
        lines.append("")
    return "\n".join(lines)


def use_threads(threads: int) -> None:
    """Torch threads per process for the notebooks' kernels, as `make run`'s THREADS: one by default, since the
    `cpu` profile plays two lanes of rows on two threads of its own. Left to torch's default (every core per
    process), stage 06 on 2 cores ran about twice slower and its kernel grew past 20 GB."""
    if threads < 1:
        raise ValueError(f"--threads {threads}: at least 1")
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--env", default="alfworld")
    parser.add_argument("--seeds", default="0,1,2", help="stage-01 draws, comma-separated")
    parser.add_argument("--train-games", type=int, default=48, help="stage 01's train games per seed")
    parser.add_argument("--eval-games", type=int, default=0, help="stage 06's games (0: every game of the split)")
    parser.add_argument("--max-steps", type=int, default=15)
    parser.add_argument("--conditions", default=",".join(CONDITIONS), help="stage 06's conditions, comma-separated")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--summary-only", action="store_true", help="summarize what is under --out, play nothing")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per notebook kernel (as make run's THREADS; default 1)")
    parser.add_argument("--markdown", action="store_true", help="print the summary as markdown tables (the README's)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = [run_name(args.profile, args.env, s) for s in seeds]
    conditions = args.conditions.split(",")
    if not args.summary_only:
        use_threads(args.threads)
        for seed in seeds:
            start = time.perf_counter()
            run_dir = play(args.profile, args.env, seed, args.train_games, args.eval_games, args.max_steps,
                           conditions)
            settings = {"profile": args.profile, "env": args.env, "seed": seed, "train_games": args.train_games,
                        "eval_games": args.eval_games, "max_steps": args.max_steps, "conditions": conditions}
            print(f"{run_dir.name}: figures kept in {keep(run_dir, args.out, settings)} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    summary = summarize(args.out, names, summary_file(args.out, args.profile, args.env))
    if not summary["runs"]:
        print(f"no finished seed under {args.out} yet ({', '.join(names)}): run without --summary-only first")
        return 1
    if args.markdown:
        print(markdown(summary))
    else:
        show(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
