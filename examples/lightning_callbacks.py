"""Both Lightning callbacks in one real ``Trainer.fit``, then a resume from a checkpoint.

A small embedding + MLP regressor (biases included) trains on synthetic data.
``TrainingAwareDataSparsity`` re-sparsifies a copy after every epoch while a
``StepSLScheduler`` multiplies the level by 1.5; ``PostTrainingDataSparsity`` sparsifies a copy
once fit ends. Sparsity goes to a CSV logger. The second half resumes a fit from the
checkpoint of epoch 2 and checks it ends with the same masks.

Run: python examples/lightning_callbacks.py   (FSPARSE_EXAMPLE_SMALL=1: smaller and faster)
"""

from __future__ import annotations

import csv
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from fsparse.data_scheduler import StepSLScheduler
from fsparse.data_sparsifier import DataNormSparsifier
from fsparse.lightning import PostTrainingDataSparsity, TrainingAwareDataSparsity

warnings.filterwarnings("ignore", module="lightning")  # tips about loaders, log intervals
SMALL = os.environ.get("FSPARSE_EXAMPLE_SMALL") == "1"
ROWS, EPOCHS = (256, 4) if SMALL else (4096, 5)


class Regressor(pl.LightningModule):
    """The callbacks sparsify ``self.model``, as torch.ao's do."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = nn.Sequential(
            nn.Embedding(100, 16), nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 1)
        )

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        tokens, target = batch
        loss = nn.functional.mse_loss(self.model(tokens).squeeze(-1), target)
        self.log("loss", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-2)


def loader() -> torch.utils.data.DataLoader:
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 100, (ROWS, 4), generator=gen)
    target = (tokens % 7).float().mean(dim=1)
    return torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(tokens, target), batch_size=64
    )


def callbacks() -> tuple[TrainingAwareDataSparsity, PostTrainingDataSparsity]:
    aware = TrainingAwareDataSparsity(
        data_sparsifier_class=DataNormSparsifier,
        data_sparsifier_args={"sparsity_level": 0.1, "sparse_block_shape": (1, 4)},
        data_scheduler_class=StepSLScheduler,
        data_scheduler_args={"step_size": 1, "gamma": 1.5},
    )
    post = PostTrainingDataSparsity(
        DataNormSparsifier, {"sparsity_level": 0.5, "sparse_block_shape": (1, 4)}
    )
    return aware, post


def mse(model: nn.Module) -> float:
    with torch.no_grad():
        return sum(
            nn.functional.mse_loss(model(x).squeeze(-1), y, reduction="sum").item()
            for x, y in loader()
        ) / ROWS


def fit(root: Path, extra: list[pl.Callback], **kwargs: Any) -> pl.Trainer:
    trainer = pl.Trainer(
        max_epochs=EPOCHS, accelerator="cpu", devices=1, default_root_dir=root,
        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
        callbacks=extra, logger=CSVLogger(root, name="logs"),
    )
    trainer.fit(Regressor(), loader(), **kwargs)
    return trainer


with tempfile.TemporaryDirectory() as tmp:
    root = Path(tmp)
    aware, post = callbacks()
    every_epoch = ModelCheckpoint(root / "ckpt", filename="{epoch}", save_top_k=-1)
    trainer = fit(root, [aware, post, every_epoch])

    print("training-aware sparsity logged after each epoch:")
    with open(Path(trainer.log_dir or root) / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["sparsity/overall"]:
                print(f"  epoch {row['epoch']}: overall {float(row['sparsity/overall']):.3f}, "
                      f"embedding {float(row['sparsity/0.weight']):.3f}, "
                      f"dense training loss {float(row['loss']):.4f}")
    print("post-training sparsity:", {k: round(v, 3) for k, v in post.sparsity.items()})
    dense = sum(int(p.count_nonzero()) for p in trainer.lightning_module.parameters())
    total = sum(p.numel() for p in trainer.lightning_module.parameters())
    print(f"trained model untouched: {dense}/{total} non-zeros")
    trained = trainer.lightning_module.model
    print(f"MSE: trained {mse(trained):.4f}, training-aware copy {mse(aware.sparsified):.4f}, "
          f"post-training copy {mse(post.sparsified):.4f}")

    # Resume from the checkpoint written after epoch 2: same masks as the full run.
    resumed, resumed_post = callbacks()
    fit(root / "resume", [resumed, resumed_post], ckpt_path=root / "ckpt" / "epoch=1.ckpt")
    for name in aware.data_sparsifier.data_groups:
        same = torch.equal(aware.data_sparsifier.get_mask(name),
                           resumed.data_sparsifier.get_mask(name))
        assert same, name
    levels = {n: g["sparsity_level"] for n, g in resumed.data_sparsifier.data_groups.items()}
    assert levels == {n: g["sparsity_level"] for n, g in aware.data_sparsifier.data_groups.items()}
    print(f"resumed from the epoch-2 checkpoint: same masks and levels after {resumed.epoch} "
          "epochs")
