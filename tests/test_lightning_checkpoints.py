"""Lightning callbacks: resuming from any checkpoint, hostile checkpoints, hand-called hooks."""

from __future__ import annotations

import copy
import math
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl  # the `test` extra installs it
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning_helpers import (
    BASE,
    EPOCHS,
    GAMMA,
    TinyModule,
    loader,
    quiet,
    trainer,
    training_aware,
)
from torch import nn

from fsparse.data_scheduler import StepSLScheduler
from fsparse.data_sparsifier import DataNormSparsifier
from fsparse.data_sparsifier.lightning.callbacks._data_sparstity_utils import _get_valid_name
from fsparse.lightning import PostTrainingDataSparsity, TrainingAwareDataSparsity

NAMES = ["0_weight", "0_bias", "2_weight", "2_bias"]


def levels(callback: TrainingAwareDataSparsity) -> dict[str, float]:
    assert callback.data_sparsifier is not None
    return {n: g["sparsity_level"] for n, g in callback.data_sparsifier.data_groups.items()}


def stored_state(ckpt: Path) -> dict[str, Any]:
    stored = torch.load(ckpt, weights_only=True)["callbacks"]
    return next(v for k, v in stored.items() if "TrainingAwareDataSparsity" in k)  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with quiet():
        yield


# -- resume ----------------------------------------------------------------------------


class KeepSchedulerState(pl.Callback):
    """What fsparse used to save mid-first-epoch: the scheduler state alone."""

    def __init__(self, watched: TrainingAwareDataSparsity) -> None:
        self.watched = watched
        self.states: list[dict[str, Any]] = []

    def on_train_batch_end(self, *args: Any) -> None:
        if self.watched.data_scheduler is not None and not self.states:
            self.states.append(copy.deepcopy(self.watched.data_scheduler.state_dict()))


def test_a_checkpoint_from_the_first_epoch_resumes(tmp_path: Path) -> None:
    aware = training_aware()
    keep = KeepSchedulerState(aware)
    steps = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}-{step}",
                            every_n_train_steps=1, save_top_k=-1)
    trainer(tmp_path, [aware, keep, steps], enable_checkpointing=True).fit(
        TinyModule(), loader()
    )
    ckpt = tmp_path / "ckpt" / "epoch=0-step=1.ckpt"  # after 1 of the first epoch's 3 steps
    assert stored_state(ckpt) == {"epoch": 0, "data_sparsifier_state_dict": None,
                                  "data_scheduler_state_dict": None}
    # a checkpoint in the format fsparse wrote before: scheduler state but no sparsifier
    legacy = torch.load(ckpt, weights_only=True)
    key = next(k for k in legacy["callbacks"] if "TrainingAwareDataSparsity" in k)
    legacy["callbacks"][key]["data_scheduler_state_dict"] = keep.states[0]
    torch.save(legacy, tmp_path / "legacy.ckpt")

    for path in (ckpt, tmp_path / "legacy.ckpt"):
        resumed = training_aware()
        trainer(tmp_path, [resumed]).fit(TinyModule(seed=7), loader(), ckpt_path=path)
        assert resumed.epoch == EPOCHS
        assert resumed.data_scheduler is not None
        assert resumed.data_scheduler.last_epoch == aware.data_scheduler.last_epoch  # type: ignore[union-attr]
        assert levels(resumed) == levels(aware) == dict.fromkeys(NAMES, BASE * GAMMA**EPOCHS)
        assert resumed.sparsity["overall"] == BASE * GAMMA ** (EPOCHS - 1)


def test_resuming_from_the_final_checkpoint_restores_the_results(tmp_path: Path) -> None:
    aware = training_aware()
    last = ModelCheckpoint(dirpath=tmp_path, filename="last")
    trainer(tmp_path, [aware, last], enable_checkpointing=True).fit(TinyModule(), loader())
    assert aware.sparsified is not None and aware.data_sparsifier is not None

    resumed = training_aware()
    trainer(tmp_path, [resumed]).fit(
        TinyModule(seed=7), loader(), ckpt_path=tmp_path / "last.ckpt"
    )  # nothing left to train: Lightning runs no train hook
    assert resumed.sparsified is not None and resumed.data_scheduler is not None
    assert resumed.epoch == EPOCHS
    assert resumed.data_scheduler.last_epoch == EPOCHS
    assert resumed.sparsity == aware.sparsity and resumed.sparsity
    assert levels(resumed) == levels(aware)
    sparse = dict(resumed.sparsified.named_parameters())
    for name, value in aware.sparsified.named_parameters():
        assert torch.equal(sparse[name], value), name
        mask = resumed.data_sparsifier.get_mask(_get_valid_name(name))  # type: ignore[union-attr]
        assert torch.equal(mask, aware.data_sparsifier.get_mask(_get_valid_name(name)))
    with pytest.raises(ValueError, match="squashed"):  # squashed, as after a full fit
        resumed.data_sparsifier.get_data("0_weight")  # type: ignore[union-attr]


