"""The evaluation protocol's rule that the code holds: a design never plays a game of the result's split.

Designs (the warm-start, the sizes, the prompts, the hint bank, the students' training) are chosen on train games
and, for ALFWorld, `valid_seen`; the result split (ALFWorld `valid_unseen`, WebShop `test`: the first of each
benchmark's `eval_splits`) gives the result and chooses nothing. Stages 00-05 and the design tools under bench/ run
in the design phase, where `benchmarks.open_env` refuses a game of the result split; stage 06 runs in the result
phase. The phase is an environment variable, so the game workers and notebook kernels a stage starts inherit it.
The recipe's `protocol` block states the rest (sizes, tests, correction, intervals); notebook 06 prints it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

PHASE_VARIABLE = "RAGDISTILL_PHASE"
DESIGN = "design"  # stages 00-05, bench/ design tools: the result split is refused
RESULT = "result"  # stage 06


class ProtocolError(RuntimeError):
    """A design was about to play a game of the result's split."""


def set_phase(phase: str) -> None:
    """Enter `phase` (DESIGN or RESULT) for this process and every process it starts from now on."""
    if phase not in (DESIGN, RESULT):
        raise ValueError(f"phase={phase!r}: choose {DESIGN!r} or {RESULT!r}")
    os.environ[PHASE_VARIABLE] = phase


def current_phase() -> str:
    """DESIGN, RESULT, or "" where no stage or tool has said (a notebook cell of one's own, a test)."""
    return os.environ.get(PHASE_VARIABLE, "")


@contextmanager
def design_phase():
    """The design phase for the block, then whatever phase was there before."""
    before = os.environ.get(PHASE_VARIABLE)
    set_phase(DESIGN)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PHASE_VARIABLE, None)
        else:
            os.environ[PHASE_VARIABLE] = before


def check_task(task_id: str, split: str, result_split: str) -> None:
    """Raise ProtocolError when a design is about to play a game of the result split."""
    if current_phase() == DESIGN and split == result_split:
        raise ProtocolError(
            f"{task_id} is a game of {split}, the split that gives the result and chooses nothing; this is a design "
            f"(stages 00-05 or a design tool), which plays train games or a design split only (ALFWorld valid_seen). "
            f"Measure a design on valid_seen; {split} is played by stage 06 alone."
        )
