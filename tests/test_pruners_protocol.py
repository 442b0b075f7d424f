"""The pruner state and protocol: pytrees, saving, apply_masks, the optimizer reset edge."""

from __future__ import annotations

import io

import optree
import pytest
import torch
import torch.utils._pytree as torch_pytree
from torch import nn

from fsparse import pruners
from fsparse.pruners import PrunerState


def _state() -> PrunerState:
    masks = {"fc.weight": torch.tensor([[True, False], [False, True]]), "b": torch.ones(3) > 0}
    stats = {"movement": {"fc.weight": torch.randn(2, 2), "b": torch.zeros(3)},
             "count": torch.tensor(4)}
    return PrunerState(masks, 7, stats, {"fc.weight": 0.5, "b": 0.0})


def test_state_is_read_only() -> None:
    state = _state()
    with pytest.raises(TypeError):
        state.masks["b"] = torch.zeros(3, dtype=torch.bool)  # type: ignore[index]
    with pytest.raises(AttributeError):
        state.step = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        state.stats["movement"]["b"] = torch.ones(3)  # type: ignore[index]


def test_optree_flatten_unflatten_round_trip_with_leaves_and_static_targets() -> None:
    state = _state()
    leaves, spec = optree.tree_flatten(state)
    assert len(leaves) == 2 + 1 + 2 + 1  # masks, step, movement scores, count
    assert [x for x in leaves if isinstance(x, int)] == [7]
    back = optree.tree_unflatten(spec, leaves)
    assert back == state and back.targets == {"fc.weight": 0.5, "b": 0.0}
    doubled = optree.tree_map(lambda x: x * 2 if isinstance(x, torch.Tensor) and
                              x.is_floating_point() else x, state)
    assert torch.equal(doubled.stats["movement"]["fc.weight"],
                       state.stats["movement"]["fc.weight"] * 2)


def test_torch_pytree_round_trip() -> None:
    state = _state()
    leaves, spec = torch_pytree.tree_flatten(state)
    assert torch_pytree.tree_unflatten(leaves, spec) == state


def test_state_dict_round_trips_through_a_weights_only_load() -> None:
    state = _state()
    buffer = io.BytesIO()
    torch.save(pruners.state_dict(state), buffer)
    buffer.seek(0)
    assert pruners.load_state_dict(torch.load(buffer, weights_only=True)) == state


def test_the_state_object_itself_loads_with_weights_only_when_allowed() -> None:
    state = _state()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    with torch.serialization.safe_globals([PrunerState]):
        assert torch.load(buffer, weights_only=True) == state


@pytest.mark.parametrize("bad, match", [
    ({"masks": {"w": torch.ones(2)}, "step": 0}, "bool"),
    ({"masks": {"w": torch.ones(2) > 0}, "step": -1}, "step"),
    ({"masks": {"w": torch.ones(2) > 0}, "step": 0, "targets": {"w": 1.5}}, "targets"),
    ({"masks": {"w": torch.ones(2) > 0}, "step": 0, "targets": {"v": 0.5}}, "no mask"),
    ({"masks": {"w": torch.ones(2) > 0}}, "missing"),
    ({"masks": {"w": torch.ones(2) > 0}, "step": 0, "junk": 1}, "unknown"),
    ({"masks": {"": torch.ones(2) > 0}, "step": 0}, "non-empty"),
    ({"masks": {"w": torch.ones(2) > 0}, "step": 0, "stats": {"s": [1]}}, "stats"),
])
def test_load_state_dict_refuses_bad_parts(bad: dict, match: str) -> None:
    with pytest.raises((TypeError, ValueError), match=match):
        pruners.load_state_dict(bad)


