"""The immutable state: pure functions, pytree registration, torch.func, bad input."""

from __future__ import annotations

import math

import optree
import pytest
import torch
import torch.utils._pytree as torch_pytree
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import fsparse
from fsparse import testing


def _snapshot(state: fsparse.SparsifierState) -> dict:
    return {
        name: (e.data.clone(), e.mask.clone(), e.config) for name, e in state.entries.items()
    }


def _assert_unchanged(state: fsparse.SparsifierState, snap: dict) -> None:
    assert set(state.entries) == set(snap)
    for name, (data, mask, config) in snap.items():
        assert torch.allclose(state[name].data, data, rtol=0, atol=0, equal_nan=True)
        assert torch.equal(state[name].mask, mask)
        assert state[name].config == config


def test_init_holds_data_by_reference_with_bool_ones_masks() -> None:
    weight = nn.Parameter(torch.randn(4, 8))
    emb = nn.Embedding(10, 4)
    state = fsparse.init({"w": weight, "emb": emb}, sparsity_level=0.3)
    assert state["w"].data is weight
    assert state["emb"].data is emb.weight
    assert state["w"].mask.dtype == torch.bool and bool(state["w"].mask.all())
    assert state["emb"].config.sparsity_level == 0.3
    assert state.names == ("w", "emb")


def test_add_new_entry_uses_defaults_and_overrides() -> None:
    state = fsparse.init(sparsity_level=0.4, sparse_block_shape=(1, 2))
    state = fsparse.add(state, "a", torch.randn(4, 4), zeros_per_block=1, owner="me")
    cfg = state["a"].config
    assert (cfg.sparsity_level, cfg.sparse_block_shape, cfg.zeros_per_block) == (0.4, (1, 2), 1)
    assert cfg.extra("owner") == "me"
    assert cfg.as_dict()["owner"] == "me"


def test_replace_keeps_config_and_mask_when_reusing() -> None:
    state = fsparse.init({"a": torch.randn(4, 4)}, sparsity_level=0.5)
    state = fsparse.add(state, "a", state["a"].data, sparsity_level=0.75)
    state = fsparse.step(state)
    old_mask = state["a"].mask
    new_data = torch.randn(4, 4)
    replaced = fsparse.add(state, "a", new_data, zeros_per_block=2)
    assert replaced["a"].mask is old_mask
    assert replaced["a"].data is new_data
    assert replaced["a"].config.sparsity_level == 0.75
    assert replaced["a"].config.zeros_per_block == 2
    fresh = fsparse.add(state, "a", torch.randn(2, 3), reuse_mask=False)
    assert fresh["a"].mask.shape == (2, 3) and bool(fresh["a"].mask.all())


def test_remove_and_missing_name() -> None:
    state = fsparse.init({"a": torch.ones(2), "b": torch.ones(2)})
    assert fsparse.remove(state, "a").names == ("b",)
    assert state.names == ("a", "b")
    with pytest.raises(KeyError, match="'zz'"):
        fsparse.remove(state, "zz")


def states() -> st.SearchStrategy[fsparse.SparsifierState]:
    """fsparse.testing's states: 1 to 4 entries, each with its own drawn config, not stepped."""
    return testing.states(stepped=False)


@settings(max_examples=100, deadline=None)
@given(states())
def test_step_is_pure(state: fsparse.SparsifierState) -> None:
    snap = _snapshot(state)
    new = fsparse.step(state)
    _assert_unchanged(state, snap)
    for name in state.names:
        assert new[name].data is state[name].data


@settings(max_examples=100, deadline=None)
@given(states())
def test_step_is_idempotent_on_unchanged_data(state: fsparse.SparsifierState) -> None:
    once = fsparse.step(state)
    twice = fsparse.step(once)
    for name in state.names:
        assert torch.equal(once[name].mask, twice[name].mask)


def test_sparsified_and_squash() -> None:
    data = torch.randn(4, 8, requires_grad=True)
    state = fsparse.step(fsparse.init({"w": data}, sparsity_level=0.5))
    out = fsparse.sparsified(state)["w"]
    assert torch.equal(out, data * state["w"].mask)
    assert out.requires_grad
    squashed = fsparse.squash(state)["w"]
    assert not squashed.requires_grad
    assert fsparse.sparsity(state)["w"] == pytest.approx(0.5)


def test_custom_mask_fn_in_step_and_in_config() -> None:
    def keep_positive(data: torch.Tensor, config: fsparse.SparsityConfig) -> torch.Tensor:
        return data > 0

    data = torch.randn(6, 6)
    stepped = fsparse.step(fsparse.init({"a": data}), mask_fn=keep_positive)
    assert torch.equal(stepped["a"].mask, data > 0)
    via_config = fsparse.step(fsparse.init({"a": data}, mask_fn=keep_positive))
    assert torch.equal(via_config["a"].mask, data > 0)


