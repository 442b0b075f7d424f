"""The Lightning callbacks in real ``Trainer.fit`` runs (CPU, tiny model, synthetic data)."""

from __future__ import annotations

import csv
import importlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl  # the `test` extra installs it
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning_helpers import (
    BASE,
    BLOCK,
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
from fsparse.data_sparsifier.lightning.callbacks.data_sparsity import (
    PostTrainingDataSparsity as PostTrainingFromTorchAoPath,
)
from fsparse.lightning import PostTrainingDataSparsity, TrainingAwareDataSparsity


def post_training() -> PostTrainingDataSparsity:
    return PostTrainingDataSparsity(
        DataNormSparsifier, {"sparsity_level": 0.5, "sparse_block_shape": BLOCK}
    )


def zeros(tensor: torch.Tensor) -> float:
    return 1.0 - int(tensor.count_nonzero()) / tensor.numel()


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with quiet():
        yield


# -- post-training ---------------------------------------------------------------------


def test_post_training_sparsifies_a_copy_after_fit(tmp_path: Path) -> None:
    module, callback = TinyModule(), post_training()
    trainer(tmp_path, [callback]).fit(module, loader())

    trained = dict(module.model.named_parameters())
    sparse = dict(callback.sparsified.named_parameters())
    sparsifier = callback.data_sparsifier
    assert set(sparse) == set(trained) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    for name, value in sparse.items():
        mask = sparsifier.get_mask(_get_valid_name(name))
        assert zeros(mask) == 0.5, name  # biases too: torch.ao crashes on them
        assert torch.equal(value, trained[name] * mask)  # non-zeros are the trained values
        assert int(trained[name].count_nonzero()) == trained[name].numel()  # model dense
    assert callback.sparsity == {**{n: 0.5 for n in sparse}, "overall": 0.5}
    assert not callback.sparsified.training
    assert callback.sparsified is not module.model
    with pytest.raises(ValueError, match="squashed"):
        sparsifier.get_data("0_weight")


def test_post_training_is_importable_from_the_torch_ao_path() -> None:
    assert PostTrainingFromTorchAoPath is PostTrainingDataSparsity
    assert issubclass(PostTrainingDataSparsity, pl.Callback)


def test_torch_ao_post_training_crashes_on_a_model_with_biases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.ao's own callback in the same fit: its 1-D masks come back as (1, n)."""
    monkeypatch.setitem(sys.modules, "pytorch_lightning", pl)  # it imports pytorch_lightning
    name = "torch.ao.pruning._experimental.data_sparsifier.lightning.callbacks.data_sparsity"
    fresh = name not in sys.modules
    try:
        ao_callbacks = importlib.import_module(name)
    finally:
        if fresh:
            sys.modules.pop(name, None)  # it holds the aliased pytorch_lightning
    from torch.ao.pruning._experimental.data_sparsifier import (
        DataNormSparsifier as AoDataNormSparsifier,
    )

    callback = ao_callbacks.PostTrainingDataSparsity(
        AoDataNormSparsifier, {"sparsity_level": 0.5, "sparse_block_shape": BLOCK}
    )
    with pytest.raises(AssertionError, match="must match x shape"):
        trainer(tmp_path, [callback], max_epochs=1).fit(TinyModule(), loader())


# -- training-aware --------------------------------------------------------------------


class Recorder(pl.Callback):
    """Runs after the sparsity callback: records levels and masks after each epoch."""

    def __init__(self, watched: TrainingAwareDataSparsity) -> None:
        self.watched = watched
        self.levels: list[dict[str, float]] = []
        self.mask_sparsity: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        sparsifier = self.watched.data_sparsifier
        groups = sparsifier.data_groups
        self.levels.append({n: g["sparsity_level"] for n, g in groups.items()})
        self.mask_sparsity.append({n: zeros(sparsifier.get_mask(n)) for n in groups})


def test_training_aware_follows_the_step_schedule(tmp_path: Path) -> None:
    module, callback = TinyModule(), training_aware()
    recorder = Recorder(callback)
    trainer(tmp_path, [callback, recorder]).fit(module, loader())

    names = ["0_weight", "0_bias", "2_weight", "2_bias"]
    assert callback.data_scheduler.gamma == GAMMA and callback.data_scheduler.step_size == 1
    assert len(recorder.levels) == EPOCHS
    for epoch in range(1, EPOCHS + 1):
        # after `epoch` epochs the next level is scheduled, and the masks use the last one
        assert recorder.levels[epoch - 1] == {n: BASE * GAMMA**epoch for n in names}
        assert recorder.mask_sparsity[epoch - 1] == {n: BASE * GAMMA ** (epoch - 1) for n in names}
    assert callback.epoch == EPOCHS
    assert callback.data_scheduler.last_epoch == EPOCHS

    # squashed after fit: the copy holds the masked values of the trained model
    sparsifier = callback.data_sparsifier
    final = BASE * GAMMA ** (EPOCHS - 1)
    for name, value in callback.sparsified.named_parameters():
        with pytest.raises(ValueError, match="squashed"):
            sparsifier.get_data(_get_valid_name(name))
        mask = sparsifier.get_mask(_get_valid_name(name))
        assert zeros(value) == final, name
        assert torch.equal(value, module.model.get_parameter(name).detach() * mask)
    assert callback.sparsity["overall"] == final
    saved = callback.data_sparsifier_state_dict
    assert saved is not None and set(saved["state"]) == set(names)
    for name, value in module.model.named_parameters():  # squashing left the saved data dense
        original = saved["_container"][f"parametrizations.{_get_valid_name(name)}.original"]
        assert torch.equal(original, value.detach())


def test_training_aware_state_dict_is_none_before_the_first_epoch_ends(tmp_path: Path) -> None:
    callback = training_aware()
    seen: list[Any] = []

    class Probe(pl.Callback):
        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            seen.append(callback.data_sparsifier_state_dict)

    trainer(tmp_path, [callback, Probe()], max_epochs=2).fit(TinyModule(), loader())
    assert seen[0] is None and seen[1] is not None


def test_a_reused_callback_starts_each_fit_afresh(tmp_path: Path) -> None:
    callback = training_aware()
    recorder = Recorder(callback)
    for _ in range(2):
        trainer(tmp_path, [callback, recorder], max_epochs=2).fit(TinyModule(), loader())
    assert callback.epoch == 2
    assert recorder.mask_sparsity[2] == recorder.mask_sparsity[0]  # first epoch of each fit
    assert recorder.levels[2:] == recorder.levels[:2]


def test_training_aware_leaves_the_trained_model_dense(tmp_path: Path) -> None:
    module = TinyModule()
    trainer(tmp_path, [training_aware()]).fit(module, loader())
    for name, value in module.model.named_parameters():
        assert int(value.count_nonzero()) == value.numel(), name


# -- checkpoint and resume -------------------------------------------------------------


def final_state(aware: TrainingAwareDataSparsity, post: PostTrainingDataSparsity) -> dict:
    sparsifier = aware.data_sparsifier
    return {
        "masks": {n: sparsifier.get_mask(n).clone() for n in sparsifier.data_groups},
        "levels": {n: g["sparsity_level"] for n, g in sparsifier.data_groups.items()},
        "epoch": aware.epoch,
        "last_epoch": aware.data_scheduler.last_epoch,
        "aware": {n: p.detach().clone() for n, p in aware.sparsified.named_parameters()},
        "post": {n: p.detach().clone() for n, p in post.sparsified.named_parameters()},
    }


def assert_same(left: dict, right: dict) -> None:
    assert left.keys() == right.keys()
    for key in left:
        if isinstance(left[key], dict):
            assert left[key].keys() == right[key].keys(), key
            for name in left[key]:
                a, b = left[key][name], right[key][name]
                same = torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b
                assert same, (key, name)
        else:
            assert left[key] == right[key], key


def test_resumed_fit_ends_like_an_uninterrupted_one(tmp_path: Path) -> None:
    aware, post = training_aware(), post_training()
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}",
                                  every_n_epochs=1, save_top_k=-1)
    trainer(tmp_path, [aware, post, checkpoints], enable_checkpointing=True).fit(
        TinyModule(), loader()
    )
    uninterrupted = final_state(aware, post)
    assert uninterrupted["levels"]["0_weight"] == BASE * GAMMA**EPOCHS
    final = BASE * GAMMA ** (EPOCHS - 1)  # 0.5: the masks are neither all ones nor all zeros
    assert all(zeros(mask) == final for mask in uninterrupted["masks"].values())

    ckpt = tmp_path / "ckpt" / "epoch=0.ckpt"  # saved after the first of the 3 epochs
    stored = torch.load(ckpt, weights_only=True)["callbacks"]
    state = next(v for k, v in stored.items() if "TrainingAwareDataSparsity" in k)
    assert state["epoch"] == 1 and state["data_scheduler_state_dict"]["last_epoch"] == 1

    resumed_aware, resumed_post = training_aware(), post_training()
    trainer(tmp_path, [resumed_aware, resumed_post]).fit(
        TinyModule(seed=123), loader(), ckpt_path=ckpt
    )
    assert_same(final_state(resumed_aware, resumed_post), uninterrupted)

    # control: the same checkpoint without the callback state restarts the schedule
    stripped = torch.load(ckpt, weights_only=True)
    stripped["callbacks"] = {k: v for k, v in stripped["callbacks"].items()
                             if "TrainingAwareDataSparsity" not in k}
    torch.save(stripped, tmp_path / "stripped.ckpt")
    restarted = training_aware()
    trainer(tmp_path, [restarted]).fit(
        TinyModule(seed=123), loader(), ckpt_path=tmp_path / "stripped.ckpt"
    )
    assert restarted.epoch == EPOCHS - 1
    levels = {n: g["sparsity_level"] for n, g in restarted.data_sparsifier.data_groups.items()}
    assert levels != uninterrupted["levels"]


