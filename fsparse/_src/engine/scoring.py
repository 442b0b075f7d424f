"""Scoring: norm scores of data, and block reduction of any score matrix.

* The data is viewed as a matrix (:func:`as_matrix`): size-1 dims are dropped
  (as torch.ao's ``squeeze`` does), 0-D and 1-D data become one row ``(1, n)``,
  N-D data becomes ``(shape[0], prod(shape[1:]))``.
* Norm scores are ``|x|`` (``"L1"``) or ``x * x`` (``"L2"``), in float32 for
  16-bit data and in the data's dtype otherwise (:func:`score_dtype`).
* Block means (:func:`block_means`) are ``avg_pool2d(..., ceil_mode=True)``
  over blocks tiled from index 0: the mean over each block's valid elements.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from fsparse._src.checks import check_tensor, short_repr, under_transform
from fsparse._src.config import NORMS, SparsityConfig, _validate_block_shape
from fsparse._src.engine import counter_rng
from fsparse._src.engine.movement_scores import MovementScores

__all__ = [
    "COMPUTED",
    "AbsScores",
    "Computed",
    "RandomScores",
    "as_matrix",
    "block_means",
    "check_finite",
    "fit_block",
    "fit_config",
    "non_finite_error",
    "norm_scores",
    "pool_means",
    "score_dtype",
    "scores_of",
    "under_transform",
]


def as_matrix(data: torch.Tensor) -> torch.Tensor:
    """View ``data`` as the 2-D matrix that the block rule tiles (see module doc)."""
    squeezed = data.squeeze()
    if squeezed.dim() <= 1:
        return squeezed.reshape(1, -1)
    if squeezed.dim() > 2:
        return squeezed.reshape(squeezed.shape[0], math.prod(squeezed.shape[1:]))
    return squeezed


def score_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype scores are computed in: float32 for 16-bit data, else the data's."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def scores_of(matrix: torch.Tensor, norm: str) -> torch.Tensor:
    """``|x|`` or ``x * x`` of ``matrix`` in the score dtype (no argument checks on it)."""
    if matrix.dtype in (torch.float16, torch.bfloat16):
        matrix = matrix.float()
    if not isinstance(norm, str):
        raise ValueError(f"norm must be one of {NORMS}, got {short_repr(norm)}")
    if norm == "L1":
        return matrix.abs()
    if norm == "L2":
        return matrix * matrix
    raise ValueError(f"norm must be one of {NORMS}, got {short_repr(norm)}")


def norm_scores(data: torch.Tensor, norm: str) -> torch.Tensor:
    """Element scores as a matrix: ``|x|`` for ``"L1"``, ``x * x`` for ``"L2"``.

    >>> norm_scores(torch.tensor([-2.0, 1.0]), "L2")
    tensor([[4., 1.]])
    """
    check_tensor(data, "data")
    return scores_of(as_matrix(data), norm)


def fit_block(block: tuple[int, int], height: int, width: int) -> tuple[int, int]:
    """``block`` cut down to an ``(height, width)`` matrix: the same tiling from index 0.

    >>> fit_block((10**5, 10**5), 8, 16), fit_block((1, 4), 8, 16)
    ((8, 16), (1, 4))
    """
    return (min(block[0], max(height, 1)), min(block[1], max(width, 1)))


def pool_means(scores: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """:func:`block_means` without argument checks."""
    lead, (height, width) = scores.shape[:-2], scores.shape[-2:]
    block = fit_block(block, height, width)
    if scores.numel() == 0:  # avg_pool2d and reshape(-1, ...) refuse empty input
        return scores.new_empty((*lead, -(-height // block[0]), -(-width // block[1])))
    pooled = F.avg_pool2d(
        scores.reshape(-1, height, width), kernel_size=block, stride=block, ceil_mode=True
    )
    return pooled.reshape(*lead, *pooled.shape[-2:])


def block_means(scores: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
    """Mean score of each block over its valid elements, shape ``(n_block_rows, n_block_cols)``.

    Leading dims of ``scores`` are batch dims: ``(..., H, W)`` gives ``(..., nbh, nbw)``.

    >>> block_means(torch.arange(6.0).reshape(1, 6), (1, 4))
    tensor([[1.5000, 4.5000]])
    """
    check_tensor(scores, "scores")
    if scores.dim() < 2:
        raise ValueError(f"scores must have at least 2 dims (..., H, W), got {short_repr(scores)}")
    return pool_means(scores, _validate_block_shape(block))


class AbsScores:
    """The scores ``|source|`` or ``|source * factor|`` (``-1`` where ``keep`` is ``False``),
    in the score dtype, computed slice by slice by the selection, never whole.

    A full-size score tensor is a fresh allocation: on CPU its first touch (page
    faults) costs several read passes. The selection engine reads these scores
    through :meth:`part` and :meth:`take`; :meth:`materialize` gives the tensor.

    >>> AbsScores(torch.tensor([-2.0, 1.0]), torch.tensor([True, False])).materialize()
    tensor([ 2., -1.])
    >>> AbsScores(torch.tensor([-2.0, 1.0]), factor=torch.tensor([3.0, -4.0])).materialize()
    tensor([6., 4.])
    """

    __slots__ = ("dtype", "factor", "flat", "keep", "shape")

    def __init__(self, source: torch.Tensor, keep: torch.Tensor | None = None,
                 factor: torch.Tensor | None = None) -> None:
        self.flat = source.detach().reshape(-1)
        self.keep = None if keep is None else keep.reshape(-1)
        self.factor = None if factor is None else factor.detach().reshape(-1)
        self.shape = source.shape
        self.dtype = score_dtype(source.dtype)

    @property
    def device(self) -> torch.device:
        return self.flat.device

    @property
    def plain(self) -> bool:
        """Whether every tensor is a plain ``torch.Tensor`` (no subclass such as DTensor)."""
        return type(self.flat) is torch.Tensor and (
            self.factor is None or type(self.factor) is torch.Tensor)

    def traced(self) -> bool:
        """Whether a source is traced by ``torch.func`` or ``torch.compile``."""
        return under_transform(self.flat) or (
            self.factor is not None and under_transform(self.factor))

    def keyed(self, keep: torch.Tensor) -> AbsScores:
        """The same scores with ``-1`` where ``keep`` is ``False``."""
        factor = None if self.factor is None else self.factor.view(self.shape)
        return AbsScores(self.flat.view(self.shape), keep, factor)

    def numel(self) -> int:
        return self.flat.numel()

    def _keyed(self, scores: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        if keep is None:
            return scores
        return torch.where(keep, scores, torch.tensor(-1.0, dtype=self.dtype), out=scores)

    def _scores(self, values: torch.Tensor, factor: torch.Tensor | None) -> torch.Tensor:
        """Fresh scores of gathered ``values`` (and ``factor`` values)."""
        values = values.to(self.dtype)
        if factor is not None:
            return torch.mul(values, factor.to(self.dtype)).abs_()
        return values.abs() if values is self.flat else values.abs_()

    def part(self, start: int, stop: int, out: torch.Tensor) -> torch.Tensor:
        """The scores of the flat elements ``start:stop`` (not keyed: as if all were kept),
        written into ``out`` (returned); the selection applies ``keep`` itself."""
        out, piece = out[: stop - start], self.flat[start:stop]
        if self.factor is not None:
            other = self.factor[start:stop]
            if piece.dtype == other.dtype == out.dtype:
                return torch.mul(piece, other, out=out).abs_()
            return out.copy_(piece).mul_(other.to(out.dtype)).abs_()
        return torch.abs(piece, out=out) if piece.dtype == out.dtype else out.copy_(piece).abs_()

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """Scores of the flat elements at ``index`` (a new tensor; not keyed, like
        :meth:`part`: the selection applies ``keep`` itself)."""
        factor = None if self.factor is None else self.factor.index_select(0, index)
        return self._scores(self.flat.index_select(0, index), factor)

    def materialize(self) -> torch.Tensor:
        """The flat score tensor (fresh)."""
        return self._keyed(self._scores(self.flat, self.factor), self.keep)

    def has_nan(self) -> bool:
        """Whether a score is NaN (NaN where pruned is ignored): one read pass of the source
        (and of the factor: finite factors give no NaN product)."""
        if self.flat.numel() == 0:
            return False
        if self.factor is None:
            if not bool(self.flat.amax().isnan()):
                return False
        elif all(_finite(t) for t in (self.flat, self.factor)):
            return False
        return bool(self.materialize().isnan().any())


class RandomScores:
    """Seeded uniform ``[0, 1)`` float32 scores on the CPU (``-1`` where ``keep`` is
    ``False``): value ``i`` of the counter-based stream ``seed``
    (:mod:`~fsparse._src.engine.counter_rng`), computed slice by slice by the selection
    (inside the native pass, never stored), never materialized whole.

    >>> torch.equal(RandomScores((3, 4), 7).materialize(), counter_rng.uniform(7, 0, 12))
    True
    """

    __slots__ = ("dtype", "keep", "seed", "shape")

    plain = True

    def __init__(self, shape: tuple[int, ...] | torch.Size, seed: int,
                 keep: torch.Tensor | None = None) -> None:
        self.shape = torch.Size(shape)
        self.seed = seed
        self.keep = None if keep is None else keep.reshape(-1)
        self.dtype = torch.float32

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def traced(self) -> bool:
        return False

    def numel(self) -> int:
        return self.shape.numel()

    def keyed(self, keep: torch.Tensor) -> RandomScores:
        """The same scores with ``-1`` where ``keep`` is ``False``."""
        return RandomScores(self.shape, self.seed, keep)

    def part(self, start: int, stop: int, out: torch.Tensor) -> torch.Tensor:
        """The scores ``start:stop`` (not keyed), computed into ``out`` (returned)."""
        return counter_rng.uniform(self.seed, start, stop - start, out=out[: stop - start])

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """Scores at the flat ``index``, not keyed (a fresh tensor)."""
        return counter_rng.values_at(self.seed, index)

    def materialize(self) -> torch.Tensor:
        """The flat score tensor (fresh)."""
        scores = counter_rng.uniform(self.seed, 0, self.numel())
        if self.keep is None:
            return scores
        return scores.masked_fill_(~self.keep, -1.0)

    def has_nan(self) -> bool:
        return False


Computed = AbsScores | RandomScores  # scores the engine computes in batches, never whole
COMPUTED = (AbsScores, RandomScores)  # the same, for isinstance; keyable (``keyed``)
# what the selection reads lazily: those, and movement's next scores (written by its pass)
Lazy = AbsScores | RandomScores | MovementScores
LAZY = (AbsScores, RandomScores, MovementScores)


def _finite(t: torch.Tensor) -> bool:
    """All of ``t`` finite, by one ``aminmax`` pass (NaN makes both comparisons false)."""
    low, high = torch.aminmax(t)
    return bool(low > -math.inf) and bool(high < math.inf)


def fit_config(config: SparsityConfig, height: int, width: int) -> SparsityConfig:
    """``config`` with its block fitted to an ``(height, width)`` matrix: the same mask.

    A block row or column past the matrix holds no element, so the cut block has
    the same valid elements and means; ``min(zeros_per_block, valid)`` is kept by
    cutting ``zeros_per_block`` to the cut block's size.
    """
    block = fit_block(config.sparse_block_shape, height, width)
    if block == config.sparse_block_shape:
        return config
    zeros = min(config.zeros_per_block, block[0] * block[1])
    return dataclasses.replace(config, sparse_block_shape=block, zeros_per_block=zeros)


def non_finite_error(data: torch.Tensor, norm: str, score_dtype: torch.dtype) -> ValueError:
    """The error for block means that are not finite: NaN/Inf data, or finite data overflowing."""
    if not bool(torch.isfinite(data).all()):
        return ValueError(
            "data contains NaN or Inf; fsparse refuses to rank non-finite values "
            "(clean the tensor, e.g. with torch.nan_to_num, before sparsifying)"
        )
    fixes = ["rescale the data"]
    if norm == "L2":
        fixes.append("use norm='L1'")
    if score_dtype != torch.float64:
        fixes.append("pass float64 data")
    return ValueError(
        f"norm {norm!r} overflows {str(score_dtype).removeprefix('torch.')} in the block "
        f"means of this finite data; {' or '.join(fixes)}"
    )


def check_finite(means: torch.Tensor, data: torch.Tensor, norm: str) -> None:
    """``ValueError`` if ``means`` (of ``data``'s ``norm`` scores) is not all finite."""
    if under_transform(data) or bool(torch.isfinite(means).all()):
        return
    raise non_finite_error(data, norm, means.dtype)
