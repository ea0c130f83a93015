"""In-process generation that reuses KV caches across an episode's turns: the "reuse" and "batched-reuse" modes of
local.TransformersBackend (a chat prefills only what its stored cache lacks; batched rows decode together over one
padded batch cache, in `lanes` threads)."""

from __future__ import annotations

import threading

import torch

from ragdistill.generation.completion import GREEDY, Completion
from ragdistill.generation.kvstore import (
    CacheEntry,
    buffer_layer,
    cache_nbytes,
    copied,
    longest_shared,
    usable_positions,
)
from ragdistill.generation.prefill import prefill_together


def in_threads(fn, args: list) -> list:
    """`fn(a)` for each of `args`, each in a thread of its own started for it, with the caller's torch thread count
    (a new thread would take the library's default, often every core, and the threads would fight over them)."""
    threads, out, errors = torch.get_num_threads(), [None] * len(args), []

    def run(i: int) -> None:
        torch.set_num_threads(threads)
        try:
            out[i] = fn(args[i])
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller
            errors.append(exc)

    started = [threading.Thread(target=run, args=(i,), name=f"lane-{i}") for i in range(len(args))]
    for t in started:
        t.start()
    for t in started:
        t.join()
    if errors:
        raise errors[0]
    return out


class KVCacheDecoding:
    """The cache-reusing modes of TransformersBackend, which holds the model (`loaded`), the tokenizer (`tok`), the
    KV store (`store`), `lanes`, `batch_prefill` and `stats`."""

    def _generate_reusing(self, chat: list[dict], max_new_tokens: int, stop: list[str] | None) -> Completion:
        prompt = self.prompt_ids(chat)
        cache = self.store.take(prompt)
        cached = cache.get_seq_length() if cache is not None else 0
        ids = torch.tensor([prompt], device=self.loaded.device)
        # The whole prompt goes in; generate feeds the model only the tokens past the cache's length.
        out = self.loaded.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            past_key_values=cache,
            max_new_tokens=max_new_tokens,
            pad_token_id=self.tok.pad_token_id,
            eos_token_id=sorted(self.eos_ids),
            return_dict_in_generate=True,
            **GREEDY,
        )
        row = out.sequences[0].tolist()
        kept = out.past_key_values
        # The last generated token was never fed back, so the cache holds one token fewer than the row.
        self.store.keep(row[: kept.get_seq_length()], len(prompt), kept)
        self.stats.chats += 1
        self.stats.prompt_tokens += len(prompt)
        self.stats.prefilled_tokens += len(prompt) - cached
        self.stats.reused_chats += cached > 0
        return self._completion(len(prompt), row[len(prompt) :], stop)

    def _plain_caches(self) -> bool:
        """Whether this model's cache is all full-attention layers (what cropping and padding by position need)."""
        if not hasattr(self, "_plain"):
            from transformers import DynamicCache
            from transformers.cache_utils import DynamicLayer

            self._plain = all(type(layer) is DynamicLayer for layer in DynamicCache(config=self.loaded.model.config).layers)
        return self._plain

    def _generate_batch_reusing(self, chats, max_new_tokens, stop) -> list[Completion]:
        """Prefill each chat's uncached tokens on its own, then decode the whole batch in one greedy loop (with
        `lanes` > 1: the rows split into that many groups, each prefilled and decoded in its own thread)."""
        if not self._plain_caches():  # sliding-window or other layers: no per-position cache surgery
            return [self._generate_reusing(chat, max_new_tokens, stop) for chat in chats]
        prompts = [self.prompt_ids(c) for c in chats]
        # The stored caches are looked up here, in order, so that what each row starts from does not depend on
        # which lane runs first. A row may copy a shared prefix (the system prompt) from one taken before it.
        caches, taken = [], []
        for prompt in prompts:
            cache = self.store.take(prompt, copy_only=taken)
            caches.append(cache)
            if cache is not None:
                taken.append(CacheEntry(prompt[: cache.get_seq_length()], cache.get_seq_length(), cache))
        del taken
        groups = [list(range(lane, len(prompts), self.lanes)) for lane in range(min(self.lanes, len(prompts)))]
        budget = self.store.budget // len(groups)  # the lanes' batch caches live at the same time

        def lane(rows: list[int]):
            return self._rows_reusing([prompts[i] for i in rows], [caches[i] for i in rows], max_new_tokens, budget)

        if len(groups) == 1:
            answered = [lane(groups[0])]
        else:
            answered = in_threads(lane, groups)
        gen: list[list[int]] = [[] for _ in prompts]
        for rows, (lane_gen, lane_cached) in zip(groups, answered):
            for i, row, cached in zip(rows, lane_gen, lane_cached):
                gen[i] = row
                self.stats.chats += 1
                self.stats.prompt_tokens += len(prompts[i])
                self.stats.prefilled_tokens += len(prompts[i]) - cached
                self.stats.reused_chats += cached > 0
        return [self._completion(len(prompt), row, stop) for prompt, row in zip(prompts, gen)]

    @torch.no_grad()  # grad mode is per thread: a lane does not inherit the caller's
    def _rows_reusing(self, prompts: list[list[int]], caches: list, max_new_tokens: int, budget: int):
        """Greedy tokens for each prompt (its first EOS included), starting from its cache (None: nothing
        stored), and the prompt tokens each one found cached. The caches are stored again for the next turn."""
        from transformers import DynamicCache

        model, dev = self.loaded.model, self.loaded.device
        gen: list[list[int]] = [[] for _ in prompts]
        found, prefilled = [0] * len(prompts), []
        fresh = [k for k, cache in enumerate(caches) if cache is None] if self.batch_prefill else []
        if len(fresh) > 1:  # nothing stored for these: one batch, their shared prefix computed once
            first, made, shared = prefill_together(model, [prompts[k] for k in fresh], dev, self.tok.pad_token_id)
            for n, (k, token, cache) in enumerate(zip(fresh, first, made)):
                caches[k], gen[k], found[k] = cache, [token], shared if n else 0
                prefilled.append(CacheEntry(prompts[k], len(prompts[k]), cache))
        for k, prompt in enumerate(prompts):
            if gen[k]:
                continue
            cache = caches[k]
            cached = cache.get_seq_length() if cache is not None else 0
            # A chat of this lane prefilled just before may share more (the first call: one system prompt).
            best, common = longest_shared(prompt, prefilled)
            if best is not None and usable_positions(prompt, common) > cached:
                cache = copied(best, usable_positions(prompt, common))
                cached = cache.get_seq_length()
            if cache is None:
                cache = DynamicCache(config=model.config)
            logits = model(
                input_ids=torch.tensor([prompt[cached:]], device=dev),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long, device=dev),
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            ).logits
            caches[k], gen[k], found[k] = cache, [int(logits[0, -1].argmax())], cached
            prefilled.append(CacheEntry(prompt, len(prompt), cache))
        del prefilled

        def finished(i: int) -> bool:
            return gen[i][-1] in self.eos_ids or len(gen[i]) >= max_new_tokens

        live = [i for i in range(len(prompts)) if not finished(i)]
        for group in self._decode_groups(live, caches, max_new_tokens, budget):
            self._decode_together(group, caches, gen, finished, max_new_tokens)
        for i, prompt in enumerate(prompts):
            # The last generated token was never fed back, so the cache holds one token fewer than the row.
            self.store.keep(prompt + gen[i][:-1], len(prompt), caches[i])
        return gen, found

    def _decode_groups(self, live: list[int], caches, max_new_tokens: int, budget: int) -> list[list[int]]:
        """The rows to decode together: all of them when their padded batch cache fits `budget` bytes, else
        groups of rows of similar length (shortest first), each within it."""
        if not live:
            return []
        lengths = {i: caches[i].get_seq_length() for i in live}
        per_token = max(cache_nbytes(caches[i]) / max(lengths[i], 1) for i in live)

        def padded(rows: list[int]) -> float:
            return len(rows) * (max(lengths[i] for i in rows) + max_new_tokens) * per_token

        if padded(live) <= budget:
            return [live]
        groups: list[list[int]] = [[]]
        for i in sorted(live, key=lengths.get):
            if groups[-1] and padded(groups[-1] + [i]) > budget:
                groups.append([])
            groups[-1].append(i)
        return groups

    def _decode_together(self, live, caches, gen, finished, max_new_tokens: int) -> None:
        """Greedy decoding of the chats `live` over one batch cache, left-padded to the longest.

        Each row's pad positions are masked out and its position ids continue from its own length, so every
        row computes what it would alone. A row that ends leaves the batch with its own keys and values
        (padding stripped) put back in `caches[i]`; the rest move to a narrower batch cache.
        """
        from transformers import DynamicCache

        model, dev = self.loaded.model, self.loaded.device
        steps = max(max_new_tokens - len(gen[i]) for i in live)  # forward passes left at most
        lengths = [caches[i].get_seq_length() for i in live]  # cached tokens: the prompt, then fed tokens
        width = max(lengths)
        pads = [width - n for n in lengths]
        batch = DynamicCache()
        batch.layers = [
            buffer_layer().stacked([caches[i].layers[n] for i in live], pads, width + steps)
            for n in range(len(caches[live[0]].layers))
        ]
        for i in live:
            caches[i] = None  # free the per-chat copies while the batch decodes
        while live:
            seen = batch.get_seq_length()
            mask = torch.ones(len(live), seen + 1, dtype=torch.long, device=dev)
            for row, pad in enumerate(pads):
                mask[row, :pad] = 0
            logits = model(
                input_ids=torch.tensor([[gen[i][-1]] for i in live], device=dev),
                attention_mask=mask,
                position_ids=torch.tensor([[seen - pad] for pad in pads], device=dev),
                past_key_values=batch,
                use_cache=True,
            ).logits
            for i, token in zip(live, logits[:, -1].argmax(-1).tolist()):
                gen[i].append(token)
            done = [row for row, i in enumerate(live) if finished(i)]
            if not done:
                continue
            for row in done:
                caches[live[row]] = DynamicCache(ddp_cache_data=[layer.row(row, pads[row]) for layer in batch.layers])
            keep = [row for row in range(len(live)) if row not in done]
            live = [live[row] for row in keep]
            if live:
                cut = min(pads[row] for row in keep)  # padding every remaining row has: drop it
                pads = [pads[row] - cut for row in keep]
                steps = max(max_new_tokens - len(gen[i]) for i in live)
                for layer in batch.layers:
                    layer.select(keep, cut, steps)
