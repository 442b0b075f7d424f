"""fsparse._src.engine.masked: the native masked forward (and backward) against the torch
expressions, bit for bit, and the cases it leaves to them (transforms, compile, views)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fsparse
from fsparse import pruners
from fsparse._src.engine import masked as masked_mod
from fsparse._src.engine import native
from fsparse._src.engine.masked import masked

pytestmark = pytest.mark.usefixtures("native_path")


def _want(data, mask, select):
    if select:
        return torch.where(mask, data, torch.zeros((), dtype=data.dtype))
    return data * mask.to(data.dtype)


def _bits(t):
    return t.view(torch.int32 if t.dtype == torch.float32 else torch.int64)


def _data(n, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(n, generator=gen, dtype=dtype)
    w[::3], w[::7], w[::11], w[::13] = -0.0, math.nan, -math.inf, -2.5  # specials, both signs
    return w, torch.rand(n, generator=gen) < 0.6


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 300_000), dtype=st.sampled_from([torch.float32, torch.float64]),
       select=st.booleans(), seed=st.integers(0, 2**16))
def test_masked_is_the_torch_expression_bit_for_bit(n, dtype, select, seed):
    """Forward and gradient equal ``data * mask.to(dtype)`` (or the where) bit for bit:
    -0.0, NaN and inf included (the vector body, its tail, and many tasks)."""
    w, keep = _data(n, dtype, seed)
    assert masked_mod._applies(w, keep)  # the native pass runs, not the fallback
    got = masked(w, keep, select=select)
    assert torch.equal(_bits(got), _bits(_want(w, keep, select)))
    x = w.clone().requires_grad_(True)
    up = torch.randn(n, dtype=dtype, generator=torch.Generator().manual_seed(seed + 1))
    up[::5] = -0.0
    (grad,) = torch.autograd.grad(masked(x, keep, select=select), x, up)
    y = w.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(_want(y, keep, select), y, up)
    assert torch.equal(_bits(grad), _bits(want))


def test_a_broken_mask_is_caught_by_the_comparison():
    """The comparison above can fail: one flipped mask byte changes the bits."""
    w, keep = _data(1000, torch.float32, 1)
    flipped = keep.clone()
    flipped[500] = ~flipped[500]
    assert not torch.equal(_bits(masked(w, flipped)), _bits(_want(w, keep, False)))


def test_inputs_are_unchanged_and_the_output_is_fresh():
    w, keep = _data(70_000, torch.float32, 2)
    before_w, before_keep = w.clone(), keep.clone()
    out = masked(w, keep)
    assert out.data_ptr() != w.data_ptr()
    assert torch.equal(_bits(w), _bits(before_w)) and torch.equal(keep, before_keep)


def test_parameters_run_natively_and_double_backward_works():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0, 4.0]))
    keep = torch.tensor([True, False, True, False])
    assert masked_mod._applies(p, keep)
    out = masked(p, keep)
    (g,) = torch.autograd.grad((out * out).sum(), p, create_graph=True)
    assert g.tolist() == [2.0, 0.0, 6.0, 0.0]
    (gg,) = torch.autograd.grad(g.sum(), p)
    assert gg.tolist() == [2.0, 0.0, 2.0, 0.0]


@pytest.mark.parametrize("case", ["half", "view", "shape", "no_kernels"])
def test_other_inputs_take_the_torch_expression(case, monkeypatch):
    w, keep = torch.randn(64, 8), torch.rand(64, 8) > 0.5
    if case == "half":
        w = w.half()
    elif case == "view":
        w = w.t()
        keep = keep.t()
    elif case == "shape":
        keep = keep[:1]  # broadcasts
    else:
        monkeypatch.setattr(native, "KERNELS", None)
    assert not masked_mod._applies(w, keep)
    for select in (False, True):
        assert torch.equal(masked(w, keep, select=select), _want(w, keep, select))


def test_torch_func_transforms_and_compile_take_the_torch_expression():
    """Under grad, vmap and compile the torch expression runs (no custom Function is
    traced) and gives the same values as the native pass outside them."""
    w, keep = torch.randn(4, 300), torch.rand(4, 300) > 0.5
    want = 2 * masked(w, keep)  # d/dx sum((x * m) ** 2) = 2 * (x * m) * m
    got = torch.func.grad(lambda x: masked(x, keep).pow(2).sum())(w)
    assert torch.equal(got, want)
    rows = torch.func.vmap(lambda x, k: masked(x, k, select=True))(w, keep)
    assert torch.equal(rows, masked(w, keep, select=True))
    compiled = torch.compile(lambda x: masked(x, keep), backend="eager", fullgraph=True)
    assert torch.equal(compiled(w), masked(w, keep))


def test_sparsified_and_apply_masks_use_it(monkeypatch):
    """The two public masked forwards run the native pass, forward and backward:
    fsparse.sparsified (the product) and pruners.apply_masks (the select), each equal to
    its torch expression."""
    calls = []
    real = native.KERNELS.fsp_masked
    monkeypatch.setattr(native.KERNELS, "fsp_masked",
                        lambda *args: calls.append(args[5]) or real(*args))
    w = torch.randn(300, 64, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    state = fsparse.step(fsparse.init({"w": w}, sparsity_level=0.5))
    mask = state["w"].mask
    out = fsparse.sparsified(state)["w"]
    assert torch.equal(_bits(out), _bits(_want(w, mask, False)))
    out.backward(torch.randn_like(out))  # a contiguous upstream gradient, as a loss gives
    assert calls == [0, 0]  # the product, forward and backward
    pstate = pruners.PrunerState({"w": mask})
    assert torch.equal(_bits(pruners.apply_masks(pstate, {"w": w})["w"]),
                       _bits(_want(w, mask, True)))
    assert calls == [0, 0, 1]
