"""Movement pruning, soft variant (Sanh et al. 2020, section 3), as the authors' code runs it.

Each weight has a learned score ``S`` (``state.stats["movement"]``). The mask
keeps the weights with ``sigmoid(S) > tau_t`` (the reference code's
``sigmoied_threshold`` binarizer), so the sparsity is not fixed: it follows from
the threshold and the regulariser. At every update, before the new masks:

* ``grad_S = g * w + lambda_t * sigmoid'(S) / (numel * n_tensors)``: the
  straight-through gradient of the loss through the mask (``g`` is the gradient
  with respect to the *masked* weight, which ``apply_masks(...,
  straight_through=True)`` gives) plus that of the regulariser
  ``lambda_t * mean over tensors of mean(sigmoid(S))``;
* ``S`` takes one bias-corrected Adam step of ``score_lr`` (its moments are
  ``stats["movement_m"]`` and ``stats["movement_v"]``).

``tau_t`` ramps from ``initial_threshold`` to ``final_threshold`` on the cubic
schedule between ``start_step`` and ``end_step`` (held from ``end_step`` on),
and ``lambda_t = final_lambda * tau_t / final_threshold``, as the reference's
``schedule_threshold``. The weights are never changed (the mask acts in the
forward pass), so nothing restarts. The reference trains the pruned weights
with masked gradients; here they get the straight-through gradient (train with
``apply_masks(..., straight_through=True)``), as the STE pruners do.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fsparse._src.checks import check_real, short_repr
from fsparse._src.engine.scoring import score_dtype
from fsparse.pruners._common import Common, filled
from fsparse.pruners._protocol import Params, Pruner, check_grads, check_params_fit, check_state
from fsparse.pruners._ranked import dense_state, no_resets
from fsparse.pruners._schedules import Steps
from fsparse.pruners._state import PrunerState

__all__ = ["soft_movement"]

STAT, MOMENT1, MOMENT2 = "movement", "movement_m", "movement_v"
_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8


def soft_movement(final_threshold: float = 0.1, *, initial_threshold: float = 0.0,
                  final_lambda: float = 0.0, score_lr: float = 1e-2, initial_score: float = 0.0,
                  start_step: int = 0, end_step: int | None = None) -> Pruner:
    """Soft movement pruning; ``update`` needs ``grads`` (of the masked weights) at every step.

    >>> pruner = soft_movement(0.5, initial_threshold=0.5)
    >>> w = {"w": torch.tensor([1.0, 1.0, -1.0])}
    >>> state = pruner.init(w)
    >>> state, same = pruner.update(state, w, grads={"w": torch.tensor([1.0, -1.0, -1.0])})
    >>> state.masks["w"].tolist(), same["w"] is w["w"]
    ([False, True, False], True)
    """
    final = check_real(final_threshold, "final_threshold", low=0.0, high=1.0)
    initial = check_real(initial_threshold, "initial_threshold", low=0.0, high=1.0)
    if not 0.0 < final < 1.0:
        raise ValueError(f"final_threshold must be in (0, 1) (a bound on sigmoid(S)), got "
                         f"{short_repr(final_threshold)}")
    lam = check_real(final_lambda, "final_lambda", low=0.0)
    lr = check_real(score_lr, "score_lr", low=0.0)
    if lr == 0.0:
        raise ValueError(f"score_lr must be > 0, got {short_repr(score_lr)}")
    s0 = check_real(initial_score, "initial_score")
    steps = Steps.make(start_step, end_step, 1)
    common = Common.make(0.0)  # no target sparsity: it follows from the threshold

    def threshold(t: int) -> float:
        return initial + (final - initial) * steps.ramp(t)

    def init(params: Params) -> PrunerState:
        checked, state = dense_state(common, params)  # dense until the first update
        zeros = {n: filled(p, 0.0, score_dtype(p.dtype)) for n, p in checked.items()}
        scores = {n: z + s0 for n, z in zeros.items()}
        return state.replace(stats={STAT: scores, MOMENT1: zeros, MOMENT2: zeros})

    def update(state: PrunerState, params: Params, *, grads: Params | None = None
               ) -> tuple[PrunerState, dict[str, torch.Tensor]]:
        state = check_state(state)
        checked = check_params_fit(state, params)
        grads_in = check_grads(grads, checked, "soft_movement", True)
        assert grads_in is not None
        stats = [state.stats.get(key) for key in (STAT, MOMENT1, MOMENT2)]
        old, m_old, v_old = [s if isinstance(s, Mapping) else {} for s in stats]
        if not all(set(s) == set(checked) for s in (old, m_old, v_old)):
            raise ValueError("state has no soft movement scores for these params: make it with "
                             "soft_movement(...).init(params)")
        t = state.step
        tau = threshold(t)
        reg = lam * tau / final / max(len(checked), 1)
        k = t + 1  # Adam steps taken, this one included
        scores, m_new, v_new, masks = {}, {}, {}, {}
        with torch.no_grad():
            for n, p in checked.items():
                # The same IEEE operations in the same order as the textbook lines
                #   g' = g + (reg / numel) * sig * (1 - sig);  m = b1 * m + (1 - b1) * g'
                #   v = b2 * v + (1 - b2) * g' * g';  S -= lr * mhat / (sqrt(vhat) + eps),
                # with the temporaries computed in place (each fresh full-size tensor costs
                # its page faults): the new S, m and v are new tensors, the inputs untouched.
                s = old[n]
                sig = torch.sigmoid(s)
                grad = grads_in[n].to(s.dtype) * p.to(s.dtype)
                tmp = torch.rsub(sig, 1) if reg else torch.empty_like(s)
                if reg:
                    grad.add_(sig.mul_(reg / s.numel()).mul_(tmp))
                m = torch.mul(m_old[n], _BETA1).add_(torch.mul(grad, 1 - _BETA1, out=tmp))
                v = torch.mul(v_old[n], _BETA2).add_(torch.mul(grad, 1 - _BETA2, out=tmp)
                                                     .mul_(grad))
                vhat = torch.div(v, 1 - _BETA2**k, out=grad).sqrt_().add_(_EPS)
                step = torch.div(m, 1 - _BETA1**k, out=sig).div_(vhat).mul_(lr)
                scores[n], m_new[n], v_new[n] = torch.sub(s, step), m, v
                masks[n] = torch.sigmoid(scores[n], out=tmp) > tau
        new = state.replace(masks=masks, step=t + 1,
                            stats={**state.stats, STAT: scores, MOMENT1: m_new, MOMENT2: v_new})
        return new, checked

    hyper = {"final_threshold": final, "initial_threshold": initial, "final_lambda": lam,
             "score_lr": lr, "initial_score": s0, "start_step": steps.start,
             "end_step": steps.end}
    return Pruner("soft_movement", init, update, hyper, needs_grads=True, straight_through=True,
                  resets=no_resets)