def test_apply_masks_under_functional_call_and_grad() -> None:
    model = nn.Linear(4, 2)
    params = {k: v.detach() for k, v in model.named_parameters()}
    pruner = pruners.magnitude(0.5, overrides={"bias": 0.0})
    state, params = pruner.update(pruner.init(params), params)
    x = torch.randn(3, 4)

    def loss(p: dict, straight_through: bool) -> torch.Tensor:
        masked = pruners.apply_masks(state, p, straight_through=straight_through)
        return torch.func.functional_call(model, masked, (x,)).square().sum()

    mask = state.masks["weight"]
    grads = torch.func.grad(loss)(params, False)
    assert bool((grads["weight"][~mask] == 0).all())
    ste = torch.func.grad(loss)(params, True)
    assert torch.equal(ste["weight"][mask], grads["weight"][mask])
    dense = {"weight": torch.where(mask, params["weight"], 0.0), "bias": params["bias"]}
    reference = torch.func.grad(lambda p: torch.func.functional_call(
        model, p, (x,)).square().sum())(dense)
    assert torch.allclose(ste["weight"], reference["weight"])  # the gradient at every weight
    assert torch.equal(loss(params, True), loss(params, False))


def test_apply_masks_passes_other_names_and_refuses_missing_ones() -> None:
    state = PrunerState({"w": torch.tensor([True, False])})
    b = torch.ones(2)
    out = pruners.apply_masks(state, {"w": torch.tensor([1.0, float("inf")]), "b": b})
    assert out["b"] is b and out["w"].tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="params lacks"):
        pruners.apply_masks(state, {"b": b})
    with pytest.raises(ValueError, match="shape"):
        pruners.apply_masks(state, {"w": torch.ones(3)})
    with pytest.raises(TypeError, match="straight_through"):
        pruners.apply_masks(state, {"w": torch.ones(2)}, straight_through=1)  # type: ignore[arg-type]


def test_reset_optimizer_state_zeroes_only_revived_entries_of_param_shaped_state() -> None:
    w, v = nn.Parameter(torch.ones(2, 2)), nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([w, v], lr=0.1)
    w.grad, v.grad = torch.ones(2, 2), torch.ones(3)
    opt.step()
    steps = opt.state[w]["step"].clone()
    revived = torch.tensor([[True, False], [False, False]])
    assert pruners.reset_optimizer_state(opt, {"w": w, "v": v}, {"w": revived}) == 2
    for key in ("exp_avg", "exp_avg_sq"):
        assert opt.state[w][key][0, 0] == 0 and bool((opt.state[w][key].view(-1)[1:] != 0).all())
        assert bool((opt.state[v][key] != 0).all())
    assert torch.equal(opt.state[w]["step"], steps)


def test_reset_optimizer_state_checks_everything_before_writing() -> None:
    w = nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    w.grad = torch.ones(2)
    opt.step()
    before = opt.state[w]["momentum_buffer"].clone()
    good = torch.tensor([True, True])
    for masks in ({"w": good, "x": good}, {"w": torch.ones(3) > 0}, {"w": torch.ones(2)}):
        with pytest.raises((TypeError, ValueError)):
            pruners.reset_optimizer_state(opt, {"w": w}, masks)
        assert torch.equal(opt.state[w]["momentum_buffer"], before)
    with pytest.raises(TypeError, match="optimizer"):
        pruners.reset_optimizer_state(object(), {"w": w}, {"w": good})  # type: ignore[arg-type]


def test_resets_of_a_pruner_name_revived_weights() -> None:
    old = PrunerState({"w": torch.tensor([True, False, False])})
    new = PrunerState({"w": torch.tensor([False, True, False])})
    assert pruners.activated(old, new)["w"].tolist() == [False, True, False]
    assert pruners.rigl(0.5).resets(old, new)["w"].tolist() == [False, True, False]
    assert pruners.ste_magnitude(0.5).resets(old, new) == {}


def test_pruner_is_frozen_and_describes_its_hyperparameters() -> None:
    pruner = pruners.rigl(0.9, distribution="erk", update_every=100, end_step=1000,
                          drop_fraction=0.3)
    assert pruner.name == "rigl" and pruner.needs_grads
    assert pruner.hyperparams["end_step"] == 1000 and pruner.hyperparams["drop_fraction"] == 0.3
    with pytest.raises(AttributeError):
        pruner.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        pruner.hyperparams["end_step"] = 5  # type: ignore[index]
