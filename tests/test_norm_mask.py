"""Property and differential tests of the norm block mask."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.ao.pruning._experimental.data_sparsifier import DataNormSparsifier

from fsparse import block_means, norm_mask, norm_scores, select_k_smallest
from fsparse.testing import configs, levels, tensors

SHAPES = st.one_of(
    st.tuples(st.integers(1, 40)),
    st.tuples(st.integers(1, 24), st.integers(1, 24)),
)


@st.composite
def cases(draw: st.DrawFn, with_ties: bool = True) -> dict:
    """fsparse.testing's tensors and configs, as norm_mask's keyword arguments."""
    data = draw(tensors(shape=SHAPES, dtypes=(torch.float64,), contiguous=True,
                        ties=None if with_ties else False, zeros=False, extremes=False))
    config = draw(configs(tuple(data.shape), level=levels(min_level=-0.5, max_level=1.5)))
    zeros: int | None = config.zeros_per_block
    if zeros == config.block_size and draw(st.booleans()):
        zeros = None  # the whole block, spelled as norm_mask's default
    return {"data": data, "level": config.sparsity_level, "block": config.sparse_block_shape,
            "zeros": zeros, "norm": config.norm}


def _blocks_of(values: torch.Tensor, block: tuple[int, int]) -> list[torch.Tensor]:
    """Flat element lists of each block of a matrix, row-major over the block grid."""
    height, width = values.shape
    bh, bw = block
    return [
        values[r : r + bh, c : c + bw].reshape(-1)
        for r in range(0, height, bh)
        for c in range(0, width, bw)
    ]


def _matrix(t: torch.Tensor) -> torch.Tensor:
    """The documented matrix view: drop size-1 dims; 0-D/1-D data is one row."""
    t = t.squeeze()
    return t.reshape(1, -1) if t.dim() <= 1 else t


@settings(max_examples=300, deadline=None)
@given(cases())
def test_mask_invariants(case: dict) -> None:
    data, block = case["data"], case["block"]
    size = block[0] * block[1]
    zeros = size if case["zeros"] is None else case["zeros"]
    mask = norm_mask(data, case["level"], block, case["zeros"], case["norm"])

    assert mask.dtype == torch.bool
    assert mask.shape == data.shape

    scores = norm_scores(data, case["norm"])
    mask_blocks = _blocks_of(_matrix(mask), block)
    score_blocks = _blocks_of(scores, block)
    n_blocks = len(mask_blocks)
    k = round(min(max(case["level"], 0.0), 1.0) * n_blocks)
    pruned = [not bool(m.all()) for m in mask_blocks]
    if zeros == 0:
        assert bool(mask.all())
        return
    assert sum(pruned) == k
    means = [float(s.mean()) for s in score_blocks]
    selected_means = [m for m, p in zip(means, pruned) if p]
    kept_means = [m for m, p in zip(means, pruned) if not p]
    if selected_means and kept_means:
        assert max(selected_means) <= min(kept_means)
    for m, s, p in zip(mask_blocks, score_blocks, pruned):
        if not p:
            assert bool(m.all())
            continue
        assert int((~m).sum()) == min(zeros, m.numel())
        if bool(m.any()):
            assert float(s[~m].max()) <= float(s[m].min())


@settings(max_examples=150, deadline=None)
@given(cases(), st.floats(0, 1), st.floats(0, 1))
def test_whole_block_zeros_are_monotone_in_level(case: dict, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    args = (case["block"], None, case["norm"])
    mask_lo = norm_mask(case["data"], lo, *args)
    mask_hi = norm_mask(case["data"], hi, *args)
    assert bool((mask_hi <= mask_lo).all()), "raising the level must only add zeros"


def _torch_ao_mask(data: torch.Tensor, level: float, block, zeros, norm: str) -> torch.Tensor:
    sparsifier = DataNormSparsifier(
        sparsity_level=level, sparse_block_shape=block, zeros_per_block=zeros, norm=norm
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sparsifier.add_data("x", data)
        sparsifier.step()
    return sparsifier.get_mask("x")


@settings(max_examples=300, deadline=None)
@given(cases(with_ties=False), st.sampled_from([torch.float32, torch.float64]))
def test_matches_torch_ao(case: dict, dtype: torch.dtype) -> None:
    data = case["data"].to(dtype)
    assume(data.squeeze().dim() >= 1)  # torch.ao crashes on single elements
    level = min(max(case["level"], 0.0), 1.0)  # torch.ao prunes on negative levels
    ours = norm_mask(data, level, case["block"], case["zeros"], case["norm"])
    theirs = _torch_ao_mask(data, level, case["block"], case["zeros"], case["norm"])
    assert torch.equal(ours, theirs.reshape(data.shape).bool())


@pytest.mark.parametrize("shape", [(7, 1), (1, 9), (1, 5, 1)])
def test_column_vector_keeps_shape_and_torch_ao_values(shape: tuple[int, ...]) -> None:
    data = torch.randn(shape)
    ours = norm_mask(data, 0.5, (1, 2), None, "L1")
    theirs = _torch_ao_mask(data, 0.5, (1, 2), None, "L1")
    assert ours.shape == data.shape
    assert torch.equal(ours.reshape(-1), theirs.reshape(-1).bool())


def test_negative_level_prunes_nothing() -> None:
    data = torch.randn(8, 8)
    assert bool(norm_mask(data, -0.5).all())
    assert not bool(_torch_ao_mask(data, -0.5, (1, 4), None, "L1").bool().all())


def test_nd_data_uses_first_dim_rows() -> None:
    weight = torch.randn(6, 3, 3, 3)
    mask = norm_mask(weight, 0.5, (1, 3), None, "L2")
    expected = norm_mask(weight.reshape(6, 27), 0.5, (1, 3), None, "L2").reshape(weight.shape)
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_ranks_in_float32(dtype: torch.dtype) -> None:
    data = (torch.randn(32, 16) * 300).to(dtype)  # L2 of fp16 would overflow at 16 bits
    mask = norm_mask(data, 0.5, (2, 2), 2, "L2")
    assert torch.equal(mask, norm_mask(data.float(), 0.5, (2, 2), 2, "L2"))


def test_select_k_smallest_breaks_ties_by_index() -> None:
    values = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    assert select_k_smallest(values, 3).tolist() == [True, True, False, False, True]


def test_block_means_average_valid_elements_of_edge_blocks() -> None:
    scores = torch.arange(10.0).reshape(2, 5)
    means = block_means(scores, (2, 2))
    assert means.tolist() == [[3.0, 5.0, 6.5]]


def test_vmap_matches_per_tensor_masks() -> None:
    stack = torch.randn(5, 12, 8)
    batched = torch.vmap(lambda t: norm_mask(t, 0.6, (2, 2), 3, "L1"))(stack)
    for i in range(stack.shape[0]):
        assert torch.equal(batched[i], norm_mask(stack[i], 0.6, (2, 2), 3, "L1"))


def test_norm_mask_does_not_mutate_data() -> None:
    data = torch.randn(10, 10)
    before = data.clone()
    norm_mask(data, 0.7, (2, 3), 4, "L2")
    assert torch.equal(data, before)


def test_empty_tensor_gives_empty_mask() -> None:
    assert norm_mask(torch.empty(0, 4)).shape == (0, 4)


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"sparse_block_shape": (0, 4)}, ValueError, "sparse_block_shape"),
        ({"sparse_block_shape": (1,)}, ValueError, "sparse_block_shape"),
        ({"sparse_block_shape": (1.5, 2)}, ValueError, "sparse_block_shape"),
        ({"sparse_block_shape": "1x4"}, ValueError, "sparse_block_shape"),
        ({"zeros_per_block": -1}, ValueError, "zeros_per_block"),
        ({"zeros_per_block": 5}, ValueError, "zeros_per_block"),
        ({"sparsity_level": math.nan}, ValueError, "sparsity_level"),
        ({"sparsity_level": "0.5"}, TypeError, "sparsity_level"),
        ({"norm": "L3"}, ValueError, "norm"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs: dict, error: type, needle: str) -> None:
    with pytest.raises(error, match=needle):
        norm_mask(torch.randn(4, 4), **kwargs)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_data_raises(bad: float) -> None:
    data = torch.randn(4, 8)
    data[2, 3] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        norm_mask(data)


def test_non_float_data_raises() -> None:
    with pytest.raises(TypeError, match="floating-point"):
        norm_mask(torch.ones(4, 4, dtype=torch.int64))
