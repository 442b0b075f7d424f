"""Magnitude, random and saliency pruning, per tensor or global (jaxpruner's ``pruners``).

Scores: ``|w|`` (magnitude), seeded uniform noise (random), ``|w * g|``
(saliency). Each ramps from dense to its target on the cubic schedule between
``start_step`` and ``end_step`` (one-shot when they are equal, the default);
already-pruned weights stay pruned. The global forms use one threshold over all
tensors (overridden tensors keep their own sparsity). :func:`snip` is one-shot
global saliency (Lee et al. 2019). Scores are computed in float32 for 16-bit data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from fsparse._src.engine.dispatch import sharded_kind
from fsparse._src.engine.scoring import AbsScores, RandomScores, score_dtype
from fsparse.pruners._common import Common, check_seed, lazy_random_scores
from fsparse.pruners._protocol import Pruner
from fsparse.pruners._ranked import ranked

__all__ = ["global_magnitude", "global_saliency", "magnitude", "random", "saliency", "snip",
           "abs_scores", "lazy_abs_scores", "saliency_scores"]

Sparsity = float | Mapping[str, float]
_RANDOM = 1  # purpose tag of random pruning's scores


def abs_scores(params: dict[str, torch.Tensor], grads: object = None, t: int = 0
               ) -> dict[str, torch.Tensor]:
    """``|w|`` (float32 for 16-bit data): new tensors, never the inputs."""
    return {n: p.to(score_dtype(p.dtype)).abs() for n, p in params.items()}


def lazy_abs_scores(params: dict[str, torch.Tensor], grads: object = None, t: int = 0
                    ) -> dict[str, torch.Tensor | AbsScores]:
    """``|w|`` for the engine to read slice by slice (no full-size score tensor).

    DTensor params get plain ``|w|`` DTensors (the engine's sharded path ranks them).
    """
    return {n: p.to(score_dtype(p.dtype)).abs() if sharded_kind(p) else AbsScores(p)
            for n, p in params.items()}


def saliency_scores(params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor] | None,
                    t: int = 0) -> dict[str, torch.Tensor | AbsScores]:
    """``|w * g|`` (float32 for 16-bit data) for the engine to read slice by slice.

    DTensor params or grads get plain ``|w * g|`` DTensors, as in :func:`lazy_abs_scores`.
    """
    assert grads is not None
    return {n: (p.to(score_dtype(p.dtype)) * grads[n].to(score_dtype(p.dtype))).abs_()
            if sharded_kind(p, grads[n]) else AbsScores(p, factor=grads[n])
            for n, p in params.items()}


def magnitude(sparsity: Sparsity, *, distribution: Any = "uniform",
              sparsity_type: Any = "unstructured", start_step: int = 0,
              end_step: int | None = None, update_every: int = 1,
              overrides: Mapping[str, float] | None = None) -> Pruner:
    """Prune the lowest ``|w|`` of each tensor (Zhu & Gupta 2017 when gradual).

    >>> pruner = magnitude(0.5)
    >>> state = pruner.init({"w": torch.tensor([3.0, -1.0, 2.0, 0.5])})
    >>> state, params = pruner.update(state, {"w": torch.tensor([3.0, -1.0, 2.0, 0.5])})
    >>> state.masks["w"].tolist(), state.step
    ([True, False, True, False], 1)
    """
    common = Common.make(sparsity, distribution, sparsity_type, start_step, end_step,
                         update_every, overrides)
    return ranked("magnitude", common, lazy_abs_scores, {})


def global_magnitude(sparsity: float, *, sparsity_type: Any = "unstructured",
                     start_step: int = 0, end_step: int | None = None, update_every: int = 1,
                     overrides: Mapping[str, float] | None = None) -> Pruner:
    """Prune the lowest ``|w|`` over all tensors together (one threshold).

    >>> params = {"a": torch.tensor([1.0, 4.0]), "b": torch.tensor([2.0, 3.0])}
    >>> pruner = global_magnitude(0.5)
    >>> state, _ = pruner.update(pruner.init(params), params)
    >>> {n: m.tolist() for n, m in state.masks.items()}
    {'a': [False, True], 'b': [False, True]}
    """
    common = Common.make(sparsity, "uniform", sparsity_type, start_step, end_step, update_every,
                         overrides, is_global=True)
    return ranked("global_magnitude", common, lazy_abs_scores, {})


def random(sparsity: Sparsity, *, seed: int = 0, distribution: Any = "uniform",
           sparsity_type: Any = "unstructured", start_step: int = 0,
           end_step: int | None = None, update_every: int = 1,
           overrides: Mapping[str, float] | None = None) -> Pruner:
    """Prune by seeded uniform random scores (a function of seed, step and name only).

    >>> pruner = random(0.75, seed=1)
    >>> state, _ = pruner.update(pruner.init({"w": torch.ones(8)}), {"w": torch.ones(8)})
    >>> int(state.masks["w"].sum())
    2
    """
    base = check_seed(seed)
    common = Common.make(sparsity, distribution, sparsity_type, start_step, end_step,
                         update_every, overrides)

    def scores(params: dict[str, torch.Tensor], grads: object, t: int
               ) -> dict[str, torch.Tensor | RandomScores]:
        return lazy_random_scores(params, base, t, _RANDOM)

    return ranked("random", common, scores, {"seed": base})


def saliency(sparsity: Sparsity, *, distribution: Any = "uniform",
             sparsity_type: Any = "unstructured", start_step: int = 0,
             end_step: int | None = None, update_every: int = 1,
             overrides: Mapping[str, float] | None = None) -> Pruner:
    """Prune the lowest ``|w * g|`` of each tensor; ``update`` needs ``grads``.

    >>> w, g = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([4.0, 1.0, 1.0, 0.1])
    >>> pruner = saliency(0.5)
    >>> state, _ = pruner.update(pruner.init({"w": w}), {"w": w}, grads={"w": g})
    >>> state.masks["w"].tolist()
    [True, False, True, False]
    """
    common = Common.make(sparsity, distribution, sparsity_type, start_step, end_step,
                         update_every, overrides)
    return ranked("saliency", common, saliency_scores, {}, needs_grads=True)


def global_saliency(sparsity: float, *, sparsity_type: Any = "unstructured",
                    start_step: int = 0, end_step: int | None = None, update_every: int = 1,
                    overrides: Mapping[str, float] | None = None) -> Pruner:
    """Prune the lowest ``|w * g|`` over all tensors together; ``update`` needs ``grads``.

    >>> w = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([3.0, 4.0])}
    >>> g = {"a": torch.tensor([5.0, 1.0]), "b": torch.tensor([1.0, 0.1])}
    >>> pruner = global_saliency(0.5)
    >>> state, _ = pruner.update(pruner.init(w), w, grads=g)
    >>> {n: m.tolist() for n, m in state.masks.items()}
    {'a': [True, False], 'b': [True, False]}
    """
    common = Common.make(sparsity, "uniform", sparsity_type, start_step, end_step, update_every,
                         overrides, is_global=True)
    return ranked("global_saliency", common, saliency_scores, {}, needs_grads=True)


def snip(sparsity: float, *, sparsity_type: Any = "unstructured", start_step: int = 0,
         overrides: Mapping[str, float] | None = None) -> Pruner:
    """SNIP (Lee et al. 2019): one-shot global ``|w * g|`` from one batch, at ``start_step``.

    >>> w = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([3.0, 4.0])}
    >>> g = {"a": torch.tensor([1.0, 1.0]), "b": torch.tensor([0.1, 1.0])}
    >>> pruner = snip(0.5)
    >>> state, _ = pruner.update(pruner.init(w), w, grads=g)
    >>> {n: m.tolist() for n, m in state.masks.items()}
    {'a': [False, True], 'b': [False, True]}
    """
    common = Common.make(sparsity, "uniform", sparsity_type, start_step, start_step, 1,
                         overrides, is_global=True)
    return ranked("snip", common, saliency_scores, {}, needs_grads=True)
