"""Movement's next scores as a computed piece (fsparse/_src/engine/movement_scores.py): the
native pass writes them as it selects on them; every path gives the torch formula's bits."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fsparse._src.engine import mask_records, native, native_keep
from fsparse._src.engine.keep_masks import keep_masks
from fsparse._src.engine.movement_scores import MovementScores
from fsparse._src.engine.selection import select_scores

pytestmark = pytest.mark.usefixtures("native_path")


def _formula(s, g, w, live):
    delta = torch.mul(g.to(s.dtype), w.to(s.dtype)).neg_()
    return torch.where(live, delta, torch.zeros((), dtype=s.dtype)).add_(s)


def _bits(t):
    return t.contiguous().view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def _inputs(n, seed, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    s = (torch.randn(n, generator=gen) * 3).round().to(dtype)  # ties, and zeros of both signs
    g, w = torch.randn(n, generator=gen).to(dtype), torch.randn(n, generator=gen).to(dtype)
    g[::7] = -0.0
    live = torch.rand(n, generator=gen) > 0.4
    return s, g, w, live


@settings(max_examples=25, deadline=None)
@given(st.integers(200_000, 600_000), st.integers(0, 2**31), st.floats(0.05, 0.95))
def test_the_fused_pass_writes_the_formulas_scores_and_the_engines_masks(n, seed, level):
    s, g, w, live = _inputs(n, seed)
    want = _formula(s, g, w, live)
    piece = MovementScores(s, g, w, live)
    passes = []
    real = native_keep.one_pass
    k = round(level * n)
    try:
        native_keep.one_pass = lambda *a, **kw: passes.append(real(*a, **kw)) or passes[-1]
        got = keep_masks([piece], k)[0]
    finally:
        native_keep.one_pass = real
    assert passes == [True] and piece.filled  # the native pass ran and wrote every score
    assert torch.equal(_bits(piece.result()), _bits(want))
    assert torch.equal(got, keep_masks([want], k)[0])  # the masks of the plain scores


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_other_dtypes_take_the_other_paths_with_the_same_bits(dtype):
    s, g, w, live = _inputs(300_000, 3, dtype)
    s = s.float() if dtype == torch.bfloat16 else s  # movement keeps float32 scores of bf16
    want = _formula(s, g, w, live)
    piece = MovementScores(s, g, w, live)
    got = select_scores({"w": piece}, 0.6)["w"]
    assert torch.equal(_bits(piece.result()), _bits(want))
    assert torch.equal(got, select_scores({"w": want}, 0.6)["w"])


def test_patterns_and_small_tensors_materialize_once():
    s, g, w, live = _inputs(4096, 5)
    piece = MovementScores(s.view(64, 64), g.view(64, 64), w.view(64, 64), live.view(64, 64))
    masks = select_scores({"w": piece}, 0.5, "2:4")["w"]
    first = piece.out
    assert piece.filled and piece.result().shape == (64, 64) and piece.out is first
    assert torch.equal(_bits(piece.result()), _bits(_formula(s, g, w, live).view(64, 64)))
    assert torch.equal(masks, select_scores({"w": _formula(s, g, w, live).view(64, 64)}, 0.5,
                                            "2:4")["w"])


def test_a_nan_score_is_reported_and_the_scores_still_complete():
    s, g, w, live = _inputs(300_000, 9)
    g[123_457] = float("nan")
    live[123_457] = True
    piece = MovementScores(s, g, w, live)
    with pytest.raises(ValueError, match="NaN"):
        select_scores({"w": piece}, 0.5)
    assert torch.equal(_bits(piece.result()), _bits(_formula(s, g, w, live)))


def test_a_wrong_score_would_be_caught():
    """The comparisons above can fail: a piece whose pass wrote other scores is told apart."""
    s, g, w, live = _inputs(300_000, 11)
    piece = MovementScores(s, g, w, live)
    keep_masks([piece], 150_000)
    assert piece.filled and native.KERNELS is not None
    piece.out[17] += 1.0
    assert not torch.equal(_bits(piece.result()), _bits(_formula(s, g, w, live)))


@settings(max_examples=25, deadline=None)
@given(st.integers(200_000, 500_000), st.integers(0, 2**31), st.sampled_from([0.3, 0.6, 0.9]),
       st.booleans())
def test_the_pass_tells_exactly_whether_a_weight_comes_back(n, seed, level, sunk):
    """The mask is recorded as within ``live`` exactly when it keeps nothing where ``live``
    is off (and nothing is recorded otherwise). ``sunk``: the pruned places' scores sink
    below the rest, so none comes back unless the level is below their share."""
    s, g, w, live = _inputs(n, seed)
    if sunk:
        s[~live] = -1e6
    piece = MovementScores(s, g, w, live)
    mask = keep_masks([piece], round(level * n))[0]
    back = bool((mask & ~live).any())
    assert piece.filled
    assert mask_records.within(mask, live) is (not back)


def test_a_movement_update_skips_the_revival_check_only_when_the_pass_rules_it_out():
    from fsparse import pruners

    gen = torch.Generator().manual_seed(4)
    params = {"w": torch.randn(600, 500, generator=gen)}
    pruner = pruners.movement(0.5, start_step=1, end_step=9, update_every=2)
    state = pruner.init(params)
    checked, came_back, real = [], [], native.gains
    try:
        native.gains = lambda old, new: checked.append(1) or real(old, new)  # the search
        for step in range(10):  # growing gradients: some pruned weights come back
            grads = {"w": torch.randn(600, 500, generator=gen) * (1 + step)}
            before = state
            state, out = pruner.update(state, params, grads=grads)
            back = bool((state.masks["w"] & ~before.masks["w"]).any())
            came_back.append(back)
            assert (out["w"] is not params["w"]) == back  # revived weights restart at 0
    finally:
        native.gains = real
    assert any(came_back) and not all(came_back)
    assert 0 < len(checked) < 10  # the updates that revived nothing were settled by the pass


@pytest.mark.parametrize("above", [0, 1500, 3000])
def test_a_weight_that_comes_back_among_the_candidates_is_seen(above):
    """Pruned places whose scores sit above the threshold: kept, but inside the sampled
    bracket (the finish's candidates), not above it. Just above it (``above`` 0) the pass's
    ``> mid`` guess may be wrong; ``above`` ranks higher it is right, and the finish passes
    over such blocks unless it knows a candidate lies where ``live`` is off."""
    n, k = 400_000, 200_000
    s, g, w, live = _inputs(n, 21)
    s = torch.randn(n, generator=torch.Generator().manual_seed(2))
    live[:] = True
    if above:
        live[123_457] = False  # one, so no other flag in its block needs the finish
    else:
        live[::4000] = False  # 100 pruned places
    moved = _formula(s, g, w, live)
    threshold = float(moved.kthvalue(k).values)
    value = torch.nextafter(torch.tensor(threshold), torch.tensor(1.0)).item()
    s[~live] = value if not above else float(moved.kthvalue(k + above).values)
    piece = MovementScores(s, g, w, live)
    mask = keep_masks([piece], k)[0]
    assert bool((mask & ~live).any()) and piece.filled
    assert not mask_records.within(mask, live)
