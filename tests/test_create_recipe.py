"""fsparse.create recipes as data: variables, template rules, modifiers, YAML, schedules."""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import pytest
import yaml

from fsparse.create import (
    ConstantPruning,
    Distillation,
    EpochRange,
    GradualPruning,
    LearningRateFunction,
    Quantization,
    Recipe,
    RecipeVariables,
    create_recipe,
    load_recipe,
)
from fsparse.create.recipe_variables import to_variables
from fsparse.create.schedules import (
    first_step,
    learning_rate,
    mask_update_due,
    phase,
    pruning_level,
    pruning_steps,
    qat_flags,
)

# ----- RecipeVariables -----


def test_variable_defaults() -> None:
    v = RecipeVariables()
    assert (v.num_epochs, v.init_lr, v.final_lr, v.target) == (20.0, 1e-3, 1e-7, None)
    assert (v.sparsity, v.mask_type, v.global_sparsity) == (0.8, "unstructured", None)
    assert (v.hardness, v.temperature) == (0.5, 2.0)


def test_targets_pick_their_mask_type() -> None:
    assert RecipeVariables(target="vnni").mask_type == "block4"
    assert RecipeVariables(target="vnni").sparsity == 0.8
    trt = RecipeVariables(target="tensorrt")
    assert (trt.mask_type, trt.sparsity) == ("2:4", 0.5)
    assert RecipeVariables(mask_type="1:4").sparsity == 0.75


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_epochs": 0}, "num_epochs"),
        ({"num_epochs": -3.0}, "num_epochs"),
        ({"num_epochs": float("nan")}, "num_epochs"),
        ({"num_epochs": "20"}, "num_epochs"),
        ({"init_lr": -1.0}, "init_lr"),
        ({"final_lr": float("inf")}, "final_lr"),
        ({"target": "gpu"}, "target"),
        ({"sparsity": 0.0}, "sparsity"),
        ({"sparsity": 1.0}, "sparsity"),
        ({"sparsity": 1.5}, "sparsity"),
        ({"sparsity": True}, "sparsity"),
        ({"mask_type": "block8"}, "mask_type"),
        ({"mask_type": "4:4"}, "mask_type"),
        ({"mask_type": "2:4", "sparsity": 0.8}, "sparsity"),
        ({"global_sparsity": 1}, "global_sparsity"),
        ({"hardness": 1.5}, "hardness"),
        ({"temperature": 0.0}, "temperature"),
    ],
)
def test_bad_variable_names_its_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RecipeVariables(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("target", "mask_type"), [("tensorrt", "unstructured"), ("vnni", "2:4"), ("tensorrt", "block4")]
)
def test_target_mask_type_mismatch(target: str, mask_type: str) -> None:
    with pytest.raises(ValueError, match=f"target {target!r} requires mask_type"):
        RecipeVariables(target=target, mask_type=mask_type)


def test_variables_from_dict_and_unknown_keys() -> None:
    assert to_variables({"sparsity": 0.5}).sparsity == 0.5
    with pytest.raises(ValueError, match="unknown keys \\['sparsty'\\]"):
        to_variables({"sparsty": 0.5})
    with pytest.raises(TypeError, match="recipe_variables"):
        to_variables([("sparsity", 0.5)])  # type: ignore[arg-type]


# ----- the default recipe -----


@pytest.mark.parametrize(("epochs", "qat"), [(20.0, 5.0), (15.0, 5.0), (14.0, 2.0), (6.0, 2.0)])
def test_default_recipe_rules(epochs: float, qat: float) -> None:
    v = RecipeVariables(num_epochs=epochs, sparsity=0.6, init_lr=0.01, final_lr=0.001)
    recipe = create_recipe(v, distillation=True, lr="cosine")
    (prune,) = recipe.of_type(GradualPruning)
    (quant,) = recipe.of_type(Quantization)
    (lr,) = recipe.of_type(LearningRateFunction)
    (dist,) = recipe.of_type(Distillation)
    assert isinstance(prune, GradualPruning)
    assert (prune.start_epoch, prune.end_epoch) == (0.0, (epochs - qat) / 2)
    assert (prune.init_sparsity, prune.final_sparsity) == (0.05, 0.6)
    assert prune.update_frequency == pytest.approx(prune.end_epoch / 20)
    assert (prune.mask_type, prune.global_sparsity) == ("unstructured", True)
    assert isinstance(quant, Quantization)
    assert quant.start_epoch == epochs - qat
    assert quant.disable_observer_epoch == quant.freeze_bn_stats_epoch == epochs - qat / 2
    assert lr == LearningRateFunction(0.0, epochs, 0.01, 0.001, "cosine")
    assert dist == Distillation(0.0, epochs, 0.5, 2.0)
    assert recipe.max_epochs == epochs and recipe.min_epochs == 0.0


