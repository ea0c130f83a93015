"""Stage 06, evaluation: everything notebook 06 reads, from this one package.

conditions.py plays the conditions (base, with hints, distilled student, SFT student) on the result split's games;
tables.py turns their episodes into the tables and figures: success with intervals, the paired tests per agent
and pooled, tokens per episode.
"""

from __future__ import annotations

from ragdistill.benchmarks import balanced, eval_tasks
from ragdistill.method.analysis import discordant, episodes_frame, mcnemar_exact, wilson
from ragdistill.method.eval.conditions import (
    STUDENTS,
    condition_models,
    fewshot_by_condition,
    found_adapters,
    play_conditions,
)
from ragdistill.method.eval.tables import (
    ABLATION_TESTS,
    LABELS,
    condition_summary,
    interval_table,
    paired_table,
    paired_tests_per_agent,
    per_type_success,
    placebo_changed,
    protocol_table,
    results_table,
    success_bars,
    token_parts,
    token_reduction,
    token_saving_parts,
    warmstart_ablation,
)
from ragdistill.method.hints import load_bank
from ragdistill.method.rollout.lockstep import read_episodes
from ragdistill.models.loading import model_path

__all__ = ["ABLATION_TESTS", "LABELS", "STUDENTS", "balanced", "condition_models", "condition_summary", "discordant",
           "episodes_frame", "eval_tasks", "fewshot_by_condition", "found_adapters", "interval_table", "load_bank",
           "mcnemar_exact", "model_path", "paired_table", "paired_tests_per_agent", "per_type_success",
           "placebo_changed", "play_conditions", "protocol_table", "read_episodes", "results_table", "success_bars", "token_parts",
           "token_reduction", "token_saving_parts", "warmstart_ablation", "wilson"]
