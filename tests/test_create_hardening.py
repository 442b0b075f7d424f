"""fsparse.create at its doors: hostile recipes, checkpoints and arguments (issue 10)."""

from __future__ import annotations

import copy
import io
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.ao.quantization as tq
import torch.nn.functional as F
from torch import nn

from fsparse import create
from fsparse.create import (
    EpochRange,
    GradualPruning,
    Recipe,
    RecipeManager,
    RecipeVariables,
    load_recipe,
)
from fsparse.create.modifiers import modifier_from_dict
from fsparse.create.recipe_variables import to_variables

MESSAGE_LIMIT = 2000  # every error message stays short, whatever the input


def bomb(levels: int = 6) -> str:
    """A "billion laughs" recipe: ``10**levels`` strings from a few hundred bytes."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join([*lines, f"modifiers: *a{levels - 1}"])


def nested(depth: int = 50_000) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                         nn.Linear(32, 4))


def _fake_quants(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, tq.FakeQuantizeBase)]


# ----- recipes from YAML -----


@pytest.mark.parametrize(
    "read",
    [
        Recipe.from_yaml,
        load_recipe,
        lambda text: create.initialize(
            _model(), torch.optim.SGD(_model().parameters(), lr=0.1), 2, recipe=text
        ),
    ],
    ids=["from_yaml", "load_recipe", "initialize"],
)
def test_an_alias_bomb_is_refused_with_a_short_message(read: Any) -> None:
    text = bomb()
    assert len(text) < 600
    with pytest.raises(ValueError, match="anchors and aliases") as info:
        read(text)
    assert len(str(info.value)) < MESSAGE_LIMIT


def test_an_alias_bomb_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb())
    for source in (path, str(path)):
        with pytest.raises(ValueError, match="anchors and aliases"):
            load_recipe(source)


def test_an_oversize_recipe_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * (2 << 20))
    with pytest.raises(ValueError, match="over") as info:
        load_recipe(path)
    assert len(str(info.value)) < MESSAGE_LIMIT


@pytest.mark.parametrize("text", ["[" * 50_000, "a:\n" + "".join(" " * i + "- \n" for i in
                                                                  range(1, 200))])
def test_deep_nesting_gives_value_error(text: str) -> None:
    with pytest.raises(ValueError) as info:
        Recipe.from_yaml(text)
    assert len(str(info.value)) < MESSAGE_LIMIT


# ----- recipes and variables from Python objects -----


@pytest.mark.parametrize(
    "build",
    [
        lambda v: Recipe.from_dict(v),
        lambda v: Recipe.from_dict({"modifiers": v}),
        lambda v: Recipe.from_dict({"modifiers": [v]}),
        lambda v: Recipe.from_dict({"version": v, "modifiers": []}),
        lambda v: modifier_from_dict({"type": v}),
        lambda v: EpochRange(v, 1),
        lambda v: GradualPruning(0, 1, 0.1, 0.0, 0.5, params=v),
        lambda v: GradualPruning(0, 1, 0.1, 0.0, 0.5, mask_type=v),
        lambda v: GradualPruning(0, 1, 0.1, 0.0, 0.5, global_sparsity=v),
        lambda v: create.LearningRateFunction(0, 1, 0.1, 0.0, lr_func=v),
        lambda v: RecipeVariables(sparsity=v),
        lambda v: RecipeVariables(target=v),
        lambda v: RecipeVariables(mask_type=v),
        lambda v: RecipeVariables(global_sparsity=v),
        lambda v: create.create_recipe(pruning=v),
        lambda v: create.create_recipe(lr=v),
        lambda v: create.create_recipe(quantization=v),
    ],
)
def test_deeply_nested_and_huge_values_give_short_errors(build: Any) -> None:
    for value in (nested(), list(range(10**6)), "x" * 10**6):
        with pytest.raises((ValueError, TypeError)) as info:
            build(value)
        assert len(str(info.value)) < MESSAGE_LIMIT


@pytest.mark.parametrize(
    "build",
    [
        lambda: RecipeVariables(num_epochs=10**400),
        lambda: RecipeVariables(sparsity=10**400),
        lambda: EpochRange(0, 10**400),
        lambda: EpochRange(0, 1e300),  # finite, but epoch * steps_per_epoch overflows
        lambda: create.LearningRateFunction(0, 1, 10**400, 0.0),
        lambda: GradualPruning(0, 1, 1e300, 0.0, 0.5),
        lambda: RecipeVariables(target=["vnni"]),  # type: ignore[arg-type]  # was "unhashable"
        lambda: RecipeVariables(mask_type="1" * 5000 + ":" + "2" * 5000),
        lambda: to_variables({1: 2, "a": 3}),  # type: ignore[dict-item]  # was "'<' not supported"
        lambda: modifier_from_dict({"type": "EpochRange", "start_epoch": 0, "end_epoch": 1,
                                    1: 2, "b": 3}),  # type: ignore[dict-item]
        lambda: Recipe.from_dict({1: 2, "modifiers": []}),
        lambda: Recipe.from_dict({"version": torch.ones(2), "modifiers": []}),
        lambda: RecipeManager(Recipe((EpochRange(0, 1e9),)), _model(), 10**400),
        lambda: RecipeManager(Recipe((EpochRange(0, 1),)), _model(), 2**40),
    ],
)
def test_leaked_errors_become_value_errors(build: Any) -> None:
    with pytest.raises(ValueError) as info:
        build()
    assert len(str(info.value)) < MESSAGE_LIMIT


def test_values_that_only_failed_inside_torch_are_refused_up_front() -> None:
    """Found by fuzzing: an LR past float32 crashed in SGD (RuntimeError), a huge KD
    temperature in the loss (OverflowError), a huge epoch in the manager's views."""
    for build in (
        lambda: create.LearningRateFunction(0, 1, 1e308, 0.0),
        lambda: create.LearningRateFunction(0, 1, 0.1, 1e308),
        lambda: RecipeVariables(init_lr=1e308),
        lambda: create.Distillation(0, 1, temperature=1e308),
        lambda: RecipeVariables(temperature=1e308),
    ):
        with pytest.raises(ValueError):
            build()
    manager, _ = create.initialize(_model(), torch.optim.SGD(_model().parameters(), lr=1e-3), 2)
    for view in (manager.target_sparsity, manager.phase, manager.learning_rate,
                 manager.qat_active):
        with pytest.raises(ValueError, match="epoch"):
            view(1e308)
        with pytest.raises(TypeError, match="epoch"):
            view("soon")  # type: ignore[arg-type]


