"""The engine's native kernels (``kernels/*.c``), loaded with ctypes; ``KERNELS`` is ``None``
where they were not built (no C compiler at install) or ``FSPARSE_NATIVE=0`` is set,
and every caller then runs its torch path, which gives the same results bit for bit.

``setup.py`` builds the shared object at install. It holds no Python code and reads
and writes only the buffers it is handed. Work runs on torch's own OpenMP threads
when torch's runtime is found (they are awake and sized by ``torch.set_num_threads``;
a fresh thread on an idle core starts late), else, and while the machine is busy
(:mod:`~fsparse._src.engine.busy`: OpenMP's workers spin after each region), on plain
pthreads that block rather than spin. Nothing here sets thread state.

Here: the flag-byte helpers (:func:`count_true`, :func:`gains`) and the masked write
:func:`zero_pruned_`; the fused selection pass is :mod:`~fsparse._src.engine.native_keep`.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
from collections.abc import Sequence
from typing import Any

import torch

from fsparse._src.checks import under_transform
from fsparse._src.engine import busy, pool

__all__ = ["KERNELS", "Segment", "any_gains", "bind", "count_all", "count_true", "gains",
           "movement_scores", "plain", "spread", "threads", "use_openmp", "zero_all_pruned_",
           "zero_pruned_", "zero_revived"]

_OPENMP = re.compile(r"lib(gomp|iomp5|omp)(-[0-9a-f]+)?(\.so(\.\d+)*|\.dylib)")
_PER_THREAD = 1 << 20  # flag bytes or weights per thread, at least


class Segment(ctypes.Structure):
    """One piece of a concatenation, as ``kernels/kernels.h``'s ``fsp_segment``."""

    _fields_ = [("x", ctypes.c_void_p), ("y", ctypes.c_void_p), ("alive", ctypes.c_void_p),
                ("keep", ctypes.c_void_p), ("n", ctypes.c_int64), ("base", ctypes.c_int64),
                ("mode", ctypes.c_int64), ("width", ctypes.c_int64), ("key", ctypes.c_uint64),
                ("z", ctypes.c_void_p), ("live", ctypes.c_void_p), ("out", ctypes.c_void_p),
                ("elems", ctypes.c_void_p), ("zeros", ctypes.c_int64)]


def _torch_openmp() -> ctypes.CDLL | None:
    """torch's own OpenMP runtime (its wheels ship one in ``torch/lib``, which the process
    has loaded already, so this opens the same copy), or ``None``."""
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    lib_dir = os.path.join(os.path.dirname(torch.__file__), "lib")
    names = os.listdir(lib_dir) if os.path.isdir(lib_dir) else []
    for name in sorted(n for n in names if _OPENMP.fullmatch(n)):
        try:
            omp = ctypes.CDLL(os.path.join(lib_dir, name))
        except OSError:
            continue
        if all(hasattr(omp, f) for f in ("GOMP_parallel", "omp_get_thread_num",
                                            "omp_get_num_threads")):
            return omp
    return None


def _load() -> ctypes.CDLL | None:
    if os.environ.get("FSPARSE_NATIVE", "1") == "0":  # the torch path, as without a compiler
        return None
    spec = importlib.util.find_spec("fsparse._src.engine._kernels")
    if spec is None or spec.origin is None:
        return None
    try:
        return bind(spec.origin)
    except OSError:
        return None


