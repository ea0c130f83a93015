"""Stage 6: the four conditions of the paper on evaluation games, their table, and the paired tests."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ragdistill.run.config.names import CONDITIONS

from ragdistill.method.analysis import TYPE_ORDER, episode_figures, pair_up, paired_counts, summary, wilson

LABELS = {"base": "base", "hints": "base+hints (teacher)", "sft": "SFT", "distilled": "distilled",
          "placebo": "base+placebo hints"}

# The paper's headline figures for the settings this project can reproduce: ALFWorld success (valid_unseen, %)
# and WebShop score (100 x mean reward on the 100 test goals).
PAPER = {
    "alfworld": {
        "gpu-14b": {"mean": {"base": 79.9, "hints": 82.1, "sft": 85.4, "distilled": 91.0}},
        "gpu-7b": {"stateact": {"distilled": 79.1}},
    },
    "webshop": {
        "gpu-14b": {"mean": {"base": 60.8, "hints": 67.1, "sft": 72.1, "distilled": 72.4}},
        "gpu-7b": {"stateact": {"distilled": 65.0}},
    },
}
# The paper's headline measure per benchmark: ALFWorld success (%), WebShop score (100 x mean reward).
HEADLINE = {"alfworld": "won", "webshop": "reward"}


def results_table(df: pd.DataFrame, profile: str, env: str = "alfworld") -> pd.DataFrame:
    """The headline measure (ALFWorld success %, WebShop score) with conditions as columns; rows per agent and
    their mean, then the paper's rows where comparable (`profile` empty: none are)."""
    conditions = [c for c in CONDITIONS if c in set(df.condition)]
    column = HEADLINE[env]
    rows = {}
    for agent, g in df.groupby("agent"):
        rows[f"{agent} (this run)"] = {LABELS[c]: round(100 * g[g.condition == c][column].mean(), 1) for c in conditions}
    per_agent = pd.DataFrame.from_dict(rows, orient="index")
    rows = {"mean (this run)": per_agent.mean().round(1).to_dict()} if len(per_agent) else {}
    for agent, values in PAPER[env].get(profile, {}).items():
        rows[f"{agent} (paper, {profile.split('-')[1].upper()})"] = {LABELS[c]: v for c, v in values.items()}
    table = pd.concat([per_agent, pd.DataFrame.from_dict(rows, orient="index")])
    return table.reindex(columns=[LABELS[c] for c in conditions])


def condition_summary(df: pd.DataFrame) -> dict:
    """Per condition: the metrics of `analysis.summary` per agent, and for both agents together."""
    out = {}
    for cond, g in df.groupby("condition"):
        both = summary(g.assign(all="all"), "all")["all"]
        out[str(cond)] = {"all": both, "per_agent": summary(g, "agent")}
    return out


def paired_test(df: pd.DataFrame, a: str, b: str) -> dict | None:
    """McNemar's exact test of condition a vs b on the same (game, agent) pairs."""
    m = pair_up(df[df.condition == a], df[df.condition == b])
    if m.empty:
        return None
    counts, p = paired_counts(m, a, b, wins="{}_wins", only="only_{}")
    diff, low, high = game_interval(m)
    return {
        **counts,
        "mcnemar_p": round(p, 4),
        "games": int(m.game_id.nunique()),
        "difference": round(diff, 1),  # success of a minus b, in points
        "ci_low": round(low, 1),
        "ci_high": round(high, 1),
    }


