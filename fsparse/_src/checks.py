"""The one checker for tensors and arguments at every public door.

Each check returns its (possibly normalised) value or raises ``TypeError`` /
``ValueError`` naming the argument, what it got (bounded by :func:`short_repr`)
and what is accepted. Pure functions, no torch kernels beyond a finiteness test.

>>> check_tensor(torch.ones(2), "data").shape
torch.Size([2])
>>> check_tensor(torch.ones(2, dtype=torch.int64), "data")  # doctest: +ELLIPSIS
Traceback (most recent call last):
    ...
TypeError: data must be a floating-point tensor (float16, bfloat16, float32, float64), got ...
"""

from __future__ import annotations

import math
import numbers
import reprlib
from collections.abc import Callable
from typing import Any

import torch

__all__ = [
    "FLOAT_DTYPES",
    "check_bool",
    "check_callable",
    "check_finite",
    "check_instance",
    "check_int",
    "check_no_nan",
    "check_real",
    "check_shape",
    "check_tensor",
    "short_repr",
    "under_transform",
]

FLOAT_DTYPES: tuple[torch.dtype, ...] = (
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
)

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 6
_repr.maxlevel = 3


def short_repr(value: object, limit: int = 80) -> str:
    """``repr(value)`` bounded in length and depth: safe in any error message.

    >>> short_repr(list(range(1000)))
    '[0, 1, 2, 3, 4, 5, ...]'
    >>> len(short_repr("x" * 10**6)) <= 80
    True
    """
    if isinstance(value, torch.Tensor):
        return f"tensor(shape={tuple(value.shape)}, dtype={value.dtype})"
    try:
        text = _repr.repr(value)
    except Exception:  # a hostile __repr__ must not hide the real error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_tensor(
    value: object,
    arg: str | Callable[[], str],
    *,
    floating: bool = True,
    dtypes: tuple[torch.dtype, ...] | None = None,
) -> torch.Tensor:
    """``value`` if it is a dense (strided), non-quantized tensor on a real device.

    With ``floating`` (the default) the dtype must be one of :data:`FLOAT_DTYPES`;
    ``dtypes`` replaces that list. Raises ``TypeError`` otherwise. ``arg`` may be a
    function giving the name, called only for the error (hot loops skip formatting it).
    """
    if not isinstance(arg, str):
        arg = _Lazy(arg)  # type: ignore[assignment]
    allowed = dtypes if dtypes is not None else (FLOAT_DTYPES if floating else None)
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{arg} must be a {_accepted(allowed)}, got {type(value).__name__} {short_repr(value)}"
        )
    if value.layout != torch.strided:
        raise TypeError(
            f"{arg} must be a dense (strided) tensor, got layout {value.layout}; "
            "convert it with .to_dense() first"
        )
    if value.is_quantized:
        raise TypeError(f"{arg} must not be a quantized tensor, got dtype {value.dtype}")
    if value.is_meta:
        raise TypeError(f"{arg} must hold real values, got a tensor on the meta device")
    if allowed is not None and value.dtype not in allowed:
        raise TypeError(f"{arg} must be a {_accepted(allowed)}, got dtype {value.dtype}")
    return value


class _Lazy:
    """A name computed when an error message formats it."""

    def __init__(self, make: Callable[[], str]) -> None:
        self._make = make

    def __str__(self) -> str:
        return self._make()


def _accepted(dtypes: tuple[torch.dtype, ...] | None) -> str:
    if dtypes is None:
        return "torch.Tensor"
    names = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
    kind = "floating-point tensor" if dtypes == FLOAT_DTYPES else "tensor"
    return f"{kind} ({names})"


def check_finite(value: torch.Tensor, arg: str) -> torch.Tensor:
    """``value`` if it holds no NaN or Inf, else ``ValueError`` naming ``arg``."""
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{arg} contains NaN or Inf; clean it (e.g. with torch.nan_to_num) first")
    return value


