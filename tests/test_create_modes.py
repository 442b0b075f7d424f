"""Every training-aware pruning mode of fsparse.create, end to end on a small conv net.

One run per mode (a module fixture) serves the end-to-end checks and is the
uninterrupted reference of that mode's resume test.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fsparse import create
from fsparse.create import Recipe, RecipeManager
from fsparse.create.masks import prunable_parameters
from fsparse.create.pruning_modifiers import OBSPruning

SPE = 4  # steps per epoch
SPARSITY = 0.7


class TinyConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return self.fc(h.mean((2, 3)))


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(500 + step)
    return torch.randn(8, 3, 8, 8, generator=gen), torch.randint(0, 10, (8,), generator=gen)


# mode -> (num_epochs, recipe edit); OBS/M-FAC prune every epoch (4 steps) from 4 gradients
def _obs_edit(recipe: Recipe) -> Recipe:
    return Recipe(tuple(dataclasses.replace(m, update_frequency=1.0, num_grads=4)
                        if isinstance(m, OBSPruning) else m for m in recipe.modifiers))


MODES: dict[str, tuple[float, Any]] = {
    "movement": (4.0, None),
    "acdc": (10.0, None),
    "rigl": (4.0, None),
    "set": (4.0, None),
    "obs": (8.0, _obs_edit),
    "mfac": (8.0, _obs_edit),
}


def _make(mode: str, seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer, RecipeManager, Any]:
    epochs, edit = MODES[mode]
    torch.manual_seed(seed)
    model = TinyConv()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    variables: dict[str, Any] = {"num_epochs": epochs, "sparsity": SPARSITY, "init_lr": 0.05,
                                 "final_lr": 0.01}
    recipe = create.create_recipe(create.RecipeVariables(**variables), pruning=mode,
                                  quantization=False)
    if edit is not None:
        recipe = edit(recipe)
    manager, opt = create.initialize(model, sgd, SPE, pruning=mode, quantization=False,
                                     recipe_variables=variables, recipe=recipe)
    return model, sgd, manager, opt


def _clone(buffer: torch.Tensor | None, weight: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(weight) if buffer is None else buffer.detach().clone()


def _train(model: nn.Module, opt: Any, manager: RecipeManager, steps: int,
           log: list[dict[str, Any]] | None = None) -> None:
    sgd = opt.wrapped
    inside: dict[str, Any] = {}

    def pre_hook(*_: Any) -> None:  # runs inside opt.step(), after the pruners' update
        inside["weights"] = {n: w.detach().clone() for n, w in prunable_parameters(model).items()}
        inside["momentum"] = {n: _clone(sgd.state.get(w, {}).get("momentum_buffer"), w)
                              for n, w in prunable_parameters(model).items()}

    handle = sgd.register_step_pre_hook(pre_hook) if log is not None else None
    model.train()
    for _ in range(steps):
        x, y = _batch(manager.step)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        if log is not None:
            weights = prunable_parameters(model)
            before = {n: w.detach().clone() for n, w in weights.items()}
            grads = {n: _clone(w.grad, w) for n, w in weights.items()}
            masks = {n: m.clone() for n, m in manager.masks.items()}
        opt.step()
        if log is not None:
            log.append({"before": before, "grads": grads, "masks_before": masks,
                        "masks": {n: m.clone() for n, m in manager.masks.items()}, **inside})
    if handle is not None:
        handle.remove()


def _total(manager: RecipeManager) -> int:
    return int(manager.max_epochs * SPE)


def _overall(model: nn.Module) -> float:
    ws = list(prunable_parameters(model).values())
    return sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws)


@pytest.fixture(scope="module")
def runs() -> dict[str, dict[str, Any]]:
    """Each mode's uninterrupted run: its log, final model state and manager."""
    out = {}
    for mode in MODES:
        model, _, manager, opt = _make(mode)
        log: list[dict[str, Any]] = []
        _train(model, opt, manager, _total(manager), log)
        out[mode] = {"log": log, "model": model, "manager": manager,
                     "state": {k: v.clone() for k, v in model.state_dict().items()}}
    return out


@pytest.mark.parametrize("mode", list(MODES))
def test_final_sparsity_is_the_target(mode: str, runs: dict[str, dict[str, Any]]) -> None:
    run = runs[mode]
    manager = run["manager"]
    assert [type(m).__name__ for m in manager.pruning_modifiers] == [
        type(m).__name__ for m in manager.recipe.modifiers if hasattr(m, "params")]
    assert abs(_overall(run["model"]) - SPARSITY) <= 0.02
    for name, weight in prunable_parameters(run["model"]).items():  # masks hold in the weights
        assert not weight[~manager.masks[name]].any(), name
    targets = manager.target_sparsity()
    assert set(targets) == set(manager.masks)


