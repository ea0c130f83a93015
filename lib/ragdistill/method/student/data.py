"""Stage 05's data: stage 04's chats read and checked, tokenized with the assistant mask, over-long ones counted."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ragdistill.models.chat_template import QWEN25_DEFAULT_SYSTEM, chatml_template, encode, has_generation_markers
from ragdistill.run.config import StudentConfig
from ragdistill.run.io import read_jsonl
from ragdistill.models.profiles import get_profile

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
    path = cfg.examples_file(name)
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


def load_tokenizer(cfg: StudentConfig):
    """The profile's tokenizer with a marked chat template (assistant-only loss), padding on the right."""
    from transformers import AutoTokenizer

    from ragdistill.models.checkpoints import model_path

    tokenizer = AutoTokenizer.from_pretrained(model_path(get_profile(cfg.profile), cfg.env))
    tokenizer.chat_template = marked_template(tokenizer, cfg.profile)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