def bind(path: str) -> ctypes.CDLL:
    """The kernels' shared object at ``path`` with its signatures declared (``OSError`` if
    it cannot be loaded); ``_load`` gives it the package's own build."""
    lib = ctypes.CDLL(path)
    i64, ptr, f64 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_double
    seg = ctypes.POINTER(Segment)
    for name, args, result in (
        ("fsp_keep_pass", [seg, i64, i64, i64, f64, f64, f64, i64, ptr, ptr, i64, ptr, ptr,
                           ptr, ptr], i64),
        ("fsp_kth_many", [ptr, i64, i64, ptr, i64, ptr, ptr, i64], i64),
        ("fsp_count_between", [ptr, i64, i64, f64, f64], i64),
        ("fsp_finish", [seg, i64, ptr, ptr, i64, i64, i64, f64, f64, f64, ptr, ptr, i64, ptr],
         i64),
        ("fsp_sample", [seg, i64, i64, i64, i64, i64, ptr], i64),
        ("fsp_count_true", [ptr, ptr, i64, i64], i64),
        ("fsp_gains", [ptr, ptr, ptr, i64, i64], i64),
        ("fsp_any_false", [ptr, i64, i64], i64),
        ("fsp_zero_pruned", [ptr, ptr, ptr, i64, i64, i64], None),
        ("fsp_spread", [ptr, i64, i64, ptr, i64, ptr, i64, i64, i64], None),
        ("fsp_uniform", [ctypes.c_uint64, i64, i64, ptr, i64], None),
        ("fsp_movement", [ptr, ptr, ptr, ptr, ptr, i64, i64, i64], None),
        ("fsp_zero_revived", [ptr, ptr, ptr, ptr, i64, i64, i64], None),
        ("fsp_masked", [ptr, ptr, ptr, i64, i64, i64, i64], None),
        ("fsp_use_openmp", [ptr, ptr, ptr], None),
        ("fsp_blocking", [i64], None),
        ("fsp_pool_tensor", [i64, i64, i64, i64, ptr], ptr),
        ("fsp_pool_drop", [ptr], None),
        ("fsp_pool_limit", [i64], i64),
        ("fsp_pool_cached", [], i64),
    ):
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, result
    use_openmp(lib, _torch_openmp())
    return lib


def use_openmp(lib: ctypes.CDLL, omp: ctypes.CDLL | None) -> None:
    """Hand ``omp`` (torch's OpenMP runtime) to the kernels; ``None``: plain pthreads."""
    names = ("GOMP_parallel", "omp_get_thread_num", "omp_get_num_threads")
    lib.fsp_use_openmp(*(None if omp is None else ctypes.cast(getattr(omp, f), ctypes.c_void_p)
                         for f in names))


KERNELS = _load()
pool.use(KERNELS)  # large fresh outputs from recycled memory (pool.py)


def plain(t: torch.Tensor | None, dtype: torch.dtype) -> bool:
    """Whether the kernels may read or write ``t`` as ``dtype``: a contiguous plain CPU
    tensor (no subclass such as DTensor, not traced); ``None`` passes."""
    return t is None or (type(t) is torch.Tensor and t.device.type == "cpu"
                         and t.dtype == dtype and t.is_contiguous() and not under_transform(t))