def test_default_recipe_uses_the_variables() -> None:
    # sparsify's template hard-coded 0.05, 0.8 and 1.0 and ignored the variables
    v = RecipeVariables(sparsity=0.03, mask_type="block4", global_sparsity=False, num_epochs=10)
    (prune,) = create_recipe(v, quantization=False).of_type(GradualPruning)
    assert isinstance(prune, GradualPruning)
    assert (prune.init_sparsity, prune.final_sparsity) == (0.03, 0.03)
    assert (prune.mask_type, prune.global_sparsity, prune.end_epoch) == ("block4", False, 5.0)


def test_pruning_options_pick_modifiers() -> None:
    def kinds(**kwargs: object) -> list[str]:
        return [type(m).__name__ for m in create_recipe(**kwargs).modifiers]  # type: ignore[arg-type]

    assert "GradualPruning" in kinds(pruning=True)
    for option in ("constant", "transfer", "sparse-transfer"):
        assert "ConstantPruning" in kinds(pruning=option, quantization=False)
    assert "ConstantPruning" in kinds(pruning=False, quantization=True)
    assert kinds(pruning=False, quantization=False) == ["EpochRange", "LearningRateFunction"]


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("movement", "MovementPruning(start_epoch=0.0, end_epoch=7.5, update_frequency=0.375, "
                     "final_sparsity=0.8, mask_type='unstructured', global_sparsity=False"),
        ("obs", "OBSPruning(start_epoch=0.0, end_epoch=7.5, update_frequency=0.375, "
                "final_sparsity=0.8, num_grads=None, damp=1e-05, block_size=50, "
                "mask_type='unstructured', global_sparsity=True"),
        ("mfac", "MFACPruning(start_epoch=0.0, end_epoch=7.5, update_frequency=0.375, "
                 "final_sparsity=0.8, num_grads=None, damp=1e-05, block_size=2048, "
                 "mask_type='unstructured', global_sparsity=True"),
        ("acdc", "ACDCPruning(start_epoch=1.5, end_epoch=13.5, phase_epochs=0.75, sparsity=0.8, "
                 "mask_type='unstructured', global_sparsity=False, distribution='uniform', "
                 "reset_momentum=True"),
        ("rigl", "RigLPruning(start_epoch=0.0, end_epoch=11.25, update_frequency=0.5625, "
                 "sparsity=0.8, drop_fraction=0.3, distribution='erk', mask_type='unstructured', "
                 "global_sparsity=False, seed=0"),
        ("set", "SETPruning(start_epoch=0.0, end_epoch=11.25, update_frequency=0.5625, "
                "sparsity=0.8, drop_fraction=0.3, distribution='erk', mask_type='unstructured', "
                "global_sparsity=False, seed=0"),
    ],
)
def test_each_pruning_mode_writes_its_default_modifier(option: str, expected: str) -> None:
    # E = 20, qat = 5: E' = 15; pruning over 0..7.5, AC/DC phases of 0.75, RigL/SET to 11.25
    recipe = create_recipe(RecipeVariables(num_epochs=20), pruning=option)
    kinds = [type(m).__name__ for m in recipe.modifiers]
    assert kinds[:2] == ["EpochRange", "LearningRateFunction"] and kinds[3] == "Quantization"
    assert repr(recipe.modifiers[2]).startswith(expected)
    assert Recipe.from_yaml(recipe.to_yaml()) == recipe


