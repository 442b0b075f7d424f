"""Bit-packed masks: exact round trips, the bit order, sizes, and bad input."""

from __future__ import annotations

import io
import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.ao.pruning._experimental.data_sparsifier import DataNormSparsifier

import fsparse
from fsparse import load_masks, masks_state_dict, pack_mask, unpack_mask
from fsparse._src import packing

SHAPES = st.lists(st.integers(0, 13), min_size=0, max_size=3).map(tuple)


@pytest.fixture(params=["numpy", "torch"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "torch":
        monkeypatch.setattr(packing, "_np", None)
    return str(request.param)


@settings(max_examples=100, deadline=None)
@given(SHAPES, st.floats(0, 1), st.integers(0, 2**31 - 1))
def test_round_trip_is_exact_on_both_backends(shape: tuple[int, ...], p: float, seed: int) -> None:
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < p
    packed = pack_mask(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(mask.numel() / 8)
    with_torch = packing._np
    packing._np = None
    try:
        assert torch.equal(pack_mask(mask), packed)
        assert torch.equal(unpack_mask(packed, shape), mask)
    finally:
        packing._np = with_torch
    assert torch.equal(unpack_mask(packed, shape), mask)


def test_bit_order_is_little_endian_within_bytes(backend: str) -> None:
    mask = torch.tensor([True, False, False, False, False, False, False, True, False, True])
    assert pack_mask(mask).tolist() == [0b1000_0001, 0b10]
    assert unpack_mask(torch.tensor([3], dtype=torch.uint8), (2,)).tolist() == [True, True]


def test_non_contiguous_masks_pack_in_logical_order(backend: str) -> None:
    mask = torch.rand(9, 7) < 0.5
    assert torch.equal(unpack_mask(pack_mask(mask.t()), (7, 9)), mask.t())


@pytest.mark.parametrize(
    ("call", "error", "needle"),
    [
        (lambda: pack_mask(torch.ones(3)), TypeError, "bool"),
        (lambda: pack_mask([True]), TypeError, "bool"),
        (lambda: unpack_mask(torch.ones(2), (3,)), TypeError, "uint8"),
        (lambda: unpack_mask(torch.ones(2, 1, dtype=torch.uint8), (3,)), TypeError, "1-D"),
        (lambda: unpack_mask(torch.ones(2, dtype=torch.uint8), (3,)), ValueError, "needs 1"),
        (lambda: unpack_mask(torch.ones(1, dtype=torch.uint8), (-8,)), ValueError, "shape"),
    ],
)
def test_bad_input_raises(call, error: type, needle: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=needle):
        call()


def _stepped_state() -> fsparse.SparsifierState:
    gen = torch.Generator().manual_seed(0)
    data = {"emb": torch.randn(500, 16, generator=gen), "bias": torch.randn(13, generator=gen)}
    return fsparse.step(fsparse.init(data, sparsity_level=0.5, sparse_block_shape=(1, 4)))


def test_masks_state_dict_round_trips_through_a_weights_only_load() -> None:
    state = _stepped_state()
    buffer = io.BytesIO()
    torch.save(masks_state_dict(state), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    cleared = fsparse.init({n: state[n].data for n in state.names})
    restored = load_masks(cleared, loaded)
    for name in state.names:
        assert torch.equal(restored[name].mask, state[name].mask)
        assert restored[name].data is state[name].data
        assert not bool(cleared[name].mask.logical_not().any())  # input state unchanged


def test_packed_masks_are_over_8x_smaller_than_torch_ao_sparse_coo() -> None:
    data = torch.randn(1000, 64, generator=torch.Generator().manual_seed(1))
    sparsifier = DataNormSparsifier(sparsity_level=0.5, sparse_block_shape=(1, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sparsifier.add_data("w", data)
        sparsifier.step()
    coo = sparsifier.state_dict()["state"]["w"]["mask"]
    coo_bytes = coo.indices().nbytes + coo.values().nbytes
    state = fsparse.step(fsparse.init({"w": data}, sparsity_level=0.5))
    assert torch.equal(state["w"].mask, sparsifier.get_mask("w").bool())
    packed = masks_state_dict(state)["w"]
    packed_bytes = packed["bits"].nbytes + packed["shape"].nbytes
    assert 0.49 < 1 - state["w"].mask.float().mean().item() < 0.51
    assert coo_bytes >= 8 * packed_bytes


def test_load_masks_rejects_unknown_names_and_wrong_shapes() -> None:
    state = _stepped_state()
    packed = masks_state_dict(state)
    with pytest.raises(KeyError, match="nope"):
        load_masks(state, {"nope": packed["emb"]})
    with pytest.raises(ValueError, match="shape"):
        load_masks(state, {"bias": packed["emb"]})
    with pytest.raises(ValueError, match="'bits' and 'shape'"):
        load_masks(state, {"emb": {"bits": packed["emb"]["bits"]}})
