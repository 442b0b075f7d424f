"""The native kernels (fsparse/_src/engine/kernels/) against the engine's torch path.

Every result must be the torch path's bit for bit: keep masks (ties, -0.0, inf,
pruned places, |w * g|, float64), NaN reports, flag counts, gains and masked writes.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fsparse._src.engine import keep_masks as keep_mod
from fsparse._src.engine import native, native_keep, unit_flags
from fsparse._src.engine import threshold as threshold_mod
from fsparse._src.engine.scoring import AbsScores, RandomScores
from fsparse._src.engine.selection import select_scores
from fsparse._src.engine.threshold import NaNScores
from fsparse.pruners._ranked import revives

pytestmark = pytest.mark.usefixtures("native_path")


def _both(fn):
    """``fn()`` natively, then on the torch path."""
    first = fn()
    kernels = native.KERNELS
    native.KERNELS = None
    try:
        second = fn()
    finally:
        native.KERNELS = kernels
    return first, second


def _pieces(draw, dtype):
    count = draw(st.integers(1, 4))
    kinds = ["tensor", "abs", "abs_keep", "product"]
    kind = draw(st.sampled_from([*kinds, "random"] if dtype == torch.float32 else kinds))
    pieces = []
    for _ in range(count):
        size = draw(st.integers(1, 3000))
        gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
        values = torch.randn(size, generator=gen, dtype=dtype)
        if draw(st.booleans()):  # crowded ties
            values = (values * draw(st.sampled_from([1.0, 3.0, 50.0]))).round()
        values[:: draw(st.integers(2, 50))] = -0.0
        if draw(st.booleans()):
            values[:: draw(st.integers(7, 400))] = math.inf
        if kind == "random":  # the counter stream, computed in the pass; pruned places too
            keep = torch.rand(size, generator=gen) > draw(st.sampled_from([0.0, 0.5]))
            pieces.append(RandomScores((size,), draw(st.integers(0, 2**64 - 1)),
                                       keep if draw(st.booleans()) else None))
        elif kind == "tensor":
            pieces.append(values)
        elif kind == "abs":
            pieces.append(AbsScores(values))
        elif kind == "abs_keep":
            keep = torch.rand(size, generator=gen) > draw(st.sampled_from([0.0, 0.3, 0.9]))
            pieces.append(AbsScores(values, keep))
        else:
            pieces.append(AbsScores(values, factor=torch.randn(size, generator=gen, dtype=dtype)))
    return pieces


@st.composite
def keep_cases(draw):
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    pieces = _pieces(draw, dtype)
    n = sum(p.numel() for p in pieces)
    return pieces, draw(st.integers(1, n))


@settings(max_examples=200, deadline=None)
@given(keep_cases(), st.sampled_from([1, 64, 512, threshold_mod.SMALL]))
def test_native_keep_masks_are_the_torch_paths(case, small):
    """Any pieces, any k: the fused pass's masks equal the torch path's bit for bit (up
    to ``SMALL`` values, every value a candidate; above it, the sampled bracket)."""
    pieces, k = case
    old = threshold_mod.SMALL
    threshold_mod.SMALL = small  # the one-pass paths for small inputs too
    try:
        fused, plain = _both(lambda: keep_mod.keep_masks(pieces, k))
    finally:
        threshold_mod.SMALL = old
    assert all(torch.equal(a, b) for a, b in zip(fused, plain))
    kept = sum(int(m.sum()) for m in fused)
    assert kept == sum(p.numel() for p in pieces) - k


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_brackets_crowd_is_counted_as_torch_counts_it(dtype, native_path):
    gen = torch.Generator().manual_seed(9)
    values = (torch.randn(50_001, generator=gen) * 4).round().to(dtype)
    values[::97] = float("nan")
    values[5::101] = -0.0
    for lo, hi in ((-1.0, 1.0), (0.0, 0.0), (-math.inf, 2.0), (3.0, math.inf), (2.0, 1.0)):
        want = int(((values >= lo) & (values <= hi)).sum())
        assert native_keep._between(values, lo, hi) == want
        assert threshold_mod._between(values, lo, hi) == want


class _WrongBracket:
    """fsp_finish told a bracket its candidates do not lie in (``[mid, mid + a little]``):
    its first-digit shortcut must see that and select the slow way."""

    def __init__(self, real):
        self.real, self.calls = real, 0

    def __call__(self, *args):
        self.calls += 1
        args = list(args)
        args[8], args[9] = args[7], args[7] + max(abs(args[7]) * 1e-3, 1e-3)
        return self.real(*args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_finish_is_exact_even_told_a_wrong_bracket(dtype, native_path, monkeypatch):
    gen = torch.Generator().manual_seed(8)
    values = (torch.randn(400_000, generator=gen) * 50).round().to(dtype)  # ties
    keep = torch.rand(400_000, generator=gen) > 0.3
    pieces = [AbsScores(values[:150_000]), AbsScores(values[150_000:], keep[150_000:])]
    want = _both(lambda: keep_mod.keep_masks(pieces, 180_000))[1]
    wrong = _WrongBracket(native.KERNELS.fsp_finish)
    monkeypatch.setattr(native.KERNELS, "fsp_finish", wrong)
    got = keep_mod.keep_masks(pieces, 180_000)
    assert wrong.calls == 1 and all(torch.equal(a, b) for a, b in zip(got, want))


def test_large_inputs_run_natively_and_stay_exact(monkeypatch):
    """No patched sizes: 1.2M values over three pieces (pruned places, ties) take the fused
    pass, which succeeds, with the torch path's masks."""
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(700_000, generator=gen)
    b = (torch.randn(500_000, generator=gen) * 400).round()  # ties, but no crowd
    c = torch.randn(5000, generator=gen)
    pieces = [AbsScores(a, torch.rand(a.shape, generator=gen) > 0.4), AbsScores(b),
              AbsScores(c, torch.rand(c.shape, generator=gen) > 0.9)]
    runs = []
    real = native_keep.one_pass
    monkeypatch.setattr(native_keep, "one_pass",
                        lambda *args: runs.append(real(*args)) or runs[-1])
    n = sum(p.numel() for p in pieces)
    for k in (n // 2, (3 * n) // 4):
        fused, plain = _both(lambda k=k: keep_mod.keep_masks(pieces, k))
        assert all(torch.equal(x, y) for x, y in zip(fused, plain))
    assert runs and all(runs)  # the fused pass ran and answered every time


def test_threads_do_not_change_the_masks():
    gen = torch.Generator().manual_seed(4)
    pieces = [torch.randn(900_000, generator=gen), torch.randn(300_001, generator=gen)]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = keep_mod.keep_masks(pieces, 600_000)
        torch.set_num_threads(max(2, threads))
        many = keep_mod.keep_masks(pieces, 600_000)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(x, y) for x, y in zip(one, many))


