"""``check_mask_fn``: a Hypothesis property test of a user's mask function.

A mask function maps ``(data, config)`` to a bool mask of the data's shape
(``False`` = pruned), as :func:`fsparse.config_norm_mask` does. The expected
zero count is computed here from the norm mask's documented rule, not by
calling the engine: the data is viewed as a matrix (size-1 dims dropped, 0-D
and 1-D data as one row, N-D as ``(shape[0], prod(shape[1:]))``), tiled into
``sparse_block_shape`` blocks from index 0; ``round(clamp(level, 0, 1) * n_blocks)``
blocks hold ``min(zeros_per_block, valid)`` zeros each and every other block none.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import FlakyFailure

from fsparse._src.config import MaskFn, SparsityConfig
from fsparse.testing.strategies import configs, levels, tensors

__all__ = ["MaskCheckError", "block_zero_counts", "check_mask_fn", "matrix_view_shape",
           "rule_zero_counts"]

CountFn = Callable[[torch.Tensor, SparsityConfig], int]
# Hypothesis's 'explain' phase would re-run a failing case hundreds of times.
_PHASES = tuple(p for p in Phase if p != Phase.explain)
DEFAULT_MAX_EXAMPLES = 25


class MaskCheckError(AssertionError):
    """A property of the mask function failed; the message names the property."""


def matrix_view_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The documented ``(rows, cols)`` matrix view of data of ``shape``."""
    squeezed = [d for d in shape if d != 1]
    if not squeezed:
        return (1, 1)
    if len(squeezed) == 1:
        return (1, squeezed[0])
    return (squeezed[0], math.prod(squeezed[1:]))


def block_zero_counts(mask: torch.Tensor, block: tuple[int, int]) -> tuple[list[int], list[int]]:
    """``(zeros, valid)`` per block of ``mask``'s matrix view, row-major over the block grid."""
    height, width = matrix_view_shape(tuple(mask.shape))
    matrix = (~mask).reshape(height, width).to(torch.int64)
    bh, bw = block
    zeros, valid = [], []
    for r in range(0, height, bh):
        for c in range(0, width, bw):
            part = matrix[r:r + bh, c:c + bw]
            zeros.append(int(part.sum()))
            valid.append(part.numel())
    return zeros, valid


def rule_zero_counts(shape: tuple[int, ...], config: SparsityConfig) -> tuple[int, list[int]]:
    """``(k, per-block zeros if selected)``: the norm rule's count for data of ``shape``."""
    height, width = matrix_view_shape(shape)
    if math.prod(shape) == 0:
        return 0, []
    bh, bw = config.sparse_block_shape
    per_block = [min(config.zeros_per_block, min(bh, height - r) * min(bw, width - c))
                 for r in range(0, height, bh) for c in range(0, width, bw)]
    level = min(max(config.sparsity_level, 0.0), 1.0)
    return round(level * len(per_block)), per_block


def _fail(prop: str, detail: str) -> MaskCheckError:
    return MaskCheckError(f"check_mask_fn: property '{prop}' failed: {detail}")


def _check_rule(mask: torch.Tensor, config: SparsityConfig, tolerance: int) -> None:
    k, per_block = rule_zero_counts(tuple(mask.shape), config)
    zeros, _ = block_zero_counts(mask, config.sparse_block_shape)
    total = sum(zeros)
    if tolerance:
        ordered = sorted(per_block)
        low, high = sum(ordered[:k]), sum(ordered[len(ordered) - k:]) if k else 0
        if not low - tolerance <= total <= high + tolerance:
            raise _fail("zero count", f"{total} zeros, the rule asks for {low}..{high} "
                        f"(tolerance {tolerance}) with k={k} of {len(per_block)} blocks")
        return
    if config.zeros_per_block == 0 or k == 0:
        if total:
            raise _fail("zero count", f"{total} zeros, the rule asks for none "
                        f"(k={k}, zeros_per_block={config.zeros_per_block})")
        return
    pruned = [i for i, z in enumerate(zeros) if z]
    if len(pruned) != k:
        raise _fail("zero count", f"{len(pruned)} blocks hold zeros, the rule asks for "
                    f"k=round(clamp({config.sparsity_level}) * {len(zeros)}) = {k}")
    wrong = [(i, zeros[i], per_block[i]) for i in pruned if zeros[i] != per_block[i]]
    if wrong:
        i, got, want = wrong[0]
        raise _fail("zero count", f"block {i} holds {got} zeros, the rule asks for "
                    f"min(zeros_per_block, valid) = {want}")


