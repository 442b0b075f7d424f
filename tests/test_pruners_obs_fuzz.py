"""Hostile input to obs/mfac and their init/update: only TypeError/ValueError, inputs intact."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from fuzz_helpers import hostile_tensors, intact, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsparse import pruners

SETTINGS = settings(max_examples=30, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
SHAPES = st.sampled_from([(), (0,), (1,), (8,), (4, 8), (3, 1, 4), (2, 4, 2, 2), (9, 0)])
DTYPES = st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16,
                          torch.int64, torch.bool])
JUNK = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
                 st.text(max_size=3), st.just(object()))
INTS = st.one_of(st.integers(-2, 6), st.sampled_from([10**400, 2**63]))


def either(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(valid, valid, valid, JUNK)


def tensors() -> st.SearchStrategy[torch.Tensor]:
    return hostile_tensors(SHAPES, DTYPES)


PARAMS = st.dictionaries(st.sampled_from(["w", "fc.weight"]), tensors(), max_size=2)
KWARGS = {
    "num_grads": either(INTS), "damp": either(st.floats(-1, 2) | st.just(1e-300)),
    "block_size": either(INTS), "num_recomputations": either(INTS),
    "distribution": either(st.sampled_from(["uniform", "erk", "global", "x"])),
    "sparsity_type": either(st.sampled_from(["unstructured", "2:4", "1x2", "2x2", "channel"])),
    "start_step": either(INTS), "end_step": either(st.none() | INTS),
    "update_every": either(INTS)}


@pytest.mark.parametrize("name", ["obs", "mfac"])
@SETTINGS
@given(data=st.data())
def test_only_type_or_value_errors(name: str, data: st.DataObject) -> None:
    sparsity = data.draw(either(st.floats(-0.5, 1.5)), label="sparsity")
    kwargs = {k: data.draw(s, label=k) for k, s in KWARGS.items()
              if data.draw(st.booleans(), label=f"use {k}")}
    try:
        pruner = getattr(pruners, name)(sparsity, **kwargs)
    except (TypeError, ValueError):
        return
    params = data.draw(either(PARAMS), label="params")
    try:
        state = pruner.init(params)
    except (TypeError, ValueError):
        return
    for _ in range(4):
        grads = data.draw(st.one_of(st.none(), PARAMS, st.just(
            {n: torch.randn(p.shape) for n, p in params.items()})), label="grads")
        snaps = snapshot([*params.values(), *(grads or {}).values(), *state.masks.values()])
        try:
            state, params = pruner.update(state, params, grads=grads)
        except (TypeError, ValueError):
            pass
        assert intact(snaps)
