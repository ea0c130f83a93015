"""The one training loop of the small models (the smoke model, the cpu warm-start): AdamW, a warmup-cosine learning
rate, gradients accumulated one sequence at a time, the loss only where a token carries it.

Both builders feed it examples as (token ids, labels), -100 where a token carries no loss, and the optimizer steps
as lists of example indices (smoke.py: about `batch_tokens` tokens a step; warmstart.py: `batch_size` examples).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

from ragdistill.run.progress import tqdm

IGNORE = -100  # the label of a token that carries no loss (the value torch's cross entropy ignores by default)


def warmup_cosine(step: int, total: int, peak: float = 1.0) -> float:
    """Linear warmup over the first tenth of the steps (at least one), then cosine decay to 0; `peak` at the top
    (1.0: a factor of the base learning rate)."""
    warmup = max(1, total // 10)
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def masked_labels(ids: list[int], mask: list[int]) -> list[int]:
    """Labels from an assistant mask (chat_template.encode): the token where the mask is set, IGNORE elsewhere."""
    return [t if m else IGNORE for t, m in zip(ids, mask)]


def sequence_loss(model, ids: list[int], labels: list[int], n_loss: int) -> torch.Tensor:
    """One sequence's share of a step's mean loss. No padding and no attention mask, so attention takes its fused
    causal path; the LM head runs only on the positions that predict a token carrying loss (`logits_to_keep`):
    the same gradients as the loss over every position with the others ignored, with less compute."""
    targets = torch.tensor(labels[1:])
    keep = torch.nonzero(targets != IGNORE).flatten()
    logits = model(input_ids=torch.tensor([ids]), logits_to_keep=keep).logits[0]
    return torch.nn.functional.cross_entropy(logits, targets[keep], reduction="sum") / n_loss


def train_loop(
    model,
    examples: list[tuple[list[int], list[int]]],
    batches: Iterable[list[int]],
    lr_at: Callable[[int], float],
    desc: str = "training",
    after_step: Callable[[int], None] | None = None,
    progress: bool = True,
) -> list[float]:
    """Train the parameters of `model` that require gradients, one optimizer step per batch of example indices.

    A step's loss is the mean over the tokens of the batch that carry loss; gradients are clipped to norm 1, the
    step's learning rate is `lr_at(step)`. `after_step(step)` runs right after every optimizer step (before the
    gradients are cleared). Returns the loss of each step; the model is left in eval mode.
    """
    batches = list(batches)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr_at(0), weight_decay=0.0)
    model.train()
    losses = []
    for step, batch in enumerate(tqdm(batches, desc=desc, unit="steps", disable=not progress)):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        n_loss = max(1, sum(sum(t != IGNORE for t in examples[i][1][1:]) for i in batch))
        total = 0.0
        for i in batch:
            loss = sequence_loss(model, *examples[i], n_loss)
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if after_step is not None:
            after_step(step)
        opt.zero_grad()
        losses.append(total)
    model.eval()
    return losses