@pytest.mark.parametrize(
    ("option", "variables", "match"),
    [
        ("movement", {"global_sparsity": True}, r"global_sparsity=True .*mode 'movement'"),
        ("acdc", {"global_sparsity": True}, r"global_sparsity=True .*mode 'acdc'"),
        ("rigl", {"global_sparsity": True}, r"global_sparsity=True .*mode 'rigl'"),
        ("set", {"target": "tensorrt"}, r"mask_type '2:4' .*mode 'set'.*target 'tensorrt'"),
        ("rigl", {"mask_type": "1:4"}, r"mask_type '1:4' .*mode 'rigl'"),
    ],
)
def test_a_mode_refuses_what_it_cannot_honour(
    option: str, variables: dict[str, object], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        create_recipe(RecipeVariables(**variables), pruning=option)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pruning": "magnitude"}, "pruning must be one of"),
        ({"pruning": None}, "pruning must be one of"),
        ({"pruning": 1}, "pruning must be one of"),
        ({"quantization": "yes"}, "quantization"),
        ({"lr": "step"}, "lr must be one of"),
        ({"distillation": 1}, "distillation"),
    ],
)
def test_bad_options(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_recipe(**kwargs)  # type: ignore[arg-type]


def test_too_few_epochs_for_qat() -> None:
    with pytest.raises(ValueError, match="num_epochs must be > 2"):
        create_recipe(RecipeVariables(num_epochs=2))
    assert create_recipe(RecipeVariables(num_epochs=2), quantization=False).max_epochs == 2.0


# ----- modifiers and recipes -----


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: EpochRange(2, 1), "EpochRange.end_epoch"),
        (lambda: EpochRange(-1, 1), "EpochRange.start_epoch"),
        (lambda: EpochRange("a", 1), "EpochRange.start_epoch"),
        (lambda: GradualPruning(0, 1, 0, 0.0, 0.5), "update_frequency"),
        (lambda: GradualPruning(0, 1, 0.1, 0.6, 0.5), "init_sparsity"),
        (lambda: GradualPruning(0, 1, 0.1, 0.0, 1.0), "final_sparsity"),
        (lambda: GradualPruning(0, 1, 0.1, 0.0, 0.8, mask_type="2:4"), "final_sparsity"),
        (lambda: GradualPruning(0, 1, 0.1, 0.0, 0.5, mask_type="x"), "mask_type"),
        (lambda: GradualPruning(0, 1, 0.1, 0.0, 0.5, global_sparsity="no"), "global_sparsity"),
        (lambda: GradualPruning(0, 1, 0.1, 0.0, 0.5, params=[]), "params"),
        (lambda: ConstantPruning(0, 1, params="fc.weight"), "params"),
        (lambda: LearningRateFunction(0, 1, 0.1, 0.0, "step"), "lr_func"),
        (lambda: LearningRateFunction(0, 1, -0.1, 0.0), "init_lr"),
        (lambda: LearningRateFunction(0, 1, 0.1, 0.0, cycle_epochs=0), "cycle_epochs"),
        (lambda: Quantization(5, 4, 6), "disable_observer_epoch"),
        (lambda: Quantization(5, 6, 4), "freeze_bn_stats_epoch"),
        (lambda: Distillation(0, 1, hardness=2.0), "hardness"),
        (lambda: Distillation(0, 1, temperature=-1.0), "temperature"),
    ],
)
def test_bad_modifier_names_its_field(build: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()  # type: ignore[operator]


def test_recipe_rules() -> None:
    with pytest.raises(ValueError, match="at least one modifier"):
        Recipe(())
    with pytest.raises(ValueError, match="at most one Quantization"):
        Recipe((Quantization(1, 2, 2), Quantization(1, 2, 2)))
    with pytest.raises(ValueError, match="disjoint"):
        Recipe((ConstantPruning(0, 1), GradualPruning(0, 1, 0.1, 0.0, 0.5, params=["a"])))
    with pytest.raises(ValueError, match="disjoint"):
        Recipe(
            (
                GradualPruning(0, 1, 0.1, 0.0, 0.5, params=["a", "b"]),
                ConstantPruning(0, 1, params=["b"]),
            )
        )
    with pytest.raises(TypeError, match="not a recipe modifier"):
        Recipe(("EpochRange",))  # type: ignore[arg-type]
    ok = Recipe((GradualPruning(0, 1, 0.1, 0.0, 0.5, params=["a"]), ConstantPruning(0, 1, ["b"])))
    assert len(ok.modifiers) == 2


def test_recipe_is_frozen() -> None:
    recipe = create_recipe()
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.modifiers = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.modifiers[0].end_epoch = 3.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"distillation": True, "lr": "cyclic_linear"},
        {"pruning": "constant", "quantization": False},
        {"recipe_variables": RecipeVariables(target="tensorrt", num_epochs=7.5, init_lr=3e-4)},
    ],
)
def test_yaml_round_trip(kwargs: dict[str, object]) -> None:
    variables = kwargs.pop("recipe_variables", None)
    recipe = create_recipe(variables, **kwargs)  # type: ignore[arg-type]
    text = recipe.to_yaml()
    assert Recipe.from_yaml(text) == recipe
    assert yaml.safe_load(text) == recipe.to_dict()
    assert str(recipe) == text


