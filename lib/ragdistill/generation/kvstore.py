"""The KV cache store of in-process generation: each live chat's keys and values, kept for its next turn
within a byte budget, and dropped as soon as its episode ends."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import cache

import torch

# Share of the device memory free when a backend is created that its store may hold. While a batch decodes,
# the chats' caches also live in one padded batch cache (bounded by the same budget), so about twice this
# share is in use at the peak; the rest is left to activations and the allocator's slack.
STORE_SHARE_CUDA = 0.4
STORE_SHARE_CPU = 0.25


@dataclass
class CacheEntry:
    """A chat's keys and values: `ids` are the tokens the cache holds, the first `prompt_len` of them its prompt."""

    ids: list[int]
    prompt_len: int
    cache: object  # a transformers DynamicCache
    nbytes: int = 0


def cache_nbytes(cache) -> int:
    """Memory held by one DynamicCache's keys and values."""
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers if getattr(layer, "keys", None) is not None)


def free_memory(device: torch.device) -> int:
    """Bytes free on the device now: CUDA's own count, or the RAM the OS reports as available."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        # A process held to a share of the card (set_per_process_memory_fraction) has only that share.
        fraction = getattr(torch.cuda, "get_per_process_memory_fraction", lambda _: 1.0)(device)
        return max(0, min(free, int(fraction * total) - torch.cuda.memory_reserved(device)))
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # psutil comes with accelerate; this is for a bare environment
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def default_budget(device: torch.device) -> int:
    """The store's budget on a device: a share of what is free there now (after the model was loaded)."""
    share = STORE_SHARE_CUDA if device.type == "cuda" else STORE_SHARE_CPU
    return int(share * free_memory(device))


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def longest_shared(prompt: list[int], entries) -> tuple[CacheEntry | None, int]:
    """The entry sharing the longest token prefix with `prompt` (None if none shares any), and its length."""
    best, common = None, 0
    for entry in entries:
        n = _common_prefix(entry.ids, prompt)
        if n > common:
            best, common = entry, n
    return best, common


def usable_positions(prompt: list[int], common: int) -> int:
    """Positions of a shared prefix a cache for `prompt` may hold: the model needs at least one new token to run."""
    return min(common, len(prompt) - 1)


def copied(entry: CacheEntry, usable: int):
    """A new cache with the first `usable` positions of the entry's keys and values."""
    from transformers import DynamicCache

    layers = [(layer.keys[..., :usable, :].clone(), layer.values[..., :usable, :].clone()) for layer in entry.cache.layers]
    return DynamicCache(ddp_cache_data=layers)


class KVStore:
    """Caches of chats between their turns, least recently written dropped first once over `budget` bytes.

    An evicted chat is not wrong, only slower: its next turn prefills its whole prompt again. Safe to share
    between threads (the lanes of `TransformersBackend`): every change holds one lock.
    """

    def __init__(self, budget: int):
        if budget < 0:
            raise ValueError(f"cache budget must be >= 0 bytes, not {budget}")
        self.budget = budget
        self.entries: list[CacheEntry] = []  # oldest write first
        self.peak_bytes = 0
        self.evicted = 0  # entries dropped to stay within the budget
        self.released = 0  # entries dropped because their episode ended
        self.lock = threading.RLock()

    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()

    def take(self, prompt: list[int], copy_only: list[CacheEntry] = ()):
        """A cache holding a prefix of `prompt` (at least one prompt token left out), or None.

        The entry with the longest common prefix wins. When the prompt extends that entry's own prompt (the next
        turn of the same chat), the entry is taken out of the store and cropped. When it shares less (another
        episode with the same system prompt), the shared keys and values are copied and the entry stays for the
        chat it belongs to. Entries in `copy_only` (other chats of the batch being prefilled) are only copied from.
        """
        with self.lock:
            best, common = longest_shared(prompt, [*self.entries, *copy_only])
            usable = usable_positions(prompt, common)
            if best is None or usable <= 0:
                return None
            if common >= best.prompt_len and any(e is best for e in self.entries):
                self.entries.remove(best)
                kv = best.cache
                if kv.get_seq_length() > usable:
                    kv.crop(usable - kv.get_seq_length())  # a negative count: remove that many positions from the end
                return kv
            return copied(best, usable)  # under the lock: no other thread crops the entry while it is copied

    def keep(self, ids: list[int], prompt_len: int, kv) -> None:
        """Store a chat's cache for its next turn, then evict the oldest entries until within the budget."""
        if not keepable(kv):
            return
        entry = CacheEntry(ids, prompt_len, kv, cache_nbytes(kv))
        with self.lock:
            if entry.nbytes > self.budget:  # would evict everything else and still not fit
                self.evicted += 1
                return
            self.entries.append(entry)
            total = self.nbytes()
            while total > self.budget:
                total -= self.entries.pop(0).nbytes
                self.evicted += 1
            self.peak_bytes = max(self.peak_bytes, total)

    def release(self, prompt: list[int]) -> int:
        """Drop the entries of a chat whose last prompt was `prompt` (its episode ended); returns how many."""
        n = len(prompt)
        with self.lock:
            gone = [e for e in self.entries if len(e.ids) >= n and e.ids[:n] == prompt]
            self.entries = [e for e in self.entries if not any(e is g for g in gone)]
            self.released += len(gone)
        return len(gone)


def keepable(kv) -> bool:
    """Only plain full-attention layers can be cropped and copied by position; anything else is not kept."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    return isinstance(kv, DynamicCache) and all(type(layer) is DynamicLayer for layer in kv.layers)


@cache
def buffer_layer():
    """The class below, built on first use (transformers is imported lazily)."""
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
