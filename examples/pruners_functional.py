"""fsparse.pruners, functionally: gradual magnitude, SNIP and STE with torch.func.

Run: python examples/pruners_functional.py
"""

import os

import torch
from torch import nn

import fsparse
from fsparse import pruners

torch.manual_seed(0)
steps = 20 if os.environ.get("FSPARSE_EXAMPLE_SMALL") else 200
model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
params = {k: v.detach().clone() for k, v in model.named_parameters()}  # "0.weight", ...
x, y = torch.randn(256, 16), torch.randint(0, 4, (256,))


def loss_fn(p, state, straight_through=False):
    masked = pruners.apply_masks(state, p, straight_through=straight_through)
    logits = torch.func.functional_call(model, masked, (x,))
    return nn.functional.cross_entropy(logits, y)


# 1. Gradual magnitude pruning (Zhu & Gupta): ERK over the weights, biases left dense,
#    the cubic ramp from step 5 to 15, masks updated every 2 steps.
dense = {n: 0.0 for n in params if n.endswith("bias")}
pruner = pruners.magnitude(0.9, distribution="erk", start_step=5, end_step=15, update_every=2,
                           overrides=dense)
state = pruner.init(params)
print("ERK targets:", {n: round(s, 3) for n, s in state.targets.items()})
p = dict(params)
for _ in range(steps):
    state, p = pruner.update(state, p)               # the masks that hold for step t
    grads = torch.func.grad(loss_fn)(p, state)        # zero at pruned weights
    p = {n: w - 0.1 * grads[n] for n, w in p.items()}
sparsity = {n: round(1 - m.float().mean().item(), 3) for n, m in state.masks.items()}
print("gradual magnitude:", sparsity, "loss", round(loss_fn(p, state).item(), 3))

# 2. SNIP: one-shot global |w * g| from one batch, before training.
snip = pruners.snip(0.8, overrides=dense)
state0 = snip.init(params)
grads = torch.func.grad(loss_fn)(params, state0)
snip_state, _ = snip.update(state0, params, grads=grads)
print("snip kept per tensor:", {n: int(m.sum()) for n, m in snip_state.masks.items()})

# 3. Straight-through magnitude: masks from the dense weights each step, the gradient
#    reaches every weight (so pruned weights can come back).
ste = pruners.ste_magnitude(0.75, sparsity_type="1x4", overrides=dense)
state, p = ste.init(params), dict(params)
for _ in range(steps):
    state, p = ste.update(state, p)
    grads = torch.func.grad(loss_fn)(p, state, straight_through=True)
    p = {n: w - 0.1 * grads[n] for n, w in p.items()}
print("ste 1x4 loss", round(loss_fn(p, state).item(), 3))

# 4. The state is a pytree: save plain containers, load them back with weights_only.
torch.save(pruners.state_dict(state), "pruner_state.pt")
back = pruners.load_state_dict(torch.load("pruner_state.pt", weights_only=True))
assert back == state
# 5. The distributions and the drop-and-grow rule are plain functions too.
print(fsparse.erk_sparsities({"a": (64, 16), "b": (4, 64)}, 0.9))
