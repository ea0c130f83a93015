"""Stage 05: QLoRA training of the hint-free students (distilled, sft) on the episodes of stage 04.

One entry point for the notebook and for several GPUs:
`python -m ragdistill.train --run <run> --profile <p>` or `accelerate launch -m ragdistill.train ...`.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import json
import math
import os
import shutil
import sys
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch

from .chat_template import QWEN25_DEFAULT_SYSTEM, chatml_template, encode, has_generation_markers, show_loss_mask  # noqa: F401
from .config import MAX_EXAMPLE_TOKENS, ConfigError, StageConfig
from .io import atomic_write_json, read_jsonl
from .profiles import get_profile

SOURCES = ("distilled", "sft")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RESULT_FILE = "result.json"  # written last: its presence marks a finished adapter

# What each empty input says about the earlier stages, and which of their parameters to change.
EMPTY_ADVICE = {
    "distilled": (
        "stage 04 wrote no distilled examples: the hint-using teacher (stage 03) won no episode. "
        "Give it more chances: raise n_games (stages 01 and 03) so more failures feed the hint bank and more "
        "teacher episodes are played, raise max_steps, or use a stronger profile (cpu -> gpu-7b)."
    ),
    "sft": (
        "stage 04 wrote no sft examples: the base agents (stage 01) won no episode. Raise n_games or "
        "max_steps in stage 01, or use a stronger profile (cpu -> gpu-7b)."
    ),
}


class StudentTrainingError(RuntimeError):
    """Stage 05 cannot go on; the message says why and what to change."""


class GpuOutOfMemory(StudentTrainingError):
    """CUDA ran out of memory during training; the message names the parameters that lower it."""


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

    def validate(self) -> None:
        super().validate()
        unknown = [a for a in self.adapters if a not in SOURCES]
        if unknown or not self.adapters or len(set(self.adapters)) != len(self.adapters):
            raise ConfigError(f"adapters={self.adapters!r}: choose from {', '.join(SOURCES)}, each at most once")
        if self.overlong not in ("drop", "keep"):
            raise ConfigError(f"overlong={self.overlong!r}: choose 'drop' or 'keep'")
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
        return torch.cuda.is_available()

    # The device rules take the device as an input, so they can be checked for a GPU on any machine.
    def use_4bit_on(self, cuda: bool) -> bool:
        """QLoRA's 4-bit NF4 base on a GPU; full precision on CPU unless forced (bitsandbytes' CPU path is slow)."""
        from .models import wants_4bit

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
        """The paper's ranks are for a 7B-14B model (ALFWorld 64, WebShop 16); smaller profiles scale them down."""
        return self.lora_r or self._profile_lora()[0]

    @property
    def alpha(self) -> int:
        return self.lora_alpha or self._profile_lora()[1]

    def _profile_lora(self) -> tuple[int, int]:
        from .envs import LORA

        profile = get_profile(self.profile)
        r, alpha = LORA[self.env]
        return min(profile.lora_r, r), min(profile.lora_alpha, alpha)

    def grad_accumulation(self, processes: int | None = None) -> int:
        """Accumulation steps that keep the effective batch whatever the number of processes."""
        processes = processes or int(os.environ.get("WORLD_SIZE", "1"))
        return max(1, self.effective_batch // (self.per_device_batch * processes))

    def input_file(self, name: str) -> Path:
        return self.run_dir / "04_dehint" / f"{name}.jsonl"

    def adapter_dir(self, name: str) -> Path:
        """Where the finished PEFT adapter lives: stage 06 loads it with load_model(profile, adapter=...)."""
        return self.stage_dir / "adapters" / name

    def checkpoint_dir(self, name: str) -> Path:
        return self.stage_dir / "checkpoints" / name


# ---------------------------------------------------------------- data


def read_examples(path: Path) -> list[dict]:
    """Stage 04's chats, checked: system, user, then alternating turns that end on the assistant."""
    if not path.is_file():
        raise StudentTrainingError(
            f"{path} does not exist: run notebook 04 (hint removal) for this run first, or check the run name."
        )
    records = list(read_jsonl(path))
    for i, record in enumerate(records, 1):
        roles = [m.get("role") for m in record.get("messages", [])]
        ok = len(roles) >= 3 and roles[0] == "system" and roles[-1] == "assistant" and all(
            r == ("user" if k % 2 else "assistant") for k, r in enumerate(roles[1:], 1)
        )
        if not ok:
            raise StudentTrainingError(
                f"{path.name} line {i} (id {record.get('id')!r}): messages must go system, user, assistant, user, "
                f"..., and end on an assistant turn; got roles {roles[:6]}{'...' if len(roles) > 6 else ''}"
            )
    return records


def marked_template(tokenizer, profile: str) -> str:
    """A chat template with `{% generation %}` markers that renders exactly like the model's own.

    smoke and cpu tokenizers are saved with one; Qwen2.5's stock template lacks them, and for chats without
    tools it is plain ChatML with a default system prompt, which the project's marked template reproduces.
    """
    stock = tokenizer.chat_template
    if has_generation_markers(stock):
        return stock
    prof = get_profile(profile)
    if prof.source != "hub" or "qwen2.5" not in prof.model_id.lower():
        raise StudentTrainingError(
            f"The chat template of {prof.model_id} has no {{% generation %}} markers, so the loss cannot be put "
            "on assistant turns only, and no marked equivalent is known for this model."
        )
    marked = chatml_template(QWEN25_DEFAULT_SYSTEM)
    probe = [
        {"role": "system", "content": "rules"},
        {"role": "user", "content": "You are in a room.\n\nYour task is to: put a mug in desk."},
        {"role": "assistant", "content": "think: find a mug\naction: go to desk 1"},
        {"role": "user", "content": "You arrive at desk 1."},
        {"role": "assistant", "content": "action: look"},
    ]
    for chat in (probe, probe[1:]):
        a = tokenizer.apply_chat_template(chat, tokenize=False)
        b = tokenizer.apply_chat_template(chat, tokenize=False, chat_template=marked)
        if a != b:
            raise StudentTrainingError(f"The marked ChatML template renders {prof.model_id} chats differently: {a!r} vs {b!r}")
    return marked


@dataclass
class AdapterData:
    """One adapter's training examples after the over-long check."""

    name: str
    path: Path
    records: list[dict]  # kept, in file order
    ids: list[list[int]]
    masks: list[list[int]]
    total: int  # examples in the file
    overlong: int  # longer than cfg.max_length
    dropped: int  # removed (overlong="drop")
    max_length: int  # what the trainer gets: cfg.max_length, or the longest kept example with overlong="keep"
    fingerprint: str  # hash of the file: a changed file retrains the adapter

    @property
    def tokens(self) -> int:
        return sum(map(len, self.ids))

    @property
    def assistant_tokens(self) -> int:
        return sum(map(sum, self.masks))

    def summary(self) -> dict:
        return {
            "examples_in_file": self.total,
            "examples": len(self.records),
            "overlong": self.overlong,
            "dropped": self.dropped,
            "max_length": self.max_length,
            "tokens": self.tokens,
            "assistant_tokens": self.assistant_tokens,
            "longest": max(map(len, self.ids), default=0),
        }


def prepare_data(cfg: StudentConfig, tokenizer, name: str) -> AdapterData:
    """Read, tokenize and count; over-long examples are dropped or kept whole, never truncated."""
    path = cfg.input_file(name)
    records = read_examples(path)
    tokenizer = tokenizer or load_tokenizer(cfg)
    fingerprint = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    encoded = [encode(tokenizer, r["messages"]) for r in records]
    limit = cfg.length_limit
    overlong = sum(len(ids) > limit for ids, _ in encoded)
    if cfg.overlong == "drop":
        keep = [k for k, (ids, _) in enumerate(encoded) if len(ids) <= limit]
    else:
        keep = list(range(len(records)))
    longest = max((len(encoded[k][0]) for k in keep), default=0)
    return AdapterData(
        name=name,
        path=path,
        records=[records[k] for k in keep],
        ids=[encoded[k][0] for k in keep],
        masks=[encoded[k][1] for k in keep],
        total=len(records),
        overlong=overlong,
        dropped=len(records) - len(keep),
        max_length=max(limit, longest),
        fingerprint=fingerprint,
    )


def skip_reason(cfg: StudentConfig, data: AdapterData) -> str | None:
    """Why this adapter cannot be trained, in words a learner can act on; None when it can."""
    if data.total == 0:
        return EMPTY_ADVICE[data.name]
    if not data.records:
        return (
            f"all {data.total} {data.name} examples are longer than max_length={cfg.length_limit} tokens: raise "
            "max_length, or set overlong='keep' to train on them whole."
        )
    return None


# ---------------------------------------------------------------- model and trainer configs


def load_tokenizer(cfg: StudentConfig):
    """The profile's tokenizer with a marked chat template (assistant-only loss), padding on the right."""
    from transformers import AutoTokenizer

    from .checkpoints import model_path

    tokenizer = AutoTokenizer.from_pretrained(model_path(get_profile(cfg.profile)))
    tokenizer.chat_template = marked_template(tokenizer, cfg.profile)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base(cfg: StudentConfig):
    """The base model for training: 4-bit NF4 (QLoRA) by default on CUDA, each process on its own GPU."""
    from transformers import AutoModelForCausalLM

    from .checkpoints import model_path
    from .models import bnb_config, compute_dtype

    kwargs: dict[str, Any] = {}
    if cfg.use_4bit:
        kwargs["quantization_config"] = bnb_config(cuda=cfg.cuda)
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        kwargs["device_map"] = {"": local_rank} if cfg.cuda else {"": "cpu"}
        # The weights that stay unquantized (embeddings, lm_head, norms) in the 4-bit compute dtype.
        kwargs["dtype"] = kwargs["quantization_config"].bnb_4bit_compute_dtype
    else:
        kwargs["dtype"] = compute_dtype(cfg.cuda)
    model = AutoModelForCausalLM.from_pretrained(model_path(get_profile(cfg.profile)), **kwargs)
    model.config.use_cache = False  # the cache is useless in training and clashes with checkpointing
    if cfg.use_4bit:
        # Only the LoRA weights train. peft's prepare_model_for_kbit_training would also cast every weight that is
        # not 4-bit to float32 (a 7B's embeddings and lm_head: 2.2 GB -> 4.4 GB); they stay in the compute dtype
        # here. Gradient checkpointing is the trainer's (sft_config), so it is set in one place.
        for param in model.parameters():
            param.requires_grad_(False)
    return model


def lora_config(cfg: StudentConfig):
    """LoRA on every attention and MLP projection (the paper's q, k, v, o, gate, up, down)."""
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=LORA_TARGETS,
        bias="none",
        task_type="CAUSAL_LM",
    )


