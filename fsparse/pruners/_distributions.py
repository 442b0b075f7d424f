"""Distributions: one target sparsity in, one sparsity per tensor out.

* :func:`uniform_sparsities`: every tensor gets the target.
* :func:`erk_sparsities`: the Erdős-Rényi-Kernel rule of the RigL paper (Evci et
  al. 2020, appendix), as jaxpruner's ``get_sparsities_erdos_renyi`` computes it.

Both take ``shapes`` (name -> shape) and ``overrides`` (name -> sparsity) that
win over the rule; the result maps every name to a float in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from fsparse._src.checks import check_bool, check_instance, check_real, check_shape, short_repr
from fsparse.pruners._mapping import check_name

__all__ = ["check_overrides", "erk_sparsities", "uniform_sparsities"]


def _shapes(shapes: object) -> dict[str, tuple[int, ...]]:
    check_instance(shapes, Mapping, "shapes")
    return {check_name(n, "shapes"): check_shape(s, f"shapes[{short_repr(n)}]")
            for n, s in shapes.items()}  # type: ignore[attr-defined]


def check_overrides(overrides: object, names: Sequence[str] | None) -> dict[str, float]:
    """``overrides`` as a dict of sparsities in [0, 1], naming only known ``names``."""
    if overrides is None:
        return {}
    check_instance(overrides, Mapping, "overrides")
    out = {check_name(n, "overrides"): check_real(v, f"overrides[{short_repr(n)}]", low=0.0,
                                                    high=1.0)
           for n, v in overrides.items()}  # type: ignore[attr-defined]
    if names is not None:
        unknown = [n for n in out if n not in set(names)]
        if unknown:
            raise ValueError(f"overrides names unknown tensors {short_repr(unknown)}")
    return out


def _target(sparsity: object) -> float:
    return check_real(sparsity, "sparsity", low=0.0, high=1.0)


def uniform_sparsities(
    shapes: Mapping[str, Sequence[int]], sparsity: float, *,
    overrides: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """``sparsity`` for every name, except where ``overrides`` says otherwise.

    >>> uniform_sparsities({"a": (4, 4), "b": (8,)}, 0.5, overrides={"b": 0.0})
    {'a': 0.5, 'b': 0.0}
    """
    named = _shapes(shapes)
    target = _target(sparsity)
    fixed = check_overrides(overrides, list(named))
    return {n: fixed.get(n, target) for n in named}


def _raw_density(shape: tuple[int, ...], include_kernel: bool, power_scale: float,
                 name: str) -> float:
    if include_kernel:
        if not shape:  # a scalar: one weight, as dense as a 1-D tensor
            return 1.0
        return (sum(shape) / math.prod(shape)) ** power_scale
    if len(shape) < 2:
        raise ValueError(
            f"erk_sparsities with include_kernel=False needs tensors of 2 or more dims (it uses "
            f"the last two as n_in, n_out); shapes[{short_repr(name)}] is {short_repr(shape)}: "
            "give it an override")
    n_in, n_out = shape[-2:]
    return (n_in + n_out) / (n_in * n_out)


def erk_sparsities(
    shapes: Mapping[str, Sequence[int]], sparsity: float, *, include_kernel: bool = True,
    power_scale: float = 1.0, overrides: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Erdős-Rényi-Kernel sparsities: density ``eps * raw`` with one ``eps`` for all tensors.

    ``raw = (sum(shape) / prod(shape)) ** power_scale``, or with
    ``include_kernel=False`` ``(n_in + n_out) / (n_in * n_out)`` over the last two
    dims. ``eps`` makes the kept count equal that of the uniform rule
    (``numel - floor(sparsity * numel)`` per tensor, summed). A tensor whose
    density would exceed 1 is made dense (those with the largest ``raw`` first)
    and ``eps`` solved again, until every density is at most 1. Overridden
    tensors take their override and stay out of the count; empty tensors get
    ``sparsity``. Follows jaxpruner's ``get_sparsities_erdos_renyi``.

    >>> erk = erk_sparsities({"a": (10, 10), "b": (10, 40)}, 0.5)  # eps = 250 / 70
    >>> {n: round(s, 4) for n, s in erk.items()}
    {'a': 0.2857, 'b': 0.5536}
    >>> erk = erk_sparsities({"a": (2, 2), "b": (100, 100)}, 0.5)  # 'a' would exceed density 1
    >>> {n: round(s, 4) for n, s in erk.items()}
    {'a': 0.0, 'b': 0.5002}
    """
    named = _shapes(shapes)
    target = _target(sparsity)
    check_bool(include_kernel, "include_kernel")
    power = check_real(power_scale, "power_scale", low=0.0)
    fixed = check_overrides(overrides, list(named))
    solved = [n for n in named if n not in fixed and math.prod(named[n]) > 0]
    raw = {n: _raw_density(named[n], include_kernel, power, n) for n in solved}
    dense: set[str] = set()
    eps = 0.0
    while True:
        rhs = 0.0
        divisor = 0.0
        for n in solved:
            size = math.prod(named[n])
            zeros = math.floor(target * size)
            if n in dense:
                rhs -= zeros
            else:
                rhs += size - zeros
                divisor += raw[n] * size
        live = [n for n in solved if n not in dense]
        if not live or divisor == 0.0:
            break
        eps = rhs / divisor
        top = max(raw[n] for n in live)
        if top * eps <= 1.0:
            break
        dense.update(n for n in live if raw[n] == top)
    out: dict[str, float] = {}
    for n in named:
        if n in fixed:
            out[n] = fixed[n]
        elif n in dense:
            out[n] = 0.0
        elif n in raw:
            out[n] = min(max(1.0 - eps * raw[n], 0.0), 1.0)
        else:
            out[n] = target
    return out
