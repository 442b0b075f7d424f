"""fsparse.data_sparsifier as a drop-in for torch.ao's: behaviour, fixes and error paths."""

from __future__ import annotations

import copy
import importlib
import pickle
import warnings
from collections import defaultdict
from typing import Any

import pytest
import torch
from dropin_subclasses import AoImplemented, FsImplemented
from torch import nn
from torch.ao.pruning._experimental import data_sparsifier as ao_sparse
from torch.nn.utils.parametrize import is_parametrized

import fsparse
from fsparse import data_sparsifier as fs_sparse
from fsparse.data_sparsifier import BaseDataSparsifier, DataNormSparsifier

LIBS = {"fsparse": fs_sparse, "torch.ao": ao_sparse}


IMPLEMENTED = {"fsparse": FsImplemented, "torch.ao": AoImplemented}


class PureSparsifier(BaseDataSparsifier):
    """The pure alternative: return the new mask (keep the largest half by magnitude)."""

    def update_mask(self, name: str, data: torch.Tensor, **config: Any) -> torch.Tensor:
        return data.abs() >= data.abs().median()


def snapshot(sp: BaseDataSparsifier) -> dict[str, Any]:
    """Everything observable, deep-copied, for 'state unchanged' checks."""
    return {
        "sd": copy.deepcopy(sp.state_dict()),
        "masks": {n: sp.get_mask(n).clone() for n in sp.data_groups},
        "parametrized": {n: is_parametrized(sp._container, n) for n in sp.data_groups},
        "repr": repr(sp),
    }


def assert_unchanged(before: dict[str, Any], sp: BaseDataSparsifier) -> None:
    after = snapshot(sp)
    assert after["repr"] == before["repr"]
    assert after["parametrized"] == before["parametrized"]
    assert after["masks"].keys() == before["masks"].keys()
    for name, mask in before["masks"].items():
        assert torch.equal(after["masks"][name], mask)
    assert after["sd"]["data_groups"] == before["sd"]["data_groups"]
    for key, tensor in before["sd"]["_container"].items():
        assert torch.equal(after["sd"]["_container"][key], tensor)


# -- module tree -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "module",
    [
        "data_sparsifier",
        "data_sparsifier.base_data_sparsifier",
        "data_sparsifier.data_norm_sparsifier",
        "data_sparsifier.quantization_utils",
        "data_scheduler",
        "data_scheduler.base_data_scheduler",
    ],
)
def test_module_tree_mirrors_torch_ao(module: str) -> None:
    ao = importlib.import_module(f"torch.ao.pruning._experimental.{module}")
    ours = importlib.import_module(f"fsparse.{module}")
    defined_here = {n for n, v in vars(ao).items() if getattr(v, "__module__", None) == ao.__name__}
    constants = {n for n in vars(ao) if n.isupper() and len(n) > 1}
    public = {n for n in set(getattr(ao, "__all__", ())) | defined_here | constants}
    public = {n for n in public if not n.startswith("_")} - {"SUPPORTED_MODULES"}
    assert public
    assert public <= set(dir(ours)), public - set(dir(ours))


def test_supported_types_match_torch_ao() -> None:
    from torch.ao.pruning._experimental.data_sparsifier import base_data_sparsifier as ao

    from fsparse.data_sparsifier import base_data_sparsifier as ours

    assert set(ours.SUPPORTED_TYPES) == ao.SUPPORTED_TYPES
    assert set(ours.EMBEDDING_TYPES) == ao.EMBEDDING_TYPES


# -- constructor, data_groups, masks ---------------------------------------------------
@pytest.mark.parametrize("lib", LIBS)
def test_constructor_and_views(lib: str) -> None:
    data = [("t1", torch.randn(3, 8)), ("t2", torch.randn(4, 4))]
    sp = LIBS[lib].DataNormSparsifier(data, sparsity_level=0.7, sparse_block_shape=(2, 2))
    sp.add_data("t3", torch.randn(5, 5), sparsity_level=0.3)
    assert sp.defaults == {
        "sparsity_level": 0.7,
        "sparse_block_shape": (2, 2),
        "zeros_per_block": 4,
    }
    assert sp.data_groups["t1"] == sp.defaults
    assert sp.data_groups["t3"] == {**sp.defaults, "sparsity_level": 0.3}
    assert isinstance(sp.data_groups, defaultdict) and isinstance(sp.state, defaultdict)
    assert sp.enable_mask_update is True
    for name in ("t1", "t2", "t3"):
        mask = sp.get_mask(name)
        assert mask is sp.state[name]["mask"]
        assert mask is sp._container.parametrizations[name][0].mask
        assert mask.dtype == torch.float32 and float(1.0 - mask.mean()) == 0.0
        assert is_parametrized(sp._container, name)


