"""Mask types for fsparse.create, checked against brute force (fsparse._src.engine.mask_types)."""

from __future__ import annotations

import math

import pytest
import torch

import fsparse
from fsparse import channels_last_mask, existing_zeros_mask, global_levels, make_config


def _groups_along_input_channels(t: torch.Tensor, m: int) -> torch.Tensor:
    """``(n_groups, m)``: consecutive input channels at each (out, *kernel) position."""
    if t.dim() > 2:
        t = t.permute(0, *range(2, t.dim()), 1)
    return t.reshape(-1, m)


@pytest.mark.parametrize("shape", [(8, 16), (6, 8, 3, 3), (4, 16, 5)])
@pytest.mark.parametrize(("kept", "size"), [(2, 4), (1, 4), (4, 8)])
def test_nm_mask_matches_top_n_per_group(shape: tuple[int, ...], kept: int, size: int) -> None:
    torch.manual_seed(sum(shape) + kept)
    w = torch.randn(shape)
    cfg = make_config(sparsity_level=1.0, sparse_block_shape=(1, size), zeros_per_block=size - kept)
    mask = channels_last_mask(w, cfg)
    assert mask.shape == w.shape
    groups = _groups_along_input_channels(w, size)
    kept_groups = _groups_along_input_channels(mask, size)
    assert (kept_groups.sum(-1) == kept).all()
    top = groups.abs().topk(kept, dim=-1).indices
    expected = torch.zeros_like(kept_groups).scatter(-1, top, True)
    assert torch.equal(kept_groups, expected)


def test_block4_prunes_whole_groups_along_input_channels() -> None:
    torch.manual_seed(1)
    w = torch.randn(8, 8, 3, 3)
    cfg = make_config(sparsity_level=0.5, sparse_block_shape=(1, 4), zeros_per_block=None)
    groups = _groups_along_input_channels(channels_last_mask(w, cfg), 4)
    sums = groups.sum(-1)
    assert set(sums.tolist()) == {0, 4}
    assert (sums == 0).float().mean().item() == 0.5
    # the pruned groups are those with the lowest mean |w|
    means = _groups_along_input_channels(w, 4).abs().mean(-1)
    assert means[sums == 0].max() <= means[sums == 4].min()


def test_channels_last_is_the_norm_mask_for_matrices() -> None:
    w = torch.randn(5, 12)
    cfg = make_config(sparsity_level=0.4, sparse_block_shape=(1, 4), zeros_per_block=2)
    assert torch.equal(channels_last_mask(w, cfg), fsparse.config_norm_mask(w, cfg))


def test_existing_zeros_mask() -> None:
    w = torch.tensor([[0.0, 1.0], [-0.0, -2.0]])
    assert existing_zeros_mask(w, make_config()).tolist() == [[False, True], [False, True]]


