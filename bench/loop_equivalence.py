"""Does miniature/loop.py train as the two loops it replaced (smoke._train and warmstart.train_lora of 5e2a9c0)?

Trains a tiny Qwen2 a few steps with the smoke loop (float64, every parameter; half the examples with loss on every
token, half on the assistant's only) and with the warm-start loop (float32, LoRA, assistant tokens), once with the
package at --old (a copy of lib/ from before the change: `git archive 5e2a9c0 lib | tar -x -C /tmp/old`) and once
with this checkout's, then compares the losses and the SHA-256 of every trained tensor's bytes.

    python bench/loop_equivalence.py --old /tmp/old/lib
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve()


def side(out: str, old: bool) -> None:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if old:
        from ragdistill import smoke, warmstart
    else:
        from ragdistill.miniature import smoke, warmstart
    torch.set_num_threads(1)

    def tiny(dtype):
        torch.manual_seed(0)
        cfg = Qwen2Config(vocab_size=300, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True, pad_token_id=0)
        return Qwen2ForCausalLM._from_config(cfg, dtype=dtype)

    rng = random.Random(1)

    def chat_like(n: int) -> tuple[list[int], list[int]]:
        ids, mask, pos = [rng.randrange(3, 300) for _ in range(n)], [0] * n, n // 3
        while pos < n:  # assistant turns, never the first token
            span = rng.randint(3, 12)
            mask[pos : pos + span] = [1] * len(mask[pos : pos + span])
            pos += span + rng.randint(5, 20)
        return ids, mask

    def digests(model) -> dict:
        return {k: hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest() for k, v in model.state_dict().items()}

    raw = [chat_like(rng.randint(30, 120)) for _ in range(24)]
    smoke_examples = [(ids, ids) if i % 2 else (ids, [t if m else -100 for t, m in zip(ids, mask)])
                      for i, (ids, mask) in enumerate(raw)]
    model = tiny(torch.float64)
    losses = smoke._train(model, smoke_examples, smoke.SmokeSpec(train_steps=8, batch_tokens=400, lr=3e-3, seed=0))
    wspec = warmstart.WarmSpec(lora_r=4, lora_alpha=8, lr=1e-3, batch_size=3, epochs=2, seed=0)
    peft_model, wlosses = warmstart.train_lora(tiny(torch.float32), raw, wspec, progress=False)
    result = {"smoke_losses": losses, "smoke_weights": digests(model), "warm_losses": wlosses,
              "warm_weights": digests(peft_model.merge_and_unload())}
    Path(out).write_text(json.dumps(result))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="a lib/ folder holding the package before the change")
    parser.add_argument("--side", choices=("old", "new"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        side(args.out, args.side == "old")
        return 0
    results = {}
    for name, lib in (("old", args.old), ("new", str(HERE.parents[1] / "lib"))):
        out = Path(f"/tmp/loop_equivalence_{name}.json")
        env = {**os.environ, "PYTHONPATH": lib}
        subprocess.run([sys.executable, str(HERE), "--old", args.old, "--side", name, "--out", str(out)], env=env, check=True)
        results[name] = json.loads(out.read_text())
    same = True
    for key in results["old"]:
        equal = results["old"][key] == results["new"][key]
        same &= equal
        print(f"{key}: {'identical' if equal else 'DIFFERENT'} ({len(results['old'][key])} entries)")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