@pytest.mark.parametrize("lib", LIBS)
def test_base_class_is_abstract(lib: str) -> None:
    with pytest.raises(TypeError):
        LIBS[lib].BaseDataSparsifier()


def test_mask_after_step_is_int8_and_same_object() -> None:
    sp = DataNormSparsifier([("w", torch.randn(4, 8))])
    before = sp.get_mask("w")
    sp.step()
    assert sp.get_mask("w") is before
    assert before.dtype == torch.int8 and set(before.unique().tolist()) == {0, 1}
    assert sp.core_state["w"].mask.dtype == torch.bool
    assert torch.equal(sp.core_state["w"].mask, before.bool())


def test_core_state_steps_like_the_sparsifier() -> None:
    """The wrapper's masks are the core's: fsparse.step on core_state gives the same masks."""
    data = {"a": torch.randn(6, 8), "b": torch.randn(5, 7)}
    sp = DataNormSparsifier(list(data.items()), sparsity_level=0.4, norm="L2")
    sp.data_groups["b"]["sparsity_level"] = 0.9  # a scheduler-style write
    core = sp.core_state
    assert isinstance(core, fsparse.SparsifierState)
    assert core["b"].config.sparsity_level == 0.9 and core["b"].config.norm == "L2"
    stepped = fsparse.step(core)
    sp.step()
    for name in data:
        assert torch.equal(sp.get_mask(name).bool(), stepped[name].mask)
        assert sp.core_state[name].data is data[name]


@pytest.mark.parametrize("lib", LIBS)
def test_data_is_attached_by_reference(lib: str) -> None:
    weight = nn.Parameter(torch.randn(4, 4))
    emb = nn.EmbeddingBag(6, 4)
    sp = LIBS[lib].DataNormSparsifier([("w", weight), ("e", emb)])
    assert sp.get_data("w") is weight and sp.get_data("e") is emb.weight
    assert sp._extract_weight(emb) is emb.weight
    weight.data = torch.randn(4, 4)
    assert torch.equal(sp.get_data("w"), weight)
    assert torch.equal(sp.get_data("w", return_original=False), weight)


@pytest.mark.parametrize("lib", LIBS)
def test_add_data_returns_sparsified_view_and_replace_semantics(lib: str) -> None:
    sp = LIBS[lib].DataNormSparsifier(sparsity_level=0.5)
    old = torch.randn(4, 8)
    old_copy = old.clone()
    sp.add_data("x", old, sparsity_level=0.75)
    sp.step()
    mask = sp.get_mask("x")
    new = torch.randn(4, 8)
    with pytest.warns(UserWarning, match="Replacing existing data"):
        out = sp.add_data("x", new, zeros_per_block=2)
    assert torch.equal(out, new * mask)
    assert sp.get_mask("x") is mask  # reuse_mask=True keeps the mask object
    assert sp.data_groups["x"] == {
        "sparsity_level": 0.75,
        "sparse_block_shape": (1, 4),
        "zeros_per_block": 2,
    }
    assert torch.equal(old, old_copy)  # the old mask is never applied to the old tensor
    with pytest.warns(UserWarning):
        sp.add_data("x", torch.randn(2, 2), reuse_mask=False)
    assert torch.equal(sp.get_mask("x"), torch.ones(2, 2))


