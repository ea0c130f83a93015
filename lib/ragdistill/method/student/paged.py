"""bitsandbytes' paged optimizer state, given back between adapters.

A paged optimizer (stage 05's `paged_adamw_8bit` on CUDA) keeps each state buffer in CUDA managed memory that
bitsandbytes allocates itself (`cudaMallocManaged`), lists in a process-wide `GlobalPageManager`, and never frees:
deleting the trainer leaves every buffer allocated, so a second adapter trained in the same process (stage 05
trains two, bench/gpu_check.py four) would start with the first one's optimizer state still on the card.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Callable

# References a buffer has while only the manager's list holds it, counted inside `release_paged_state`: the
# list, the loop variable and getrefcount's own argument.
_ONLY_LISTED = 3


def _cuda_free(pointer: int) -> None:
    """cudaFree from the CUDA runtime bitsandbytes itself linked (already loaded in this process)."""
    for name in ("libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so"):
        try:
            runtime = ctypes.CDLL(name)
        except OSError:
            continue
        runtime.cudaFree(ctypes.c_void_p(pointer))
        return


def paged_buffers() -> list:
    """The paged buffers bitsandbytes holds now (empty when it is not installed)."""
    try:
        from bitsandbytes.functional import GlobalPageManager
    except Exception:  # noqa: BLE001 - no bitsandbytes, or one that cannot load: nothing is paged
        return []
    return GlobalPageManager.get_instance().paged_tensors


def paged_bytes() -> int:
    """Bytes of paged optimizer state bitsandbytes holds now."""
    return sum(t.nbytes for t in paged_buffers())


def release_paged_state(free: Callable[[int], None] = _cuda_free) -> int:
    """Free every paged buffer that nothing but bitsandbytes' list still uses (its optimizer is gone) and drop it
    from the list; returns the bytes freed. A buffer an optimizer still holds is kept."""
    buffers = paged_buffers()
    kept, freed = [], 0
    for t in list(buffers):
        if sys.getrefcount(t) > _ONLY_LISTED + 1:  # + 1: the copy of the list this loop walks
            kept.append(t)
            continue
        freed += t.nbytes
        free(t.data_ptr())
    buffers[:] = kept  # in place: optimizers hold the manager, not a copy of its list
    return freed
