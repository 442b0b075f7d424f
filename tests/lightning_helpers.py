"""Shared pieces of the Lightning tests: a tiny module, its data, a quiet CPU trainer."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl  # the `test` extra installs it
import torch
from torch import nn

from fsparse.data_scheduler import StepSLScheduler
from fsparse.data_sparsifier import DataNormSparsifier
from fsparse.lightning import TrainingAwareDataSparsity

# Every weight and bias splits into whole (1, 2) blocks, and every block count is a
# multiple of 8, so levels k/8 give exactly that fraction of zeros in every layer.
BLOCK = (1, 2)
BASE, GAMMA, EPOCHS = 0.125, 2, 3


class TinyModule(pl.LightningModule):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.model(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def loader() -> torch.utils.data.DataLoader:
    gen = torch.Generator().manual_seed(1)
    data = torch.utils.data.TensorDataset(torch.randn(48, 8, generator=gen),
                                          torch.randn(48, 16, generator=gen))
    return torch.utils.data.DataLoader(data, batch_size=16, shuffle=False)


def trainer(tmp_path: Path, callbacks: list[Any], max_epochs: int = EPOCHS, **kw: Any) -> Any:
    options: dict[str, Any] = {
        "max_epochs": max_epochs, "callbacks": callbacks, "accelerator": "cpu", "devices": 1,
        "enable_progress_bar": False, "enable_model_summary": False, "logger": False,
        "enable_checkpointing": False, "default_root_dir": tmp_path, "log_every_n_steps": 1,
    }
    return pl.Trainer(**{**options, **kw})


def training_aware() -> TrainingAwareDataSparsity:
    return TrainingAwareDataSparsity(
        DataNormSparsifier, {"sparsity_level": BASE, "sparse_block_shape": BLOCK},
        StepSLScheduler, {"gamma": GAMMA, "step_size": 1},
    )


@contextmanager
def quiet() -> Iterator[None]:
    """Lightning's and pytree's warnings filtered."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="lightning")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        yield
