"""The statistics behind the headline figures, against values computed independently of the project's code."""

from math import comb

import pandas as pd
import pytest
from scipy.stats import binomtest

from ragdistill.method.analysis import discordant, mcnemar_exact, pair_up, paired, summary, wilson
from ragdistill.method.eval.tables import (condition_summary, game_interval, holm, interval_table, paired_test, paired_tests,
                                  paired_tests_per_agent, results_table, token_reduction)

# Newcombe (1998), "Two-sided confidence intervals for the single proportion", Statistics in Medicine 17,
# Table I, method 3 (Wilson score interval without continuity correction).
NEWCOMBE = [((81, 263), (25.53, 36.62)), ((15, 148), (6.24, 16.05)), ((0, 20), (0.0, 16.11)), ((1, 29), (0.61, 17.18))]


@pytest.mark.parametrize("counts, published", NEWCOMBE)
def test_wilson_matches_the_published_intervals(counts, published):
    lo, hi = wilson(*counts)
    assert lo == pytest.approx(published[0], abs=0.051) and hi == pytest.approx(published[1], abs=0.051)


@pytest.mark.parametrize("k, n", [(0, 1), (0, 24), (3, 24), (12, 24), (23, 24), (24, 24), (7, 134), (120, 134)])
def test_wilson_matches_scipy_and_covers_the_edges(k, n):
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = wilson(k, n)
    # z = 1.96 here, scipy's exact normal quantile 1.95996...: equal to the displayed 0.1 %.
    assert lo == pytest.approx(100 * ci.low, abs=0.06) and hi == pytest.approx(100 * ci.high, abs=0.06)
    assert 0.0 <= lo <= 100 * k / n <= hi <= 100.0
    if k == 0:
        assert lo == 0.0 and hi > 0.0
    if k == n:
        assert hi == 100.0 and lo < 100.0


def test_wilson_of_no_episode_is_empty():
    assert wilson(0, 0) == (0.0, 0.0)


