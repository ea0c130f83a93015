"""Chat backends with one interface: a batch of chats in, texts with exact token counts out."""

from __future__ import annotations

import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import Protocol

import torch

from .models import LoadedModel


@dataclass
class Completion:
    """One answer: its text and what it cost in tokens."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of turn or a stop string) or "length"


class BackendError(RuntimeError):
    """The backend could not answer; the message says what to check."""


class ChatBackend(Protocol):
    name: str

    def generate(self, chats: list[list[dict]], max_new_tokens: int = 64, stop: list[str] | None = None) -> list[Completion]:
        ...


def _cut_at_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    if not stop:
        return text, False
    cuts = [text.find(s) for s in stop if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


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


@dataclass
class _CacheEntry:
    """A chat's keys and values: `ids` are the tokens the cache holds, the first `prompt_len` of them its prompt."""

    ids: list[int]
    prompt_len: int
    cache: object  # a transformers DynamicCache


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


MODES = ("batched", "reuse", "batched-reuse")


class TransformersBackend:
    """In-process generation, in one of three modes (`mode`).

    "batched" (the default on CUDA): left-padded batches, one forward pass per new token for all live chats.
    "reuse": chats one at a time, each starting from the stored KV cache that shares the longest token
    prefix with its prompt, so a chat that extends an earlier one (the next step of an episode) prefills
    only its new turn instead of the whole episode.
    "batched-reuse" (the default on CPU, where rollouts are prefill-bound and a decoding step costs about
    the same at batch 1 as at batch 4): each chat of a batch finds its cache and prefills its new tokens
    as in "reuse", then all of them decode together over one left-padded batch cache, and each chat's
    keys and values are cut back out of it (padding stripped) for its next turn.
    Greedy outputs and the token counts of each Completion are the same in every mode.

    The store keeps at most `max_cached` entries (default 2 x batch_size), least recently written dropped
    first: rollouts send at most batch_size chats per call, so the entries written by the last two calls,
    which include every live episode's, always fit. An entry costs 2 (keys, values) x layers x KV heads x
    head dim x bytes per value, per token: SmolLM2-135M in float32, 30 x 3 x 64, is 45 KiB per token, so
    about 90 MB for a 2,000-token episode; `cache_bytes()` gives the store's current size. While a batch
    decodes in "batched-reuse", its chats' caches live in one padded batch cache instead (copied in, the
    per-chat tensors let go), with room reserved for max_new_tokens more positions.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        batch_size: int = 8,
        reuse_cache: bool | None = None,
        max_cached: int | None = None,
        mode: str | None = None,
    ):
        """`mode` picks one of MODES; without it, `reuse_cache` True/False means "reuse"/"batched", and
        neither means the device's default ("batched-reuse" on CPU, "batched" elsewhere)."""
        self.loaded = loaded
        self.tok = loaded.tokenizer
        self.batch_size = batch_size
        if mode is None:
            if reuse_cache is None:
                mode = "batched-reuse" if loaded.device.type == "cpu" else "batched"
            else:
                mode = "reuse" if reuse_cache else "batched"
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: pick one of {', '.join(MODES)}")
        self.mode = mode
        self.max_cached = max_cached if max_cached is not None else 2 * batch_size
        self.name = f"transformers:{loaded.profile.name}"
        self.eos_ids = self._eos_ids()
        self.stats = GenerationStats()
        self._store: list[_CacheEntry] = []  # oldest write first

    @property
    def reuse_cache(self) -> bool:
        """Whether chats start from stored KV caches (modes "reuse" and "batched-reuse")."""
        return self.mode != "batched"

    def _eos_ids(self) -> set[int]:
        ids = {self.tok.eos_token_id}
        gen_eos = self.loaded.model.generation_config.eos_token_id
        ids |= set(gen_eos) if isinstance(gen_eos, list) else {gen_eos}
        return {i for i in ids if i is not None}

    def prompt_ids(self, chat: list[dict]) -> list[int]:
        """The exact token ids the model reads for this chat (generation prompt included)."""
        return list(self.tok.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"])

    def count_completion_tokens(self, text: str, finish_reason: str) -> int:
        """Tokens of a logged output, plus the end-of-turn token when the model ended the turn itself."""
        return len(self.tok(text, add_special_tokens=False)["input_ids"]) + (finish_reason == "stop")

    def clear_cache(self) -> None:
        """Drop every stored KV cache (the next chats prefill in full)."""
        self._store.clear()

    def cache_bytes(self) -> int:
        """Memory held by the stored KV caches."""
        return sum(k.nbytes + v.nbytes for e in self._store for k, v in ((l.keys, l.values) for l in e.cache.layers))

    @torch.no_grad()
    def generate(self, chats: list[list[dict]], max_new_tokens: int = 64, stop: list[str] | None = None) -> list[Completion]:
        if self.mode == "reuse":
            return [self._generate_reusing(chat, max_new_tokens, stop) for chat in chats]
        step = self._generate_batch_reusing if self.mode == "batched-reuse" else self._generate_batch
        out: list[Completion] = []
        for start in range(0, len(chats), self.batch_size):
            out += step(chats[start : start + self.batch_size], max_new_tokens, stop)
        return out

    def _completion(self, prompt_len: int, new: list[int], stop: list[str] | None) -> Completion:
        """Text and token counts of one generated row (`new`: the tokens after the prompt)."""
        end = next((i for i, t in enumerate(new) if t in self.eos_ids), None)
        self.stats.generated_tokens += len(new) if end is None else end + 1
        text = self.tok.decode(new if end is None else new[:end], skip_special_tokens=True)
        text, stopped = _cut_at_stop(text, stop)
        reason = "stop" if end is not None or stopped else "length"
        # Counted from the text as logged, so anyone can recount it from the episode file.
        return Completion(text, prompt_len, self.count_completion_tokens(text, reason), reason)

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
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=sorted(self.eos_ids),
        )[:, width:].tolist()
        real = sum(len(p) for p in prompts)
        self.stats.chats += len(prompts)
        self.stats.prompt_tokens += real
        self.stats.prefilled_tokens += real
        self.stats.padding_tokens += width * len(prompts) - real
        return [self._completion(len(prompt), row, stop) for prompt, row in zip(prompts, generated)]

    def _take_cache(self, prompt: list[int], copy_only: list[_CacheEntry] = ()):
        """A cache holding a prefix of `prompt` (at least one prompt token left out), or None.

        The entry with the longest common prefix wins. When the prompt extends that entry's own prompt
        (the next turn of the same chat), the entry is taken out of the store and cropped. When it shares
        less (another episode with the same system prompt), the shared keys and values are copied and the
        entry stays for the chat it belongs to. Entries in `copy_only` (other chats of the batch being
        prefilled) are only ever copied from.
        """
        best, common = None, 0
        for entry in [*self._store, *copy_only]:
            n = _common_prefix(entry.ids, prompt)
            if n > common:
                best, common = entry, n
        usable = min(common, len(prompt) - 1)  # generate needs at least one new token to run
        if best is None or usable <= 0:
            return None
        if common >= best.prompt_len and any(e is best for e in self._store):
            self._store.remove(best)
            cache = best.cache
            if cache.get_seq_length() > usable:
                cache.crop(usable - cache.get_seq_length())  # this transformers release: a negative count to remove
            return cache
        from transformers import DynamicCache

        layers = [(layer.keys[..., :usable, :].clone(), layer.values[..., :usable, :].clone()) for layer in best.cache.layers]
        return DynamicCache(ddp_cache_data=layers)

    def _keep_cache(self, ids: list[int], prompt_len: int, cache) -> None:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        # Only plain full-attention layers can be cropped and copied by position; anything else is not kept.
        if not isinstance(cache, DynamicCache) or any(type(layer) is not DynamicLayer for layer in cache.layers):
            return
        self._store.append(_CacheEntry(ids, prompt_len, cache))
        while len(self._store) > self.max_cached:
            self._store.pop(0)

    def _generate_reusing(self, chat: list[dict], max_new_tokens: int, stop: list[str] | None) -> Completion:
        prompt = self.prompt_ids(chat)
        cache = self._take_cache(prompt)
        cached = cache.get_seq_length() if cache is not None else 0
        ids = torch.tensor([prompt], device=self.loaded.device)
        # The whole prompt goes in; generate feeds the model only the tokens past the cache's length.
        out = self.loaded.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            past_key_values=cache,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=self.tok.pad_token_id,
            eos_token_id=sorted(self.eos_ids),
            return_dict_in_generate=True,
        )
        row = out.sequences[0].tolist()
        kept = out.past_key_values
        # The last generated token was never fed back, so the cache holds one token fewer than the row.
        self._keep_cache(row[: kept.get_seq_length()], len(prompt), kept)
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
        """Prefill each chat's uncached tokens on its own, then decode the whole batch in one greedy loop."""
        from transformers import DynamicCache

        if not self._plain_caches():  # sliding-window or other layers: no per-position cache surgery
            return [self._generate_reusing(chat, max_new_tokens, stop) for chat in chats]
        model, dev = self.loaded.model, self.loaded.device
        prompts = [self.prompt_ids(c) for c in chats]
        caches, gen, prefilled = [], [], []
        for prompt in prompts:
            cache = self._take_cache(prompt, copy_only=prefilled)
            cached = cache.get_seq_length() if cache is not None else 0
            if cache is None:
                cache = DynamicCache(config=model.config)
            logits = model(
                input_ids=torch.tensor([prompt[cached:]], device=dev),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long, device=dev),
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            ).logits
            caches.append(cache)
            gen.append([int(logits[0, -1].argmax())])
            # Later chats of this batch may copy this one's prompt (the first call: one shared system prompt).
            prefilled.append(_CacheEntry(prompt, len(prompt), cache))
            self.stats.chats += 1
            self.stats.prompt_tokens += len(prompt)
            self.stats.prefilled_tokens += len(prompt) - cached
            self.stats.reused_chats += cached > 0
        del prefilled

        def finished(i: int) -> bool:
            return gen[i][-1] in self.eos_ids or len(gen[i]) >= max_new_tokens

        live = [i for i in range(len(prompts)) if not finished(i)]
        if live:
            self._decode_together(live, caches, gen, finished, max_new_tokens)
        for i, prompt in enumerate(prompts):
            # The last generated token was never fed back, so the cache holds one token fewer than the row.
            self._keep_cache(prompt + gen[i][:-1], len(prompt), caches[i])
        return [self._completion(len(prompt), row, stop) for prompt, row in zip(prompts, gen)]

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
            _buffer_layer().stacked([caches[i].layers[n] for i in live], pads, width + steps)
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