def test_nan_is_reported_with_its_piece_and_ignored_where_pruned():
    gen = torch.Generator().manual_seed(5)
    a, b = torch.randn(300_000, generator=gen), torch.randn(300_000, generator=gen)
    b[123_456] = math.nan
    with pytest.raises(NaNScores) as err:
        keep_mod.keep_masks([AbsScores(a), AbsScores(b)], 200_000)
    assert err.value.index == 1
    with pytest.raises(ValueError, match=r"'b'.*NaN"):
        select_scores({"a": AbsScores(a), "b": AbsScores(b)}, 0.5, shared=True)
    pruned = torch.ones(b.shape, dtype=torch.bool)
    pruned[123_456] = False  # the NaN is at a pruned place: ignored, as on the torch path
    pieces = [AbsScores(a), AbsScores(b, pruned)]
    fused, plain = _both(lambda: keep_mod.keep_masks(pieces, 250_000))
    assert all(torch.equal(x, y) for x, y in zip(fused, plain))
    assert not fused[1][123_456]


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("sizes", [(0,), (5, 0, 70_001), (1 << 17, 3, 1 << 16, 1 << 18)])
def test_count_all_counts_each_mask_once(sizes, threads, native_path):
    """One run over many masks, with tasks that start and end inside masks, counts each
    flag once (``threads`` caps the split; MIN_TASK is 65536 bytes)."""
    import ctypes

    gen = torch.Generator().manual_seed(sum(sizes))
    masks = [torch.rand(s, generator=gen) < 0.7 for s in sizes]
    want = sum(int(m.sum()) for m in masks)
    assert native.count_all(masks) == want
    ptrs = (ctypes.c_void_p * len(masks))(*(m.data_ptr() for m in masks))
    ns = (ctypes.c_int64 * len(masks))(*sizes)
    assert native.KERNELS.fsp_count_true(ptrs, ns, len(masks), threads) == want
    assert native.count_all(masks[::-1][:1]) == int(masks[-1].sum())
    assert native.count_all([torch.ones(4, 3, dtype=torch.bool).t()]) is None  # not plain


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_brackets_selects_give_each_ranks_value(threads, dtype, native_path):
    """The sample's ranks are selected at once, each on its own keys, on the threads; a bad
    rank is refused before anything is written."""
    import ctypes

    gen = torch.Generator().manual_seed(threads)
    values = (torch.randn(70_001, generator=gen) * 4).round().to(dtype)  # many ties, +-0.0
    ordered = values.sort().values
    ranks = [1, 2, 35_000, 35_001, 70_001]
    assert native_keep._kth(values, ranks) == [float(ordered[r - 1]) for r in ranks]
    n = values.numel()
    keys = torch.empty(2 * n, dtype=torch.int64)
    out = (ctypes.c_double * 2)(7.0, 7.0)
    for bad in ([0, 5], [5, n + 1]):
        assert native.KERNELS.fsp_kth_many(values.data_ptr(), n, int(dtype == torch.float64),
                                           (ctypes.c_int64 * 2)(*bad), 2, keys.data_ptr(), out,
                                           threads) == -1
        assert list(out) == [7.0, 7.0]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 70_000), st.integers(0, 9), st.floats(0.0, 1.0))
