"""Second-order pruning: OBS/oBERT (Kurtic et al. 2022) and M-FAC (Frantar et al. 2021).

Both score each weight by the loss increase its removal causes under the
empirical Fisher of the last ``num_grads`` gradients, ``w_i^2 / (2 [F^-1]_ii)``
(block patterns: ``1/2 w_B^T ([F^-1]_B)^-1 w_B`` per unit), select through the
engine, then move the surviving weights by the OBS compensation
``dw = -F^-1 z`` (``z_p = w_p / [F^-1]_pp`` over the newly pruned set, or
``z_B = ([F^-1]_B)^-1 w_B`` for block units) and zero the pruned weights, as
sparseml's ``OBSPruningParamsScorer`` does. They differ only in the inverse:
:class:`FisherInverse` (explicit blocks) for :func:`obs`, :class:`MFACInverse`
(M-FAC's recursive form) for :func:`mfac`.

**Gradients.** ``update`` collects ``grads * mask`` (flattened, in float32 for
16-bit data) into ``state.stats["grads"][name]``, an ``(num_grads, numel)``
buffer, at the ``num_grads`` updates ending with each pruning update (the
pruning update's own grads included); ``state.stats["grad_count"]`` counts
them and restarts at 0 after each pruning update. Outside those windows
``grads`` may be omitted. A pruning update that lacks gradients raises
``ValueError`` (so a one-shot pruner needs ``start_step >= num_grads - 1``).

**Steps.** The pruning steps are the ramp's update steps with a level above 0.
With ``num_recomputations = r``, the pruning step ``t`` becomes ``r`` sub-steps
at updates ``t, t + num_grads, ..., t + (r - 1) * num_grads``, each with the
``num_grads`` fresh gradients since the previous one; sub-step ``j`` prunes to
``prev + (level(t) - prev) * (j + 1) / r`` of the target (``prev``: the level of
the pruning step before). The masks between sub-steps are the last sub-step's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from fsparse._src.checks import check_finite, check_int, check_real, short_repr
from fsparse._src.engine import Block, Channel, Pattern
from fsparse._src.engine.patterns import matrix_shape
from fsparse._src.engine.scoring import score_dtype
from fsparse.pruners._common import Common
from fsparse.pruners._fisher import FisherInverse, MFACInverse
from fsparse.pruners._magnitude import Sparsity
from fsparse.pruners._protocol import Params, Pruner, check_grads, check_params_fit, check_state
from fsparse.pruners._ranked import dense_state, select
from fsparse.pruners._schedules import Steps
from fsparse.pruners._state import PrunerState

__all__ = ["mfac", "obs"]

GRADS, COUNT = "grads", "grad_count"
_MAX_GRADS, _MAX_ROUNDS = 2**24, 1024
Inverse = type[FisherInverse] | type[MFACInverse]


@dataclass(frozen=True)
class _Plan:
    """Which updates collect gradients and which prune (a function of the step only)."""

    steps: Steps
    num_grads: int
    rounds: int

    def pruning(self, t: int) -> bool:
        s = self.steps
        return t >= 0 and s.is_update(t) and (s.end == s.start or t > s.start)

    def next_pruning(self, t: int) -> int | None:
        """The first pruning step ``>= t``."""
        s = self.steps
        if s.end is None or s.end == s.start:
            return s.start if t <= s.start else None
        t = max(t, s.start + 1)
        nxt = s.start + s.every * -(-(t - s.start) // s.every)
        return nxt if nxt <= s.end else (s.end if t <= s.end else None)

    def substep(self, t: int) -> tuple[int, int] | None:
        """``(pruning step, j)`` if update ``t`` is sub-step ``j`` of a pruning step."""
        for j in range(self.rounds):
            if self.pruning(t - j * self.num_grads):
                return t - j * self.num_grads, j
        return None

    def collects(self, t: int) -> bool:
        """Whether some sub-step ``tp + j * num_grads`` lies in ``[t, t + num_grads - 1]``."""
        for j in range(self.rounds):
            lo = t - j * self.num_grads
            tp = self.next_pruning(lo)
            if tp is not None and tp <= lo + self.num_grads - 1:
                return True
        return False

    def level(self, tp: int, j: int) -> float:
        prev = self.steps.ramp(tp - 1)
        return prev + (self.steps.ramp(tp) - prev) * (j + 1) / self.rounds


def _check_plan(steps: Steps, num_grads: int, rounds: int) -> None:
    if steps.end is None or steps.end == steps.start:
        return
    span = steps.end - steps.start
    if span <= steps.every:
        return
    gap = min(steps.every, span % steps.every or steps.every)
    if rounds * num_grads > gap:
        raise ValueError(
            f"num_recomputations * num_grads ({rounds} * {num_grads}) must be <= the gap between "
            f"pruning steps ({gap}, from update_every/end_step), so that gradient windows don't "
            f"overlap")


def _unit_index(shape: tuple[int, ...], pattern: Pattern, device: torch.device
                ) -> torch.Tensor | None:
    """``(U, u)`` flat coordinates of each block/channel unit (-1: padding), else ``None``."""
    numel = 1
    for n in shape:
        numel *= n
    if isinstance(pattern, Channel):
        rows = shape[0] if shape else 1
        return torch.arange(numel, device=device).reshape(rows, -1)
    if isinstance(pattern, Block):
        rows, cols = matrix_shape(shape)
        h, w = pattern.height, pattern.width
        big_r, big_c = -(-rows // h) * h, -(-cols // w) * w
        grid = torch.full((big_r, big_c), -1, dtype=torch.long, device=device)
        grid[:rows, :cols] = torch.arange(numel, device=device).reshape(rows, cols)
        return grid.reshape(big_r // h, h, big_c // w, w).permute(0, 2, 1, 3).reshape(-1, h * w)
    return None


def _prune_one(name: str, inverse: Inverse, buf: torch.Tensor, w: torch.Tensor,
               mask: torch.Tensor,
               pattern: Pattern, damp: float, block_size: int
               ) -> tuple[torch.Tensor, Any]:
    """Scores (``-1`` on pruned weights) and a closure giving the compensated weights."""
    finv = inverse.from_grads(buf, damp=damp, block_size=block_size)
    check_finite(finv.diag(), f"the Fisher inverse of {name}'s gradients (too large for damp?)")
    flat = w.reshape(-1).to(buf.dtype)
    index = _unit_index(tuple(w.shape), pattern, w.device)
    tiny = torch.finfo(buf.dtype).tiny
    if index is None:
        diag = finv.diag().clamp_min(tiny)
        scores = flat ** 2 / (2 * diag)
        z_all = flat / diag
    else:
        valid = index >= 0
        w_units = torch.where(valid, flat[index.clamp_min(0)], 0.0)
        try:
            z_units = torch.linalg.solve(finv.submatrices(index), w_units)
        except torch.linalg.LinAlgError as err:
            raise ValueError(f"the Fisher inverse blocks of {name} are singular; raise damp "
                             f"({err})") from None
        unit_scores = 0.5 * (w_units * z_units).sum(-1)
        scores = torch.zeros_like(flat)
        z_all = torch.zeros_like(flat)
        scores[index[valid]] = unit_scores[:, None].expand_as(index)[valid]
        z_all[index[valid]] = z_units[valid]
    scores = scores.masked_fill(~mask.reshape(-1), -1.0).reshape(w.shape)

    def compensate(new_mask: torch.Tensor) -> torch.Tensor:
        old, new = mask.reshape(-1), new_mask.reshape(-1)
        z = torch.where(old & ~new, z_all, 0.0)
        moved = flat - finv.mul(z)
        return torch.where(old & new, moved, 0.0).reshape(w.shape).to(w.dtype)

    return scores, compensate


def _buffers(state: PrunerState, checked: dict[str, torch.Tensor], who: str, n: int
             ) -> tuple[dict[str, torch.Tensor], int]:
    buf, count = state.stats.get(GRADS), state.stats.get(COUNT)
    ok = isinstance(buf, Mapping) and set(buf) == set(checked) and isinstance(
        count, torch.Tensor) and count.dim() == 0 and not count.is_floating_point()
    if ok:
        assert isinstance(buf, Mapping) and isinstance(count, torch.Tensor)
        ok = all(tuple(buf[k].shape) == (n, p.numel()) for k, p in checked.items()) and \
            0 <= int(count) <= n
    if not ok:
        raise ValueError(f"state has no {who} gradient buffer for these params (stats "
                         f"{GRADS!r}, {COUNT!r}): make it with {who}(...).init(params)")
    assert isinstance(buf, Mapping) and isinstance(count, torch.Tensor)
    return dict(buf), int(count)


def _second_order(name: str, inverse: Inverse, sparsity: object, num_grads: object,
                  damp: object, block_size: object, num_recomputations: object,
                  distribution: object, sparsity_type: object, start_step: object,
                  end_step: object, update_every: object, overrides: object) -> Pruner:
    n = check_int(num_grads, "num_grads", low=1, high=_MAX_GRADS)
    lam = check_real(damp, "damp")
    if lam <= 0:
        raise ValueError(f"damp must be > 0, got {short_repr(damp)}")
    size = check_int(block_size, "block_size", low=1)
    rounds = check_int(num_recomputations, "num_recomputations", low=1, high=_MAX_ROUNDS)
    is_global = isinstance(distribution, str) and distribution == "global"
    common = Common.make(sparsity, "uniform" if is_global else distribution, sparsity_type,
                         start_step, end_step, update_every, overrides, is_global=is_global)
    plan = _Plan(common.steps, n, rounds)
    _check_plan(common.steps, n, rounds)

    def init(params: Params) -> PrunerState:
        checked, state = dense_state(common, params)
        buf = {k: torch.zeros((n, p.numel()), dtype=score_dtype(p.dtype), device=p.device)
               for k, p in checked.items()}
        return state.replace(stats={GRADS: buf, COUNT: torch.zeros((), dtype=torch.int64)})

    def update(state: PrunerState, params: Params, *, grads: Params | None = None
               ) -> tuple[PrunerState, dict[str, torch.Tensor]]:
        state = check_state(state)
        checked = check_params_fit(state, params)
        buf, count = _buffers(state, checked, name, n)
        t = state.step
        collect = plan.collects(t)
        grads_in = check_grads(grads, checked, f"{name} at step {t} (it collects the "
                               f"{n} gradients before each pruning step)", collect)
        sub = plan.substep(t)
        out, masks = dict(checked), dict(state.masks)
        with torch.no_grad():
            if collect:
                assert grads_in is not None
                for k, g in grads_in.items():
                    check_finite(g, f"grads[{short_repr(k)}]")
                if count >= n:
                    raise ValueError(f"state's {COUNT!r} is already {count} = num_grads at step "
                                     f"{t}: the state does not belong to this schedule")
                slot = torch.tensor([count], device=None)
                for k, g in grads_in.items():
                    row = torch.where(state.masks[k], g, 0.0).reshape(1, -1).to(buf[k].dtype)
                    buf[k] = buf[k].index_copy(0, slot.to(row.device), row)
                count += 1
            if sub is not None:
                if count < n:
                    raise ValueError(
                        f"{name} prunes at step {t} from the last num_grads={n} gradients, but "
                        f"only {count} were collected: pass grads at steps {t - n + 1}..{t} "
                        f"(start_step must be >= num_grads - 1)")
                level = plan.level(*sub)
                scores, fixes = {}, {}
                for k, p in checked.items():
                    if p.numel() == 0:
                        scores[k] = torch.zeros(p.shape, dtype=buf[k].dtype, device=p.device)
                        continue
                    scores[k], fixes[k] = _prune_one(short_repr(k), inverse, buf[k], p,
                                                     state.masks[k],
                                                     common.pattern, lam, size)
                masks = select(common, scores, {k: state.targets[k] * level for k in checked})
                for k, fix in fixes.items():
                    if not bool(torch.equal(masks[k], state.masks[k])):
                        out[k] = fix(masks[k])
                count = 0
        stats = {**state.stats, GRADS: buf, COUNT: torch.tensor(count, dtype=torch.int64)}
        return state.replace(masks=masks, step=t + 1, stats=stats), out

    hyper = {**common.describe(), "num_grads": n, "damp": lam, "block_size": size,
             "num_recomputations": rounds, "global": is_global}
    return Pruner(name, init, update, hyper, needs_grads=True)


def obs(sparsity: Sparsity, *, num_grads: int = 64, damp: float = 1e-5, block_size: int = 50,
        num_recomputations: int = 1, distribution: Any = "uniform",
        sparsity_type: Any = "unstructured", start_step: int = 0, end_step: int | None = None,
        update_every: int = 1, overrides: Mapping[str, float] | None = None) -> Pruner:
    """OBS/oBERT (Kurtic et al. 2022) with :class:`FisherInverse` blocks of ``block_size``.

    ``distribution`` may also be ``"global"`` (one threshold over all tensors,
    oBERT's default). ``update`` needs ``grads`` in the collection windows
    (module docstring). Memory: the ``(num_grads, numel)`` buffer per tensor,
    plus ``numel * block_size`` while pruning.

    >>> w = {"w": torch.tensor([1.0, 1.0, 2.0, 0.1])}
    >>> pruner = obs(0.5, num_grads=1, damp=0.1, block_size=4)
    >>> g = {"w": torch.tensor([3.0, 0.0, 0.0, 0.0])}
    >>> state, new = pruner.update(pruner.init(w), w, grads=g)
    >>> state.masks["w"].tolist(), new["w"][1:].tolist()
    ([True, False, True, False], [0.0, 2.0, 0.0])
    """
    return _second_order("obs", FisherInverse, sparsity, num_grads, damp, block_size,
                         num_recomputations, distribution, sparsity_type, start_step, end_step,
                         update_every, overrides)


def mfac(sparsity: Sparsity, *, num_grads: int = 64, damp: float = 1e-5,
         block_size: int = 2048, num_recomputations: int = 1, distribution: Any = "uniform",
         sparsity_type: Any = "unstructured", start_step: int = 0, end_step: int | None = None,
         update_every: int = 1, overrides: Mapping[str, float] | None = None) -> Pruner:
    """M-FAC pruning (Frantar et al. 2021): :func:`obs` with :class:`MFACInverse`.

    The inverse never holds a block matrix, so large blocks are cheap: memory
    ``O(num_grads * numel)``, ``O(num_grads^2 * numel)`` time per pruning step.

    >>> w = {"w": torch.tensor([1.0, 1.0, 2.0, 0.1])}
    >>> pruner = mfac(0.5, num_grads=1, damp=0.1, block_size=4)
    >>> g = {"w": torch.tensor([3.0, 0.0, 0.0, 0.0])}
    >>> state, new = pruner.update(pruner.init(w), w, grads=g)
    >>> state.masks["w"].tolist()
    [True, False, True, False]
    """
    return _second_order("mfac", MFACInverse, sparsity, num_grads, damp, block_size,
                         num_recomputations, distribution, sparsity_type, start_step, end_step,
                         update_every, overrides)
