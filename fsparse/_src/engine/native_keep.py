"""The one-pass keep masks of :mod:`~fsparse._src.engine.keep_masks`, fused natively.

Each step of the torch path is one call into ``kernels/*.c``, which reads the scores
straight from their sources (``|w|``, ``|w * g|``, a score tensor, the counter-based
random stream computed in place, or movement's next score, which the pass also writes),
with no full-size temporaries:

1. the bracket's sample: stratified, jittered, seeded draws (not the torch path's
   draws; any bracket gives the same masks, it only decides how fast);
2. the pass: keep flags ``> mid`` (the bracket's middle), the count of those ``> hi``,
   and the candidates ``lo <= v <= hi`` (or NaN) with their positions, in order;
3. the finish: the exact threshold among the candidates by radix select, and the keep
   flags of the candidates that ``> mid`` got wrong, ties pruned first in order; a NaN
   candidate is reported.

Places where a computed piece's ``keep`` is ``False`` (already pruned) are below
every score: never kept, never candidates, never drawn (the bracket is of the live
values, counted exactly when the sample meets a pruned place). So each such mask is
on only where its ``keep`` is, and movement's where ``live`` is when the pass counted
no weight coming back: :mod:`~fsparse._src.engine.mask_records` records both, and
how many places the masks keep in all (``n - k``), which the next update's count of
its pruned places then reads instead of the masks. The masks are the torch
path's bit for bit (the tests compare both).
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Sequence

import torch

from fsparse._src.engine import mask_records, native, pool
from fsparse._src.engine import threshold as kth
from fsparse._src.engine.movement_scores import MovementScores
from fsparse._src.engine.scoring import AbsScores, RandomScores
from fsparse._src.engine.threshold import NaNScores, Piece

__all__ = ["BlockMeans", "applies", "one_pass", "reads"]

_PLAIN, _ABS, _ABS_PRODUCT, _BLOCK_L1, _BLOCK_L2, _RANDOM, _MOVEMENT = range(7)  # kernels.h
_LIVE_OFF = 1 << 62  # kernels.h's FSP_LIVE_OFF: a candidate's position flag
_MIN_PER_THREAD = 1 << 18  # values per thread of the pass, at least
_MIN_DRAWS_PER_THREAD = 1 << 14


def applies(pieces: Sequence[Piece], keep: Sequence[torch.Tensor]) -> bool:
    """Whether :func:`one_pass` can read ``pieces`` and write ``keep``: the kernels are
    built; float32 or float64 score tensors, :class:`AbsScores` of sources in the score
    dtype, or :class:`RandomScores` (float32, computed in the pass); all plain contiguous
    CPU tensors."""
    if native.KERNELS is None or not pieces:
        return False
    dtype = pieces[0].dtype
    if dtype not in (torch.float32, torch.float64):
        return False
    for piece, out in zip(pieces, keep):
        if not native.plain(out, torch.bool):
            return False
        if isinstance(piece, torch.Tensor):
            if not native.plain(piece, dtype):
                return False
        elif type(piece) is RandomScores:
            if dtype != torch.float32 or not native.plain(piece.keep, torch.bool):
                return False
        elif type(piece) is MovementScores:
            if dtype != torch.float32 or not (
                all(native.plain(t, dtype) for t in (piece.flat, piece.grad, piece.weight,
                                                     piece.out))
                and native.plain(piece.live, torch.bool)):
                return False
        elif type(piece) is not AbsScores or not (
            native.plain(piece.flat, dtype) and native.plain(piece.factor, dtype)
            and native.plain(piece.keep, torch.bool)
        ):
            return False
    return True


class BlockMeans:
    """The mean ``|x|`` (L1) or ``x * x`` (L2) of each ``width`` consecutive elements of the
    contiguous 1-D ``flat``: the block means of norm blocks of one row, computed by the
    kernels as the chunked path does (only :func:`one_pass` reads it).

    With ``zeros`` (float32, ``width`` 2, 4, 8 or 16), :func:`one_pass` writes this
    piece's element mask instead of its block flags: its ``keep`` tensor has ``flat``'s
    size, a kept block is all ``True``, and a pruned one loses its ``zeros`` smallest
    ``|x|`` (L2: ``x * x``), ties by position, as the chunked path ranks them. The pass
    ranks each block from the values it has just read, so no second pass reads them."""

    def __init__(self, flat: torch.Tensor, width: int, norm: str,
                 zeros: int | None = None) -> None:
        self.flat, self.width, self.norm, self.dtype = flat, width, norm, flat.dtype
        assert zeros is None or (flat.dtype == torch.float32 and width in (2, 4, 8, 16)
                                 and 0 < zeros <= width)
        self.zeros = zeros

    def numel(self) -> int:
        return self.flat.numel() // self.width


def reads(data: torch.Tensor) -> bool:
    """Whether the kernels read ``data`` as scores or their source: float32 or float64, a
    plain contiguous CPU tensor, and the kernels are built."""
    return (native.KERNELS is not None and data.dtype in (torch.float32, torch.float64)
            and native.plain(data, data.dtype))


def _segments(pieces: Sequence[Piece | BlockMeans], keep: Sequence[torch.Tensor]
              ) -> ctypes.Array[native.Segment]:
    segments = (native.Segment * len(pieces))()
    total = 0
    for seg, piece, out in zip(segments, pieces, keep):
        if isinstance(piece, torch.Tensor):
            seg.x, seg.mode = piece.data_ptr(), _PLAIN
        elif isinstance(piece, RandomScores):
            seg.mode, seg.key = _RANDOM, piece.seed
            seg.alive = None if piece.keep is None else piece.keep.data_ptr()
        elif isinstance(piece, MovementScores):
            seg.mode, seg.x, seg.y = _MOVEMENT, piece.flat.data_ptr(), piece.grad.data_ptr()
            seg.z, seg.live = piece.weight.data_ptr(), piece.live.data_ptr()
            seg.out = piece.out.data_ptr()
        elif isinstance(piece, BlockMeans):
            seg.x, seg.width = piece.flat.data_ptr(), piece.width
            seg.mode = _BLOCK_L1 if piece.norm == "L1" else _BLOCK_L2
            if piece.zeros is not None:  # the element mask, written instead of keep
                seg.elems, seg.zeros = out.data_ptr(), piece.zeros
        else:
            assert isinstance(piece, AbsScores)
            seg.x = piece.flat.data_ptr()
            seg.mode = _ABS if piece.factor is None else _ABS_PRODUCT
            seg.y = None if piece.factor is None else piece.factor.data_ptr()
            seg.alive = None if piece.keep is None else piece.keep.data_ptr()
        seg.keep = None if seg.elems else out.data_ptr()
        seg.n, seg.base = piece.numel(), total
        total += piece.numel()
    return segments


def _kth(values: torch.Tensor, ranks: Sequence[int]) -> list[float]:
    """The ``rank``-th smallest (1-based) of the contiguous 1-D ``values`` (no NaN) for each
    of ``ranks``, selected at once on the threads."""
    assert native.KERNELS is not None
    n, count = values.numel(), len(ranks)
    out = (ctypes.c_double * count)()
    keys = pool.empty((count * n,), torch.int64, scratch=True)  # each radix select's own
    native.KERNELS.fsp_kth_many(values.data_ptr(), n, int(values.dtype == torch.float64),
                                (ctypes.c_int64 * count)(*ranks), count, keys.data_ptr(), out,
                                native.threads(count * n, _MIN_DRAWS_PER_THREAD, short=True))
    return list(out)


def _between(values: torch.Tensor, lo: float, hi: float) -> int:
    """How many of the contiguous 1-D ``values`` lie in ``[lo, hi]``."""
    assert native.KERNELS is not None
    return int(native.KERNELS.fsp_count_between(values.data_ptr(), values.numel(),
                                                int(values.dtype == torch.float64), lo, hi))


def _middle(lo: float, hi: float, dtype: torch.dtype) -> float:
    """A value of ``dtype`` in ``[lo, hi]`` near its middle (``hi`` if none is found): the
    pass guesses ``v > mid`` for every flag, and the finish rewrites the candidates it got
    wrong, the few between ``mid`` and the threshold (it lies near the bracket's middle)."""
    if math.isinf(lo) or math.isinf(hi):
        return hi if math.isinf(lo) else lo
    mid = float(torch.tensor(lo / 2 + hi / 2, dtype=torch.float64).to(dtype))
    return mid if lo <= mid <= hi else hi


def _bracket(pieces: Sequence[Piece | BlockMeans], segments: ctypes.Array[native.Segment],
             n: int, k: int) -> tuple[float, float, float, int] | None:
    """``(lo, mid, hi, budget)`` for the pass over ``segments`` (``n`` values, the ``k``-th
    lowest wanted); ``None`` where the caller should select another way. Up to
    ``threshold.SMALL`` values every one is a candidate: no sample, and the finish's radix
    select is the whole selection (no torch op, so nothing waits on a parallel region: on
    a busy machine each of those waits for a time slice). Its guess ``v > mid`` is then
    all kept or all pruned, whichever leaves the finish fewer flags to rewrite."""
    if n <= kth.SMALL:
        return -math.inf, math.inf if 2 * k >= n else -math.inf, math.inf, n
    lib = native.KERNELS
    assert lib is not None
    dtype, wide = pieces[0].dtype, int(pieces[0].dtype == torch.float64)
    drawn: dict[int, torch.Tensor] = {}  # draws by size: a sample is drawn once

    def sample(size: int) -> torch.Tensor:
        if size not in drawn:
            out = pool.empty((size,), dtype, scratch=True)
            team = native.threads(size, _MIN_DRAWS_PER_THREAD, short=True)
            got = lib.fsp_sample(segments, len(pieces), n, wide, size, team, out.data_ptr())
            drawn[size] = out[:got]  # the draws at live places only
        return drawn[size]

    # The bracket is of the (k - pruned)-th live value: counting the pruned places exactly
    # spares the sample their share of its noise (fewer candidates for the same margin).
    # A sample of all the places that meets no pruned one says there are none to speak of
    # (the masks of a dense state): no count then, and the pass still finds any there are.
    alive = [p.keep for p in pieces if isinstance(p, (AbsScores, RandomScores))
             and p.keep is not None]
    dense = kth.sample_size(n)
    pruned = 0
    if alive and sample(dense).numel() < dense:  # counted, unless the last pass wrote them
        known = mask_records.kept(alive)
        pruned = sum(a.numel() for a in alive) - int(
            known if known is not None else native.count_all(alive) or 0)
        if k <= pruned:
            return None  # the k-th may be a pruned place: the caller counts them
    # bounds reads only numel() and dtype of the pieces; the sample reads the segments
    found = kth.bounds(pieces, k - pruned, n - pruned, pruned > 0,  # type: ignore[arg-type]
                       draw=lambda _, size, __: sample(size), select=_kth, between=_between)
    if found is None:
        return None
    lo, hi = float(found[0]), float(found[1])
    return lo, _middle(lo, hi, dtype), hi, found[2]


def one_pass(pieces: Sequence[Piece | BlockMeans], k: int, keep: Sequence[torch.Tensor],
             finite: bool = False) -> bool:
    """Write ``keep`` (flat bool, one per piece): ``False`` at the ``k`` lowest values of
    ``pieces``, already-pruned places lowest of all (requires :func:`applies`, or
    :class:`BlockMeans` of data that :func:`reads`).

    Returns ``False`` if the bracket missed, overflowed or reached the pruned places, or
    (``finite``) a score is ``+inf`` (``keep`` is then partly written: the caller selects
    again); raises :class:`NaNScores` for a NaN at a live place.
    """
    lib = native.KERNELS
    assert lib is not None
    dtype, wide = pieces[0].dtype, int(pieces[0].dtype == torch.float64)
    segments, n = _segments(pieces, keep), sum(p.numel() for p in pieces)

    found = _bracket(pieces, segments, n, k)
    if found is None:
        return False
    lo, mid, hi, budget = found
    team = native.threads(n, _MIN_PER_THREAD)
    cap = min(budget + 1, n)  # one over the budget tells an overflow
    where = pool.empty((team * cap,), torch.int64, scratch=True)  # recycled: pages in place
    values = pool.empty((team * cap,), dtype, scratch=True)
    found_in, above_by = (ctypes.c_int64 * team)(), (ctypes.c_int64 * team)()  # per thread
    top = (ctypes.c_double * team)()  # each thread's largest score
    revived, revived_candidates = ctypes.c_int64(), ctypes.c_int64()
    lib.fsp_keep_pass(segments, len(pieces), n, wide, lo, mid, hi, team,
                      where.data_ptr(), values.data_ptr(), cap, found_in, above_by, top,
                      ctypes.byref(revived))
    for piece in pieces:  # the pass wrote every value of these, whatever it found
        if isinstance(piece, MovementScores):
            piece.filled = True
    n_cand, above = sum(found_in), sum(above_by)
    if n_cand > budget or (finite and max(top) == math.inf):
        return False
    keys = pool.empty((n_cand,), torch.int64, scratch=True)  # the radix select's scratch
    ties = lib.fsp_finish(segments, len(pieces), values.data_ptr(), where.data_ptr(), n_cand,
                          wide, k - (n - n_cand - above), mid, lo, hi,
                          keys.data_ptr(),
                          ctypes.byref(ctypes.c_double()),
                          native.threads(n_cand, _MIN_DRAWS_PER_THREAD, short=True),
                          ctypes.byref(revived_candidates))
    if ties <= -2:
        first = int(where[-2 - ties]) & ~_LIVE_OFF
        raise NaNScores(sum(1 for seg in segments[1:] if seg.base <= first))
    if ties < 0:
        return False
    if not any(isinstance(p, BlockMeans) and p.zeros is not None for p in pieces):
        mask_records.record_kept(keep, n - k)  # exactly: the next update's pruned places
    none_back = revived.value + revived_candidates.value == 0  # counted over all pieces
    for piece, out in zip(pieces, keep):  # what the pass has shown (engine/mask_records.py)
        if isinstance(piece, MovementScores):
            if none_back:
                mask_records.record_within(out, piece.live)
        elif not isinstance(piece, (torch.Tensor, BlockMeans)) and piece.keep is not None:
            mask_records.record_within(out, piece.keep)  # nothing is kept where keep is off
    return True