def test_acdc_alternates_dense_and_sparse_and_resets_momentum(runs: dict[str, Any]) -> None:
    run = runs["acdc"]
    phase = run["manager"].pruners[0].hyperparams["phase"]
    # E = 10: phases of 0.5 epochs (2 steps), dense until step 4, sparse from step 36
    expected = [phase(t) for t in range(len(run["log"]))]
    assert expected[:8] == ["dense"] * 4 + ["sparse"] * 2 + ["dense"] * 2
    assert expected[36:] == ["sparse"] * 4
    seen = []
    for entry in run["log"]:
        pruned = sum(int((~m).sum()) for m in entry["masks"].values())
        seen.append("sparse" if pruned else "dense")
    assert seen == expected
    changes = [t for t in range(1, len(expected)) if expected[t] != expected[t - 1]]
    assert len(changes) >= 10
    for t in changes:  # the whole momentum restarts at each phase change
        assert all(not m.any() for m in run["log"][t]["momentum"].values()), t
    assert any(m.any() for m in run["log"][changes[0] + 1]["momentum"].values())


def test_movement_scores_are_the_accumulated_gradient_moves(runs: dict[str, Any]) -> None:
    run = runs["movement"]
    state = run["manager"].pruning_states[0]
    scores = state.stats["movement"]
    end = run["manager"].pruners[0].hyperparams["end_step"]
    for name, score in scores.items():
        by_hand = torch.zeros_like(score)
        for entry in run["log"][: end + 1]:
            move = -(entry["grads"][name] * entry["before"][name])
            by_hand += torch.where(entry["masks_before"][name], move, 0.0)
        assert torch.allclose(score, by_hand, atol=1e-6), name
        assert score.abs().sum() > 0
    # movement is not magnitude: some kept weight was smaller than some pruned one at the end
    last = run["log"][end]
    w = torch.cat([last["before"][n].reshape(-1) for n in scores])
    kept = torch.cat([last["masks"][n].reshape(-1) for n in scores])
    assert w[kept].abs().min() < w[~kept & (w != 0)].abs().max()


@pytest.mark.parametrize("mode", ["rigl", "set"])
def test_drop_and_grow_keeps_the_live_count_and_regrows(mode: str, runs: dict[str, Any]) -> None:
    log = runs[mode]["log"]
    counts = [{n: int(m.sum()) for n, m in e["masks"].items()} for e in log]
    assert all(c == counts[0] for c in counts)
    regrown = sum(int((e["masks"][n] & ~e["masks_before"][n]).sum())
                  for e in log[1:] for n in e["masks"])
    assert regrown > 0
    for e in log[1:]:  # a regrown weight restarts at 0, and so does its momentum
        for n, mask in e["masks"].items():
            new = mask & ~e["masks_before"][n]
            assert not e["weights"][n][new].any()
            assert not e["momentum"][n][new].any()


@pytest.mark.parametrize("mode", ["obs", "mfac"])
def test_second_order_moves_the_surviving_weights_at_pruning_steps(
    mode: str, runs: dict[str, Any]
) -> None:
    log = runs[mode]["log"]
    moved_at = []
    for t, entry in enumerate(log):
        changed = False
        for name, mask in entry["masks"].items():
            live = mask & entry["masks_before"][name]
            changed |= bool((entry["weights"][name][live] != entry["before"][name][live]).any())
        if changed:
            moved_at.append(t)
    # pruning steps every 4 steps from step 4 to the end of pruning (epoch 4.0 = step 16)
    assert moved_at == [4, 8, 12, 16]


@pytest.mark.parametrize(("mode", "at"), [("movement", 5), ("acdc", 13), ("rigl", 6),
                                          ("set", 6), ("obs", 7), ("mfac", 10)])
def test_resume_is_bit_identical(mode: str, at: int, runs: dict[str, Any]) -> None:
    # obs at 7: two of the four gradients of the step-8 pruning are collected
    model, sgd, manager, opt = _make(mode)
    _train(model, opt, manager, at)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": sgd.state_dict(),
                "manager": manager.state_dict()}, buffer)
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    model, sgd, manager, opt = _make(mode, seed=1)
    manager.load_state_dict(ckpt["manager"])
    model.load_state_dict(ckpt["model"])
    sgd.load_state_dict(ckpt["opt"])
    _train(model, opt, manager, _total(manager) - at)
    for key, value in runs[mode]["state"].items():
        assert torch.equal(model.state_dict()[key], value), key


