"""A student played with its LoRA adapter active, against the same adapter folded into the float32 weights for
the call (`models.folded_adapter`, what stage 06 does on CPU): prefill and decode times, their ratios, and how
far the logits move.

    python bench/adapter_fold.py --profile cpu --rows 24 --prompt 1200 --decode 30

The adapter is made here, over the profile's model (LoRA r and targets as stage 05 trains them, non-zero
weights), so no run is needed.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch


def _adapter(path: str, folder: str, r: int) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ragdistill.models.profiles import LORA_TARGETS

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(path),
                           LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(LORA_TARGETS), init_lora_weights=False))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.mul_(0.05)
    model.save_pretrained(folder)


def _time(model, ids: torch.Tensor, decode: int) -> tuple[float, float, torch.Tensor]:
    """Seconds to prefill `ids`, seconds per decoded token (all rows), and the prefill's last logits."""
    with torch.no_grad():
        start = time.perf_counter()
        out = model(input_ids=ids, use_cache=True)
        prefill = time.perf_counter() - start
        last, past = out.logits[:, -1].clone(), out.past_key_values
        token = out.logits[:, -1:].argmax(-1)
        start = time.perf_counter()
        for _ in range(decode):
            out = model(input_ids=token, past_key_values=past, use_cache=True)
            past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        return prefill, (time.perf_counter() - start) / decode, last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--env", default="alfworld")
    parser.add_argument("--rows", type=int, default=24)
    parser.add_argument("--prompt", type=int, default=1200, help="prompt tokens per row")
    parser.add_argument("--decode", type=int, default=30)
    parser.add_argument("--r", type=int, default=32, help="LoRA rank (stage 05 on cpu, ALFWorld: 32)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from ragdistill.models.loading import folded_adapter, load_model, model_path

    with tempfile.TemporaryDirectory() as tmp:
        _adapter(str(model_path(args.profile, env=args.env)), tmp, args.r)
        loaded = load_model(args.profile, device="cpu", env=args.env, adapters={"student": tmp})
    model = loaded.model
    ids = torch.randint(100, loaded.tokenizer.vocab_size - 100, (args.rows, args.prompt), generator=torch.Generator().manual_seed(0))
    model.set_adapter("student")
    _time(model, ids[:, :64], 2)  # warm up
    active = _time(model, ids, args.decode)
    with folded_adapter(model, "student"):
        folded = _time(model, ids, args.decode)
    print(f"{args.profile}: {args.rows} rows x {args.prompt} prompt tokens, {args.decode} decoded, LoRA r={args.r}, {args.threads} threads")
    print(f"prefill: adapter active {active[0]:.2f}s, folded {folded[0]:.2f}s  (x{active[0] / folded[0]:.2f})")
    print(f"decode:  adapter active {active[1] * 1000:.0f} ms/token, folded {folded[1] * 1000:.0f} ms/token  (x{active[1] / folded[1]:.2f})")
    print(f"largest logit difference: {(active[2] - folded[2]).abs().max().item():.2e}; "
          f"same next token in {(active[2].argmax(-1) == folded[2].argmax(-1)).float().mean().item():.0%} of rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
