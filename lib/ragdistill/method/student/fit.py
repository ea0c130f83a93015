"""One adapter's training run: TRL's SFTTrainer over the base with LoRA, the loss before and after, the figures,
and what a finished adapter's folder holds (its config, log and result.json, written last)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import torch

from ragdistill.method.student.data import AdapterData
from ragdistill.method.student.model import load_base, lora_config, mean_loss, sft_config
from ragdistill.method.student.progress import headless_progress
from ragdistill.run.config import StudentConfig
from ragdistill.run.io import atomic_write_json

RESULT_FILE = "result.json"  # written last: its presence marks a finished adapter


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def fit(cfg: StudentConfig, name: str, data: AdapterData, tokenizer, callbacks: list | None, resume: str | None,
        n_loss: int, marks: dict) -> dict:
    """Train adapter `name` (from the checkpoint `resume`, if any) and save it; its figures, `marks` among them."""
    from datasets import Dataset
    from trl import SFTTrainer

    model = load_base(cfg)
    trainer = SFTTrainer(
        model=model,
        args=sft_config(cfg, name, data.max_length),
        train_dataset=Dataset.from_list([{"messages": r["messages"]} for r in data.records]),
        processing_class=tokenizer,
        peft_config=lora_config(cfg),
        callbacks=callbacks,
    )
    headless_progress(trainer, name)
    trainable, total = trainer.model.get_nb_trainable_parameters()
    before = mean_loss(trainer.model, data.ids[:n_loss], data.masks[:n_loss]) if n_loss else None
    if resume:
        print(f"[{name}] resuming from {resume}")
    start = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - start
    after = mean_loss(trainer.model, data.ids[:n_loss], data.masks[:n_loss]) if n_loss else None
    adapter_dir = cfg.adapter_dir(name)
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
        "weights": base_weights(cfg, model).to_dict(),  # the base this adapter learnt to correct
        **marks,
    }
    if is_main_process():
        write_adapter_files(cfg, name, data, state.log_history, result)
    del trainer, model
    return result


def write_adapter_files(cfg: StudentConfig, name: str, data: AdapterData, log_history: list, result: dict) -> None:
    """The resolved settings, the trainer's log and the result (last) beside the adapter; checkpoints removed unless
    kept."""
    adapter_dir = cfg.adapter_dir(name)
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
    atomic_write_json(adapter_dir / "log_history.json", log_history)
    atomic_write_json(adapter_dir / RESULT_FILE, result)
    if not cfg.keep_checkpoints:
        shutil.rmtree(cfg.checkpoint_dir(name), ignore_errors=True)


def base_weights(cfg: StudentConfig, model):
    """The weights an adapter is trained on (weights.Weights): the checkpoint `load_base` read, its quantization."""
    from ragdistill.models.checkpoints import model_path
    from ragdistill.models.profiles import get_profile
    from ragdistill.models.weights import of_model

    return of_model(model, model_path(get_profile(cfg.profile), cfg.env))
