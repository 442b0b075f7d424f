"""The engine's fast paths against a stable-argsort reference: the one-pass keep masks
(bracket candidates with positions, ties among them, packed bool counts), the radix
fallback, and magnitude scores read slice by slice (``AbsScores``)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsparse import pruners
from fsparse._src.engine import keep_masks as keep_mod
from fsparse._src.engine import select_count_mask, select_mask
from fsparse._src.engine import threshold as threshold_mod
from fsparse._src.engine.scoring import AbsScores
from fsparse._src.engine.selection import global_select_masks, select_scores
from fsparse._src.engine.unit_flags import all_true
from fsparse.pruners._schedules import Steps

FIXTURE_OK = [HealthCheck.function_scoped_fixture]
VALUES = st.sampled_from([0.0, -0.0, 1.0, 2.0, -1.0, 0.5, 3.0, math.inf, -math.inf, 1e-45])


def reference_keep(pieces: list[torch.Tensor], k: int) -> list[torch.Tensor]:
    """Keep masks with the k lowest (stable: piece order, then index) pruned."""
    flat = torch.cat([p.reshape(-1).double() for p in pieces])
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    keep[flat.argsort(stable=True)[:k]] = False
    return [m.view(p.shape) for m, p in zip(keep.split([p.numel() for p in pieces]), pieces)]


@pytest.fixture(params=["one-pass", "radix"])
def fast(request, monkeypatch):
    """Force the large-input paths on small data: tiny slices, no kthvalue shortcut."""
    monkeypatch.setattr(threshold_mod, "SMALL", 0)
    monkeypatch.setattr(threshold_mod, "SLICE", 13)  # not a multiple of 8: padded slices
    if request.param == "radix":
        monkeypatch.setattr(threshold_mod, "_bracketed", lambda *a, **kw: None)
        monkeypatch.setattr(keep_mod, "_one_pass", lambda *a, **kw: None)
    return request.param


@st.composite
def piece_lists(draw, dtype=None):
    dtype = dtype or draw(st.sampled_from([torch.float32, torch.float64, torch.float16]))
    sizes = draw(st.lists(st.integers(0, 40), min_size=1, max_size=5))
    return [torch.tensor(draw(st.lists(VALUES, min_size=s, max_size=s)),
                         dtype=torch.float64).to(dtype) for s in sizes]


@settings(max_examples=60, deadline=None, suppress_health_check=FIXTURE_OK)
@given(data=st.data())
def test_keep_masks_match_the_reference(fast, data):
    pieces = data.draw(piece_lists())
    n = sum(p.numel() for p in pieces)
    if n == 0:
        return
    k = data.draw(st.integers(1, n))
    got = keep_mod.keep_masks(pieces, k)
    for g, want in zip(got, reference_keep(pieces, k)):
        assert g.dtype == torch.bool and torch.equal(g, want.reshape(-1))


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("where", [None, 0, 3, -1])  # the pair with the one revival, if any
def test_any_revives_over_many_pairs_finds_a_single_revival_anywhere(where, threads):
    """One search over every pair (native where built; tasks span pairs once the total
    passes a million flags per thread) answers as pair-by-pair ``revives`` does, down to
    one revived flag at the last place of the last pair or the first of the first."""
    from fsparse.pruners._ranked import any_revives

    gen = torch.Generator().manual_seed(threads)
    sizes = [1_000_003, 17, 5, 1_300_001, 64, 900_011]
    pairs = []
    for size in sizes:
        old = torch.rand(size, generator=gen) > 0.3
        pairs.append((old, old & (torch.rand(size, generator=gen) > 0.2)))  # only turns off
    if where is not None:
        old, new = pairs[where]
        at = 0 if where == 0 else -1
        old[at], new[at] = False, True
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert any_revives(pairs) is (where is not None)
        if where is not None:  # every other pair only turns flags off
            i = where % len(pairs)
            assert any_revives(pairs[:i] + pairs[i + 1:]) is False
    finally:
        torch.set_num_threads(before)
    assert any_revives([(pairs[0][0], pairs[0][0])]) is False  # the same tensor: nothing


@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURE_OK)
@given(data=st.data(), sparsity=st.floats(0.0, 1.0))
def test_abs_scores_select_like_materialized_scores(fast, data, sparsity):
    """Magnitude read slice by slice = the public functions on ``|w|`` (keyed or not)."""
    weights = data.draw(piece_lists())
    keyed = data.draw(st.booleans())
    keeps = [torch.tensor(data.draw(st.lists(st.booleans(), min_size=w.numel(),
                                              max_size=w.numel())), dtype=torch.bool)
             for w in weights]
    names = [f"w{i}" for i in range(len(weights))]
    lazy = {n: AbsScores(w, m if keyed else None) for n, w, m in zip(names, weights, keeps)}
    plain = {n: v.materialize().view(v.shape) for n, v in lazy.items()}
    assert all(torch.equal(plain[n], torch.where(m, w.float().abs() if w.dtype == torch.float16
                                                 else w.abs(), -1.0) if keyed else
                           (w.float().abs() if w.dtype == torch.float16 else w.abs()))
               for n, w, m in zip(names, weights, keeps))
    got = select_scores(lazy, sparsity, shared=True)
    want = global_select_masks(plain, sparsity)
    assert all(torch.equal(got[n], want[n]) for n in names)
    for n in names:
        alone = select_scores({n: lazy[n]}, sparsity)[n]
        assert torch.equal(alone, select_mask(plain[n], sparsity))


def test_large_inputs_take_the_one_pass_path_and_stay_exact(monkeypatch, torch_path):
    """No monkeypatched sizes: more values than SMALL, with crowded ties, -0.0 and inf."""
    gen = torch.Generator().manual_seed(5)
    big = threshold_mod.SMALL + 1000
    a = (torch.randn(big, generator=gen) * 3).round()  # crowded ties: the bracket may miss
    a[::97] = -0.0
    a[::1001] = math.inf
    b = torch.randn(777, generator=gen)
    c = torch.randn(2 * big + 3, generator=gen)
    calls = []
    real = keep_mod._keep_pass
    monkeypatch.setattr(keep_mod, "_keep_pass", lambda *a, **kw: calls.append(1) or real(
        *a, **kw))
    for pieces in ([a, b], [c], [b, c, a]):
        n = sum(p.numel() for p in pieces)
        for k in (1, n // 10, n // 2, n - 1):
            want = reference_keep(pieces, k)
            got = keep_mod.keep_masks(pieces, k)
            assert all(torch.equal(g, w.reshape(-1)) for g, w in zip(got, want))
            lazy = {f"p{i}": AbsScores(-p) for i, p in enumerate(pieces)}
            masks = select_scores(lazy, k / n, shared=True)
            ref = global_select_masks({n_: p.abs() for n_, p in zip(lazy, pieces)}, k / n)
            assert all(torch.equal(masks[n_], ref[n_]) for n_ in lazy)
    assert calls  # the one-pass path ran


@pytest.mark.parametrize("length", [0, 1, 7, 8, 9, 2039, 2040, 2041, 4081, 10_000])
@pytest.mark.parametrize("offset", [0, 8, 3])
def test_all_true_over_words(length, offset):
    gen = torch.Generator().manual_seed(length + offset)
    base = torch.rand(length + offset + 16, generator=gen) < 0.3
    mask = base[offset : offset + length]
    assert all_true(mask) == bool(mask.all())
    assert all_true(torch.ones_like(base)[offset : offset + length])


def test_abs_scores_nan_rules():
    w = torch.tensor([1.0, float("nan"), 3.0, -2.0])
    with pytest.raises(ValueError, match="NaN"):
        select_scores({"w": AbsScores(w)}, 0.5)
    keep = torch.tensor([True, False, True, True])  # the NaN is already pruned: keyed -1
    mask = select_scores({"w": AbsScores(w, keep)}, 0.5)["w"]
    assert torch.equal(mask, select_mask(torch.tensor([1.0, -1.0, 3.0, 2.0]), 0.5))


def test_abs_scores_of_a_non_contiguous_view():
    w = torch.randn(64, 32)[:, ::2]
    assert torch.equal(select_scores({"w": AbsScores(w)}, 0.3)["w"], select_mask(w.abs(), 0.3))


def test_magnitude_pruners_unchanged_by_the_lazy_scores():
    """magnitude / global_magnitude masks equal the engine on materialized |w| (gradual)."""
    gen = torch.Generator().manual_seed(1)
    params = {"a": torch.randn(300, 500, generator=gen), "b": torch.randn(77, generator=gen),
              "c": torch.randn(40, 3, 3, generator=gen).round()}
    for make, shared in ((pruners.magnitude, False), (pruners.global_magnitude, True)):
        pruner = make(0.8, start_step=0, end_step=4)
        state = pruner.init(params)
        prev = state.masks
        for _ in range(5):
            state, _ = pruner.update(state, params)
            keyed = {n: torch.where(prev[n], p.abs(), -1.0) for n, p in params.items()}
            level = 0.8 * Steps(0, 4, 1).ramp(state.step - 1)
            want = (global_select_masks(keyed, level) if shared else
                    {n: select_mask(s, level) for n, s in keyed.items()})
            assert all(torch.equal(state.masks[n], want[n]) for n in params)
            prev = state.masks


def test_select_count_mask_big_k_edges():
    s = torch.randn(threshold_mod.SMALL + 5)
    assert select_count_mask(s, 0).all() and not select_count_mask(s, s.numel()).any()


def test_keep_factors_reuse_the_previous_factors_in_place(torch_path):
    """fsparse.create writes new masks into its previous 0/1 factors (no fresh tensors)."""
    from fsparse.create.masks import keep_factors

    gen = torch.Generator().manual_seed(8)  # seeded: "a" and "b" must be partly pruned
    weights = {"a": torch.randn(4, 3, generator=gen), "b": torch.randn(5, generator=gen),
               "c": torch.randn(2, dtype=torch.float64, generator=gen)}
    first = {"a": torch.rand(4, 3, generator=gen) > 0.5, "b": torch.ones(5, dtype=torch.bool),
             "c": torch.tensor([True, False])}
    old = keep_factors(weights, first)
    assert set(old) == {"a", "c"}
    second = {"a": torch.rand(4, 3, generator=gen) > 0.5, "b": torch.rand(5, generator=gen) > 0.5,
              "c": torch.tensor([False, True])}
    new = keep_factors(weights, second, reuse=old)
    assert new["a"] is old["a"] and new["c"] is old["c"]  # overwritten in place
    for n, m in second.items():
        assert torch.equal(new[n], m.to(weights[n].dtype))
    mismatched = {"a": torch.zeros(2, 2)}  # wrong shape: not reused
    assert keep_factors(weights, second, reuse=mismatched)["a"].shape == (4, 3)


def test_movement_scores_equal_the_reference_formula_bit_for_bit():
    """S + where(mask, -(g * w), 0) computed with two fresh tensors instead of four."""
    gen = torch.Generator().manual_seed(2)
    w = {"a": torch.randn(50, 8, generator=gen), "b": torch.randn(33, generator=gen)}
    g = {n: torch.randn(p.shape, generator=gen) for n, p in w.items()}
    g["b"][::3] = 0.0  # -(0 * w) is -0.0 or +0.0
    pruner = pruners.movement(0.5, start_step=0, end_step=6, update_every=2)
    state = pruner.init(w)
    for _ in range(5):
        before = {n: s.clone() for n, s in state.stats["movement"].items()}
        masks = state.masks
        state, _ = pruner.update(state, w, grads=g)
        for n in w:
            want = before[n] + torch.where(masks[n], -(g[n] * w[n]), 0.0)
            got = state.stats["movement"][n]
            assert torch.equal(got, want) and torch.equal(got.signbit(), want.signbit())


def _live_case() -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
    gen = torch.Generator().manual_seed(4)
    n = 2 * threshold_mod.SMALL + 11
    w = (torch.randn(n, generator=gen) * 8).round()  # ties
    live = torch.rand(n, generator=gen) > 0.4
    return w, live, int((~live).sum()), torch.where(live, w.abs(), -1.0)


def test_keyed_abs_scores_select_among_the_live_places(monkeypatch, torch_path):
    """Already-pruned places are the lowest: the torch pass selects among the live ones."""
    w, live, pruned, keyed = _live_case()
    n = w.numel()
    modes = []
    real = keep_mod._keep_pass
    monkeypatch.setattr(keep_mod, "_keep_pass", lambda *a: modes.append(a[-1]) or real(*a))
    for k in (pruned - 3, pruned, pruned + 1, pruned + 5000, n - 1):
        got = select_scores({"w": AbsScores(w, live)}, k / n)["w"]
        assert torch.equal(got, reference_keep([keyed], round(k / n * n))[0])
    assert True in modes  # the live-places pass ran


def test_native_pass_brackets_the_live_values(monkeypatch, native_path):
    """The fused pass counts the pruned places and brackets the (k - pruned)-th live value:
    it answers every k above the pruned count itself (none is left to the torch path), and
    hands k <= pruned back to the caller, which counts them."""
    from fsparse._src.engine import native_keep

    w, live, pruned, keyed = _live_case()
    n = w.numel()
    answers: list[tuple[int, bool]] = []
    real = native_keep.one_pass

    def spy(pieces, k, keep, finite=False):  # type: ignore[no-untyped-def]
        answers.append((k, real(pieces, k, keep, finite)))
        return answers[-1][1]

    monkeypatch.setattr(native_keep, "one_pass", spy)
    for k in (pruned - 3, pruned, pruned + 1, pruned + 7, pruned + 5000, n - 1):
        got = select_scores({"w": AbsScores(w, live)}, k / n)["w"]
        assert torch.equal(got, reference_keep([keyed], round(k / n * n))[0])
    assert answers == [(k, k > pruned) for k, _ in answers] and len(answers) == 6


def _record_passes(monkeypatch: pytest.MonkeyPatch, fused: bool) -> list[object]:
    """Run the fused pass (``fused``) or the torch one, and record each pass's answer in the
    list returned (``None``: it missed or overflowed, and the selection fell back)."""
    from fsparse._src.engine import native, native_keep

    results: list[object] = []
    if fused:
        if native.KERNELS is None:
            pytest.fail("the native kernels were not built (see setup.py)")
        real_one = native_keep.one_pass
        monkeypatch.setattr(native_keep, "one_pass",
                            lambda *a: results.append(real_one(*a) or None) or bool(results[-1]))
    else:
        monkeypatch.setattr(native, "KERNELS", None)
        real = keep_mod._keep_pass
        monkeypatch.setattr(keep_mod, "_keep_pass",
                            lambda *a: results.append(real(*a)) or results[-1])
    return results


@pytest.mark.parametrize("fused", [False, True])
def test_few_live_values_crowded_by_ties_stay_on_the_pass(monkeypatch, fused):
    """RigL's drop: few live weights, many of them exactly 0 (the ones it regrew), and the
    k-th live value among those zeros. The bracket is all ties; its candidates must fit the
    budget of the places the pass reads, not of the few live ones (else radix every time)."""
    gen = torch.Generator().manual_seed(8)
    n = 2_359_296  # resnet18's largest conv
    live = torch.rand(n, generator=gen) < 0.1
    w = torch.randn(n, generator=gen)
    w[live & (torch.rand(n, generator=gen) < 0.3)] = 0.0  # ~70,000 live zeros
    pruned = int((~live).sum())
    k = pruned + 40_000  # among the live zeros
    results = _record_passes(monkeypatch, fused)
    got = select_scores({"w": AbsScores(w, live)}, k / n)["w"]
    want = reference_keep([torch.where(live, w.abs(), -1.0)], k)[0]
    assert torch.equal(got, want)
    assert len(results) == 1 and results[0] is not None  # no fallback to radix


@pytest.mark.parametrize("fused", [False, True])
def test_keyed_global_selection_stays_on_the_live_pass(monkeypatch, fused):
    """Many pieces, pruned unevenly: the live sample covers every piece, the pass hits
    (the torch pass, or the fused one, which counts the pruned places first)."""
    gen = torch.Generator().manual_seed(6)
    sizes = (threshold_mod.SMALL, 3000, 2 * threshold_mod.SMALL, 50_000)
    ws = [torch.randn(s, generator=gen) * scale for s, scale in zip(sizes, (1, 3, 0.3, 10))]
    lives = [torch.rand(s, generator=gen) > f for s, f in zip(sizes, (0.9, 0.1, 0.5, 0.0))]
    pruned = sum(int((~m).sum()) for m in lives)
    n = sum(sizes)
    results = _record_passes(monkeypatch, fused)
    for k in (pruned + 1, pruned + (n - pruned) // 3, n - 2):
        lazy = {f"w{i}": AbsScores(w, m) for i, (w, m) in enumerate(zip(ws, lives))}
        got = select_scores(lazy, k / n, shared=True)
        keyed = [torch.where(m, w.abs(), -1.0) for w, m in zip(ws, lives)]
        want = reference_keep(keyed, round(k / n * n))
        assert all(torch.equal(got[f"w{i}"], want[i]) for i in range(len(ws)))
    assert len(results) == 3 and all(r is not None for r in results)  # no fallback to radix


@pytest.mark.parametrize("shape", [(16,), (3, 8), (7,), (5, 3), (0,), (8, 5)])
@pytest.mark.parametrize("words", [1 << 17, 2])  # 2: many slices, the last one partial
def test_revived_check_matches_new_and_not_old(shape, words, monkeypatch):
    from fsparse.pruners import _ranked
    from fsparse.pruners._ranked import revives as _revives

    monkeypatch.setattr(_ranked, "_WORDS", words)
    gen = torch.Generator().manual_seed(sum(shape))
    for _ in range(20):
        old = torch.rand(shape, generator=gen) > 0.3
        new = old & (torch.rand(shape, generator=gen) > 0.2)  # only turns off
        assert not _revives(old, new)
        if new.numel():
            new.view(-1)[int(torch.randint(new.numel(), (1,), generator=gen))] = True
        assert _revives(old, new) == bool((new & ~old).any())
    wide = torch.rand(4, 16, generator=gen) > 0.5
    assert _revives(wide[:, ::2], wide[:, 1::2]) == bool((wide[:, 1::2] & ~wide[:, ::2]).any())


@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURE_OK)
@given(data=st.data(), sparsity=st.floats(0.0, 1.0))
def test_product_scores_select_like_materialized_saliency(fast, data, sparsity):
    """|w * g| read slice by slice = the public functions on the old saliency tensors."""
    weights = data.draw(piece_lists())
    grads = [torch.tensor(data.draw(st.lists(VALUES, min_size=w.numel(), max_size=w.numel())),
                          dtype=data.draw(st.sampled_from([torch.float32, w.dtype])))
             for w in weights]
    keyed = data.draw(st.booleans())
    keeps = [torch.rand(w.shape) > 0.3 for w in weights]
    names = [f"w{i}" for i in range(len(weights))]
    old = {}
    for n, w, g, m in zip(names, weights, grads, keeps):
        dt = torch.float32 if w.dtype == torch.float16 else w.dtype
        s = (w.to(dt) * g.to(dt)).abs_()
        old[n] = s.masked_fill_(~m, -1.0) if keyed else s
    lazy = {n: AbsScores(w, m if keyed else None, factor=g)
            for n, w, g, m in zip(names, weights, grads, keeps)}
    assert all(torch.equal(lazy[n].materialize().view(old[n].shape), old[n], ) or
               bool(old[n].isnan().any()) for n in names)
    try:
        want = global_select_masks(old, sparsity)
    except ValueError:
        with pytest.raises(ValueError, match="NaN"):
            select_scores(lazy, sparsity, shared=True)
        return
    got = select_scores(lazy, sparsity, shared=True)
    assert all(torch.equal(got[n], want[n]) for n in names)


def test_saliency_pruners_match_materialized_scores():
    gen = torch.Generator().manual_seed(8)
    w = {"a": torch.randn(400, 300, generator=gen), "b": torch.randn(50, generator=gen)}
    g = {n: torch.randn(p.shape, generator=gen) for n, p in w.items()}
    for make, shared in ((pruners.saliency, False), (pruners.global_saliency, True),
                         (pruners.snip, True)):
        state, _ = make(0.7).update(make(0.7).init(w), w, grads=g)
        scores = {n: (w[n] * g[n]).abs() for n in w}
        want = (global_select_masks(scores, 0.7) if shared else
                {n: select_mask(s, 0.7) for n, s in scores.items()})
        assert all(torch.equal(state.masks[n], want[n]) for n in w)


def test_random_scores_drawn_in_pieces_are_the_whole_stream():
    """The counter stream in slices (in order, or out of order), at positions, or whole."""
    from fsparse._src.engine import counter_rng
    from fsparse._src.engine.scoring import RandomScores

    whole = counter_rng.uniform(11, 0, 10_007)
    lazy = RandomScores((10_007,), 11)
    buf = torch.empty(4096)
    for step in (1, 13, 4096):
        got = torch.cat([lazy.part(s, min(s + step, 10_007), buf[:step]).clone()
                         for s in range(0, 10_007, step)])
        assert torch.equal(got, whole)
    assert torch.equal(lazy.part(5000, 5100, buf), whole[5000:5100])  # out of order
    assert torch.equal(lazy.take(torch.tensor([9000, 3, 3])), whole[[9000, 3, 3]])
    keep = torch.rand(10_007) > 0.5
    assert torch.equal(RandomScores((10_007,), 11, keep).materialize(),
                       torch.where(keep, whole, -1.0))


@settings(max_examples=30, deadline=None, suppress_health_check=FIXTURE_OK)
@given(data=st.data(), sparsity=st.floats(0.0, 1.0))
def test_random_scores_select_like_materialized(fast, data, sparsity):
    from fsparse._src.engine.scoring import RandomScores

    sizes = data.draw(st.lists(st.integers(0, 40), min_size=1, max_size=4))
    keyed = data.draw(st.booleans())
    lazy, plain = {}, {}
    for i, size in enumerate(sizes):
        keep = torch.rand(size) > 0.4 if keyed else None
        lazy[f"r{i}"] = RandomScores((size,), 100 + i, keep)
        plain[f"r{i}"] = lazy[f"r{i}"].materialize()
    got = select_scores(lazy, sparsity, shared=True)
    want = global_select_masks(plain, sparsity)
    assert all(torch.equal(got[n], want[n]) for n in lazy)


def test_random_pruners_unchanged_by_the_lazy_scores():
    """random / ste_random / static_random masks = the engine on the materialized scores."""
    from fsparse.pruners._common import random_scores

    gen = torch.Generator().manual_seed(9)
    params = {"a": torch.randn(400, 400, generator=gen), "b": torch.randn(300, generator=gen)}
    pruner = pruners.random(0.8, seed=4, start_step=0, end_step=3)
    state = pruner.init(params)
    for t in range(4):
        prev = state.masks
        state, _ = pruner.update(state, params)
        scores = random_scores(params, 4, t, 1)
        keyed = {n: torch.where(prev[n], s, -1.0) for n, s in scores.items()}
        level = 0.8 * Steps(0, 3, 1).ramp(t)
        assert all(torch.equal(state.masks[n], select_mask(keyed[n], level)) for n in params)
    static = pruners.static_random(0.7, seed=2).init(params)
    scores = random_scores(params, 2, 0, 5)
    assert all(torch.equal(static.masks[n], select_mask(scores[n], 0.7)) for n in params)
    ste = pruners.ste_random(0.6, seed=3)
    masks = ste.update(ste.init(params), params)[0].masks
    scores = random_scores(params, 3, 0, 4)
    assert all(torch.equal(masks[n], select_mask(scores[n], 0.6)) for n in params)


@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURE_OK)
@given(data=st.data())
def test_nan_anywhere_is_refused_with_its_name(fast, data):
    """Unstructured keep masks find NaN themselves (the one pass: among the candidates)."""
    pieces = [p.float() for p in data.draw(piece_lists(torch.float32))]
    n = sum(p.numel() for p in pieces)
    if n < 2:
        return
    which = data.draw(st.sampled_from([i for i, p in enumerate(pieces) if p.numel()]))
    pieces[which][data.draw(st.integers(0, pieces[which].numel() - 1))] = math.nan
    k = data.draw(st.integers(1, n - 1))
    named = {f"p{i}": p for i, p in enumerate(pieces)}
    with pytest.raises(ValueError, match=f"scores\\['p{which}'\\] contains NaN"):
        global_select_masks(named, k / n)
    with pytest.raises(ValueError, match=f"scores\\['p{which}'\\] contains NaN"):
        select_scores({name: AbsScores(p) for name, p in named.items()}, k / n, shared=True)


def test_the_one_pass_itself_finds_nan_and_ignores_it_where_pruned(monkeypatch):
    gen = torch.Generator().manual_seed(8)
    w = torch.randn(4 * threshold_mod.SMALL, generator=gen)
    w[12345] = math.nan
    checks = []
    real = keep_mod.has_nan
    from fsparse._src.engine import selection as selection_mod

    for module in (keep_mod, selection_mod):  # the selection's own check, and the fallback's
        monkeypatch.setattr(module, "has_nan", lambda p: checks.append(1) or real(p))
    with pytest.raises(ValueError, match="contains NaN"):
        select_mask(w, 0.5)
    with pytest.raises(ValueError, match="scores\\['b'\\] contains NaN"):
        select_scores({"a": AbsScores(torch.randn(999, generator=gen)), "b": AbsScores(w)}, 0.3,
                      shared=True)
    assert checks == []  # no separate NaN pass: the selection's pass saw it
    live = torch.ones(w.numel(), dtype=torch.bool)
    live[12345] = False  # pruned already: its NaN is keyed -1 and ranks lowest
    got = select_scores({"w": AbsScores(w, live)}, 0.5)["w"]
    keyed = torch.where(live, w.abs(), -1.0)
    assert torch.equal(got, reference_keep([keyed], round(0.5 * w.numel()))[0])
    assert checks == []