def checkpointing_args(on: bool) -> dict[str, Any]:
    """Gradient checkpointing (non-reentrant) under the name the installed transformers knows: releases since 5.18
    call it `activation_checkpointing`, earlier ones `gradient_checkpointing`."""
    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    name = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return {name: on, f"{name}_kwargs": {"use_reentrant": False}}


def sft_config(cfg: StudentConfig, name: str, max_length: int):
    """TRL's SFTConfig from the stage config: assistant-only loss, no truncation, no packing.

    The loss never builds the full logits: TRL's SFTTrainer projects only the positions with a label through the
    LM head, in chunks (its fused LM head, `loss_type="nll"`), so an 8k-token example does not need 8k x 152k
    float32 logits (about 5 GB at Qwen2.5's vocabulary).
    """
    from trl import SFTConfig

    from .models import native_bf16

    bf16 = native_bf16(cfg.cuda)
    return SFTConfig(
        output_dir=str(cfg.checkpoint_dir(name)),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_batch,
        gradient_accumulation_steps=cfg.grad_accumulation(),
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a ratio of the total steps (transformers 5)
        optim=cfg.optimizer,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        bf16=bf16,
        fp16=cfg.cuda and not bf16,
        **checkpointing_args(cfg.use_gradient_checkpointing),
        loss_type="nll",
        max_length=max_length,
        packing=False,
        assistant_only_loss=True,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to="none",
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        dataloader_pin_memory=cfg.cuda,
        ddp_find_unused_parameters=False,
    )


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


