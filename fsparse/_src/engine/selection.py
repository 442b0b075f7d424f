"""Selection: scores in, masks out (``True`` = keep). Exact, no sorting, pure.

A tensor's *units* (see :mod:`fsparse._src.engine.patterns`) are ranked by
score: elements by their own, blocks and channels by the mean over their
elements, N:M groups by their mean. The ``k`` lowest units are pruned, ties
broken by unit index (the lower index first, as a stable sort would) and, in a
global selection, by tensor order first. Inside a pruned N:M group the
``m - n`` lowest scores (ties by position) are zeroed; every other pattern
prunes its units whole. NaN scores raise ``ValueError``; ``+-inf`` are ordinary.
One threshold routine (:mod:`fsparse._src.engine.threshold`, with the one-pass
keep masks of :mod:`fsparse._src.engine.keep_masks`) serves one tensor and a
global set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from fsparse._src.checks import check_instance, check_int, check_real, check_tensor, short_repr
from fsparse._src.engine.dispatch import implementation, sharded_kind
from fsparse._src.engine.keep_masks import NaNScores, has_nan, keep_masks
from fsparse._src.engine.patterns import (
    NM,
    Block,
    Channel,
    Pattern,
    Unstructured,
    matrix_shape,
    parse_pattern,
)
from fsparse._src.engine.scoring import (
    LAZY,
    Lazy,
    pool_means,
    score_dtype,
    under_transform,
)

__all__ = ["global_select_masks", "pruned_count", "pruned_elements", "pruned_units",
           "select_count_mask", "select_count_scores", "select_mask", "select_scores",
           "unit_values"]




def pruned_count(sparsity: float, units: int) -> int:
    """``round(clamp(sparsity, 0, 1) * units)``.

    >>> pruned_count(0.5, 5), pruned_count(-0.3, 5), pruned_count(1.7, 5)
    (2, 0, 5)
    """
    return round(min(max(sparsity, 0.0), 1.0) * units)


def pruned_units(pattern: Pattern, sparsity: float, units: int) -> int:
    """How many of ``units`` a ``sparsity`` prunes: :func:`pruned_count`, except that N:M
    prunes every group (``n`` kept in each) whenever ``sparsity > 0``.

    >>> pruned_units(parse_pattern("2:4"), 0.1, 6), pruned_units(Unstructured(), 0.5, 6)
    (6, 3)
    """
    if isinstance(pattern, NM):
        return units if sparsity > 0 else 0
    return pruned_count(sparsity, units)


def _channels_last(scores: torch.Tensor) -> torch.Tensor:
    return scores.permute(0, *range(2, scores.dim()), 1) if scores.dim() >= 3 else scores


def _groups(scores: torch.Tensor, m: int) -> torch.Tensor:
    """``(G, m)``: the N:M groups, in channels-last order for conv weights."""
    return _channels_last(scores).reshape(-1, m)


def _unit_values(scores: torch.Tensor, pattern: Pattern) -> torch.Tensor:
    """1-D score of every unit, in unit order."""
    if scores.numel() == 0:
        return scores.new_empty(0)
    if isinstance(pattern, Block):
        matrix = scores.reshape(matrix_shape(tuple(scores.shape)))
        block = (pattern.height, pattern.width)
        return pool_means(matrix.to(score_dtype(scores.dtype)), block).reshape(-1)
    if isinstance(pattern, Channel):
        rows = scores.shape[0] if scores.dim() else 1
        return scores.reshape(rows, -1).to(score_dtype(scores.dtype)).mean(1)
    if isinstance(pattern, NM):
        return _groups(scores, pattern.m).to(score_dtype(scores.dtype)).mean(1)
    return scores.reshape(-1)


def _in_group_lowest(groups: torch.Tensor, count: int) -> torch.Tensor:
    """Bool ``(G, m)``: the ``count`` lowest of each group (ties by position), by pairwise ranks."""
    m = groups.shape[1]
    rank = torch.zeros(groups.shape, dtype=torch.int16 if m < 1 << 15 else torch.int32,
                       device=groups.device)
    for j in range(m):
        column = groups[:, j, None]
        rank += column < groups
        rank[:, j + 1 :] += column == groups[:, j + 1 :]
    return rank < count


def _pruned(scores: torch.Tensor, pattern: Pattern, units: torch.Tensor) -> torch.Tensor:
    """Bool of ``scores.shape``: ``True`` where a pruned unit prunes."""
    shape = tuple(scores.shape)
    if scores.numel() == 0:
        return torch.zeros(shape, dtype=torch.bool, device=scores.device)
    if isinstance(pattern, Block):
        rows, cols = matrix_shape(shape)
        bh, bw = min(pattern.height, rows), min(pattern.width, cols)
        nbh, nbw = -(-rows // bh), -(-cols // bw)
        grid = units.view(nbh, 1, nbw, 1).expand(nbh, bh, nbw, bw).reshape(nbh * bh, nbw * bw)
        return grid[:rows, :cols].reshape(shape)
    if isinstance(pattern, Channel):
        return units.view(-1, *([1] * (scores.dim() - 1))).expand(shape) if shape else units[0]
    if isinstance(pattern, NM):
        groups = _groups(scores, pattern.m)
        pruned = _in_group_lowest(groups, pattern.m - pattern.n) & units[:, None]
        view = _channels_last(scores)
        pruned = pruned.view(view.shape)
        if scores.dim() >= 3:
            order = (0, *range(2, scores.dim()), 1)
            pruned = pruned.permute(tuple(order.index(i) for i in range(scores.dim())))
        return pruned
    return units.view(shape)


def _nan_error(name: str) -> ValueError:
    return ValueError(f"{name} contains NaN (or its unit means are NaN), which cannot be "
                      "ranked; clean it first")


def _checked(scores: object, pattern: Pattern | str, arg: str) -> tuple[torch.Tensor, Pattern]:
    scores = check_tensor(scores, arg)
    pattern = parse_pattern(pattern)
    pattern.check(tuple(scores.shape), arg)
    return scores, pattern


def _select(
    tensors: Sequence[torch.Tensor | Lazy], pattern: Pattern, k: int, names: list[str]
) -> list[torch.Tensor]:
    """Keep masks of ``tensors`` with their ``k`` lowest units (all together) pruned.

    :class:`AbsScores` are read slice by slice (unstructured, untraced, one dtype);
    otherwise they are materialized first.
    """
    transformed = any(t.traced() if isinstance(t, LAZY) else under_transform(t)
                      for t in tensors)
    lazy = (isinstance(pattern, Unstructured) and not transformed
            and len({t.dtype for t in tensors}) == 1)
    if not lazy:
        tensors = [t.materialize().view(t.shape) if isinstance(t, LAZY) else t
                   for t in tensors]
    values: list[torch.Tensor | Lazy] = [
        t if isinstance(t, LAZY) else _unit_values(t.detach(), pattern) for t in tensors]
    total = sum(v.numel() for v in values)
    # unstructured keep masks find NaN in their own pass (it lands among the candidates)
    if not transformed and not (isinstance(pattern, Unstructured) and 0 < k < total):
        for name, v in zip(names, values):
            if has_nan(v):
                raise _nan_error(name)
    if isinstance(pattern, Unstructured) and not transformed and (k <= 0 or k >= total):
        return [torch.full(t.shape, k <= 0, dtype=torch.bool, device=t.device) for t in tensors]
    if isinstance(pattern, NM) and k == total:
        units = [torch.ones(v.shape, dtype=torch.bool, device=v.device) for v in values]
    elif k <= 0:
        units = [torch.zeros(v.shape, dtype=torch.bool, device=v.device) for v in values]
    elif k >= total:
        units = [torch.ones(v.shape, dtype=torch.bool, device=v.device) for v in values]
    else:
        common = values[0].dtype
        for v in values[1:]:
            common = torch.promote_types(common, v.dtype)
        pieces = [v if v.dtype == common else v.to(common) for v in values]  # type: ignore[union-attr]
        if transformed:
            units = _transform_lowest(pieces, k)  # type: ignore[arg-type]
        elif isinstance(pattern, Unstructured):  # the engine's keep masks, fresh: used as is
            try:
                masks = keep_masks(pieces, k)
            except NaNScores as err:
                raise _nan_error(names[err.index]) from None
            return [m.view(t.shape) for t, m in zip(tensors, masks)]
        else:
            units = [m.logical_not_() for m in keep_masks(pieces, k)]
    return [~_pruned(t, pattern, u) for t, u in zip(tensors, units)]  # type: ignore[arg-type]


def _transform_lowest(pieces: list[torch.Tensor], k: int) -> list[torch.Tensor]:
    """The ``k`` lowest with tensor ops only (safe under ``vmap`` and ``compile``)."""
    values = torch.cat(pieces)
    threshold = values.kthvalue(k).values
    below = values < threshold
    at = values == threshold
    chosen = below | (at & (at.cumsum(0) <= k - below.sum()))
    return list(chosen.split([p.numel() for p in pieces]))


def select_count_mask(
    scores: torch.Tensor, k: int, pattern: Pattern | str = "unstructured"
) -> torch.Tensor:
    """Bool mask of ``scores.shape`` with exactly the ``k`` lowest units pruned.

    ``0 <= k <= pattern.units(scores.shape)`` (``ValueError`` otherwise). For
    N:M, the ``k`` lowest-mean groups each lose their ``m - n`` lowest scores.

    >>> select_count_mask(torch.tensor([3.0, 1.0, 1.0, 2.0]), 2).tolist()
    [True, False, False, True]
    """
    if kind := sharded_kind(scores):  # DTensor scores: the sharded implementation
        return implementation(kind, "select_count_mask")(scores, k, pattern)  # type: ignore[no-any-return]
    scores, pattern = _checked(scores, pattern, "scores")
    units = pattern.units(tuple(scores.shape))
    check_int(k, "k", low=0, high=units)
    return _select([scores], pattern, k, ["scores"])[0]


def select_mask(
    scores: torch.Tensor, sparsity: float, pattern: Pattern | str = "unstructured"
) -> torch.Tensor:
    """Bool mask of ``scores.shape`` pruning ``round(clamp(sparsity, 0, 1) * units)`` units.

    N:M prunes every group (``n`` kept in each) whenever ``sparsity > 0``.

    >>> select_mask(torch.tensor([[4.0, 1.0, 3.0, 2.0]]), 0.5, "2:4").tolist()
    [[True, False, True, False]]
    """
    if kind := sharded_kind(scores):  # DTensor scores: the sharded implementation
        return implementation(kind, "select_mask")(scores, sparsity, pattern)  # type: ignore[no-any-return]
    scores, pattern = _checked(scores, pattern, "scores")
    sparsity = check_real(sparsity, "sparsity", finite=False)
    units = pattern.units(tuple(scores.shape))
    k = pruned_units(pattern, sparsity, units)
    return _select([scores], pattern, k, ["scores"])[0]


def global_select_masks(
    scores: Mapping[str, torch.Tensor], sparsity: float, pattern: Pattern | str = "unstructured"
) -> dict[str, torch.Tensor]:
    """One threshold over all tensors' units; ties by (tensor order, index).

    >>> masks = global_select_masks({"a": torch.tensor([1.0, 4.0]), "b": torch.tensor([2.0, 3.0])},
    ...                             0.5)
    >>> {name: m.tolist() for name, m in masks.items()}
    {'a': [False, True], 'b': [False, True]}
    """
    check_instance(scores, Mapping, "scores")
    if kind := sharded_kind(*scores.values()):  # DTensor scores: the sharded implementation
        return implementation(kind, "global_select_masks")(scores, sparsity, pattern)  # type: ignore[no-any-return]
    sparsity = check_real(sparsity, "sparsity", finite=False)
    pattern = parse_pattern(pattern)
    names = list(scores)
    tensors = [_checked(scores[n], pattern, f"scores[{short_repr(n)}]")[0] for n in names]
    if not tensors:
        return {}
    units = sum(pattern.units(tuple(t.shape)) for t in tensors)
    k = pruned_units(pattern, sparsity, units)
    labels = [f"scores[{short_repr(n)}]" for n in names]
    return dict(zip(names, _select(tensors, pattern, k, labels)))


def unit_values(scores: torch.Tensor, pattern: Pattern) -> torch.Tensor:
    """1-D score of every unit of ``scores``, in unit order (the selection's ranking keys).

    >>> unit_values(torch.tensor([[1.0, 3.0], [2.0, 2.0]]), parse_pattern("channel")).tolist()
    [2.0, 2.0]
    """
    return _unit_values(scores, pattern)


def pruned_elements(scores: torch.Tensor, pattern: Pattern, units: torch.Tensor) -> torch.Tensor:
    """Bool of ``scores.shape``: ``True`` where the pruned ``units`` (bool, unit order) prune.

    Inside a pruned N:M group, its ``m - n`` lowest scores (ties by position).
    """
    return _pruned(scores, pattern, units)


def select_scores(
    scores: Mapping[str, torch.Tensor | Lazy], sparsity: float,
    pattern: Pattern | str = "unstructured", *, shared: bool = False,
) -> dict[str, torch.Tensor]:
    """:func:`select_mask` of each score (``shared=False``) or :func:`global_select_masks`
    (``shared=True``), where scores may also be :class:`AbsScores` or :class:`RandomScores`.

    For the pruners: computed scores of plain tensors are read slice by slice
    (the same masks, without a full-size score tensor); everything else goes
    through the public functions.
    """
    pattern = parse_pattern(pattern)
    names = list(scores)
    groups = [names] if shared else [[n] for n in names]
    out: dict[str, torch.Tensor] = {}
    for group in groups:
        items = [scores[n] for n in group]
        if all(isinstance(v, LAZY) and v.plain for v in items):
            labels = [f"scores[{short_repr(n)}]" for n in group]
            for v, label in zip(items, labels):
                pattern.check(tuple(v.shape), label)
            units = sum(pattern.units(tuple(v.shape)) for v in items)
            k = pruned_units(pattern, sparsity, units)
            out.update(zip(group, _select(items, pattern, k, labels)))
            continue
        tensors = {n: v.materialize().view(v.shape) if isinstance(v, LAZY) else v
                   for n, v in zip(group, items)}
        if shared:
            out.update(global_select_masks(tensors, sparsity, pattern))
        else:
            out.update({n: select_mask(t, sparsity, pattern) for n, t in tensors.items()})
    return {n: out[n] for n in names}


def select_count_scores(scores: torch.Tensor | Lazy, k: int,
                        pattern: Pattern | str = "unstructured") -> torch.Tensor:
    """:func:`select_count_mask` where ``scores`` may also be :class:`AbsScores` or
    :class:`RandomScores`: computed scores of plain tensors are read in batches (the same
    mask, without a full-size score tensor); others are materialized first.

    >>> from fsparse._src.engine.scoring import AbsScores
    >>> select_count_scores(AbsScores(torch.tensor([3.0, -1.0, 2.0])), 1).tolist()
    [True, False, True]
    """
    if not (isinstance(scores, LAZY) and scores.plain):
        tensor = scores.materialize().view(scores.shape) if isinstance(scores, LAZY) else scores
        return select_count_mask(tensor, k, pattern)
    pattern = parse_pattern(pattern)
    pattern.check(tuple(scores.shape), "scores")
    check_int(k, "k", low=0, high=pattern.units(tuple(scores.shape)))
    return _select([scores], pattern, k, ["scores"])[0]
