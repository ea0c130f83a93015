"""The `cpu` profile's model: SmolLM2-135M-Instruct converted from its GGUF file, then a warm-start (a short LoRA
on demonstrations of reserved train games).

SmolLM2-135M-Instruct out of the box answers ALFWorld in prose and wins almost no game, so every later
stage would have nothing to work with. The paper's 7B model brings two skills natively: it acts in the game's
command language, and it follows a rule written in its prompt. This warm-start is the miniature's stand-in for
both. It learns from the reserved slice of train (`benchmarks.alfworld.env.reserved_games`, never used by any later
stage, never an evaluation game): by default curriculum.py's searching demonstrations (visit the receptacles
in the room's order until the object is in sight, then the expert's plan; thoughts that name the object
sought and what the last observation shows before each action), about half of them under a hint block made
from the reserved games' own expert plans that they follow (the hinted kinds are visited first). Written in the
agents' own formats (ReAct and StateAct, alternating). The LoRA is merged into the weights and saved as a plain checkpoint, built once and
cached under `cache_dir()/models/smollm2-135m-warm-<key>`.

WebShop has its own warm-start (`warm_spec("webshop")`), built only when a run plays WebShop: a shopper's
demonstrations of reserved goals (webshop_demos.py: search the instruction, open the first result, buy), the asked
options chosen only under a hint block that says to (the block made by stage 02's extractor from the reserved
goals' plain purchases). The ALFWorld model never sees the shop, and the WebShop model never sees a household.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from ragdistill.benchmarks.alfworld.env import balanced_sample, folder_names, is_reserved, reserved_games
from ragdistill.models.chat_template import encode, has_generation_markers
from ragdistill.run.io import publish_dir, staging_dir
from ragdistill.run.paths import cache_dir
from ragdistill.models.profiles import LORA_TARGETS
from ragdistill.miniature.smollm2 import SMOLLM2_GGUF, _smollm2_folder, build_cpu_checkpoint  # noqa: F401
from ragdistill.miniature.loop import masked_labels, train_loop, warmup_cosine

@dataclass(frozen=True)
class WarmSpec:
    """Everything that determines the warm-started model; its hash names the cache folder."""

    version: int = 1
    seed: int = 0
    games: int = 180  # balanced over the six task types, from the reserved slice of train
    agents: tuple[str, ...] = ("react", "stateact")  # demonstration formats, alternating
    lora_r: int = 32
    lora_alpha: int = 64
    lr: float = 1e-3
    batch_size: int = 4  # demonstrations per optimizer step (gradients accumulated, no padding)
    epochs: int = 2
    max_tokens: int = 3072  # longer demonstrations are left out
    threads: int = 2  # the build has the machine to itself (make run)
    # ALFWorld: curriculum.py's searching demonstrations (the room's receptacles in order), `hint_share` of them
    # played under a retrieved hint block that they follow; their thoughts are demos.annotate's "planned" ones.
    hint_share: float = 0.5
    # Extra reserved games whose target receptacle is closed until opened (CLOSABLE): demonstrations that open
    # it before putting the object in, which the `games` alone hold few of (6 of 90 puts).
    closed_targets: int = 40
    # The benchmark the demonstrations come from. On WebShop `games` counts reserved goals (webshop_demos.demo_goals,
    # at most `goals_per_product` per product), `hint_share` and `option_share` are webshop_demos.WebMix's, the
    # thoughts plan from the first step (WebMix.planned), and closed_targets (ALFWorld's) is not used.
    env: str = "alfworld"
    goals_per_product: int = 8
    option_share: float = 0.5  # unhinted WebShop demonstrations that still choose the asked options
    hint_bank: str = "templates"  # WebShop: webshop_demos.WebMix.bank

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]

    @property
    def steps(self) -> int:
        """Optimizer steps when every game gives a demonstration (searching demonstrations that lose are left out)."""
        return math.ceil((self.games + self.closed_targets) * self.epochs / self.batch_size)


CLOSABLE = ("cabinet", "drawer", "fridge", "microwave", "safe")  # target receptacles that start closed


# The warm-start each benchmark's `cpu` model gets. WebShop: 68 goals (every reserved product of the 1,000-product
# set that comes first for its instruction, up to 8 goals each), two epochs (34 optimizer steps); the options are
# chosen only under a hint block that says to, its hints what stage 02's extractor says of plain purchases; the
# thoughts plan from the first step (and name the rule when there is one).
WARM_SPECS = {
    "alfworld": WarmSpec(),
    "webshop": WarmSpec(env="webshop", games=68, closed_targets=0, option_share=0.0, hint_bank="failures"),
}


def warm_spec(env: str = "alfworld") -> WarmSpec:
    """The default warm-start of a benchmark's `cpu` model."""
    if env not in WARM_SPECS:
        raise ValueError(f"no warm-start for env={env!r}: choose one of {', '.join(WARM_SPECS)}")
    return WARM_SPECS[env]


