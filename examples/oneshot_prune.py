"""fsparse.oneshot: prune a trained model in one shot from calibration batches.

A small MLP learns a regression task whose inputs are correlated (as real
activations are), then a fresh copy is pruned to 50 % and to 2:4 with magnitude,
Wanda and SparseGPT; the layer functions are also used directly on tensors.

Run: python examples/oneshot_prune.py
"""

import copy
import os

import torch
from torch import nn

from fsparse.oneshot import prune_model, sparsegpt_prune, wanda_prune

torch.manual_seed(0)
steps = 40 if os.environ.get("FSPARSE_EXAMPLE_SMALL") else 1000
mix = torch.randn(32, 32) * torch.rand(32) * 2           # correlated input features
x = torch.randn(1024, 32) @ mix
y = torch.sin(x @ torch.randn(32, 4) / 8)
model = nn.Sequential(nn.Linear(32, 128), nn.GELU(), nn.Linear(128, 128), nn.GELU(),
                      nn.Linear(128, 4))
opt = torch.optim.Adam(model.parameters(), lr=3e-3)
for _ in range(steps):
    loss = nn.functional.mse_loss(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
test = torch.randn(512, 32) @ mix
with torch.no_grad():
    reference = model(test)

# 1. The edge: hooks, sequential calibration, weights written in place, a report per layer.
calibration = list(x[:512].split(128))                  # 4 batches; any iterable of batches
for n_m in (None, (2, 4)):
    for method in ("magnitude", "wanda", "sparsegpt"):
        pruned = copy.deepcopy(model)
        report = prune_model(pruned, calibration, method=method, sparsity=0.5, n_m=n_m,
                             quiet=True)
        with torch.no_grad():
            drift = float((pruned(test) - reference).norm() / reference.norm())
        errors = ", ".join(f"{r.error:.3f}" for r in report.values())
        label = "50%" if n_m is None else "2:4"
        print(f"{method:>9} {label}: output drift {drift:.3f}; layer errors {errors}")

# 2. The pure layer functions on tensors: statistics in, a new weight out.
weight = model[0].weight.detach()
hessian = 2 * x.T @ x / len(x)                           # SparseGPT's H = 2/n X^T X
new = sparsegpt_prune(weight, hessian, 0.5, n_m=(2, 4))
wanda = wanda_prune(weight, x.square().mean(0), 0.5)     # s_j = mean x_j^2
print("2:4 groups with 2 zeros:", bool(((new == 0).view(128, -1, 4).sum(-1) == 2).all()))
print("zeros per row (Wanda):", (wanda == 0).sum(1)[:4].tolist())
assert torch.equal(model[0].weight.detach(), weight)     # nothing was modified
