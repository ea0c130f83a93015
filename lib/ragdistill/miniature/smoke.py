"""The `smoke` model: a tokenizer and a tiny Qwen2 trained offline on walkthroughs, in float64, its weights put on a
grid after every step so that any processor builds the same bytes (numerics.py)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ragdistill.benchmarks.alfworld.env import TYPE_ORDER, balanced_sample, folder_names, reserved_games
from ragdistill.models.chat_template import encode
from ragdistill.run.io import build_lock, publish_dir, staging_dir
from ragdistill.run.paths import cache_dir
from ragdistill.miniature.tokenizer import train_tokenizer
from ragdistill.miniature.loop import masked_labels, train_loop, warmup_cosine
from ragdistill.miniature.walkthroughs import transcript_text

@dataclass(frozen=True)
class SmokeSpec:
    """Everything that determines the smoke model; its hash names the cache folder."""

    version: int = 12
    seed: int = 0
    games_per_type: int = 6  # ALFWorld demonstrations, from the reserved slice of train
    webshop_goals: int = 60  # WebShop demonstrations, from the reserved products of train
    goals_per_product: int = 4  # goals of one product differ in their asked options
    vocab_size: int = 2048
    hidden_size: int = 192
    layers: int = 2
    heads: int = 6
    kv_heads: int = 2
    intermediate_size: int = 512
    max_positions: int = 8192
    train_steps: int = 400
    batch_tokens: int = 8192  # tokens per optimizer step, padding included
    lr: float = 3e-3
    # After every optimizer step each weight is rounded to a multiple of 2**-grid_bits (numerics.py): kernels that
    # sum in another order move a weight by about 1e-18 before the rounding, and the rounding takes that away.
    # None: no grid (what bench/numerics.py compares against).
    grid_bits: int | None = 16
    variants: int = 1
    # ALFWorld: loss on every token, not just actions: this is pretraining, and reading the observations is
    # what teaches a tiny model to copy names from them into its actions. WebShop: on the answers only (its
    # pages are mostly product titles, ten to a page, and would take most of the training time).
    assistant_only: bool = False
    detours: int = 3  # random searching visits of the ALFWorld demonstrations (curriculum.Mix)
    hint_share: float = 0.5  # demonstrations played under a retrieved hint block (curriculum.py)
    option_share: float = 0.5  # WebShop demonstrations without an options rule that still choose the options
    # The smoke chain's own training tasks (stage 01's `chain_tasks` of balanced(training_tasks), as the smoke
    # profile picks them): a seeded half demonstrated without a hint block only, the other half under one only;
    # every such demonstration `chain_repeats` times.
    chain_tasks: int = 6
    chain_repeats: int = 16

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


def rename(record: dict, old: str, new: str) -> dict:
    """The same episode with one object or receptacle name (and its plural) replaced everywhere: task, room,
    steps, hint block and the kinds the search followed."""
    pattern = re.compile(rf"\b{re.escape(old)}(?=s?\b)")
    sub = lambda text: pattern.sub(new, text)  # noqa: E731
    steps = [{**s, "action": sub(s["action"]), "observation": sub(s["observation"])} for s in record["steps"]]
    return {**record, "observation": sub(record["observation"]), "task": sub(record["task"]), "steps": steps,
            "hints": [sub(h) for h in record.get("hints", [])], "guides": [sub(g) for g in record.get("guides", [])]}


def augment(records: list[dict], variants: int, seed: int) -> list[dict]:
    """Each walkthrough plus `variants` copies with its target object and receptacle renamed.

    Renaming breaks the link between a name and where it is, so a tiny model must learn to copy the
    names of the task into its actions instead of memorising whole episodes.
    """
    rng = random.Random(seed)
    objects = sorted({folder_names(r["game_id"])[0] for r in records})
    receptacles = sorted({folder_names(r["game_id"])[1] for r in records} - {"none"})
    out = list(records)
    for record in records:
        obj, rec = folder_names(record["game_id"])
        for _ in range(variants):
            new_obj = rng.choice(objects)
            new = {**rename(record, obj, new_obj), "target": new_obj}
            if rec != "none":
                new = rename(new, rec, rng.choice(receptacles))
            out.append(new)
    return out


def _encode(tok, messages: list[dict], assistant_only: bool) -> tuple[list[int], list[int]]:
    """Token ids and labels: every token, or the assistant's only (IGNORE elsewhere)."""
    ids, mask = encode(tok, messages)
    return (ids, masked_labels(ids, mask)) if assistant_only else (ids, ids)


def _batches(lengths: list[int], budget: int, rng: random.Random):
    """Endless optimizer steps of example indices, each about `budget` tokens: every example once per pass, in a
    shuffled order."""
    while True:
        order = list(range(len(lengths)))
        rng.shuffle(order)
        current: list[int] = []
        for i in order:
            if current and sum(lengths[j] for j in current) + lengths[i] > budget:
                yield current
                current = []
            current.append(i)
        yield current


