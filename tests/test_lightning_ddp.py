"""The Lightning callbacks under a real 2-process DDP fit on CPU (gloo).

Policy under test: every rank runs the callbacks on its own replica, and since DDP
keeps the replicas identical, every rank ends with the same masks and levels. The
fit takes about 15-20 s on 2 CPU cores, so it runs in the default suite.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

SCRIPT = """
import sys, warnings
from pathlib import Path
import torch
from torch import nn
import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger
from fsparse.data_scheduler import StepSLScheduler
from fsparse.data_sparsifier import DataNormSparsifier
from fsparse.lightning import PostTrainingDataSparsity, TrainingAwareDataSparsity

warnings.filterwarnings("ignore")
out = Path(sys.argv[1])


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.model(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


gen = torch.Generator().manual_seed(1)
data = torch.utils.data.TensorDataset(torch.randn(64, 8, generator=gen),
                                      torch.randn(64, 16, generator=gen))
post = PostTrainingDataSparsity(DataNormSparsifier,
                                {"sparsity_level": 0.5, "sparse_block_shape": (1, 2)})
aware = TrainingAwareDataSparsity(
    DataNormSparsifier, {"sparsity_level": 0.125, "sparse_block_shape": (1, 2)},
    StepSLScheduler, {"gamma": 2},
)
module = Tiny()
trainer = pl.Trainer(
    accelerator="cpu", devices=2, strategy="ddp", max_epochs=3, callbacks=[aware, post],
    logger=CSVLogger(out, name="logs", version=0), enable_progress_bar=False,
    enable_model_summary=False, enable_checkpointing=False, default_root_dir=out,
    log_every_n_steps=1,
)
trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=8))
sparsifier = aware.data_sparsifier
torch.save({
    "world_size": trainer.world_size,
    "model": {n: p.detach().clone() for n, p in module.model.named_parameters()},
    "aware_masks": {n: sparsifier.get_mask(n).clone() for n in sparsifier.data_groups},
    "levels": {n: g["sparsity_level"] for n, g in sparsifier.data_groups.items()},
    "aware": {n: p.detach().clone() for n, p in aware.sparsified.named_parameters()},
    "post": {n: p.detach().clone() for n, p in post.sparsified.named_parameters()},
    "sparsity": (aware.sparsity, post.sparsity),
}, out / f"rank{trainer.global_rank}.pt")
"""


def test_ddp_two_processes_end_with_identical_masks(tmp_path: Path) -> None:
    script = tmp_path / "ddp_fit.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("LOCAL_RANK", None)
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    for key in ("model", "aware_masks", "aware", "post"):
        left, right = ranks[0][key], ranks[1][key]
        assert left.keys() == right.keys(), key
        for name in left:
            assert torch.equal(left[name], right[name]), (key, name)
    assert ranks[0]["levels"] == ranks[1]["levels"] == dict.fromkeys(ranks[0]["levels"], 1.0)
    assert ranks[0]["sparsity"] == ranks[1]["sparsity"]
    aware, post = ranks[0]["sparsity"]
    assert aware["overall"] == 0.5 and post["overall"] == 0.5

    with open(tmp_path / "logs" / "version_0" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    logged = [float(r["sparsity/overall"]) for r in rows if r.get("sparsity/overall")]
    assert logged == [0.125, 0.25, 0.5]
    assert [r["post_training_sparsity/overall"] for r in rows if r[
        "post_training_sparsity/overall"]] == ["0.5"]