def game_interval(pairs: pd.DataFrame, draws: int = 4000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """The difference in success between the two sides of `pair_up`'s pairs (a minus b, in points) and its interval
    from resampling games: a game's pairs (both agents) are drawn together, because two agents on one game share its
    difficulty and are not two independent pieces of evidence. Percentile bootstrap, seeded."""
    diff = pairs.won_a.astype(int) - pairs.won_b.astype(int)
    per_game = diff.groupby(pairs.game_id).agg(["sum", "count"])
    sums, counts = per_game["sum"].to_numpy(), per_game["count"].to_numpy()
    draw = np.random.default_rng(seed).integers(0, len(sums), size=(draws, len(sums)))
    boot = sums[draw].sum(axis=1) / counts[draw].sum(axis=1)
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return 100 * float(diff.mean()), 100 * float(low), 100 * float(high)


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment of a family of p-values: the k-th smallest times (m - k + 1), kept monotone and
    at most 1. It holds the chance of any false "significant" in the family at the level, for any dependence."""
    out, running = {}, 0.0
    for k, name in enumerate(sorted(pvalues, key=pvalues.get)):
        running = max(running, min(1.0, (len(pvalues) - k) * pvalues[name]))
        out[name] = round(running, 4)
    return out


# The comparisons the method is judged on: the hints help the agent (teacher vs base); the student keeps what they
# brought without them (distilled vs base, vs SFT on the base agent's own wins, and vs the teacher itself).
PAIRED_TESTS = (("hints", "base"), ("distilled", "base"), ("distilled", "sft"), ("distilled", "hints"))


# The placebo ablation, its own family: do the hints help by what they say (hints vs placebo), or by their form
# alone (placebo vs base)?
ABLATION_TESTS = (("hints", "placebo"), ("placebo", "base"))


def paired_tests(df: pd.DataFrame, comparisons: tuple = PAIRED_TESTS) -> dict[str, dict]:
    """McNemar's exact test for each comparison whose two conditions were played, keyed "a vs b"."""
    tests = {f"{a} vs {b}": paired_test(df, a, b) for a, b in comparisons}
    tests = {name: test for name, test in tests.items() if test is not None}
    # The family is the comparisons played: Holm's adjustment beside each raw p.
    for name, p in holm({name: test["mcnemar_p"] for name, test in tests.items()}).items():
        tests[name]["holm_p"] = p
    return tests


def paired_tests_per_agent(df: pd.DataFrame, comparisons: tuple = PAIRED_TESTS) -> dict[str, dict[str, dict]]:
    """`paired_tests` for each agent alone (each its own family), and for both together ("pooled")."""
    out = {str(agent): paired_tests(g, comparisons) for agent, g in df.groupby("agent")}
    out["pooled"] = paired_tests(df, comparisons)
    return out


def _interval_text(test: dict) -> str:
    """A paired test's game-resampled 95% interval of the difference, as shown in the tables ("" when none)."""
    return f"{test['ci_low']:+.1f} to {test['ci_high']:+.1f}" if "ci_low" in test else ""


def paired_table(tests: dict[str, dict]) -> pd.DataFrame:
    """`paired_tests` as a table: one row per comparison "a vs b" (a first), its pairs, wins, the discordant pairs,
    the difference in success with its game-resampled 95% interval, McNemar's exact p and Holm's adjusted p."""
    rows = {}
    for name, test in tests.items():
        a, b = name.split(" vs ")
        interval = _interval_text(test)
        rows[f"{LABELS[a]} vs {LABELS[b]}"] = {
            "pairs": test["pairs"], "wins (first)": test[f"{a}_wins"], "wins (second)": test[f"{b}_wins"],
            "only first": test[f"only_{a}"], "only second": test[f"only_{b}"],
            "difference (points)": test.get("difference"), "95% CI (games resampled)": interval,
            "McNemar p": test["mcnemar_p"], "Holm p": test.get("holm_p"),
        }
    columns = ["pairs", "wins (first)", "wins (second)", "only first", "only second", "difference (points)",
               "95% CI (games resampled)", "McNemar p", "Holm p"]
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns)


def placebo_changed(records: list[dict]) -> dict:
    """How much the placebo differs from what it stands in for: of the hints the placebo condition played, how many
    differ from the base+hints condition's for the same (game, agent), and in how many episodes any did."""
    real = {(r["game_id"], r["agent"]): r.get("hints") or [] for r in records if r["condition"] == "hints"}
    hints = episodes = changed_hints = changed_episodes = 0
    for r in records:
        if r["condition"] != "placebo" or (r["game_id"], r["agent"]) not in real:
            continue
        pairs = list(zip(real[(r["game_id"], r["agent"])], r.get("hints") or []))
        changed = sum(a != b for a, b in pairs)
        hints, changed_hints = hints + len(pairs), changed_hints + changed
        episodes, changed_episodes = episodes + 1, changed_episodes + bool(changed)
    return {"hints": hints, "hints_changed": changed_hints, "episodes": episodes, "episodes_changed": changed_episodes}