def _exact_mcnemar(b: int, c: int) -> float:
    """Two-sided exact McNemar by hand: twice the binomial(b + c, 1/2) tail of the rarer outcome, at most 1."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


@pytest.mark.parametrize("b, c", [(0, 0), (0, 5), (5, 0), (1, 9), (2, 8), (3, 3), (10, 21), (0, 1), (7, 30)])
def test_mcnemar_exact_matches_the_binomial_tail(b, c):
    assert mcnemar_exact(b, c) == pytest.approx(_exact_mcnemar(b, c), rel=1e-12)
    assert mcnemar_exact(b, c) == pytest.approx(binomtest(b, b + c, 0.5).pvalue if b + c else 1.0, rel=1e-12)


def test_mcnemar_known_values():
    # All 5 discordant pairs one way: 2 / 2^5. One of ten against: 2 * 11 / 2^10.
    assert mcnemar_exact(0, 5) == pytest.approx(0.0625)
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact(0, 0) == 1.0  # no discordant pair: no evidence either way
    assert mcnemar_exact(4, 4) == 1.0


def _episodes(rows: list[tuple]) -> pd.DataFrame:
    """Episode rows (game, agent, type, condition, won, tokens) as analysis.episodes_frame makes them."""
    df = pd.DataFrame(rows, columns=["game_id", "agent", "task_type", "condition", "won", "tokens"])
    return df.assign(reward=df.won.astype(float), steps=10, invalid_actions=1, prompt_tokens=df.tokens,
                     completion_tokens=0, stop_reason="max_steps")


# Six games x two agents. Base wins g1, g2 (react); hints wins g2, g3, g4 (react) and g1 (stateact).
OUTCOMES = {
    ("g1", "react"): (1, 0), ("g2", "react"): (1, 1), ("g3", "react"): (0, 1), ("g4", "react"): (0, 1),
    ("g1", "stateact"): (0, 1), ("g5", "react"): (0, 0), ("g6", "react"): (0, 0),
    ("g2", "stateact"): (0, 0), ("g3", "stateact"): (0, 0), ("g4", "stateact"): (0, 0),
    ("g5", "stateact"): (0, 0), ("g6", "stateact"): (0, 0),
}
TYPES = {"g1": "put", "g2": "put", "g3": "clean", "g4": "clean", "g5": "heat", "g6": "heat"}


@pytest.fixture()
def frame():
    rows = []
    for (game, agent), (base, hints) in OUTCOMES.items():
        rows.append((game, agent, TYPES[game], "base", bool(base), 1000))
        rows.append((game, agent, TYPES[game], "hints", bool(hints), 1300))
        rows.append((game, agent, TYPES[game], "distilled", bool(hints), 650))
    return _episodes(rows)


def test_pairs_and_discordant_counts(frame):
    pairs = pair_up(frame[frame.condition == "base"], frame[frame.condition == "hints"])
    assert len(pairs) == 12
    assert discordant(pairs) == (1, 3)  # g1 react only base; g3, g4 react and g1 stateact only hints
    table = paired(frame[frame.condition == "base"], frame[frame.condition == "hints"], ("base", "teacher"))
    assert list(table.index) == ["put", "clean", "heat", "all"]  # the display order of types, then all
    assert table.loc["all", "pairs"] == 12 and table.loc["all", "only base"] == 1 and table.loc["all", "only teacher"] == 3
    assert table.loc["clean", "only teacher"] == 2 and table.loc["heat", "McNemar p"] == 1.0
    assert table.loc["all", "McNemar p"] == round(_exact_mcnemar(1, 3), 3)
    assert table.loc["all", "base tokens/ep"] == 1000 and table.loc["all", "teacher tokens/ep"] == 1300


def test_pairs_ignore_episodes_without_a_partner(frame):
    lonely = _episodes([("g9", "react", "put", "hints", True, 5)])
    pairs = pair_up(frame[frame.condition == "base"], pd.concat([frame[frame.condition == "hints"], lonely]))
    assert len(pairs) == 12 and "g9" not in set(pairs.game_id)


def test_paired_test_counts_and_p_value(frame):
    result = paired_test(frame, "base", "hints")
    counts = {k: result[k] for k in ("pairs", "base_wins", "hints_wins", "only_base", "only_hints", "mcnemar_p")}
    assert counts == {"pairs": 12, "base_wins": 2, "hints_wins": 4, "only_base": 1, "only_hints": 3,
                      "mcnemar_p": round(_exact_mcnemar(1, 3), 4)}
    assert result["difference"] == round(100 * (2 - 4) / 12, 1)
    assert result["ci_low"] <= result["difference"] <= result["ci_high"]
    assert paired_test(frame, "base", "sft") is None  # no such condition: nothing to pair


def test_token_reduction_of_the_student_against_the_teacher(frame):
    assert token_reduction(frame) == 50.0  # 650 vs 1300 tokens per episode
    assert token_reduction(frame, "hints", "base") == -30.0
    assert token_reduction(frame, "sft") is None


def test_summary_rates_and_intervals(frame):
    out = summary(frame[frame.condition == "hints"], "agent")
    react, stateact = out["react"], out["stateact"]
    assert (react["episodes"], react["successes"], react["success_rate"]) == (6, 3, 50.0)
    assert (stateact["episodes"], stateact["successes"], stateact["success_rate"]) == (6, 1, 16.7)
    assert react["success_ci95"] == wilson(3, 6) and stateact["success_ci95"] == wilson(1, 6)
    assert react["per_type_success"] == {"clean": 100.0, "heat": 0.0, "put": 50.0}
    assert react["mean_tokens"] == 1300.0 and react["invalid_action_rate"] == 0.1


def test_condition_summary_both_agents_and_each(frame):
    out = condition_summary(frame)
    assert set(out) == {"base", "hints", "distilled"}
    assert out["hints"]["all"]["successes"] == 4 and out["hints"]["all"]["episodes"] == 12
    assert out["base"]["per_agent"]["stateact"]["successes"] == 0


def test_results_table_and_interval_table(frame):
    table = results_table(frame, "gpu-14b")
    assert list(table.columns) == ["base", "base+hints (teacher)", "distilled"]  # no SFT episodes: no column
    assert table.loc["react (this run)", "base"] == pytest.approx(100 * 2 / 6, abs=0.05)
    assert table.loc["stateact (this run)", "base+hints (teacher)"] == pytest.approx(100 / 6, abs=0.05)
    assert table.loc["mean (this run)", "base+hints (teacher)"] == pytest.approx((50 + 16.7) / 2, abs=0.05)
    assert table.loc["mean (paper, 14B)", "distilled"] == 91.0
    assert "mean (paper, 14B)" not in results_table(frame, "cpu").index
    intervals = interval_table(frame)
    row = intervals.loc["base+hints (teacher)"]
    lo, hi = wilson(4, 12)
    assert (row["episodes"], row["wins"], row["success %"]) == (12, 4, 33.3)
    assert row["95% CI"] == f"{lo:.0f}-{hi:.0f}" and row["tokens/episode"] == 1300


def test_all_won_and_none_won():
    every = _episodes([(f"g{i}", "react", "put", "base", True, 10) for i in range(5)])
    none = _episodes([(f"g{i}", "react", "put", "hints", False, 10) for i in range(5)])
    both = pd.concat([every, none])
    assert paired_test(both, "base", "hints")["only_base"] == 5 and paired_test(both, "base", "hints")["mcnemar_p"] == 0.0625
    rows = interval_table(both)
    assert rows.loc["base", "95% CI"] == f"{wilson(5, 5)[0]:.0f}-100" and rows.loc["base+hints (teacher)", "95% CI"].startswith("0-")


def _record(condition: str, agent: str, hints: list[str], prompts: list[int], completions: list[int]) -> dict:
    steps = [{"prompt_tokens": p, "completion_tokens": c} for p, c in zip(prompts, completions)]
    return {"game_id": "train/pick_and_place_simple-Mug-None-Desk-1/trial_1", "task_type": "put", "agent": agent,
            "condition": condition, "hints": hints, "trajectory": steps, "steps": len(steps), "won": True,
            "prompt_tokens": sum(prompts), "completion_tokens": sum(completions), "invalid_actions": 0,
            "stop_reason": "won"}


def test_token_saving_splits_into_hint_block_few_shot_examples_and_steps(monkeypatch):
    """By hand, with a tokenizer that counts lines. The system prompt's parts are joined by a blank line, so a part of
    n lines makes the prompt n + 1 lines longer. The hint block of k hints is BEGIN, the preamble, k hints, END: k + 3
    lines, k + 4 in all (3 hints: 7, 2 hints: 6) at every step. A few-shot example below is "Example i:", the room,
    two answer lines and the reply: 5 lines, 6 in all; the agents show two: 12 at every step."""
    from ragdistill.method import agents
    from ragdistill.method.analysis import episodes_frame
    from ragdistill.method.eval.tables import token_parts, token_reduction, token_saving_parts

    example = {"observation": "You are in a room.",
               "steps": [{"answer": "think: look\naction: go to desk 1", "observation": "You arrive at desk 1."}]}
    monkeypatch.setattr(agents, "load_fewshot", lambda agent, env="alfworld": {"*": [example, example]})
    lines = lambda text: text.count("\n") + 1  # noqa: E731
    records = [
        # teacher: 4 steps, 500 tokens = hints 4 x 7 + few-shot 4 x 12 + 424; 2 steps, 200 = 2 x 6 + 2 x 12 + 164
        _record("hints", "react", ["a", "b", "c"], [105, 115, 125, 135], [5, 5, 5, 5]),
        _record("hints", "stateact", ["a", "b"], [90, 100], [5, 5]),
        # students, no hints and no few-shot examples: 165 and 45 tokens, all of them the task and the steps
        _record("distilled", "react", [], [40, 50, 60], [5, 5, 5]),
        _record("distilled", "stateact", [], [40], [5]),
        # base: few-shot examples, no hints: 180 = 2 x 12 + 156
        _record("base", "react", [], [80, 90], [5, 5]),
    ]
    parts = token_parts(records, {"base": True, "hints": True, "distilled": False}, lines)
    assert list(parts.index) == ["base", "hints", "distilled"]
    assert parts.loc["hints"].to_dict() == {"tokens": 350, "hint block": 20, "few-shot examples": 36,
                                            "task and steps": 294, "steps": 3}
    assert parts.loc["distilled"].to_dict() == {"tokens": 105, "hint block": 0, "few-shot examples": 0,
                                                "task and steps": 105, "steps": 2}
    assert parts.loc["base"].to_dict() == {"tokens": 180, "hint block": 0, "few-shot examples": 24,
                                           "task and steps": 156, "steps": 2}
    saving = token_saving_parts(parts)
    # 350 - 105 = 245 tokens per episode fewer: 20 hint block + 36 few-shot examples + 189 steps (294 - 105)
    assert saving["tokens saved per episode"].to_dict() == {"hint block": 20, "few-shot examples": 36,
                                                            "task and steps": 189, "total": 245}
    assert saving["% of the teacher's tokens"].to_dict() == {"hint block": 5.7, "few-shot examples": 10.3,
                                                             "task and steps": 54.0, "total": 70.0}
    assert token_reduction(episodes_frame(records), "distilled", "hints") == 70.0  # the headline figure, the same total
    assert token_saving_parts(parts.drop(index="hints")) is None


def test_success_bars_carry_the_wilson_intervals(frame):
    from ragdistill.method.eval.tables import success_bars

    rates, yerr = success_bars(frame)
    assert list(rates.index) == ["put", "clean", "heat", "all"] and list(rates.columns) == ["base", "hints", "distilled"]
    assert rates.loc["put", "base"] == 50.0 and rates.loc["all", "hints"] == pytest.approx(100 * 4 / 12)
    lo, hi = wilson(2, 4)  # base on put: 2 of 4
    assert yerr[0][0][0] == pytest.approx(50.0 - lo) and yerr[0][1][0] == pytest.approx(hi - 50.0)
    lo, hi = wilson(0, 4)  # base on heat: none won, the bar is 0 and its interval reaches up only
    assert rates.loc["heat", "base"] == 0.0 and yerr[0][0][2] == 0.0 and yerr[0][1][2] == pytest.approx(hi)
    assert len(yerr) == 3 and all(len(side) == 4 for col in yerr for side in col)


def test_holm_matches_the_step_down_rule_by_hand():
    """Holm (1979): sorted p of m tests, the k-th times (m - k + 1), never below an earlier one, capped at 1."""
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.5})
    assert adjusted == {"a": 0.04, "c": 0.09, "b": 0.09, "d": 0.5}  # 4 x .01, 3 x .03, max(2 x .04, .09), 1 x .5
    assert holm({"a": 0.3, "b": 0.4}) == {"a": 0.6, "b": 0.6}
    assert holm({"a": 0.9}) == {"a": 0.9} and holm({}) == {}


def test_game_interval_resamples_games_not_pairs():
    """Two agents on each game that always agree: resampling games gives the interval of n games, wider than the
    one that would treat the 2n pairs as independent; a difference that every game shows has an interval of one point."""
    games = [f"g{i}" for i in range(20)]
    wins_a = [i < 12 for i in range(20)]  # a wins 12 games, b wins 6 of them
    wins_b = [i < 6 for i in range(20)]
    rows = [(g, agent, wa, wb) for g, wa, wb in zip(games, wins_a, wins_b) for agent in ("react", "stateact")]
    pairs = pd.DataFrame(rows, columns=["game_id", "agent", "won_a", "won_b"])
    diff, low, high = game_interval(pairs)
    assert diff == pytest.approx(30.0) and low < diff < high
    as_if_independent = pairs.assign(game_id=[f"{g}-{a}" for g, a in zip(pairs.game_id, pairs.agent)])
    _, low_i, high_i = game_interval(as_if_independent)
    assert high - low > high_i - low_i  # clustered: fewer independent draws, a wider interval
    same = pairs.assign(won_a=True, won_b=False)
    assert game_interval(same) == (100.0, 100.0, 100.0)


def test_paired_tests_carry_holm_and_come_per_agent_and_pooled(frame):
    tests = paired_tests(frame)
    raw = {name: t["mcnemar_p"] for name, t in tests.items()}
    assert tests and all(t["holm_p"] == holm(raw)[name] >= t["mcnemar_p"] for name, t in tests.items())
    split = paired_tests_per_agent(frame)
    assert set(split) == set(frame.agent) | {"pooled"} and split["pooled"] == tests
    assert sum(split[a][name]["pairs"] for a in set(frame.agent) for name in split[a] if name in tests) == \
        sum(t["pairs"] for t in tests.values())
