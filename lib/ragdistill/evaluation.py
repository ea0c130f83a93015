"""Stage 6: the four conditions of the paper on evaluation games, their table, and the paired tests."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from .analysis import TYPE_ORDER, discordant, episode_figures, mcnemar_exact, pair_up, summary, wilson

CONDITIONS = ("base", "hints", "sft", "distilled")
LABELS = {"base": "base", "hints": "base+hints (teacher)", "sft": "SFT", "distilled": "distilled"}

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
    only_a, only_b = discordant(m)
    return {
        "pairs": len(m),
        f"{a}_wins": int(m.won_a.sum()),
        f"{b}_wins": int(m.won_b.sum()),
        f"only_{a}": only_a,
        f"only_{b}": only_b,
        "mcnemar_p": round(mcnemar_exact(only_a, only_b), 4),
    }


# The comparisons the method is judged on: the hints help the agent (teacher vs base); the student keeps what they
# brought without them (distilled vs base, vs SFT on the base agent's own wins, and vs the teacher itself).
PAIRED_TESTS = (("hints", "base"), ("distilled", "base"), ("distilled", "sft"), ("distilled", "hints"))


def paired_tests(df: pd.DataFrame) -> dict[str, dict]:
    """McNemar's exact test for each of PAIRED_TESTS whose two conditions were played, keyed "a vs b"."""
    tests = {f"{a} vs {b}": paired_test(df, a, b) for a, b in PAIRED_TESTS}
    return {name: test for name, test in tests.items() if test is not None}


def paired_table(tests: dict[str, dict]) -> pd.DataFrame:
    """`paired_tests` as a table: one row per comparison "a vs b" (a first), its pairs, wins, the discordant pairs
    and McNemar's exact p."""
    rows = {}
    for name, test in tests.items():
        a, b = name.split(" vs ")
        rows[f"{LABELS[a]} vs {LABELS[b]}"] = {
            "pairs": test["pairs"], "wins (first)": test[f"{a}_wins"], "wins (second)": test[f"{b}_wins"],
            "only first": test[f"only_{a}"], "only second": test[f"only_{b}"], "McNemar p": test["mcnemar_p"],
        }
    columns = ["pairs", "wins (first)", "wins (second)", "only first", "only second", "McNemar p"]
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns)


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
    from .agents import get_agent
    from .envs import env_of

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
