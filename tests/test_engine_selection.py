"""The selection engine against a brute-force oracle (stable argsort, in this test only)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsparse._src.engine import (
    NM,
    Block,
    Channel,
    Unstructured,
    global_select_masks,
    parse_pattern,
    select_count_mask,
    select_mask,
)
from fsparse._src.engine import keep_masks as keep_mod
from fsparse._src.engine import threshold as threshold_mod

FIXTURE_OK = [HealthCheck.function_scoped_fixture]  # the `path` fixture is constant per test

# --- the oracle -------------------------------------------------------------


def _squeezed_matrix(shape: tuple[int, ...]) -> tuple[int, int]:
    dims = [d for d in shape if d != 1]
    if len(dims) <= 1:
        return 1, (dims[0] if dims else 1)
    return dims[0], math.prod(dims[1:])


def oracle_units(shape: tuple[int, ...], pattern) -> list[list[int]]:
    """Flat element indices of every unit, in unit order."""
    n = math.prod(shape)
    if n == 0:
        return []
    if isinstance(pattern, Unstructured):
        return [[i] for i in range(n)]
    if isinstance(pattern, Channel):
        rows = shape[0] if shape else 1
        inner = n // rows
        return [list(range(r * inner, (r + 1) * inner)) for r in range(rows)]
    if isinstance(pattern, Block):
        rows, cols = _squeezed_matrix(shape)
        bh, bw = pattern.height, pattern.width
        units = []
        for bi in range(-(-rows // bh)):
            for bj in range(-(-cols // bw)):
                units.append([r * cols + c for r in range(bi * bh, min((bi + 1) * bh, rows))
                              for c in range(bj * bw, min((bj + 1) * bw, cols))])
        return units
    idx = torch.arange(n).reshape(shape)
    if idx.dim() >= 3:
        idx = idx.permute(0, *range(2, idx.dim()), 1)
    flat = idx.reshape(-1).tolist()
    return [flat[g * pattern.m : (g + 1) * pattern.m] for g in range(n // pattern.m)]


def oracle_masks(tensors: list[torch.Tensor], pattern, k: int) -> list[torch.Tensor]:
    """Prune the k lowest-mean units over all tensors (stable: tensor order, then index)."""
    keys, owners = [], []
    for t_i, t in enumerate(tensors):
        flat = t.reshape(-1).double()
        for unit in oracle_units(tuple(t.shape), pattern):
            vals = flat[unit]
            keys.append(float(vals.mean()) if len(unit) else 0.0)
            owners.append((t_i, unit))
    masks = [torch.ones(t.numel(), dtype=torch.bool) for t in tensors]
    if not keys:
        return [m.reshape(t.shape) for m, t in zip(masks, tensors)]
    order = torch.tensor(keys, dtype=torch.float64).argsort(stable=True)[:k].tolist()
    for u in order:
        t_i, unit = owners[u]
        if isinstance(pattern, NM):
            vals = tensors[t_i].reshape(-1).double()[unit]
            lowest = vals.argsort(stable=True)[: pattern.m - pattern.n].tolist()
            for j in lowest:
                masks[t_i][unit[j]] = False
        else:
            masks[t_i][unit] = False
    return [m.reshape(t.shape) for m, t in zip(masks, tensors)]


def n_units(shape: tuple[int, ...], pattern) -> int:
    return len(oracle_units(shape, pattern))


# --- strategies ---------------------------------------------------------------

patterns = st.one_of(
    st.just(Unstructured()),
    st.just(Channel()),
    st.builds(Block, st.integers(1, 5), st.integers(1, 5)),
    st.integers(1, 4).flatmap(lambda m: st.builds(NM, st.integers(0, m), st.just(m))),
)
VALUES = st.sampled_from([0.0, -0.0, 1.0, 2.0, 3.0, -1.0, -2.5, 4.0, 0.5, math.inf, -math.inf])


@st.composite
def scored(draw, pattern, dtype=None):
    dims = draw(st.lists(st.integers(0, 6), min_size=0, max_size=4))
    if isinstance(pattern, NM):
        in_dim = 1 if len(dims) >= 2 else 0
        if dims:
            dims[in_dim] = pattern.m * draw(st.integers(0, 3))
        elif pattern.m != 1:
            dims = [pattern.m]
    shape = tuple(dims)
    values = draw(st.lists(VALUES, min_size=math.prod(shape), max_size=math.prod(shape)))
    dtype = dtype or draw(st.sampled_from([torch.float32, torch.float64, torch.float16]))
    scores = torch.tensor(values, dtype=torch.float64).reshape(shape).to(dtype)
    if not isinstance(pattern, Unstructured):  # +inf and -inf in one unit make a NaN mean
        scores = scores.nan_to_num(posinf=9.0, neginf=-9.0)
    return scores


@pytest.fixture(params=["reference", "bracket", "radix"])
def path(request, monkeypatch):
    """Run each test on the kthvalue path, the bracket path and the radix path."""
    if request.param != "reference":
        monkeypatch.setattr(threshold_mod, "SMALL", 0)
        monkeypatch.setattr(threshold_mod, "SLICE", 5)
    if request.param == "radix":
        monkeypatch.setattr(threshold_mod, "_bracketed", lambda *a: None)
        monkeypatch.setattr(keep_mod, "_one_pass", lambda *a: None)
    return request.param


# --- properties ---------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=FIXTURE_OK)
@given(data=st.data(), pattern=patterns)
def test_select_count_mask_matches_oracle(path, data, pattern):
    scores = data.draw(scored(pattern))
    before = scores.clone()
    k = data.draw(st.integers(0, n_units(tuple(scores.shape), pattern)))
    mask = select_count_mask(scores, k, pattern)
    assert mask.dtype == torch.bool and mask.shape == scores.shape
    assert torch.equal(mask, oracle_masks([scores], pattern, k)[0])
    assert torch.equal(scores, before)


@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURE_OK)
@given(data=st.data(), pattern=patterns, sparsity=st.floats(-0.5, 1.5))
def test_select_mask_matches_oracle(path, data, pattern, sparsity):
    scores = data.draw(scored(pattern))
    units = n_units(tuple(scores.shape), pattern)
    k = (units if sparsity > 0 else 0) if isinstance(pattern, NM) else round(
        min(max(sparsity, 0.0), 1.0) * units)
    mask = select_mask(scores, sparsity, str(pattern))
    assert torch.equal(mask, oracle_masks([scores], pattern, k)[0])


@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURE_OK)
@given(data=st.data(), pattern=patterns, sparsity=st.floats(0.0, 1.0))
def test_global_select_masks_match_oracle(path, data, pattern, sparsity):
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64]))
    tensors = data.draw(st.lists(scored(pattern, dtype), min_size=1, max_size=3))
    units = sum(n_units(tuple(t.shape), pattern) for t in tensors)
    k = (units if sparsity > 0 else 0) if isinstance(pattern, NM) else round(sparsity * units)
    masks = global_select_masks({f"t{i}": t for i, t in enumerate(tensors)}, sparsity, pattern)
    expected = oracle_masks(tensors, pattern, k)
    assert list(masks) == [f"t{i}" for i in range(len(tensors))]
    for got, want in zip(masks.values(), expected):
        assert torch.equal(got, want)


def test_nm_on_conv_weight_keeps_n_per_group_along_input_channels():
    w = torch.randn(6, 8, 3, 3)
    mask = select_mask(w.abs(), 0.5, "2:4")
    per_group = mask.permute(0, 2, 3, 1).reshape(-1, 4).sum(1)
    assert torch.equal(per_group, torch.full_like(per_group, 2))
    assert torch.equal(mask, oracle_masks([w.abs()], NM(2, 4), 6 * 9 * 2)[0])
    assert select_mask(w, 0.0, "2:4").all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("ties", [False, True])
def test_large_tensor_takes_the_chunked_path_and_stays_exact(dtype, ties):
    gen = torch.Generator().manual_seed(3)
    n = 3 * threshold_mod.SMALL + 17
    scores = torch.randn(n, generator=gen, dtype=torch.float64)
    if ties:
        scores = (scores * 4).round()
    scores = scores.to(dtype)
    for k in (1, n // 3, n - 1):
        mask = select_count_mask(scores, k)
        pruned = scores.double().argsort(stable=True)[:k]
        want = torch.ones(n, dtype=torch.bool)
        want[pruned] = False
        assert torch.equal(mask, want)


def test_radix_handles_negative_zero_and_infinities(monkeypatch):
    monkeypatch.setattr(threshold_mod, "SMALL", 0)
    monkeypatch.setattr(threshold_mod, "_bracketed", lambda *a: None)
    monkeypatch.setattr(keep_mod, "_one_pass", lambda *a: None)
    scores = torch.tensor([0.0, -0.0, -math.inf, 1.0, -1.0, math.inf, -0.0, 2.0])
    for k in range(9):
        want = oracle_masks([scores], Unstructured(), k)[0]
        assert torch.equal(select_count_mask(scores, k), want)


def test_vmap_gives_the_per_item_masks():
    stack = torch.randn(3, 4, 8)
    masks = torch.func.vmap(lambda s: select_mask(s, 0.5, "1x2"))(stack)
    for i in range(3):
        assert torch.equal(masks[i], select_mask(stack[i], 0.5, "1x2"))


# --- patterns and bad input ------------------------------------------------------


def test_parse_pattern_round_trips_and_refuses_unknown_strings():
    for text, value in [("unstructured", Unstructured()), ("channel", Channel()),
                        ("1x4", Block(1, 4)), ("4x4", Block(4, 4)), ("2:4", NM(2, 4))]:
        assert parse_pattern(text) == value and parse_pattern(value) is value
        assert parse_pattern(str(value)) == value
    for bad in ["", "2:1", "0x4", "4x", "dense", "2:4:8", "x" * 10**5]:
        with pytest.raises(ValueError, match="sparsity_type"):
            parse_pattern(bad)
    with pytest.raises(TypeError, match="sparsity_type"):
        parse_pattern(24)
    with pytest.raises(ValueError):
        NM(5, 4)
    with pytest.raises(TypeError):
        Block(1.0, 4)  # type: ignore[arg-type]


def test_units_count_each_pattern():
    assert Unstructured().units((3, 4)) == 12
    assert Block(2, 3).units((5, 7)) == 3 * 3
    assert Block(1, 4).units((8, 1, 3, 3)) == 8 * 3  # size-1 dims dropped: (8, 9)
    assert NM(2, 4).units((6, 8, 3, 3)) == 6 * 9 * 2
    assert Channel().units((6, 8, 3, 3)) == 6 and Channel().units((0, 3)) == 0


def test_bad_input_raises_and_names_the_argument():
    x = torch.tensor([[1.0, float("nan"), 2.0, 3.0]])
    with pytest.raises(ValueError, match="NaN"):
        select_mask(x, 0.5)
    with pytest.raises(ValueError, match=r"scores\['w'\].*NaN"):
        global_select_masks({"w": x}, 0.5)
    with pytest.raises(ValueError, match="not divisible by 4"):
        select_mask(torch.ones(4, 6), 0.5, "2:4")
    with pytest.raises(ValueError, match="k must be"):
        select_count_mask(torch.ones(4), 5)
    with pytest.raises(ValueError, match="k must be"):
        select_count_mask(torch.ones(4), -1)
    with pytest.raises(TypeError, match="scores"):
        select_mask([1.0, 2.0], 0.5)
    with pytest.raises(TypeError, match="scores"):
        select_mask(torch.ones(4, dtype=torch.int64), 0.5)
    with pytest.raises(ValueError, match="sparsity"):
        select_mask(torch.ones(4), float("nan"))
    with pytest.raises(TypeError, match="scores"):
        global_select_masks([torch.ones(4)], 0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sparsity_type"):
        select_mask(torch.ones(4), 0.5, "3x")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_nan_check_sees_nan_anywhere_and_not_in_inf_mixtures(dtype):
    # both infinities together are ordinary (a sum-based check would call them NaN)
    base = torch.arange(4099, dtype=torch.float32).to(dtype)
    base[0], base[-1] = -math.inf, math.inf
    assert select_mask(base, 0.5).sum() == 4099 - round(0.5 * 4099)
    for pos in (0, 1, 2050, 4097, 4098):  # head, vector body, tail
        x = base.clone()
        x[pos] = math.nan
        with pytest.raises(ValueError, match="NaN"):
            select_mask(x, 0.5)
        with pytest.raises(ValueError, match="NaN"):
            global_select_masks({"a": torch.ones(3, dtype=dtype), "b": x}, 0.5)
