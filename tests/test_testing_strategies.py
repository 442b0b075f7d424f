"""fsparse.testing's strategies draw what they promise; `import fsparse` never loads Hypothesis."""

from __future__ import annotations

import subprocess
import sys

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fsparse
from fsparse.testing import configs, levels, param_dicts, rule_zero_counts, states, tensors

SMALL = settings(max_examples=25, deadline=None, database=None)


def test_import_fsparse_does_not_import_hypothesis() -> None:
    code = ("import sys, fsparse, fsparse.pruners, fsparse.data_sparsifier; "
            "assert 'hypothesis' not in sys.modules, 'hypothesis imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@SMALL
@given(tensors())
def test_tensors_are_finite_floats_up_to_4d(x: torch.Tensor) -> None:
    assert x.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
    assert x.dim() <= 4 and bool(torch.isfinite(x).all())


@settings(max_examples=40, deadline=None, database=None, derandomize=True)
@given(tensors(shape=(64, 64), extremes=True, dtypes=(torch.float16, torch.bfloat16)))
def test_huge_16_bit_values_stay_finite(x: torch.Tensor) -> None:
    """The huge magnitudes times a normal draw beyond ~4 sigma would overflow float16: the
    strategy keeps every value finite, as it promises (4,096 values a draw)."""
    assert bool(torch.isfinite(x).all())


@SMALL
@given(tensors(min_dims=2, contiguous=False, dtypes=(torch.float32,)))
def test_tensors_can_be_non_contiguous(x: torch.Tensor) -> None:
    assert x.dtype == torch.float32
    if any(s > 1 for s in x.shape):
        assert not x.is_contiguous()


@SMALL
@given(tensors(shape=(6, 6), ties=True, zeros=True, extremes=True, dtypes=(torch.float64,)))
def test_tensors_ties_zeros_extremes(x: torch.Tensor) -> None:
    assert x.shape == (6, 6) and bool(torch.isfinite(x * x).all())  # L2 scores stay finite


def test_features_show_up() -> None:
    found = {"tie": False, "zero": False, "huge": False, "tiny": False}

    @settings(max_examples=30, deadline=None, database=None)
    @given(tensors(shape=(8, 8), dtypes=(torch.float32,), ties=True, zeros=True,
                   extremes=True))
    def probe(x: torch.Tensor) -> None:
        nonzero = x[x != 0].abs()
        found["zero"] |= bool((x == 0).any())
        found["tie"] |= x.unique().numel() < x.numel()
        found["huge"] |= bool((nonzero > 1e10).any())
        found["tiny"] |= bool((nonzero < 1e-30).any())

    probe()
    assert all(found.values()), found


@SMALL
@given(st.data())
def test_configs_are_valid_for_the_shape(data: st.DataObject) -> None:
    shape = data.draw(st.sampled_from([(), (5,), (3, 4), (2, 1, 6)]))
    cfg = data.draw(configs(shape))
    assert isinstance(cfg, fsparse.SparsityConfig)
    assert 0 <= cfg.zeros_per_block <= cfg.block_size and 0.0 <= cfg.sparsity_level <= 1.0
    fsparse.config_norm_mask(torch.randn(shape), cfg)  # accepted by the engine
    assert rule_zero_counts(shape, cfg)[0] <= len(rule_zero_counts(shape, cfg)[1])


def test_levels_include_the_edges() -> None:
    seen: set[float] = set()

    @settings(max_examples=60, deadline=None, database=None)
    @given(levels())
    def probe(level: float) -> None:
        seen.add(level)

    probe()
    assert {0.0, 1.0} <= seen


@SMALL
@given(configs(block_shapes=[(2, 2)], zeros_per_block=False, norms=("L2",),
               level=st.just(0.25)))
def test_configs_narrow(cfg: fsparse.SparsityConfig) -> None:
    assert (cfg.sparse_block_shape, cfg.zeros_per_block, cfg.norm) == ((2, 2), 4, "L2")
    assert cfg.sparsity_level == 0.25


@SMALL
@given(states(min_entries=2, max_entries=3, stepped=True))
def test_states_hold_several_stepped_entries(state: fsparse.SparsifierState) -> None:
    assert 2 <= len(state.entries) <= 3
    for entry in state.entries.values():
        assert torch.equal(entry.mask, fsparse.config_norm_mask(entry.data, entry.config))


@SMALL
@given(param_dicts(layers=("linear", "conv"), bias=True, multiple_of=4))
def test_param_dicts_look_like_layers(drawn: tuple) -> None:
    params, grads = drawn
    assert set(params) == set(grads)
    for name, p in params.items():
        assert grads[name].shape == p.shape and p.dtype == torch.float32
        assert p.dim() == (1 if name.endswith("bias") else 2 if name.startswith("fc") else 4)
        assert all(s % 4 == 0 for s in p.shape[:2])
        if name.endswith("bias"):
            assert p.shape[0] == params[name.replace("bias", "weight")].shape[0]


@SMALL
@given(param_dicts(layers=("embedding",), grads=False, max_layers=1))
def test_param_dicts_without_grads(drawn: tuple) -> None:
    params, grads = drawn
    assert grads is None and list(params) == ["emb0.weight"]