def test_a_checkpoint_of_another_pruner_state_is_refused(runs: dict[str, Any]) -> None:
    model, _, manager, opt = _make("obs")
    _train(model, opt, manager, 2)
    good = manager.state_dict()
    stats = good["pruners"][0]["stats"]
    bad_buffers = {**good["pruners"][0], "stats": {**stats, "grads": {
        n: t[:, :-1] for n, t in stats["grads"].items()}}}
    cases = [
        ({**good, "pruners": []}, "pruners must be a list"),
        ({**good, "pruners": [bad_buffers]}, "must have shape"),
        ({**good, "pruners": [{**good["pruners"][0], "step": 1}]}, "step must be 2"),
    ]
    _, _, fresh, _ = _make("obs")
    for state, match in cases:
        with pytest.raises(ValueError, match=match):
            fresh.load_state_dict(state)
        assert fresh.step == 0


def test_obs_with_more_grads_than_steps_before_pruning_names_it() -> None:
    torch.manual_seed(0)
    model = TinyConv()
    recipe = Recipe((OBSPruning(0.0, 2.0, 0.5, 0.5, num_grads=3),))  # prunes every 2 steps
    with pytest.raises(ValueError, match=r"OBSPruning.num_grads=3 .* 2 training steps.*'obs'"):
        create.initialize(model, torch.optim.SGD(model.parameters(), lr=0.1), SPE,
                          recipe=recipe)


@pytest.mark.parametrize(("mode", "variables", "match"), [
    ("movement", {"global_sparsity": True}, r"global_sparsity=True .*'movement'"),
    ("set", {"mask_type": "2:4"}, r"mask_type '2:4' .*'set'"),
])
def test_initialize_names_what_a_mode_cannot_honour(
    mode: str, variables: dict[str, Any], match: str
) -> None:
    model = TinyConv()
    with pytest.raises(ValueError, match=match):
        create.initialize(model, torch.optim.SGD(model.parameters(), lr=0.1), SPE,
                          pruning=mode, recipe_variables=variables)


def test_gradual_magnitude_masks_are_the_global_ranking_of_the_weights() -> None:
    # the old create path's result: one global |w| ranking at the cubic level (ties: earlier
    # layers, then lower indices), now from the pruner's one-shot global_magnitude update
    torch.manual_seed(0)
    model = TinyConv()
    recipe = Recipe((create.GradualPruning(0.0, 1.0, 0.25, 0.3, 0.6),))
    manager, opt = create.initialize(model, torch.optim.SGD(model.parameters(), lr=0.0), SPE,
                                     recipe=recipe)
    weights = {n: w.detach().clone() for n, w in prunable_parameters(model).items()}
    x, y = _batch(0)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    flat = torch.cat([w.abs().reshape(-1) for w in weights.values()])
    pruned = flat.sort(stable=True).indices[: round(0.3 * flat.numel())]
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[pruned] = False
    got = torch.cat([manager.masks[n].reshape(-1) for n in weights])
    assert torch.equal(got, keep)
    assert manager.pruners[0].name == "global_magnitude"


class _UnscalingScaler:
    """A scaler that, like torch's GradScaler, unscales the gradients inside ``step``."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def get_scale(self) -> float:
        return self.scale

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.div_(self.scale)
        optimizer.step()


def test_pruners_get_the_unscaled_gradients_under_a_scaler() -> None:
    states: list[Any] = []
    for scale in (None, 64.0):
        torch.manual_seed(0)
        model = TinyConv()
        sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        scaler = None if scale is None else _UnscalingScaler(scale)
        manager, opt = create.initialize(model, sgd, SPE, pruning="movement", quantization=False,
                                         scaler=scaler, recipe_variables={"num_epochs": 2.0})
        for _ in range(6):
            x, y = _batch(manager.step)
            loss = F.cross_entropy(model(x), y)
            sgd.zero_grad()
            (loss * (scale or 1.0)).backward()
            opt.step() if scale is None else opt.step(sgd)
        states.append(manager.pruning_states[0].stats["movement"])
    for name, score in states[0].items():
        assert torch.allclose(states[1][name], score, rtol=1e-4, atol=1e-7), name
