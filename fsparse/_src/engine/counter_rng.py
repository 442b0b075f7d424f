"""Counter-based uniform random scores: value ``i`` of stream ``key`` is a hash of ``(key, i)``.

Like JAX's ``threefry`` (and unlike a sequential generator such as ``torch.rand``), any
slice of a stream is computed on its own, in O(its length), on any device, with the same
values: a rank of a sharded table computes only its own rows, the engine computes scores
batch by batch inside its selection pass (the native kernels never store them), and CPU
and GPU masks agree.

The definition (:func:`reference` spells it out in plain Python, the tests' oracle):

* the position ``i`` splits into ``hi = i >> 32`` and ``lo = i & 0xFFFFFFFF``;
* ``z`` is the splitmix64 finalizer of ``key + (hi + 1) * 0x9E3779B97F4A7C15`` (mod 2**64),
  and ``k1, k2`` are its low and high 32 bits;
* ``h = f(f(lo ^ k1) ^ k2)``, with ``f`` Thomas Mueller's 32-bit integer hash
  (``x ^= x >> 16; x *= 0x45D9F3B; x ^= x >> 16; x *= 0x45D9F3B; x ^= x >> 16``, mod 2**32);
* the value is ``(h >> 8) * 2**-24``: a float32 in ``[0, 1)`` with 24 random bits, as
  ``torch.rand`` gives.

The multiplier is below ``2**31``, so the torch path's int64 products never overflow.
``kernels/kernels.h`` computes the same values natively (bit for bit: the tests compare).
"""

from __future__ import annotations

import torch

from fsparse._src.engine import native

__all__ = ["reference", "uniform", "values_at"]

_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF
_MUL = 0x45D9F3B
_SLICE = 1 << 20  # positions per torch-path slice: int64 temporaries stay bounded


def _block_keys(key: int, hi: int) -> tuple[int, int]:
    """``(k1, k2)`` of positions ``hi * 2**32 ...``: the splitmix64 finalizer's halves."""
    z = (key + (hi + 1) * 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    z ^= z >> 31
    return z & _M32, z >> 32


def _mix(x: int) -> int:
    x ^= x >> 16
    x = (x * _MUL) & _M32
    x ^= x >> 16
    x = (x * _MUL) & _M32
    return x ^ (x >> 16)


def reference(key: int, i: int) -> float:
    """Value ``i`` of stream ``key``, in plain Python (slow; the definition).

    >>> reference(7, 3) == float(uniform(7, 3, 1)[0])
    True
    """
    k1, k2 = _block_keys(key, i >> 32)
    return (_mix(_mix((i & _M32) ^ k1) ^ k2) >> 8) * 2.0**-24


def _mix_(x: torch.Tensor, tmp: torch.Tensor) -> torch.Tensor:
    """:func:`_mix` in place on int64 ``x`` holding values in ``[0, 2**32)``."""
    for last in (False, False, True):
        x.bitwise_xor_(torch.bitwise_right_shift(x, 16, out=tmp))
        if not last:
            x.mul_(_MUL).bitwise_and_(_M32)
    return x


def _hash_(x: torch.Tensor, k1: int | torch.Tensor, k2: int | torch.Tensor) -> torch.Tensor:
    """The values at positions whose low halves are the int64 ``x`` (overwritten), with
    block keys ``k1, k2`` (ints, or tensors like ``x``)."""
    tmp = torch.empty_like(x)
    _mix_(x.bitwise_xor_(k1), tmp)
    _mix_(x.bitwise_xor_(k2), tmp)
    return x.bitwise_right_shift_(8).to(torch.float32).mul_(2.0**-24)


def _torch_fill(key: int, start: int, out: torch.Tensor) -> None:
    """Values ``start ...`` of stream ``key`` into the 1-D float32 ``out``, by torch ops
    (in slices within one 2**32 block: no data-dependent control flow)."""
    done, n = 0, out.numel()
    while done < n:
        hi, lo = (start + done) >> 32, (start + done) & _M32
        count = min(n - done, _SLICE, (1 << 32) - lo)
        x = torch.arange(lo, lo + count, dtype=torch.int64, device=out.device)
        out[done : done + count] = _hash_(x, *_block_keys(key, hi))
        done += count


def values_at(key: int, positions: torch.Tensor) -> torch.Tensor:
    """Values of stream ``key`` at the int64 ``positions`` (each ``>= 0``), float32.

    >>> torch.equal(values_at(4, torch.tensor([9, 2])), uniform(4, 0, 10)[[9, 2]])
    True
    """
    x = positions.bitwise_and(_M32)
    high = torch.bitwise_right_shift(positions, 32)
    if positions.numel() == 0 or int(high.max()) == 0:  # nearly every tensor: one block
        return _hash_(x, *_block_keys(key, 0))
    k1, k2 = torch.empty_like(x), torch.empty_like(x)
    for hi in high.unique().tolist():
        at = high == hi
        keys = _block_keys(key, int(hi))
        k1.masked_fill_(at, keys[0]), k2.masked_fill_(at, keys[1])
    return _hash_(x, k1, k2)


def uniform(key: int, start: int, count: int, *, device: torch.device | str = "cpu",
            out: torch.Tensor | None = None) -> torch.Tensor:
    """Values ``start:start + count`` of stream ``key`` (a float32 tensor, or ``out``).

    ``key`` is a 64-bit integer (``0 <= key < 2**64``), ``start >= 0``. On a plain CPU
    tensor with the native kernels built, they fill it; elsewhere torch ops do, with the
    same values.

    >>> v = uniform(1, 0, 5)
    >>> torch.equal(v[2:], uniform(1, 2, 3)), bool(((0 <= v) & (v < 1)).all())
    (True, True)
    """
    if not 0 <= key <= _M64 or start < 0 or count < 0:
        raise ValueError(f"uniform: bad stream slice (key={key}, start={start}, count={count}): "
                         "key must be in [0, 2**64), start and count >= 0")
    if out is None:
        out = torch.empty(count, dtype=torch.float32, device=device)
    if out.dtype != torch.float32 or out.dim() != 1:
        raise ValueError(f"uniform: bad stream slice: out must be 1-D float32, got "
                         f"{out.dtype} of {out.dim()} dims")
    if native.KERNELS is not None and native.plain(out, torch.float32):
        native.KERNELS.fsp_uniform(key, start, out.numel(), out.data_ptr(),
                                   native.threads(out.numel()))
    else:
        _torch_fill(key, start, out)
    return out