def test_two_training_aware_callbacks_with_different_prefixes(tmp_path: Path) -> None:
    first = training_aware()
    second = TrainingAwareDataSparsity(
        DataNormSparsifier, {"sparsity_level": 0.25, "sparse_block_shape": BLOCK},
        StepSLScheduler, {"gamma": 2}, log_prefix="other",
    )
    assert first.state_key != second.state_key
    checkpoints = ModelCheckpoint(dirpath=tmp_path, filename="last")
    trainer(tmp_path, [first, second, checkpoints], max_epochs=1,
            enable_checkpointing=True).fit(TinyModule(), loader())
    assert (first.sparsity["overall"], second.sparsity["overall"]) == (0.125, 0.25)
    stored = torch.load(tmp_path / "last.ckpt", weights_only=True)["callbacks"]
    assert stored[first.state_key]["epoch"] == stored[second.state_key]["epoch"] == 1
    with pytest.raises(RuntimeError, match="state_key"):  # same prefix: Lightning refuses
        trainer(tmp_path, [training_aware(), training_aware()])


def test_load_state_dict_rejects_malformed_state() -> None:
    callback = training_aware()
    good = callback.state_dict()
    assert good == {"epoch": 0, "data_sparsifier_state_dict": None,
                    "data_scheduler_state_dict": None}
    with pytest.raises(TypeError, match="state_dict must be a dict"):
        callback.load_state_dict([])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="missing the keys"):
        callback.load_state_dict({"epoch": 1})
    with pytest.raises(ValueError, match="epoch"):
        callback.load_state_dict({**good, "epoch": -1})
    with pytest.raises(ValueError, match="both"):  # epoch 0 may: a first-epoch checkpoint
        callback.load_state_dict(
            {**good, "epoch": 1, "data_scheduler_state_dict": {"last_epoch": 1}}
        )
    assert callback.state_dict() == good  # unchanged


