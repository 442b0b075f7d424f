"""Hostile input at the torch.ao drop-in: crafted state dicts, refused calls, unsupported tensors.

Every refused call must raise ``TypeError``/``ValueError`` and leave the sparsifier
exactly as it was (same entries, masks, buffers, configs), and a name whose call
failed stays usable.
"""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
import textwrap
import warnings
from typing import Any
from unittest import mock

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings
from torch import nn
from torch.nn.utils.parametrize import is_parametrized

from fsparse.data_scheduler import StepSLScheduler
from fsparse.data_sparsifier import DataNormSparsifier
from fsparse.data_sparsifier.base_data_sparsifier import FakeSparsity


class _Transposes(nn.Module):
    """A parametrization that torch refuses: it changes the data's shape."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.mask = mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.t()


def _sparsifier(**config: Any) -> DataNormSparsifier:
    """Two stepped entries (int8 masks)."""
    sp = DataNormSparsifier(sparsity_level=0.5, sparse_block_shape=(1, 4), **config)
    sp.add_data("a", torch.randn(8, 16, generator=torch.Generator().manual_seed(0)))
    sp.add_data("b", torch.randn(8, 16, generator=torch.Generator().manual_seed(1)))
    sp.step()
    return sp


def _snapshot(sp: DataNormSparsifier) -> dict[str, Any]:
    """Everything a refused call must leave unchanged (masks by object and value)."""
    masks = {n: sp.get_mask(n) for n in sp.data_groups}
    return {
        "names": list(sp.data_groups),
        "groups": {n: dict(g) for n, g in sp.data_groups.items()},
        "masks": {n: (m, m.clone()) for n, m in masks.items()},
        "buffers": [n for n, _ in sp._container.named_buffers()],
        "params": [n for n, _ in sp._container.named_parameters()],
        "parametrized": {n: is_parametrized(sp._container, n) for n in sp.data_groups},
        "data": {n: _plist(sp, n).original for n in sp.data_groups},
    }


def _assert_unchanged(sp: DataNormSparsifier, before: dict[str, Any]) -> None:
    after = _snapshot(sp)
    for key in ("names", "groups", "buffers", "params", "parametrized"):
        assert after[key] == before[key], key
    assert after["data"].keys() == before["data"].keys()
    assert all(after["data"][n] is before["data"][n] for n in before["data"])
    for name, (mask, values) in before["masks"].items():
        now = after["masks"][name][0]
        assert now is mask
        assert now.dtype == values.dtype and torch.equal(now, values)


def _plist(sp: DataNormSparsifier, name: str) -> Any:
    """The ParametrizationList of ``name`` (``_container.parametrizations[name]``)."""
    return getattr(sp._container.parametrizations, name)


def _saved(obj: Any) -> Any:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _bad_index_mask(index: int, shape: tuple[int, int] = (8, 16)) -> torch.Tensor:
    indices = torch.tensor([[0, 1], [0, index]])
    return torch.sparse_coo_tensor(
        indices, torch.ones(2, dtype=torch.int8), shape, check_invariants=False
    )


# -- 1. crafted state dicts -----------------------------------------------------------------


def test_out_of_range_sparse_mask_index_is_refused_before_any_write() -> None:
    sd = _sparsifier().state_dict()
    sd["state"]["a"]["mask"] = _bad_index_mask(100)  # would write past the (8, 16) buffer
    loaded = _saved(sd)
    target = _sparsifier()
    before = _snapshot(target)
    with pytest.raises(ValueError, match="not a valid sparse COO tensor"):
        target.load_state_dict(loaded)
    _assert_unchanged(target, before)
    with pytest.raises(ValueError, match="not a valid sparse COO tensor"):
        target.load_state_dict(loaded, strict=False)
    _assert_unchanged(target, before)


def test_huge_sparse_mask_index_does_not_crash_the_process(tmp_path: Any) -> None:
    """An index of 10**11 segfaulted in ``to_dense``; a child runs it (a crash spares pytest)."""
    path = tmp_path / "evil.pt"
    sd = _sparsifier().state_dict()
    sd["state"]["b"]["mask"] = _bad_index_mask(10**11)
    torch.save(sd, path)
    script = textwrap.dedent(
        f"""
        import torch
        from fsparse.data_sparsifier import DataNormSparsifier
        sd = torch.load({str(path)!r}, weights_only=True)
        sp = DataNormSparsifier()
        try:
            sp.load_state_dict(sd)
        except ValueError as err:
            print("refused:", str(err)[:60])
        """
    )
    command = [sys.executable, "-c", script]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "refused:" in run.stdout


def test_unpickling_validates_the_masks() -> None:
    sp = _sparsifier()
    good = sp.__getstate__()
    bad = {**good, "state": {**good["state"], "a": {"mask": _bad_index_mask(100)}}}
    with mock.patch.object(DataNormSparsifier, "__getstate__", lambda self: bad):
        payload = pickle.dumps(sp)
    with pytest.raises(ValueError, match="not a valid sparse COO tensor"):
        pickle.loads(payload)


@pytest.mark.parametrize(
    ("tensor", "error"),
    [
        (torch.ones(8, 16, dtype=torch.int64), TypeError),
        (torch.ones(8, 16).to_sparse_coo(), TypeError),
        (torch.ones(8, 16, dtype=torch.complex64), TypeError),
        (torch.ones(4, 16), ValueError),  # not the mask's shape
    ],
)
def test_container_data_from_a_file_is_checked(tensor: torch.Tensor, error: type) -> None:
    sd = _sparsifier().state_dict()
    sd["_container"]["parametrizations.a.original"] = tensor
    target = _sparsifier()
    before = _snapshot(target)
    with pytest.raises(error):
        target.load_state_dict(sd)
    _assert_unchanged(target, before)


def test_error_messages_from_a_file_are_bounded() -> None:
    sd = _sparsifier().state_dict()
    name = "x" * 1_000_000
    sd["state"][name] = sd["state"].pop("a")
    sd["data_groups"][name] = sd["data_groups"].pop("a")
    with pytest.raises(ValueError) as info:
        DataNormSparsifier().load_state_dict(sd)
    assert len(str(info.value)) < 1000


# -- 2. a failed call changes nothing -------------------------------------------------------


def test_step_computes_every_mask_before_writing_any() -> None:
    sp = _sparsifier()
    sp.data_groups["a"]["sparsity_level"] = 0.75  # would change a's mask
    sp.get_data("b")[0, 0] = float("nan")
    before = _snapshot(sp)
    with pytest.raises(ValueError, match="'b'"):
        sp.step()
    _assert_unchanged(sp, before)


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.bool])
def test_step_refuses_data_swapped_to_a_non_float_dtype(dtype: torch.dtype) -> None:
    sp = _sparsifier()
    sp.data_groups["a"]["sparsity_level"] = 0.75
    sp.get_data("b").data = torch.ones(8, 16, dtype=dtype)
    before = _snapshot(sp)
    with pytest.raises((TypeError, ValueError)):
        sp.step()
    _assert_unchanged(sp, before)


def test_step_with_a_block_larger_than_the_data() -> None:
    sp = _sparsifier()
    sp.add_data("c", torch.randn(8, 16), sparse_block_shape=(1, 2**40))
    sp.step()  # the block is fitted to the data: one block per row
    same = DataNormSparsifier(sparsity_level=0.5, sparse_block_shape=(1, 16), zeros_per_block=4)
    same.add_data("c", sp.get_data("c"))
    same.step()
    assert torch.equal(sp.get_mask("c"), same.get_mask("c"))


@pytest.mark.parametrize(
    "config",
    [
        {"parametrization": 5},
        {"parametrization": _Transposes},
        {"reuse_mask": False, "mask": torch.ones(8, 16, device="meta")},
        {"reuse_mask": False, "mask": torch.ones(8, 16).to_sparse_coo()},
        {"reuse_mask": False, "mask": torch.ones(8, 16, dtype=torch.float64)},
    ],
)
def test_replacing_with_bad_arguments_keeps_the_old_entry(config: dict[str, Any]) -> None:
    sp = _sparsifier()
    before = _snapshot(sp)
    with pytest.raises((TypeError, ValueError)):
        sp.add_data("a", torch.randn(8, 16), **config)
    _assert_unchanged(sp, before)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sp.add_data("a", torch.randn(8, 16))  # the name still works


def _quantized() -> torch.Tensor:
    return torch.quantize_per_tensor(torch.randn(8, 16), 0.1, 0, torch.qint8)


def _inference() -> torch.Tensor:
    with torch.inference_mode():
        return torch.randn(8, 16)


@pytest.mark.parametrize(
    ("name", "make", "config"),
    [
        ("c", lambda: torch.randn(8, 16), {"mask": torch.ones(8, 16, device="meta")}),
        ("c", lambda: torch.randn(8, 16), {"mask": torch.ones(8, 16).to_sparse_coo()}),
        ("c", _quantized, {}),
        ("c", lambda: torch.randn(8, 16).to_sparse_csr(), {}),
        ("c", _inference, {}),
        ("c", lambda: torch.ones(8, 16, dtype=torch.int32), {}),
        ("c", lambda: torch.ones(8, 16, dtype=torch.bool), {}),
        ("c", lambda: torch.ones(8, 16, dtype=torch.complex64), {}),
        ("c", lambda: torch.ones(8, 16, device="meta"), {}),
        ("parametrizations", lambda: torch.randn(8, 16), {}),
        ("training", lambda: torch.randn(8, 16), {}),
    ],
)
def test_a_refused_new_entry_leaves_no_trace(name: str, make: Any, config: dict[str, Any]) -> None:
    sp = _sparsifier()
    before = _snapshot(sp)
    with pytest.raises((TypeError, ValueError)) as info:
        sp.add_data(name, make(), **config)
    _assert_unchanged(sp, before)
    if info.type is TypeError and "mask" not in config:
        assert "data" in str(info.value)  # names the argument
    if name == "c":
        sp.add_data("c", torch.randn(8, 16))  # the name is still free
        assert is_parametrized(sp._container, "c")


def test_inference_data_gets_a_clear_error() -> None:
    with pytest.raises(TypeError, match="inference"):
        DataNormSparsifier([("w", _inference())])


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.randn(1, 16).expand(8, 16),
        lambda: torch.randn(100).as_strided((8, 16), (1, 1)),
    ],
)
def test_squash_refuses_data_whose_elements_share_memory(make: Any) -> None:
    sp = _sparsifier()
    data = make()
    sp.add_data("c", data)
    sp.step()
    values = data.clone()
    before = _snapshot(sp)
    with pytest.raises(ValueError, match="share memory"):
        sp.squash_mask()
    _assert_unchanged(sp, before)
    assert torch.equal(data, values)
    sp.squash_mask(leave_parametrized=False)  # nothing is written: allowed
    assert torch.equal(data, values)


def test_squash_writes_into_a_strided_slice() -> None:
    parent = torch.randn(8, 32)
    view = parent[:, ::2]
    sp = DataNormSparsifier(sparsity_level=0.5)
    sp.add_data("v", view)
    sp.step()
    expected = view * sp.get_mask("v")
    sp.squash_mask()
    assert torch.equal(parent[:, ::2], expected)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda sd: sd["state"]["z"].update(mask=torch.ones(8, 16, dtype=torch.float64)),
        lambda sd: sd["state"]["z"].update(mask=torch.ones(8, 16, dtype=torch.complex64)),
        lambda sd: sd["state"]["z"].update(mask=torch.ones(8, 16, device="meta")),
        lambda sd: sd["data_groups"]["z"].update(parametrization=_Transposes),
        lambda sd: sd["data_groups"]["z"].update(sparse_block_shape=(0, 4)),
        lambda sd: sd["state"].update(training=sd["state"].pop("z"))
        or sd["data_groups"].update(training=sd["data_groups"].pop("z"))
        or sd["_container"].update(
            {"parametrizations.training.original": sd["_container"]["parametrizations.z.original"]}
        ),
    ],
)
def test_load_not_strict_registers_nothing_before_a_later_entry_fails(tamper: Any) -> None:
    source = DataNormSparsifier(sparsity_level=0.5)
    for name in ("x", "y", "z"):
        source.add_data(name, torch.randn(8, 16))
    source.step()
    sd = source.state_dict()
    tamper(sd)
    target = _sparsifier()
    before = _snapshot(target)
    with pytest.raises((TypeError, ValueError)):
        target.load_state_dict(sd, strict=False)
    _assert_unchanged(target, before)
    with pytest.raises((TypeError, ValueError)):
        target.load_state_dict(sd)
    _assert_unchanged(target, before)


def test_a_raising_scheduler_constructor_leaves_the_sparsifier_alone() -> None:
    sp = _sparsifier()
    step = sp.step
    with pytest.raises(ValueError, match="nope"):
        StepSLScheduler(sp, schedule_param="nope")
    assert sp.step == step and not hasattr(sp.step, "_with_counter")
    assert not hasattr(sp, "_step_count")
    with pytest.raises(TypeError):
        StepSLScheduler(sp, last_epoch=1.5)  # type: ignore[arg-type]
    assert not hasattr(sp, "_step_count")


def test_a_failed_scheduler_step_keeps_its_epoch() -> None:
    sp = _sparsifier()
    sp.data_groups["b"]["sparsity_level"] = 0.0
    scheduler = StepSLScheduler(sp, gamma=2.0)
    sp.step()
    scheduler.last_epoch = 2000  # 0.0 * 2**2001 (inf) is NaN
    with pytest.raises(ValueError, match="NaN"):
        scheduler.step()
    assert scheduler.last_epoch == 2000
    assert sp.data_groups["a"]["sparsity_level"] == 0.5


# -- 5. masks are made when first read ------------------------------------------------------


def test_the_default_mask_is_made_on_first_read() -> None:
    sp = DataNormSparsifier()
    data = torch.randn(8, 16)
    sp.add_data("w", data)
    holder = _plist(sp, "w")[0]
    assert isinstance(holder, FakeSparsity) and holder.pending
    assert "w" in sp.state.pending and holder._buffers["mask"] is None
    assert torch.equal(sp.get_data("w", return_original=False), data)
    mask = sp.state["w"]["mask"]  # torch.ao's float ones, shared with the parametrization
    assert mask.dtype == torch.float32 and bool((mask == 1).all())
    assert holder.mask is mask and sp.get_mask("w") is mask and not sp.state.pending
    sp.step()
    assert sp.get_mask("w") is mask and mask.dtype == torch.int8


def test_every_reader_of_the_state_sees_the_made_mask() -> None:
    for read in (
        lambda sp: _plist(sp, "w")[0].mask,
        lambda sp: sp.state.get("w")["mask"],
        lambda sp: next(iter(sp.state.values()))["mask"],
        lambda sp: dict(sp.state)["w"]["mask"],
        lambda sp: pickle.loads(pickle.dumps(sp.state))["w"]["mask"],
    ):
        sp = DataNormSparsifier()
        sp.add_data("w", torch.randn(4, 8))
        mask = read(sp)
        assert mask.dtype == torch.float32 and bool((mask == 1).all())
        assert not sp.state.pending
        assert _plist(sp, "w")[0].mask is sp.get_mask("w")


def test_a_step_replaces_a_pending_mask_without_making_it() -> None:
    sp = DataNormSparsifier(sparsity_level=0.5)
    sp.add_data("w", torch.randn(8, 16))
    with mock.patch.object(torch, "ones_like", side_effect=AssertionError("made")):
        sp.step()
    mask = sp.get_mask("w")
    assert mask.dtype == torch.int8
    assert _plist(sp, "w")[0].mask is mask
    assert sp.state_dict()["state"]["w"]["mask"].dtype == torch.int8


@pytest.mark.parametrize("level", [0.0, 0.5])
def test_stepped_masks_are_independent_tensors(level: float) -> None:
    """Batched small entries (and all-ones masks) get masks of their own, as in torch.ao."""
    sp = DataNormSparsifier(sparsity_level=level, sparse_block_shape=(1, 4))
    for name in ("a", "b", "c"):
        sp.add_data(name, torch.randn(8, 16))
    sp.step()
    masks = [sp.get_mask(n) for n in ("a", "b", "c")]
    for mask in masks:
        assert mask.dtype == torch.int8 and mask.untyped_storage().nbytes() == mask.numel()
    before = [m.clone() for m in masks]
    masks[0][0, 0] = 7
    assert int(masks[0].ne(before[0]).sum()) == 1
    assert all(torch.equal(m, b) for m, b in zip(masks[1:], before[1:]))


def test_a_rebound_state_dict_is_adopted() -> None:
    """torch.ao code may rebind ``sparsifier.state`` (e.g. ``defaultdict(dict, state)``)."""
    from collections import defaultdict

    sp = DataNormSparsifier(sparsity_level=0.5)
    sp.add_data("w", torch.randn(8, 16))
    mask = sp.get_mask("w")
    sp.state = defaultdict(dict, sp.state)  # type: ignore[assignment]
    sp.step()
    assert sp.get_mask("w") is mask and mask.dtype == torch.int8
    assert sp.state_dict()["state"]["w"]["mask"].dtype == torch.int8


# -- fuzz: any argument at the door either works or is refused cleanly ----------------------

_DTYPES = [torch.float32, torch.float16, torch.float64, torch.int8, torch.uint8, torch.bool,
           torch.int64, torch.complex64]  # fmt: skip


def _tensor(kind: str, dtype: torch.dtype, shape: tuple[int, int]) -> torch.Tensor:
    base = torch.ones(shape, dtype=dtype) if dtype != torch.float32 else torch.randn(shape)
    if kind == "meta":
        return base.to("meta")
    if kind == "coo":
        return base.to_sparse_coo()
    if kind == "csr":
        return base.to_sparse_csr() if dtype != torch.bool else base.to_sparse_coo()
    if kind == "expanded":
        return base[:1].expand(shape)
    return base


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(["a", "c", "", "x.y", "training", "parametrizations", "items", 5]),
    kind=st.sampled_from(["dense", "meta", "coo", "csr", "expanded"]),
    dtype=st.sampled_from(_DTYPES),
    shape=st.sampled_from([(8, 16), (4, 16), (1, 16)]),
    mask=st.sampled_from([None, "dense", "meta", "coo", "wrong_shape", "float64", "bool"]),
    level=st.sampled_from([0.5, float("nan"), -1.0, 2.0, "x"]),
    reuse_mask=st.booleans(),
)
def test_add_data_fuzz_works_or_changes_nothing(
    name: Any, kind: str, dtype: torch.dtype, shape: tuple[int, int], mask: str | None,
    level: Any, reuse_mask: bool,
) -> None:  # fmt: skip
    sp = _sparsifier()
    data = _tensor(kind, dtype, shape)
    config: dict[str, Any] = {"sparsity_level": level}
    if mask is not None:
        mask_shape = (3, 3) if mask == "wrong_shape" else shape
        mask_dtype = {"float64": torch.float64, "bool": torch.bool}.get(mask, torch.float32)
        config["mask"] = _tensor(mask if mask in ("meta", "coo") else "dense", mask_dtype,
                                 mask_shape)  # fmt: skip
    before = _snapshot(sp)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sp.add_data(name, data, reuse_mask=reuse_mask, **config)
    except (TypeError, ValueError):
        _assert_unchanged(sp, before)
        return
    assert name in sp.data_groups
    sp.step()  # an accepted entry steps
    assert sp.get_mask(name).dtype == torch.int8


_TAMPERS: dict[str, Any] = {
    "mask_index": lambda e, g, t: e.update(mask=_bad_index_mask(10**6)),
    "mask_shape": lambda e, g, t: e.update(mask=torch.ones(3, 3).to_sparse_coo()),
    "mask_dtype": lambda e, g, t: e.update(mask=torch.ones(8, 16, dtype=torch.complex64)),
    "mask_csr": lambda e, g, t: e.update(mask=torch.ones(8, 16).to_sparse_csr()),
    "mask_list": lambda e, g, t: e.update(mask=[1, 2]),
    "no_mask": lambda e, g, t: e.pop("mask"),
    "data_int": lambda e, g, t: t.update({k: torch.ones(8, 16, dtype=torch.int64) for k in t}),
    "data_meta": lambda e, g, t: t.update({k: torch.ones(8, 16, device="meta") for k in t}),
    "data_missing": lambda e, g, t: t.clear(),
    "level_nan": lambda e, g, t: g.update(sparsity_level=float("nan")),
    "block_bad": lambda e, g, t: g.update(sparse_block_shape="1x4"),
    "key_int": lambda e, g, t: g.update({3: 4}),
    "extra_ok": lambda e, g, t: e.update(step_count=3),
}


@settings(max_examples=40, deadline=None)
@given(
    tamper=st.sampled_from(sorted(_TAMPERS)),
    which=st.sampled_from(["a", "b"]),
    strict=st.booleans(),
)
def test_load_state_dict_fuzz_loads_or_changes_nothing(
    tamper: str, which: str, strict: bool
) -> None:
    source = DataNormSparsifier(sparsity_level=0.5)
    for name in ("a", "b", "z"):
        source.add_data(name, torch.randn(8, 16))
    source.step()
    sd = source.state_dict()
    tensors = {k: v for k, v in sd["_container"].items() if f".{which}." in k}
    _TAMPERS[tamper](sd["state"][which], sd["data_groups"][which], tensors)
    sd["_container"] = {
        **{k: v for k, v in sd["_container"].items() if f".{which}." not in k}, **tensors
    }
    target = _sparsifier() if not strict else DataNormSparsifier()
    before = _snapshot(target)
    try:
        target.load_state_dict(_saved(sd) if tamper != "mask_list" else sd, strict=strict)
    except (TypeError, ValueError):
        _assert_unchanged(target, before)
        return
    assert tamper == "extra_ok" or (not strict and which in ("a", "b"))  # kept names win
    target.step()


def test_schedulers_at_huge_epochs_do_not_overflow() -> None:
    from fsparse.data_scheduler import CubicSLScheduler

    sp = _sparsifier()
    StepSLScheduler(sp, gamma=2.0, last_epoch=2000)  # 0.5 * 2**2001: unclamped, as StepLR
    assert sp.data_groups["a"]["sparsity_level"] == float("inf")
    sp.step()  # the level is clamped to 1 when the mask is computed
    assert not bool(sp.get_mask("a").any())
    other = _sparsifier()
    CubicSLScheduler(other, final_sparsity=0.8, num_updates=4, last_epoch=10**400)
    assert other.data_groups["a"]["sparsity_level"] == 0.8