def test_mask_fn_with_wrong_shape_is_rejected() -> None:
    state = fsparse.init({"a": torch.randn(3, 3)})
    with pytest.raises(ValueError, match="shape"):
        fsparse.step(state, mask_fn=lambda d, c: torch.ones(9, dtype=torch.bool))


def test_state_is_an_optree_and_torch_pytree() -> None:
    state = fsparse.step(fsparse.init({"a": torch.randn(4, 4), "b": torch.randn(8)}))
    leaves, spec = optree.tree_flatten(state)
    assert len(leaves) == 4 and all(isinstance(x, torch.Tensor) for x in leaves)
    rebuilt = optree.tree_unflatten(spec, leaves)
    assert rebuilt["a"].config == state["a"].config
    t_leaves, _ = torch_pytree.tree_flatten(state)
    assert len(t_leaves) == 4
    doubled = torch_pytree.tree_map(lambda x: x * 2 if x.is_floating_point() else x, state)
    assert isinstance(doubled, fsparse.SparsifierState)
    assert torch.equal(doubled["a"].data, state["a"].data * 2)


def test_functional_call_with_sparsified_params_and_grad() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    params = {name.replace(".", "_"): p for name, p in model.named_parameters()}
    state = fsparse.step(fsparse.init(params, sparsity_level=0.5, sparse_block_shape=(1, 2)))
    x = torch.randn(5, 8)

    def loss(data: dict[str, torch.Tensor]) -> torch.Tensor:
        st_ = fsparse.SparsifierState(
            {k: fsparse.Entry(data[k], e.mask, e.config) for k, e in state.entries.items()},
            state.defaults,
        )
        sparse = {k.replace("_", ".", 1): v for k, v in fsparse.sparsified(st_).items()}
        return torch.func.functional_call(model, sparse, (x,)).square().sum()

    data = {k: e.data.detach() for k, e in state.entries.items()}
    grads = torch.func.grad(loss)(data)
    for name, e in state.entries.items():
        assert bool((grads[name][~e.mask] == 0).all())
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.mul_(state[name.replace(".", "_")].mask)
        expected = model(x).square().sum()
    assert torch.allclose(loss(data), expected)


def test_torch_compile_accepts_the_state() -> None:
    state = fsparse.step(fsparse.init({"a": torch.randn(4, 4)}, sparsity_level=0.5))
    compiled = torch.compile(lambda s: fsparse.sparsified(s)["a"].sum(), backend="eager")
    assert torch.allclose(compiled(state), fsparse.sparsified(state)["a"].sum())


@pytest.mark.parametrize(
    ("name", "error"), [("a.b", ValueError), ("", ValueError), (3, TypeError)]
)
def test_bad_names(name: object, error: type) -> None:
    state = fsparse.init({"ok": torch.ones(2)})
    with pytest.raises(error, match="name"):
        fsparse.add(state, name, torch.ones(2))  # type: ignore[arg-type]
    assert state.names == ("ok",)


@pytest.mark.parametrize("data", [[1.0, 2.0], nn.Linear(2, 2), "x"])
def test_unsupported_types(data: object) -> None:
    with pytest.raises(TypeError, match="data must be one of"):
        fsparse.init({"a": data})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("config", "error", "needle"),
    [
        ({"sparse_block_shape": (1, 0)}, ValueError, "sparse_block_shape"),
        ({"sparse_block_shape": (2, 2), "zeros_per_block": 5}, ValueError, "zeros_per_block"),
        ({"zeros_per_block": -1}, ValueError, "zeros_per_block"),
        ({"sparsity_level": math.nan}, ValueError, "sparsity_level"),
        ({"norm": "max"}, ValueError, "norm"),
    ],
)
def test_bad_config_leaves_state_unchanged(config: dict, error: type, needle: str) -> None:
    state = fsparse.init({"a": torch.randn(4, 4)})
    snap = _snapshot(state)
    with pytest.raises(error, match=needle):
        fsparse.add(state, "a", state["a"].data, **config)
    _assert_unchanged(state, snap)


def test_reuse_mask_shape_mismatch() -> None:
    state = fsparse.init({"a": torch.randn(4, 4)})
    snap = _snapshot(state)
    with pytest.raises(ValueError, match=r"reuse_mask=True .* \(4, 4\)"):
        fsparse.add(state, "a", torch.randn(2, 8))
    _assert_unchanged(state, snap)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_data_fails_step_naming_the_entry(bad: float) -> None:
    data = torch.randn(4, 4)
    data[1, 1] = bad
    state = fsparse.init({"clean": torch.randn(4, 4), "dirty": data})
    snap = _snapshot(state)
    with pytest.raises(ValueError, match=r"'dirty'.*NaN or Inf"):
        fsparse.step(state)
    _assert_unchanged(state, snap)
