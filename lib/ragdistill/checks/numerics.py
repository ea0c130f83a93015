"""The smoke model's identity, and why every processor builds the same one.

Processors and libraries sum in different orders (AVX-512, AVX2 or scalar kernels; MKL's and oneDNN's code paths;
one thread or two; x86-64 or Arm), so the last bits of a float differ from one machine to the next, and no switch
reaches them all. Over the 400 steps of the smoke model's training such a difference grows into a model that answers
otherwise: in float32 always, and in float64 too under torch's scalar kernels (bench/results/numerics_float64_only.json).
So the smoke model is trained in float64 and every weight is rounded to a multiple of 2**-16 after every optimizer
step (smoke.snap). With the same weights before a step, two machines' updated weights differ in their last bits
(about 1e-16 of a weight's size), far below the grid's 1.5e-5: the rounding takes the difference away, and the next step starts from the same bytes again. Only a
value that falls that close to a rounding midpoint could round otherwise; the build records how close any came
(`closest_to_a_midpoint` in smoke_build.json, in grid steps). The model is still named by its greedy answers to a
fixed set of probes (`behaviour`), which is what the regression reference checks, and the chain plays it in float64
(the smoke recipe's `cpu_dtype`), where no greedy choice is anywhere near a tie (`margin`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# Fixed first turns in the formats the smoke model learnt (ReAct and StateAct; ALFWorld and WebShop): what it
# answers to them is its identity. Neither task is one the chain plays.
_ROOM = ("-= Welcome to TextWorld, ALFRED! =-\n\nYou are in the middle of a room. Looking quickly around you, you see "
         "a cabinet 1, a countertop 1, a drawer 1, a fridge 1, a microwave 1, a sinkbasin 1, and a stoveburner 1.\n\n"
         "Your task is to: {task}")
PROBE_TASKS = (
    ("alfworld", "put", "put a mug in cabinet."),
    ("alfworld", "clean", "clean some apple and put it in fridge."),
    ("alfworld", "heat", "heat some egg and put it in countertop."),
    ("webshop", "beauty", "i need a long lasting lipstick in red, and price lower than 30.00 dollars"),
)
PROBE_TOKENS = 24  # greedy tokens per probe at most (an answer may end sooner)


def probe_chats() -> list[list[dict]]:
    """The probe set: each task of PROBE_TASKS as both agents' first turn, without few-shot examples."""
    from ragdistill.method.agents import get_agent

    chats = []
    for env, task_type, task in PROBE_TASKS:
        observation = _ROOM.format(task=task) if env == "alfworld" else f"WebShop [SEP] Instruction: [SEP] {task} [SEP] Search"
        for agent in ("react", "stateact"):
            chats.append(get_agent(agent, env).messages(task_type, observation, [], fewshot=False))
    return chats


def probe(model, tokenizer, tokens: int = PROBE_TOKENS) -> dict:
    """The model's greedy answers to the probe set (token ids), and the smallest gap between the first and the
    second logit over every step of them (how far the closest greedy choice is from flipping)."""
    import torch

    answers, margin = [], float("inf")
    for chat in probe_chats():
        ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"]
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, output_scores=True, return_dict_in_generate=True)
        answers.append(out.sequences[0, len(ids):].tolist())
        for logits in out.scores:  # the scores greedy chose from
            top = torch.topk(logits[0].double(), 2).values
            margin = min(margin, float(top[0] - top[1]))
    return {"answers": answers, "margin": margin}


def behaviour_id(answers: list[list[int]]) -> str:
    """The first 16 hex digits of SHA-256 over the probe answers: the model's identity."""
    return hashlib.sha256(repr(answers).encode()).hexdigest()[:16]


def behaviour(folder: str | Path) -> dict:
    """A model folder's identity (`id`), its probe answers as text, and the smallest top-2 logit gap (`margin`),
    loaded as its profile would load it on a CPU (the smoke model: float64)."""
    import json

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    dtype = json.loads((folder / "config.json").read_text()).get("dtype") or "float32"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).eval()
    result = probe(model, tokenizer)
    return {"id": behaviour_id(result["answers"]), "margin": result["margin"],
            "answers": [tokenizer.decode(a) for a in result["answers"]]}


def weights_hash(folder: str | Path) -> str:
    """SHA-256 (first 16 hex digits) of a model folder's weight files: its bytes, which differ between machines."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).glob("*.safetensors")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