def test_flag_kernels_equal_torch(length, offset, density):
    """count_true and gains (revives) natively, on views at any offset and length."""
    gen = torch.Generator().manual_seed(length)
    base = torch.rand(length + offset, generator=gen) < density
    flags = base[offset:]
    assert native.count_true(flags) == int(flags.sum())
    assert unit_flags.count_true(flags) == int(flags.sum())
    old = flags.clone()
    assert native.gains(old, flags) is False
    assert not revives(old, flags)
    if length:
        spot = int(torch.randint(length, (1,), generator=gen))
        old[spot] = False
        grown = old.clone()
        grown[spot] = True
        assert native.gains(old, grown) is True and revives(old, grown)
        assert native.gains(grown, old) is False
    assert native.gains(flags, flags.view(1, -1)) is None  # shapes differ: not native
    assert native.all_true(flags) == bool(flags.all()) == unit_flags.all_true(flags)
    ones = torch.ones(length + offset, dtype=torch.bool)[offset:]
    assert native.all_true(ones) is True
    if length:
        ones[spot] = False
        assert native.all_true(ones) is False and not unit_flags.all_true(ones)


@pytest.mark.parametrize("where", [0, 1 << 20, (1 << 23) - 1, None])
def test_all_true_finds_an_unset_flag_in_any_task(where):
    """A mask large enough to split into many tasks, on every thread count: the one unset
    flag is found wherever it lies (the first task, a middle one, the last byte)."""
    flags = torch.ones(1 << 23, dtype=torch.bool)
    if where is not None:
        flags[where] = False
    for threads in (1, 2, 3, 8):
        got = not native.KERNELS.fsp_any_false(flags.data_ptr(), flags.numel(), threads)
        assert got is (where is None)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5000), st.sampled_from([torch.float32, torch.float64]),
       st.floats(0.0, 1.0))
def test_zero_pruned_writes_what_the_multiply_writes(length, dtype, density):
    gen = torch.Generator().manual_seed(length)
    w = torch.randn(length, generator=gen, dtype=dtype)
    w[::3] = -w[::3].abs()
    w[1::17] = -math.inf
    w[2::19] = math.nan
    w[4::5] = -0.0
    keep = torch.rand(length, generator=gen) < density
    want = w * keep.to(dtype)
    assert native.zero_applies(w, keep)
    native.zero_pruned_(w, keep)
    bits = torch.int32 if dtype == torch.float32 else torch.int64
    assert torch.equal(w.view(bits), want.view(bits))