def demo_games(spec: WarmSpec) -> list:
    """The reserved train games (WebShop: goals) the warm-start learns from (asserted: no evaluation task among them)."""
    if spec.env == "webshop":
        return _demo_goals(spec)
    reserved = reserved_games()
    games = balanced_sample(reserved, spec.games, seed=spec.seed)
    if spec.closed_targets:
        chosen = {g.game_id for g in games}
        pool = [g for g in reserved if g.game_id not in chosen and folder_names(g.game_id)[1] in CLOSABLE]
        games += random.Random(spec.seed).sample(pool, min(len(pool), spec.closed_targets))
    bad = [g.game_id for g in games if g.split != "train" or not is_reserved(g.game_id)]
    if bad:
        raise AssertionError(f"warm-start games outside the reserved slice of train: {bad[:3]}")
    return games


def _demo_goals(spec: WarmSpec) -> list:
    from ragdistill.benchmarks import benchmark
    from ragdistill.benchmarks.webshop.data import get_goal
    from ragdistill.miniature.webshop_demos import demo_goals

    shop = benchmark("webshop")
    reserved = [get_goal(t.game_id) for t in shop.reserved_tasks()]
    goals = demo_goals(reserved, spec.games, seed=spec.seed, per_product=spec.goals_per_product)
    bad = [g.goal_id for g in goals if not shop.is_reserved(g.goal_id)]
    if bad:
        raise AssertionError(f"warm-start goals outside the reserved products of train: {bad[:3]}")
    return goals


def demo_records(spec: WarmSpec, workers: int = 2) -> list[dict]:
    """curriculum.py's searching demonstrations of the demonstration games, some under a hint block (won ones only);
    on WebShop, webshop_demos.py's purchases (every one of the goal's own product; some skip the asked options)."""
    if spec.env == "webshop":
        from ragdistill.miniature.webshop_demos import WebMix, webshop_demos

        mix = WebMix(seed=spec.seed, hint_share=spec.hint_share, option_share=spec.option_share, bank=spec.hint_bank,
                     planned=True)
        return webshop_demos(demo_games(spec), mix)
    from ragdistill.miniature.curriculum import Mix, alfworld_demos

    mix = Mix(seed=spec.seed, hint_share=spec.hint_share, search="ordered")
    return alfworld_demos(demo_games(spec), mix, workers=workers)


def demo_chats(records: list[dict], agents: tuple[str, ...] = ("react", "stateact")) -> list[list[dict]]:
    """Each demonstration as its agent's chat (no few-shot examples), ending on the last answer; ALFWorld's with
    demos.annotate's "planned" thoughts (WebShop demonstrations carry their own)."""
    from ragdistill.miniature import curriculum, webshop_demos

    return [webshop_demos.demo_chat(r, agents[i % len(agents)]) if r.get("env") == "webshop"
            else curriculum.demo_chat(r, agents[i % len(agents)], "planned") for i, r in enumerate(records)]


def default_dest(spec: WarmSpec) -> Path:
    return cache_dir() / "models" / f"smollm2-135m-warm-{spec.key()}"


