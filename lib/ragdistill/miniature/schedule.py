"""The learning-rate schedule of the hand-written training loops (the smoke model, the cpu warm-start)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, peak: float = 1.0) -> float:
    """Linear warmup over the first tenth of the steps (at least one), then cosine decay to 0; `peak` at the top
    (1.0: a factor for torch's LambdaLR)."""
    warmup = max(1, total // 10)
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