# -- hooks called by hand, as PyTorch's own tests of these callbacks do ---------------


class HandModule(pl.LightningModule):
    """Never attached to a Trainer (torch.ao's test ``DummyLightningModule``)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(100, 128, bias=False), nn.ReLU(),
                                   nn.Linear(128, 16, bias=False))


def test_hooks_called_by_hand_with_a_stand_in_trainer() -> None:
    """torch.ao's tests pass ``42`` as the trainer: no ``loggers``, no ``world_size``."""
    args = {"sparsity_level": 0.5, "sparse_block_shape": (1, 4), "zeros_per_block": 4}
    module = HandModule()
    post = PostTrainingDataSparsity(DataNormSparsifier, args)
    post.on_fit_end(42, module)  # type: ignore[arg-type]
    assert post.data_sparsifier is not None and post.sparsity["overall"] == 0.5

    aware = TrainingAwareDataSparsity(DataNormSparsifier, args, StepSLScheduler,
                                      {"gamma": 2, "step_size": 1})
    aware.on_train_start(42, module)  # type: ignore[arg-type]
    assert aware.data_sparsifier is not None and aware.data_scheduler is not None
    assert isinstance(aware.data_scheduler, StepSLScheduler)
    assert aware.data_scheduler.gamma == 2 and aware.data_scheduler.step_size == 1
    for _ in range(3):
        aware.on_train_epoch_start(42, module)  # type: ignore[arg-type]
        for param in module.model.parameters():  # the "training" of torch.ao's test
            param.data = param + 1
        aware.on_train_epoch_end(42, module)  # type: ignore[arg-type]
        scheduler = aware.data_scheduler
        assert isinstance(scheduler, StepSLScheduler)
        last = scheduler.get_last_param()
        for name, _ in module.model.named_parameters():
            valid = _get_valid_name(name)
            mask = aware.data_sparsifier.get_mask(valid)
            assert float(1.0 - mask.float().mean()) > 0
            base = scheduler.base_param[valid]
            assert base is not None
            assert math.log(last[valid]) == math.log(base * scheduler.gamma**scheduler.last_epoch)
    aware.on_train_end(42, module)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="squashed"):
        aware.data_sparsifier.get_data("0_weight")


# -- bad checkpoints -------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_state(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp_path = tmp_path_factory.mktemp("good")
    last = ModelCheckpoint(dirpath=tmp_path, filename="last")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="lightning")
        trainer(tmp_path, [training_aware(), last], max_epochs=1,
                enable_checkpointing=True).fit(TinyModule(), loader())
    return stored_state(tmp_path / "last.ckpt")


def _with_scheduler(good: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**good, "data_scheduler_state_dict": {**good["data_scheduler_state_dict"], **changes}}


def _with_mask(good: dict[str, Any], mask: torch.Tensor) -> dict[str, Any]:
    state = copy.deepcopy(good)
    state["data_sparsifier_state_dict"]["state"]["0_weight"]["mask"] = mask
    return state


def _bad_states(good: dict[str, Any]) -> list[tuple[dict[str, Any], type, str]]:
    scheduler = good["data_scheduler_state_dict"]
    return [
        ({**good, "epoch": True}, TypeError, "epoch"),
        ({**good, "epoch": 1.5}, TypeError, "epoch"),
        ({**good, "epoch": 10**400}, ValueError, "epoch"),
        (_with_scheduler(good, data_sparsifier=None), ValueError, "data_sparsifier"),
        (_with_scheduler(good, last_epoch="one"), TypeError, "last_epoch"),
        (_with_scheduler(good, last_epoch=10**400), ValueError, "last_epoch"),
        (_with_scheduler(good, base_param=dict.fromkeys(scheduler["base_param"], "x")),
         TypeError, "scheduler"),
        ({**good, "data_scheduler_state_dict": {"last_epoch": 1}}, ValueError, "missing"),
        ({**good, "data_scheduler_state_dict": [1]}, TypeError, "scheduler"),
        ({**good, "data_scheduler_state_dict": None}, ValueError, "both"),
        ({**good, "data_sparsifier_state_dict": {"state": {}}}, TypeError, "_container"),
        (_with_mask(good, torch.ones(32, 8, dtype=torch.complex64)), TypeError, "mask"),
        (_with_mask(good, torch.ones(3, 3)), ValueError, "shape"),
        (_with_mask(good, torch.ones(32, 8, device="meta")), TypeError, "mask"),
    ]


