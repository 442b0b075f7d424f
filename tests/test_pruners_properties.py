"""Hypothesis properties of every pruner over every pattern, against independent oracles.

Each example simulates a few training steps (weights drift, fresh gradients) and
checks at every step: bool masks of the data's shape; whole units of the pattern
(N:M groups keep exactly N); the exact count of pruned units per tensor that the
schedule and distribution call for; ``update`` leaves every input (values and
version counters) unchanged; weights are new tensors only where some came back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fsparse
from fsparse import pruners
from fsparse._src.engine import NM, Channel, Unstructured, parse_pattern
from fsparse._src.engine.patterns import matrix_shape
from fsparse.testing import param_dicts

SETTINGS = settings(max_examples=6, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
SHAPES = [(4, 8), (3, 12), (2, 4, 3, 3), (16,), (8, 4)]
PATTERNS = ["unstructured", "1x4", "2x2", "2:4", "1:4", "channel"]
STEPS = 8
START, END, EVERY = 1, 5, 2  # the ramp's steps
ACDC = {"init_dense_steps": 1, "final_sparse_start": 6, "sparse_steps": 2, "dense_steps": 1}


def ramp(t: int) -> float:
    """The cubic ramp written out (0 before START, held between updates, 1 from END)."""
    if t < START:
        return 0.0
    held = END if t >= END else START + EVERY * ((t - START) // EVERY)
    frac = (held - START) / (END - START)
    return 1.0 + (0.0 - 1.0) * (1.0 - frac) ** 3.0


def acdc_sparse(t: int) -> bool:
    first, final = ACDC["init_dense_steps"], ACDC["final_sparse_start"]
    cycle = ACDC["sparse_steps"] + ACDC["dense_steps"]
    return t >= final or (t >= first and (t - first) % cycle < ACDC["sparse_steps"])


def units_pruned(mask: torch.Tensor, pattern: Any) -> tuple[int, int]:
    """(pruned units, units) of ``mask``; asserts the pattern's structure holds exactly."""
    shape = tuple(mask.shape)
    if isinstance(pattern, Unstructured):
        return int((~mask).sum()), mask.numel()
    if isinstance(pattern, NM):
        view = mask.permute(0, *range(2, mask.dim()), 1) if mask.dim() >= 3 else mask
        live = view.reshape(-1, pattern.m).sum(1)
        assert bool(((live == pattern.n) | (live == pattern.m)).all()), "N:M groups broken"
        return int((live == pattern.n).sum()), live.numel()
    if isinstance(pattern, Channel):
        rows = mask.reshape(shape[0] if shape else 1, -1)
        units = [rows[i] for i in range(rows.shape[0])]
    else:
        matrix = mask.reshape(matrix_shape(shape))
        bh, bw = min(pattern.height, matrix.shape[0]), min(pattern.width, matrix.shape[1])
        units = [matrix[i:i + bh, j:j + bw] for i in range(0, matrix.shape[0], bh)
                 for j in range(0, matrix.shape[1], bw)]
    assert all(bool(u.all()) or not bool(u.any()) for u in units), "a unit is partly pruned"
    return sum(not bool(u.any()) for u in units), len(units)


def expected(pattern: Any, units: int, sparsity: float) -> int:
    if isinstance(pattern, NM):
        return units if sparsity > 0 else 0
    return round(min(max(sparsity, 0.0), 1.0) * units)


def _ramped(factory: Callable[..., pruners.Pruner], **extra: Any) -> Callable[..., Any]:
    def make(sparsity: float, pattern: str, distribution: str, seed: int) -> pruners.Pruner:
        kwargs = dict(sparsity_type=pattern, start_step=START, end_step=END,
                      update_every=EVERY, **extra)
        if "global" not in factory.__name__:
            kwargs["distribution"] = distribution
        if factory in (pruners.random, pruners.ste_random):
            kwargs["seed"] = seed
        return factory(sparsity, **kwargs)
    return make


