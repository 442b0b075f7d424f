"""Mask types beyond the plain norm block mask, built on it.

* :func:`channels_last_mask` is the norm block mask with conv weights viewed
  channels-last, ``(O, I, *k) -> (O, *k, I)``, so that ``(1, M)`` blocks run
  along input channels (the layout of VNNI block-4 and TensorRT N:M kernels).
  With ``sparse_block_shape=(1, M)``, ``zeros_per_block=M - N`` and
  ``sparsity_level=1`` it is the N:M mask (``2:4``: two of every four kept).
* :func:`existing_zeros_mask` keeps exactly the nonzero elements.
* :func:`global_levels` picks one magnitude threshold across many tensors and
  turns it into per-tensor ``sparsity_level`` values, so that the per-tensor
  norm mask reproduces global magnitude pruning.

Every function is ``(data, config) -> bool mask`` or a pure helper; all
ranking goes through :mod:`fsparse._src.engine.norm_mask`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fsparse._src.checks import (
    check_instance,
    check_no_nan,
    check_real,
    check_tensor,
    short_repr,
)
from fsparse._src.config import SparsityConfig
from fsparse._src.engine.dispatch import implementation, sharded_kind
from fsparse._src.engine.norm_mask import config_norm_mask
from fsparse._src.engine.scoring import as_matrix, pool_means, scores_of
from fsparse._src.engine.selection import pruned_count
from fsparse._src.engine.threshold import kth_threshold

__all__ = ["block_scores", "channels_last_mask", "existing_zeros_mask", "global_levels"]


def _channels_last(data: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``data`` with dim 1 moved last (for 3-D and higher), and the inverse permutation."""
    if data.dim() < 3:
        return data, tuple(range(data.dim()))
    order = (0, *range(2, data.dim()), 1)
    inverse = tuple(order.index(i) for i in range(data.dim()))
    return data.permute(order), inverse


def channels_last_mask(data: torch.Tensor, config: SparsityConfig) -> torch.Tensor:
    """The norm block mask of ``config`` with blocks running along input channels.

    For 1-D and 2-D data this is :func:`fsparse.config_norm_mask`.

    >>> from fsparse import make_config
    >>> w = torch.tensor([[1.0, -4.0, 3.0, 2.0, 8.0, 5.0, -6.0, 7.0]])
    >>> two_four = make_config(sparsity_level=1.0, sparse_block_shape=(1, 4), zeros_per_block=2)
    >>> channels_last_mask(w, two_four).int()
    tensor([[0, 1, 1, 0, 1, 0, 0, 1]], dtype=torch.int32)
    """
    check_tensor(data, "data")
    check_instance(config, SparsityConfig, "config")
    view, inverse = _channels_last(data)
    return config_norm_mask(view, config).permute(inverse)


def existing_zeros_mask(data: torch.Tensor, config: SparsityConfig | None) -> torch.Tensor:
    """Keep every nonzero element; ``config`` is ignored. NaN data raises ``ValueError``.

    >>> existing_zeros_mask(torch.tensor([0.0, 2.0, -0.0]), None).tolist()
    [False, True, False]
    """
    check_tensor(data, "data")
    if config is not None:
        check_instance(config, SparsityConfig, "config")
    return check_no_nan(data, "data") != 0


def block_scores(data: torch.Tensor, config: SparsityConfig) -> torch.Tensor:
    """Flat block means that :func:`channels_last_mask` ranks for ``data``.

    >>> from fsparse import make_config
    >>> block_scores(torch.tensor([[1.0, -3.0, 2.0, 2.0]]), make_config(sparse_block_shape=(1, 2)))
    tensor([2., 2.])
    """
    check_tensor(data, "data")
    check_instance(config, SparsityConfig, "config")
    return _block_scores(data, config)


def _block_scores(data: torch.Tensor, config: SparsityConfig) -> torch.Tensor:
    view, _ = _channels_last(data.detach())
    scores = scores_of(as_matrix(view), config.norm)
    return pool_means(scores, config.sparse_block_shape).reshape(-1)


def global_levels(
    data: Mapping[str, torch.Tensor],
    configs: Mapping[str, SparsityConfig],
    level: float,
) -> dict[str, float]:
    """Per-tensor sparsity levels that prune the globally lowest ``level`` of blocks.

    Blocks of all tensors are ranked together by mean score (see
    :func:`block_scores`); ``round(level * total_blocks)`` of them are chosen with
    the engine's exact threshold (:func:`~fsparse._src.engine.threshold.kth_threshold`;
    ties go to earlier tensors, then lower indices). Tensor ``i``
    gets ``k_i / n_i``, so the norm mask with that level selects exactly its
    ``k_i`` lowest blocks. Memory: all block means (not concatenated).
    Data that is NaN/Inf (or overflows its block means) raises ``ValueError`` at
    every ``level``.

    >>> from fsparse import make_config
    >>> cfg = make_config(sparse_block_shape=(1, 1))
    >>> levels = global_levels({"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.5, 9.0])},
    ...                        {"a": cfg, "b": cfg}, 0.5)
    >>> levels
    {'a': 0.5, 'b': 0.5}
    """
    check_instance(data, Mapping, "data")
    check_instance(configs, Mapping, "configs")
    level = check_real(level, "level", finite=False)
    if not data:
        return {}
    if data.keys() != configs.keys():
        raise ValueError(
            f"data and configs must have the same names, got {short_repr(list(data))} and "
            f"{short_repr(list(configs))}"
        )
    if kind := sharded_kind(*data.values()):  # DTensor data: the sharded implementation
        return implementation(kind, "global_levels")(data, configs, level)  # type: ignore[no-any-return]
    for name, tensor in data.items():
        check_tensor(tensor, f"data[{short_repr(name)}]")
        check_instance(configs[name], SparsityConfig, f"configs[{short_repr(name)}]")
    scores = [_block_scores(tensor, configs[name]) for name, tensor in data.items()]
    for name, part in zip(data, scores):
        if not bool(torch.isfinite(part).all()):
            raise ValueError(
                f"data[{short_repr(name)}] contains NaN or Inf (or its block means overflow); "
                "cannot rank it for global pruning"
            )
    sizes = [s.numel() for s in scores]
    total = sum(sizes)
    k = pruned_count(level, total)
    if k == 0 or total == 0:
        return dict.fromkeys(data, 0.0)
    if k >= total:
        return dict.fromkeys(data, 1.0)
    common = scores[0].dtype
    for part in scores[1:]:
        common = torch.promote_types(common, part.dtype)
    pieces = [part.to(common) for part in scores]
    del scores
    threshold, ties_left = kth_threshold(pieces, k)
    levels = {}
    for name, part, size in zip(data, pieces, sizes, strict=True):
        count = int((part < threshold).sum())
        take = min(int((part == threshold).sum()), ties_left) if ties_left > 0 else 0
        ties_left -= take
        levels[name] = (count + take) / size if size else 0.0
    return levels
