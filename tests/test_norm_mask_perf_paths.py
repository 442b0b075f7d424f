"""Differential tests of the fast mask paths: chunked, sampled/radix selection, batched.

Every fast path must give exactly the reference path's mask (and torch.ao's on
data without ties). Small ``chunk_elements`` values push small tensors through
many units, edge blocks and unit boundaries.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.ao.pruning._experimental.data_sparsifier import DataNormSparsifier

import fsparse
from fsparse._src.engine import chunked_mask
from fsparse._src.engine import threshold as threshold_mod
from fsparse._src.engine.batching import batched_norm_masks, stacked_norm_mask
from fsparse._src.engine.block_plan import DEFAULT_CHUNK, BlockPlan
from fsparse._src.engine.chunked_mask import chunked_norm_mask, large_norm_mask
from fsparse._src.engine.norm_mask import CHUNKED_MIN_NUMEL, reference_norm_mask
from fsparse._src.engine.scoring import as_matrix as _as_matrix

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
CHUNKS = [1, 2, 3, 5, 8, 13, 64, 1 << 20]


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    shape = draw(
        st.one_of(
            st.tuples(st.integers(1, 60)),
            st.tuples(st.integers(1, 30), st.integers(1, 30)),
            st.tuples(st.integers(1, 6), st.integers(1, 4), st.integers(1, 5)),
        )
    )
    block = draw(st.tuples(st.integers(1, 5), st.integers(1, 5)))
    zeros = draw(st.one_of(st.none(), st.integers(0, block[0] * block[1])))
    ties = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    data = torch.randint(-3, 4, shape, generator=gen).double() if ties else torch.randn(
        shape, generator=gen, dtype=torch.float64
    )
    return {
        "data": data.to(draw(st.sampled_from(DTYPES))),
        "config": fsparse.make_config(
            sparsity_level=draw(st.floats(-0.2, 1.2, allow_nan=False)),
            sparse_block_shape=block,
            zeros_per_block=zeros,
            norm=draw(st.sampled_from(["L1", "L2"])),
        ),
        "chunk": draw(st.sampled_from(CHUNKS)),
    }


@settings(max_examples=250, deadline=None)
@given(cases())
def test_chunked_path_matches_reference(case: dict[str, Any]) -> None:
    expected = reference_norm_mask(case["data"], case["config"])
    got = large_norm_mask(case["data"], case["config"], case["chunk"])
    assert got.shape == case["data"].shape and got.dtype == torch.bool
    assert torch.equal(got, expected)


def _counting(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    calls: list[int] = []
    original = getattr(chunked_mask, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(chunked_mask, name, spy)
    return calls


def test_sampled_bracket_and_radix_fallback_match_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A small sample and a narrow bracket make both the bracket pass and its
    # radix fallback (on a miss, or when ties crowd the bracket) run on small data.
    monkeypatch.setattr(chunked_mask, "sample_size", lambda n: 48)
    monkeypatch.setattr(threshold_mod, "_Z_SCORE", 0.3)
    brackets = _counting(monkeypatch, "_bracket_pass")
    radix = _counting(monkeypatch, "_radix_threshold")
    gen = torch.Generator().manual_seed(0)
    hits = 0
    for trial in range(120):
        block = [(1, 4), (1, 1), (2, 2), (3, 2), (1, 3), (4, 5)][trial % 6]
        zeros = [None, 1, 2][trial % 3] if block != (1, 1) else None
        shape = (int(torch.randint(20, 70, (1,), generator=gen)), 13 + trial % 7)
        if trial % 4 == 0:  # heavy ties: many exactly equal blocks
            data = torch.randint(0, 3, shape, generator=gen).float()
        else:
            data = torch.randn(shape, generator=gen, dtype=torch.float64).to(DTYPES[trial % 4])
        config = fsparse.make_config(
            sparsity_level=[0.5, 0.1, 0.93, 0.02][trial % 4],
            sparse_block_shape=block,
            zeros_per_block=zeros,
            norm=["L1", "L2"][trial % 2],
        )
        expected = reference_norm_mask(data, config)
        got = large_norm_mask(data, config, chunk_elements=[16, 40, 7][trial % 3])
        hits += int(torch.equal(got, expected))
    assert hits == 120
    assert len(brackets) > 20 and len(radix) > 20  # both selections really ran


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_radix_threshold_is_the_exact_kth_mean(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(1)
    data = torch.cat([torch.zeros(40, 8), torch.rand(60, 8, generator=gen)]).to(dtype)
    config = fsparse.make_config(sparse_block_shape=(1, 2))
    plan = BlockPlan(data, config, 24)
    means = fsparse.block_means(data.abs(), (1, 2)).reshape(-1)
    for k in (1, 5, 160, 161, 170, 399, 400):
        threshold, below = chunked_mask._radix_threshold(plan, k)
        assert threshold.item() == means.sort().values[k - 1].item()
        assert below == int((means < threshold).sum())


def _torch_ao_mask(data: torch.Tensor, config: fsparse.SparsityConfig) -> torch.Tensor:
    sparsifier = DataNormSparsifier(
        sparsity_level=config.sparsity_level,
        sparse_block_shape=config.sparse_block_shape,
        zeros_per_block=config.zeros_per_block,
        norm=config.norm,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sparsifier.add_data("x", data)
        sparsifier.step()
    return sparsifier.get_mask("x").bool().reshape(data.shape)


@pytest.mark.parametrize(
    ("block", "zeros"), [((1, 4), None), ((1, 4), 2), ((1, 1), None), ((4, 4), None), ((3, 5), 7)]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chunked_path_matches_torch_ao_without_ties(
    block: tuple[int, int], zeros: int | None, dtype: torch.dtype
) -> None:
    data = torch.randn(303, 61, generator=torch.Generator().manual_seed(2), dtype=dtype)
    config = fsparse.make_config(
        sparsity_level=0.6, sparse_block_shape=block, zeros_per_block=zeros
    )
    assert data.numel() >= CHUNKED_MIN_NUMEL  # the public function takes the chunked path
    expected = _torch_ao_mask(data, config)
    assert torch.equal(fsparse.config_norm_mask(data, config), expected)
    assert torch.equal(large_norm_mask(data, config, chunk_elements=500), expected)


@pytest.mark.parametrize(
    "make",
    [
        lambda g: torch.randn(90, 300, generator=g).t(),  # non-contiguous
        lambda g: torch.randn(40, 3, 3, 50, generator=g),  # N-D: (40, 450) matrix
        lambda g: torch.randn(1, 40000, generator=g),  # one row: units split columns
        lambda g: torch.randn(30000, 1, generator=g),  # column vector: squeezed to a row
    ],
)
def test_layouts_take_the_chunked_path_and_match(make: Callable[[Any], torch.Tensor]) -> None:
    data = make(torch.Generator().manual_seed(3))
    for config in (
        fsparse.make_config(sparse_block_shape=(2, 3), zeros_per_block=4, norm="L2"),
        fsparse.make_config(sparsity_level=0.3),
    ):
        expected = reference_norm_mask(data, config)
        assert torch.equal(fsparse.config_norm_mask(data, config), expected)
        assert torch.equal(large_norm_mask(data, config, chunk_elements=999), expected)


def test_vmap_over_large_items_matches_per_item_masks() -> None:
    stack = torch.randn(3, 160, 128)  # each item takes the chunked path on its own
    assert stack[0].numel() >= CHUNKED_MIN_NUMEL
    config = fsparse.make_config(sparsity_level=0.7, sparse_block_shape=(2, 4), zeros_per_block=3)
    batched = torch.vmap(lambda t: fsparse.config_norm_mask(t, config))(stack)
    for i in range(3):
        assert torch.equal(batched[i], fsparse.config_norm_mask(stack[i], config))


def test_data_that_requires_grad_is_fine() -> None:
    data = torch.randn(200, 100, requires_grad=True)
    mask = fsparse.norm_mask(data, 0.5, (1, 4), 2)
    expected = reference_norm_mask(data.detach(), fsparse.make_config(zeros_per_block=2))
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("level", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("where", [(0, 0), (299, 63)])
def test_non_finite_data_raises_on_the_chunked_path(
    bad: float, level: float, where: tuple[int, int]
) -> None:
    data = torch.randn(300, 64)
    data[where] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        fsparse.norm_mask(data, level)
    with pytest.raises(ValueError, match="NaN or Inf"):
        large_norm_mask(data, fsparse.make_config(sparsity_level=level), chunk_elements=256)


def test_l2_overflow_raises_on_the_chunked_path() -> None:
    data = torch.full((300, 64), 1e30)
    with pytest.raises(ValueError, match="overflows"):
        fsparse.norm_mask(data, 0.5, norm="L2")


def test_chunked_norm_mask_rejects_bad_arguments() -> None:
    config = fsparse.make_config()
    with pytest.raises(ValueError, match="matrix"):
        chunked_norm_mask(torch.randn(8), config, 1)
    with pytest.raises(ValueError, match="matrix"):
        chunked_norm_mask(torch.ones(4, 4, dtype=torch.int32), config, 1)
    with pytest.raises(ValueError, match="k must be"):
        chunked_norm_mask(torch.randn(4, 8), config, 0)
    with pytest.raises(ValueError, match="k must be"):
        chunked_norm_mask(torch.randn(4, 8), config, 9)
    with pytest.raises(ValueError, match="chunk_elements"):
        chunked_norm_mask(torch.randn(4, 8), config, 1, chunk_elements=0)


# -- batched (stacked) masks -----------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(cases(), st.integers(1, 5))
def test_stacked_masks_match_per_item_masks(case: dict[str, Any], size: int) -> None:
    gen = torch.Generator().manual_seed(size)
    stack = torch.stack([case["data"]] + [
        torch.randn(case["data"].shape, generator=gen).to(case["data"].dtype) for _ in range(size)
    ])
    masks = stacked_norm_mask(stack, case["config"])
    for item, mask in zip(stack, masks):
        assert torch.equal(mask, fsparse.config_norm_mask(item, case["config"]))


def test_stacked_mask_names_the_item_with_nan() -> None:
    stack = torch.randn(4, 8, 8)
    stack[2, 1, 1] = math.nan
    with pytest.raises(ValueError, match=r"stack\[2\].*NaN or Inf"):
        stacked_norm_mask(stack, fsparse.make_config())
    with pytest.raises(TypeError, match="stack"):
        stacked_norm_mask(torch.ones(3, 4, dtype=torch.int64), fsparse.make_config())


def _per_entry(data: torch.Tensor, config: fsparse.SparsityConfig) -> torch.Tensor:
    return fsparse.config_norm_mask(data, config)  # not the norm mask itself: never batched


def test_step_batches_same_shaped_entries_and_matches_per_entry_masks() -> None:
    gen = torch.Generator().manual_seed(4)
    data = {f"a{i}": torch.randn(16, 12, generator=gen) for i in range(7)}
    data |= {f"b{i}": torch.randn(9, generator=gen) for i in range(3)}
    data |= {"big": torch.randn(200, 100, generator=gen), "lone": torch.randn(5, 5, generator=gen)}
    state = fsparse.init(data, sparsity_level=0.6, sparse_block_shape=(2, 2), zeros_per_block=3)
    state = fsparse.add(state, "a0", data["a0"], sparsity_level=0.2)  # its own settings
    state = fsparse.add(state, "a1", data["a1"], mask_fn=_per_entry)
    batched = batched_norm_masks(state.entries)
    assert sorted(batched) == [f"a{i}" for i in range(2, 7)] + ["b0", "b1", "b2"]
    fast, slow = fsparse.step(state), fsparse.step(state, mask_fn=_per_entry)
    for name in state.names:
        assert torch.equal(fast[name].mask, slow[name].mask), name
        mask = fast[name].mask
        assert mask.untyped_storage().nbytes() == mask.numel()  # no shared storage


def test_step_names_the_entry_with_nan_even_when_batched() -> None:
    data = {f"t{i}": torch.randn(8, 8) for i in range(5)}
    data["t3"][0, 0] = math.nan
    state = fsparse.init(data)
    assert sorted(batched_norm_masks(state.entries)) == []  # the NaN batch is left out
    with pytest.raises(ValueError, match=r"'t3'.*NaN or Inf"):
        fsparse.step(state)


def test_batches_respect_the_size_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    from fsparse._src.engine import batching

    monkeypatch.setattr(batching, "MAX_BATCH_ELEMENTS", 200)
    state = fsparse.init({f"t{i}": torch.randn(10, 10) for i in range(5)})
    masks = batched_norm_masks(state.entries)
    assert sorted(masks) == [f"t{i}" for i in range(5)]
    for name, entry in state.entries.items():
        assert torch.equal(masks[name], fsparse.config_norm_mask(entry.data, entry.config))


def test_matrix_view_of_an_item_shape() -> None:
    assert _as_matrix(torch.empty(3, 1, 4, device="meta")).shape == (3, 4)


def test_whole_block_plans_score_on_the_fly_in_default_units() -> None:
    # Whole blocks of fp32/fp64 data need no score buffer; units default to
    # DEFAULT_CHUNK elements (a 512 x 64 matrix is one unit, a 1M x 64 one many).
    config = fsparse.make_config(sparse_block_shape=(1, 4), zeros_per_block=4)
    plan = BlockPlan(torch.randn(512, 64), config, None)
    assert plan.lazy and plan.scores_buf.numel() == 0 and len(plan.units) == 1
    assert not BlockPlan(torch.randn(512, 64).half(), config, None).lazy
    big = BlockPlan(torch.empty(4 * DEFAULT_CHUNK // 64, 64), config, None)
    assert len(big.units) == 4


def test_lazy_scores_of_a_one_element_edge_block() -> None:
    # Regression: the 1-element edge block of a lazy plan was copied unscored.
    data = torch.tensor([1.5410, -0.2934, -2.1788])
    config = fsparse.make_config(sparse_block_shape=(1, 2), zeros_per_block=2)
    assert torch.equal(large_norm_mask(data, config, 2), reference_norm_mask(data, config))