def snap(parameters, bits: int | None) -> float:
    """Round every value of `parameters` in place to the nearest multiple of 2**-bits (ties to even; exact in
    float64, since the step is a power of two). Returns the smallest distance, in units of the step, from a value
    before rounding to the midpoint where its rounding would change: how close this step came to rounding a
    weight one way on this processor and the other way on the next. `bits` None: nothing is rounded (0.5)."""
    if bits is None:
        return 0.5
    scale = float(2**bits)
    closest = 0.5
    with torch.no_grad():
        for p in parameters:
            scaled = p * scale
            rounded = torch.round(scaled)
            closest = min(closest, float((0.5 - (scaled - rounded).abs()).min()))
            p.copy_(rounded / scale)
    return closest


def _train(model, examples: list[tuple[list[int], list[int]]], spec: SmokeSpec) -> tuple[list[float], float]:
    """loop.train_loop over every parameter: `train_steps` steps of about `batch_tokens` tokens each (fused causal
    attention without padding is twice the speed of padded batches here), the rate a factor of `lr`, the weights
    snapped to the grid before the first step and after every one. Returns the losses and the closest any weight
    came to a rounding midpoint (`snap`)."""
    batches = _batches([len(ids) for ids, _ in examples], spec.batch_tokens, random.Random(spec.seed))
    steps = [next(batches) for _ in range(spec.train_steps)]
    closest = [snap(model.parameters(), spec.grid_bits)]

    def after_step(step: int) -> None:
        closest.append(snap(model.parameters(), spec.grid_bits))

    losses = train_loop(model, examples, steps, lambda s: spec.lr * warmup_cosine(s, spec.train_steps),
                        desc="training the smoke model", after_step=after_step)
    return losses, min(closest)


def demo_chats(spec: SmokeSpec, workers: int = 2) -> tuple[list[list[dict]], list[dict]]:
    """The smoke model's training chats (ALFWorld, renamed copies included, and WebShop; both agents' formats,
    alternating) and the demonstration records they come from.

    The smoke model is the test suite's fixture, not a model of the method: besides the reserved slice it
    learns the tasks the smoke chain's stages 01 and 03 play. A seeded half of them it sees only without a hint
    block, the other half only under one (made from the task's own expert plan, the kind of hint stage 02's
    heuristic extractor writes). A model of a million parameters cannot generalise from a few hundred
    demonstrations, but it does learn that a prompt with a hint block calls for other actions than one without:
    the base agent wins tasks of the first half, the teacher (whatever hints stage 03 retrieves) also some of the
    second, so every path of the chain runs (teacher wins the base agent lost, distilled and SFT examples that
    differ, both students). Evaluation tasks it never sees.
    """
    from ragdistill.miniature import curriculum
    from ragdistill.miniature import webshop_demos
    from ragdistill.benchmarks import reserved_tasks
    from ragdistill.benchmarks.webshop.data import get_goal

    games = balanced_sample(reserved_games(), spec.games_per_type * len(TYPE_ORDER), seed=spec.seed)
    mix = curriculum.Mix(seed=spec.seed, hint_share=spec.hint_share, detours=spec.detours)
    records = curriculum.alfworld_demos(games, mix, workers=workers)
    agents = ("react", "stateact")
    chats = [curriculum.demo_chat(r, agents[i % 2]) for i, r in enumerate(augment(records, spec.variants, spec.seed))]
    plain, hinted = _halves(chain_tasks("alfworld", spec), spec.seed)
    for share, tasks in ((1.0, hinted), (0.0, plain)):
        own = curriculum.alfworld_demos(tasks, replace(mix, hint_share=share), workers=workers) if tasks else []
        chats += [curriculum.demo_chat(r, a) for r in own for a in agents] * spec.chain_repeats
        records += own
    if spec.webshop_goals:
        reserved = [get_goal(t.game_id) for t in reserved_tasks("webshop")]
        goals = webshop_demos.demo_goals(reserved, spec.webshop_goals, seed=spec.seed, per_product=spec.goals_per_product,
                                         short_search=True)
        web_mix = webshop_demos.WebMix(seed=spec.seed, hint_share=spec.hint_share, option_share=spec.option_share,
                                       short_search=True)
        web = webshop_demos.webshop_demos(goals, web_mix)
        chats += [webshop_demos.demo_chat(r, agent) for r in web for agent in agents]  # each in both formats
        records += web
        plain, hinted = _halves(chain_tasks("webshop", spec), spec.seed)
        for share, tasks in ((1.0, hinted), (0.0, plain)):  # every one chooses the asked options
            goals = [get_goal(t.game_id) for t in tasks]
            own = webshop_demos.webshop_demos(goals, replace(web_mix, hint_share=share, option_share=1.0))
            chats += [webshop_demos.demo_chat(r, a) for r in own for a in agents] * spec.chain_repeats
            records += own
    return chats, records


