"""New chats prefilled as one batch: the prefix they all share once, then every chat's own suffix together.

The first step of a batch of episodes finds no stored cache for any of them. Prefilled one at a time, 32 chats
are 32 forward passes that each keep a GPU mostly idle; here they are two: the shared prefix (the system prompt)
on one row, then the suffixes right-padded into one batch over copies of that prefix. Attention is causal, so the
padding after a row's last token changes none of its real positions: each row computes what it would alone, and
its cache keeps its own positions only.
"""

from __future__ import annotations

import torch

from ragdistill.generation.kvstore import _common_prefix


def shared_length(prompts: list[list[int]]) -> int:
    """The length of the token prefix every prompt shares, leaving each at least one token to prefill."""
    shared = min(_common_prefix(prompts[0], p) for p in prompts)
    return max(min(shared, min(len(p) for p in prompts) - 1), 0)


@torch.no_grad()
def prefill_together(model, prompts: list[list[int]], device, pad_id: int) -> tuple[list[int], list, int]:
    """The first greedy token of each prompt, a cache of each prompt's positions, and the length of the prefix
    computed once for all (two forward passes)."""
    from transformers import DynamicCache

    shared = shared_length(prompts)
    rows = len(prompts)
    batch = DynamicCache(config=model.config)
    if shared:
        prefix = DynamicCache(config=model.config)
        model(input_ids=torch.tensor([prompts[0][:shared]], device=device), past_key_values=prefix, use_cache=True,
              logits_to_keep=1)
        batch = DynamicCache(ddp_cache_data=[
            (layer.keys.expand(rows, -1, -1, -1).contiguous(), layer.values.expand(rows, -1, -1, -1).contiguous())
            for layer in prefix.layers
        ])
        del prefix
    suffixes = [p[shared:] for p in prompts]
    width = max(len(s) for s in suffixes)
    ids = torch.full((rows, width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros(rows, shared + width, dtype=torch.long, device=device)
    for r, suffix in enumerate(suffixes):
        ids[r, : len(suffix)] = torch.tensor(suffix, device=device)
        mask[r, : shared + len(suffix)] = 1
    last = torch.tensor([len(s) - 1 for s in suffixes], device=device)
    keep = torch.unique(last)  # the positions whose logits some row needs
    logits = model(input_ids=ids, attention_mask=mask, past_key_values=batch, use_cache=True,
                   position_ids=torch.arange(shared, shared + width, device=device).expand(rows, -1),
                   logits_to_keep=keep).logits
    column = torch.searchsorted(keep, last)
    first = logits[torch.arange(rows, device=device), column].argmax(-1).tolist()
    caches = [
        DynamicCache(ddp_cache_data=[(layer.keys[r : r + 1, :, : shared + len(s)].clone(),
                                      layer.values[r : r + 1, :, : shared + len(s)].clone()) for layer in batch.layers])
        for r, s in enumerate(suffixes)
    ]
    return [int(t) for t in first], caches, shared
