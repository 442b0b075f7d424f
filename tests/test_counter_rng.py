"""The counter-based uniform stream (fsparse/_src/engine/counter_rng.py): its definition
(plain Python), the torch path and the native fill agree bit for bit; slices are the
stream; the values look uniform and independent; bad slices raise."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fsparse import pruners
from fsparse._src.engine import counter_rng, native

KEYS = st.integers(0, 2**64 - 1)
STARTS = st.one_of(st.integers(0, 5000), st.integers(2**32 - 40, 2**32 + 40),
                   st.integers(0, 2**62))


def _torch_path(key: int, start: int, count: int) -> torch.Tensor:
    out = torch.empty(count)
    counter_rng._torch_fill(key, start, out)
    return out


@settings(max_examples=60, deadline=None)
@given(KEYS, STARTS, st.integers(0, 80))
def test_torch_path_and_native_fill_are_the_definition(key, start, count):
    want = torch.tensor([counter_rng.reference(key, start + i) for i in range(count)],
                        dtype=torch.float32)
    assert torch.equal(_torch_path(key, start, count), want)
    assert torch.equal(counter_rng.uniform(key, start, count), want)  # native where built
    positions = torch.arange(start, start + count).flip(0)
    assert torch.equal(counter_rng.values_at(key, positions), want.flip(0))


def test_native_fill_in_threads_across_a_block_boundary(native_path):
    """4M values from just below 2**32 (two block keys, two threads): the torch path's."""
    start, count = 2**32 - 1_000_003, 4_000_000
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert native.threads(count) == 2
        got = counter_rng.uniform(5, start, count)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(got, _torch_path(5, start, count))


def test_known_values():
    """Pinned (24-bit integers): the stream is part of the masks' reproducibility, so a
    changed hash fails here."""
    want = [15003720, 15683580, 8565762, 4551397]
    got = [counter_rng.reference(0, i) for i in range(3)] + [counter_rng.reference(2**40, 7)]
    assert [v * 2**24 for v in got] == want
    fast = counter_rng.uniform(0, 0, 3).tolist() + counter_rng.uniform(2**40, 7, 1).tolist()
    assert [v * 2**24 for v in fast] == want


def test_looks_uniform_and_independent():
    """1M values: each of 64 bins within 5 sigma; neighbours, and the same places of
    neighbouring keys, uncorrelated; 24 bits used."""
    n = 1 << 20
    x = counter_rng.uniform(123, 0, n).double()
    counts = torch.histc(x, bins=64, min=0.0, max=1.0)
    sigma = math.sqrt(n / 64)
    assert float((counts - n / 64).abs().max()) < 5 * sigma
    assert abs(float(x.mean()) - 0.5) < 5 * math.sqrt(1 / 12 / n)
    for other in (x.roll(1), counter_rng.uniform(124, 0, n).double(),
                  counter_rng.uniform(123, 1 << 32, n).double()):
        corr = float(torch.corrcoef(torch.stack([x, other]))[0, 1])
        assert abs(corr) < 5 / math.sqrt(n)
    low_bits = (x * 2**24).long() & 0xFF
    assert low_bits.unique().numel() == 256


@pytest.mark.parametrize("bad", [dict(key=-1), dict(key=2**64), dict(start=-3), dict(count=-1),
                                 dict(out=torch.empty(4, dtype=torch.float64)),
                                 dict(out=torch.empty(2, 2))])
def test_bad_slices_raise(bad):
    args = dict(key=1, start=0, count=4) | bad
    out = args.pop("out", None)
    with pytest.raises(ValueError, match="uniform: bad stream slice"):
        counter_rng.uniform(args["key"], args["start"], args["count"], out=out)


def test_random_masks_are_the_same_on_the_torch_path(monkeypatch):
    """random / static_random / SET on a 300k table: the native pass computes the stream
    in place; the torch path materializes it; the masks are equal bit for bit."""
    gen = torch.Generator().manual_seed(1)
    params = {"t": torch.randn(3000, 100, generator=gen), "b": torch.randn(7, generator=gen)}
    grads = {n: torch.randn(p.shape, generator=gen) for n, p in params.items()}

    def run() -> list[torch.Tensor]:
        out = []
        for pruner in (pruners.random(0.8, seed=3), pruners.static_random(0.6, seed=4),
                       pruners.set(0.7, update_every=1, drop_fraction=0.3, seed=5)):
            state = pruner.init(params)
            state, _ = pruner.update(state, params, grads=grads)
            out += [state.masks[n] for n in sorted(params)]
        return out

    fused = run()
    monkeypatch.setattr(native, "KERNELS", None)
    assert all(torch.equal(a, b) for a, b in zip(fused, run(), strict=True))