def test_a_bad_checkpoint_is_refused_up_front_and_changes_nothing(
    good_state: dict[str, Any],
) -> None:
    callback = training_aware()
    before = callback.state_dict()
    for state, error, match in _bad_states(good_state):
        with pytest.raises(error, match=match):
            callback.load_state_dict(state)
        assert callback.state_dict() == before and callback._restored is None
    callback.load_state_dict(copy.deepcopy(good_state))  # the good one still loads
    assert callback.epoch == 1


def test_a_bad_scheduler_state_is_refused_by_fit(
    tmp_path: Path, good_state: dict[str, Any]
) -> None:
    """It used to go through ``__dict__.update`` and crash at the first epoch's end."""
    last = ModelCheckpoint(dirpath=tmp_path, filename="last")
    trainer(tmp_path, [training_aware(), last], max_epochs=1,
            enable_checkpointing=True).fit(TinyModule(), loader())
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=True)
    key = next(k for k in ckpt["callbacks"] if "TrainingAwareDataSparsity" in k)
    ckpt["callbacks"][key]["data_scheduler_state_dict"]["data_sparsifier"] = None
    torch.save(ckpt, tmp_path / "bad.ckpt")
    resumed = training_aware()
    with pytest.raises(ValueError, match="data_sparsifier"):
        trainer(tmp_path, [resumed]).fit(TinyModule(), loader(), ckpt_path=tmp_path / "bad.ckpt")
    assert resumed.epoch == 0 and resumed.data_sparsifier is None


OUT_OF_RANGE = """
import warnings
import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from fsparse.data_scheduler import StepSLScheduler
from fsparse.data_sparsifier import DataNormSparsifier
from fsparse.lightning import TrainingAwareDataSparsity

warnings.filterwarnings("ignore")

class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(16, 8))
    def training_step(self, batch, batch_idx):
        return self.model(batch[0]).square().mean()
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

def callback():
    return TrainingAwareDataSparsity(DataNormSparsifier, {"sparsity_level": 0.5},
                                     StepSLScheduler, {"gamma": 1})

def fit(path=None):
    data = torch.utils.data.TensorDataset(torch.randn(8, 16))
    cb = callback()
    pl.Trainer(max_epochs=1 if path is None else 2, callbacks=[cb, ModelCheckpoint(
        dirpath=".", filename="last")], logger=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", devices=1).fit(
        Tiny(), torch.utils.data.DataLoader(data, batch_size=4), ckpt_path=path)

fit()
ckpt = torch.load("last.ckpt", weights_only=True)
key = next(k for k in ckpt["callbacks"] if "TrainingAwareDataSparsity" in k)
for index in (100, 10**11):  # on the (8, 16) weight: a quiet overwrite, then a segfault
    state = ckpt["callbacks"][key]["data_sparsifier_state_dict"]["state"]["0_weight"]
    state["mask"] = torch.sparse_coo_tensor(torch.tensor([[0], [index]]), torch.ones(1), (8, 16))
    torch.save(ckpt, "bad.ckpt")
    for load in (lambda: fit("bad.ckpt"),
                 lambda: callback().load_state_dict(ckpt["callbacks"][key])):
        try:
            load()
        except ValueError as err:
            print("refused:", str(err)[:80])
"""


def test_a_sparse_mask_with_out_of_range_indices_is_refused(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(OUT_OF_RANGE)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 4, done.stdout
    assert all(line.startswith("refused:") and "mask" in line for line in lines), done.stdout


# -- bad arguments ---------------------------------------------------------------------


def _nested(depth: int = 50_000) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "build",
    [
        lambda v: PostTrainingDataSparsity(v, {}),
        lambda v: PostTrainingDataSparsity(DataNormSparsifier, v),
        lambda v: TrainingAwareDataSparsity(DataNormSparsifier, {}, v, {}),
        lambda v: TrainingAwareDataSparsity(DataNormSparsifier, {}, StepSLScheduler, v),
        lambda v: TrainingAwareDataSparsity(DataNormSparsifier, {}, StepSLScheduler,
                                            {"gamma": v}),
        lambda v: training_aware().load_state_dict(v),
        lambda v: training_aware().load_state_dict(
            {"epoch": v, "data_sparsifier_state_dict": None, "data_scheduler_state_dict": None}
        ),
        lambda v: training_aware().load_state_dict(
            {"epoch": 1, "data_sparsifier_state_dict": v, "data_scheduler_state_dict": v}
        ),
    ],
)
def test_nested_and_huge_arguments_give_short_errors(build: Any) -> None:
    """Messages bound the value they show; deep nesting is no RecursionError."""
    for value in (_nested(), list(range(10**6))):
        with pytest.raises((ValueError, TypeError)) as info:
            build(value)
        assert len(str(info.value)) < 2000
