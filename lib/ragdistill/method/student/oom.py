"""Out of GPU memory during training: one paragraph that names the settings and the parameters that lower memory."""

from __future__ import annotations

import gc
from typing import Any, Callable

import torch

from ragdistill.run.config import StudentConfig
from ragdistill.method.student.data import StudentTrainingError


class GpuOutOfMemory(StudentTrainingError):
    """CUDA ran out of memory during training; the message names the parameters that lower it."""


def oom_message(cfg: StudentConfig, name: str, error: BaseException | None = None) -> str:
    """One paragraph: what ran out, the settings it ran with, and the parameters that lower memory."""
    detail = str(error).strip().splitlines()[0] if error and str(error).strip() else ""
    return (
        f"CUDA ran out of memory while training the {name!r} adapter (profile {cfg.profile}, "
        f"per_device_batch={cfg.per_device_batch}, max_length={cfg.length_limit}, "
        f"gradient_checkpointing={cfg.use_gradient_checkpointing}, load_4bit={cfg.use_4bit}, lora_r={cfg.rank}). "
        "Lower the memory it needs and rerun this stage (training resumes from its last checkpoint): "
        "per_device_batch=1 (gradient accumulation grows to keep the effective batch), a smaller max_length "
        "(with overlong='drop' the longest episodes are then left out and counted), gradient_checkpointing=True, "
        "load_4bit=True, or a smaller lora_r; or use a GPU with more memory."
        + (f" (torch: {detail})" if detail else "")
    )


def guard_oom(cfg: StudentConfig, name: str, fn: Callable[[], Any]) -> Any:
    """Run fn; a CUDA out-of-memory error becomes a GpuOutOfMemory with an actionable message."""
    try:
        return fn()
    except torch.OutOfMemoryError as err:
        message = oom_message(cfg, name, err)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    raise GpuOutOfMemory(message)
