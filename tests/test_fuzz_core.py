"""Fuzzing every public function of the functional core with hostile arguments.

Each public callable in ``fsparse.__all__`` gets arguments that are, parameter by
parameter, either plausible or hostile (wrong types; int, bool, complex, meta,
sparse and quantized tensors; NaN/Inf; huge ints and odd block shapes; bad names;
nested junk). Only ``TypeError``/``ValueError`` (``KeyError`` for a missing
name, as documented) may come out, and no input tensor may change: neither its
values nor its version counter.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fsparse

ALLOWED = (TypeError, ValueError, KeyError)
pytestmark = pytest.mark.filterwarnings(
    "ignore:Sparse CSR tensor support:UserWarning", "ignore:torch.quantize_per_tensor:UserWarning"
)
SETTINGS = settings(
    max_examples=int(os.environ.get("FSPARSE_FUZZ_EXAMPLES", "20")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

SHAPES = st.sampled_from(
    [(), (0,), (1,), (7,), (4, 8), (3, 1, 5), (2, 3, 2, 2), (1, 1), (9, 0), (0, 3, 4)]
)
DTYPES = st.sampled_from(
    [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int8,
     torch.uint8, torch.bool, torch.complex64]
)
FILLS = st.sampled_from(["randn", "nan", "inf", "huge", "zeros", "ties"])


@st.composite
def dense(draw: st.DrawFn, dtype: Any = DTYPES) -> torch.Tensor:
    shape, kind = draw(SHAPES), draw(dtype)
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    base = torch.randn(shape, generator=gen, dtype=torch.float64)
    fill = draw(FILLS)
    if fill == "nan" and base.numel():
        base.view(-1)[0] = math.nan
    elif fill == "inf" and base.numel():
        base.view(-1)[-1] = -math.inf
    elif fill == "huge":
        base = base * 3e38
    elif fill == "zeros":
        base = torch.zeros(shape, dtype=torch.float64)
    elif fill == "ties":
        base = torch.round(base)
    if kind == torch.bool:
        out = base > 0
    elif not kind.is_floating_point and not kind.is_complex:
        out = base.clamp(-100, 100).nan_to_num().to(kind)
    else:
        out = base.to(kind)
    if draw(st.booleans()) and out.dim() >= 2:
        out = out.transpose(0, -1)  # non-contiguous
    return out


@st.composite
def odd_tensor(draw: st.DrawFn) -> torch.Tensor:
    kind = draw(st.sampled_from(["meta", "coo", "csr", "quantized", "expanded", "param"]))
    if kind == "meta":
        return torch.empty(draw(SHAPES), device="meta")
    if kind == "coo":
        return torch.randn(4, 8).to_sparse()
    if kind == "csr":
        return torch.randn(4, 8).to_sparse_csr()
    if kind == "quantized":
        return torch.quantize_per_tensor(torch.randn(4, 8), 0.1, 0, torch.quint8)
    if kind == "expanded":
        return torch.randn(1, 8).expand(4, 8)
    return torch.nn.Parameter(torch.randn(4, 8))


TENSORS = st.one_of(dense(), dense(st.just(torch.float32)), odd_tensor())
JUNK_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([10**400, -(10**400), 2**63, -1, 0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.complex_numbers(allow_nan=True),
    st.text(max_size=8),
    st.sampled_from(["", "a.b", "w", "x" * 300, "L1", "L2", "parametrizations"]),
    st.binary(max_size=4),
    st.just(object()),
)
JUNK = st.recursive(
    st.one_of(JUNK_LEAVES, TENSORS),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=3), inner, max_size=3),
    ),
    max_leaves=6,
)
BLOCKS = st.one_of(
    st.tuples(st.integers(1, 5), st.integers(1, 5)),
    st.sampled_from([(10**5, 10**5), (1, 2**40), (2**62, 3), (10**400, 1), (0, 4), (1, -2),
                     (1.0, 4), (True, 2), (1, 2, 3), [2, 2]]),
)
LEVELS = st.one_of(st.floats(-2, 3), st.sampled_from([math.nan, math.inf, -math.inf, 10**400]))
NAMES = st.one_of(st.sampled_from(["w", "v", "b", "missing", "a.b", "", "x" * 200]), JUNK_LEAVES)


def _config_value(draw: st.DrawFn) -> Any:
    if draw(st.booleans()):
        return draw(JUNK)
    block = draw(st.tuples(st.integers(1, 5), st.integers(1, 5)))
    huge = draw(st.sampled_from([None, (10**5, 10**5), (1, 2**40)]))
    return fsparse.make_config(
        sparsity_level=draw(st.floats(-0.5, 1.5)),
        sparse_block_shape=huge or block,
        zeros_per_block=draw(st.one_of(st.none(), st.integers(0, block[0] * block[1]))),
        norm=draw(st.sampled_from(fsparse.NORMS)),
    )


@st.composite
def configs(draw: st.DrawFn) -> Any:
    return _config_value(draw)


@st.composite
def states(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 4)) == 0:
        return draw(JUNK)
    data = {name: draw(dense(st.sampled_from([torch.float32, torch.float64])))
            for name in draw(st.lists(st.sampled_from(["w", "v", "b"]), max_size=3, unique=True))}
    config = draw(configs())
    if not isinstance(config, fsparse.SparsityConfig):
        config = fsparse.make_config()
    return fsparse.init(data, defaults=config)


def _mask_fns() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.just(fsparse.existing_zeros_mask),
        st.just(fsparse.channels_last_mask),
        st.just(lambda data, config: "junk"),
        st.just(lambda data, config: torch.ones(3)),
        st.just(lambda data, config: torch.ones(data.shape, dtype=torch.complex64)),
        JUNK_LEAVES,
    )


def _schedules() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.just(fsparse.cubic(0.0, 0.8)),
        st.just(fsparse.step_sl(2.0)),
        st.just(lambda t: math.nan),
        st.just(lambda t: "x"),
        st.just(lambda t: 10**400),
        st.just(lambda t: (1, 2)),
        JUNK_LEAVES,
    )


@st.composite
def schedulers(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 3)) == 0:
        return draw(JUNK)
    return fsparse.Scheduler(
        draw(st.sampled_from([fsparse.cubic(0.0, 0.8), fsparse.step_sl(2.0), lambda t: 0.5])),
        draw(st.sampled_from(["sparsity_level", "zeros_per_block", "norm", "temperature"])),
        draw(st.booleans()),
    )


@st.composite
def scheduler_states(draw: st.DrawFn) -> Any:
    if draw(st.booleans()):
        return draw(JUNK)
    epoch = draw(st.one_of(st.integers(-3, 2000), st.sampled_from([10**400, 1.5, None])))
    bases = draw(st.one_of(st.just({}), st.dictionaries(st.sampled_from(["w", "v"]), JUNK_LEAVES)))
    return fsparse.SchedulerState(epoch, bases)  # type: ignore[arg-type]


@st.composite
def packed_masks(draw: st.DrawFn) -> Any:
    if draw(st.booleans()):
        return draw(JUNK)
    shape = draw(st.one_of(
        st.just(torch.tensor([4, 8])),
        st.just(torch.tensor([4.0, 8.9])),
        st.just([4, 8]),
        st.just(torch.tensor([10**18, 10**18])),
        JUNK,
    ))
    bits = draw(st.one_of(st.just(torch.zeros(4, dtype=torch.uint8)), TENSORS))
    name = draw(NAMES)
    try:
        return {name: {"bits": bits, "shape": shape}}
    except TypeError:  # an unhashable drawn name
        return {"w": {"bits": bits, "shape": shape}}


def _an_entry(state: Any) -> Any:
    return state["w"] if isinstance(state, fsparse.SparsifierState) and "w" in state else None


def either(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A plausible value most of the time, else anything hostile."""
    return st.one_of(valid, valid, JUNK)