# ---------------------------------------------------------------- training


@torch.no_grad()
def mean_loss(model, ids: list[list[int]], masks: list[list[int]]) -> float:
    """Token-weighted mean loss on the assistant tokens, the same tokens the training loss uses.

    Only the logits of positions that predict an assistant token are computed (logits_to_keep), so a long
    episode with a 150k-word vocabulary does not materialise a full logits matrix.
    """
    was_training = model.training
    model.eval()
    for module in model.modules():
        # In eval mode bitsandbytes repacks 4-bit CPU weights for inference, a layout its training path cannot
        # use afterwards; its layers stay in training mode (they have no dropout of their own).
        if type(module).__module__.startswith("bitsandbytes") and type(module).__name__ == "Linear4bit":
            module.training = True
    device = next(p for p in model.parameters()).device
    total, count = 0.0, 0
    for seq, mask in zip(ids, masks):
        targets = [t for t in range(1, len(seq)) if mask[t]]
        if not targets:
            continue
        input_ids = torch.tensor([seq], device=device)
        keep = torch.tensor([t - 1 for t in targets], device=device)
        logits = model(input_ids=input_ids, logits_to_keep=keep).logits[0].float()
        labels = torch.tensor([seq[t] for t in targets], device=device)
        total += torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        count += len(targets)
    model.train(was_training)
    return total / count if count else float("nan")


