"""Hostile arguments to every public pruners callable: only TypeError/ValueError, inputs intact.

Factories get plausible-or-hostile hyperparameters; the pruners they make then get
plausible-or-hostile params, grads and states for ``init`` and ``update``.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from fuzz_helpers import hostile_tensors, intact, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fsparse
from fsparse import pruners

ALLOWED = (TypeError, ValueError)
SETTINGS = settings(max_examples=25, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
SHAPES = st.sampled_from([(), (0,), (1,), (8,), (4, 8), (3, 1, 4), (2, 4, 2, 2), (9, 0)])
DTYPES = st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16,
                          torch.int64, torch.bool, torch.complex64])


def tensors() -> st.SearchStrategy[torch.Tensor]:
    return hostile_tensors(SHAPES, DTYPES)


JUNK = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
                 st.text(max_size=4), st.just(object()), st.lists(st.integers(), max_size=2))
NAMES = st.one_of(st.sampled_from(["w", "fc.weight", "b", "", "x" * 200]), st.none(),
                  st.integers(-3, 3), st.floats(), st.text(max_size=4), st.tuples(st.integers()))
LEVELS = st.one_of(st.floats(-1, 2), st.sampled_from([0.0, 0.5, 1.0, math.nan, math.inf]))
INTS = st.one_of(st.integers(-3, 12), st.sampled_from([10**400, 2**63]))
PATTERNS = st.sampled_from(["unstructured", "2:4", "1:8", "1x2", "4x4", "channel", "3:2", "x",
                            "0:4", 7, None])


def either(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(valid, valid, valid, JUNK)


PARAMS = st.dictionaries(st.sampled_from(["w", "fc.weight", "b"]), tensors(), max_size=3)
COMMON = {"sparsity_type": either(PATTERNS), "start_step": either(INTS),
          "end_step": either(st.none() | INTS), "update_every": either(INTS),
          "overrides": either(st.none() | st.dictionaries(NAMES, LEVELS, max_size=2))}
SPARSITY = either(LEVELS | st.dictionaries(NAMES, LEVELS, max_size=2))
DIST = either(st.sampled_from(["uniform", "erk", "normal"]))
FACTORIES: dict[str, tuple[list[Any], dict[str, Any]]] = {
    "magnitude": ([SPARSITY], {**COMMON, "distribution": DIST}),
    "global_magnitude": ([SPARSITY], COMMON),
    "random": ([SPARSITY], {**COMMON, "distribution": DIST, "seed": either(INTS)}),
    "saliency": ([SPARSITY], {**COMMON, "distribution": DIST}),
    "global_saliency": ([SPARSITY], COMMON),
    "snip": ([SPARSITY], {"sparsity_type": either(PATTERNS), "start_step": either(INTS)}),
    "ste_magnitude": ([SPARSITY], {**COMMON, "distribution": DIST}),
    "ste_random": ([SPARSITY], {**COMMON, "seed": either(INTS)}),
    "static_random": ([SPARSITY], {"seed": either(INTS), "sparsity_type": either(PATTERNS)}),
    "set": ([SPARSITY], {**COMMON, "drop_fraction": either(LEVELS), "seed": either(INTS)}),
    "rigl": ([SPARSITY], {**COMMON, "drop_fraction": either(LEVELS)}),
    "acdc": ([SPARSITY, either(INTS), either(INTS), either(INTS), either(INTS)],
             {"reset_optimizer": either(st.booleans()), "sparsity_type": either(PATTERNS)}),
    "movement": ([SPARSITY], {**COMMON, "distribution": DIST}),
    "soft_movement": ([either(LEVELS)], {"initial_threshold": either(LEVELS),
                                         "final_lambda": either(LEVELS), "score_lr": either(LEVELS),
                                         "initial_score": either(LEVELS),
                                         "start_step": either(INTS), "end_step": either(INTS)}),
}


@pytest.mark.parametrize("name", sorted(FACTORIES))
@SETTINGS
@given(data=st.data())
def test_factories_and_their_pruners_raise_only_type_or_value_errors(
        name: str, data: st.DataObject) -> None:
    positional, keywords = FACTORIES[name]
    args = [data.draw(s, label=f"arg{i}") for i, s in enumerate(positional)]
    kwargs = {k: data.draw(s, label=k) for k, s in keywords.items()
              if data.draw(st.booleans(), label=f"use {k}")}
    try:
        pruner = getattr(pruners, name)(*args, **kwargs)
    except ALLOWED:
        return
    params = data.draw(either(PARAMS), label="params")
    snaps = snapshot(params)
    try:
        state = pruner.init(params)
    except ALLOWED:
        assert intact(snaps)
        return
    for _ in range(3):
        grads = data.draw(either(st.none() | PARAMS | st.just(
            {n: torch.ones(p.shape) for n, p in params.items()})), label="grads")
        given_params = data.draw(st.one_of(st.just(params), either(PARAMS)), label="update params")
        snaps = snapshot({"p": given_params, "g": grads, "m": dict(state.masks)})
        try:
            state, params = pruner.update(state, given_params, grads=grads)
        except ALLOWED:
            pass
        assert intact(snaps)


@SETTINGS
@given(data=st.data())
def test_functions_raise_only_type_or_value_errors(data: st.DataObject) -> None:
    mask, drop, grow = (data.draw(either(tensors()), label=n) for n in ("mask", "drop", "grow"))
    snaps = snapshot({"m": mask, "d": drop, "g": grow})
    calls = [
        lambda: fsparse.drop_and_grow(mask, drop, grow, data.draw(either(LEVELS), label="f"),
                                      pattern=data.draw(either(PATTERNS), label="pattern")),
        lambda: fsparse.erk_sparsities(
            data.draw(either(st.dictionaries(NAMES, st.lists(INTS, max_size=3), max_size=3))),
            data.draw(either(LEVELS)), include_kernel=data.draw(either(st.booleans())),
            power_scale=data.draw(either(LEVELS))),
        lambda: fsparse.uniform_sparsities(
            data.draw(either(st.dictionaries(NAMES, st.lists(INTS, max_size=3), max_size=3))),
            data.draw(either(LEVELS)),
            overrides=data.draw(either(st.none() | st.dictionaries(NAMES, LEVELS)))),
        lambda: pruners.apply_masks(data.draw(either(st.just(pruners.PrunerState(
            {"w": torch.ones(8) > 0})))), data.draw(either(PARAMS)),
            straight_through=data.draw(either(st.booleans()))),
        lambda: pruners.load_state_dict(data.draw(either(st.fixed_dictionaries(
            {"masks": either(PARAMS), "step": either(INTS)})))),
        lambda: pruners.cosine_drop_fraction(data.draw(either(LEVELS)),
                                             data.draw(either(INTS)))(data.draw(either(INTS))),
    ]
    for call in calls:
        try:
            call()
        except ALLOWED:
            pass
    assert intact(snaps)


def test_intact_notices_a_mutation_and_accepts_untouched_nan() -> None:
    nan = torch.tensor([math.nan, 1.0])
    cnan = torch.tensor(complex("nan"))
    snaps = snapshot({"a": nan, "b": [cnan]})
    assert intact(snaps)
    nan[1] = 2.0
    assert not intact(snaps)