INTS = st.one_of(st.integers(-5, 50), st.sampled_from([10**400, 2**63]))
SHAPE_MAPS = st.dictionaries(NAMES, SHAPES | st.lists(INTS, max_size=3), max_size=3)
PATTERNS = st.sampled_from(["unstructured", "channel", "1x4", "2x2", "2:4", "1:2", "4:4", "0:3",
                            "9:4", "x", fsparse.NM(2, 4), fsparse.Block(3, 1), fsparse.Channel()])
# Positional argument strategies per public callable (keywords where keyword-only).
SIGNATURES: dict[str, tuple[list[Any], dict[str, Any]]] = {
    "Block": ([either(INTS), either(INTS)], {}),
    "Channel": ([], {}),
    "NM": ([either(INTS), either(INTS)], {}),
    "Unstructured": ([], {}),
    "global_select_masks": ([either(st.dictionaries(NAMES, TENSORS, max_size=3)),
                             either(LEVELS), either(PATTERNS)], {}),
    "parse_pattern": ([either(PATTERNS)], {}),
    "select_count_mask": ([either(TENSORS), either(INTS), either(PATTERNS)], {}),
    "select_mask": ([either(TENSORS), either(LEVELS), either(PATTERNS)], {}),
    "drop_and_grow": ([either(dense(st.just(torch.bool)) | TENSORS), either(TENSORS),
                       either(TENSORS), either(LEVELS)], {"pattern": either(PATTERNS)}),
    "erk_sparsities": ([either(SHAPE_MAPS), either(LEVELS)],
                       {"include_kernel": either(st.booleans()),
                        "power_scale": either(st.floats(-2, 3)),
                        "overrides": either(st.none() | st.dictionaries(NAMES, LEVELS))}),
    "uniform_sparsities": ([either(SHAPE_MAPS), either(LEVELS)],
                           {"overrides": either(st.none() | st.dictionaries(NAMES, LEVELS))}),
    "Entry": ([either(TENSORS), either(TENSORS), either(configs())], {}),
    "Scheduler": ([either(_schedules()), either(st.sampled_from(
        ["sparsity_level", "block_size", "extras", "replace", "__class__", "", "t"])),
        either(st.booleans())], {}),
    "SchedulerState": ([either(INTS), either(st.just({}))], {}),
    "SparsifierState": ([either(st.dictionaries(NAMES, st.builds(_an_entry, states()),
                                                max_size=2)), either(configs())], {}),
    "SparsityConfig": ([either(LEVELS), either(BLOCKS), either(INTS),
                        either(st.sampled_from(["L1", "L2", "L3"])), either(_mask_fns())], {}),
    "add": ([either(states()), either(NAMES), either(TENSORS)],
            {"reuse_mask": either(st.booleans()), "mask": either(st.none() | TENSORS),
             "sparsity_level": either(LEVELS), "sparse_block_shape": either(BLOCKS)}),
    "block_means": ([either(TENSORS), either(BLOCKS)], {}),
    "block_scores": ([either(TENSORS), either(configs())], {}),
    "cached_memory": ([], {}),  # no arguments: called plainly
    "release_cached_memory": ([], {}),
    "channels_last_mask": ([either(TENSORS), either(configs())], {}),
    "config_norm_mask": ([either(TENSORS), either(configs())], {}),
    "cubic": ([either(LEVELS), either(LEVELS), either(INTS), either(INTS), either(INTS)], {}),
    "existing_zeros_mask": ([either(TENSORS), either(configs())], {}),
    "extract_weight": ([either(TENSORS)], {}),
    "global_levels": ([either(st.dictionaries(st.sampled_from(["a", "b"]), TENSORS, max_size=2)),
                       either(st.dictionaries(st.sampled_from(["a", "b"]), configs(),
                                              max_size=2)),
                       either(LEVELS)], {}),
    "init": ([either(st.dictionaries(NAMES, TENSORS, max_size=3)
                     | st.lists(st.tuples(NAMES, TENSORS), max_size=3))],
             {"defaults": either(st.none() | configs()), "sparsity_level": either(LEVELS),
              "sparse_block_shape": either(BLOCKS), "zeros_per_block": either(INTS)}),
    "lambda_sl": ([either(_schedules())], {}),
    "linear": ([either(LEVELS), either(LEVELS), either(INTS), either(INTS)], {}),
    "load_masks": ([either(states()), either(packed_masks())], {}),
    "make_config": ([either(st.none() | configs())],
                    {"sparsity_level": either(LEVELS), "sparse_block_shape": either(BLOCKS),
                     "zeros_per_block": either(st.none() | INTS),
                     "norm": either(st.sampled_from(["L1", "L2"])),
                     "mask_fn": either(_mask_fns())}),
    "masks_state_dict": ([either(states())], {}),
    "norm_mask": ([either(TENSORS), either(LEVELS), either(BLOCKS), either(st.none() | INTS),
                   either(st.sampled_from(["L1", "L2"]))], {}),
    "norm_scores": ([either(TENSORS), either(st.sampled_from(["L1", "L2"]))], {}),
    "pack_mask": ([either(dense(st.just(torch.bool)) | TENSORS)], {}),
    "polynomial": ([either(LEVELS), either(LEVELS), either(st.floats(-3, 3)), either(INTS),
                    either(INTS)], {}),
    "remove": ([either(states()), either(NAMES)], {}),
    "schedule": ([either(schedulers()), either(scheduler_states()), either(states())], {}),
    "select_k_smallest": ([either(TENSORS), either(INTS)], {}),
    "sparsified": ([either(states())], {}),
    "sparsity": ([either(states())], {}),
    "squash": ([either(states())], {}),
    "stacked_norm_mask": ([either(TENSORS), either(configs())], {}),
    "step": ([either(states()), either(_mask_fns())], {}),
    "step_sl": ([either(LEVELS), either(INTS), either(LEVELS)], {}),
    "unpack_mask": ([either(dense(st.just(torch.uint8)) | TENSORS),
                     either(st.lists(INTS, max_size=3) | st.just(torch.Size([4, 8])))], {}),
}