# -- logging ---------------------------------------------------------------------------


def test_sparsity_goes_to_the_csv_logger(tmp_path: Path) -> None:
    aware, post = training_aware(), post_training()
    logger = CSVLogger(tmp_path, name="logs")
    trainer(tmp_path, [aware, post], logger=logger).fit(TinyModule(), loader())

    with open(Path(logger.log_dir) / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    params = ["0.weight", "0.bias", "2.weight", "2.bias", "overall"]
    for prefix in ("sparsity", "post_training_sparsity"):
        assert {f"{prefix}/{p}" for p in params} <= set(rows[0]), prefix
    per_epoch = [float(r["sparsity/overall"]) for r in rows if r["sparsity/overall"]]
    assert per_epoch == [BASE * GAMMA**e for e in range(EPOCHS)]  # k/8 is exact in float32
    post_rows = [r for r in rows if r["post_training_sparsity/overall"]]
    assert len(post_rows) == 1
    assert {p: float(post_rows[0][f"post_training_sparsity/{p}"]) for p in params} == (
        post.sparsity
    )


# -- bad input -------------------------------------------------------------------------


def test_constructor_errors() -> None:
    args = {"sparsity_level": 0.5}
    with pytest.raises(TypeError, match="data_sparsifier_class"):
        PostTrainingDataSparsity(DataNormSparsifier(), args)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="data_sparsifier_class"):
        PostTrainingDataSparsity(nn.Linear, args)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="data_sparsifier_args"):
        PostTrainingDataSparsity(DataNormSparsifier, [("sparsity_level", 0.5)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="data_list"):
        PostTrainingDataSparsity(DataNormSparsifier, {"data_list": []})
    with pytest.raises(TypeError, match="sparsity_levl"):  # checked now, not after training
        PostTrainingDataSparsity(DataNormSparsifier, {"sparsity_levl": 0.5})
    with pytest.raises(TypeError, match="log_prefix"):
        PostTrainingDataSparsity(DataNormSparsifier, args, log_prefix="")
    with pytest.raises(TypeError, match="log_prefix"):
        TrainingAwareDataSparsity(
            DataNormSparsifier, args, StepSLScheduler, {}, log_prefix=None  # type: ignore[arg-type]
        )
    with pytest.raises(TypeError, match="data_scheduler_class"):
        TrainingAwareDataSparsity(DataNormSparsifier, args, dict, {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="data_sparsifier"):
        TrainingAwareDataSparsity(
            DataNormSparsifier, args, StepSLScheduler, {"data_sparsifier": None}
        )
    with pytest.raises(ValueError, match="step_size"):  # checked now, not at train start
        TrainingAwareDataSparsity(DataNormSparsifier, args, StepSLScheduler, {"step_size": 0})


def test_a_module_without_model_attribute_is_rejected(tmp_path: Path) -> None:
    class NoModel(TinyModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = self.model
            del self.model

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.mse_loss(self.net(x), y)

    with pytest.raises(TypeError, match="`model` attribute"):
        trainer(tmp_path, [training_aware()], max_epochs=1).fit(NoModel(), loader())


# -- imports ---------------------------------------------------------------------------

IMPORT_SCENARIOS = """
import sys, types
import fsparse, fsparse.data_sparsifier, fsparse.data_scheduler
from fsparse.data_sparsifier import DataNormSparsifier

def fresh_callbacks(blocked, fake_pytorch_lightning):
    for name in [n for n in sys.modules if "lightning" in n]:
        del sys.modules[name]
    sys.modules.update(dict.fromkeys(blocked))
    if fake_pytorch_lightning:  # a second, distinct Lightning
        fake = types.ModuleType("pytorch_lightning")
        fake.Callback = type("Callback", (), {"__module__": "pytorch_lightning"})
        sys.modules["pytorch_lightning"] = fake
    import fsparse.lightning as module
    return module

# 1. no Lightning at all: importing works, constructing says how to install
module = fresh_callbacks(["lightning", "lightning.pytorch", "pytorch_lightning"], False)
from fsparse.data_sparsifier.lightning.callbacks._data_sparstity_utils import _get_valid_name
assert _get_valid_name("a.b") == "a_b"
for make in (lambda: module.PostTrainingDataSparsity(DataNormSparsifier, {}),
             lambda: module.TrainingAwareDataSparsity(DataNormSparsifier, {}, None, {})):
    try:
        make()
    except ImportError as err:
        print("ImportError:", err)

# 2. only pytorch_lightning, 3. both: the callbacks subclass every installed Callback
for blocked in (["lightning", "lightning.pytorch"], []):
    cls = fresh_callbacks(blocked, True).TrainingAwareDataSparsity
    print(sorted(c.__module__ + "." + c.__name__ for c in cls.__mro__ if c.__name__ == "Callback"))
"""


def test_imports_with_no_lightning_pytorch_lightning_only_or_both() -> None:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(IMPORT_SCENARIOS)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 4, done.stdout
    for line in lines[:2]:
        assert line.startswith("ImportError:") and "pip install fsparse[lightning]" in line
    assert lines[2] == repr(["pytorch_lightning.Callback"])
    assert lines[3] == repr(
        ["lightning.pytorch.callbacks.callback.Callback", "pytorch_lightning.Callback"]
    )
