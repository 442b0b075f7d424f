"""Regression tests of issue 10 for the functional core: bounded work, checks at the door."""

from __future__ import annotations

import math
import pickle
import warnings
from collections.abc import Callable
from typing import Any

import optree
import pytest
import torch
import torch.utils._pytree as torch_pytree
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.ao.pruning._experimental.data_sparsifier import DataNormSparsifier

import fsparse
from fsparse._src.engine.chunked_mask import large_norm_mask

# -- 1. a block larger than the data is fitted to it -------------------------------------


@pytest.mark.parametrize(
    ("block", "fitted"), [((10**5, 10**5), (8, 16)), ((1, 2**40), (1, 16)), ((3, 10**9), (3, 16))]
)
@pytest.mark.parametrize("zeros", [None, 1, 5])
def test_huge_block_gives_the_fitted_blocks_mask(block: tuple, fitted: tuple, zeros: Any) -> None:
    data = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    fitted_zeros = zeros if zeros is None else min(zeros, fitted[0] * fitted[1])
    expected = fsparse.norm_mask(data, 1.0, fitted, fitted_zeros)
    assert torch.equal(fsparse.norm_mask(data, 1.0, block, zeros), expected)
    config = fsparse.make_config(
        sparsity_level=1.0, sparse_block_shape=block, zeros_per_block=zeros
    )
    assert torch.equal(large_norm_mask(data, config, chunk_elements=16), expected)
    assert torch.equal(fsparse.stacked_norm_mask(data[None], config)[0], expected)
    assert torch.equal(fsparse.channels_last_mask(data, config), expected)


def test_huge_block_on_the_chunked_path_and_in_the_state() -> None:
    data = torch.randn(200, 100, generator=torch.Generator().manual_seed(1))  # chunked size
    state = fsparse.step(fsparse.init({"w": data}, sparsity_level=1.0,
                                      sparse_block_shape=(40000, 40000), zeros_per_block=7))
    assert torch.equal(state["w"].mask, fsparse.norm_mask(data, 1.0, (200, 100), 7))
    assert int((~state["w"].mask).sum()) == 7


def test_block_scores_means_and_global_levels_with_huge_blocks() -> None:
    data = torch.randn(8, 16)
    config = fsparse.make_config(sparse_block_shape=(10**5, 2**40))
    fitted = fsparse.make_config(sparse_block_shape=(8, 16))
    assert torch.equal(fsparse.block_scores(data, config), fsparse.block_scores(data, fitted))
    assert torch.allclose(fsparse.block_scores(data, config), data.abs().mean().reshape(1))
    means = fsparse.block_means(data.abs(), (10**5, 10**5))
    assert means.shape == (1, 1) and torch.allclose(means[0, 0], data.abs().mean())
    levels = fsparse.global_levels({"a": data, "b": data * 2}, {"a": config, "b": config}, 0.5)
    assert levels == {"a": 1.0, "b": 0.0}


