"""Moving torch.ao data-sparsifier code to fsparse: change the import prefix, nothing else.

    - from torch.ao.pruning._experimental.data_sparsifier import DataNormSparsifier
    + from fsparse.data_sparsifier import DataNormSparsifier

The script runs the same training-style code under both prefixes, checks that the
masks agree, and then shows what fsparse adds: a state dict that loads with
``torch.load(weights_only=True)`` and squashing into the model's own tensors.
Set FSPARSE_EXAMPLE_SMALL=1 for a quick run (the tests do).
"""

from __future__ import annotations

import copy
import importlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

SMALL = os.environ.get("FSPARSE_EXAMPLE_SMALL") == "1"
ROWS, EPOCHS = (64, 3) if SMALL else (4096, 6)


def train(prefix: str, model: nn.Module) -> Any:
    """Unchanged torch.ao-style user code; only ``prefix`` picks the library."""
    sparsifier_lib = importlib.import_module(f"{prefix}.data_sparsifier")
    scheduler_lib = importlib.import_module(f"{prefix}.data_scheduler")

    class GammaScheduler(scheduler_lib.BaseDataScheduler):  # in the style of torch.ao's README
        def __init__(self, data_sparsifier: Any, gamma: float, threshold_sl: float):
            self.gamma, self.threshold_sl = gamma, threshold_sl
            super().__init__(data_sparsifier, "sparsity_level")

        def get_schedule_param(self) -> dict[str, float]:
            return {
                name: min(self.threshold_sl, config["sparsity_level"] * self.gamma)
                for name, config in self.data_sparsifier.data_groups.items()
            }

    sparsifier = sparsifier_lib.DataNormSparsifier(sparsity_level=0.1, sparse_block_shape=(1, 4))
    for name, parameter in model.named_parameters():
        if parameter.dim() == 2:
            sparsifier.add_data(name.replace(".", "_"), parameter)
    scheduler = GammaScheduler(sparsifier, gamma=2.0, threshold_sl=0.8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(EPOCHS):
        ids = torch.randint(0, ROWS, (32, 4), generator=torch.Generator().manual_seed(0))
        loss = model(ids).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sparsifier.step()
        scheduler.step()
    return sparsifier


def main() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.EmbeddingBag(ROWS, 16), nn.Linear(16, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices
        reference = train("torch.ao.pruning._experimental", copy.deepcopy(model))
    ours = train("fsparse", model)

    for name in ours.data_groups:
        assert torch.equal(ours.get_mask(name), reference.get_mask(name)), name
        level = ours.data_groups[name]["sparsity_level"]
        zeros = float((ours.get_mask(name) == 0).float().mean())
        print(f"{name}: sparsity_level {level:.2f}, masked {zeros:.2f} (same mask as torch.ao)")

    # Beyond torch.ao: the state dict is plain, so the safe loader accepts it.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sparsifier.pt"
        torch.save(ours.state_dict(), path)
        restored = type(ours)()
        restored.load_state_dict(torch.load(path, weights_only=True))
    assert all(torch.equal(restored.get_mask(n), ours.get_mask(n)) for n in ours.data_groups)

    # squash_mask writes data * mask into the model's own parameters, in place.
    weight = model[0].weight
    ours.squash_mask()
    assert model[0].weight is weight
    print(f"embedding zeros after squash: {float((weight == 0).float().mean()):.2f}")


if __name__ == "__main__":
    main()