def train_lora(model, examples: list[tuple[list[int], list[int]]], spec: WarmSpec, progress: bool = True):
    """LoRA training with loop.train_loop, `epochs` shuffled passes of `batch_size` demonstrations a step; examples
    are (ids, assistant mask) and only assistant tokens carry loss. Returns (PEFT model, loss per step)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(spec.seed)
    config = LoraConfig(
        r=spec.lora_r,
        lora_alpha=spec.lora_alpha,
        lora_dropout=0.0,
        target_modules=list(LORA_TARGETS),
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    rng = random.Random(spec.seed)
    order: list[int] = []
    for _ in range(spec.epochs):
        epoch = list(range(len(examples)))
        rng.shuffle(epoch)
        order += epoch
    batches = [order[i : i + spec.batch_size] for i in range(0, len(order), spec.batch_size)]
    labelled = [(ids, masked_labels(ids, mask)) for ids, mask in examples]
    losses = train_loop(peft_model, labelled, batches, lambda s: warmup_cosine(s, len(batches), spec.lr),
                        desc="warm-start (LoRA)", progress=progress)
    return peft_model, losses


def build_warm_checkpoint(
    spec: WarmSpec = WarmSpec(),
    base: str | Path | None = None,
    dest: Path | None = None,
    records: list[dict] | None = None,
    progress: bool = True,
    verbose: bool = True,
) -> Path:
    """Build (once) and return the folder of the warm-started model: base + merged LoRA, a plain checkpoint.

    `base` defaults to the converted SmolLM2-135M-Instruct; tests pass the smoke model. `records` (walkthrough
    replays) default to those of the reserved demonstration games.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ragdistill import benchmarks as envs

    dest = Path(dest) if dest else default_dest(spec)
    if (dest / "config.json").is_file():
        return dest
    if base is None:
        base = build_cpu_checkpoint()
    start = time.perf_counter()
    records = demo_records(spec) if records is None else records
    bad = [r["game_id"] for r in records if not envs.is_reserved(r["game_id"])]
    if bad:
        raise AssertionError(f"warm-start demonstrations outside the reserved slice of train: {bad[:3]}")
    tok = AutoTokenizer.from_pretrained(base)
    if not has_generation_markers(tok.chat_template):
        raise RuntimeError(f"the chat template of {base} has no generation markers: cannot mask the loss")
    examples, dropped, with_hints = [], 0, 0
    for record, chat in zip(records, demo_chats(records, spec.agents)):
        ids, mask = encode(tok, chat)
        if len(ids) > spec.max_tokens:
            dropped += 1
            continue
        examples.append((ids, mask))
        with_hints += bool(record.get("hints"))
    if not examples:
        raise RuntimeError("no warm-start demonstration fits max_tokens")

    threads = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    try:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        peft_model, losses = train_lora(model, examples, spec, progress=progress)
        merged = peft_model.merge_and_unload()
    finally:
        torch.set_num_threads(threads)

    tmp = staging_dir(dest)
    merged.save_pretrained(tmp)
    tok.save_pretrained(tmp)  # keeps the marked chat template
    info = {
        "spec": asdict(spec),
        "base": str(base),
        "train_games": [r["game_id"] for r in records],
        "examples": len(examples),
        "with_hints": with_hints,  # of the examples trained on
        "dropped_too_long": dropped,
        "tokens": sum(len(ids) for ids, _ in examples),
        "assistant_tokens": sum(sum(m) for _, m in examples),
        "optimizer_steps": len(losses),
        "loss_first": losses[0],
        "loss_last": sum(losses[-5:]) / min(5, len(losses)),
        "losses": [round(x, 4) for x in losses],
        "seconds": round(time.perf_counter() - start, 1),
        "threads": spec.threads,
    }
    (tmp / "warmstart.json").write_text(json.dumps(info, indent=2))
    publish_dir(tmp, dest)
    if verbose:
        print(
            f"warm-started {Path(base).name} on {len(examples)} demonstrations in {info['seconds']:.0f}s: "
            f"loss {info['loss_first']:.2f} -> {info['loss_last']:.2f}"
        )
    return dest


def warm_checkpoint(env: str = "alfworld", changes: dict | None = None) -> Path:
    """The `cpu` profile's model for a benchmark: its default warm-start, or with `changes` to its WarmSpec (the
    recipe's `warmstart`, as cpu-hintfree's hint_share 0) another, in a folder of its own (models/checkpoints.py
    calls this)."""
    spec = warm_spec(env)
    unknown = set(changes or {}) - set(asdict(spec))
    if unknown:
        raise ValueError(f"warmstart: {', '.join(sorted(unknown))} is no WarmSpec field; choose from {', '.join(asdict(spec))}")
    return build_warm_checkpoint(replace(spec, **(changes or {})))


def warmstart_info(path: str | Path) -> dict | None:
    """The build figures stored beside a warm-started checkpoint, if any."""
    f = Path(path) / "warmstart.json"
    return json.loads(f.read_text()) if f.is_file() else None