@settings(max_examples=60, deadline=None)
@given(
    st.tuples(st.integers(1, 6), st.integers(1, 7)),
    st.tuples(st.integers(1, 14), st.integers(1, 16)),
    st.floats(0, 1),
    st.integers(0, 2**31),
    st.data(),
)
def test_blocks_past_the_data_match_torch_ao(shape, block, level, seed, draw) -> None:  # type: ignore[no-untyped-def]
    data = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assume(data.squeeze().dim() >= 1)  # torch.ao crashes on single elements
    zeros = draw.draw(st.one_of(st.none(), st.integers(0, block[0] * block[1])))
    ours = fsparse.norm_mask(data, level, block, zeros)
    sparsifier = DataNormSparsifier(
        sparsity_level=level, sparse_block_shape=block, zeros_per_block=zeros
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sparsifier.add_data("x", data)
        sparsifier.step()
    assert torch.equal(ours, sparsifier.get_mask("x").reshape(data.shape).bool())


# -- 3. tensors and arguments checked at the door ----------------------------------------

T = torch.randn(8, 16)
CFG = fsparse.make_config()
STATE = fsparse.init({"w": T})
SCHED = fsparse.Scheduler(fsparse.linear(0.0, 0.5, 4))

with warnings.catch_warnings():  # CSR is "beta", quantized tensors "deprecated"
    warnings.simplefilter("ignore")
    BAD_DATA = [
        torch.tensor([[3, 3, 3, 2, 2, 2, 2, 3]]),
        torch.ones(2, 4, dtype=torch.bool),
        torch.ones(2, 4, dtype=torch.complex64),
        torch.ones(2, 4, device="meta"),
        torch.ones(2, 4).to_sparse(),
        torch.ones(2, 4).to_sparse_csr(),
        torch.quantize_per_tensor(torch.ones(2, 4), 0.1, 0, torch.quint8),
    ]
DATA_DOORS: list[Callable[[torch.Tensor], object]] = [
    lambda t: fsparse.norm_mask(t),
    lambda t: fsparse.config_norm_mask(t, CFG),
    lambda t: fsparse.norm_scores(t, "L1"),
    lambda t: fsparse.block_means(t, (1, 2)),
    lambda t: fsparse.select_k_smallest(t, 1),
    lambda t: fsparse.channels_last_mask(t, CFG),
    lambda t: fsparse.existing_zeros_mask(t, CFG),
    lambda t: fsparse.block_scores(t, CFG),
    lambda t: fsparse.global_levels({"a": t}, {"a": CFG}, 0.5),
    lambda t: fsparse.stacked_norm_mask(t, CFG),
    lambda t: fsparse.init({"a": t}),
    lambda t: fsparse.add(STATE, "a", t),
]


@pytest.mark.parametrize("data", BAD_DATA, ids=lambda t: f"{t.dtype}-{t.layout}-{t.device}")
@pytest.mark.parametrize("door", range(len(DATA_DOORS)))
def test_unsupported_tensors_raise_type_error_at_every_door(data: torch.Tensor, door: int) -> None:
    with pytest.raises(TypeError, match=r"must be|must not|must hold"):
        DATA_DOORS[door](data)


def test_integer_data_is_refused_not_truncated() -> None:
    data = torch.tensor([[3, 3, 3, 2, 2, 2, 2, 3]])
    with pytest.raises(TypeError, match=r"data.*floating-point.*got dtype torch.int64"):
        fsparse.step(fsparse.init({"w": data}, sparsity_level=0.5))
    # the float data ranks the 2.25 block below the 2.75 one
    assert fsparse.norm_mask(data.float(), 0.5).tolist() == [[True] * 4 + [False] * 4]


def test_nan_and_inf_are_refused_where_they_cannot_be_ranked() -> None:
    cfg = fsparse.make_config(sparse_block_shape=(1, 1))
    for level in (0.0, 1.0, 0.5):
        with pytest.raises(ValueError, match="NaN"):
            fsparse.global_levels({"a": torch.tensor([float("nan"), 1.0])}, {"a": cfg}, level)
    with pytest.raises(ValueError, match="NaN"):
        fsparse.select_k_smallest(torch.tensor([math.nan, math.nan, 1.0]), 2)
    assert fsparse.select_k_smallest(torch.tensor([math.inf, 0.0, 1.0]), 2).tolist() == [
        False, True, True
    ]
    with pytest.raises(ValueError, match="NaN"):
        fsparse.existing_zeros_mask(torch.tensor([0.0, math.nan]), None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_finite_overflow_message_is_honest(dtype: torch.dtype) -> None:
    data = torch.full((4, 8), 3e38 if dtype == torch.float32 else 6e4, dtype=dtype)
    if dtype == torch.float16:
        data = data.float() * 5e33
    with pytest.raises(ValueError, match="overflows float32") as info:
        fsparse.norm_mask(data, 0.5, (1, 4), norm="L1")
    assert "use norm='L1'" not in str(info.value)
    assert "float64" in str(info.value)
    mask = fsparse.norm_mask(data.double(), 0.5, (1, 4), norm="L1")
    assert int((~mask).sum()) == 16


LEAKS: list[tuple[Callable[[], object], type, str]] = [
    (lambda: fsparse.step({"w": T}), TypeError, "state must be a SparsifierState"),  # type: ignore[arg-type]
    (lambda: fsparse.make_config({"sparsity_level": 0.5}), TypeError, "base"),  # type: ignore[arg-type]
    (lambda: fsparse.schedule(SCHED, None, STATE), TypeError, "scheduler_state"),  # type: ignore[arg-type]
    (lambda: fsparse.make_config(sparsity_level=10**400), ValueError, "sparsity_level"),
    (lambda: fsparse.polynomial(1.0, 0.0, -1, 4)(4), ValueError, "power"),
    (lambda: fsparse.select_k_smallest(torch.tensor(1.0), 1), ValueError, "values"),
    (lambda: fsparse.init([("a",)]), TypeError, "pair"),  # type: ignore[list-item]
    (lambda: fsparse.init([1]), TypeError, "pair"),  # type: ignore[list-item]
    (lambda: fsparse.init(5), TypeError, "mapping"),  # type: ignore[arg-type]
    (lambda: fsparse.step(STATE, mask_fn=0), TypeError, "mask_fn"),  # type: ignore[arg-type]
    (lambda: fsparse.Scheduler(5), TypeError, "schedule"),  # type: ignore[arg-type]
    (lambda: fsparse.Scheduler(fsparse.step_sl(2.0), param="block_size"), ValueError, "param"),
    (lambda: fsparse.Scheduler(fsparse.step_sl(2.0), param=["x"]), TypeError, "param"),  # type: ignore[arg-type]
    (lambda: fsparse.Scheduler(fsparse.step_sl(2.0), relative=1), TypeError, "relative"),  # type: ignore[arg-type]
    (lambda: fsparse.sparsity(None), TypeError, "state"),  # type: ignore[arg-type]
    (lambda: fsparse.squash([]), TypeError, "state"),  # type: ignore[arg-type]
    (lambda: fsparse.sparsified("s"), TypeError, "state"),  # type: ignore[arg-type]
    (lambda: fsparse.masks_state_dict({}), TypeError, "state"),  # type: ignore[arg-type]
    (lambda: fsparse.load_masks(STATE, [1]), TypeError, "packed"),  # type: ignore[arg-type]
    (lambda: fsparse.norm_mask(T, norm=["L1"]), ValueError, "norm"),  # type: ignore[arg-type]
    (lambda: fsparse.norm_scores(T, torch.ones(2)), ValueError, "norm"),  # type: ignore[arg-type]
    (lambda: fsparse.global_levels([T], {}, 0.5), TypeError, "data"),  # type: ignore[arg-type]
    (lambda: fsparse.global_levels({"a": T}, {"a": {}}, 0.5), TypeError, "configs"),  # type: ignore[dict-item]
    (lambda: fsparse.global_levels({"a": T}, {"a": CFG}, "x"), TypeError, "level"),  # type: ignore[arg-type]
    (lambda: fsparse.config_norm_mask(T, {}), TypeError, "config"),  # type: ignore[arg-type]
    (lambda: fsparse.block_means(T, [[1], [2]]), ValueError, "sparse_block_shape"),  # type: ignore[arg-type]
    (lambda: fsparse.unpack_mask(torch.ones(1, dtype=torch.uint8), (8.0,)), TypeError, "shape"),  # type: ignore[arg-type]
    (lambda: fsparse.cubic(0.0, 0.8)("3"), TypeError, "t"),  # type: ignore[arg-type]
    (lambda: fsparse.cubic(0.0, 0.8, begin_step=0.5), TypeError, "begin_step"),  # type: ignore[arg-type]
    (lambda: fsparse.lambda_sl(lambda t: "x")(1), TypeError, "fn"),  # type: ignore[arg-type, return-value]
]


@pytest.mark.parametrize(("call", "error", "needle"), LEAKS)
def test_leaked_errors_become_messages_naming_the_argument(
    call: Callable[[], object], error: type, needle: str
) -> None:
    with pytest.raises(error, match=needle):
        call()


def test_schedules_do_not_overflow() -> None:
    assert fsparse.step_sl(2.0)(1100) == math.inf
    assert fsparse.step_sl(-2.0)(1101) == -math.inf
    assert fsparse.step_sl(2.0, init_value=0.0)(1100) == 0.0
    assert fsparse.polynomial(1.0, 0.0, 2.0, 4)(10**400) == 0.0
    assert fsparse.cubic(0.0, 0.8)(10**400) == 0.8
    state = fsparse.init({"w": T}, sparsity_level=0.25)
    sched = fsparse.Scheduler(fsparse.step_sl(2.0), relative=True)
    _, new = fsparse.schedule(sched, fsparse.SchedulerState(1099, {"w": 0.25}), state)
    assert new["w"].config.sparsity_level == math.inf
    assert bool((~fsparse.step(new)["w"].mask).all())  # clamped to 1 in the mask


def test_nan_schedule_value_is_refused_and_changes_nothing() -> None:
    state = fsparse.init({"w": T}, sparsity_level=0.25)
    for sched in (
        fsparse.Scheduler(fsparse.lambda_sl(lambda t: math.nan), relative=True),
        fsparse.Scheduler(lambda t: math.nan),
        fsparse.Scheduler(lambda t: "x", relative=True),  # type: ignore[arg-type, return-value]
    ):
        sched_state = sched.init(state)
        with pytest.raises((ValueError, TypeError)):
            fsparse.schedule(sched, sched_state, state)
        assert state["w"].config.sparsity_level == 0.25 and sched_state.last_epoch == -1
    # absolute schedules of non-float keys still work
    sched = fsparse.Scheduler(lambda t: 2, param="zeros_per_block")
    _, new = fsparse.schedule(sched, sched.init(state), state)
    assert new["w"].config.zeros_per_block == 2


def test_entry_and_state_validate_their_parts() -> None:
    with pytest.raises(ValueError, match="shape"):
        fsparse.Entry(T, torch.ones(16, dtype=torch.bool), CFG)
    with pytest.raises(TypeError, match="bool"):
        fsparse.Entry(T, torch.ones(8, 16), CFG)
    with pytest.raises(TypeError, match="floating-point"):
        fsparse.Entry(T.long(), torch.ones(8, 16, dtype=torch.bool), CFG)
    with pytest.raises(TypeError, match="config"):
        fsparse.Entry(T, torch.ones(8, 16, dtype=torch.bool), {})  # type: ignore[arg-type]
    entry = STATE["w"]
    with pytest.raises(ValueError, match=r"'\.'"):
        fsparse.SparsifierState({"a.b": entry})
    with pytest.raises(TypeError, match="Entry"):
        fsparse.SparsifierState({"a": (T, T)})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="defaults"):
        fsparse.SparsifierState({"a": entry}, {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        fsparse.add(STATE, "m", T, mask=torch.ones(16))


def test_state_entries_are_read_only_and_a_given_dict_is_copied() -> None:
    given = {"w": STATE["w"]}
    state = fsparse.SparsifierState(given, CFG)
    given["x"] = STATE["w"]
    assert state.names == ("w",)
    with pytest.raises(TypeError):
        state.entries["x"] = STATE["w"]  # type: ignore[index]
    with pytest.raises((AttributeError, TypeError)):
        state.entries._items = {}  # type: ignore[attr-defined]
    assert dict(state.entries) == {"w": STATE["w"]} and next(iter(state.entries.items()))[0] == "w"
    assert {**state.entries}.keys() == {"w"}
    clone = pickle.loads(pickle.dumps(state))
    assert torch.equal(clone["w"].data, state["w"].data)


def test_pytrees_and_transforms_still_rebuild_the_state() -> None:
    state = fsparse.step(fsparse.init({"a": torch.randn(4, 4), "b": torch.randn(8)}))
    paths = optree.tree_flatten_with_path(state)[0]  # type: ignore[arg-type]
    assert paths[0] == ("entries", "a", "data")
    zeros: Any = optree.tree_map(lambda x: 0, state)  # type: ignore[arg-type]
    assert zeros["a"].data == 0  # non-tensor leaves are not validated
    doubled = torch_pytree.tree_map(lambda x: x * 2 if x.is_floating_point() else x, state)
    assert torch.equal(doubled["b"].data, state["b"].data * 2)

    def norm_of(batch: torch.Tensor) -> torch.Tensor:
        entry = fsparse.Entry(batch, state["a"].mask, state["a"].config)
        return fsparse.sparsified(fsparse.SparsifierState({"a": entry}))["a"].sum()

    stacked = torch.stack([state["a"].data, 2 * state["a"].data])
    out = torch.vmap(norm_of)(stacked)
    assert torch.allclose(out[1], 2 * out[0])


def test_load_masks_refuses_a_float_shape() -> None:
    state = fsparse.step(fsparse.init({"w": torch.randn(4, 16)}))
    packed = fsparse.masks_state_dict(state)
    packed["w"]["shape"] = torch.tensor([4.0, 16.9])
    with pytest.raises(TypeError, match="shape"):
        fsparse.load_masks(state, packed)


def test_mask_on_another_device_or_of_complex_dtype_is_refused() -> None:
    with pytest.raises(TypeError, match="mask"):
        fsparse.add(STATE, "m", T, mask=torch.ones(8, 16, dtype=torch.complex64))
    with pytest.raises(TypeError, match="mask"):
        fsparse.add(STATE, "m", T, mask=torch.ones(8, 16, device="meta"))


# -- 4. bookkeeping linear in the entries --------------------------------------------------


def _count_states(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    built = [0]
    original = fsparse.SparsifierState.__post_init__

    def counting(self: fsparse.SparsifierState) -> None:
        built[0] += 1
        original(self)

    monkeypatch.setattr(fsparse.SparsifierState, "__post_init__", counting)
    return built


def test_init_load_masks_step_and_schedule_build_one_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = {f"t{i}": torch.randn(2, 4) for i in range(200)}
    built = _count_states(monkeypatch)
    state = fsparse.init(data, sparsity_level=0.5)
    assert built[0] == 1  # not one per entry (a dict copy each: quadratic)
    stepped = fsparse.step(state)
    packed = fsparse.masks_state_dict(stepped)
    built[0] = 0
    loaded = fsparse.load_masks(state, packed)
    assert built[0] == 1
    assert all(torch.equal(loaded[n].mask, stepped[n].mask) for n in data)
    built[0] = 0
    fsparse.schedule(SCHED, SCHED.init(state), state)
    fsparse.step(state)
    assert built[0] == 2
