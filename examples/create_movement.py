"""fsparse.create with pruning='movement': gradual hard movement pruning (Sanh et al. 2020).

The training loop is the quick start's; only ``pruning=`` changes. Checkpoint with
``manager.state_dict()`` (it carries the pruner's state) as in create_recipe.py.

Run: python examples/create_movement.py   (FSPARSE_EXAMPLE_SMALL=1 for a short run)
"""

import os

import torch
import torch.nn.functional as F
from torch import nn

import fsparse.create

SMALL = os.environ.get("FSPARSE_EXAMPLE_SMALL") == "1"
STEPS_PER_EPOCH = 4

torch.manual_seed(0)
model = nn.Sequential(
    nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
    nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
images, labels = torch.randn(STEPS_PER_EPOCH * 8, 3, 8, 8), torch.randint(0, 10, (32,))

manager, optimizer = fsparse.create.initialize(
    model, optimizer, STEPS_PER_EPOCH, pruning='movement', quantization=False,
    recipe_variables={"num_epochs": 4.0 if SMALL else 8.0, "sparsity": 0.7,
                      "init_lr": 0.05, "final_lr": 0.01},
)
print(manager.recipe)

for epoch in range(int(manager.max_epochs)):
    phase = manager.phase()
    model.train()
    for step in range(STEPS_PER_EPOCH):
        x, y = images[step * 8 : (step + 1) * 8], labels[step * 8 : (step + 1) * 8]
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()    # the pruner gets these gradients from optimizer.step()
        optimizer.step()
    print(f"epoch {epoch:2d}  phase {phase:<11}  loss {loss.item():.3f}")

scores = manager.pruning_states[0].stats["movement"]
print("movement scores (accumulated -grad * weight), first weight:",
      f"{float(next(iter(scores.values())).abs().mean()):.2e} mean |S|")
manager.finalize()
weights = [m for m in manager.masks.values()]
overall = 1 - sum(int(m.sum()) for m in weights) / sum(m.numel() for m in weights)
print(f"overall sparsity of the prunable weights: {overall:.3f} (target 0.7)")
assert abs(overall - 0.7) <= 0.02
