"""In-process generation with transformers: left-padded batches, or KV caches reused across an episode's turns."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass

import torch

from ragdistill.generation.completion import GREEDY, Completion, cut_at_stop
from ragdistill.generation.kvstore import (
    CacheEntry,
    KVStore,
    buffer_layer,
    cache_nbytes,
    copied,
    default_budget,
    longest_shared,
    usable_positions,
)
from ragdistill.models.loading import LoadedModel, foldable, folded_adapter
from ragdistill.generation.prefill import prefill_together

MODES = ("batched", "reuse", "batched-reuse")


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


@dataclass
class GenerationStats:
    """What an in-process backend read and wrote, summed over its calls.

    `prompt_tokens` counts every chat's whole prompt (what an API would bill); `prefilled_tokens` only the
    prompt tokens the model actually computed (the rest came from a reused KV cache); `padding_tokens` the
    pad positions a left-padded batch computed as well; `generated_tokens` the tokens the model produced,
    end-of-turn token included, before any stop string cut the text.
    """

    chats: int = 0
    prompt_tokens: int = 0
    prefilled_tokens: int = 0
    padding_tokens: int = 0
    generated_tokens: int = 0
    reused_chats: int = 0  # chats that started from a stored cache

    @property
    def cached_tokens(self) -> int:
        return self.prompt_tokens - self.prefilled_tokens


class TransformersBackend:
    """In-process greedy generation, in one of three modes (`mode`).

    "batched-reuse" (the default on every device): each chat of a batch starts from the stored KV cache that
    shares the longest token prefix with its prompt, so a chat that extends an earlier one (the next step of an
    episode) prefills only its new turn instead of the whole episode; then all of them decode together over one
    left-padded batch cache, and each chat's keys and values are cut back out of it (padding stripped) for its
    next turn. An ALFWorld episode of 30-50 steps would otherwise re-read 55k-160k prompt tokens.
    "reuse": the same caches, chats one at a time. "batched": left-padded batches through `generate`, every
    prompt prefilled in full (nothing kept between calls).
    Greedy outputs and the token counts of each Completion are the same in every mode.

    The store keeps each live chat's cache within `cache_budget` bytes (default: a share of the memory free on
    the device when the backend is created, `kvstore.default_budget`), least recently written dropped first; a
    chat whose cache was dropped prefills in full. `release(chats)` drops the caches of episodes that ended.
    An entry costs 2 (keys, values) x layers x KV heads x head dim x bytes per value, per token: Qwen2.5-7B in
    bf16, 28 x 4 x 128, is 56 KiB per token (a 5,500-token episode: 300 MB); Qwen2.5-14B 192 KiB. While a batch
    decodes, its chats' caches live in one padded batch cache instead, with room for max_new_tokens more
    positions; rows that would not fit the budget together decode in several groups.

    `adapter` picks a LoRA adapter of a PEFT model loaded with several (`models.load_model(adapters=...)`):
    its name, "" for the base model with every adapter off, None for the model as loaded. With `fold` (the
    default) an adapter over float32 weights is folded into them for each call instead (`models.folded_adapter`:
    the same function, faster on a CPU; the weights are restored after the call).

    `lanes` (batched-reuse only) splits each batch's rows into that many groups (row i in group i % lanes), each
    prefilled and decoded in its own thread over the one model and store. On a CPU, where decoding a few rows
    is bound by reading the weights and one thread runs at a time through Python, the lanes keep every core
    busy (the `cpu` profile: 2). A row's tokens are what it would get alone, in any lane.

    `batch_prefill` (batched-reuse; default: on a GPU) prefills the chats of a call that have no stored cache (an
    episode's first step) as one batch, their shared prefix once (prefill.py), instead of one after another.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        batch_size: int = 8,
        mode: str = "batched-reuse",
        cache_budget: int | None = None,
        adapter: str | None = None,
        lanes: int = 1,
        fold: bool = True,
        batch_prefill: bool | None = None,
    ):
        """`mode` picks one of MODES ("batched" and "reuse" are the references the tests hold the default to)."""
        self.loaded = loaded
        self.tok = loaded.tokenizer
        self.batch_size = batch_size
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: pick one of {', '.join(MODES)}")
        self.mode = mode
        if lanes < 1:
            raise ValueError(f"lanes must be >= 1, not {lanes}")
        self.lanes = lanes
        # New chats of a batch prefilled together (prefill.py): on a GPU one pass instead of one per chat; on a CPU
        # the serial prefill costs the same arithmetic, and keeps the float32 `cpu` runs' episodes as they were.
        self.batch_prefill = loaded.device.type == "cuda" if batch_prefill is None else batch_prefill
        adapters = set(getattr(loaded.model, "peft_config", {}) or {})
        if adapter and adapter not in adapters:
            raise ValueError(
                f"adapter {adapter!r} is not loaded (loaded: {sorted(adapters) or 'none'}): load it with "
                "models.load_model(profile, adapters={name: folder})"
            )
        self.adapter = adapter
        self.fold = bool(adapter) and fold and foldable(loaded.model, adapter)
        self.store = KVStore(default_budget(loaded.device) if cache_budget is None else cache_budget)
        self.name = f"transformers:{loaded.profile.name}" + (f":{adapter}" if adapter else "")
        self.eos_ids = self._eos_ids()
        self.stats = GenerationStats()

    @property
    def weights(self):
        """The weights this backend plays on (weights.Weights): the loaded checkpoint and its quantization."""
        from ragdistill.models.weights import of_model

        return of_model(self.loaded.model, self.loaded.path)

    @property
    def reuses_caches(self) -> bool:
        """Whether chats start from stored KV caches (modes "reuse" and "batched-reuse")."""
        return self.mode != "batched"

    @property
    def _store(self) -> list[CacheEntry]:
        return self.store.entries

    def _eos_ids(self) -> set[int]:
        ids = {self.tok.eos_token_id}
        gen_eos = self.loaded.model.generation_config.eos_token_id
        ids |= set(gen_eos) if isinstance(gen_eos, list) else {gen_eos}
        return {i for i in ids if i is not None}

    def prompt_ids(self, chat: list[dict]) -> list[int]:
        """The exact token ids the model reads for this chat (generation prompt included)."""
        return list(self.tok.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"])

    def clear_cache(self) -> None:
        """Drop every stored KV cache (the next chats prefill in full)."""
        self.store.clear()

    def cache_bytes(self) -> int:
        """Memory held by the stored KV caches."""
        return self.store.nbytes()

    def close(self) -> None:
        """Nothing to stop in process; the caches go."""
        self.store.clear()

    def release(self, chats: list[list[dict]]) -> None:
        """The episodes whose last prompts these were have ended: drop their caches."""
        if self.reuses_caches:
            for chat in chats:
                self.store.release(self.prompt_ids(chat))

    def _adapter_context(self):
        """Make this backend's adapter the active one for the duration of a call: folded into float32 base
        weights for the call (`models.folded_adapter`), else active as a PEFT adapter."""
        model = self.loaded.model
        if self.adapter is None or not hasattr(model, "peft_config"):
            return contextlib.nullcontext()
        if self.adapter == "":
            return model.disable_adapter()
        if self.fold:
            return folded_adapter(model, self.adapter)
        model.set_adapter(self.adapter)
        return contextlib.nullcontext()

    @torch.no_grad()
    def generate(self, chats: list[list[dict]], max_new_tokens: int = 64, stop: list[str] | None = None) -> list[Completion]:
        with self._adapter_context():
            if self.mode == "reuse":
                return [self._generate_reusing(chat, max_new_tokens, stop) for chat in chats]
            step = self._generate_batch_reusing if self.mode == "batched-reuse" else self._generate_batch
            out: list[Completion] = []
            for start in range(0, len(chats), self.batch_size):
                out += step(chats[start : start + self.batch_size], max_new_tokens, stop)
            return out

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def _completion(self, prompt_len: int, new: list[int], stop: list[str] | None) -> Completion:
        """Text and token counts of one generated row (`new`: the tokens after the prompt)."""
        end = next((i for i, t in enumerate(new) if t in self.eos_ids), None)
        produced = new if end is None else new[: end + 1]
        self.stats.generated_tokens += len(produced)
        body = produced if end is None else produced[:-1]
        text, stopped = cut_at_stop(self._decode(body), stop)
        count, reason = len(produced), "length" if end is None else "stop"
        if stopped:
            # A server stops at the token that completes a stop string and counts up to it: so does this.
            count = next(k for k in range(1, len(body) + 1) if cut_at_stop(self._decode(body[:k]), stop)[1])
            reason = "stop"
        return Completion(text.strip(), prompt_len, count, reason)

    def _generate_batch(self, chats, max_new_tokens, stop) -> list[Completion]:
        prompts = [self.prompt_ids(c) for c in chats]
        width = max(len(p) for p in prompts)
        pad = self.tok.pad_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.loaded.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.loaded.device)
        generated = self.loaded.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad,
            eos_token_id=sorted(self.eos_ids),
            **GREEDY,
        )[:, width:].tolist()
        real = sum(len(p) for p in prompts)
        self.stats.chats += len(prompts)
        self.stats.prompt_tokens += real
        self.stats.prefilled_tokens += real
        self.stats.padding_tokens += width * len(prompts) - real
        return [self._completion(len(prompt), row, stop) for prompt, row in zip(prompts, generated)]

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
