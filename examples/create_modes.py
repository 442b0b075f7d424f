"""fsparse.create's pruning modes on one training loop: only ``pruning=`` changes.

- ``movement``: gradual hard movement pruning (Sanh et al. 2020);
- ``acdc``: alternating sparse and dense phases (AC/DC), ending sparse;
- ``obs``: gradual oBERT (OBS with block Fisher inverses);
- ``mfac``: gradual M-FAC (OBS with M-FAC's recursive Fisher inverse);
- ``rigl``: RigL (ERK, drop by |w|, grow by |grad|);
- ``set``: SET (ERK, drop by |w|, grow at random).

Checkpoint with ``manager.state_dict()`` (it carries each pruner's state), as in
create_recipe.py.

Run: python examples/create_modes.py [MODE ...]   (all modes by default;
FSPARSE_EXAMPLE_SMALL=1 for short runs)
"""

import os
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import fsparse.create

SMALL = os.environ.get("FSPARSE_EXAMPLE_SMALL") == "1"
STEPS_PER_EPOCH = 4
# mode -> (epochs of a short run, epochs of a full run)
EPOCHS = {"movement": (4, 8), "acdc": (10, 20), "obs": (8, 20), "mfac": (8, 20),
          "rigl": (4, 20), "set": (4, 20)}


def _live(manager: fsparse.create.RecipeManager) -> str:
    live = {n: int(m.sum()) for n, m in manager.masks.items()}
    return f"live weights per layer (constant through training): {live}"


def _num_grads(manager: fsparse.create.RecipeManager) -> str:
    pruner = manager.pruners[0]
    return f"pruner: {pruner.name}, num_grads: {pruner.hyperparams['num_grads']}"


def _phases(manager: fsparse.create.RecipeManager) -> str:
    phase = manager.pruners[0].hyperparams["phase"]
    steps = range(int(manager.max_epochs) * STEPS_PER_EPOCH)
    return "phases by step: " + "".join("S" if phase(t) == "sparse" else "D" for t in steps)


def _scores(manager: fsparse.create.RecipeManager) -> str:
    scores = manager.pruning_states[0].stats["movement"]
    first = float(next(iter(scores.values())).abs().mean())
    return f"movement scores (accumulated -grad * weight), first weight: {first:.2e} mean |S|"


# What each mode shows that the others don't.
SIGNATURE: dict[str, Callable[[fsparse.create.RecipeManager], str]] = {
    "movement": _scores, "acdc": _phases, "obs": _num_grads, "mfac": _num_grads,
    "rigl": _live, "set": _live,
}


def run(mode: str, sparsity: float = 0.7) -> float:
    """Train the small conv net with ``pruning=mode``; return the final sparsity."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images, labels = torch.randn(STEPS_PER_EPOCH * 8, 3, 8, 8), torch.randint(0, 10, (32,))
    manager, optimizer = fsparse.create.initialize(
        model, optimizer, STEPS_PER_EPOCH, pruning=mode, quantization=False,
        recipe_variables={"num_epochs": float(EPOCHS[mode][0 if SMALL else 1]),
                          "sparsity": sparsity, "init_lr": 0.05, "final_lr": 0.01},
    )
    print(f"== pruning={mode!r}\n{manager.recipe}")
    for epoch in range(int(manager.max_epochs)):
        phase = manager.phase()
        model.train()
        for step in range(STEPS_PER_EPOCH):
            x, y = images[step * 8 : (step + 1) * 8], labels[step * 8 : (step + 1) * 8]
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()    # pruners that need gradients get them in optimizer.step()
            optimizer.step()
        print(f"epoch {epoch:2d}  phase {phase:<11}  loss {loss.item():.3f}")
    print(SIGNATURE[mode](manager))
    manager.finalize()
    masks = list(manager.masks.values())
    overall = 1 - sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)
    print(f"overall sparsity of the prunable weights: {overall:.3f} (target {sparsity})")
    return overall


if __name__ == "__main__":
    for name in sys.argv[1:] or list(EPOCHS):
        if name not in EPOCHS:
            sys.exit(f"unknown mode {name!r}; choose from {sorted(EPOCHS)}")
        assert abs(run(name) - 0.7) <= 0.02, name
