"""Property-test your own pruner with fsparse.testing (needs `fsparse[testing]`).

``top_magnitude`` is a one-shot magnitude pruner written against the protocol
(``init``/``update`` over an immutable ``PrunerState``). check_pruner runs it on
generated linear/conv/embedding parameter dicts for a few steps and checks
purity, counts, the pattern, state round trips and reproducibility.

Run: python examples/testing_pruner.py
"""

import torch

import fsparse
from fsparse.pruners import Pruner, PrunerState
from fsparse.testing import PrunerCheckError, check_pruner


def top_magnitude(sparsity: float, pattern: str = "1x4") -> Pruner:
    def init(params: dict[str, torch.Tensor]) -> PrunerState:
        masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in params.items()}
        return PrunerState(masks, targets={n: sparsity for n in params})

    def update(state: PrunerState, params: dict[str, torch.Tensor], *, grads=None):
        masks = {n: fsparse.select_mask(p.abs(), sparsity, pattern) for n, p in params.items()}
        return state.replace(masks=masks, step=state.step + 1), dict(params)

    return Pruner("top_magnitude", init, update, {"sparsity_type": pattern})


# The checks: ten lines.
for sparsity, pattern in [(0.5, "1x4"), (0.75, "2:4"), (1.0, "channel")]:
    pruner = top_magnitude(sparsity, pattern)
    check_pruner(pruner, sparsity_at=lambda t, target: target, steps=4)()
check_pruner(fsparse.pruners.magnitude(0.6, start_step=1, end_step=3))()  # built-in: ramp

try:  # a pruner that prunes in place is caught
    bad = top_magnitude(0.5)
    def in_place(state, params, *, grads=None):
        new, out = bad.update(state, params)
        for n, p in params.items():
            p.mul_(new.masks[n])
        return new, out
    check_pruner(Pruner("in_place", bad.init, in_place, bad.hyperparams),
                 sparsity_at=lambda t, target: target)()
except PrunerCheckError as error:
    print("caught:", str(error).splitlines()[0])
else:
    raise SystemExit("the in-place pruner was not caught")
print("top_magnitude passes check_pruner")