# name -> (make(sparsity, pattern, distribution, seed), kind, needs grads)
ALGORITHMS: dict[str, tuple[Callable[..., pruners.Pruner], str, bool]] = {
    "magnitude": (_ramped(pruners.magnitude), "ramp", False),
    "global_magnitude": (_ramped(pruners.global_magnitude), "global", False),
    "random": (_ramped(pruners.random), "ramp", False),
    "saliency": (_ramped(pruners.saliency), "ramp", True),
    "global_saliency": (_ramped(pruners.global_saliency), "global", True),
    "snip": (lambda s, p, d, seed: pruners.snip(s, sparsity_type=p, start_step=START),
             "snip", True),
    "ste_magnitude": (_ramped(pruners.ste_magnitude), "ramp", False),
    "ste_random": (_ramped(pruners.ste_random), "ramp", False),
    "movement": (_ramped(pruners.movement), "ramp", True),
    "static_random": (lambda s, p, d, seed: pruners.static_random(
        s, sparsity_type=p, distribution=d, seed=seed), "constant", False),
    "set": (lambda s, p, d, seed: pruners.set(
        s, sparsity_type=p, distribution=d, seed=seed, update_every=2, drop_fraction=0.5),
        "constant", False),
    "rigl": (lambda s, p, d, seed: pruners.rigl(
        s, sparsity_type=p, distribution=d, seed=seed, update_every=2, end_step=6,
        drop_fraction=pruners.cosine_drop_fraction(0.5, 6)), "constant", True),
    "acdc": (lambda s, p, d, seed: pruners.acdc(
        s, **ACDC, sparsity_type=p, distribution=d), "acdc", False),
}
DST = {"set", "rigl"}


@st.composite
def cases(draw: st.DrawFn, name: str) -> dict[str, Any]:
    pattern = draw(st.sampled_from([p for p in PATTERNS if name not in DST or ":" not in p]))
    params, _ = draw(param_dicts(max_layers=3, max_side=12, multiple_of=4,
                                 bias=draw(st.booleans()), grads=False))
    return {
        "pattern": pattern,
        "shapes": {n: tuple(p.shape) for n, p in params.items()},
        "sparsity": draw(st.sampled_from([0.0, 0.3, 0.5, 0.75, 0.9, 1.0])),
        "distribution": draw(st.sampled_from(["uniform", "erk"])),
        "seed": draw(st.integers(0, 2**20)),
        "ties": draw(st.booleans()),
    }


def _snap(tree: Any) -> list[tuple[torch.Tensor, int, torch.Tensor]]:
    import optree
    return [(x, x._version, x.clone()) for x in optree.tree_leaves(tree)
            if isinstance(x, torch.Tensor)]


