"""fsparse.testing.check_pruner: real pruners pass it; each deliberately broken pruner fails."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
import torch

import fsparse
from fsparse import pruners
from fsparse.pruners import Pruner, PrunerState
from fsparse.testing import PrunerCheckError, check_pruner, cubic_ramp, param_dicts, pruned_units
from fsparse.testing.pruner_checks import simulate

FAST = {"max_examples": 4, "steps": 4}


@pytest.mark.parametrize(("make", "kwargs"), [
    (lambda: pruners.magnitude(0.6, start_step=1, end_step=3), {}),
    (lambda: pruners.magnitude(0.5, sparsity_type="2:4", distribution="erk"), {}),
    (lambda: pruners.random(0.7, seed=3, sparsity_type="channel", end_step=2), {}),
    (lambda: pruners.global_magnitude(0.7, sparsity_type="1x4", end_step=2),
     {"scope": "global"}),
    (lambda: pruners.set(0.5, seed=3, update_every=2), {"sparsity_at": lambda t, s: s}),
    (lambda: pruners.saliency(0.5, sparsity_type="2x2"), {}),
])
def test_fsparse_pruners_pass(make: Callable[[], Pruner], kwargs: dict[str, Any]) -> None:
    check_pruner(make(), **{**FAST, **kwargs})()


@check_pruner(max_examples=3, steps=3)
def test_decorator_form() -> Pruner:
    return pruners.ste_magnitude(0.5, sparsity_type="1x4")


def _wrap(update: Callable[..., Any], base: Pruner | None = None, **fields: Any) -> Pruner:
    base = base or pruners.magnitude(0.5)
    return Pruner(fields.pop("name", "broken"), fields.pop("init", base.init), update,
                  base.hyperparams, needs_grads=base.needs_grads)


BASE = pruners.magnitude(0.5)


def mutates_params(state: PrunerState, params: Any, *, grads: Any = None) -> Any:
    new, out = BASE.update(state, params, grads=grads)
    for name, p in params.items():
        p.mul_(new.masks[name])  # zeroes the caller's weights in place
    return new, out


def one_too_many(state: PrunerState, params: Any, *, grads: Any = None) -> Any:
    new, out = BASE.update(state, params, grads=grads)
    masks = {}
    for name, mask in new.masks.items():
        mask = mask.clone()
        live = mask.reshape(-1).nonzero()
        if len(live):
            mask.reshape(-1)[live[0]] = False
        masks[name] = mask
    return new.replace(masks=masks), out


_UNSEEDED = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)


def nondeterministic(state: PrunerState, params: Any, *, grads: Any = None) -> Any:
    """Right counts, but the pruned places come from a generator nobody seeded."""
    new, _ = BASE.update(state, params, grads=grads)
    masks = {}
    for name, mask in new.masks.items():
        pruned = int(mask.numel() - mask.count_nonzero())
        masks[name] = fsparse.select_count_mask(
            torch.rand(mask.shape, generator=_UNSEEDED), pruned)
    return new.replace(masks=masks), params


def step_not_advanced(state: PrunerState, params: Any, *, grads: Any = None) -> Any:
    new, out = BASE.update(state, params, grads=grads)
    return new.replace(step=state.step), out


def wrong_mask_shape(state: PrunerState, params: Any, *, grads: Any = None) -> Any:
    new, out = BASE.update(state, params, grads=grads)
    return new.replace(masks={n: m.reshape(-1) for n, m in new.masks.items()}), out


BLOCKS = pruners.magnitude(0.5, sparsity_type="1x4")


def splits_blocks(state: PrunerState, params: Any, *, grads: Any = None) -> Any:
    new, out = pruners.magnitude(0.5).update(state, params, grads=grads)  # unstructured
    return new, out


class Foreign(torch.Tensor):
    """A tensor subclass that torch.load(weights_only=True) refuses."""


def unloadable_state(state: PrunerState, params: Any, *, grads: Any = None) -> Any:
    new, out = BASE.update(state, params, grads=grads)
    return new.replace(stats={"extra": torch.zeros(1).as_subclass(Foreign)}), out


def impure_init(params: Any) -> PrunerState:
    for p in params.values():
        p.add_(0.0)
    return BASE.init(params)


@pytest.mark.parametrize(("pruner", "prop"), [
    (_wrap(mutates_params), "purity"),
    (_wrap(BASE.update, init=impure_init), "purity"),
    (_wrap(one_too_many), "zero count"),
    (_wrap(nondeterministic), "reproducibility"),
    (_wrap(step_not_advanced), "step"),
    (_wrap(wrong_mask_shape), "masks"),
    (_wrap(splits_blocks, BLOCKS), "pattern"),
    (_wrap(unloadable_state), "round trip"),
])
def test_broken_pruner_is_caught(pruner: Pruner, prop: str) -> None:
    with pytest.raises(PrunerCheckError, match=f"property '{prop}'"):
        check_pruner(pruner, **FAST)()


def test_counts_can_be_skipped_but_the_pattern_still_holds() -> None:
    check_pruner(_wrap(one_too_many), sparsity_at=False, **FAST)()
    with pytest.raises(PrunerCheckError, match="property 'pattern'"):
        check_pruner(_wrap(splits_blocks, BLOCKS), sparsity_at=False, **FAST)()


def test_cubic_ramp_is_the_documented_schedule() -> None:
    ramp = cubic_ramp(1, 5, 2)
    assert [ramp(t, 0.8) for t in (0, 1, 2)] == [0.0, 0.0, 0.0]
    assert ramp(3, 0.8) == pytest.approx(0.8 * (1 - 0.5 ** 3))
    assert ramp(5, 0.8) == ramp(9, 0.8) == 0.8
    assert cubic_ramp(2, 2, 1)(2, 0.5) == 0.5


def test_pruned_units_reads_each_pattern() -> None:
    from fsparse import parse_pattern
    mask = torch.tensor([[True, False, True, False], [False, False, True, True]])
    assert pruned_units(mask, parse_pattern("unstructured")) == (4, 8)
    assert pruned_units(mask, parse_pattern("2:4")) == (2, 2)  # each row keeps 2 of 4
    assert pruned_units(torch.tensor([[True, True], [False, False]]),
                        parse_pattern("channel")) == (1, 2)
    with pytest.raises(PrunerCheckError, match="pattern"):
        pruned_units(mask, parse_pattern("1x2"))


def test_simulate_and_arguments() -> None:
    params = {"w": torch.randn(4, 4)}
    history = simulate(pruners.magnitude(0.5), params, {"w": torch.randn(4, 4)}, 2, 0,
                       lambda *a: None)
    assert len(history) == 2 and int((~history[-1]["w"]).sum()) == 8
    with pytest.raises(ValueError, match="scope"):
        check_pruner(BASE, scope="layer")
    with pytest.raises(ValueError, match="sparsity_at"):
        check_pruner(Pruner("bare", BASE.init, BASE.update))
    with pytest.raises(TypeError, match="Pruner"):
        check_pruner(lambda: 3)
    check_pruner(BASE, params=param_dicts(layers=("embedding",), grads=False), **FAST)()
