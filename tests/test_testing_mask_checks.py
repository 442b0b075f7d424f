"""fsparse.testing.check_mask_fn: the engine passes it; each deliberately broken mask fn fails."""

from __future__ import annotations

import math

import pytest
import torch

import fsparse
from fsparse import SparsityConfig, config_norm_mask
from fsparse.testing import (
    MaskCheckError,
    block_zero_counts,
    check_mask_fn,
    configs,
    levels,
    rule_zero_counts,
    tensors,
)

FAST = {"max_examples": 30}


def test_config_norm_mask_passes_with_defaults() -> None:
    check_mask_fn(config_norm_mask)()


def test_config_norm_mask_is_monotone_in_the_level() -> None:
    check_mask_fn(config_norm_mask, monotone=True, non_finite=False, **FAST)()


@check_mask_fn(max_examples=10)
def test_decorator_form_runs_as_a_pytest_test(data: torch.Tensor,
                                              config: SparsityConfig) -> torch.Tensor:
    return config_norm_mask(data, config)


def test_rule_counts_are_computed_from_the_rule() -> None:
    cfg = fsparse.make_config(sparsity_level=0.5, sparse_block_shape=(2, 3), zeros_per_block=4)
    k, per_block = rule_zero_counts((5, 1, 7), cfg)  # matrix (5, 7): 3 x 3 blocks
    assert (k, len(per_block)) == (round(0.5 * 9), 9)
    assert per_block == [4, 4, 2, 4, 4, 2, 3, 3, 1]  # min(4, valid): edge blocks are partial
    zeros, valid = block_zero_counts(torch.ones(5, 7, dtype=torch.bool), (2, 3))
    assert zeros == [0] * 9 and valid == [6, 6, 2, 6, 6, 2, 3, 3, 1]


def _fails(fn, prop: str, **kwargs) -> None:
    """The check catches the planted bug. Up to 300 examples: the search stops at the first
    failure, and 30 missed a bug showing only when some element is pruned in ~7 % of
    fresh-clone runs (no example database there)."""
    with pytest.raises(MaskCheckError, match=f"property '{prop}'"):
        check_mask_fn(fn, **{"max_examples": 300, **kwargs})()


def _blocks(data: torch.Tensor, config: SparsityConfig) -> int:
    return len(rule_zero_counts(tuple(data.shape), config)[1])


# The deliberately broken mask functions the checks must catch.
def wrong_shape(data: torch.Tensor, config: SparsityConfig) -> torch.Tensor:
    return config_norm_mask(data, config).reshape(-1)[None]


def wrong_dtype(data: torch.Tensor, config: SparsityConfig) -> torch.Tensor:
    return config_norm_mask(data, config).to(torch.uint8)


def wrong_device(data: torch.Tensor, config: SparsityConfig) -> torch.Tensor:
    return torch.ones(data.shape, dtype=torch.bool, device="meta")


def mutates_values(data: torch.Tensor, config: SparsityConfig) -> torch.Tensor:
    mask = config_norm_mask(data, config)
    data.masked_fill_(~mask, 0.0)  # "prunes" the caller's tensor
    if data.numel():
        data.view(-1)[0] = 1.5 if data.is_contiguous() else data.reshape(-1)[0]
    return mask


def bumps_version(data: torch.Tensor, config: SparsityConfig) -> torch.Tensor:
    data.mul_(1.0)  # same values, but an in-place op all the same
    return config_norm_mask(data, config)


def one_block_too_many(data: torch.Tensor, config: SparsityConfig) -> torch.Tensor:
    n = _blocks(data, config)
    level = min(max(config.sparsity_level, 0.0), 1.0)
    return config_norm_mask(data, config.replace(sparsity_level=level + 1.0 / max(n, 1)))


def one_zero_short(data: torch.Tensor, config: SparsityConfig) -> torch.Tensor:
    mask = config_norm_mask(data, config).contiguous().clone()
    pruned = (~mask).reshape(-1).nonzero()
    if len(pruned):
        mask.reshape(-1)[pruned[0]] = True  # mask is a fresh contiguous clone
    return mask


def nondeterministic(data: torch.Tensor, config: SparsityConfig) -> torch.Tensor:
    return config_norm_mask(torch.rand(data.shape, dtype=torch.float64), config)


def accepts_nan(data: torch.Tensor, config: SparsityConfig) -> torch.Tensor:
    return config_norm_mask(torch.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0), config)


def type_error_on_nan(data: torch.Tensor, config: SparsityConfig) -> torch.Tensor:
    if not bool(torch.isfinite(data).all()):
        raise TypeError("bad data")
    return config_norm_mask(data, config)


def not_monotone(data: torch.Tensor, config: SparsityConfig) -> torch.Tensor:
    # Right counts, but ranks a level-dependent rotation of the data: masks are not nested.
    shift = int(config.sparsity_level * 1000)
    rolled = data.reshape(-1).roll(shift).reshape(data.shape)
    return config_norm_mask(rolled, config)


@pytest.mark.parametrize(("fn", "prop"), [
    (wrong_shape, "shape"),
    (wrong_dtype, "bool mask"),
    (wrong_device, "device"),
    (mutates_values, "input not mutated"),
    (bumps_version, "input not mutated"),
    (one_block_too_many, "zero count"),
    (one_zero_short, "zero count"),
    (accepts_nan, "non-finite data"),
    (type_error_on_nan, "non-finite data"),
])
def test_broken_mask_fn_is_caught(fn, prop: str) -> None:
    _fails(fn, prop)


def test_nondeterminism_is_caught() -> None:
    _fails(nondeterministic, "determinism", non_finite=False)


def test_non_monotone_is_caught_only_when_asked() -> None:
    check_mask_fn(not_monotone, non_finite=False, **FAST)()  # the counts are right
    _fails(not_monotone, "monotone in the level", monotone=True, non_finite=False,
           data=tensors(shape=(4, 8), ties=False, zeros=False),
           config=lambda shape: configs(shape, block_shapes=[(1, 1), (1, 2)],
                                        level=levels(min_level=0.1, max_level=0.9)))


def test_count_function_and_tolerance() -> None:
    def total(data: torch.Tensor, config: SparsityConfig) -> int:
        k, per_block = rule_zero_counts(tuple(data.shape), config)
        return sum(sorted(per_block)[:k]) if config.zeros_per_block else 0

    whole = {"config": lambda shape: configs(shape, block_shapes=[(1, 1)])}
    check_mask_fn(config_norm_mask, count=total, **whole, **FAST)()
    check_mask_fn(one_zero_short, count=total, tolerance=1, **whole, **FAST)()
    _fails(one_zero_short, "zero count", count=total, **whole)
    check_mask_fn(one_zero_short, tolerance=1, **FAST)()
    _fails(one_block_too_many, "zero count", tolerance=1,
           config=lambda shape: configs(shape, block_shapes=[(2, 2)], zeros_per_block=False))


def test_failure_reports_a_shrunk_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(MaskCheckError) as info:
        check_mask_fn(wrong_shape, **FAST)()
    assert "mask shape (1, 1), data shape ()" in str(info.value)  # shrunk to a 0-D tensor


def test_narrowed_data_and_device() -> None:
    check_mask_fn(config_norm_mask, data=tensors(dtypes=(torch.bfloat16,), extremes=True),
                  device="cpu", **FAST)()


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="callable"):
        check_mask_fn(3)
    assert math.isfinite(FAST["max_examples"])