def settings_fingerprint(cfg: StudentConfig, data: AdapterData) -> str:
    """What makes an adapter what it is. Steps and epochs are left out, so a longer rerun can resume."""
    keys = ("profile", "seed", "learning_rate", "lr_scheduler", "warmup_ratio", "effective_batch", "overlong",
            "lora_dropout", "optim", "weight_decay", "max_grad_norm")
    settings = {k: getattr(cfg, k) for k in keys}
    settings["optim"] = cfg.optimizer
    settings.update(r=cfg.rank, alpha=cfg.alpha, load_4bit=cfg.use_4bit, max_length=data.max_length, data=data.fingerprint)
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def planned_steps(cfg: StudentConfig, examples: int) -> int:
    """Optimizer steps the trainer will take (as transformers counts them, for one process)."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    batches = math.ceil(examples / (cfg.per_device_batch * int(os.environ.get("WORLD_SIZE", "1"))))
    return math.ceil(max(1, batches // cfg.grad_accumulation()) * cfg.epochs)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def finished_result(cfg: StudentConfig, name: str) -> dict | None:
    """The stored result of a finished adapter, or None."""
    path = cfg.adapter_dir(name) / RESULT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def load_log(cfg: StudentConfig, name: str) -> list[dict]:
    """The trainer's log_history of a finished adapter (loss per logging step)."""
    path = cfg.adapter_dir(name) / "log_history.json"
    return json.loads(path.read_text()) if path.is_file() else []


