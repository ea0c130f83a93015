"""Stage 05, the student's QLoRA training: everything notebook 05 reads, from this one package.

data.py turns the stage 04 examples into tokens with the loss on the assistant's turns, model.py loads the 4-bit
base and its LoRA, fit.py runs the trainer, train.py ties them together (one adapter per source, the script) and
oom.py turns a CUDA out-of-memory into advice.

The names load on first use (`from ragdistill.method.student import train_adapter`): the package itself imports
nothing, so `python -m ragdistill.method.student.train` runs its module once, as the script.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "encode": "ragdistill.models.chat_template",
    "mean_loss": "ragdistill.method.student.model",
    **{name: "ragdistill.method.student.train" for name in (
        "load_log", "load_tokenizer", "lora_config", "prepare_data", "sft_config", "show_loss_mask", "skip_reason",
        "train_adapter", "write_metrics")},
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
