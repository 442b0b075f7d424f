"""What the engine records about its masks (fsparse/_src/engine/mask_records.py): a mask on only
where another is, said only while both are what they were, and used by the revival checks."""

from __future__ import annotations

import gc

import pytest
import torch

from fsparse import pruners
from fsparse._src.engine import mask_records, native, pool
from fsparse._src.engine.scoring import AbsScores
from fsparse._src.engine.selection import select_scores
from fsparse.pruners import _ranked


def _pair():
    old = torch.rand(1000, generator=torch.Generator().manual_seed(0)) < 0.5
    return old, old & (torch.arange(1000) % 3 == 0)


def test_a_record_holds_for_the_masks_and_their_views():
    old, new = _pair()
    assert not mask_records.within(new, old)
    mask_records.record_within(new, old)
    assert mask_records.within(new, old)
    assert mask_records.within(new.view(10, 100), old.view(100, 10))  # the same memory
    assert not mask_records.within(old, new)  # the other way round is not recorded
    assert not mask_records.within(new, old.clone())  # another old mask
    assert not mask_records.within(new[1:], old[1:])  # other elements


@pytest.mark.parametrize("write", ["new", "old", "view"])
def test_a_mask_written_in_place_ends_the_record(write):
    old, new = _pair()
    mask_records.record_within(new, old)
    {"new": lambda: new.fill_(True), "old": lambda: old.fill_(False),
     "view": lambda: new.view(10, 100)[3].fill_(True)}[write]()
    assert not mask_records.within(new, old)


def test_a_freed_mask_ends_the_record_even_at_the_same_address(native_path):
    old = torch.ones(40 << 20, dtype=torch.bool)
    new = pool.empty((40 << 20,), torch.bool)  # recycled memory: a later one reuses it
    new.fill_(False)
    mask_records.record_within(new, old)
    assert mask_records.within(new, old)  # the pool's memory is followed like any other
    address = new.data_ptr()
    del new
    gc.collect()
    again = pool.empty((40 << 20,), torch.bool)
    assert again.data_ptr() == address  # the pool hands the same block back
    again.fill_(True)
    assert not mask_records.within(again, old)


def test_nothing_is_recorded_for_what_it_cannot_follow():
    old, new = _pair()
    mask_records.record_within(new[::2], old[::2])  # not contiguous
    assert not mask_records.within(new[::2], old[::2])
    with torch.inference_mode():
        a, b = torch.ones(8, dtype=torch.bool), torch.zeros(8, dtype=torch.bool)
    mask_records.record_within(b, a)  # inference tensors keep no version counter
    assert not mask_records.within(b, a)


def test_the_engine_records_a_keyed_selection_and_the_search_is_spared(native_path):
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(600, 1000, generator=gen)
    old = torch.rand(600, 1000, generator=gen) < 0.6
    new = select_scores({"w": AbsScores(w).keyed(old)}, 0.7)["w"]
    assert not bool((new & ~old).any())
    assert mask_records.within(new, old)
    searched = []
    real = native.any_gains
    try:
        native.any_gains = lambda pairs: searched.append(len(pairs)) or real(pairs)
        assert not _ranked.any_revives([(old, new)])
        assert not _ranked.revives(old, new)
        assert _ranked.any_revives([(new, old)])  # not recorded: searched, and it does
    finally:
        native.any_gains = real
    assert searched == [1]


def test_a_selection_that_brings_pruned_weights_back_is_not_recorded():
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(600, 1000, generator=gen)
    old = torch.rand(600, 1000, generator=gen) < 0.3  # 70% pruned, the level asks for 50%
    new = select_scores({"w": AbsScores(w).keyed(old)}, 0.5)["w"]
    assert bool((new & ~old).any())
    assert not mask_records.within(new, old)
    assert _ranked.revives(old, new)


def test_gradual_pruning_restarts_exactly_the_weights_that_come_back():
    """Through the pruners: an update from a state sparser than its level brings weights
    back (searched and zeroed), one that prunes more brings none (recorded)."""
    gen = torch.Generator().manual_seed(3)
    params = {"w": torch.randn(700, 800, generator=gen)}
    pruner = pruners.magnitude(0.5)
    state = pruner.init(params)
    sparse = state.replace(masks={"w": torch.rand(700, 800, generator=gen) < 0.2})
    new, _ = pruner.update(sparse, params)
    back = new.masks["w"] & ~sparse.masks["w"]
    assert bool(back.any()) and not mask_records.within(new.masks["w"], sparse.masks["w"])
    assert torch.equal(pruners.activated(sparse, new)["w"], back)
    dense_first, _ = pruner.update(state, params)
    assert not _ranked.revives(state.masks["w"], dense_first.masks["w"])


