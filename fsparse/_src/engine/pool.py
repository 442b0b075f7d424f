"""Recycled memory for the engine's large fresh outputs (``kernels/pool.c``).

A fresh CPU tensor of hundreds of MB gets new pages from the OS on every call (glibc
maps each allocation over 32 MiB on its own and unmaps it when freed), and touching
them the first time costs more than the pass that fills them: a 1,000,000 x 64 mask
or movement score is written into memory the update just faulted in. :func:`empty`
gives such outputs (at least :data:`MIN_BYTES`) from recycled blocks instead:

* a block goes back to the cache only when torch frees the tensor's storage, that is
  when no tensor, view or state refers to it any more; nothing is ever handed out
  twice, so no caller sees its data change;
* the next output of the same size (rounded to 2 MiB) takes it, its pages in place;
* unused blocks are cached up to ``FSPARSE_POOL_BYTES`` bytes (default: a quarter of
  the RAM, at most 8 GiB), the oldest beyond it unmapped;
  ``fsparse.release_cached_memory()`` unmaps them all now, ``fsparse.cached_memory()``
  tells how much is held.

``FSPARSE_POOL=0`` (read at import), no kernels, or another device: ``torch.empty``.
:mod:`~fsparse._src.engine.native` hands its loaded kernels here (:func:`use`).
The tensors are ordinary contiguous CPU tensors, except that their storage cannot
be resized (``resize_`` to a larger size raises, as for ``torch.from_numpy``).
"""

from __future__ import annotations

import ctypes
import os

import torch

__all__ = ["MIN_BYTES", "SCRATCH_BYTES", "cached_memory", "empty", "release_cached_memory", "use"]

MIN_BYTES = 32 << 20  # smaller outputs come from malloc's heap, mostly reused already
SCRATCH_BYTES = 1 << 20  # scratch that never leaves the engine: glibc maps it fresh too
_CODES = {torch.float32: (2, 32), torch.float64: (2, 64), torch.float16: (2, 16),
          torch.bfloat16: (4, 16), torch.bool: (6, 8), torch.uint8: (1, 8),
          torch.int32: (0, 32), torch.int64: (0, 64)}  # DLPack (type code, bits)
_NAME = b"dltensor"  # the capsule name torch.from_dlpack takes (kept alive here)
_capsule = ctypes.pythonapi.PyCapsule_New
_capsule.restype, _capsule.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p,
                                                         ctypes.c_void_p]


def _cap() -> int:
    raw = os.environ.get("FSPARSE_POOL_BYTES")
    if raw is not None:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"FSPARSE_POOL_BYTES must be a whole number of bytes, got {raw!r}"
                             ) from None
        if value < 0:
            raise ValueError(f"FSPARSE_POOL_BYTES must be >= 0, got {value}")
        return value
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        ram = 4 << 30
    return min(ram // 4, 8 << 30)


_lib: ctypes.CDLL | None = None  # the kernels, once native.py has loaded them
_CAP = 0


def use(lib: ctypes.CDLL | None) -> None:
    """Take the package's kernels (``None``: none built, or ``FSPARSE_NATIVE=0``); the pool
    stays off with ``FSPARSE_POOL=0``."""
    global _lib, _CAP
    if lib is None or os.environ.get("FSPARSE_POOL", "1") == "0":
        _lib = None
        return
    _CAP = _cap()
    lib.fsp_pool_limit(_CAP)
    _lib = lib


def empty(shape: tuple[int, ...] | torch.Size, dtype: torch.dtype,
          device: torch.device | str = "cpu", *, scratch: bool = False) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype, device=device)``: from recycled memory when it is
    a CPU tensor of at least :data:`MIN_BYTES` (``scratch``, a buffer the engine drops
    before it returns: :data:`SCRATCH_BYTES`) and the pool is on.

    >>> empty((3, 2), torch.bool).shape
    torch.Size([3, 2])
    """
    shape = tuple(int(s) for s in shape)
    codes = _CODES.get(dtype)
    nbytes = torch.Size(shape).numel() * (codes[1] // 8 if codes else 0)
    lib = _lib
    least = SCRATCH_BYTES if scratch else MIN_BYTES
    if lib is None or codes is None or nbytes < least or torch.device(device).type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device)
    dims = (ctypes.c_int64 * max(1, len(shape)))(*shape)
    made = lib.fsp_pool_tensor(nbytes, codes[0], codes[1], len(shape), dims)
    if not made:  # no memory for a new block, or too many dims: torch's own allocation
        return torch.empty(shape, dtype=dtype, device=device)
    try:
        return torch.from_dlpack(_capsule(made, _NAME, None))
    except (RuntimeError, TypeError, BufferError):  # a torch that does not take this dtype
        lib.fsp_pool_drop(made)  # torch refused it before owning it: the block goes back
        return torch.empty(shape, dtype=dtype, device=device)


def cached_memory() -> int:
    """Bytes of unused blocks the pool holds now (0 when it is off).

    >>> import fsparse
    >>> fsparse.cached_memory() >= 0
    True
    """
    return 0 if _lib is None else int(_lib.fsp_pool_cached())


def release_cached_memory() -> int:
    """Unmap every unused block now; returns the bytes given back to the OS. Blocks still
    in use return to the cache when their tensors are freed.

    >>> import fsparse
    >>> fsparse.release_cached_memory() >= 0
    True
    """
    if _lib is None:
        return 0
    freed = int(_lib.fsp_pool_limit(0))
    _lib.fsp_pool_limit(_CAP)
    return freed
