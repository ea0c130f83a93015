"""Stage 05's model and trainer: the base (4-bit NF4 on a GPU), LoRA on every projection, TRL's SFTConfig, and the
loss on the assistant tokens."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from ragdistill.run.config import StudentConfig
from ragdistill.models.profiles import LORA_TARGETS, get_profile


def load_base(cfg: StudentConfig):
    """The base model for training: 4-bit NF4 (QLoRA) by default on CUDA, each process on its own GPU."""
    from transformers import AutoModelForCausalLM

    from ragdistill.models.checkpoints import model_path
    from ragdistill.models.loading import loading_kwargs

    # The weights that stay unquantized (embeddings, lm_head, norms) in the 4-bit compute dtype, on CPU too.
    kwargs = loading_kwargs(cfg.cuda, cfg.use_4bit, gpu=int(os.environ.get("LOCAL_RANK", "0")), compute_dtype_on_cpu=True,
                            cpu_dtype=get_profile(cfg.profile).cpu_dtype)
    model = AutoModelForCausalLM.from_pretrained(model_path(get_profile(cfg.profile), cfg.env), **kwargs)
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

    from ragdistill.models.loading import native_bf16

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
