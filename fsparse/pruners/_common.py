"""The arguments every pruner factory shares, checked once when the pruner is made.

``sparsity`` is a float in [0, 1] spread by ``distribution`` (``"uniform"``,
``"erk"`` or a callable ``(shapes, sparsity) -> {name: sparsity}``), or a
``name -> sparsity`` mapping (names it leaves out stay dense). ``overrides``
(name -> sparsity) wins over either. ``sparsity_type`` is a pattern or its string.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from fsparse._src.checks import check_callable, check_instance, check_int, check_real, short_repr
from fsparse._src.engine import Pattern, counter_rng, parse_pattern
from fsparse._src.engine.dispatch import implementation, sharded_kind
from fsparse._src.engine.scoring import RandomScores
from fsparse.pruners._distributions import check_overrides, erk_sparsities, uniform_sparsities
from fsparse.pruners._mapping import check_name
from fsparse.pruners._schedules import Steps

__all__ = ["Common", "extreme", "filled", "lazy_random_scores", "random_scores", "whole"]

Distribution = Callable[[Mapping[str, tuple[int, ...]], float], Mapping[str, float]]
_DISTRIBUTIONS: dict[str, Distribution] = {"uniform": uniform_sparsities, "erk": erk_sparsities}


@dataclass(frozen=True)
class Common:
    """Checked common arguments; :meth:`targets` turns them into per-tensor sparsities."""

    sparsity: float | Mapping[str, float]
    distribution: Distribution
    pattern: Pattern
    overrides: Mapping[str, float]
    steps: Steps
    is_global: bool = False

    @classmethod
    def make(cls, sparsity: object, distribution: object = "uniform",
             sparsity_type: object = "unstructured", start_step: object = 0,
             end_step: object = None, update_every: object = 1, overrides: object = None, *,
             is_global: bool = False, default_end: str = "start") -> Common:
        if isinstance(sparsity, Mapping) and not is_global:
            target: float | Mapping[str, float] = {
                check_name(n, "sparsity"): check_real(v, f"sparsity[{short_repr(n)}]", low=0.0,
                                                      high=1.0) for n, v in sparsity.items()}
        else:
            target = check_real(sparsity, "sparsity", low=0.0, high=1.0)
        if isinstance(distribution, str) and distribution in _DISTRIBUTIONS:
            dist = _DISTRIBUTIONS[distribution]
        elif callable(distribution) and not isinstance(distribution, str):
            dist = check_callable(distribution, "distribution")
        else:
            raise ValueError(f"distribution must be 'uniform', 'erk' or a callable (shapes, "
                             f"sparsity) -> sparsities, got {short_repr(distribution)}")
        return cls(target, dist, parse_pattern(sparsity_type, "sparsity_type"),  # type: ignore[arg-type]
                   check_overrides(overrides, None),
                   Steps.make(start_step, end_step, update_every, default_end), is_global)

    def describe(self) -> dict[str, Any]:
        return {"sparsity": self.sparsity, "sparsity_type": str(self.pattern),
                "start_step": self.steps.start, "end_step": self.steps.end,
                "update_every": self.steps.every, "overrides": dict(self.overrides)}

    def targets(self, params: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Each tensor's final sparsity; checks the pattern fits every shape."""
        shapes = {n: tuple(p.shape) for n, p in params.items()}
        for name, shape in shapes.items():
            self.pattern.check(shape, f"params[{short_repr(name)}]")
        unknown = [n for n in self.overrides if n not in shapes]
        if unknown:
            raise ValueError(f"overrides names tensors not in params: {short_repr(unknown)}")
        if isinstance(self.sparsity, Mapping):
            unknown = [n for n in self.sparsity if n not in shapes]
            if unknown:
                raise ValueError(f"sparsity names tensors not in params: {short_repr(unknown)}")
            out = {n: self.sparsity.get(n, 0.0) for n in shapes}
        elif self.is_global:
            out = {n: self.sparsity for n in shapes}
        else:
            solved = self.distribution(
                {n: s for n, s in shapes.items() if n not in self.overrides}, self.sparsity)
            check_instance(solved, Mapping, "distribution(shapes, sparsity)")
            out = {n: check_real(solved[n], f"distribution(...)[{short_repr(n)}]", low=0.0,
                                 high=1.0) if n in solved else self.sparsity for n in shapes
                   if n not in self.overrides}
        out.update(self.overrides)
        return {n: out[n] for n in shapes}


def _mix(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix64 steps): distinct inputs, unrelated streams."""
    x = 0x9E3779B97F4A7C15
    for part in parts:
        x = (x ^ (part & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 27)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


def check_seed(seed: object) -> int:
    return check_int(seed, "seed", low=0)


def _key(seed: int, step: int, name: str, purpose: int) -> int:
    return _mix(seed, step, zlib.crc32(name.encode()), purpose)


def random_scores(params: Mapping[str, torch.Tensor], seed: int, step: int,
                  purpose: int) -> dict[str, torch.Tensor]:
    """Uniform [0, 1) float32 scores per tensor, a function of (seed, step, name, purpose)
    only: the counter-based stream (:mod:`~fsparse._src.engine.counter_rng`), the same on
    every device and for every sharding."""
    out = {}
    for name, p in params.items():
        key = _key(seed, step, name, purpose)
        kind = sharded_kind(p)
        if kind:  # every rank computes its own rows of the whole tensor's stream
            out[name] = implementation(kind, "seeded_uniform")(p, key)
        else:
            out[name] = counter_rng.uniform(key, 0, p.numel(), device=p.device).view(p.shape)
    return out


def lazy_random_scores(params: Mapping[str, torch.Tensor], seed: int, step: int,
                       purpose: int) -> dict[str, torch.Tensor | RandomScores]:
    """:func:`random_scores` for the engine to compute slice by slice: the same values, as
    :class:`RandomScores` for plain CPU tensors (no full-size score tensor), else tensors."""
    out: dict[str, torch.Tensor | RandomScores] = {}
    for name, p in params.items():
        if p.device.type == "cpu" and not sharded_kind(p):
            out[name] = RandomScores(p.shape, _key(seed, step, name, purpose))
        else:
            out.update(random_scores({name: p}, seed, step, purpose))
    return out


def whole(reduced: torch.Tensor) -> torch.Tensor:
    """A reduction's result made whole: a DTensor's (partial per rank) reduced across ranks."""
    return reduced.full_tensor() if sharded_kind(reduced) else reduced  # type: ignore[attr-defined]


def extreme(scores: torch.Tensor, largest: bool) -> torch.Tensor:
    """``scores.max()`` or ``scores.min()``; over all ranks for a DTensor."""
    kind = sharded_kind(scores)
    if kind:
        return implementation(kind, "global_extreme")(scores, largest)  # type: ignore[no-any-return]
    return scores.max() if largest else scores.min()


def filled(p: torch.Tensor, value: float | bool, dtype: torch.dtype) -> torch.Tensor:
    """A new tensor of ``p``'s shape and device filled with ``value`` (a DTensor placed like
    ``p`` when ``p`` is one)."""
    if sharded_kind(p):
        return torch.full_like(p, value, dtype=dtype)
    return torch.full(p.shape, value, dtype=dtype, device=p.device)