def test_zero_all_pruned_refuses_a_dtype_it_would_leave_unwritten(native_path):
    """Its runs are per dtype (float32, float64): any other weight is refused up front, and
    nothing is written, rather than left as it was while the others are zeroed."""
    w, half = torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0], dtype=torch.float16)
    keep = torch.tensor([False, True])
    with pytest.raises(TypeError, match="float16"):
        native.zero_all_pruned_([(w, keep), (half, keep)])
    assert w.tolist() == [1.0, 2.0] and half.tolist() == [1.0, 2.0]


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(("sizes", "density"), [
    ([(1_000_003, False), (17, True), (1_200_001, False), (5, False), (900_000, True),
      (65_537, False)], 0.3),  # > 1M weights a thread: tasks start and end inside weights
    ([(3, False), (1, True)], 0.5),
    ([(2_500_000, False)], 0.9),
])
def test_zero_all_pruned_writes_what_each_multiply_writes(sizes, density, threads):
    """Many weights in one run: tasks cross from one weight into the next (and dtypes mix),
    yet every weight gets exactly its own multiply, on any thread count."""
    gen = torch.Generator().manual_seed(len(sizes) * 7 + threads)
    pairs, wants = [], []
    for length, wide in sizes:
        dtype = torch.float64 if wide else torch.float32
        w = torch.randn(length, generator=gen, dtype=dtype)
        w[1::17] = -math.inf
        w[4::5] = -0.0
        keep = torch.rand(length, generator=gen) < density
        pairs.append((w, keep))
        wants.append(w * keep.to(dtype))
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        native.zero_all_pruned_(pairs)
    finally:
        torch.set_num_threads(old)
    for (w, _), want in zip(pairs, wants):
        bits = torch.int32 if w.dtype == torch.float32 else torch.int64
        assert torch.equal(w.view(bits), want.view(bits))


def test_the_kernels_apply_only_to_plain_contiguous_cpu_float_tensors():
    x = torch.randn(10)
    keep = [torch.empty(10, dtype=torch.bool)]
    assert native_keep.applies([x], keep)
    assert not native_keep.applies([x.half()], keep)
    assert not native_keep.applies([torch.randn(20)[::2]], keep)
    assert not native_keep.applies([x], [torch.empty(20, dtype=torch.bool)[::2]])
    assert not native.zero_applies(torch.randn(10).half(), keep[0])
    assert not native.zero_applies(torch.randn(5, 2), keep[0])  # shape differs
    assert native.count_true(torch.ones(4, 3, dtype=torch.bool).t()) is None