# ----- manager checkpoints -----

# QAT from step 4, the self-teacher (a copy of the QAT model) at step 6, of 8 steps.
LATE_TEACHER = """
modifiers:
- {type: EpochRange, start_epoch: 0, end_epoch: 4}
- {type: GradualPruning, start_epoch: 0, end_epoch: 1, update_frequency: 0.5,
   init_sparsity: 0.05, final_sparsity: 0.5}
- {type: Quantization, start_epoch: 2, disable_observer_epoch: 3, freeze_bn_stats_epoch: 3}
- {type: Distillation, start_epoch: 3, end_epoch: 4}
"""


def _run(steps: int, seed: int = 0) -> tuple[nn.Module, RecipeManager, Any]:
    torch.manual_seed(seed)
    model = _model()
    manager, opt = create.initialize(
        model, torch.optim.SGD(model.parameters(), lr=1e-3), 2, recipe=LATE_TEACHER
    )
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(8, 16, generator=gen), torch.randint(0, 4, (8,), generator=gen)
        out = model(x)
        loss = manager.loss_update(F.cross_entropy(out, y), student_outputs=out, student_inputs=x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, manager, opt


@pytest.fixture(scope="module")
def saved() -> dict[str, Any]:
    model, manager, _ = _run(7)
    buffer = io.BytesIO()
    torch.save({"manager": manager.state_dict(), "model": model.state_dict()}, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)  # type: ignore[no-any-return]


def _unchanged(manager: RecipeManager) -> None:
    assert manager.step == 0 and manager.teacher is None
    assert not _fake_quants(manager.model)
    assert all(bool(m.all()) for m in manager.masks.values())


def test_a_late_self_teacher_round_trips(saved: dict[str, Any]) -> None:
    _, fresh, _ = _run(0, seed=5)
    fresh.load_state_dict(copy.deepcopy(saved["manager"]))
    fresh.model.load_state_dict(saved["model"])
    assert fresh.step == 7 and _fake_quants(fresh.model)
    teacher = fresh.teacher
    assert teacher is not None and _fake_quants(teacher)  # taken after QAT, as in the run
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, saved["manager"]["teacher"][key]), key


