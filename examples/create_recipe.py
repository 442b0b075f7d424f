"""fsparse.create recipes are data: write one, edit its YAML, run it, resume it.

Run: python examples/create_recipe.py   (FSPARSE_EXAMPLE_SMALL=1 for a shorter run)
"""

import copy
import os
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from fsparse import create

SMALL = os.environ.get("FSPARSE_EXAMPLE_SMALL") == "1"
STEPS_PER_EPOCH = 2 if SMALL else 8


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4)
    )


def train(model: nn.Module, optimizer, manager: create.RecipeManager, steps: int) -> None:
    for _ in range(steps):
        gen = torch.Generator().manual_seed(manager.step)  # the data depends on the step only
        x, y = torch.randn(16, 32, generator=gen), torch.randint(0, 4, (16,), generator=gen)
        out = model(x)
        loss = manager.loss_update(F.cross_entropy(out, y), student_outputs=out, student_inputs=x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


# 1. A recipe for TensorRT (2:4 masks) with self-distillation, as YAML.
variables = create.RecipeVariables(num_epochs=6.0, target="tensorrt", hardness=0.3)
recipe = create.create_recipe(variables, distillation=True, lr="cosine")
print(recipe)

# 2. Edit it as plain data (yaml.safe_load: no code runs) and save it.
data = yaml.safe_load(recipe.to_yaml())
for modifier in data["modifiers"]:
    if modifier["type"] == "GradualPruning":
        modifier["params"] = ["2.weight", "4.weight"]  # leave the first layer dense
path = Path("edited_recipe.yaml")
path.write_text(yaml.safe_dump(data, sort_keys=False))

# 3. Run the edited recipe; checkpoint half way.
model = make_model()
manager, optimizer = create.initialize(
    model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), STEPS_PER_EPOCH, recipe=path
)
total = int(manager.max_epochs * STEPS_PER_EPOCH)
train(model, optimizer, manager, total // 2)
# state dicts hold live tensors: copy them, as torch.save would
checkpoint = copy.deepcopy(
    {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "manager": manager.state_dict(),
    }
)
train(model, optimizer, manager, total - total // 2)
uninterrupted = model.state_dict()

# 4. Resume from the checkpoint: manager first (it replays QAT), then model and optimizer.
resumed_model = make_model()
resumed, resumed_opt = create.initialize(
    resumed_model, torch.optim.SGD(resumed_model.parameters(), lr=0.1, momentum=0.9),
    STEPS_PER_EPOCH, recipe=path,
)
resumed.load_state_dict(checkpoint["manager"])
resumed_model.load_state_dict(checkpoint["model"])
resumed_opt.load_state_dict(checkpoint["optimizer"])
train(resumed_model, resumed_opt, resumed, total - total // 2)
identical = all(torch.equal(v, uninterrupted[k]) for k, v in resumed_model.state_dict().items())
print(f"phase {manager.phase()}, sparsity {manager.sparsity()}")
print(f"resumed run bit-identical to the uninterrupted one: {identical}")
assert identical