def hintfree_runs(env: str) -> list[Path]:
    """Runs of the cpu-hintfree profile on `env` whose stage 06 finished (`make run PROFILE=cpu-hintfree`, or
    bench/long_run.py's `long-cpu-hintfree-...`), oldest first."""
    from ragdistill.run.paths import make_run_pattern, outputs_dir

    # make run's names, or bench/long_run.py's (`long-<profile>-<env>-s<seed>`, the env always named)
    pattern = re.compile(rf"{make_run_pattern('cpu-hintfree', env)}|long-cpu-hintfree-{re.escape(env)}-s\d+")
    root = outputs_dir() / "runs"
    found = [p for p in root.iterdir() if pattern.fullmatch(p.name) and (p / "06_eval" / "metrics.json").is_file()] \
        if root.is_dir() else []
    return sorted(found, key=lambda p: (p / "06_eval" / "metrics.json").stat().st_mtime)


def warmstart_ablation(tests: dict[str, dict], env: str, profile: str) -> pd.DataFrame | str:
    """The teacher's and the student's gains over the base agent (pooled) in this run and in the newest finished
    run of the cpu-hintfree profile (a warm-start that never saw a hint block); or what to run to get one."""
    runs = hintfree_runs(env)
    if not runs:
        return (f"no finished cpu-hintfree run on {env}: `make run PROFILE=cpu-hintfree` (or bench/long_run.py "
                "--profile cpu-hintfree) plays the chain on a warm-start that never saw a hint block")
    other = json.loads((runs[-1] / "06_eval" / "metrics.json").read_text())["paired"]
    rows = {}
    for name, paired in ((f"this run ({profile})", tests), (f"{runs[-1].name} (hint-free warm-start)", other)):
        for test in ("hints vs base", "distilled vs base"):
            t = paired.get(test)
            if t:
                rows[(name, test)] = {"pairs": t["pairs"], "difference (points)": t.get("difference"),
                                      "95% CI (games resampled)": _interval_text(t), "McNemar p": t["mcnemar_p"],
                                      "Holm p": t.get("holm_p")}
    return pd.DataFrame.from_dict(rows, orient="index")


def token_reduction(df: pd.DataFrame, student: str = "distilled", teacher: str = "hints") -> float | None:
    """How many fewer tokens per episode the student uses than the teacher, in % (input + output, summed)."""
    s, t = df[df.condition == student].tokens.mean(), df[df.condition == teacher].tokens.mean()
    if pd.isna(s) or pd.isna(t) or t == 0:
        return None
    return round(100 * (1 - s / t), 1)


# Where an episode's tokens come from (input + output, summed over its steps): the hint block and the few-shot
# examples of the system prompt, read again at every step, and the rest: the instructions, the task, the history of
# the steps and the answers, which grow with the number of steps.
TOKEN_PARTS = ("hint block", "few-shot examples", "task and steps")


def episode_token_parts(record: dict, fewshot: bool, count_tokens: Callable[[str], int]) -> dict[str, int]:
    """One episode's tokens split into TOKEN_PARTS, from its per-step counts, its hints, and whether its prompts had
    the few-shot examples; `count_tokens` is the model's tokenizer (text -> number of tokens)."""
    from ragdistill.method.agents import get_agent
    from ragdistill.benchmarks import env_of

    agent = get_agent(record["agent"], env_of(record["game_id"]))
    bare = count_tokens(agent.system_prompt(record["task_type"], None, fewshot=False))
    with_shots = count_tokens(agent.system_prompt(record["task_type"], None, fewshot=fewshot))
    with_hints = count_tokens(agent.system_prompt(record["task_type"], record["hints"] or None, fewshot=fewshot))
    steps = record["trajectory"]
    total = sum(t["prompt_tokens"] + t["completion_tokens"] for t in steps)
    hints, shots = len(steps) * (with_hints - with_shots), len(steps) * (with_shots - bare)  # once in every step's prompt
    return {"tokens": total, "hint block": hints, "few-shot examples": shots, "task and steps": total - hints - shots,
            "steps": len(steps)}


def token_parts(records: list[dict], fewshot: dict[str, bool], count_tokens: Callable[[str], int]) -> pd.DataFrame:
    """Per condition (rows), the mean per episode of its tokens, of each of TOKEN_PARTS, and of its steps; `fewshot`
    says which conditions played with the few-shot examples in their prompts."""
    rows = [{"condition": r["condition"], **episode_token_parts(r, fewshot[r["condition"]], count_tokens)} for r in records]
    columns = ["tokens", *TOKEN_PARTS, "steps"]
    if not rows:
        return pd.DataFrame(columns=columns)
    table = pd.DataFrame(rows).groupby("condition")[columns].mean()
    return table.reindex([c for c in CONDITIONS if c in table.index])


