"""In-process generation with transformers: the backend, its modes and its padded-batch mode (`generate` over
left-padded batches); the modes that reuse KV caches are local_cached.py's."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ragdistill.generation.completion import GREEDY, Completion, cut_at_stop
from ragdistill.generation.kvstore import CacheEntry, KVStore, default_budget
from ragdistill.generation.local_cached import KVCacheDecoding
from ragdistill.models.loading import LoadedModel, foldable, folded_adapter

MODES = ("batched", "reuse", "batched-reuse")


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


class TransformersBackend(KVCacheDecoding):
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