def test_a_sparse_coo_mask_loads_like_the_dense_one(saved: dict[str, Any]) -> None:
    state = copy.deepcopy(saved["manager"])
    state["masks"] = {n: m.to_sparse_coo() for n, m in state["masks"].items()}
    _, fresh, _ = _run(0)
    fresh.load_state_dict(state)
    for name, mask in saved["manager"]["masks"].items():
        assert torch.equal(fresh.masks[name], mask), name


def _bad_states(good: dict[str, Any]) -> list[tuple[dict[str, Any], type, str]]:
    teacher = good["teacher"]
    some_mask = next(iter(good["masks"]))
    masks = good["masks"]

    def with_mask(mask: torch.Tensor) -> dict[str, Any]:
        return {**good, "masks": {**masks, some_mask: mask}}

    shape = masks[some_mask].shape
    return [
        ({**good, "version": 99}, ValueError, "version"),
        ({**good, "version": True}, ValueError, "version"),
        ({**good, "version": torch.tensor(1.0)}, ValueError, "version"),  # was accepted
        ({**good, "version": torch.ones(2)}, ValueError, "version"),  # was RuntimeError
        ({**good, "steps_per_epoch": torch.ones(2)}, ValueError, "steps_per_epoch"),
        ({**good, "recipe": bomb()}, ValueError, "anchors and aliases"),
        ({**good, "recipe": "[" * 50_000}, ValueError, "recipe"),
        ({**good, "step": 10**400}, ValueError, "step"),
        ({**good, "finalized": "no"}, ValueError, "finalized"),
        ({**good, "teacher": {"junk": torch.ones(1)}}, ValueError, "teacher"),
        ({**good, "teacher": {**teacher, next(iter(teacher)): torch.ones(1)}}, ValueError,
         "teacher"),
        ({**good, "teacher": {k: 1.0 for k in teacher}}, TypeError, "teacher"),
        ({**good, "teacher": [1, 2]}, TypeError, "teacher"),
        (with_mask(torch.ones(shape, dtype=torch.complex64)), TypeError, "masks"),
        (with_mask(torch.ones(shape, device="meta")), TypeError, "masks"),
        (with_mask(torch.ones(shape).to_sparse_csr()), TypeError, "masks"),
        (with_mask(torch.ones(3, 3, dtype=torch.bool)), ValueError, "shape"),
        ({**good, "masks": {**masks, "extra.weight": masks[some_mask]}}, ValueError, "masks"),
    ]


def test_a_bad_checkpoint_changes_nothing(saved: dict[str, Any]) -> None:
    """Every check runs before QAT or the teacher touch the model (issue 10, section 2)."""
    good = saved["manager"]
    _, fresh, _ = _run(0)
    for state, error, match in _bad_states(good):
        with pytest.raises(error, match=match) as info:
            fresh.load_state_dict(state)
        assert len(str(info.value)) < MESSAGE_LIMIT
        _unchanged(fresh)
    bad_keys = {**good, 1: 2}
    with pytest.raises(ValueError, match="must have keys"):
        fresh.load_state_dict(bad_keys)
    fresh.load_state_dict(copy.deepcopy(good))  # still loadable after all that
    assert fresh.step == 7