def check_no_nan(value: torch.Tensor, arg: str) -> torch.Tensor:
    """``value`` if it holds no NaN (Inf is orderable and allowed), else ``ValueError``."""
    if value.is_floating_point():
        found = torch.isnan(value).any()
        if hasattr(found, "full_tensor"):  # a DTensor's flag is per rank: reduce it, all raise
            found = found.full_tensor()
        if bool(found):
            raise ValueError(f"{arg} contains NaN, which cannot be ranked; clean it first")
    return value


def check_instance(value: object, cls: type | tuple[type, ...], arg: str) -> Any:
    """``value`` if it is an instance of ``cls``, else ``TypeError`` naming both."""
    if not isinstance(value, cls):
        classes = cls if isinstance(cls, tuple) else (cls,)
        names = " or ".join(c.__name__ for c in classes)
        raise TypeError(f"{arg} must be a {names}, got {type(value).__name__} {short_repr(value)}")
    return value


def check_shape(value: object, arg: str) -> tuple[int, ...]:
    """``value`` as a tuple if it is a shape: a sequence (or 1-D integer tensor) of ints >= 0.

    Floats (even integral ones) and bools are refused, never truncated.
    """
    if isinstance(value, torch.Tensor):
        if value.dim() != 1 or value.is_floating_point() or value.is_complex() or (
            value.dtype == torch.bool
        ) or value.layout != torch.strided or value.is_meta:
            raise TypeError(
                f"{arg} must be a 1-D integer tensor or a sequence of ints, got {short_repr(value)}"
            )
        value = value.tolist()
    if not isinstance(value, (tuple, list, torch.Size)):
        raise TypeError(f"{arg} must be a sequence of ints, got {type(value).__name__} "
                        f"{short_repr(value)}")
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise TypeError(f"{arg} must hold only ints, got {short_repr(value)}")
    if any(d < 0 for d in value):
        raise ValueError(f"{arg} must hold non-negative ints, got {short_repr(value)}")
    return tuple(value)


def check_real(
    value: object,
    arg: str,
    *,
    low: float | None = None,
    high: float | None = None,
    finite: bool = True,
) -> float:
    """``value`` as a float if it is a real number (not bool) within ``[low, high]``.

    NaN is refused; so is ``+-inf`` unless ``finite=False``.

    Python ints too large for a float raise ``ValueError``, not ``OverflowError``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{arg} must be a real number, got {type(value).__name__} {short_repr(value)}"
        )
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"{arg} is too large, got {short_repr(value)}") from None
    if math.isnan(number) or (finite and math.isinf(number)):
        what = "a finite number," if finite else "a number, not NaN,"
        raise ValueError(f"{arg} must be {what} got {short_repr(value)}")
    if (low is not None and number < low) or (high is not None and number > high):
        raise ValueError(f"{arg} must be in [{low}, {high}], got {short_repr(value)}")
    return number


def check_int(value: object, arg: str, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` if it is an int (not bool) within ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{arg} must be an int, got {type(value).__name__} {short_repr(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{arg} must be {bounds}, got {short_repr(value)}")
    return value


def check_bool(value: object, arg: str) -> bool:
    """``value`` if it is a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"{arg} must be a bool, got {type(value).__name__} {short_repr(value)}")
    return value


def check_callable(value: object, arg: str, *, optional: bool = False) -> Any:
    """``value`` if it is callable (or ``None`` when ``optional``)."""
    if value is None and optional:
        return None
    if not callable(value):
        what = "callable or None" if optional else "callable"
        raise TypeError(f"{arg} must be {what}, got {type(value).__name__} {short_repr(value)}")
    return value


def under_transform(data: torch.Tensor) -> bool:
    """Whether ``data`` is traced by ``torch.func`` or ``torch.compile``."""
    return torch._C._functorch.is_functorch_wrapped_tensor(data) or torch.compiler.is_compiling()