def _last_checkpoint(folder: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def _skipped(name: str, reason: str, data: AdapterData | None = None) -> dict:
    print(f"[{name}] not trained: {reason}")
    return {"adapter": name, "skipped": True, "reason": reason, **(data.summary() if data else {"examples": 0})}


def train_adapter(cfg: StudentConfig, name: str, callbacks: list | None = None, tokenizer=None) -> dict:
    """Train (or resume, or reuse) one adapter; returns its figures, which also go to adapters/<name>/result.json."""
    from datasets import Dataset
    from trl import SFTTrainer

    if not read_examples(cfg.input_file(name)):  # no tokenizer, no model: nothing to train on
        return _skipped(name, EMPTY_ADVICE[name])
    tokenizer = tokenizer or load_tokenizer(cfg)
    data = prepare_data(cfg, tokenizer, name)
    reason = skip_reason(cfg, data)
    if reason:
        return _skipped(name, reason, data)
    fingerprint = settings_fingerprint(cfg, data)
    adapter_dir, ckpt_dir = cfg.adapter_dir(name), cfg.checkpoint_dir(name)
    schedule = {"epochs": cfg.epochs, "max_steps": cfg.max_steps}
    done = finished_result(cfg, name)
    if done and done.get("fingerprint") == fingerprint and done.get("schedule") == schedule:
        print(f"[{name}] finished already ({adapter_dir}): skipped. Delete that folder to train it again.")
        return {**done, "reused": True}
    stamp = ckpt_dir / "fingerprint.txt"
    stale = done or (stamp.is_file() and stamp.read_text().strip() != fingerprint)
    if stale and is_main_process():
        print(f"[{name}] the data, settings, epochs or max_steps changed since it was trained: training again from scratch.")
        shutil.rmtree(adapter_dir, ignore_errors=True)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    resume = None if stale else _last_checkpoint(ckpt_dir)
    if is_main_process():
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        stamp.write_text(fingerprint + "\n")
    if data.dropped:
        print(f"[{name}] {data.dropped} of {data.total} examples are longer than max_length={cfg.length_limit} tokens and were dropped")
    elif data.overlong:
        print(f"[{name}] {data.overlong} examples are longer than {cfg.length_limit} tokens: kept whole, max_length raised to {data.max_length}")

    steps = planned_steps(cfg, len(data.records))
    if steps < 10 and cfg.max_steps <= 0:
        print(
            f"[{name}] only {steps} optimizer step(s): {len(data.records)} examples at an effective batch of "
            f"{cfg.effective_batch}, and warmup ({cfg.warmup_ratio:.0%} of the steps, at least one) starts the learning "
            "rate at 0, so the adapter barely moves. More data (earlier stages), a smaller effective_batch or more "
            "epochs give it more steps."
        )
    if cfg.cuda:
        torch.cuda.reset_peak_memory_stats()
    n_loss = min(cfg.loss_examples, len(data.ids))

    def run() -> dict:
        model = load_base(cfg)
        trainer = SFTTrainer(
            model=model,
            args=sft_config(cfg, name, data.max_length),
            train_dataset=Dataset.from_list([{"messages": r["messages"]} for r in data.records]),
            processing_class=tokenizer,
            peft_config=lora_config(cfg),
            callbacks=callbacks,
        )
        trainable, total = trainer.model.get_nb_trainable_parameters()
        before = mean_loss(trainer.model, data.ids[:n_loss], data.masks[:n_loss]) if n_loss else None
        if resume:
            print(f"[{name}] resuming from {resume}")
        start = time.perf_counter()
        output = trainer.train(resume_from_checkpoint=resume)
        seconds = time.perf_counter() - start
        after = mean_loss(trainer.model, data.ids[:n_loss], data.masks[:n_loss]) if n_loss else None
        trainer.save_model(str(adapter_dir))
        state = trainer.state
        tokens = state.num_input_tokens_seen - getattr(trainer, "_initial_num_input_tokens_seen", 0)
        losses = [e["loss"] for e in state.log_history if "loss" in e]
        result = {
            "adapter": name,
            "skipped": False,
            **data.summary(),
            "steps": state.global_step,
            "resumed_from": Path(resume).name if resume else None,
            "epochs": round(state.epoch or 0.0, 3),
            "seconds": round(seconds, 1),
            "tokens_seen": int(state.num_input_tokens_seen),
            "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else None,
            "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
            "train_loss": output.training_loss,
            "loss_before": before,
            "loss_after": after,
            "loss_examples": n_loss,
            "trainable_parameters": trainable,
            "total_parameters": total,
            "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cfg.cuda else None,
            "device": torch.cuda.get_device_name() if cfg.cuda else "cpu",
            "load_4bit": cfg.use_4bit,
            "fingerprint": fingerprint,
            "schedule": schedule,
            "adapter_dir": str(adapter_dir),
        }
        if is_main_process():
            resolved = {
                "stage_config": cfg.to_dict(),
                "lora": {k: sorted(v) if isinstance(v, set) else v for k, v in lora_config(cfg).to_dict().items()
                         if k in ("r", "lora_alpha", "lora_dropout", "target_modules", "bias", "task_type")},
                "grad_accumulation": cfg.grad_accumulation(),
                "processes": int(os.environ.get("WORLD_SIZE", "1")),
                "max_length": data.max_length,
                "gradient_checkpointing": cfg.use_gradient_checkpointing,
                "load_4bit": cfg.use_4bit,
                "input": str(data.path),
            }
            atomic_write_json(adapter_dir / "train_config.json", resolved)
            atomic_write_json(adapter_dir / "log_history.json", state.log_history)
            atomic_write_json(adapter_dir / RESULT_FILE, result)
            if not cfg.keep_checkpoints:
                shutil.rmtree(ckpt_dir, ignore_errors=True)
        del trainer, model
        return result

    try:
        result = guard_oom(cfg, name, run)
    finally:
        gc.collect()
        if cfg.cuda:
            torch.cuda.empty_cache()
    speed = f"{result['tokens_per_second']} tokens/s"
    memory = f", peak GPU memory {result['peak_gpu_memory_gib']} GiB" if cfg.cuda else ""
    print(
        f"[{name}] {result['steps']} steps in {result['seconds']}s, {speed}{memory}; "
        f"loss on {n_loss} training examples {_fmt(result['loss_before'])} -> {_fmt(result['loss_after'])}"
    )
    return result


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def stage_metrics(cfg: StudentConfig, results: dict[str, dict]) -> dict:
    """metrics.json of the stage: one entry per adapter; skipped (with the reasons) when none was trained."""
    trained = [n for n, r in results.items() if not r.get("skipped")]
    metrics: dict[str, Any] = {"adapters": results, "trained": trained, "skipped": not trained}
    if not trained:
        metrics["reason"] = " ".join(f"{n}: {r['reason']}" for n, r in results.items())
    return metrics


def write_metrics(cfg: StudentConfig, results: dict[str, dict]) -> dict:
    metrics = stage_metrics(cfg, results)
    if is_main_process():
        atomic_write_json(cfg.stage_dir / "metrics.json", metrics)
    return metrics


def train_student(cfg: StudentConfig) -> dict:
    """Every adapter in cfg.adapters, then metrics.json; what the script entry point runs."""
    results = {name: train_adapter(cfg, name) for name in cfg.adapters}
    return write_metrics(cfg, results)


# ---------------------------------------------------------------- script entry point


def _parse_value(text: str, tp: Any) -> Any:
    if tp is str:
        return text
    aliases = {"none": None, "null": None, "true": True, "false": False}
    if text.lower() in aliases:
        return aliases[text.lower()]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_args(argv: list[str] | None = None) -> StudentConfig:
    """Command-line options, one per StudentConfig field (--max-steps 10, --adapters distilled sft)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    hints = typing.get_type_hints(StudentConfig)
    for f in dataclasses.fields(StudentConfig):
        is_list = typing.get_origin(hints[f.name]) is list
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, nargs="+" if is_list else None,
                            default=argparse.SUPPRESS, metavar=f.name.upper())
    args = vars(parser.parse_args(argv))
    params = {
        k: list(v) if typing.get_origin(hints[k]) is list else _parse_value(v, hints[k]) for k, v in args.items()
    }
    return StudentConfig.from_params(params)


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_args(argv)
        if is_main_process():
            cfg.save()
        metrics = train_student(cfg)
    except (ConfigError, StudentTrainingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if is_main_process():
        print(json.dumps({n: {k: r.get(k) for k in ("steps", "loss_before", "loss_after", "reason") if k in r}
                          for n, r in metrics["adapters"].items()}, indent=1))
        print(f"metrics: {cfg.stage_dir / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