def test_fsparse_native_0_selects_the_torch_path():
    code = ("import fsparse._src.engine.native as n; print(n.KERNELS is None)")
    env = {**os.environ, "FSPARSE_NATIVE": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    assert out.stdout.strip() == "True"


def test_openmp_runtime_names():
    ok = ["libgomp.so.1", "libgomp-a34b3233.so.1", "libomp.so", "libiomp5.so", "libomp.dylib"]
    bad = ["libbackend_with_compiler.so", "libtorch_cpu.so", "libgomp.so.1.bak"]
    assert all(native._OPENMP.fullmatch(n) for n in ok)
    assert not any(native._OPENMP.fullmatch(n) for n in bad)


def test_plain_pthreads_give_the_same_results():
    """Without torch's OpenMP runtime the kernels start their own threads: same answers."""
    gen = torch.Generator().manual_seed(6)
    pieces = [AbsScores(torch.randn(1_500_000, generator=gen)), torch.rand(700_000, generator=gen)]
    flags = torch.rand(3_000_000, generator=gen) > 0.5
    w = torch.randn(3_000_000, generator=gen)
    want = (keep_mod.keep_masks(pieces, 1_000_000), native.count_true(flags))
    lib = native.KERNELS
    native.use_openmp(lib, None)
    try:
        got = (keep_mod.keep_masks(pieces, 1_000_000), native.count_true(flags))
        zeroed = w.clone()
        native.zero_pruned_(zeroed, flags)
        ranked = native.spread(flags[:250_000], 4, (w[:1_000_000], "L1", 1))
    finally:
        native.use_openmp(lib, native._torch_openmp())
    assert all(torch.equal(a, b) for a, b in zip(want[0], got[0])) and want[1] == got[1]
    assert torch.equal(zeroed.view(torch.int32), (w * flags).view(torch.int32))
    assert torch.equal(ranked, native.spread(flags[:250_000], 4, (w[:1_000_000], "L1", 1)))
    assert native._torch_openmp() is not None  # torch's CPU wheels ship libgomp


@pytest.mark.parametrize("norm", ["L1", "L2"])
@pytest.mark.parametrize("shape", [(300, 700), (20, 30, 400), (250_001,)])
def test_one_element_blocks_are_the_unstructured_selection(norm, shape, monkeypatch):
    """Block (1, 1): the fused selection gives the reference path's mask (ties by index)."""
    from fsparse import make_config
    from fsparse._src.engine import norm_mask as norm_mod

    gen = torch.Generator().manual_seed(len(shape))
    data = (torch.randn(shape, generator=gen) * 20).round() / 4  # many ties, both signs
    calls = []
    real = norm_mod._whole_row_blocks
    monkeypatch.setattr(norm_mod, "_whole_row_blocks",
                        lambda *a: calls.append(real(*a)) or calls[-1])
    for level in (0.0, 0.3, 0.5, 0.97):
        config = make_config(sparsity_level=level, sparse_block_shape=(1, 1), norm=norm)
        got = norm_mod.config_norm_mask(data, config)
        assert torch.equal(got, norm_mod.reference_norm_mask(data, config)), level
    # the fused path answered where something is pruned (level 0: the chunked path checks)
    assert len(calls) == 4 and calls[0] is None and all(c is not None for c in calls[1:])


@pytest.mark.parametrize("bad", [math.nan, math.inf, 1e30])
def test_one_element_blocks_refuse_what_the_reference_refuses(bad):
    from fsparse import make_config
    from fsparse._src.engine import norm_mask as norm_mod

    data = torch.randn(200, 300)
    data[7, 9] = bad
    for norm in ("L1", "L2"):
        config = make_config(sparsity_level=0.5, sparse_block_shape=(1, 1), norm=norm)
        if bad == 1e30 and norm == "L1":  # finite scores: both paths select
            assert torch.equal(norm_mod.config_norm_mask(data, config),
                               norm_mod.reference_norm_mask(data, config))
            continue
        with pytest.raises(ValueError) as want:
            norm_mod.reference_norm_mask(data, config)
        with pytest.raises(ValueError) as got:
            norm_mod.config_norm_mask(data, config)
        assert str(got.value) == str(want.value)


def test_the_portable_c_gives_the_same_results(tmp_path, monkeypatch):
    """The kernels as built for CPUs without the x86 paths (FSP_PORTABLE): same answers."""
    import glob
    import shutil

    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.fail("no C compiler: make test builds the kernels, so one must be there")
    root = os.path.join(os.path.dirname(native.__file__), "kernels")
    target = str(tmp_path / "portable.so")
    subprocess.run([compiler, "-O2", "-DFSP_PORTABLE", "-ffp-contract=off", "-fPIC", "-shared",
                    "-pthread", "-o", target, *sorted(glob.glob(os.path.join(root, "*.c")))],
                   check=True, capture_output=True, timeout=300)
    portable = native.bind(target)
    native.use_openmp(portable, native._torch_openmp())
    gen = torch.Generator().manual_seed(8)
    pieces = [AbsScores((torch.randn(400_001, generator=gen) * 30).round(),
                        torch.rand(400_001, generator=gen) > 0.5),
              AbsScores(torch.randn(300_000, generator=gen), factor=torch.randn(300_000)),
              torch.randn(5_000, generator=gen)]
    flags = torch.rand(1_000_003, generator=gen) > 0.3
    w = torch.randn(1_000_003, generator=gen)
    w[::7] = -0.0
    want = keep_mod.keep_masks(pieces, 350_000)
    runs = []
    real = native_keep.one_pass
    monkeypatch.setattr(native_keep, "one_pass", lambda *a: runs.append(real(*a)) or runs[-1])
    kernels = native.KERNELS
    native.KERNELS = portable
    try:
        got = keep_mod.keep_masks(pieces, 350_000)
        count = native.count_true(flags)
        full = (native.all_true(flags), native.all_true(torch.ones(1_000_003, dtype=torch.bool)))
        zeroed = w.clone()
        native.zero_pruned_(zeroed, flags)
        ranked = native.spread(flags[:250_000], 4, (w[:1_000_000], "L1", 1))
    finally:
        native.KERNELS = kernels
    assert runs == [True]  # the portable pass answered (no fallback to the torch path)
    assert all(torch.equal(a, b) for a, b in zip(want, got))
    assert count == int(flags.sum()) and full == (False, True)
    assert torch.equal(zeroed.view(torch.int32), (w * flags).view(torch.int32))
    assert torch.equal(ranked, native.spread(flags[:250_000], 4, (w[:1_000_000], "L1", 1)))


@pytest.mark.parametrize("norm", ["L1", "L2"])
@pytest.mark.parametrize("width", [2, 4, 8, 16])
@pytest.mark.parametrize("shape", [(500, 256), (10, 40, 64), (64_000,)])
def test_whole_row_blocks_are_the_selection_of_their_means(norm, width, shape, monkeypatch):
    """Blocks (1, w) zeroed whole: the fused means' selection gives the reference mask
    (block means summed from their first element, ties by block index)."""
    from fsparse import make_config
    from fsparse._src.engine import norm_mask as norm_mod

    gen = torch.Generator().manual_seed(width + len(shape))
    data = (torch.randn(shape, generator=gen) * 8).round() / 8  # tied means, both signs
    data.view(-1)[:: 37] = 1e-38  # tiny sums: means near the subnormal range
    answers = []
    real = norm_mod._whole_row_blocks
    monkeypatch.setattr(norm_mod, "_whole_row_blocks",
                        lambda *a: answers.append(real(*a)) or answers[-1])
    for level, zeros in ((0.0, width), (0.4, width), (0.75, None)):
        config = make_config(sparsity_level=level, sparse_block_shape=(1, width),
                             zeros_per_block=zeros, norm=norm)
        got = norm_mod.config_norm_mask(data, config)
        assert torch.equal(got, norm_mod.reference_norm_mask(data, config)), level
    # the fused path answered where something is pruned (level 0: the chunked path checks)
    assert answers[0] is None and all(a is not None for a in answers[1:])


def test_whole_row_blocks_leave_other_cases_to_the_chunked_path():
    from fsparse import make_config
    from fsparse._src.engine import norm_mask as norm_mod

    data = torch.randn(300, 100)
    for block, zeros, x in (((2, 4), 8, data), ((1, 3), 3, data), ((1, 3), 1, data),
                            ((1, 8), 8, torch.randn(300, 100)), ((1, 4), 4, data.double()[:, :98])):
        config = make_config(sparsity_level=0.5, sparse_block_shape=block, zeros_per_block=zeros)
        assert norm_mod._whole_row_blocks(x, config) is None, (block, zeros)
    huge = torch.full((300, 100), 3e38)  # finite data whose L1 means overflow: chunked raises
    config = make_config(sparsity_level=0.5, sparse_block_shape=(1, 4))
    assert norm_mod._whole_row_blocks(huge, config) is None
    with pytest.raises(ValueError, match="overflows"):
        norm_mod.config_norm_mask(huge, config)


@pytest.mark.parametrize("width", [4, 8, 16])
def test_whole_row_block_means_are_summed_from_the_first_element(width):
    """Block A = [2^24, 1, 1, 0...] sums to 2^24 from its first element (each +1 rounds
    away) but to 2^24 + 2 from its last; block B = [2^24 + 2, 0...] comes first. Summed as
    avg_pool2d does, A is lower and alone pruned; any other order ties them, and B goes."""
    from fsparse import make_config
    from fsparse._src.engine import norm_mask as norm_mod

    data = torch.full((1, 16384), 1e9)
    a, b = 8 * width, 3 * width
    data[0, a : a + width] = 0.0
    data[0, a], data[0, a + 1], data[0, a + 2] = 2.0**24, 1.0, 1.0
    data[0, b : b + width] = 0.0
    data[0, b] = 2.0**24 + 2
    config = make_config(sparsity_level=1 / (16384 // width), sparse_block_shape=(1, width))
    want = norm_mod.reference_norm_mask(data, config)
    assert not want[0, a] and want[0, b]
    assert norm_mod._whole_row_blocks(data, config) is not None
    assert torch.equal(norm_mod.config_norm_mask(data, config), want)


@settings(max_examples=80, deadline=None)
@given(width=st.sampled_from([2, 4, 8, 16]), zeros=st.integers(0, 15),
       norm=st.sampled_from(["L1", "L2"]), dtype=st.sampled_from([torch.float32, torch.float64]),
       rows=st.integers(1, 700), row_blocks=st.integers(1, 9), scale=st.sampled_from([1, 4, 1000]),
       level=st.floats(0.0, 1.0), seed=st.integers(0, 2**16))
def test_blocks_with_fewer_zeros_are_ranked_as_the_chunked_path_ranks(
        width, zeros, norm, dtype, rows, row_blocks, scale, level, seed):
    """Blocks (1, w) with zeros_per_block below w: the native ranked spread (AVX2 for
    float32 blocks of 4, 8 blocks a step plus a scalar tail) gives the chunked path's and
    the reference's mask: ties by position, -0.0, L2 squares that tie."""
    from fsparse import make_config
    from fsparse._src.engine import norm_mask as norm_mod
    from fsparse._src.engine.chunked_mask import large_norm_mask
    from fsparse._src.engine.selection import pruned_count

    zeros = min(zeros, width - 1)
    gen = torch.Generator().manual_seed(seed)
    data = (torch.randn(rows, row_blocks * width, generator=gen, dtype=dtype) * scale).round()
    data.view(-1)[:: 5] *= -0.0
    data.view(-1)[:: 11] = 1e-30  # x * x underflows to 0: ties with 0 under L2
    config = make_config(sparsity_level=level, sparse_block_shape=(1, width),
                         zeros_per_block=zeros, norm=norm)
    got = norm_mod._whole_row_blocks(data, config)
    if zeros == 0 or pruned_count(level, data.numel() // width) == 0:
        assert got is None  # nothing pruned: the chunked path checks the data and answers
        got = norm_mod.config_norm_mask(data, config)
    assert got is not None
    assert torch.equal(got, large_norm_mask(data, config))
    assert torch.equal(got, norm_mod.reference_norm_mask(data, config))


def test_a_ranked_block_keeps_all_but_its_smallest():
    """One pruned block of 4, [3, -1, 1, 0] with 2 zeros: 0 and the first 1 (-1) go."""
    keep = torch.tensor([False, True])
    data = torch.tensor([3.0, -1.0, 1.0, 0.0, 5.0, 0.0, 0.0, 0.0])
    got = native.spread(keep, 4, (data, "L1", 2))
    assert got.tolist() == [True, False, True, False, True, True, True, True]
    wide = torch.cat([data[:4]] * 9)  # 9 blocks: 8 by AVX2, 1 by the scalar tail
    got = native.spread(torch.zeros(9, dtype=torch.bool), 4, (wide, "L1", 2))
    assert got.view(9, 4).tolist() == [[True, False, True, False]] * 9


@pytest.mark.parametrize("width", [2, 3, 4, 8, 16])
@pytest.mark.parametrize("blocks", [0, 1, 7, 300_001])
def test_spread_repeats_each_flag(width, blocks):
    keep = torch.rand(blocks, generator=torch.Generator().manual_seed(blocks)) > 0.5
    assert torch.equal(native.spread(keep, width), keep.repeat_interleave(width))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 300_000), dtype=st.sampled_from([torch.float32, torch.float64]),
       density=st.sampled_from([0.0, 0.5, 1.0]), seed=st.integers(0, 2**16))
def test_movement_scores_are_the_torch_formula_bit_for_bit(n, dtype, density, seed):
    """where(live, -(g * w), 0) + S natively: the same bits, -0.0 and signed zeros included."""
    gen = torch.Generator().manual_seed(seed)
    s, g, w = (torch.randn(n, generator=gen, dtype=dtype) for _ in range(3))
    s[::3], g[::5], w[::7] = -0.0, 0.0, -0.0
    live = torch.rand(n, generator=gen) < density
    got = native.movement_scores(s, g, w, live)
    want = torch.where(live, torch.mul(g, w).neg_(), torch.zeros((), dtype=dtype)) + s
    bits = torch.int32 if dtype == torch.float32 else torch.int64
    assert got is not None and torch.equal(got.view(bits), want.view(bits))


def test_movement_scores_leave_other_inputs_to_the_torch_path():
    s, live = torch.zeros(4), torch.ones(4, dtype=torch.bool)
    assert native.movement_scores(s, torch.ones(4, dtype=torch.float64), s, live) is None
    assert native.movement_scores(s, s, torch.ones(8)[::2], live) is None
    assert native.movement_scores(s.half(), s.half(), s.half(), live) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("where", [0, 31, 32, 1000, 299_999])
def test_the_pass_reports_an_infinite_score(where, dtype):
    """``finite=True`` (the norm masks): one +inf score anywhere (vector body or tail) makes
    the pass decline; without it, inf is a score like any (kept: the highest)."""
    x = torch.randn(300_000, generator=torch.Generator().manual_seed(where), dtype=dtype)
    x[where] = -math.inf
    keep = [torch.empty(300_000, dtype=torch.bool)]
    assert native_keep.one_pass([AbsScores(x)], 150_000, keep, finite=True) is False
    assert native_keep.one_pass([AbsScores(x)], 150_000, keep) is True and bool(keep[0][where])
    big = x.clone()
    big[where] = 1e300 if dtype == torch.float64 else 3e38  # finite: accepted
    assert native_keep.one_pass([AbsScores(big)], 150_000, keep, finite=True) is True


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 300_000), dtype=st.sampled_from([torch.float32, torch.float64]),
       seed=st.integers(0, 2**16))
