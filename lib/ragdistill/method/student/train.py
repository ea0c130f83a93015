"""Stage 05: QLoRA training of the hint-free students (distilled, sft) on the episodes of stage 04.

One entry point for the notebook and for several GPUs:
`python -m ragdistill.method.student.train --run <run> --profile <p>` or `accelerate launch -m ragdistill.method.student.train ...`; options are
StudentConfig's fields (`--max-steps 10`, `--adapters distilled sft`) or a YAML file of them (`--config f.yaml`).
The stage's parts: its config (run.config.StudentConfig), its data and loss mask (data.py, chat_template), the model
and trainer (model.py), one adapter's training run (fit.py), out-of-memory messages (oom.py); here, the decisions
around a run (skip, reuse, resume, restart) and the script.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from ragdistill.models.chat_template import QWEN25_DEFAULT_SYSTEM, show_loss_mask
from ragdistill.run.config import SOURCES, ConfigError, StudentConfig
from ragdistill.run.io import atomic_write_json
from ragdistill.method.student.paged import paged_bytes, release_paged_state
from ragdistill.method.student.data import (
    EMPTY_ADVICE,
    AdapterData,
    StudentTrainingError,
    load_tokenizer,
    marked_template,
    prepare_data,
    read_examples,
    skip_reason,
)
from ragdistill.method.student.model import checkpointing_args, load_base, lora_config, sft_config
from ragdistill.method.student.fit import RESULT_FILE, base_weights, fit, is_main_process
from ragdistill.method.student.oom import GpuOutOfMemory, guard_oom, oom_message

# What the notebook, the tests and scripts import from the stage module.
__all__ = ["QWEN25_DEFAULT_SYSTEM", "SOURCES", "AdapterData", "GpuOutOfMemory", "StudentConfig", "StudentTrainingError",
           "checkpointing_args", "guard_oom", "load_base", "load_log", "load_tokenizer", "lora_config", "main",
           "marked_template", "oom_message", "parse_args", "prepare_data", "show_loss_mask", "sft_config", "skip_reason",
           "train_adapter", "train_student", "write_metrics"]



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


def _restart_or_resume(cfg: StudentConfig, name: str, fingerprint: str, done: dict | None) -> str | None:
    """Clear an adapter trained on other data or settings (or a finished one trained too short or long) and stamp
    its checkpoint folder with `fingerprint`; the checkpoint to resume from, if any."""
    adapter_dir, ckpt_dir = cfg.adapter_dir(name), cfg.checkpoint_dir(name)
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
    return resume


def _warn_about_data(cfg: StudentConfig, name: str, data: AdapterData) -> None:
    """Say what was dropped or kept over-long, and when there are too few steps for the adapter to move."""
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


def train_adapter(cfg: StudentConfig, name: str, callbacks: list | None = None, tokenizer=None) -> dict:
    """Train (or resume, or reuse) one adapter; returns its figures, which also go to adapters/<name>/result.json."""
    if not read_examples(cfg.examples_file(name)):  # no tokenizer, no model: nothing to train on
        return _skipped(name, EMPTY_ADVICE[name])
    tokenizer = tokenizer or load_tokenizer(cfg)
    data = prepare_data(cfg, tokenizer, name)
    reason = skip_reason(cfg, data)
    if reason:
        return _skipped(name, reason, data)
    fingerprint = settings_fingerprint(cfg, data)
    schedule = {"epochs": cfg.epochs, "max_steps": cfg.max_steps}
    done = finished_result(cfg, name)
    if done and done.get("fingerprint") == fingerprint and done.get("schedule") == schedule:
        print(f"[{name}] finished already ({cfg.adapter_dir(name)}): skipped. Delete that folder to train it again.")
        return {**done, "reused": True}
    resume = _restart_or_resume(cfg, name, fingerprint, done)
    _warn_about_data(cfg, name, data)
    if cfg.cuda:
        torch.cuda.reset_peak_memory_stats()
    n_loss = min(cfg.loss_examples, len(data.ids))
    marks = {"fingerprint": fingerprint, "schedule": schedule, "adapter_dir": str(cfg.adapter_dir(name))}

    def run() -> dict:
        if cfg.threads and not cfg.cuda:
            threads = torch.get_num_threads()
            torch.set_num_threads(cfg.threads)
            try:
                return fit(cfg, name, data, tokenizer, callbacks, resume, n_loss, marks)
            finally:
                torch.set_num_threads(threads)
        return fit(cfg, name, data, tokenizer, callbacks, resume, n_loss, marks)

    paged_at_start = paged_bytes()  # bitsandbytes' paged optimizer state left by earlier adapters (0: none)
    try:
        result = guard_oom(cfg, name, run)
    finally:
        gc.collect()
        if cfg.cuda:
            release_paged_state()  # bitsandbytes never frees its paged optimizer buffers itself (paged.py)
            torch.cuda.empty_cache()
    result = {**result, "paged_optimizer_bytes_at_start": paged_at_start}
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
    # The base every adapter trained on, which stage 06 must serve them on (adapters agree: one base per run).
    found = [r["weights"] for n, r in results.items() if isinstance(r.get("weights"), dict)]
    if found:
        metrics["weights"] = found[0]
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


def parse_args(argv: list[str] | None = None) -> StudentConfig:
    """Command-line options, one per StudentConfig field, read by TRL's parser; then the stage config's own checks."""
    from trl import TrlParser

    parser = TrlParser(StudentConfig)
    parser.description = __doc__.splitlines()[0]
    (parsed,) = parser.parse_args_and_config(argv)
    return StudentConfig.from_params(dataclasses.asdict(parsed))


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
