"""fsparse.create driving real (tiny) training loops on random data."""

from __future__ import annotations

import copy
import dataclasses
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.ao.nn.intrinsic.qat as intrinsic_qat
import torch.ao.quantization as tq
import torch.nn.functional as F
from torch import nn

import fsparse
from fsparse import create
from fsparse.create import GradualPruning, Recipe, RecipeManager, RecipeOptimizer, RecipeScaler


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        nn.ReLU(),
        nn.Conv2d(cin, cout, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class MobileNetish(nn.Module):
    """Stem conv, two depthwise-separable blocks, pooling, a linear head."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        )
        self.blocks = nn.Sequential(_block(16, 32, 1), _block(32, 64, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)
    )


def _batch(step: int, image: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(8, 3, 16, 16, generator=gen) if image else torch.randn(8, 16, generator=gen)
    return x, torch.randint(0, 10 if image else 4, (8,), generator=gen)


def _train(
    model: nn.Module,
    optimizer: Any,
    manager: RecipeManager,
    steps: int,
    image: bool = True,
    after: Callable[[], None] | None = None,
) -> None:
    model.train()
    for _ in range(steps):
        x, y = _batch(manager.step, image)
        out = model(x)
        loss = manager.loss_update(F.cross_entropy(out, y), student_outputs=out, student_inputs=x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if after is not None:
            after()


def _weights(model: nn.Module) -> dict[str, nn.Parameter]:
    return fsparse.create.masks.prunable_parameters(model)


def _overall_sparsity(model: nn.Module) -> float:
    ws = list(_weights(model).values())
    return sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws)


def _fake_quants(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, tq.FakeQuantizeBase)]


# ----- the end-to-end run -----


def test_end_to_end_default_recipe() -> None:
    torch.manual_seed(0)
    model = MobileNetish()
    params_before = [id(p) for p in model.parameters()]
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    manager, optimizer = create.initialize(model, sgd, 4)

    assert isinstance(optimizer, RecipeOptimizer) and optimizer.wrapped is sgd
    assert manager.pruning_modifiers and manager.quantization_modifiers
    assert not manager.distillation_modifiers and manager.learning_rate_modifiers
    assert manager.max_epochs == 20 and manager.min_epochs == 0
    assert str(manager) == manager.recipe.to_yaml()

    seen: dict[str, Any] = {"lrs": [], "phases": []}
    held: dict[str, torch.Tensor] = {}

    def check() -> None:
        t = manager.step - 1  # the step that just ran
        seen["lrs"].append(optimizer.param_groups[0]["lr"])
        seen["phases"].append(manager.phase(t / 4))
        # QAT from epoch 15 = step 60: its forward passes are quantized
        assert bool(_fake_quants(model)) == (manager.step >= 60) == manager.qat_active()
        if manager.step == 31:  # pruning ended with the update at step 30
            held.update({n: m.clone() for n, m in manager.masks.items()})
            assert abs(_overall_sparsity(model) - 0.8) <= 0.02
        if held:  # fine-tuning and QAT: masks fixed, pruned weights stay exactly zero
            for name, weight in _weights(model).items():
                assert torch.equal(manager.masks[name], held[name])
                assert not weight[~held[name]].any()
        if manager.step >= 60:
            enabled = [int(fq.observer_enabled) for fq in _fake_quants(model)]
            assert set(enabled) == ({0} if manager.step >= 70 else {1})
            frozen = [m.freeze_bn for m in model.modules() if isinstance(m, intrinsic_qat.ConvBn2d)]
            assert frozen and set(frozen) == {manager.step >= 70}

    _train(model, optimizer, manager, 81, after=check)

    assert manager.step == 81
    assert [id(p) for p in model.parameters()] == params_before  # QAT kept identities
    assert _fake_quants(model)
    assert abs(_overall_sparsity(model) - 0.8) <= 0.02
    expected = [1e-3 + (1e-7 - 1e-3) * min(t / 80, 1.0) for t in range(81)]
    assert seen["lrs"] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert seen["phases"][0] == "pruning" and seen["phases"][-1] == "finished"
    assert seen["phases"].index("fine-tuning") == 30 and seen["phases"].index("qat") == 60
    # the state is inspectable: the pruner's, on fsparse.pruners
    assert all(isinstance(s, fsparse.pruners.PrunerState) for s in manager.pruning_states)
    assert [p.name for p in manager.pruners] == ["global_magnitude"]
    assert manager.sparsity() == pytest.approx(
        {n: 1 - m.float().mean().item() for n, m in manager.masks.items()}
    )
    # under global pruning each layer's target is its own level, that of its held mask
    targets = manager.target_sparsity()
    assert set(targets) == set(_weights(model))
    assert targets == pytest.approx(manager.sparsity(), abs=1e-6)
    assert max(targets.values()) - min(targets.values()) > 0.2  # not the 0.8 everywhere


# ----- mask types -----


def test_layerwise_pruning_hits_the_target_in_every_layer() -> None:
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    variables = {"num_epochs": 4, "sparsity": 0.7, "global_sparsity": False}
    manager, opt = create.initialize(model, opt, 2, quantization=False, recipe_variables=variables)
    _train(model, opt, manager, 8, image=False)
    for name, weight in _weights(model).items():
        assert abs((weight == 0).float().mean().item() - 0.7) <= 1 / weight.numel(), name


def test_tensorrt_target_gives_2_4_masks_along_input_channels() -> None:
    torch.manual_seed(0)
    model = MobileNetish()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    variables = {"num_epochs": 4, "target": "tensorrt"}
    manager, opt = create.initialize(model, opt, 2, quantization=False, recipe_variables=variables)
    # the stem (3 input channels) and the depthwise convs (1) cannot hold 2:4 groups
    assert set(manager.skipped) == {"stem.0.weight", "blocks.0.0.weight", "blocks.1.0.weight"}
    _train(model, opt, manager, 8)
    for name in ("blocks.0.3.weight", "blocks.1.3.weight", "fc.weight"):
        weight = _weights(model)[name]
        groups = (weight != 0).reshape(weight.shape[0], -1).reshape(-1, 4)
        assert (groups.sum(-1) <= 2).all(), name
        assert (manager.masks[name].reshape(-1, 4).sum(-1) == 2).all(), name
    assert not (_weights(model)["blocks.0.0.weight"] == 0).any()


def test_vnni_target_prunes_whole_blocks_of_four() -> None:
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    variables = {"num_epochs": 4, "target": "vnni", "sparsity": 0.5}
    manager, opt = create.initialize(model, opt, 2, quantization=False, recipe_variables=variables)
    _train(model, opt, manager, 8, image=False)
    for name, mask in manager.masks.items():
        assert set(mask.reshape(-1, 4).sum(-1).tolist()) <= {0, 4}, name
    assert abs(1 - sum(int(m.sum()) for m in manager.masks.values()) / sum(
        m.numel() for m in manager.masks.values()
    ) - 0.5) < 0.01


# ----- constant pruning -----


def _model_with_zeros() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A MobileNetish with ~60% of its prunable weights zeroed, and where the zeros are."""
    torch.manual_seed(0)
    model = MobileNetish()
    with torch.no_grad():
        for w in _weights(model).values():
            w.mul_(torch.rand_like(w) > 0.6)
    return model, {n: (w == 0).clone() for n, w in _weights(model).items()}


def test_plain_sgd_revives_existing_zeros() -> None:
    # without a recipe one plain step revives zeros: the check below can fail
    plain, zeros = _model_with_zeros()
    plain_opt = torch.optim.SGD(plain.parameters(), lr=0.1)
    x, y = _batch(0)
    F.cross_entropy(plain(x), y).backward()
    plain_opt.step()
    assert any(w[zeros[n]].any() for n, w in _weights(plain).items())


@pytest.mark.parametrize(
    ("pruning", "quantization"),
    [("constant", True), ("transfer", False), ("sparse-transfer", True), (False, True)],
)
def test_existing_zeros_never_come_back(pruning: object, quantization: bool) -> None:
    model, zeros = _model_with_zeros()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    manager, opt = create.initialize(
        model, opt, 2, pruning=pruning, quantization=quantization,  # type: ignore[arg-type]
        recipe_variables={"num_epochs": 3, "init_lr": 0.05},
    )
    assert [type(m).__name__ for m in manager.pruning_modifiers] == ["ConstantPruning"]

    def check() -> None:
        for name, weight in _weights(model).items():
            assert not weight[zeros[name]].any(), name

    _train(model, opt, manager, 7, after=check)  # one step past the end
    assert bool(_fake_quants(model)) == quantization


def test_no_pruning_and_no_quantization_leaves_weights_alone() -> None:
    model = _mlp()
    manager, opt = create.initialize(
        model, torch.optim.SGD(model.parameters(), lr=0.1), 2, pruning=False, quantization=False
    )
    assert not manager.pruning_modifiers and manager.masks == {}
    _train(model, opt, manager, 3, image=False)
    assert all((w != 0).all() for w in _weights(model).values())


# ----- distillation -----


def _kd_by_hand(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    p_t = F.softmax(teacher / t, dim=-1)
    log_p_s = F.log_softmax(student / t, dim=-1)
    return (p_t * (p_t.log() - log_p_s)).sum(-1).mean() * t * t


def test_self_distillation_uses_a_frozen_copy_from_the_start() -> None:
    model = _mlp()
    start = copy.deepcopy(model.state_dict())
    manager, opt = create.initialize(
        model, torch.optim.SGD(model.parameters(), lr=0.1), 2, pruning=False,
        quantization=False, distillation=True,
        recipe_variables={"num_epochs": 3, "hardness": 0.3, "temperature": 4.0, "init_lr": 0.1},
    )
    assert len(manager.distillation_modifiers) == 1
    teacher = manager.teacher
    assert teacher is not None and teacher is not model and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    _train(model, opt, manager, 3, image=False)
    assert all(torch.equal(v, start[k]) for k, v in teacher.state_dict().items())
    assert not torch.equal(model.state_dict()["0.weight"], start["0.weight"])

    x, y = _batch(99, image=False)
    out = model(x)
    loss = F.cross_entropy(out, y)
    got = manager.loss_update(loss, student_outputs=out, student_inputs=x)
    expected = 0.7 * loss + 0.3 * _kd_by_hand(out, teacher(x), 4.0)
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, loss)


def test_distillation_with_a_given_teacher_runs_it_in_eval_without_grads() -> None:
    model = _mlp(0)
    torch.manual_seed(1)
    teacher = nn.Sequential(nn.Linear(16, 64), nn.Dropout(0.5), nn.ReLU(), nn.Linear(64, 4))
    teacher.train()
    manager, opt = create.initialize(
        model, torch.optim.SGD(model.parameters(), lr=0.1), 2, pruning=False,
        quantization=False, distillation=True, distillation_teacher=teacher,
        recipe_variables={"num_epochs": 3},
    )
    assert manager.teacher is teacher
    x, y = _batch(5, image=False)
    out = model(x)
    loss = F.cross_entropy(out, y)
    got = manager.loss_update(loss, student_outputs=out, student_inputs=x)
    assert not teacher.training
    with torch.no_grad():
        expected = 0.5 * loss + 0.5 * _kd_by_hand(out, teacher(x), 2.0)
    assert torch.allclose(got, expected, atol=1e-6)
    got.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert model[0].weight.grad is not None
    # outside the distillation span the loss is left alone
    _train(model, opt, manager, 6, image=False)
    assert manager.loss_update(loss, student_outputs=out, student_inputs=x) is loss


def test_teacher_inputs_and_outputs() -> None:
    class TwoInputs(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a + b

    a, b = torch.ones(2, 3), torch.full((2, 3), 2.0)
    assert torch.equal(create.distillation.teacher_outputs(TwoInputs(), (a, b)), a + b)
    assert torch.equal(create.distillation.teacher_outputs(TwoInputs(), {"a": a, "b": b}), a + b)

    class Pair(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x, x

    with pytest.raises(TypeError, match="tensor of logits"):
        create.distillation.teacher_outputs(Pair(), a)
    with pytest.raises(ValueError, match="same shape"):
        create.distillation.kd_loss(torch.ones(2, 3), torch.ones(2, 4), 2.0)


def test_loss_update_needs_outputs_and_inputs_during_distillation() -> None:
    model = _mlp()
    manager, _ = create.initialize(
        model, torch.optim.SGD(model.parameters(), lr=0.1), 2, quantization=False,
        distillation=True, recipe_variables={"num_epochs": 3},
    )
    with pytest.raises(ValueError, match="student_outputs and student_inputs"):
        manager.loss_update(torch.tensor(1.0))
    plain, _ = create.initialize(
        _mlp(), torch.optim.SGD(_mlp().parameters(), lr=0.1), 2, quantization=False
    )
    loss = torch.tensor(2.0)
    assert plain.loss_update(loss) is loss  # no distillation: untouched


# ----- scalers -----


class FakeScaler:
    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.custom = "forwarded"

    def step(self, optimizer: torch.optim.Optimizer) -> str:
        self.calls.append(optimizer)
        optimizer.step()
        return "stepped"


def test_scaler_is_wrapped_and_returned() -> None:
    model = _mlp()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    fake = FakeScaler()
    manager, scaler = create.initialize(
        model, sgd, 2, quantization=False, scaler=fake, recipe_variables={"num_epochs": 4}
    )
    assert isinstance(scaler, RecipeScaler) and scaler.wrapped is fake
    assert scaler.custom == "forwarded"
    scaler.custom = "written"
    assert fake.custom == "written"
    x, y = _batch(0, image=False)
    F.cross_entropy(model(x), y).backward()
    assert scaler.step(sgd) == "stepped"
    assert fake.calls == [sgd] and manager.step == 1
    assert sgd.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert abs(_overall_sparsity(model) - 0.05) < 0.01  # the first mask update ran
    scaler.emulated_step(sgd)
    assert manager.step == 2 and len(fake.calls) == 1


def test_real_grad_scaler_on_cpu() -> None:
    model = _mlp()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    manager, scaler = create.initialize(
        model, sgd, 2, quantization=False, scaler=torch.amp.GradScaler("cpu"),
        recipe_variables={"num_epochs": 4, "sparsity": 0.6},
    )
    for step in range(8):
        x, y = _batch(step, image=False)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x).float(), y)
        sgd.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(sgd)
        scaler.update()
    assert manager.step == 8 and scaler.get_scale() > 0
    assert abs(_overall_sparsity(model) - 0.6) <= 0.02


# ----- optimizer wrapper -----


def test_wrapper_forwards_and_emulated_step_supports_accumulation() -> None:
    model = _mlp()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    manager, opt = create.initialize(
        model, sgd, 4, quantization=False, recipe_variables={"num_epochs": 2}
    )
    assert opt.param_groups is sgd.param_groups and opt.state is sgd.state
    opt.zero_grad()
    for step in range(4):  # two micro-batches per real step; steps_per_epoch counts micro-batches
        x, y = _batch(step, image=False)
        (F.cross_entropy(model(x), y) / 2).backward()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        if step % 2 == 0:
            opt.emulated_step()
            after = model.state_dict()
            # only the mask update may change weights, and only to zero
            for k, v in after.items():
                changed = v != before[k]
                assert not v[changed].any(), k
        else:
            opt.step()
            opt.zero_grad()
    assert manager.step == 4
    loss = opt.step(lambda: torch.tensor(1.5))  # closures pass through
    assert loss == 1.5 and manager.step == 5
    assert "RecipeOptimizer" in repr(opt) and "step=5" in repr(manager)


def test_finalize_applies_masks_and_removes_hooks() -> None:
    class Untraceable(nn.Module):  # data-dependent control flow: no FX, so BN stays unfused
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
            self.bn = nn.BatchNorm2d(8)
            self.fc = nn.Linear(8, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.bn(self.conv(x))
            if h.sum() > 0:
                h = h * 1.0
            return self.fc(h.mean((2, 3)))

    torch.manual_seed(0)
    model = Untraceable()
    manager, opt = create.initialize(
        model, torch.optim.SGD(model.parameters(), lr=0.1), 1,
        recipe_variables={"num_epochs": 3},
    )
    _train(model, opt, manager, 3)  # QAT at 1, BN frozen at 2
    assert isinstance(model.conv, torch.ao.nn.qat.Conv2d)
    model.train()
    stats = model.bn.running_mean.clone()
    model(_batch(0)[0])
    assert not model.bn.training and torch.equal(model.bn.running_mean, stats)
    assert len(model.bn._forward_pre_hooks) == 1
    manager.finalize()
    assert not model.bn._forward_pre_hooks and manager.finalized
    model.train()
    assert model.bn.training
    masks = {n: m.clone() for n, m in manager.masks.items()}
    lr = opt.param_groups[0]["lr"]
    opt.param_groups[0]["lr"] = 0.5
    _train(model, opt, manager, 1)  # a finalized manager no longer drives the run
    assert opt.param_groups[0]["lr"] == 0.5 and manager.step == 3
    assert all(torch.equal(manager.masks[n], m) for n, m in masks.items())
    assert lr != 0.5


def test_embeddings_stay_float_under_qat() -> None:
    class Rec(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(50, 8)
            self.fc = nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.emb(x).mean(1))

    model = Rec()
    manager, opt = create.initialize(
        model, torch.optim.SGD(model.parameters(), lr=0.1), 1,
        recipe_variables={"num_epochs": 3, "sparsity": 0.5},
    )
    for _ in range(3):
        x = torch.randint(0, 50, (4, 5))
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert type(model.emb) is nn.Embedding
    assert isinstance(model.fc, torch.ao.nn.qat.Linear)
    assert list(manager.masks) == ["fc.weight"]


# ----- editing the recipe -----


def test_edited_recipe_passed_back(tmp_path: Path) -> None:
    model = _mlp()
    manager, _ = create.initialize(
        model, torch.optim.SGD(model.parameters(), lr=0.1), 2, quantization=False,
        recipe_variables={"num_epochs": 4},
    )
    edited = Recipe(
        tuple(
            dataclasses.replace(m, final_sparsity=0.5, params=("2.weight", "4.weight"))
            if isinstance(m, GradualPruning)
            else m
            for m in manager.recipe.modifiers
        )
    )
    path = tmp_path / "edited.yaml"
    path.write_text(str(edited))
    model = _mlp()
    manager, opt = create.initialize(
        model, torch.optim.SGD(model.parameters(), lr=0.1), 2, recipe=path
    )
    assert manager.recipe == edited and not manager.quantization_modifiers
    _train(model, opt, manager, 8, image=False)
    assert set(manager.masks) == {"2.weight", "4.weight"}
    assert (model[0].weight != 0).all()
    for name in ("2.weight", "4.weight"):
        assert manager.sparsity()[name] == pytest.approx(0.5, abs=0.02)


# ----- resume -----


def _fresh_run(
    seed: int = 0,
) -> tuple[nn.Module, RecipeManager, Any]:
    torch.manual_seed(seed)
    model = MobileNetish()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    manager, opt = create.initialize(
        model, sgd, 3, distillation=True, recipe_variables={"num_epochs": 4, "init_lr": 0.05}
    )
    return model, manager, opt


def _round_trip(obj: Any) -> Any:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


RESUME_TOTAL = 12  # pruning to step 3, QAT from step 6, observers and BN frozen from step 9


@pytest.fixture(scope="module")
def uninterrupted() -> dict[str, torch.Tensor]:
    """The model's state after ``RESUME_TOTAL`` steps without a break (shared by the resumes)."""
    model, manager, opt = _fresh_run()
    _train(model, opt, manager, RESUME_TOTAL)
    return model.state_dict()


@pytest.mark.parametrize("checkpoint_at", [2, 7, 10])
def test_resume_is_bit_identical(
    checkpoint_at: int, uninterrupted: dict[str, torch.Tensor]
) -> None:
    total, reference = RESUME_TOTAL, uninterrupted
    model, manager, opt = _fresh_run()
    _train(model, opt, manager, checkpoint_at)
    ckpt = _round_trip(
        {"model": model.state_dict(), "opt": opt.state_dict(), "manager": manager.state_dict()}
    )
    assert set(ckpt["manager"]) == set(create.manager.STATE_KEYS)
    assert ckpt["manager"]["step"] == checkpoint_at

    model, manager, opt = _fresh_run(seed=123)  # different init: everything must come from ckpt
    manager.load_state_dict(ckpt["manager"])
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    _train(model, opt, manager, total - checkpoint_at)
    resumed = model.state_dict()
    assert manager.step == total
    assert resumed.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(resumed[key], value), key


def test_load_state_dict_errors() -> None:
    model, manager, opt = _fresh_run()
    _train(model, opt, manager, 7)
    good = manager.state_dict()
    _, fresh, _ = _fresh_run()

    def bad(**changes: Any) -> dict[str, Any]:
        return {**good, **changes}

    cases = [
        ({k: v for k, v in good.items() if k != "teacher"}, "must have keys"),
        (bad(recipe=create.create_recipe().to_yaml()), "different recipe"),
        (bad(steps_per_epoch=4), "steps_per_epoch"),
        (bad(step=-1), "non-negative"),
        (bad(teacher=None), "self-teacher"),
        (bad(masks={}), "masks must be for"),
        (bad(masks={**good["masks"], "fc.weight": torch.ones(3, dtype=torch.bool)}), "shape"),
    ]
    for state, match in cases:
        with pytest.raises(ValueError, match=match):
            fresh.load_state_dict(state)
        assert fresh.step == 0 and not _fake_quants(fresh.model)  # unchanged
    with pytest.raises(ValueError, match="already run past step 2"):
        manager.load_state_dict(bad(step=2))


# ----- bad input to initialize -----


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"steps_per_epoch": 0}, ValueError, "steps_per_epoch must be positive"),
        ({"steps_per_epoch": -2}, ValueError, "steps_per_epoch must be positive"),
        ({"steps_per_epoch": 2.5}, TypeError, "steps_per_epoch must be an int"),
        ({"steps_per_epoch": True}, TypeError, "steps_per_epoch must be an int"),
        ({"pruning": "magnitude"}, ValueError, "pruning must be one of"),
        ({"recipe_variables": {"sparsity": 1.2}}, ValueError, "sparsity"),
        ({"recipe_variables": {"num_epochs": 0}}, ValueError, "num_epochs"),
        ({"recipe_variables": {"epochs": 3}}, ValueError, "unknown keys"),
        ({"recipe_variables": {"target": "tensorrt", "mask_type": "block4"}}, ValueError,
         "requires mask_type"),
        ({"recipe": "modifiers: []"}, ValueError, "at least one modifier"),
        ({"recipe": "modifiers: [{type: GradualPruning, start_epoch: 0, end_epoch: 1, "
                    "update_frequency: 0.5, init_sparsity: 0, final_sparsity: 0.5, "
                    "params: [nope.weight]}]"}, ValueError, "nope.weight"),
        ({"recipe": "modifiers: [{type: GradualPruning, start_epoch: 0, end_epoch: 1, "
                    "update_frequency: 0.5, init_sparsity: 0, final_sparsity: 0.5, "
                    "mask_type: '2:4', params: [stem.0.weight]}]"}, ValueError, "multiple of 4"),
        ({"scaler": object()}, TypeError, "scaler must have a step"),
        ({"distillation_teacher": "teacher"}, TypeError, "distillation_teacher"),
    ],
)
def test_initialize_bad_input(kwargs: dict[str, Any], error: type, match: str) -> None:
    torch.manual_seed(0)
    model = MobileNetish()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    args = {"steps_per_epoch": 4, **kwargs}
    with pytest.raises(error, match=match):
        create.initialize(model, opt, **args)
    assert not _fake_quants(model)


def test_initialize_rejects_non_optimizers_and_models_without_prunable_weights() -> None:
    model = _mlp()
    with pytest.raises(TypeError, match=r"optimizer must be a torch\.optim\.Optimizer"):
        create.initialize(model, "sgd", 2)  # type: ignore[arg-type]
    bn_only = nn.Sequential(nn.BatchNorm1d(4))
    with pytest.raises(ValueError, match="no prunable weights"):
        create.initialize(bn_only, torch.optim.SGD(bn_only.parameters(), lr=0.1), 2)
    with pytest.raises(TypeError, match="model must be"):
        RecipeManager(create.create_recipe(), "model", 2)  # type: ignore[arg-type]