# -- user subclasses -------------------------------------------------------------------
@pytest.mark.parametrize("lib", LIBS)
def test_torch_ao_style_in_place_subclass(lib: str) -> None:
    """torch.ao's own check_step, run unchanged under both libraries."""
    data = [
        ("t", torch.randn(4, 4)),
        ("p", nn.Parameter(torch.randn(3, 5))),
        ("e", nn.Embedding(5, 3)),
    ]
    sp = IMPLEMENTED[lib](data_list=data, test=3)
    for _ in range(3):
        sp.step()
    for name, _ in data:
        assert (sp.get_mask(name)[0] == 0).all()
        assert (sp.get_data(name, return_original=False)[0] == 0).all()
        assert sp.state[name]["step_count"] == 3
    sd = sp.state_dict()
    assert sd["state"]["t"]["step_count"] == 3


def test_pure_subclass_returns_new_mask() -> None:
    data = torch.randn(6, 6)
    sp = PureSparsifier([("w", data)], anything="goes")
    mask = sp.get_mask("w")
    sp.step()
    assert sp.get_mask("w") is mask and mask.dtype == torch.int8
    assert torch.equal(mask.bool(), data.abs() >= data.abs().median())
    assert torch.equal(sp.get_data("w", return_original=False), data * mask)
    assert sp.core_state["w"].config.extra("anything") == "goes"


def test_pure_subclass_with_wrong_shape_raises() -> None:
    class Bad(BaseDataSparsifier):
        def update_mask(self, name: str, data: torch.Tensor, **config: Any) -> torch.Tensor:
            return torch.ones(3)

    sp = Bad([("w", torch.randn(2, 2))])
    with pytest.raises(ValueError, match="update_mask"):
        sp.step()
    assert torch.equal(sp.get_mask("w"), torch.ones(2, 2))


def test_rebound_state_mask_is_adopted_by_the_parametrization() -> None:
    class Rebind(BaseDataSparsifier):
        def update_mask(self, name: str, data: torch.Tensor, **config: Any) -> None:
            self.state[name]["mask"] = torch.zeros_like(data)

    sp = Rebind([("w", torch.ones(2, 3))])
    sp.step()
    assert sp._container.parametrizations["w"][0].mask is sp.get_mask("w")
    assert torch.equal(sp.get_data("w", return_original=False), torch.zeros(2, 3))


# -- squash ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["tensor", "parameter", "embedding", "bias"])
def test_squash_writes_into_the_users_tensor_in_place(kind: str) -> None:
    module = nn.Embedding(6, 8)
    data: Any = {
        "tensor": torch.randn(6, 8),
        "parameter": nn.Parameter(torch.randn(6, 8)),
        "embedding": module,
        "bias": nn.Parameter(torch.randn(10)),
    }[kind]
    weight = module.weight if kind == "embedding" else data
    pointer, original = weight.data_ptr(), weight.detach().clone()
    view = weight.detach()[:2]
    sp = DataNormSparsifier([("x", data)], sparsity_level=0.5, sparse_block_shape=(1, 2))
    sp.step()
    mask = sp.get_mask("x")
    assert mask.shape == weight.shape
    sp.squash_mask()
    assert not is_parametrized(sp._container, "x")
    assert sp._container.x is weight
    assert weight.data_ptr() == pointer
    assert torch.equal(weight.detach(), original * mask)
    assert torch.equal(view, (original * mask)[:2])  # views of the tensor see it too
    assert 0.3 < float((weight == 0).float().mean()) < 0.7
    with pytest.raises(ValueError, match="squashed"):
        sp.get_data("x", return_original=True)
    assert torch.equal(sp.get_data("x", return_original=False), weight)


def test_squash_without_leaving_parametrized_keeps_the_data() -> None:
    data = torch.randn(4, 4)
    original = data.clone()
    sp = DataNormSparsifier([("x", data), ("y", torch.randn(4, 4))])
    sp.step()
    sp.squash_mask(names=["x"], leave_parametrized=False)
    assert torch.equal(data, original)
    assert not is_parametrized(sp._container, "x") and is_parametrized(sp._container, "y")
    sp.squash_mask()  # the rest; fsparse skips names already squashed
    assert not is_parametrized(sp._container, "y")


def test_replacing_squashed_data_works() -> None:
    sp = DataNormSparsifier([("x", torch.randn(4, 4))])
    sp.step()
    mask = sp.get_mask("x")
    sp.squash_mask()
    with pytest.warns(UserWarning):
        sp.add_data("x", torch.randn(4, 4))
    assert is_parametrized(sp._container, "x") and sp.get_mask("x") is mask
    sp.step()