@cache
def _buffer_layer():
    """The class below, built on first use (transformers is imported lazily in this module)."""
    from transformers.cache_utils import DynamicLayer

    class _BufferLayer(DynamicLayer):
        """A full-attention cache layer that writes new tokens into room reserved up front.

        DynamicLayer concatenates on every token, copying the whole batch cache at each decoding step; here the
        batch is copied once when it is assembled (and when rows leave), and each step writes one position.
        """

        def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int):
            super().__init__()
            self._k, self._v, self._len = keys, values, length
            self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
            self._expose()

        @classmethod
        def stacked(cls, layers, pads: list[int], capacity: int):
            """Rows of single-chat layers, each right-aligned at the same width after `pads[row]` zeros."""
            first = layers[0].keys
            shape = (len(layers), first.shape[1], capacity, first.shape[3])
            keys = torch.zeros(shape, dtype=first.dtype, device=first.device)
            values = torch.zeros_like(keys)
            width = pads[0] + layers[0].keys.shape[-2]
            for row, (layer, pad) in enumerate(zip(layers, pads)):
                keys[row, :, pad:width] = layer.keys[0]
                values[row, :, pad:width] = layer.values[0]
            return cls(keys, values, width)

        def _expose(self) -> None:
            self.keys, self.values = self._k[:, :, : self._len], self._v[:, :, : self._len]

        def update(self, key_states, value_states, *args, **kwargs):
            new = key_states.shape[-2]
            if self._len + new > self._k.shape[-2]:  # out of reserved room: grow (not expected in a decoding loop)
                grow = max(new, self._k.shape[-2])
                self._k = torch.cat([self._k, self._k.new_zeros(*self._k.shape[:2], grow, self._k.shape[3])], dim=-2)
                self._v = torch.cat([self._v, self._v.new_zeros(*self._v.shape[:2], grow, self._v.shape[3])], dim=-2)
            self._k[:, :, self._len : self._len + new] = key_states
            self._v[:, :, self._len : self._len + new] = value_states
            self._len += new
            self._expose()
            return self.keys, self.values

        def row(self, row: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
            """One row's keys and values without its padding, as compact tensors of their own."""
            return self.keys[row : row + 1, :, pad:].clone(), self.values[row : row + 1, :, pad:].clone()

        def select(self, rows: list[int], cut: int, room: int) -> None:
            """Keep `rows`, drop the first `cut` positions (padding of every kept row), reserve `room` more."""
            index = torch.tensor(rows, device=self._k.device)
            length = self._len - cut
            keys = self._k.new_zeros(len(rows), self._k.shape[1], length + room, self._k.shape[3])
            values = torch.zeros_like(keys)
            keys[:, :, :length] = self.keys.index_select(0, index)[:, :, cut:]
            values[:, :, :length] = self.values.index_select(0, index)[:, :, cut:]
            self._k, self._v, self._len = keys, values, length
            self._expose()

    return _BufferLayer

class OpenAIBackend:
    """Any OpenAI-compatible server (OpenAI, vLLM, `transformers serve`), with retries and backoff."""

    RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 5,
        concurrency: int = 8,
        backoff: float = 1.0,
    ):
        import openai

        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        # The key comes from the environment only: never a notebook parameter (papermill would record it).
        key = os.environ.get(api_key_env) or "not-needed"
        self.client = openai.OpenAI(base_url=self.base_url, api_key=key, timeout=timeout, max_retries=0)
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.backoff = backoff
        self.name = f"openai:{model}@{self.base_url}"

    def _retryable(self, err: Exception) -> bool:
        import openai

        if isinstance(err, (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError)):
            return True
        return isinstance(err, openai.APIStatusError) and err.status_code in self.RETRY_STATUS

    def _explain(self, err: Exception) -> str:
        import openai

        if isinstance(err, openai.APIConnectionError):
            return (
                f"cannot reach the server at {self.base_url} ({type(err).__name__}). Is it running? "
                "Start one (e.g. `transformers serve <model folder> --host 127.0.0.1 --port 8000`) or fix base_url."
            )
        if isinstance(err, openai.AuthenticationError):
            return f"the server at {self.base_url} refused the API key: set it in the environment, not in a notebook."
        if isinstance(err, openai.NotFoundError):
            return f"the server at {self.base_url} does not serve model {self.model!r}: check `model`."
        return f"{type(err).__name__} from {self.base_url}: {err}"

    def _one(self, chat: list[dict], max_new_tokens: int, stop: list[str] | None, json_mode: bool) -> Completion:
        kwargs: dict = {"model": self.model, "messages": chat, "max_tokens": max_new_tokens, "temperature": 0.0}
        if stop:
            kwargs["stop"] = stop
        if json_mode:
            kwargs["response_format"] = {"type": "json_object"}
        for attempt in range(self.max_retries + 1):
            try:
                resp = self.client.chat.completions.create(**kwargs)
                break
            except Exception as err:  # noqa: BLE001 - sorted into retryable or not right here
                if not self._retryable(err) or attempt == self.max_retries:
                    raise BackendError(self._explain(err) + f" (after {attempt + 1} attempts)") from err
                time.sleep(self.backoff * 2**attempt * (0.5 + random.random()))
        choice = resp.choices[0]
        text, _ = _cut_at_stop(choice.message.content or "", stop)
        usage = resp.usage
        return Completion(
            text,
            usage.prompt_tokens if usage else 0,
            usage.completion_tokens if usage else 0,
            "length" if choice.finish_reason == "length" else "stop",
        )

    def generate(
        self, chats: list[list[dict]], max_new_tokens: int = 64, stop: list[str] | None = None, json_mode: bool = False
    ) -> list[Completion]:
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(chats)))) as pool:
            return list(pool.map(lambda c: self._one(c, max_new_tokens, stop, json_mode), chats))


def make_backend(cfg) -> tuple[object, str]:
    """The backend a rollout config asks for, and the model name to log with each episode."""
    if cfg.backend == "openai":
        backend = OpenAIBackend(cfg.api_model, base_url=cfg.base_url or None, concurrency=cfg.batch_size)
        return backend, cfg.api_model
    from .models import load_model

    loaded = load_model(cfg.profile, load_4bit=cfg.load_4bit)
    return TransformersBackend(loaded, batch_size=cfg.batch_size), f"{cfg.profile}:{loaded.profile.model_id}"