def _halves(tasks: list, seed: int) -> tuple[list, list]:
    """`tasks` split in two, each in their order: a seeded half demonstrated without a hint block, and the rest,
    demonstrated under one."""
    picked = set(random.Random(seed).sample(range(len(tasks)), len(tasks) // 2))
    return [t for i, t in enumerate(tasks) if i in picked], [t for i, t in enumerate(tasks) if i not in picked]


def chain_tasks(env: str, spec: SmokeSpec) -> list:
    """The training tasks the smoke chain's stage 01 plays: the same call, sizes and seed as the notebook's."""
    from ragdistill.benchmarks import balanced, training_tasks

    return balanced(training_tasks(env), spec.chain_tasks, seed=spec.seed) if spec.chain_tasks else []


def smoke_dest(spec: SmokeSpec) -> Path:
    """Where the smoke model of `spec` is cached."""
    return cache_dir() / "models" / f"smoke-{spec.key()}"


def build_smoke_model(spec: SmokeSpec = SmokeSpec(), dest: Path | None = None, verbose: bool = True,
                      threads: int = 1, dtype: str = "float64") -> Path:
    """Build (once) and return the folder of the smoke model for `spec`, training on `threads` CPU threads (one by
    default, so that the other cores run the tests meanwhile; the count changes the floats' last bits, not the
    model's decisions). `dtype` float32 builds a control for bench/numerics.py (what a float32 build's bytes do
    under a processor's kernels), into `dest` only: the cache holds the float64 models the profile plays."""
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype={dtype!r}: the smoke model is built in float64 (or float32, for a control)")
    if dtype != "float64" and dest is None:
        raise ValueError("a float32 smoke model is a control: name its folder (dest), the cache holds float64 ones")
    dest = Path(dest or smoke_dest(spec))
    if (dest / "config.json").is_file():
        return dest
    with build_lock(dest):
        return dest if (dest / "config.json").is_file() else _build(spec, dest, verbose, threads, dtype)


def _build(spec: SmokeSpec, dest: Path, verbose: bool, threads: int = 1, dtype: str = "float64") -> Path:
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    start = time.perf_counter()
    chats, records = demo_chats(spec, workers=max(1, min(4, os.cpu_count() or 1)))
    texts = [transcript_text(r) for r in records if r.get("env") != "webshop"] + [
        m["content"] for chat in chats for m in chat if m["role"] != "system"
    ][:4000] + sorted({m["content"] for chat in chats for m in chat if m["role"] == "system"})
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
    # float64 from the first draw of the initial weights: see numerics.py.
    model = Qwen2ForCausalLM._from_config(config, dtype=getattr(torch, dtype))
    examples = [_encode(tok, chat, spec.assistant_only or "WebShop" in chat[0]["content"]) for chat in chats]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        losses, closest = _train(model, examples, spec)
    finally:
        torch.set_num_threads(before)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id

    model.save_pretrained(tmp)
    info = {
        "spec": asdict(spec),
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": str(model.dtype).removeprefix("torch."),
        "threads": threads,
        "train_games": sorted({r["game_id"] for r in records}),
        "demonstrations": {"alfworld": sum(r.get("env") != "webshop" for r in records),
                           "webshop": sum(r.get("env") == "webshop" for r in records),
                           "with_hints": sum(bool(r.get("hints")) for r in records), "chats": len(chats)},
        "tokens": sum(len(ids) for ids, _ in examples),
        "loss_first": losses[0],
        "loss_last": sum(losses[-10:]) / min(10, len(losses)),
        "closest_to_a_midpoint": closest,  # in grid steps: how far the build stayed from rounding a weight otherwise
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


def smoke_checkpoint(env: str = "alfworld") -> Path:
    """The smoke profile's model (one for both benchmarks): models/checkpoints.py calls this."""
    return build_smoke_model()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Build the smoke model.")
    parser.add_argument("--spec", default="{}", help="SmokeSpec fields as JSON (default: the default spec)")
    parser.add_argument("--dest", default=None, help="folder to build into (default: the cache)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for the training (default: 1)")
    parser.add_argument("--dtype", default="float64", choices=("float64", "float32"),
                        help="float32: a control for bench/numerics.py, built into --dest only")
    args = parser.parse_args(argv)
    spec = SmokeSpec(**json.loads(args.spec))
    print(build_smoke_model(spec, Path(args.dest) if args.dest else None, threads=args.threads, dtype=args.dtype))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