def test_yaml_accepts_hand_written_numbers_and_lists() -> None:
    text = """
modifiers:
  - type: LearningRateFunction
    start_epoch: 0
    end_epoch: 3
    init_lr: 1e-3      # PyYAML reads this as a string; it is accepted as a number
    final_lr: 0
  - type: GradualPruning
    start_epoch: 0
    end_epoch: 2
    update_frequency: 0.5
    init_sparsity: 0
    final_sparsity: 0.5
    params: [fc.weight]
"""
    recipe = load_recipe(text)
    lr, prune = recipe.modifiers
    assert isinstance(lr, LearningRateFunction) and lr.init_lr == 1e-3
    assert isinstance(prune, GradualPruning) and prune.params == ("fc.weight",)
    assert Recipe.from_yaml(recipe.to_yaml()) == recipe


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("modifiers: []", "at least one modifier"),
        ("[1, 2]", "must be a mapping"),
        ("modifiers: {type: EpochRange}", "must be a list"),
        ("version: 2\nmodifiers: []", "version"),
        ("extra: 1\nmodifiers: []", "unknown keys \\['extra'\\]"),
        ("modifiers: [{type: Magic, start_epoch: 0}]", "modifier type must be one of"),
        ("modifiers: [{type: EpochRange, start_epoch: 0}]", "missing keys \\['end_epoch'\\]"),
        ("modifiers: [{type: EpochRange, start_epoch: 0, end_epoch: 1, x: 2}]", "unknown keys"),
        ("modifiers: [3]", "must be a mapping"),
        ("modifiers: [{type: EpochRange, start_epoch: 0, end_epoch: 1]", "not valid YAML"),
        ("!!python/object/apply:os.system ['echo hacked']", "not valid YAML"),
    ],
)
def test_bad_yaml(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Recipe.from_yaml(text)


def test_edit_and_load_from_file(tmp_path: Path) -> None:
    recipe = create_recipe()
    (prune,) = recipe.of_type(GradualPruning)
    edited = Recipe(
        tuple(
            dataclasses.replace(m, final_sparsity=0.5) if m is prune else m
            for m in recipe.modifiers
        )
    )
    path = tmp_path / "recipe.yaml"
    path.write_text(edited.to_yaml())
    for source in (path, str(path), edited.to_yaml(), edited):
        assert load_recipe(source) == edited
    with pytest.raises(ValueError, match="does not exist"):
        load_recipe(str(tmp_path / "missing.yaml"))
    with pytest.raises(ValueError, match=r"must end in \.yaml"):
        load_recipe("recipe.txt")
    with pytest.raises(TypeError, match="recipe must be"):
        load_recipe(3)  # type: ignore[arg-type]


# ----- pure schedule functions -----


def test_first_step() -> None:
    assert [first_step(e, 4) for e in (0.0, 0.25, 0.3, 7.5, 15.0)] == [0, 1, 2, 30, 60]
    assert first_step(0.1 + 0.2, 10) == 3  # float noise does not push it to 4


@pytest.mark.parametrize("lr_func", ["linear", "cosine", "cyclic_linear"])
def test_learning_rate_functions(lr_func: str) -> None:
    m = LearningRateFunction(2, 10, init_lr=1.0, final_lr=0.1, lr_func=lr_func, cycle_epochs=2)
    assert learning_rate(m, 0.0) == 1.0
    assert learning_rate(m, 2.0) == 1.0
    assert learning_rate(m, 10.0) == pytest.approx(0.1)
    assert learning_rate(m, 50.0) == pytest.approx(0.1)
    mid = learning_rate(m, 6.0)
    expected = {
        "linear": 1.0 - 0.9 * 0.5,
        "cosine": 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)),
        "cyclic_linear": 1.0,  # 4 epochs in: a new cycle starts
    }[lr_func]
    assert mid == pytest.approx(expected)
    if lr_func == "cyclic_linear":
        assert learning_rate(m, 3.0) == pytest.approx(1.0 - 0.9 * 0.5)


def test_pruning_steps_and_levels() -> None:
    m = GradualPruning(0, 7.5, 0.375, 0.05, 0.8)
    assert pruning_steps(m, 4) == (0, 2, 15)
    due = [t for t in range(80) if mask_update_due(m, t, 4)]
    assert due == list(range(0, 31, 2))
    levels = [pruning_level(m, t, 4) for t in due]
    assert levels[0] == pytest.approx(0.05) and levels[-1] == pytest.approx(0.8)
    assert all(a < b for a, b in itertools.pairwise(levels))
    # cubic: fast at first, slow at the end
    assert levels[1] - levels[0] > levels[-1] - levels[-2]
    assert pruning_level(m, 79, 4) == pytest.approx(0.8)
    # a tiny span still reaches the final level by its end
    short = GradualPruning(1, 1.5, 1.0, 0.1, 0.5)
    assert pruning_steps(short, 2) == (2, 1, 1)
    assert pruning_level(short, 3, 2) == 0.5
    constant = ConstantPruning(0.5, 3)
    assert [t for t in range(10) if mask_update_due(constant, t, 4)] == [2]


def test_qat_flags_and_phases() -> None:
    q = Quantization(15, 17.5, 17.5)
    assert qat_flags(q, 14.9) == (False, False, False)
    assert qat_flags(q, 15.0) == (True, False, False)
    assert qat_flags(q, 17.5) == (True, True, True)
    assert qat_flags(None, 100.0) == (False, False, False)
    recipe = create_recipe()
    assert [phase(recipe, e) for e in (0.0, 7.4, 7.5, 14.9, 15.0, 19.9, 20.0)] == [
        "pruning", "pruning", "fine-tuning", "fine-tuning", "qat", "qat", "finished"
    ]