def test_zero_revived_is_the_torch_where_bit_for_bit(n, dtype, seed):
    """The weights with revived places (new on, old off) zeroed: a fresh tensor equal to
    torch.where(new > old, 0, w), -0.0 and NaN weights included; the inputs unchanged."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(n, generator=gen, dtype=dtype)
    w[::3], w[::11] = -0.0, math.nan
    old, new = torch.rand(n, generator=gen) < 0.5, torch.rand(n, generator=gen) < 0.5
    before = w.clone()
    got = native.zero_revived(w, old, new)
    want = torch.where(new > old, torch.zeros((), dtype=dtype), w)
    bits = torch.int32 if dtype == torch.float32 else torch.int64
    assert got is not None and got is not w
    assert torch.equal(got.view(bits), want.view(bits))
    assert torch.equal(w.view(bits), before.view(bits))
    if n:  # masks of another shape: left to the torch path
        assert native.zero_revived(w, old, new[:-1]) is None


def test_a_bracket_of_one_value_finishes_without_a_digit(native_path, monkeypatch):
    """3% of the values tied at the median: the bracket closes on that one value (lo == hi,
    no bits left to select), and the ties are pruned first in order, as on the torch path."""
    gen = torch.Generator().manual_seed(10)
    values = torch.rand(400_000, generator=gen)
    values[torch.randperm(400_000, generator=gen)[:12_000]] = 0.5
    pieces = [AbsScores(values[:123_457]), AbsScores(values[123_457:])]
    want = _both(lambda: keep_mod.keep_masks(pieces, 200_000))[1]
    brackets = []
    real_middle, real_finish = native_keep._middle, native.KERNELS.fsp_finish
    def middle(lo: float, hi: float, dtype: torch.dtype) -> float:
        brackets.append((lo, hi))
        return real_middle(lo, hi, dtype)

    monkeypatch.setattr(native_keep, "_middle", middle)
    finished = []
    monkeypatch.setattr(native.KERNELS, "fsp_finish",
                        lambda *a: finished.append(real_finish(*a)) or finished[-1])
    got = keep_mod.keep_masks(pieces, 200_000)
    assert brackets == [(0.5, 0.5)] and len(finished) == 1 and finished[0] >= 0
    assert all(torch.equal(a, b) for a, b in zip(got, want))


@pytest.mark.parametrize(("norm", "zeros"), [("L1", 2), ("L2", 1), ("L1", 4)])
def test_the_pass_writes_the_element_mask_across_many_tasks(norm, zeros):
    """Float32 blocks (1, 4) of a 2,000,000-element table on two threads: the pass ranks
    each pruned block as it reads it, and the finish rewrites the elements of blocks whose
    guess it corrects, in every task; the mask is the reference's (tied means and values)."""
    from fsparse import make_config
    from fsparse._src.engine import norm_mask as norm_mod

    gen = torch.Generator().manual_seed(zeros)
    data = (torch.randn(5_000, 400, generator=gen) * 6).round() / 4
    config = make_config(sparsity_level=0.6, sparse_block_shape=(1, 4), zeros_per_block=zeros,
                         norm=norm)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        got = norm_mod._whole_row_blocks(data, config)
    finally:
        torch.set_num_threads(threads)
    assert got is not None and got.shape == data.shape
    assert torch.equal(got, norm_mod.reference_norm_mask(data, config))


