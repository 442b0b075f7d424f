"""Movement pruning's next scores as a computed piece: scored and selected in one pass.

Movement pruning (``fsparse.pruners.movement``) keeps a score per weight and, at a
mask update, moves it, ``S' = where(live, -(g * w), 0) + S``, then selects on
``S'``. Done in two steps, ``S'`` is written by one pass and read again by the
selection's. As a :class:`MovementScores` piece, the engine's native pass
(``kernels/keep_pass.c``, mode ``MOVEMENT_SCORES``) computes each ``S'`` value,
writes it into :attr:`out` and compares it at once; its sample draws ``S'`` values
the same way, and the pass counts the weights that come back (kept where ``live``
is off): when there are none it records the new mask as within ``live``
(:mod:`~fsparse._src.engine.mask_records`), which spares the revival checks a pass over
the old and new masks. Every other path reads the piece like the
other computed scores (:meth:`part`, :meth:`take`, :meth:`materialize`), with the
same bits.
:meth:`result` then gives the whole ``S'``: ``out`` as the pass left it, or computed
now when no pass wrote it.
"""

from __future__ import annotations

import torch

from fsparse._src.checks import under_transform
from fsparse._src.engine import native, pool
from fsparse._src.engine.unit_flags import all_true

__all__ = ["MovementScores", "moved_scores"]


def moved_scores(score: torch.Tensor, grad: torch.Tensor, weight: torch.Tensor,
                 live: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``where(live, -(grad * weight), 0) + score`` in ``score``'s dtype with torch ops
    (DTensors too), into ``out`` when given; the kernels' ``movement_score`` does the same
    operations in the same order (the same bits).

    >>> moved_scores(torch.ones(2), torch.tensor([2.0, 3.0]), torch.ones(2),
    ...              torch.tensor([True, False])).tolist()
    [-1.0, 1.0]
    """
    dt = score.dtype
    delta = torch.mul(grad.to(dt), weight.to(dt), out=out).neg_()
    if not all_true(live):  # in place: no full-size ~live
        torch.where(live, delta, torch.zeros((), dtype=dt, device=delta.device), out=delta)
    return delta.add_(score)  # delta + S == S + delta (IEEE addition commutes)


class MovementScores:
    """The scores ``where(live, -(grad * weight), 0) + score`` (flat, ``score``'s dtype),
    which the selection computes as it reads them; plain tensors of one shape.

    >>> m = MovementScores(torch.zeros(3), torch.tensor([1.0, -1.0, 2.0]), torch.ones(3),
    ...                    torch.tensor([True, True, False]))
    >>> m.result().tolist()
    [-1.0, 1.0, 0.0]
    """

    __slots__ = ("dtype", "filled", "flat", "grad", "keep", "live", "out", "shape", "weight")
    keep: torch.Tensor | None  # always None: no place is below every score

    def __init__(self, score: torch.Tensor, grad: torch.Tensor, weight: torch.Tensor,
                 live: torch.Tensor) -> None:
        self.flat = score.detach().reshape(-1)
        self.grad = grad.detach().reshape(-1)
        self.weight = weight.detach().reshape(-1)
        self.live = live.reshape(-1)
        self.shape, self.dtype = score.shape, score.dtype
        self.keep = None  # a pruned weight may come back: nothing is keyed below the rest
        self.out = pool.empty((self.flat.numel(),), self.dtype, self.flat.device)
        self.filled = False  # whether ``out`` holds every score (the pass sets it)

    @property
    def device(self) -> torch.device:
        return self.flat.device

    @property
    def plain(self) -> bool:
        """Whether every tensor is a plain ``torch.Tensor`` (no subclass such as DTensor)."""
        return all(type(t) is torch.Tensor for t in (self.flat, self.grad, self.weight, self.live))

    def traced(self) -> bool:
        """Whether an input is traced by ``torch.func`` or ``torch.compile``."""
        return any(under_transform(t) for t in (self.flat, self.grad, self.weight))

    def numel(self) -> int:
        return self.flat.numel()

    def part(self, start: int, stop: int, out: torch.Tensor) -> torch.Tensor:
        """The scores of the flat elements ``start:stop``, written into ``out`` (returned)."""
        window = slice(start, stop)
        return moved_scores(self.flat[window], self.grad[window], self.weight[window],
                      self.live[window], out[: stop - start])

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """Scores of the flat elements at ``index`` (a new tensor)."""
        return moved_scores(*(t.index_select(0, index)
                        for t in (self.flat, self.grad, self.weight, self.live)))

    def materialize(self) -> torch.Tensor:
        """The flat scores: :attr:`out`, filled now unless a pass filled it."""
        if not self.filled:
            if native.movement_scores(self.flat, self.grad, self.weight, self.live,
                                      out=self.out) is None:
                moved_scores(self.flat, self.grad, self.weight, self.live, self.out)
            self.filled = True
        return self.out

    def result(self) -> torch.Tensor:
        """The scores in ``score``'s shape (after the selection read them)."""
        return self.materialize().view(self.shape)

    def has_nan(self) -> bool:
        return bool(self.materialize().isnan().any())
