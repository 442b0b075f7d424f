"""fsparse.create quick start: sparsify + quantize a plain training loop in three lines.

Run: python examples/create_quickstart.py   (FSPARSE_EXAMPLE_SMALL=1 for a 4-epoch run)
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
    nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
    nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
images, labels = torch.randn(STEPS_PER_EPOCH * 16, 3, 16, 16), torch.randint(0, 10, (64,))

# (1) write the recipe and wrap the optimizer: every optimizer.step() advances it
manager, optimizer = fsparse.create.initialize(
    model, optimizer, STEPS_PER_EPOCH,
    recipe_variables={"num_epochs": 4.0 if SMALL else 20.0, "init_lr": 0.05},
)
print(manager.recipe)

# (2) train for the recipe's epochs; the loop body is unchanged
for epoch in range(int(manager.max_epochs)):
    phase = manager.phase()
    model.train()
    for step in range(STEPS_PER_EPOCH):
        x, y = images[step * 16 : (step + 1) * 16], labels[step * 16 : (step + 1) * 16]
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(
        f"epoch {epoch:2d}  phase {phase:<11}  lr {optimizer.param_groups[0]['lr']:.2e}"
        f"  loss {loss.item():.3f}"
    )

# (3) make the masks permanent and drop the manager's hooks
manager.finalize()

for name, level in manager.sparsity().items():
    print(f"{name:<10} sparsity {level:.3f}")
fake_quant = sum(isinstance(m, torch.ao.quantization.FakeQuantizeBase) for m in model.modules())
print(f"FakeQuantize modules: {fake_quant}")