OUT_OF_RANGE = """
import io, torch
from fsparse import create
from torch import nn
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
opt = torch.optim.SGD(model.parameters(), lr=1e-3)
manager, opt = create.initialize(model, opt, 2, recipe_variables={"num_epochs": 4})
state = manager.state_dict()
for index in (100, 10**11):
    indices = torch.tensor([[0], [index]])
    state["masks"]["0.weight"] = torch.sparse_coo_tensor(indices, torch.ones(1), (8, 16))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    try:
        manager.load_state_dict(torch.load(buffer, weights_only=True))
    except ValueError as err:
        print("refused:", str(err)[:80])
"""


def test_a_sparse_mask_with_out_of_range_indices_is_refused() -> None:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(OUT_OF_RANGE)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("refused:") for line in lines), done.stdout


# ----- the numbers a user reads -----


def _train(model: nn.Module, opt: Any, steps: int) -> None:
    gen = torch.Generator().manual_seed(3)
    for _ in range(steps):
        loss = model(torch.randn(8, 16, generator=gen)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_target_sparsity_reports_each_layers_level_under_global_pruning() -> None:
    model = _model()
    weights = {f"{i}.weight": model.get_parameter(f"{i}.weight") for i in (0, 2, 4)}
    with torch.no_grad():  # layers of very different scales: global levels differ a lot
        weights["0.weight"].mul_(4.0)
        weights["4.weight"].mul_(0.25)
    manager, opt = create.initialize(
        model, torch.optim.SGD(model.parameters(), lr=1e-3), 2, quantization=False,
        recipe_variables={"num_epochs": 4, "sparsity": 0.6},
    )
    _train(model, opt, 8)  # pruning ends at epoch 2
    targets, real = manager.target_sparsity(), manager.sparsity()
    assert set(targets) == set(real) == set(weights)
    assert max(real.values()) - min(real.values()) > 0.3
    for name, level in real.items():
        assert targets[name] == pytest.approx(level, abs=1e-6), name
    total = sum(w.numel() for w in weights.values())

    def overall(levels: dict[str, float]) -> float:
        return sum(levels[n] * w.numel() for n, w in weights.items()) / total

    assert overall(targets) == pytest.approx(0.6, abs=1 / total)
    # the first update's overall level, split the same way
    assert overall(manager.target_sparsity(0.0)) == pytest.approx(0.05, abs=1 / total)


def test_target_sparsity_layer_by_layer_is_the_modifiers_level() -> None:
    model = _model()
    manager, _ = create.initialize(
        model, torch.optim.SGD(model.parameters(), lr=1e-3), 2, quantization=False,
        recipe_variables={"num_epochs": 4, "sparsity": 0.6, "global_sparsity": False},
    )
    assert manager.target_sparsity(3.0) == dict.fromkeys(["0.weight", "2.weight", "4.weight"],
                                                         pytest.approx(0.6))


def _lr_records(caplog: pytest.LogCaptureFixture, lr: float, **kwargs: Any) -> list[Any]:
    model = _model()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fsparse.create"):
        create.initialize(model, torch.optim.SGD(model.parameters(), lr=lr), 2,
                          quantization=False, **kwargs)
    return [r for r in caplog.records if r.name == "fsparse.create"]


def test_initialize_says_once_that_the_recipe_overrides_the_lr(
    caplog: pytest.LogCaptureFixture,
) -> None:
    records = _lr_records(caplog, 0.1)
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    message = records[0].getMessage()
    assert "lr=0.1" in message and "0.001 -> 1e-07" in message and "not used" in message

    records = _lr_records(caplog, 1e-3)  # the same start: said, but not as a warning
    assert len(records) == 1 and records[0].levelno == logging.INFO

    no_lr = "modifiers: [{type: EpochRange, start_epoch: 0, end_epoch: 1}]"
    assert _lr_records(caplog, 0.1, recipe=no_lr) == []