def token_saving_parts(parts: pd.DataFrame, student: str = "distilled", teacher: str = "hints") -> pd.DataFrame | None:
    """How many fewer tokens per episode the student uses than the teacher, part by part (rows: TOKEN_PARTS, then the
    total they add up to), in tokens and in % of the teacher's tokens. "task and steps" is what fewer or more steps,
    and shorter or longer answers, save."""
    if student not in parts.index or teacher not in parts.index or not parts.loc[teacher, "tokens"]:
        return None
    saved = parts.loc[teacher, [*TOKEN_PARTS, "tokens"]] - parts.loc[student, [*TOKEN_PARTS, "tokens"]]
    table = pd.DataFrame({"tokens saved per episode": saved,
                          "% of the teacher's tokens": 100 * saved / parts.loc[teacher, "tokens"]})
    return table.rename(index={"tokens": "total"}).round(1)


def per_type_success(df: pd.DataFrame) -> pd.DataFrame:
    """Success (%) per task type (rows) and condition (columns), both agents together."""
    table = df.pivot_table(index="task_type", columns="condition", values="won", aggfunc="mean") * 100
    table = table.reindex([t for t in TYPE_ORDER if t in table.index])
    return table[[c for c in CONDITIONS if c in table.columns]].round(1)


def success_bars(df: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Success (%) per task type and for all types (rows) and condition (columns), both agents together, with the
    95% Wilson interval of each as `yerr` for pandas' bar plot: per column, the distances below and above each bar."""
    types = [t for t in TYPE_ORDER if t in set(df.task_type)]
    conditions = [c for c in CONDITIONS if c in set(df.condition)]
    rates, yerr = {}, []
    for cond in conditions:
        g = df[df.condition == cond]
        groups = [g[g.task_type == t] for t in types] + [g]
        counts = [(int(x.won.sum()), len(x)) for x in groups]
        rates[cond] = [100 * k / n if n else float("nan") for k, n in counts]
        bounds = [wilson(k, n) for k, n in counts]
        yerr.append([[max(0.0, r - lo) if n else 0.0 for r, (lo, _), (_, n) in zip(rates[cond], bounds, counts)],
                     [max(0.0, hi - r) if n else 0.0 for r, (_, hi), (_, n) in zip(rates[cond], bounds, counts)]])
    return pd.DataFrame(rates, index=[*types, "all"]), np.array(yerr).reshape(len(conditions), 2, len(types) + 1)


def interval_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per condition (both agents): episodes, wins, success with its 95% Wilson interval, steps, tokens, invalid rate."""
    rows = {}
    for cond in [c for c in CONDITIONS if c in set(df.condition)]:
        f = episode_figures(df[df.condition == cond])
        lo, hi = f["ci95"]
        rows[LABELS[cond]] = {
            "episodes": f["episodes"],
            "wins": f["wins"],
            "success %": round(f["success"], 1),
            "95% CI": f"{lo:.0f}-{hi:.0f}",
            "score": round(f["score"], 1),
            "mean steps": round(f["steps"], 1),
            "tokens/episode": round(f["tokens"]),
            "invalid rate": round(f["invalid_rate"], 3),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def protocol_table(profile: str, env: str, split: str, n_games: int) -> pd.DataFrame:
    """The recipe's evaluation protocol for `env` beside what this stage 06 plays, one row per item; the last row says
    whether this run's figures are the protocol's result (its split and size) or something else."""
    from ragdistill.models.profiles import RECIPES

    protocol = RECIPES[profile]["protocol"]
    planned_split, planned_games = protocol["result_split"][env], protocol["result_games"]
    rows = [
        ("designs chosen on", ", ".join(protocol["design_splits"][env]), ""),
        ("the result on", planned_split, split),
        ("games (0: every one)", planned_games, n_games),
        ("tests (McNemar's exact)", "; ".join(protocol["tests"]), "; ".join(f"{a} vs {b}" for a, b in PAIRED_TESTS)),
        ("families (Holm within each)", ", ".join(protocol["families"]), ""),
        ("interval of a difference resamples", protocol["interval"], "games"),
        ("this run is the protocol's result", "", "yes" if (split, n_games) == (planned_split, planned_games) else
         "no: read its figures as a design measurement, not the result"),
    ]
    return pd.DataFrame(rows, columns=["", "protocol (recipe)", "this run"]).set_index("")
