"""The `smoke` model: a tokenizer and a tiny Qwen2 trained offline on walkthroughs, deterministic for a seed."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .alfworld_env import TYPE_ORDER, balanced_sample, reserved_games
from .chat_template import chatml_template
from .io import publish_dir, staging_dir
from .paths import cache_dir
from .walkthroughs import cached_replays, transcript_text

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@dataclass(frozen=True)
class SmokeSpec:
    """Everything that determines the smoke model; its hash names the cache folder."""

    version: int = 3
    seed: int = 0
    games_per_type: int = 12
    vocab_size: int = 2048
    hidden_size: int = 128
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate_size: int = 384
    max_positions: int = 8192
    train_steps: int = 1200
    batch_size: int = 8
    lr: float = 2e-3
    threads: int = 2  # fixed, not the machine's count: the same floats everywhere
    variants: int = 6
    # Loss on every token, not just actions: this is pretraining, and reading the observations is what
    # teaches a tiny model to copy names from them into its actions.
    assistant_only: bool = False
    # Walkthroughs go straight to the object (an oracle plan); a few recorded visits elsewhere first
    # show a searching agent instead.
    detours: int = 3

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


def smoke_messages(record: dict, agent_name: str) -> list[dict]:
    """A demonstration as the agent's own chat (no few-shot examples), ending on its last answer."""
    from .agents import get_agent
    from .demos import demo_turns

    chat = get_agent(agent_name).messages(record["task_type"], record["observation"], demo_turns(agent_name, record), fewshot=False)
    return chat[:-1]


def _names(game_id: str) -> tuple[str, str]:
    """(object, receptacle) of a game from its folder name `<type>-<Object>-<Mrecep>-<Receptacle>-<scene>`."""
    parts = game_id.split("/")[1].split("-")
    return parts[1].lower(), parts[3].lower()


def rename(record: dict, old: str, new: str) -> dict:
    """The same episode with one object or receptacle name replaced everywhere (task, room, steps)."""
    pattern = re.compile(rf"\b{re.escape(old)}\b")
    sub = lambda text: pattern.sub(new, text)  # noqa: E731
    steps = [{**s, "action": sub(s["action"]), "observation": sub(s["observation"])} for s in record["steps"]]
    return {**record, "observation": sub(record["observation"]), "task": sub(record["task"]), "steps": steps}


def augment(records: list[dict], variants: int, seed: int) -> list[dict]:
    """Each walkthrough plus `variants` copies with its target object and receptacle renamed.

    Renaming breaks the link between a name and where it is, so a tiny model must learn to copy the
    names of the task into its actions instead of memorising whole episodes.
    """
    rng = random.Random(seed)
    objects = sorted({_names(r["game_id"])[0] for r in records})
    receptacles = sorted({_names(r["game_id"])[1] for r in records} - {"none"})
    out = list(records)
    for record in records:
        obj, rec = _names(record["game_id"])
        for _ in range(variants):
            new_obj = rng.choice(objects)
            new = {**rename(record, obj, new_obj), "target": new_obj}
            if rec != "none":
                new = rename(new, rec, rng.choice(receptacles))
            out.append(new)
    return out


def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE trained on game text, as a Qwen2 tokenizer with a marked ChatML template.

    The BPE is trained behind Qwen2's own normalizer and pre-tokenizer, because AutoTokenizer loads any
    Qwen2-config checkpoint with Qwen2Tokenizer: training and every later load then split text alike.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    proto = Qwen2Tokenizer().backend_tokenizer
    core = Tokenizer(models.BPE())
    core.normalizer = proto.normalizer
    core.pre_tokenizer = proto.pre_tokenizer
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer)
    model = json.loads(core.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tok = Qwen2Tokenizer(
        vocab=model["vocab"], merges=merges, unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    tok.chat_template = chatml_template(None)
    return tok


def _encode(tok, messages: list[dict], assistant_only: bool) -> tuple[list[int], list[int]]:
    enc = tok.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    ids = list(enc["input_ids"])
    if not assistant_only:
        return ids, ids
    return ids, [t if m else -100 for t, m in zip(ids, enc["assistant_masks"])]


def _train(model, examples: list[tuple[list[int], list[int]]], spec: SmokeSpec, pad_id: int) -> list[float]:
    """A plain AdamW loop with warmup and cosine decay; assistant tokens only carry loss."""
    rng = random.Random(spec.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.0)
    warmup = max(1, spec.train_steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (spec.train_steps - warmup))),
    )
    model.train()
    losses = []
    order: list[int] = []
    for _ in tqdm(range(spec.train_steps), desc="training the smoke model"):
        if len(order) < spec.batch_size:
            more = list(range(len(examples)))
            rng.shuffle(more)
            order += more
        batch = [examples[i] for i in order[: spec.batch_size]]
        del order[: spec.batch_size]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([x + [pad_id] * (width - len(x)) for x, _ in batch])
        labels = torch.tensor([y + [-100] * (width - len(y)) for _, y in batch])
        attn = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x, _ in batch])
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses


def build_smoke_model(spec: SmokeSpec = SmokeSpec(), dest: Path | None = None, verbose: bool = True) -> Path:
    """Build (once) and return the folder of the smoke model for `spec`."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    dest = dest or cache_dir() / "models" / f"smoke-{spec.key()}"
    if (dest / "config.json").is_file():
        return dest
    start = time.perf_counter()
    games = balanced_sample(reserved_games(), spec.games_per_type * len(TYPE_ORDER), seed=spec.seed)
    workers = max(1, min(4, os.cpu_count() or 1))
    cache_file = cache_dir() / "walkthroughs" / f"reserved-detours{spec.detours}.jsonl"
    records = cached_replays(games, cache_file, workers=workers, detours=spec.detours)
    # Both agents' formats, alternating, so the smoke model answers either prompt in kind.
    chats = [smoke_messages(r, ("react", "stateact")[i % 2]) for i, r in enumerate(augment(records, spec.variants, spec.seed))]
    texts = [transcript_text(r) for r in records] + [m["content"] for m in chats[0] + chats[1]]
    tmp = staging_dir(dest)
    train_tokenizer(texts, spec.vocab_size).save_pretrained(tmp)
    tok = AutoTokenizer.from_pretrained(tmp)  # train on exactly what every later load will see

    torch.manual_seed(spec.seed)
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.pad_token_id,
    )
    model = Qwen2ForCausalLM(config)
    examples = [_encode(tok, chat, spec.assistant_only) for chat in chats]
    threads = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    try:
        losses = _train(model, examples, spec, tok.pad_token_id)
    finally:
        torch.set_num_threads(threads)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id

    model.save_pretrained(tmp)
    info = {
        "spec": asdict(spec),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_games": [r["game_id"] for r in records],
        "loss_first": losses[0],
        "loss_last": sum(losses[-10:]) / min(10, len(losses)),
        "seconds": time.perf_counter() - start,
    }
    (tmp / "smoke_build.json").write_text(json.dumps(info, indent=2))
    publish_dir(tmp, dest)
    if verbose:
        print(
            f"built smoke model ({info['parameters']:,} params) in {info['seconds']:.0f}s: "
            f"loss {info['loss_first']:.2f} -> {info['loss_last']:.2f}"
        )
    return dest
