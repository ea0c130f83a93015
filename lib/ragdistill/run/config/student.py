"""The config of stage 05: QLoRA students on the hint-free episodes of stage 04, and its device rules."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ragdistill.models.profiles import get_profile
from ragdistill.run.config.base import MAX_EXAMPLE_TOKENS, ConfigError, StageConfig

SOURCES = ("distilled", "sft")  # the students: trained on the teacher's hint-free successes, or on the base's


@dataclass
class StudentConfig(StageConfig):
    """Notebook 05: QLoRA students on the hint-free episodes (paper: lr 2e-4, linear, warmup 0.1, batch 8, 1 epoch)."""

    STAGE: ClassVar[str] = "05_student"

    adapters: list[str] = field(default_factory=lambda: ["distilled", "sft"])
    learning_rate: float = 2e-4
    lr_scheduler: str = "linear"
    warmup_ratio: float = 0.1
    effective_batch: int = 8  # per_device_batch x gradient accumulation x processes
    per_device_batch: int = 1
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs (short runs, tests)
    max_length: int | None = None  # tokens; None: stage 04's (MAX_EXAMPLE_TOKENS). Longer examples are counted and
    # dropped or kept whole, never truncated
    overlong: str = "drop"  # "drop" or "keep" (max_length grows to fit the longest)
    lora_r: int | None = None  # None: the profile's (gpu profiles: ALFWorld 64, WebShop 16)
    lora_alpha: int | None = None  # None: the profile's (gpu profiles: ALFWorld 128, WebShop 32)
    lora_dropout: float = 0.05
    load_4bit: bool | None = None  # None: 4-bit NF4 on CUDA, off on CPU; True forces it on CPU too
    gradient_checkpointing: bool | None = None  # None: on with CUDA, off on CPU
    optim: str | None = None  # None: 8-bit paged AdamW on CUDA (as the paper's 8-bit Adam), adamw_torch on CPU
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    logging_steps: int = 1
    save_steps: int = 25
    save_total_limit: int = 2
    keep_checkpoints: bool = False  # checkpoints (with optimizer states) are deleted once the adapter is saved
    loss_examples: int = 32  # mean loss before/after training on this many training examples; 0: skip
    threads: int = 0  # CPU threads for training (0: the process's own setting); no effect on a GPU

    def validate(self) -> None:
        super().validate()
        unknown = [a for a in self.adapters if a not in SOURCES]
        if unknown or not self.adapters or len(set(self.adapters)) != len(self.adapters):
            raise ConfigError(f"adapters={self.adapters!r}: choose from {', '.join(SOURCES)}, each at most once")
        if self.overlong not in ("drop", "keep"):
            raise ConfigError(f"overlong={self.overlong!r}: choose 'drop' or 'keep'")
        if self.threads < 0:
            raise ConfigError(f"threads={self.threads}: 0 (the process's setting) or a positive count")
        for name in ("effective_batch", "per_device_batch", "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        if self.max_length is not None and self.max_length < 64:
            raise ConfigError("max_length must be >= 64 tokens (or None for stage 04's limit)")
        if self.effective_batch % self.per_device_batch:
            raise ConfigError(
                f"effective_batch={self.effective_batch} must be a multiple of per_device_batch={self.per_device_batch}"
            )
        if self.learning_rate <= 0 or not 0 <= self.warmup_ratio < 1 or not 0 <= self.lora_dropout < 1:
            raise ConfigError("learning_rate must be > 0, warmup_ratio and lora_dropout in [0, 1)")
        from transformers.trainer_utils import SchedulerType
        from transformers.training_args import OptimizerNames

        if self.lr_scheduler not in {s.value for s in SchedulerType}:
            raise ConfigError(f"lr_scheduler={self.lr_scheduler!r}: one of {', '.join(s.value for s in SchedulerType)}")
        if self.optim is not None and self.optim not in {o.value for o in OptimizerNames}:
            raise ConfigError(f"optim={self.optim!r} is not an optimizer transformers knows (e.g. adamw_torch, paged_adamw_8bit)")
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ConfigError("set epochs > 0 or max_steps > 0")
        for name in ("lora_r", "lora_alpha"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1 (or None for the profile's)")

    @property
    def cuda(self) -> bool:
        import torch

        return torch.cuda.is_available()

    # The device rules take the device as an input, so they can be checked for a GPU on any machine.
    def use_4bit_on(self, cuda: bool) -> bool:
        """QLoRA's 4-bit NF4 base on a GPU; full precision on CPU unless forced (bitsandbytes' CPU path is slow)."""
        from ragdistill.models.loading import wants_4bit

        return wants_4bit(cuda, self.load_4bit)

    def gradient_checkpointing_on(self, cuda: bool) -> bool:
        """Recompute activations in the backward pass on a GPU (memory); off on CPU (time)."""
        return cuda if self.gradient_checkpointing is None else self.gradient_checkpointing

    def optimizer_on(self, cuda: bool) -> str:
        """bitsandbytes' paged 8-bit AdamW on a GPU (its states take a quarter of adamw_torch's); adamw_torch on CPU."""
        return self.optim or ("paged_adamw_8bit" if cuda else "adamw_torch")

    @property
    def use_4bit(self) -> bool:
        return self.use_4bit_on(self.cuda)

    @property
    def use_gradient_checkpointing(self) -> bool:
        return self.gradient_checkpointing_on(self.cuda)

    @property
    def optimizer(self) -> str:
        return self.optimizer_on(self.cuda)

    @property
    def length_limit(self) -> int:
        """max_length, or the limit stage 04 of this run used (one limit for both stages), or MAX_EXAMPLE_TOKENS."""
        if self.max_length is not None:
            return self.max_length
        written = self.run_dir / "04_dehint" / "config.json"
        if written.is_file():
            return int(json.loads(written.read_text()).get("max_length", MAX_EXAMPLE_TOKENS))
        return MAX_EXAMPLE_TOKENS

    @property
    def rank(self) -> int:
        """lora_r, or the profile's recipe for the benchmark (the paper's for a 7B-14B: ALFWorld 64, WebShop 16)."""
        return self.lora_r or self._profile_lora()[0]

    @property
    def alpha(self) -> int:
        return self.lora_alpha or self._profile_lora()[1]

    def _profile_lora(self) -> tuple[int, int]:
        from ragdistill.benchmarks import LORA
        from ragdistill.models.profiles import recipe_lora

        from_recipe = recipe_lora(self.profile, self.env)
        if from_recipe:
            return from_recipe
        profile = get_profile(self.profile)  # one registered in code (bench/gpu_check.py): the paper's, capped
        r, alpha = LORA[self.env]
        return min(profile.lora_r, r), min(profile.lora_alpha, alpha)

    def grad_accumulation(self, processes: int | None = None) -> int:
        """Accumulation steps that keep the effective batch whatever the number of processes."""
        processes = processes or int(os.environ.get("WORLD_SIZE", "1"))
        return max(1, self.effective_batch // (self.per_device_batch * processes))

    def examples_file(self, name: str) -> Path:
        """Stage 04's examples for one adapter; when the file is there, it goes through `input_file`, which refuses a
        run whose stage 04 played the other benchmark."""
        path = self.run_dir / "04_dehint" / f"{name}.jsonl"
        return self.input_file("04_dehint", path.name) if path.is_file() else path

    def adapter_dir(self, name: str) -> Path:
        """Where the finished PEFT adapter lives: stage 06 loads it with load_model(profile, adapter=...)."""
        return self.stage_dir / "adapters" / name

    def checkpoint_dir(self, name: str) -> Path:
        return self.stage_dir / "checkpoints" / name
