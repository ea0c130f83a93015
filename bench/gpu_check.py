"""The CUDA path of the paper's setting, measured in a few minutes of one GPU with no network.

Qwen2.5-7B- and 14B-shaped models are built from their published configs with random weights (no download), the
memory a process really gets on a 24 GB card is emulated (22.5 GiB in all: torch's allocator is capped at that
less the CUDA context, and the device's own use, which also counts bitsandbytes' paged optimizer memory, is
reported beside torch's), and the project's own code runs on them: `train.train_adapter` (QLoRA, as stage 05),
`TransformersBackend` on a scripted 50-step episode (as stages 01/03/06; the largest batch plays all 50 steps), and
notebook 06's pattern (one base, two adapters, caches). NF4 counts as working only when one real 4-bit matmul
agrees with its dequantized reference; without it the NF4 phases run in bf16 with a plain optimizer, and say so.
Figures go to a JSON file, with a projection of the whole `gpu-7b` run on an RTX 4090 and an RTX 3090.

    python bench/gpu_check.py --out gpu_check.json --wheels wheels/   # on the GPU machine, at most 8 minutes
    python bench/gpu_check.py --tiny --out tiny.json                  # CPU, seconds: the same code, tiny shapes

`--wheels DIR` installs the wheels found there (bitsandbytes, trl; `bench/gpu_wheels.sh` downloads them) into a
temporary folder first, offline, for an image that lacks them. The random model never ends a turn (its end-token
logits are zeroed), so every answer is `--new-tokens` long: a typical ALFWorld answer, always.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The project's library from this checkout: the GPU image has its dependencies, not the package itself.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Published configs (config.json of Qwen/Qwen2.5-7B-Instruct and Qwen/Qwen2.5-14B-Instruct).
QWEN25 = {
    "7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, vocab_size=152064, rms_norm_eps=1e-6),
    "14b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=48, num_attention_heads=40,
                num_key_value_heads=8, vocab_size=152064, rms_norm_eps=1e-5),
}
COMMON = dict(max_position_embeddings=32768, rope_theta=1000000.0, tie_word_embeddings=False, hidden_act="silu")
TINY = {
    "7b": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
               vocab_size=2048, rms_norm_eps=1e-6),
    "14b": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                vocab_size=2048, rms_norm_eps=1e-5),
}
# Qwen2.5-Instruct's generation_config.json: what every backend must override for greedy decoding.
QWEN_GENERATION = {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}
# Published peak figures: dense bf16 tensor FLOP/s (FP32 accumulate) and memory bandwidth (bytes/s).
GPUS = {
    "H200": (989e12, 4.8e12), "H100 SXM": (989e12, 3.35e12), "H100 PCIe": (756e12, 2.0e12), "H100": (989e12, 3.35e12),
    "A100": (312e12, 2.0e12), "RTX 4090": (165e12, 1.008e12), "RTX 3090": (71e12, 0.936e12),
}
# The gpu-7b run (README): 1,200 train games x 2 agents in stages 01 and 03; 134 x 2 agents x 4 conditions in 06.
RUN_EPISODES = {"01_failures": 2400, "03_teacher": 2400, "06_eval": 1072}
OBSERVATIONS = [
    "You arrive at countertop 1. On the countertop 1, you see a bread 1, a butterknife 2, a mug 3, and a spatula 1.",
    "Nothing happens.",
    "You open the cabinet 4. The cabinet 4 is open. In it, you see a dishsponge 2 and a soapbottle 1.",
    "You pick up the mug 3 from the countertop 1.",
    "You arrive at coffeemachine 1. On the coffeemachine 1, you see nothing.",
]
FIRST = ("You are in the middle of a room. Looking quickly around you, you see a cabinet 6, a cabinet 5, a cabinet 4, "
         "a coffeemachine 1, a countertop 3, a countertop 2, a countertop 1, a drawer 3, a fridge 1, a garbagecan 1, "
         "a microwave 1, a sinkbasin 1, a stoveburner 4, and a toaster 1.\n\nYour task is to: put a clean mug in coffeemachine.")


def install_wheels(folder: Path) -> list[str]:
    """pip-install (offline, no dependencies) every wheel in `folder` into a temporary target on sys.path."""
    wheels = sorted(str(p) for p in folder.glob("*.whl"))
    if not wheels:
        return []
    target = Path(tempfile.mkdtemp(prefix="gpu-check-wheels-"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", "--target", str(target),
                    *wheels], check=True)
    sys.path.insert(0, str(target))
    return [Path(w).name for w in wheels]


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    try:
        import bitsandbytes  # noqa: F401

        out["bitsandbytes_imports"] = True
    except Exception as err:  # noqa: BLE001 - recorded: the NF4 phases then run in bf16
        out["bitsandbytes_imports"] = f"{type(err).__name__}: {err}"
    return out


def nf4_matmul(device: str) -> bool | str:
    """True when one real NF4 matmul (bitsandbytes' Linear4bit, as a QLoRA base runs it) agrees with the same
    product over its dequantized weight; else why not. `import bitsandbytes` alone proves nothing: without a
    binary for the CUDA it finds, it loads a placeholder library and fails only at the first 4-bit kernel."""
    try:
        import bitsandbytes as bnb
        import torch
        from bitsandbytes.functional import dequantize_4bit

        torch.manual_seed(0)
        layer = bnb.nn.Linear4bit(256, 128, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4")
        layer.weight = bnb.nn.Params4bit(torch.randn(128, 256) / 16, requires_grad=False, quant_type="nf4")
        layer = layer.to(device)  # quantized here
        x = torch.randn(4, 256, device=device, dtype=torch.bfloat16)
        with torch.no_grad():
            got = layer(x).float()
            weight = dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
            want = x.float() @ weight.t()
    except Exception as err:  # noqa: BLE001 - the answer: NF4 does not run here, and why
        return f"{type(err).__name__}: {str(err)[:300]}"
    error = float((got - want).abs().max() / want.abs().max())
    if not torch.isfinite(got).all() or error > 0.05:
        return f"the 4-bit matmul disagrees with its dequantized weight (max error {error:.3g} of the largest output)"
    return True


def training_optimizer(nf4: bool, cuda: bool) -> str:
    """Stage 05's optimizer on a GPU (paged 8-bit AdamW) needs bitsandbytes working; without it, plain AdamW,
    which TRL can build anywhere (its 8-bit one raises ImportError without bitsandbytes)."""
    return "paged_adamw_8bit" if (nf4 and cuda) else "adamw_torch"


GIB = 2**30
DEVICE_PEAK = {"bytes": 0}  # the device's own highest use seen (mem_get_info), context and paged memory included


def device_used() -> int:
    """Bytes in use on the device as the driver sees them (every allocation of this process, not torch's only);
    the highest one seen is kept in DEVICE_PEAK."""
    import torch

    if not torch.cuda.is_available():
        return 0
    free, total = torch.cuda.mem_get_info()
    DEVICE_PEAK["bytes"] = max(DEVICE_PEAK["bytes"], total - free)
    return total - free


def device_peak_gib() -> float | None:
    import torch

    return round(DEVICE_PEAK["bytes"] / GIB, 2) if torch.cuda.is_available() else None


def allocator_fraction(card_gib: float, context_bytes: int, total_bytes: int) -> float:
    """The share of this device torch's allocator may use so that the process as a whole, its CUDA context
    included, stays within `card_gib` (what a process gets on the emulated card)."""
    return max(0.0, min(1.0, (card_gib * GIB - context_bytes) / total_bytes))


def rollout_deadlines(batches: tuple[int, ...], now: float, end: float) -> dict[int, float]:
    """When each batch size must stop: the largest one (what the projection rests on) gets all the time up to
    `end`, so it plays every step; the others play after it, in what it leaves (they stop at `end` too)."""
    return {b: end for b in sorted(batches, reverse=True)}


def build_tokenizer(folder: Path):
    """A byte-level BPE trained on the agents' own prompts, with ChatML tokens and the project's marked template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from ragdistill.method.agents import get_agent
    from ragdistill.models.chat_template import chatml_template
    from ragdistill.method.student.train import QWEN25_DEFAULT_SYSTEM

    corpus = [get_agent(a).system_prompt(t, None, fewshot=True) for a in ("react", "stateact")
              for t in ("put", "clean", "heat", "cool", "examine", "puttwo")] + OBSERVATIONS + [FIRST]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=1500, special_tokens=special, show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = chatml_template(QWEN25_DEFAULT_SYSTEM)
    fast.save_pretrained(folder)
    return fast


def build_model(folder: Path, shape: dict, tokenizer, device: str) -> None:
    """A Qwen2 model of this shape with random weights, saved as a checkpoint the project's loaders read."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, Qwen2Config

    config = Qwen2Config(**shape, **COMMON, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    with torch.no_grad():
        # Logits of ids the tokenizer lacks, and of the end token, are 0 while some real token's is above it: the
        # random model writes decodable text and never ends a turn early.
        head = model.get_output_embeddings().weight
        head[len(tokenizer):] = 0
        head[tokenizer.eos_token_id] = 0
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                               **QWEN_GENERATION)
    model.save_pretrained(folder, max_shard_size="5GB")
    tokenizer.save_pretrained(folder)
    del model


def register(name: str, folder: Path) -> None:
    from ragdistill.models.profiles import PROFILES, Profile

    PROFILES[name] = Profile(name, "local", str(folder), "gpu check (random weights)", 64, 128, True)


def peak_gib() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def reset_peak() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        DEVICE_PEAK["bytes"] = 0
        device_used()


def checkpointing(model) -> bool:
    """Whether gradient checkpointing is on (transformers 5.18 renamed the attribute)."""
    return bool(getattr(model, "is_activation_checkpointing", None) or model.is_gradient_checkpointing)


def n_tokens(tokenizer, chat: list[dict]) -> int:
    return len(tokenizer.apply_chat_template(chat, tokenize=True, return_dict=True)["input_ids"])


def training_chat(tokenizer, length: int) -> list[dict]:
    """An episode-shaped chat (system, first observation, then answers and replies) of about `length` tokens."""
    from ragdistill.method.agents import get_agent

    agent = get_agent("react")
    turns: list[tuple[str, str]] = []
    while True:
        chat = agent.messages("put", FIRST, turns, None, False)[:-1] if turns else None
        if chat and n_tokens(tokenizer, chat) >= length:
            return chat
        turns.append((f"think: step {len(turns)}, I look on.\naction: go to countertop {len(turns) % 3 + 1}",
                      OBSERVATIONS[len(turns) % len(OBSERVATIONS)]))


def measure_training(profile: str, length: int, steps: int, nf4: bool, outputs: Path, tokenizer,
                     optim: str = "adamw_torch") -> dict:
    """QLoRA steps through train.train_adapter (stage 05's code), r=64, one example of `length` tokens per step."""
    import torch
    from transformers import TrainerCallback

    from ragdistill.run.io import write_jsonl
    from ragdistill.method.student.train import GpuOutOfMemory, StudentConfig, train_adapter

    run = f"{profile}-{length}"
    chat = training_chat(tokenizer, length)
    write_jsonl(outputs / "runs" / run / "04_dehint" / "sft.jsonl", [{"id": str(i), "messages": chat} for i in range(steps)])
    cfg = StudentConfig.from_params({"profile": profile, "run": run, "adapters": ["sft"], "max_steps": steps,
                                     "effective_batch": 1, "loss_examples": 0, "save_steps": 10**6,
                                     "max_length": length * 2, "load_4bit": nf4, "gradient_checkpointing": True,
                                     "optim": optim})

    class Steps(TrainerCallback):
        def __init__(self):
            self.times, self.dtypes = [], {}

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            base = model.get_base_model()
            self.dtypes = {"embed_tokens": str(base.get_input_embeddings().weight.dtype),
                           "lm_head": str(base.get_output_embeddings().weight.dtype),
                           "lora": sorted({str(p.dtype) for n, p in model.named_parameters() if "lora_" in n}),
                           "gradient_checkpointing": checkpointing(base), "optimizer": args.optim}

        def on_step_begin(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.t0)
            device_used()

    timer = Steps()
    reset_peak()
    tokens = n_tokens(tokenizer, chat)
    try:
        result = train_adapter(cfg, "sft", callbacks=[timer], tokenizer=None)
    except GpuOutOfMemory as err:
        return {"tokens": tokens, "out_of_memory": str(err)[:400], "peak_gib": peak_gib(), "device_peak_gib": device_peak_gib()}
    if result.get("skipped"):
        return {"tokens": tokens, "skipped": result["reason"]}
    steady = timer.times[1:] or timer.times  # the first step also warms up kernels
    return {"tokens": tokens, "steps": len(timer.times), "seconds_per_step": round(sum(steady) / len(steady), 3),
            "tokens_per_second": round(tokens * len(steady) / sum(steady), 1), "peak_gib": result["peak_gpu_memory_gib"],
            "device_peak_gib": device_peak_gib(), "paged_optimizer_bytes_at_start": result["paged_optimizer_bytes_at_start"],
            "nf4": result["load_4bit"], "setup": timer.dtypes, "adapter": str(cfg.adapter_dir("sft"))}


def measure_rollout(loaded, batch: int, steps: int, new_tokens: int, marks: tuple[int, ...], adapter: str | None,
                    deadline: float = float("inf")) -> dict:
    """A scripted episode per row, `steps` steps, through TransformersBackend (its default mode); fewer steps when
    the deadline (time.perf_counter) comes first."""
    import torch

    from ragdistill.method.agents import get_agent
    from ragdistill.generation.local import TransformersBackend

    agent = get_agent("react")
    backend = TransformersBackend(loaded, batch_size=batch, adapter=adapter)
    turns: list[list[tuple[str, str]]] = [[] for _ in range(batch)]
    firsts = [FIRST.replace("cabinet 6", f"cabinet {6 + row}") for row in range(batch)]  # distinct episodes
    reset_peak()
    times, store, chats = [], {}, []
    for step in range(1, steps + 1):
        chats = [agent.messages("put", firsts[row], turns[row], None, True) for row in range(batch)]
        t0 = time.perf_counter()
        comps = backend.generate(chats, max_new_tokens=new_tokens)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        device_used()
        for row, comp in enumerate(comps):
            turns[row].append((comp.text, OBSERVATIONS[(step + row) % len(OBSERVATIONS)]))
        if step in marks:
            store[step] = round(backend.cache_bytes() / 2**20, 1)
        if time.perf_counter() > deadline:
            break
    backend.release(chats)
    s = backend.stats
    return {"batch": batch, "steps": len(times), "new_tokens": new_tokens, "mode": backend.mode,
            "seconds_per_step": round(sum(times) / len(times), 3), "seconds_first_step": round(times[0], 3),
            "seconds_last_step": round(times[-1], 3), "prompt_tokens_sent": s.prompt_tokens,
            "prompt_tokens_computed": s.prefilled_tokens, "generated_tokens": s.generated_tokens,
            "last_prompt_tokens": comps[0].prompt_tokens, "store_mib_at_step": store,
            "store_mib_after_release": round(backend.cache_bytes() / 2**20, 1), "store_budget_mib": round(backend.store.budget / 2**20),
            "evicted": backend.store.evicted, "peak_gib": peak_gib(), "device_peak_gib": device_peak_gib()}


def measure_eval(profile: str, adapter: str, batch: int, steps: int, new_tokens: int, nf4: bool) -> dict:
    """Notebook 06's memory: one base with two adapters, each condition's backend playing a batch of episodes."""
    from ragdistill.models.loading import load_model

    reset_peak()
    loaded = load_model(profile, load_4bit=nf4, adapters={"sft": adapter, "distilled": adapter})
    loaded_gib = peak_gib()
    out = {"nf4": loaded.quantized_4bit, "adapters": sorted(loaded.model.peft_config), "after_load_gib": loaded_gib}
    for condition in ("", "sft", "distilled"):
        run = measure_rollout(loaded, batch, steps, new_tokens, (), condition)
        out[condition or "base"] = {k: run[k] for k in ("seconds_per_step", "peak_gib", "device_peak_gib", "evicted")}
    del loaded
    return out


def project(check: dict, gpu_name: str, steps_per_episode: float, train_tokens: float) -> dict:
    """The whole gpu-7b run on an RTX 4090 and 3090, scaled from this GPU's figures.

    Rollouts (decoding a 4-bit model, reading KV caches) are taken as memory-bound: time x bandwidth ratio.
    Training (long sequences, gradient checkpointing) as compute-bound: time x FLOP/s ratio. Both are upper
    bounds of how a consumer card keeps up; neither counts the environments (worker processes in parallel).
    """
    here = next((v for k, v in GPUS.items() if k.lower() in gpu_name.lower()), None)
    roll = next((r for r in check.get("rollout_7b", []) if r.get("batch") == 32), None)
    train = check.get("train_7b", {}).get("4096", {})
    if here is None or roll is None or "tokens_per_second" not in train:
        return {"skipped": f"needs a known GPU ({gpu_name}), the 7B rollout at batch 32 and 7B training at 4k"}
    episode_steps = sum(RUN_EPISODES.values()) * steps_per_episode
    rollout_s = episode_steps * roll["seconds_per_step"] / roll["batch"]
    train_s = train_tokens / train["tokens_per_second"]
    out = {"assumptions": {"episodes": RUN_EPISODES, "steps_per_episode": steps_per_episode,
                           "training_tokens": train_tokens, "batch": 32, "measured_on": gpu_name},
           "here_hours": {"rollouts": round(rollout_s / 3600, 1), "training": round(train_s / 3600, 1)}}
    for card in ("RTX 4090", "RTX 3090"):
        flops, bandwidth = GPUS[card]
        r, t = rollout_s * here[1] / bandwidth, train_s * here[0] / flops
        out[card] = {"rollouts_hours": round(r / 3600, 1), "training_hours": round(t / 3600, 1),
                     "total_hours": round((r + t) / 3600, 1)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on CPU, in seconds (the test suite runs this)")
    parser.add_argument("--wheels", default="", help="folder of wheels to install first (bitsandbytes, trl)")
    parser.add_argument("--card-gib", type=float, default=22.5,
                        help="GPU memory a process gets, CUDA context included (RTX 4090: 23.99 GiB, 3090: 23.69, "
                             "less what the driver and a display keep)")
    parser.add_argument("--without-bitsandbytes", action="store_true",
                        help="run as on an image without bitsandbytes (its import fails): the bf16 fallback")
    parser.add_argument("--max-seconds", type=float, default=450.0, help="phases that would start later are skipped")
    parser.add_argument("--new-tokens", type=int, default=40, help="tokens per answer (a typical ALFWorld answer)")
    parser.add_argument("--work", default="", help="scratch folder (default: a temporary one, deleted)")
    args = parser.parse_args()
    start = time.perf_counter()
    out_path = Path(args.out)
    check: dict = {"tiny": args.tiny, "installed_wheels": install_wheels(Path(args.wheels)) if args.wheels else []}

    if args.without_bitsandbytes:
        sys.modules["bitsandbytes"] = None  # every `import bitsandbytes` now raises ImportError, as without it

    import torch

    cuda = torch.cuda.is_available() and not args.tiny
    device = "cuda" if cuda else "cpu"
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    check["versions"] = versions()
    check["nf4_matmul"] = nf4_matmul(device)
    nf4 = check["nf4_matmul"] is True
    check["nf4"] = nf4  # without a working NF4 matmul the NF4 phases run in bf16 (and say so in their figures)
    check["optimizer"] = training_optimizer(nf4, cuda)
    check["gpu"] = torch.cuda.get_device_name() if cuda else "cpu"
    shapes = TINY if args.tiny else QWEN25
    lengths = (512, 1024) if args.tiny else (2048, 4096, 8192)
    steps, marks = 50, (10, 30, 50)  # the paper's step limit: the projection rests on whole episodes
    batches = (2, 4) if args.tiny else (8, 32)
    train_steps = 2  # the first warms up kernels; the second is measured
    new_tokens = 8 if args.tiny else args.new_tokens
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu-check-"))
    os.environ["RAGDISTILL_OUTPUTS"] = str(work / "outputs")
    skipped: dict[str, str] = {}

    def save() -> None:
        check["skipped"] = skipped
        check["seconds"] = round(time.perf_counter() - start, 1)
        out_path.write_text(json.dumps(check, indent=1, default=str) + "\n")

    def time_left(phase: str, need: float) -> bool:
        if time.perf_counter() - start + need > args.max_seconds:
            skipped[phase] = f"not started: {need:.0f} s needed, {args.max_seconds - (time.perf_counter() - start):.0f} s left"
            return False
        return True

    tokenizer = build_tokenizer(work / "tokenizer")
    # build, rollouts (batch 32 for 50 steps, then 8), nb06, training: seconds on an H100, roughly
    need = {"7b": (45, 150, 55, 90), "14b": (75, 0, 90, 60)}
    for size in ("7b", "14b"):
        folder, profile = work / f"qwen25-{size}", f"check-{size}"
        if not time_left(f"{size} model", need[size][0] + need[size][3]):
            continue
        t0 = time.perf_counter()
        build_model(folder, shapes[size], tokenizer, device)
        register(profile, folder)
        check[f"build_{size}_seconds"] = round(time.perf_counter() - t0, 1)
        if cuda:  # the emulated card, from here on (the model was built and saved with the whole GPU)
            reset_peak()
            free, total = torch.cuda.mem_get_info()
            # What the device holds with torch's cache empty: this process's CUDA context (and anyone else's use).
            context = total - free - torch.cuda.memory_allocated()
            torch.cuda.set_per_process_memory_fraction(allocator_fraction(args.card_gib, context, total))
            check["emulated_card_gib"] = args.card_gib
            check["context_gib"] = round(context / GIB, 2)
        train = check.setdefault(f"train_{size}", {})
        for length in (lengths if size == "7b" else lengths[1:2]):
            if time_left(f"train {size} {length}", need[size][3] / 2):
                train[str(length)] = measure_training(profile, length, train_steps, nf4, work / "outputs", tokenizer,
                                                      check["optimizer"])
                save()
        adapter = next((r["adapter"] for r in train.values() if "adapter" in r), None)
        if size == "7b" and time_left("rollout 7b", need[size][1]):
            from ragdistill.models.loading import load_model

            reset_peak()
            loaded = load_model(profile, load_4bit=nf4)
            check["rollout_7b_model"] = {"nf4": loaded.quantized_4bit, "after_load_gib": peak_gib()}
            # The largest batch plays all 50 steps first (the store marks at 10/30/50 and the projection need whole
            # episodes): it may take the 14B phases' time, which are then skipped and say so. The 7B's nb06 phase
            # keeps its time; a smaller batch plays in what is left and says how many steps it played.
            end = float("inf") if args.tiny else start + args.max_seconds - need["7b"][2]
            deadlines = rollout_deadlines(batches, time.perf_counter(), end)
            runs = {b: measure_rollout(loaded, b, steps, new_tokens, marks, None, deadlines[b]) for b in deadlines}
            check["rollout_7b"] = [runs[b] for b in batches]
            del loaded
            save()
        if adapter and time_left(f"nb06 {size}", need[size][2]):
            check[f"nb06_{size}"] = measure_eval(profile, adapter, batches[0], 5 if not args.tiny else marks[0], new_tokens, nf4)
            save()
        elif not adapter:
            skipped[f"nb06 {size}"] = "no adapter: training did not finish"
        shutil.rmtree(folder, ignore_errors=True)  # the disk holds one model folder at a time
        if cuda:
            torch.cuda.set_per_process_memory_fraction(1.0)
    if not args.tiny:
        check["projection_gpu_7b"] = project(check, check["gpu"], steps_per_episode=25, train_tokens=2 * 1900 * 3000)
    save()
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({k: v for k, v in check.items() if k != "versions"}, indent=1, default=str))
    print(f"written: {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
