"""Tables, figures and summaries of episode files, shared by the notebooks."""

from __future__ import annotations

import math
import textwrap

import pandas as pd

from ragdistill.benchmarks import BENCHMARKS

# Display order of every benchmark's task types (ALFWorld's task types, then WebShop's product categories).
TYPE_ORDER = tuple(t for bench in BENCHMARKS.values() for t in bench.types())


def episodes_frame(records: list[dict]) -> pd.DataFrame:
    """One row per episode with the numbers the notebooks plot."""
    rows = [
        {
            "game_id": r["game_id"],
            "task_type": r["task_type"],
            "agent": r["agent"],
            "condition": r["condition"],
            "won": bool(r["won"]),
            "reward": float(r.get("reward", float(r["won"]))),  # WebShop's purchase reward; ALFWorld: won or not
            "steps": r["steps"],
            "tokens": r["prompt_tokens"] + r["completion_tokens"],
            "prompt_tokens": r["prompt_tokens"],
            "completion_tokens": r["completion_tokens"],
            "invalid_actions": r["invalid_actions"],
            "stop_reason": r["stop_reason"],
        }
        for r in records
    ]
    return pd.DataFrame(rows, columns=["game_id", "task_type", "agent", "condition", "won", "reward", "steps", "tokens",
                                       "prompt_tokens", "completion_tokens", "invalid_actions", "stop_reason"])


def success_table(df: pd.DataFrame, by: str = "agent") -> pd.DataFrame:
    """Success rate (%) per task type (rows, plus 'all') and `by` (columns)."""
    table = df.pivot_table(index="task_type", columns=by, values="won", aggfunc="mean") * 100
    table = table.reindex([t for t in TYPE_ORDER if t in table.index])
    table.loc["all"] = df.groupby(by)["won"].mean() * 100
    return table.round(1)


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate, in %."""
    if n == 0:
        return (0.0, 0.0)
    p = successes / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return (round(100 * max(0.0, centre - half), 1), round(100 * min(1.0, centre + half), 1))


def episode_figures(g: pd.DataFrame) -> dict:
    """The figures of a group of episodes, unrounded: episodes, wins, success (%) with its 95% Wilson interval,
    score (100 x mean reward, WebShop's score), mean steps, mean tokens, invalid-action rate."""
    wins = int(g["won"].sum())
    return {
        "episodes": int(len(g)),
        "wins": wins,
        "success": 100 * wins / len(g),
        "ci95": wilson(wins, len(g)),
        "score": 100 * float(g["reward"].mean()),
        "steps": float(g["steps"].mean()),
        "tokens": float(g["tokens"].mean()),
        "invalid_rate": float(g["invalid_actions"].sum() / max(1, g["steps"].sum())),
    }


def summary(df: pd.DataFrame, by: str = "agent") -> dict:
    """metrics.json figures per group: episodes, successes, rate with interval, steps, tokens, invalid rate."""
    out = {}
    for key, g in df.groupby(by):
        f = episode_figures(g)
        out[str(key)] = {
            "episodes": f["episodes"],
            "successes": f["wins"],
            "success_rate": round(f["success"], 1),
            "success_ci95": f["ci95"],
            "score": round(f["score"], 1),
            "mean_steps": round(f["steps"], 2),
            "mean_tokens": round(f["tokens"], 1),
            "invalid_action_rate": round(f["invalid_rate"], 3),
            "per_type_success": {t: round(100 * float(x["won"].mean()), 1) for t, x in g.groupby("task_type")},
        }
    return out


def render_episode(record: dict, width: int = 100, max_steps: int | None = None) -> str:
    """An episode as a readable transcript: task, then each answer, action and observation."""
    head = f"{record['game_id']}  [{record['agent']}, {record['condition']}]  won={record['won']}  " \
           f"steps={record['steps']}  stop={record['stop_reason']}"
    lines = [head, "", record["first_observation"], ""]
    if record.get("hints"):
        lines += ["hints: " + " | ".join(record["hints"]), ""]
    for i, t in enumerate(record["trajectory"][:max_steps], 1):
        mark = "" if t["valid"] else "   <- invalid"
        answer = textwrap.indent(t["output"].strip() or "(empty)", "    ")
        lines += [f"{i:2d}. model:", answer, f"    => {t['action']}{mark}",
                  textwrap.fill(t["observation"], width, initial_indent="    ", subsequent_indent="    ")]
    return "\n".join(lines)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs (a binomial test at 1/2)."""
    from scipy.stats import binomtest

    n = only_a + only_b
    return 1.0 if n == 0 else float(binomtest(only_a, n, 0.5).pvalue)


def pair_up(a: pd.DataFrame, b: pd.DataFrame, keys: tuple[str, ...] = ("game_id", "agent", "task_type")) -> pd.DataFrame:
    """The episodes of two conditions on the same tasks and agents, side by side (columns suffixed _a and _b)."""
    cols = [*keys, "won", "tokens"]
    return a[cols].merge(b[cols], on=list(keys), suffixes=("_a", "_b"))


def discordant(pairs: pd.DataFrame) -> tuple[int, int]:
    """(won only under a, won only under b) of paired episodes: what McNemar's test reads."""
    return int((pairs.won_a & ~pairs.won_b).sum()), int((~pairs.won_a & pairs.won_b).sum())


def paired_counts(pairs: pd.DataFrame, a: str, b: str, wins: str = "{} wins", only: str = "only {}") -> tuple[dict, float]:
    """`pair_up`'s pairs counted: pairs, the wins of each side and the discordant pairs (keys `wins` and `only` with
    the side's name), and McNemar's exact p."""
    only_a, only_b = discordant(pairs)
    counts = {"pairs": len(pairs), wins.format(a): int(pairs.won_a.sum()), wins.format(b): int(pairs.won_b.sum()),
              only.format(a): only_a, only.format(b): only_b}
    return counts, mcnemar_exact(only_a, only_b)


def paired(a: pd.DataFrame, b: pd.DataFrame, names: tuple[str, str] = ("a", "b")) -> pd.DataFrame:
    """Per task type, the same (game, agent) pairs under two conditions: wins of each, discordant pairs, p-value."""
    m = pair_up(a, b)
    rows = {}
    for ttype, g in list(m.groupby("task_type")) + [("all", m)]:
        counts, p = paired_counts(g, *names)
        rows[ttype] = {
            **counts,
            "McNemar p": round(p, 3),
            f"{names[0]} tokens/ep": round(float(g.tokens_a.mean()), 0) if len(g) else 0.0,
            f"{names[1]} tokens/ep": round(float(g.tokens_b.mean()), 0) if len(g) else 0.0,
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    return table.reindex([t for t in (*TYPE_ORDER, "all") if t in table.index])