def threads(work: int, least: int = _PER_THREAD, short: bool = False) -> int:
    """Threads for ``work`` items: torch's count, but at least ``least`` items each; one
    for ``short`` work while the machine is busy (:mod:`~fsparse._src.engine.busy`)."""
    loaded = busy.busy()
    if KERNELS is not None and (_told[0] is not KERNELS or _told[1] is not loaded):
        KERNELS.fsp_blocking(loaded)  # told only when it changes (or the library does)
        _told[:] = KERNELS, loaded
    if short and loaded:
        return 1
    return max(1, min(torch.get_num_threads(), work // least))


_told: list[Any] = [None, False]  # the library last told whether to block, and what


def _flags(*masks: torch.Tensor) -> bool:
    return KERNELS is not None and all(plain(m, torch.bool) for m in masks)


def _items(*columns: Sequence[torch.Tensor]) -> tuple[Any, ...]:
    """The many-item kernels' arguments: a ctypes array of data pointers per column of
    tensors, then one of the element counts of the first column's (``ns``)."""
    pointers = [(ctypes.c_void_p * len(c))(*(t.data_ptr() for t in c)) for c in columns]
    sizes = (ctypes.c_int64 * len(columns[0]))(*(t.numel() for t in columns[0]))
    return (*pointers, sizes)


def count_true(flags: torch.Tensor) -> int | None:
    """Set flags of the bool ``flags`` natively, or ``None`` where the kernels do not apply.

    >>> count_true(torch.arange(10) % 3 == 0) in (4, None)
    True
    """
    return count_all([flags])


def count_all(masks: Sequence[torch.Tensor]) -> int | None:
    """Set flags of all the bool ``masks`` together, in one native run over them (so many
    small masks share the threads), or ``None`` where the kernels do not apply to each.

    >>> count_all([torch.tensor([True, False]), torch.ones(3, dtype=torch.bool)]) in (4, None)
    True
    """
    if not _flags(*masks):
        return None
    assert KERNELS is not None
    ptrs, ns = _items(masks)
    return int(KERNELS.fsp_count_true(ptrs, ns, len(masks), threads(sum(ns))))


def all_true(flags: torch.Tensor) -> bool | None:
    """Whether every flag of the bool ``flags`` is set, natively (stopping at the first one
    that is not), or ``None`` where the kernels do not apply.

    >>> all_true(torch.arange(10) < 9) in (False, None)
    True
    """
    if not _flags(flags):
        return None
    assert KERNELS is not None
    return not KERNELS.fsp_any_false(flags.data_ptr(), flags.numel(), threads(flags.numel()))


def gains(old: torch.Tensor, new: torch.Tensor) -> bool | None:
    """Whether ``new`` is set somewhere ``old`` is not (same shape bool tensors), natively,
    or ``None`` where the kernels do not apply.

    >>> gains(torch.tensor([True, False]), torch.tensor([False, True])) in (True, None)
    True
    """
    return any_gains([(old, new)])


def any_gains(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> bool | None:
    """Whether :func:`gains` holds for some ``(old, new)`` pair, in one native search over
    them all (it stops at the first it finds), or ``None`` where the kernels do not apply
    to every pair.

    >>> on, off = torch.tensor([True, True]), torch.tensor([True, False])
    >>> any_gains([(on, off), (on, on)]) in (False, None)
    True
    >>> any_gains([(on, off), (off, on)]) in (True, None)
    True
    """
    if not all(_flags(old, new) and old.shape == new.shape for old, new in pairs):
        return None
    assert KERNELS is not None
    olds, news, ns = _items([old for old, _ in pairs], [new for _, new in pairs])
    return bool(KERNELS.fsp_gains(olds, news, ns, len(pairs), threads(sum(ns))))


def spread(keep: torch.Tensor, width: int, ranked: tuple[torch.Tensor, str, int] | None = None
           ) -> torch.Tensor:
    """Each flag of the 1-D bool ``keep`` repeated ``width`` times, natively (requires the
    kernels and a plain contiguous ``keep``): ``keep.repeat_interleave(width)``.

    With ``ranked = (data, norm, zeros)`` (``data`` float32/64 with no NaN, plain, ``width``
    elements a block; ``width`` 2, 4, 8 or 16; ``zeros < width``), a pruned block keeps all but its
    ``zeros`` smallest ``|x|`` (``"L1"``) or ``x * x`` (``"L2"``), ties by position.

    >>> flags = torch.tensor([True, False])
    >>> (spread(flags, 2) if KERNELS is not None else flags.repeat_interleave(2)).tolist()
    [True, True, False, False]
    """
    assert KERNELS is not None and plain(keep, torch.bool) and keep.dim() == 1
    out = pool.empty((keep.numel() * width,), torch.bool)
    x, dbl, l2, zeros = None, 0, 0, width
    if ranked is not None:
        data, norm, zeros = ranked
        assert plain(data, data.dtype) and data.numel() == out.numel() and width in (2, 4, 8, 16)
        x, dbl, l2 = data.data_ptr(), int(data.dtype == torch.float64), int(norm == "L2")
    KERNELS.fsp_spread(keep.data_ptr(), keep.numel(), width, out.data_ptr(),
                       threads(out.numel()), x, dbl, l2, zeros)
    return out


def zero_applies(weight: torch.Tensor, keep: torch.Tensor) -> bool:
    """Whether :func:`zero_pruned_` can write ``weight`` (float32/64) under ``keep``."""
    return (_flags(keep) and weight.dtype in (torch.float32, torch.float64)
            and plain(weight, weight.dtype) and weight.shape == keep.shape)


def zero_pruned_(weight: torch.Tensor, keep: torch.Tensor) -> None:
    """``weight.mul_(keep)`` in place natively (requires :func:`zero_applies`): the same
    values, written only where they change (pruned weights that are not yet zero).

    >>> w = torch.tensor([1.0, -2.0, 3.0])
    >>> if zero_applies(w, torch.tensor([True, False, True])):
    ...     zero_pruned_(w, torch.tensor([True, False, True]))
    ... else:
    ...     _ = w.mul_(torch.tensor([1.0, 0.0, 1.0]))
    >>> w
    tensor([1., -0., 3.])
    """
    zero_all_pruned_([(weight, keep)])


def zero_all_pruned_(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """:func:`zero_pruned_` on every ``(weight, keep)`` pair (each :func:`zero_applies`), in
    one native run per dtype over all of them: many small weights (a conv net's) share
    the threads as one large one would.

    >>> w, v = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])
    >>> keep = torch.tensor([False, True])
    >>> if zero_applies(w, keep) and zero_applies(v, keep):
    ...     zero_all_pruned_([(w, keep), (v, keep)])
    ... else:
    ...     _ = w.mul_(keep), v.mul_(keep)
    >>> w.tolist(), v.tolist()
    ([0.0, 2.0], [0.0, 4.0])
    """
    assert KERNELS is not None
    odd = [w.dtype for w, _ in pairs if w.dtype not in (torch.float32, torch.float64)]
    if odd:  # the runs below are per dtype: another one would be left unwritten
        raise TypeError(f"zero_all_pruned_ writes float32 and float64 weights, got {odd[0]}")
    for dtype in (torch.float32, torch.float64):
        group = [(w, k) for w, k in pairs if w.dtype == dtype]
        if group:
            ws, keeps, ns = _items([w for w, _ in group], [k for _, k in group])
            KERNELS.fsp_zero_pruned(ws, keeps, ns, len(group), int(dtype == torch.float64),
                                    threads(sum(ns)))


def movement_scores(score: torch.Tensor, grad: torch.Tensor, weight: torch.Tensor,
                    live: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor | None:
    """Movement pruning's next score ``where(live, -(grad * weight), 0) + score``, computed
    natively (the torch path's operations, bit for bit) into ``out`` (a fresh tensor when
    ``None``), or ``None`` where the kernels do not apply (all plain contiguous CPU tensors
    of one float32/64 dtype and shape, ``live`` bool).

    >>> s, g, w = torch.zeros(3), torch.tensor([1.0, 2.0, 3.0]), torch.ones(3)
    >>> got = movement_scores(s, g, w, torch.tensor([True, False, True]))
    >>> got is None or got.tolist() == [-1.0, 0.0, -3.0]
    True
    """
    dtype = score.dtype
    if (not _flags(live) or dtype not in (torch.float32, torch.float64)
            or not all(plain(t, dtype) and t.shape == score.shape for t in (grad, weight))
            or not plain(score, dtype) or live.shape != score.shape
            or (out is not None and not (plain(out, dtype) and out.shape == score.shape))):
        return None
    assert KERNELS is not None
    out = pool.empty(score.shape, dtype) if out is None else out
    KERNELS.fsp_movement(score.data_ptr(), grad.data_ptr(), weight.data_ptr(), live.data_ptr(),
                         out.data_ptr(), score.numel(), int(dtype == torch.float64),
                         threads(score.numel()))
    return out


def zero_revived(weight: torch.Tensor, old: torch.Tensor, new: torch.Tensor
                 ) -> torch.Tensor | None:
    """A fresh copy of ``weight`` with ``+0.0`` where ``new`` is on and ``old`` is off (the
    weights an update revived): ``torch.where(new > old, 0, weight)`` natively, bit for
    bit, or ``None`` where the kernels do not apply (plain contiguous CPU tensors of one
    shape; float32/64 weight, bool masks).

    >>> w = torch.tensor([1.0, -2.0, 3.0])
    >>> got = zero_revived(w, torch.tensor([True, False, False]), torch.tensor([True, True, False]))
    >>> got is None or got.tolist() == [1.0, 0.0, 3.0]
    True
    """
    dtype = weight.dtype
    if (not _flags(old, new) or dtype not in (torch.float32, torch.float64)
            or not plain(weight, dtype) or not weight.shape == old.shape == new.shape):
        return None
    assert KERNELS is not None
    out = pool.empty(weight.shape, dtype)
    KERNELS.fsp_zero_revived(weight.data_ptr(), old.data_ptr(), new.data_ptr(), out.data_ptr(),
                             weight.numel(), int(dtype == torch.float64),
                             threads(weight.numel()))
    return out