def test_small_inputs_take_the_pass_with_every_value_a_candidate(monkeypatch):
    """Up to SMALL values the pass answers with no sample (one exact select, no torch op):
    ties, infinities and pruned places as on the torch path, and a live NaN reported."""
    gen = torch.Generator().manual_seed(12)
    a = (torch.randn(9_408, generator=gen) * 3).round()
    a[::50], a[7::61] = math.inf, -math.inf
    b = torch.randn(300, generator=gen)
    pieces = [AbsScores(a, torch.rand(a.shape, generator=gen) > 0.2), b]
    runs, samples = [], []
    real, draw = native_keep.one_pass, native.KERNELS.fsp_sample
    monkeypatch.setattr(native_keep, "one_pass", lambda *a: runs.append(real(*a)) or runs[-1])
    monkeypatch.setattr(native.KERNELS, "fsp_sample", lambda *a: samples.append(a) or draw(*a))
    for k in (1, 2_000, 5_000, 9_000):
        fused, plain = _both(lambda k=k: keep_mod.keep_masks(pieces, k))
        assert all(torch.equal(x, y) for x, y in zip(fused, plain)), k
    assert runs == [False, True, True, True] and not samples  # k = 1: among the pruned
    bad = a.clone()
    bad[1] = math.nan
    with pytest.raises(NaNScores):
        keep_mod.keep_masks([b, AbsScores(bad)], 100)