def simulate(name: str, case: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
    make, kind, needs_grads = ALGORITHMS[name]
    pattern = parse_pattern(case["pattern"])
    pruner = make(case["sparsity"], case["pattern"], case["distribution"], case["seed"])
    gen = torch.Generator().manual_seed(case["seed"])
    params = {n: torch.randn(s, generator=gen) for n, s in case["shapes"].items()}
    if case["ties"]:
        params = {n: p.round() for n, p in params.items()}
    state = pruner.init(params)
    shapes = case["shapes"]
    if kind in ("global", "snip"):
        assert dict(state.targets) == {n: case["sparsity"] for n in shapes}
    elif case["distribution"] == "erk":
        assert dict(state.targets) == fsparse.erk_sparsities(shapes, case["sparsity"])
    else:
        assert dict(state.targets) == fsparse.uniform_sparsities(shapes, case["sparsity"])
    history = []
    for t in range(STEPS):
        grads = {n: torch.randn(p.shape, generator=gen) for n, p in params.items()}
        inputs = _snap((state, params, grads))
        new, out = pruner.update(state, params, grads=grads if needs_grads else None)
        for x, version, copy in inputs:
            assert x._version == version and torch.equal(x, copy), "update changed an input"
        assert new.step == t + 1 and state.step == t
        revived = pruners.activated(state, new)
        for n, p in params.items():
            mask = new.masks[n]
            assert mask.dtype == torch.bool and mask.shape == p.shape
            if out[n] is not p:
                assert bool(revived[n].any()) and bool((out[n][revived[n]] == 0).all())
                assert torch.equal(out[n][~revived[n]], p[~revived[n]])
            elif kind not in ("ramp", "global", "snip"):
                assert not bool(revived[n].any()) or bool((p[revived[n]] == 0).all())
        counts = {n: units_pruned(new.masks[n], pattern) for n in params}
        if kind == "global" or kind == "snip":
            level = case["sparsity"] * (ramp(t) if kind == "global" else float(t >= START))
            total = sum(u for _, u in counts.values())
            if isinstance(pattern, NM):
                assert all(k == expected(pattern, u, level) for k, u in counts.values())
            else:
                assert sum(k for k, _ in counts.values()) == expected(pattern, total, level)
        else:
            for n, (k, units) in counts.items():
                level = {"ramp": ramp(t), "constant": 1.0,
                         "acdc": float(acdc_sparse(t))}[kind] * new.targets[n]
                assert k == expected(pattern, units, level), (n, t, k, units, level)
        history.append(dict(new.masks))
        state = new
        params = {n: p + 0.3 * torch.randn(p.shape, generator=gen) for n, p in out.items()}
    return history


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
@SETTINGS
@given(data=st.data())
def test_masks_follow_schedule_distribution_and_pattern(name: str, data: st.DataObject) -> None:
    simulate(name, data.draw(cases(name)))


@pytest.mark.parametrize("name", ["random", "ste_random", "static_random", "set", "rigl"])
@settings(max_examples=3, deadline=None, database=None)
@given(data=st.data())
def test_seeded_runs_reproduce(name: str, data: st.DataObject) -> None:
    case = data.draw(cases(name))
    first, second = simulate(name, case), simulate(name, case)
    assert all(torch.equal(a[n], b[n]) for a, b in zip(first, second) for n in a)


@settings(max_examples=40, deadline=None, database=None)
@given(pattern=st.sampled_from(["unstructured", "1x4", "2x2", "channel"]),
       shape=st.sampled_from(SHAPES), sparsity=st.floats(0.0, 1.0),
       fraction=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_drop_and_grow_keeps_the_live_count(pattern: str, shape: tuple, sparsity: float,
                                             fraction: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    mask = fsparse.select_mask(torch.rand(shape, generator=gen), sparsity, pattern)
    drop, grow = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    new = fsparse.drop_and_grow(mask, drop, grow, fraction, pattern=pattern)
    parsed = parse_pattern(pattern)
    assert units_pruned(new, parsed) == units_pruned(mask, parsed)
    live = units_pruned(mask, parsed)[1] - units_pruned(mask, parsed)[0]
    kept = units_pruned(mask | new, parsed)
    regrown = (kept[1] - kept[0]) - live
    assert regrown <= live - round(live * (1 - fraction))  # at most the dropped come back


@pytest.mark.parametrize("large", [False, True])
@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_drop_and_grow_on_computed_scores_is_the_same_rule(monkeypatch, large, data):
    """The pruners' batched exchange (|w|, |g| or seeded noise read in batches) gives the
    mask of drop_and_grow on the materialized scores, ties included."""
    from fsparse._src.engine import keep_masks as keep_mod
    from fsparse._src.engine import threshold as threshold_mod
    from fsparse._src.engine.scoring import AbsScores, RandomScores
    from fsparse.pruners._drop_and_grow import exchange_computed

    if large:  # the bracket pass on small data: tiny batches that span pieces
        monkeypatch.setattr(threshold_mod, "SMALL", 0)
        monkeypatch.setattr(keep_mod, "PASS_SLICE", data.draw(st.sampled_from([8, 13, 64])))
    n = data.draw(st.integers(1, 300))
    seed = data.draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, generator=gen) < data.draw(st.floats(0.0, 1.0))
    w = (torch.randn(n, generator=gen) * 3).round()  # ties
    g = (torch.randn(n, generator=gen) * 2).round()
    fraction = data.draw(st.sampled_from([0.0, 0.25, 0.3, 0.5, 1.0]))
    rigl = fsparse.drop_and_grow(mask, w.abs(), g.abs(), fraction)
    assert torch.equal(exchange_computed(mask, AbsScores(w), AbsScores(g), fraction), rigl)
    noise = RandomScores((n,), seed)
    set_ = fsparse.drop_and_grow(mask, w.abs(), noise.materialize(), fraction)
    assert torch.equal(exchange_computed(mask, AbsScores(w), noise, fraction), set_)
    assert int(set_.sum()) == int(mask.sum())