def _call(fn: MaskFn, data: torch.Tensor, config: SparsityConfig) -> torch.Tensor:
    before, version = data.clone(), data._version
    mask = fn(data, config)
    if data._version != version or not torch.equal(data, before):
        raise _fail("input not mutated", "the mask function changed its data in place")
    if not isinstance(mask, torch.Tensor):
        raise _fail("bool mask", f"returned {type(mask).__name__}, not a torch.Tensor")
    if mask.dtype != torch.bool:
        raise _fail("bool mask", f"dtype {mask.dtype}, not torch.bool")
    if mask.shape != data.shape:
        raise _fail("shape", f"mask shape {tuple(mask.shape)}, data shape {tuple(data.shape)}")
    if mask.device != data.device:
        raise _fail("device", f"mask on {mask.device}, data on {data.device}")
    return mask


def _check_non_finite(fn: MaskFn, data: torch.Tensor, config: SparsityConfig,
                      draw: st.DataObject) -> None:
    if data.numel() == 0:
        return
    bad = data.clone()
    value = draw.draw(st.sampled_from([math.nan, math.inf, -math.inf]), label="non-finite value")
    flat = draw.draw(st.integers(0, data.numel() - 1), label="non-finite at flat index")
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), data.shape))
    bad[index] = value
    try:
        fn(bad, config)
    except ValueError:
        return
    except Exception as error:
        raise _fail("non-finite data", f"{value} at {index} raised {type(error).__name__}, "
                    f"not ValueError") from error
    raise _fail("non-finite data", f"{value} at {index} was accepted (expected ValueError)")


def check_mask_fn(fn: MaskFn | None = None, *,
                  data: st.SearchStrategy[torch.Tensor] | None = None,
                  config: Callable[[tuple[int, ...]], st.SearchStrategy[SparsityConfig]]
                  | None = None, count: CountFn | None = None, tolerance: int = 0,
                  monotone: bool = False, non_finite: bool = True,
                  device: str | torch.device | None = None,
                  max_examples: int = DEFAULT_MAX_EXAMPLES,
                  hypothesis_settings: settings | None = None) -> Any:
    """A property test of ``fn(data, config) -> bool mask``; call it to run it.

    Over ``data`` (default :func:`~fsparse.testing.tensors`) and ``config(shape)``
    (default :func:`~fsparse.testing.configs`) it asserts: a bool tensor of the
    data's shape and device; the data unchanged (values and version counter);
    the same mask on a second call; the zero count (the norm rule in the module
    docstring, or ``count(data, config)``, within ``tolerance`` zeros);
    ``ValueError`` for NaN/Inf data (``non_finite``); with ``monotone``, a higher
    level only adds zeros. Use ``check_mask_fn(fn)()`` in a test, or
    ``@check_mask_fn`` / ``@check_mask_fn(max_examples=...)`` on a function
    named ``test_...``. A failure raises :class:`MaskCheckError` naming the
    property, on Hypothesis's shrunk (minimal) example.
    """
    if fn is None:
        return lambda f: check_mask_fn(
            f, data=data, config=config, count=count, tolerance=tolerance, monotone=monotone,
            non_finite=non_finite, device=device, max_examples=max_examples,
            hypothesis_settings=hypothesis_settings)
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    data_strategy = data if data is not None else tensors()
    config_strategy = config if config is not None else configs
    chosen = hypothesis_settings or settings(
        max_examples=max_examples, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        report_multiple_bugs=False, phases=_PHASES)

    @chosen
    @given(st.data())
    def property_test(draw: st.DataObject) -> None:
        tensor = draw.draw(data_strategy, label="data")
        if device is not None:
            tensor = tensor.to(device)
        cfg = draw.draw(config_strategy(tuple(tensor.shape)), label="config")
        mask = _call(fn, tensor, cfg)
        if not torch.equal(mask, _call(fn, tensor, cfg)):
            raise _fail("determinism", "a second call on the same input gave another mask")
        if count is not None:
            want, got = int(count(tensor, cfg)), int((~mask).sum())
            if abs(got - want) > tolerance:
                raise _fail("zero count", f"{got} zeros, count() asks for {want} "
                            f"(tolerance {tolerance})")
        else:
            _check_rule(mask, cfg, tolerance)
        if monotone:
            other = draw.draw(levels(edges=False), label="second level")
            low, high = sorted((cfg.sparsity_level, other))
            lo_mask = _call(fn, tensor, cfg.replace(sparsity_level=low))
            hi_mask = _call(fn, tensor, cfg.replace(sparsity_level=high))
            if not bool((hi_mask <= lo_mask).all()):
                raise _fail("monotone in the level", f"level {high} keeps an element that "
                            f"level {low} prunes")
        if non_finite:
            _check_non_finite(fn, tensor, cfg, draw)

    def run() -> None:
        try:
            property_test()
        except FlakyFailure as error:  # failed once, passed on replay: nondeterministic
            found = [e for e in error.exceptions if isinstance(e, MaskCheckError)]
            if not found:
                raise
            raise MaskCheckError(f"{found[0]} (the failure did not reproduce on replay: the "
                        "results change from run to run)") from error

    run.__name__ = getattr(fn, "__name__", "check_mask_fn")
    run.__qualname__ = run.__name__
    return run