def _tensors(value: Any, out: list[torch.Tensor], depth: int = 0) -> list[torch.Tensor]:
    """Every tensor reachable from ``value`` (through containers and states)."""
    if depth > 8:
        return out
    if isinstance(value, torch.Tensor):
        out.append(value)
    elif isinstance(value, fsparse.SparsifierState):
        for entry in value.entries.values():
            _tensors(entry, out, depth + 1)
    elif isinstance(value, fsparse.Entry):
        out += [x for x in (value.data, value.mask) if isinstance(x, torch.Tensor)]
    elif isinstance(value, dict):
        for item in value.values():
            _tensors(item, out, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _tensors(item, out, depth + 1)
    return out


def _snapshot(tensor: torch.Tensor) -> tuple[int, torch.Tensor | None]:
    plain = tensor.layout == torch.strided and not tensor.is_meta and not tensor.is_quantized
    return tensor._version, tensor.detach().clone() if plain else None


def _unchanged(tensor: torch.Tensor, snap: tuple[int, torch.Tensor | None]) -> bool:
    version, copy = snap
    if tensor._version != version:
        return False
    if copy is None:
        return True
    if copy.is_floating_point() or copy.is_complex():
        return bool(torch.equal(copy.isnan(), tensor.isnan())) and bool(
            torch.equal(copy.nan_to_num(), tensor.detach().nan_to_num())
        )
    return bool(torch.equal(copy, tensor))


def _follow_up(result: Any, draw: st.DataObject) -> None:
    """Call what a factory returned (a schedule, a scheduler) with hostile input too."""
    if isinstance(result, fsparse.Scheduler):
        result.init(draw.draw(either(states()), label="sparsifier_state"))
    elif callable(result) and not isinstance(result, type):
        result(draw.draw(either(INTS), label="t"))


def test_every_public_callable_is_fuzzed() -> None:
    public = {n for n in fsparse.__all__ if callable(getattr(fsparse, n))}
    public -= {"MaskFn", "Schedule"}  # typing aliases
    assert public == set(SIGNATURES)


@pytest.mark.parametrize("name", sorted(SIGNATURES))
@SETTINGS
@given(draw=st.data())
def test_hostile_arguments_give_only_type_or_value_errors(name: str, draw: st.DataObject) -> None:
    positional, keywords = SIGNATURES[name]
    n_args = draw.draw(st.integers(max(0, len(positional) - 1), len(positional)), label="n_args")
    args = [draw.draw(s, label=f"arg{i}") for i, s in enumerate(positional[:n_args])]
    kwargs = {
        k: draw.draw(s, label=k) for k, s in keywords.items() if draw.draw(st.booleans(), label=k)
    }
    tensors = _tensors([args, kwargs], [])
    snaps = [_snapshot(t) for t in tensors]
    func: Callable[..., Any] = getattr(fsparse, name)
    try:
        result = func(*args, **kwargs)
        _follow_up(result, draw)
    except ALLOWED:
        pass
    for tensor, snap in zip(tensors, snaps, strict=True):
        assert _unchanged(tensor, snap), f"{name} changed an input tensor"