def test_step_after_squash_raises_and_changes_nothing() -> None:
    sp = DataNormSparsifier([("x", torch.randn(4, 4)), ("y", torch.randn(4, 4))])
    sp.squash_mask(names=["y"])
    sp.data_groups["x"]["sparsity_level"] = 1.0
    before = snapshot(sp)
    with pytest.raises(ValueError, match="squashed"):
        sp.step()
    assert_unchanged(before, sp)


# -- torch.ao's plain bugs, fixed --------------------------------------------------------
@pytest.mark.parametrize("shape", [(12,), (12, 1), (1, 12), (3, 1, 4)])
def test_masks_keep_the_data_shape_where_torch_ao_does_not(shape: tuple[int, ...]) -> None:
    data = torch.randn(shape)
    ours = DataNormSparsifier([("x", data.clone())], sparse_block_shape=(1, 2))
    ref = ao_sparse.DataNormSparsifier([("x", data.clone())], sparse_block_shape=(1, 2))
    ours.step()
    ref.step()
    mask = ours.get_mask("x")
    assert mask.shape == data.shape
    assert torch.equal(mask.flatten(), ref.get_mask("x").flatten())  # same values
    assert torch.equal(ours.get_data("x", return_original=False), data * mask)
    if shape != (1, 12):
        assert ref.get_mask("x").shape != data.shape  # torch.ao's shape bug


def test_negative_sparsity_level_prunes_nothing() -> None:
    data = torch.randn(4, 8)
    ours = DataNormSparsifier([("x", data.clone())], sparsity_level=-0.5)
    ref = ao_sparse.DataNormSparsifier([("x", data.clone())], sparsity_level=-0.5)
    ours.step()
    ref.step()
    assert bool(ours.get_mask("x").all())
    assert not bool(ref.get_mask("x").all())  # torch.ao prunes all but the last blocks


# -- bad input -------------------------------------------------------------------------
@pytest.fixture
def loaded() -> DataNormSparsifier:
    sp = DataNormSparsifier(
        [("w", torch.randn(4, 8)), ("e", nn.Embedding(5, 4))], sparsity_level=0.5
    )
    sp.step()
    sp.state["w"]["note"] = 1
    return sp


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda sp: sp.add_data("a.b", torch.randn(2, 2)), ValueError, "'.'"),
        (lambda sp: sp.add_data("", torch.randn(2, 2)), ValueError, "name"),
        (lambda sp: sp.add_data(3, torch.randn(2, 2)), TypeError, "name"),
        (lambda sp: sp.add_data("items", torch.randn(2, 2)), ValueError, "'items' clashes"),
        (lambda sp: sp.add_data("training", torch.randn(2, 2)), ValueError, "clashes"),
        (lambda sp: sp.add_data("n", [1.0, 2.0]), TypeError, "list"),
        (lambda sp: sp.add_data("n", nn.Linear(2, 2)), TypeError, "Linear"),
        (lambda sp: sp.add_data("w", torch.randn(8, 4)), ValueError, "reuse_mask"),
        (
            lambda sp: sp.add_data("w", torch.randn(4, 8), zeros_per_block=5),
            ValueError,
            "zeros_per",
        ),
        (
            lambda sp: sp.add_data("n", torch.randn(4, 8), sparse_block_shape=(0, 2)),
            ValueError,
            "block",
        ),
        (lambda sp: sp.add_data("n", torch.randn(2, 2), mask=torch.ones(3)), ValueError, "mask"),
        (
            lambda sp: sp.add_data("n", torch.randn(2, 2).half(), mask=torch.ones(2, 2)),
            TypeError,
            "mask",
        ),
        (lambda sp: sp.get_mask("nope"), ValueError, "nope"),
        (lambda sp: sp.get_data("nope"), ValueError, "nope"),
        (lambda sp: sp.squash_mask(names=["w", "nope"]), ValueError, "nope"),
        (lambda sp: sp.squash_mask(names="w"), TypeError, "names"),
    ],
)
def test_bad_input_raises_and_changes_nothing(
    loaded: DataNormSparsifier, call: Any, error: type, match: str
) -> None:
    before = snapshot(loaded)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no replace warning either: it fails first
        with pytest.raises(error, match=match):
            call(loaded)
    assert_unchanged(before, loaded)
    assert loaded.state["w"]["note"] == 1