def _brute_global_masks(data: dict[str, torch.Tensor], level: float) -> dict[str, torch.Tensor]:
    flat = torch.cat([t.abs().reshape(-1) for t in data.values()])
    k = round(level * flat.numel())
    order = flat.sort(stable=True).indices[:k]
    pruned = torch.zeros_like(flat, dtype=torch.bool)
    pruned[order] = True
    out, start = {}, 0
    for name, t in data.items():
        out[name] = ~pruned[start : start + t.numel()].reshape(t.shape)
        start += t.numel()
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("level", [0.0, 0.1, 0.37, 0.8, 1.0])
def test_global_levels_drive_the_core_to_global_magnitude_masks(seed: int, level: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    # small integers make many ties, across and inside tensors
    data = {
        "a": torch.randint(-4, 5, (6, 7), generator=gen).float(),
        "b": torch.randint(-4, 5, (3, 2, 3, 3), generator=gen).float(),
        "c": torch.randint(-9, 9, (20,), generator=gen).float() / 2,
    }
    state = fsparse.init(data, sparse_block_shape=(1, 1))
    configs = {n: e.config for n, e in state.entries.items()}
    levels = global_levels(data, configs, level)
    for name, value in levels.items():
        state = fsparse.add(state, name, data[name], sparsity_level=value)
    state = fsparse.step(state)
    expected = _brute_global_masks(data, level)
    for name in data:
        assert torch.equal(state[name].mask, expected[name]), name


def test_global_levels_with_blocks_rank_block_means() -> None:
    a = torch.tensor([[1.0, 1.0, 9.0, 9.0]])
    b = torch.tensor([[2.0, 2.0, 0.5, 0.5, 8.0, 8.0]])
    cfg = make_config(sparse_block_shape=(1, 2), zeros_per_block=None)
    levels = global_levels({"a": a, "b": b}, {"a": cfg, "b": cfg}, 0.6)  # 3 of 5 blocks
    assert levels == {"a": 0.5, "b": pytest.approx(2 / 3)}


def test_global_levels_errors_and_edges() -> None:
    cfg = make_config(sparse_block_shape=(1, 1))
    assert global_levels({}, {}, 0.5) == {}
    with pytest.raises(ValueError, match="same names"):
        global_levels({"a": torch.ones(2)}, {"b": cfg}, 0.5)
    with pytest.raises(ValueError, match="NaN or Inf"):
        global_levels({"a": torch.tensor([1.0, float("nan"), 2.0])}, {"a": cfg}, 0.5)
    assert global_levels({"a": torch.ones(3)}, {"a": cfg}, 2.0) == {"a": 1.0}


@pytest.mark.parametrize("size", [7, (1 << 16) + 9, 3 << 18])
def test_kept_counts_and_keep_factors_agree_with_plain_torch(size: int, torch_path) -> None:
    """Large masks are counted 8 bytes per word and converted through uint8: same answers."""
    from fsparse.create.masks import keep_factors
    from fsparse.create.sharding import kept_counts

    gen = torch.Generator().manual_seed(size)
    mask = torch.rand(size, generator=gen) > 0.3
    strided = (torch.rand(2 * size, generator=gen) > 0.6)[::2]  # not contiguous
    masks = {"a": mask, "b": strided}
    assert kept_counts(masks) == {"a": int(mask.sum()), "b": int(strided.sum())}
    weights = {"a": torch.randn(size, dtype=torch.float64), "b": torch.randn(size)}
    factors = keep_factors(weights, masks)
    for name, m in masks.items():
        assert factors[name].dtype == weights[name].dtype
        assert torch.equal(factors[name], m.to(weights[name].dtype))
    reused = keep_factors(weights, masks, reuse={n: torch.full_like(f, 7.0)
                                                 for n, f in factors.items()})
    assert all(torch.equal(reused[n], factors[n]) for n in masks)
    _check_masks_that_prune_nothing_are_left_out(size)


def _check_masks_that_prune_nothing_are_left_out(size: int) -> None:
    """A mask with every flag set gets no factor (nothing to write); one unset flag anywhere
    (first, middle or last place) gets one."""
    from fsparse.create.masks import keep_factors

    full = torch.ones(size, dtype=torch.bool)
    assert keep_factors({"a": torch.randn(size)}, {"a": full}) == {}
    for spot in (0, size // 2, size - 1):
        mask = full.clone()
        mask[spot] = False
        assert set(keep_factors({"a": torch.randn(size)}, {"a": mask})) == {"a"}


@pytest.mark.parametrize("size", [7, 65545, 786432])
def test_native_keep_factors_are_the_masks_and_write_what_the_multiply_writes(
        size: int, native_path) -> None:
    """Natively, a contiguous mask is its own factor (no copy), and apply_masks gives the
    weights ``w * mask`` gives, bit for bit (signs of zero, inf and NaN included)."""
    from fsparse.create.masks import apply_masks, keep_factors
    from fsparse.create.sharding import kept_counts

    gen = torch.Generator().manual_seed(size)
    mask = torch.rand(size, generator=gen) > 0.3
    strided = (torch.rand(2 * size, generator=gen) > 0.6)[::2]  # not contiguous: 0/1 floats
    masks = {"a": mask, "b": strided, "c": mask.clone()}
    assert kept_counts(masks) == {"a": int(mask.sum()), "b": int(strided.sum()),
                                  "c": int(mask.sum())}
    weights = {"a": torch.randn(size, dtype=torch.float64, generator=gen),
               "b": torch.randn(size, generator=gen), "c": torch.randn(size, generator=gen)}
    for w in weights.values():
        w[::5] = -w[::5].abs()
        w[1::11] = math.inf
        w[2::13] = math.nan
        w[3::7] = -0.0
    factors = keep_factors(weights, masks)
    _check_masks_that_prune_nothing_are_left_out(size)
    assert factors["a"] is mask and factors["c"] is masks["c"]
    assert factors["b"].dtype == torch.float32
    want = {n: w * masks[n].to(w.dtype) for n, w in weights.items()}
    apply_masks(weights, factors)
    for n, w in weights.items():
        bits = torch.int64 if w.dtype == torch.float64 else torch.int32
        assert torch.equal(w.view(bits), want[n].view(bits)), n
    apply_masks(weights, factors)  # again: nothing changes
    assert all(torch.equal(w.view(torch.int32 if w.dtype == torch.float32 else torch.int64),
                           want[n].view(torch.int32 if w.dtype == torch.float32 else torch.int64))
               for n, w in weights.items())
