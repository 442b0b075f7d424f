"""OBS/oBERT and M-FAC pruners: quadratic-loss quality, exact counts, schedule, purity, errors."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import torch

from fsparse import pruners
from fsparse._src.engine import parse_pattern
from fsparse._src.engine.selection import pruned_count

Factory = Callable[..., pruners.Pruner]
SECOND_ORDER: list[Factory] = [pruners.obs, pruners.mfac]


def quadratic(seed: int, d: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(w*, H, L)``: a correlated, badly scaled SPD ``H = L L^T`` and an optimum ``w*``."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=gen, dtype=torch.float64)
    scales = torch.exp(torch.empty(d, dtype=torch.float64).uniform_(-2.0, 2.0, generator=gen))
    h = scales[:, None] * (a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)) * scales
    w_star = torch.randn(d, generator=gen, dtype=torch.float64)
    return w_star, h, torch.linalg.cholesky(h)


def count(state: pruners.PrunerState) -> int:
    value = state.stats["grad_count"]
    assert isinstance(value, torch.Tensor)
    return int(value)


def buffers(state: pruners.PrunerState) -> Mapping[str, torch.Tensor]:
    value = state.stats["grads"]
    assert isinstance(value, Mapping)
    return value


def loss(w: torch.Tensor, w_star: torch.Tensor, h: torch.Tensor) -> float:
    e = w.reshape(-1) - w_star
    return float(0.5 * e @ h @ e)


def run_one_shot(pruner: pruners.Pruner, w: torch.Tensor, chol: torch.Tensor, m: int, seed: int
                 ) -> tuple[pruners.PrunerState, torch.Tensor]:
    """``m`` updates whose grads sample ``H`` (``g = L xi``); the last one prunes."""
    gen = torch.Generator().manual_seed(seed + 1000)
    params = {"w": w}
    state = pruner.init(params)
    for _ in range(m):
        g = chol @ torch.randn(chol.shape[0], generator=gen, dtype=torch.float64)
        state, params = pruner.update(state, params, grads={"w": g.reshape(w.shape)})
    return state, params["w"]


@pytest.mark.parametrize("factory", SECOND_ORDER)
@pytest.mark.parametrize("sparsity", [0.5, 0.75])
def test_raise_the_quadratic_loss_less_than_magnitude(factory: Factory, sparsity: float) -> None:
    m = 128
    for seed in range(5):
        w_star, h, chol = quadratic(seed)
        w = w_star.reshape(4, 8)
        pruner = factory(sparsity, num_grads=m, damp=1e-3, block_size=32,
                         start_step=m - 1)
        state, new = run_one_shot(pruner, w, chol, m, seed)
        mag_pruner = pruners.magnitude(sparsity)
        mag_state, _ = mag_pruner.update(mag_pruner.init({"w": w}), {"w": w})
        mag = torch.where(mag_state.masks["w"], w, 0.0)
        assert int((~state.masks["w"]).sum()) == int((~mag_state.masks["w"]).sum())
        assert bool((new[~state.masks["w"]] == 0).all())
        assert loss(new, w_star, h) < loss(mag, w_star, h), seed


@pytest.mark.parametrize("factory", SECOND_ORDER)
def test_block_pattern_beats_magnitude_and_scores_by_the_block_form(factory: Factory) -> None:
    m = 96
    for seed in range(3):
        w_star, h, chol = quadratic(seed)
        w = w_star.reshape(4, 8)
        pruner = factory(0.5, num_grads=m, damp=1e-3, block_size=32,
                         sparsity_type="1x4", start_step=m - 1)
        _, new = run_one_shot(pruner, w, chol, m, seed)
        mag_pruner = pruners.magnitude(0.5, sparsity_type="1x4")
        mag_state, _ = mag_pruner.update(mag_pruner.init({"w": w}), {"w": w})
        mag = torch.where(mag_state.masks["w"], w, 0.0)
        assert loss(new, w_star, h) < loss(mag, w_star, h), seed


def test_compensation_and_scores_match_the_explicit_formulas() -> None:
    gen = torch.Generator().manual_seed(3)
    m, d, damp = 6, 10, 0.05
    grads = torch.randn(m, d, generator=gen, dtype=torch.float64)
    w = torch.randn(d, generator=gen, dtype=torch.float64)
    finv = torch.linalg.inv(damp * torch.eye(d, dtype=torch.float64) + grads.T @ grads / m)
    pruner = pruners.obs(0.3, num_grads=m, damp=damp, block_size=d, start_step=m - 1)
    state, params = pruner.init({"w": w}), {"w": w}
    for i in range(m):
        state, params = pruner.update(state, params, grads={"w": grads[i]})
    scores = w ** 2 / (2 * finv.diagonal())
    keep = torch.ones(d, dtype=torch.bool)
    keep[torch.argsort(scores, stable=True)[:3]] = False
    assert torch.equal(state.masks["w"], keep)
    z = torch.where(keep, 0.0, w / finv.diagonal())
    want = torch.where(keep, w - finv @ z, 0.0)
    torch.testing.assert_close(params["w"], want)
    # the block form on 1x2 units (channel rows of a (5, 2) weight are the same units)
    w2 = w.reshape(5, 2)
    for pattern in ("1x2", "channel"):
        pruner = pruners.mfac(0.4, num_grads=m, damp=damp, block_size=d, start_step=m - 1,
                              sparsity_type=pattern)
        state, params = pruner.init({"w": w2}), {"w": w2}
        for i in range(m):
            state, params = pruner.update(state, params, grads={"w": grads[i].reshape(5, 2)})
        units = torch.arange(d).reshape(5, 2)
        sub = finv[units[:, :, None], units[:, None, :]]
        zb = torch.linalg.solve(sub, w2)
        block_scores = 0.5 * (w2 * zb).sum(1)
        keep_rows = torch.ones(5, dtype=torch.bool)
        keep_rows[torch.argsort(block_scores, stable=True)[:2]] = False
        assert torch.equal(state.masks["w"], keep_rows[:, None].expand(5, 2)), pattern
        zfull = torch.where(keep_rows[:, None], 0.0, zb).reshape(-1)
        want = torch.where(keep_rows[:, None].expand(5, 2).reshape(-1), w - finv @ zfull, 0.0)
        torch.testing.assert_close(params["w"], want.reshape(5, 2))


@pytest.mark.parametrize("factory", SECOND_ORDER)
@pytest.mark.parametrize("pattern", ["unstructured", "2:4", "2x2", "channel"])
def test_exact_counts_whole_units_and_zeros_at_every_step(factory: Factory, pattern: str) -> None:
    gen = torch.Generator().manual_seed(0)
    params = {"a": torch.randn(6, 8, generator=gen), "b": torch.randn(4, 4, generator=gen)}
    pruner = factory(0.75, num_grads=3, damp=1e-2, block_size=8,
                     sparsity_type=pattern, start_step=2, end_step=14, update_every=4)
    pat = parse_pattern(pattern)
    state = pruner.init(params)
    for t in range(18):
        grads = {n: torch.randn(p.shape, generator=gen) for n, p in params.items()}
        old_masks = state.masks
        state, params = pruner.update(state, params, grads=grads)
        for n, p in params.items():
            mask = state.masks[n]
            assert bool((p[~mask] == 0).all()), (t, n)
            if pattern == "2:4":
                groups = mask.reshape(-1, 4).sum(1)
                assert bool(((groups == 4) | (groups == 2)).all())
                assert len(set(groups.tolist())) == 1
            elif pattern == "2x2":
                blocks = mask.reshape(mask.shape[0] // 2, 2, -1, 2).permute(0, 2, 1, 3)
                sums = blocks.reshape(-1, 4).sum(1)
                assert bool(((sums == 0) | (sums == 4)).all())
            elif pattern == "channel":
                rows = mask.sum(1)
                assert bool(((rows == 0) | (rows == mask.shape[1])).all())
            if pattern != "2:4":
                level = pruner_level(t)
                units = pat.units(tuple(mask.shape))
                per_unit = mask.numel() // units
                assert int((~mask).sum()) == pruned_count(0.75 * level, units) * per_unit, (t, n)
            assert bool((old_masks[n] | ~mask).all()) or t < 2  # pruned stay pruned
    assert state.step == 18


def pruner_level(t: int) -> float:
    """The cubic ramp of start 2, end 14, every 4 at the last update step <= t."""
    held = 14 if t >= 14 else 2 + 4 * ((t - 2) // 4)
    if t < 2:
        return 0.0
    return 1 - (1 - (held - 2) / 12) ** 3


def test_recomputations_split_one_step_with_fresh_gradients() -> None:
    gen = torch.Generator().manual_seed(1)
    w = {"w": torch.randn(40, generator=gen)}
    pruner = pruners.obs(0.6, num_grads=2, damp=1e-2, block_size=10, num_recomputations=3,
                         start_step=1)
    state = pruner.init(w)
    pruned = []
    for t in range(7):
        state, w = pruner.update(state, w, grads={"w": torch.randn(40, generator=gen)})
        pruned.append(int((~state.masks["w"]).sum()))
        assert count(state) == [1, 0, 1, 0, 1, 0, 0][t]
    # sub-steps at updates 1, 3, 5: 1/3, 2/3 and all of 24 pruned weights
    assert pruned == [0, 8, 8, 16, 16, 24, 24]
    # outside the windows grads may be omitted
    state, _ = pruner.update(state, w)
    assert state.step == 8


def test_global_and_erk_distributions() -> None:
    gen = torch.Generator().manual_seed(2)
    params = {"a": torch.randn(8, 8, generator=gen), "b": 10 * torch.randn(4, 4, generator=gen)}
    grads = {n: torch.randn(p.shape, generator=gen) for n, p in params.items()}
    glob = pruners.mfac(0.5, num_grads=1, damp=1.0, distribution="global")
    state, _ = glob.update(glob.init(params), params, grads=grads)
    total = sum(int((~m).sum()) for m in state.masks.values())
    assert total == 40 and int((~state.masks["b"]).sum()) < 8  # the large weights survive
    erk = pruners.obs(0.5, num_grads=1, damp=1.0, distribution="erk")
    state, _ = erk.update(erk.init(params), params, grads=grads)
    solved = pruners.erk_sparsities({"a": (8, 8), "b": (4, 4)}, 0.5)
    for n, m in state.masks.items():
        assert int((~m).sum()) == round(solved[n] * m.numel())


@pytest.mark.parametrize("factory", SECOND_ORDER)
def test_pure_inputs_untouched_and_untouched_tensors_returned_as_is(factory: Factory) -> None:
    gen = torch.Generator().manual_seed(4)
    params = {"a": torch.randn(4, 4, generator=gen), "b": torch.randn(3, generator=gen)}
    pruner = factory({"a": 0.5}, num_grads=2, damp=0.1, start_step=1)
    state = pruner.init(params)
    grads = {n: torch.randn(p.shape, generator=gen) for n, p in params.items()}
    tensors = [*params.values(), *grads.values()]
    snap = [(t.clone(), t._version) for t in tensors]
    first_state, out = pruner.update(state, params, grads=grads)
    assert out["a"] is params["a"] and out["b"] is params["b"]  # collecting only
    buf = {n: t.clone() for n, t in buffers(first_state).items()}
    second_state, out = pruner.update(first_state, params, grads=grads)
    assert out["b"] is params["b"]  # dense: left alone
    assert out["a"] is not params["a"] and int((out["a"] == 0).sum()) >= 8  # compensated copy
    for t, (value, version) in zip(tensors, snap, strict=True):
        assert torch.equal(t, value) and t._version == version
    for n, t in buffers(first_state).items():
        assert torch.equal(t, buf[n])  # the earlier state is unchanged
    assert count(first_state) == 1
    assert count(second_state) == 0
    assert count(state) == 0 and state.step == 0
    assert bool((buffers(state)["a"] == 0).all())


@pytest.mark.parametrize("factory", SECOND_ORDER)
def test_buffer_round_trips_through_state_dict(factory: Factory) -> None:
    gen = torch.Generator().manual_seed(5)
    params = {"fc.weight": torch.randn(4, 6, generator=gen)}
    pruner = factory(0.5, num_grads=3, damp=0.1, start_step=2)
    grads = [{"fc.weight": torch.randn(4, 6, generator=gen)} for _ in range(3)]
    state = pruner.init(params)
    for g in grads[:2]:
        state, params = pruner.update(state, params, grads=g)
    buf = io.BytesIO()
    torch.save(pruners.state_dict(state), buf)
    buf.seek(0)
    back = pruners.load_state_dict(torch.load(buf, weights_only=True))
    assert back == state
    a = pruner.update(state, params, grads=grads[2])
    b = pruner.update(back, params, grads=grads[2])
    assert a[0] == b[0] and torch.equal(a[1]["fc.weight"], b[1]["fc.weight"])


@pytest.mark.parametrize("factory", SECOND_ORDER)
def test_missing_or_insufficient_gradients(factory: Factory) -> None:
    params = {"w": torch.randn(8)}
    pruner = factory(0.5, num_grads=3, start_step=4)
    state = pruner.init(params)
    state, _ = pruner.update(state, params)  # step 0, 1: outside the window
    state, _ = pruner.update(state, params)
    with pytest.raises(ValueError, match="grads is required"):
        pruner.update(state, params)  # step 2 starts the window
    early = factory(0.5, num_grads=3)
    with pytest.raises(ValueError, match="only 1 were collected"):
        early.update(early.init(params), params, grads={"w": torch.ones(8)})
    with pytest.raises(ValueError, match="grads"):
        pruner.update(pruner.init(params), params, grads={"w": torch.ones(7)})
    with pytest.raises(ValueError, match="gradient buffer"):
        pruner.update(pruners.magnitude(0.5).init(params), params, grads={"w": torch.ones(8)})


@pytest.mark.parametrize("factory", SECOND_ORDER)
def test_bad_arguments_name_themselves(factory: Factory) -> None:
    make = factory
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"damp": 0.0}, ValueError, "damp"), ({"damp": -1.0}, ValueError, "damp"),
        ({"damp": "x"}, TypeError, "damp"), ({"block_size": 0}, ValueError, "block_size"),
        ({"block_size": 1.5}, TypeError, "block_size"), ({"num_grads": 0}, ValueError, "num_grads"),
        ({"num_grads": None}, TypeError, "num_grads"),
        ({"num_recomputations": 0}, ValueError, "num_recomputations"),
        ({"sparsity_type": "3x"}, ValueError, "sparsity_type"),
        ({"distribution": "nope"}, ValueError, "distribution"),
        ({"num_grads": 4, "num_recomputations": 2, "end_step": 20, "update_every": 5},
         ValueError, "num_recomputations"),
    ]
    for kwargs, exc, arg in cases:
        with pytest.raises(exc, match=arg):
            make(0.5, **kwargs)
    with pytest.raises(ValueError, match="sparsity"):
        make(1.5)


@pytest.mark.parametrize(("start", "end", "every", "n", "r"), [
    (0, None, 1, 1, 1), (5, None, 1, 3, 2), (2, 14, 4, 2, 2), (0, 30, 10, 3, 3), (3, 4, 7, 2, 1),
    (1, 23, 5, 5, 1)])
def test_collection_windows_match_their_definition(start: int, end: int | None, every: int,
                                                   n: int, r: int) -> None:
    from fsparse.pruners._obs import _Plan
    from fsparse.pruners._schedules import Steps

    plan = _Plan(Steps.make(start, end, every), n, r)
    subs = [t for t in range(60) if plan.substep(t) is not None]
    for t in range(50):
        assert plan.collects(t) == any(t <= s <= t + n - 1 for s in subs), t


def test_huge_windows_are_checked_not_looped() -> None:
    pruner = pruners.mfac(0.5, num_grads=2**24, start_step=10**30)
    state = pruner.init({"w": torch.ones(0)})
    state, _ = pruner.update(state, {"w": torch.ones(0)})
    assert state.step == 1
    with pytest.raises(ValueError, match="num_grads"):
        pruners.obs(0.5, num_grads=2**24 + 1)
    with pytest.raises(ValueError, match="num_recomputations"):
        pruners.obs(0.5, num_recomputations=10**9)


@pytest.mark.parametrize("factory", SECOND_ORDER)
def test_non_finite_grads_are_refused_before_anything_changes(factory: Factory) -> None:
    params = {"w": torch.randn(8)}
    pruner = factory(0.5, num_grads=2, start_step=1)
    state = pruner.init(params)
    with pytest.raises(ValueError, match="NaN or Inf"):
        pruner.update(state, params, grads={"w": torch.full((8,), float("inf"))})
    assert count(state) == 0 and bool((buffers(state)["w"] == 0).all())
    huge = factory(0.5, num_grads=1, damp=1e-300)
    big = {"w": torch.full((8,), 1e200, dtype=torch.float64)}
    with pytest.raises(ValueError, match="Fisher inverse"):
        huge.update(huge.init(big), big, grads=big)


@pytest.mark.parametrize("factory", SECOND_ORDER)
def test_recomputations_on_a_gradual_ramp(factory: Factory) -> None:
    gen = torch.Generator().manual_seed(6)
    w = {"w": torch.randn(48, generator=gen)}
    pruner = factory(0.5, num_grads=2, damp=0.1, block_size=16, num_recomputations=3,
                     start_step=0, end_step=12, update_every=6)
    state = pruner.init(w)
    levels = {6: [1 / 3, 2 / 3, 1.0], 12: [1 / 3, 2 / 3, 1.0]}
    prev = {6: 0.0, 12: 0.875}  # the cubic ramp at 6 of 0..12 is 0.875
    want_at = {}
    for tp, fracs in levels.items():
        top = 0.875 if tp == 6 else 1.0
        for j, f in enumerate(fracs):
            want_at[tp + 2 * j] = pruned_count(0.5 * (prev[tp] + (top - prev[tp]) * f), 48)
    last = 0
    for t in range(18):
        state, w = pruner.update(state, w, grads={"w": torch.randn(48, generator=gen)})
        got = int((~state.masks["w"]).sum())
        last = want_at.get(t, last)
        assert got == last, t
        assert bool((w["w"][~state.masks["w"]] == 0).all())
    assert last == 24