def test_bad_config_written_into_data_groups_fails_step_before_any_change(
    loaded: DataNormSparsifier,
) -> None:
    loaded.data_groups["e"]["zeros_per_block"] = 9
    before = snapshot(loaded)
    with pytest.raises(ValueError, match="zeros_per_block"):
        loaded.step()
    assert_unchanged(before, loaded)


def test_nan_data_names_the_entry() -> None:
    sp = DataNormSparsifier([("bad", torch.tensor([[float("nan"), 1.0, 2.0, 3.0]]))])
    with pytest.raises(ValueError, match=r"'bad'.*NaN"):
        sp.step()


def test_norm_is_validated_and_not_stored() -> None:
    with pytest.raises(ValueError, match="norm"):
        DataNormSparsifier(norm="L3")
    sp = DataNormSparsifier([("w", torch.randn(2, 4))], norm="L2")
    assert "norm" not in sp.data_groups["w"] and sp.norm == "L2"


# -- state dicts -----------------------------------------------------------------------
def _plain(value: Any) -> bool:
    if type(value) is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    if type(value) in (list, tuple):
        return all(_plain(v) for v in value)
    return type(value) in (int, float, str, bool, type(None), torch.Tensor)


def test_state_dict_is_plain_and_safe_loadable(loaded: DataNormSparsifier, tmp_path: Any) -> None:
    sd = loaded.state_dict()
    assert _plain(sd)
    assert sd["state"]["w"]["mask"].layout == torch.sparse_coo
    assert list(sd["_container"]) == ["parametrizations.w.original", "parametrizations.e.original"]
    path = tmp_path / "sparsifier.pt"
    torch.save(sd, path)
    restored = DataNormSparsifier()
    restored.load_state_dict(torch.load(path, weights_only=True))
    for name in ("w", "e"):
        assert torch.equal(restored.get_mask(name), loaded.get_mask(name))
        assert restored.get_mask(name).dtype == torch.int8
        assert restored.get_mask(name) is restored._container.parametrizations[name][0].mask
        assert torch.equal(restored.get_data(name), loaded.get_data(name))
    assert restored.data_groups == loaded.data_groups and restored.state["w"]["note"] == 1
    # torch.ao's own state dict is not safe-loadable (it holds defaultdicts)
    ref = ao_sparse.DataNormSparsifier([("w", torch.randn(4, 8))])
    torch.save(ref.state_dict(), path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_round_trip_then_step_matches_the_original(loaded: DataNormSparsifier) -> None:
    restored = DataNormSparsifier()
    restored.load_state_dict(loaded.state_dict())
    for sp in (loaded, restored):
        sp.data_groups["w"]["sparsity_level"] = 0.25
        sp.step()
    for name in ("w", "e"):
        assert torch.equal(restored.get_mask(name), loaded.get_mask(name))
    # the Lightning callbacks' flow: re-add fresh data under the loaded names, reusing masks
    with pytest.warns(UserWarning):
        restored.add_data("w", torch.randn(4, 8))
    assert restored.get_mask("w") is restored.state["w"]["mask"]


def test_torch_ao_state_dict_loads_into_fsparse_and_back() -> None:
    data = [("w", torch.randn(6, 8)), ("e", nn.EmbeddingBag(7, 4))]
    ref = ao_sparse.DataNormSparsifier(copy.deepcopy(data), sparsity_level=0.6, norm="L2")
    ref.step()
    ref.squash_mask(names=["e"])
    ours = DataNormSparsifier(norm="L2")
    ours.load_state_dict(ref.state_dict())
    assert ours.data_groups == ref.data_groups
    assert is_parametrized(ours._container, "w") and not is_parametrized(ours._container, "e")
    for name in ("w", "e"):
        assert torch.equal(ours.get_mask(name), ref.get_mask(name))
        assert torch.equal(ours.get_data(name, False), ref.get_data(name, False))
    # and fsparse's state dict loads into torch.ao (with the documented defaultdict fix-up)
    back = ao_sparse.DataNormSparsifier(norm="L2")
    back.load_state_dict(ours.state_dict())
    back.state = defaultdict(dict, back.state)
    for name in ("w", "e"):
        assert torch.equal(back.get_mask(name), ref.get_mask(name))
    back.squash_mask(names=["w"])
    ours.squash_mask(names=["w"])
    assert torch.equal(back.get_data("w", False), ours.get_data("w", False))
    back.add_data("new", torch.randn(2, 4))


def test_load_state_dict_not_strict_keeps_current_entries() -> None:
    source = DataNormSparsifier([("a", torch.randn(4, 4)), ("b", torch.randn(4, 4))])
    source.step()
    target = DataNormSparsifier([("b", torch.ones(2, 4)), ("c", torch.randn(3, 4))])
    target.load_state_dict(source.state_dict(), strict=False)
    assert list(target.data_groups) == ["a", "b", "c"]
    assert torch.equal(target.get_mask("a"), source.get_mask("a"))
    assert torch.equal(target.get_data("b"), torch.ones(2, 4))  # current wins
    target.step()


@pytest.mark.parametrize(
    ("corrupt", "match"),
    [
        (lambda sd: sd.pop("state"), "missing"),
        (lambda sd: sd.pop("_container"), "missing"),
        (lambda sd: sd["state"]["w"].pop("mask"), "mask"),
        (lambda sd: sd["data_groups"].pop("w"), "differ"),
        (lambda sd: sd["_container"].pop("parametrizations.e.original"), "'e'"),
        (lambda sd: sd["state"]["w"].update(mask=torch.ones(2, 2)), "shape"),
        (lambda sd: sd["data_groups"]["e"].update(zeros_per_block=99), "zeros_per_block"),
    ],
)
def test_malformed_state_dict_raises_and_changes_nothing(
    loaded: DataNormSparsifier, corrupt: Any, match: str
) -> None:
    sd = loaded.state_dict()
    corrupt(sd)
    target = DataNormSparsifier([("keep", torch.randn(3, 4))])
    before = snapshot(target)
    with pytest.raises(ValueError, match=match):
        target.load_state_dict(sd)
    assert_unchanged(before, target)


# -- pickling and repr ---------------------------------------------------------------
def test_pickle_keeps_everything_torch_ao_loses(loaded: DataNormSparsifier) -> None:
    loaded.enable_mask_update = False
    copied = pickle.loads(pickle.dumps(loaded))
    assert copied.norm == "L1" and copied.enable_mask_update is False
    assert repr(copied) == repr(loaded)
    for name in ("w", "e"):
        assert torch.equal(copied.get_mask(name), loaded.get_mask(name))
    copied.enable_mask_update = True
    copied.step()
    ref = ao_sparse.DataNormSparsifier([("w", torch.randn(4, 8))])
    assert not hasattr(pickle.loads(pickle.dumps(ref)), "norm")  # torch.ao's loss
    deep = copy.deepcopy(loaded)
    assert deep.get_data("w") is not loaded.get_data("w")


def test_repr_matches_torch_ao() -> None:
    data = [("w", torch.randn(4, 8))]
    ours = DataNormSparsifier(copy.deepcopy(data), sparsity_level=0.3)
    ref = ao_sparse.DataNormSparsifier(copy.deepcopy(data), sparsity_level=0.3)
    assert repr(ours) == repr(ref)
    assert "sparsity_level: 0.3" in repr(ours)


# -- a model's parameters, as the Lightning callbacks attach them ------------------------
def test_model_parameters_with_biases() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))
    params = dict(model.named_parameters())
    sp = DataNormSparsifier(sparsity_level=0.5, sparse_block_shape=(1, 4))
    for name, parameter in params.items():
        sp.add_data(name.replace(".", "_"), parameter)
    sp.step()
    for name, parameter in params.items():
        assert sp.get_mask(name.replace(".", "_")).shape == parameter.shape
    sp.squash_mask()
    for name, parameter in model.named_parameters():
        assert parameter is params[name]
        assert abs(float((parameter == 0).float().mean()) - 0.5) <= 0.25
    model(torch.randn(2, 8)).sum().backward()