def test_a_global_ramp_step_is_recorded_for_every_tensor(native_path):
    """create's gradual global magnitude: each update after the first prunes more, so the
    revival check over all the tensors needs no search."""
    gen = torch.Generator().manual_seed(5)
    params = {f"w{i}": torch.randn(300 + 50 * i, 400, generator=gen) for i in range(4)}
    pruner = pruners.global_magnitude(0.8, end_step=4)
    state, _ = pruner.update(pruner.init(params), params)
    state, _ = pruner.update(state, params)
    new, _ = pruner.update(state, params)
    pairs = [(state.masks[n], new.masks[n]) for n in params]
    assert all(mask_records.within(m, o) for o, m in pairs)
    searched = []
    real = native.any_gains
    try:
        native.any_gains = lambda p: searched.append(p) or real(p)
        assert not _ranked.any_revives(pairs)
    finally:
        native.any_gains = real
    assert searched == []


def test_a_kept_count_holds_for_the_same_group_only():
    old, new = _pair()
    other = torch.ones(5, dtype=torch.bool)
    mask_records.record_kept([new, old], 7)
    assert mask_records.kept([new, old]) == 7
    assert mask_records.kept([new.view(10, 100).reshape(-1), old]) == 7  # the same memory
    assert mask_records.kept([old, new]) is None  # another order: another group
    assert mask_records.kept([new]) is None and mask_records.kept([new, old, other]) is None
    old[0] = not bool(old[0])
    assert mask_records.kept([new, old]) is None  # written in place


def test_the_next_update_reads_the_count_the_pass_recorded(native_path):
    """A gradual global update counts its pruned places only when no pass recorded them;
    a wrong record could only slow it down (the masks stay the exact selection)."""
    gen = torch.Generator().manual_seed(6)
    params = {f"w{i}": torch.randn(300 + 50 * i, 400, generator=gen) for i in range(4)}
    pruner = pruners.global_magnitude(0.8, end_step=4)
    first, _ = pruner.update(pruner.init(params), params)
    state, _ = pruner.update(first, params)
    flat = [state.masks[n].reshape(-1) for n in params]
    total = sum(m.numel() for m in flat)
    assert mask_records.kept(flat) == sum(int(m.sum()) for m in flat)
    counted = []
    real = native.count_all
    try:
        native.count_all = lambda masks: counted.append(len(masks)) or real(masks)
        new, _ = pruner.update(state, params)
        assert counted == []  # the record answered
        mask_records.record_kept(flat, total // 3)  # a wrong count: the bracket misses
        again, _ = pruner.update(state, params)
    finally:
        native.count_all = real
    for n in params:
        assert torch.equal(again.masks[n], new.masks[n])
    fresh = {n: m.clone() for n, m in state.masks.items()}  # no record: counted
    want, _ = pruner.update(state.replace(masks=fresh), params)
    assert all(torch.equal(want.masks[n], new.masks[n]) for n in params)


def test_traced_masks_are_never_looked_up():
    """Under torch.func a mask has no data pointer of its own: nothing is recorded or
    found, and the revival check still answers."""
    old, new = _pair()
    mask_records.record_within(new, old)

    def check(o: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        assert not mask_records.within(m, o) and mask_records.kept([m]) is None
        mask_records.record_within(m, o)
        mask_records.record_kept([m], 1)
        return o & m

    torch.func.vmap(check)(old.view(10, 100), new.view(10, 100))
    assert mask_records.within(new, old)


@pytest.mark.parametrize("level, recorded", [(0.7, True), (0.5, False)])
def test_the_torch_path_records_what_it_has_shown(level, recorded, torch_path):
    """Without the kernels the masks are the same, and so are the records: within the old
    masks when every pruned place stays pruned, and the count kept."""
    gen = torch.Generator().manual_seed(7)
    w = torch.randn(600, 1000, generator=gen)
    old = torch.rand(600, 1000, generator=gen) < 0.4  # 60% pruned
    new = select_scores({"w": AbsScores(w).keyed(old)}, level)["w"]
    assert bool((new & ~old).any()) is not recorded
    assert mask_records.within(new, old) is recorded
    assert mask_records.kept([new.reshape(-1)]) == int(new.sum())
