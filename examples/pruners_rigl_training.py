"""RigL on an nn.Module with torch.optim: drop-and-grow, regrown weights and momentum at zero.

Run: python examples/pruners_rigl_training.py
"""

import os

import torch
from torch import nn

from fsparse import pruners

torch.manual_seed(0)
steps = 30 if os.environ.get("FSPARSE_EXAMPLE_SMALL") else 600
model = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 10))
named = dict(model.named_parameters())
weights = {n: p for n, p in named.items() if n.endswith("weight")}
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
x, y = torch.randn(512, 32), torch.randint(0, 10, (512,))

end = steps * 3 // 4
pruner = pruners.rigl(0.9, distribution="erk", update_every=10, end_step=end,
                      drop_fraction=pruners.cosine_drop_fraction(0.3, end))
state = pruner.init({n: p.detach() for n, p in weights.items()})
for t in range(steps):
    masked = pruners.apply_masks(state, named, straight_through=True)  # dense gradients
    loss = nn.functional.cross_entropy(torch.func.functional_call(model, masked, (x,)), y)
    opt.zero_grad()
    loss.backward()
    grads = {n: p.grad for n, p in weights.items()}
    given = {n: p.detach() for n, p in weights.items()}
    new, params = pruner.update(state, given, grads=grads)
    # The edge: write changed weights back, restart revived weights' momentum, then step
    # with gradients masked so pruned weights stay put.
    with torch.no_grad():
        for n, p in weights.items():
            if params[n] is not given[n]:  # a new tensor: some weights were regrown at 0
                p.copy_(params[n])
            p.grad.mul_(new.masks[n])
    pruners.reset_optimizer_state(opt, weights, pruner.resets(state, new))
    opt.step()
    state = new
    if t % max(steps // 5, 1) == 0:
        live = {n: int(m.sum()) for n, m in state.masks.items()}
        print(f"step {t}: loss {loss.item():.3f} live {live}")
live = sum(int(m.sum()) for m in state.masks.values())
total = sum(m.numel() for m in state.masks.values())
print(f"sparsity {1 - live / total:.3f} (target 0.9)")
