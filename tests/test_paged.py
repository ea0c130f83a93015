"""bitsandbytes' paged optimizer state is given back between adapters: its own buffer list, in this process, is
emptied of every buffer no optimizer holds any more, so the second adapter starts from the memory the first did."""

from __future__ import annotations

import pytest
import torch

from ragdistill.method.student.paged import paged_buffers, paged_bytes, release_paged_state

pytest.importorskip("bitsandbytes")


def test_the_second_adapters_optimizer_starts_from_the_memory_of_the_first():
    from bitsandbytes.functional import GlobalPageManager

    manager = GlobalPageManager.get_instance()
    assert paged_buffers() is manager.paged_tensors
    before = paged_bytes()
    freed: list[int] = []

    def first_adapter():
        # What a paged optimizer does per parameter (bitsandbytes' get_state_buffer): a buffer in the global list,
        # and one in its own state. On CPU a plain tensor stands in for the managed allocation.
        state = {}
        for n in range(2):
            buffer = torch.zeros(1000, 100)
            manager.paged_tensors.append(buffer)
            state[n] = buffer
        return state

    optimizer_state = first_adapter()
    assert paged_bytes() == before + 2 * 1000 * 100 * 4
    # While the optimizer lives, its buffers are in use: nothing is freed.
    assert release_paged_state(free=freed.append) == 0 and not freed
    pointers = sorted(t.data_ptr() for t in optimizer_state.values())
    del optimizer_state  # the trainer and its optimizer are gone
    assert release_paged_state(free=freed.append) == 2 * 1000 * 100 * 4
    assert sorted(freed) == pointers and paged_bytes() == before
    second = first_adapter()
    assert paged_bytes() == before + 2 * 1000 * 100 * 4  # the same as the first adapter saw, not twice
    del second
    release_paged_state(free=freed.append)
    assert paged_bytes() == before
