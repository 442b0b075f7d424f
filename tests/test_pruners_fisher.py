"""FisherInverse (oBERT) and MFACInverse (M-FAC) against an explicit inverse, in float64."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch

from fsparse.pruners import FisherInverse, MFACInverse

KINDS: list[Any] = [FisherInverse, MFACInverse]


def explicit_inverse(grads: torch.Tensor, damp: float, block: int) -> torch.Tensor:
    """``inv(damp * I + G_B^T G_B / m)`` per block, assembled into a ``d x d`` matrix."""
    m, d = grads.shape
    out = torch.zeros(d, d, dtype=grads.dtype)
    for lo in range(0, d, block):
        hi = min(lo + block, d)
        g = grads[:, lo:hi]
        f = damp * torch.eye(hi - lo, dtype=grads.dtype) + g.T @ g / m
        out[lo:hi, lo:hi] = torch.linalg.inv(f)
    return out


CASES = [(1, 1, 1, 1.0), (3, 7, 7, 0.5), (5, 11, 4, 0.3), (8, 10, 3, 1e-2), (4, 6, 100, 0.1),
         (6, 9, 1, 2.0), (20, 12, 5, 1e-3)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("m", "d", "block", "damp"), CASES)
def test_matches_explicit_inverse(kind: Any, m: int, d: int, block: int, damp: float) -> None:
    gen = torch.Generator().manual_seed(m * 100 + d)
    grads = torch.randn(m, d, generator=gen, dtype=torch.float64)
    ref = explicit_inverse(grads, damp, block)
    finv = kind.from_grads(grads, damp=damp, block_size=block)
    scale = float(ref.abs().max())
    torch.testing.assert_close(finv.diag(), ref.diagonal(), rtol=1e-9, atol=1e-9 * scale)
    v = torch.randn(d, generator=gen, dtype=torch.float64)
    tol = 1e-9 * scale * float(v.abs().sum())
    torch.testing.assert_close(finv.mul(v), ref @ v, rtol=1e-9, atol=tol)
    # index sets across block boundaries, with padding (-1)
    idx = torch.randint(0, d, (5, 3), generator=gen)
    idx[0, -1] = -1
    sub = finv.submatrices(idx)
    safe = idx.clamp_min(0)
    want = ref[safe[:, :, None], safe[:, None, :]]
    want[0, 2, :] = 0.0
    want[0, :, 2] = 0.0
    want[0, 2, 2] = 1.0
    torch.testing.assert_close(sub, want, rtol=1e-9, atol=1e-9 * scale)


def test_short_last_block_and_the_two_forms_agree() -> None:
    grads = torch.randn(16, 23, dtype=torch.float64)
    a = FisherInverse.from_grads(grads, damp=0.05, block_size=10)
    b = MFACInverse.from_grads(grads, damp=0.05, block_size=10)
    assert a.blocks.shape == (3, 10, 10)
    assert b.vectors.shape == (16, 30)  # m x d (padded): never a block matrix
    torch.testing.assert_close(a.diag(), b.diag())
    v = torch.randn(23, dtype=torch.float64)
    torch.testing.assert_close(a.mul(v), b.mul(v))
    assert a.diag().shape == (23,) and a.mul(v).shape == (23,)


def test_grads_are_not_mutated() -> None:
    grads = torch.randn(4, 9)
    before, version = grads.clone(), grads._version
    for kind in KINDS:
        kind.from_grads(grads, damp=0.1, block_size=4)
    assert torch.equal(grads, before) and grads._version == version


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trips_weights_only(kind: Any) -> None:
    grads = torch.randn(5, 13, dtype=torch.float64)
    finv = kind.from_grads(grads, damp=0.2, block_size=6)
    buf = io.BytesIO()
    torch.save(finv.state_dict(), buf)
    buf.seek(0)
    back = kind.from_state_dict(torch.load(buf, weights_only=True))
    v = torch.randn(13, dtype=torch.float64)
    assert torch.equal(back.diag(), finv.diag()) and torch.equal(back.mul(v), finv.mul(v))


@pytest.mark.parametrize("kind", KINDS)
def test_bad_input_names_the_argument(kind: Any) -> None:
    g = torch.randn(3, 4)
    for damp in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="damp"):
            kind.from_grads(g, damp=damp, block_size=2)
    with pytest.raises(TypeError, match="damp"):
        kind.from_grads(g, damp="1", block_size=2)
    with pytest.raises(ValueError, match="block_size"):
        kind.from_grads(g, damp=1.0, block_size=0)
    with pytest.raises(TypeError, match="block_size"):
        kind.from_grads(g, damp=1.0, block_size=2.0)
    for bad in (torch.randn(4), torch.randn(0, 4), torch.randn(3, 0), torch.randn(2, 3, 4)):
        with pytest.raises(ValueError, match="grads"):
            kind.from_grads(bad, damp=1.0, block_size=2)
    with pytest.raises(TypeError, match="grads"):
        kind.from_grads(torch.ones(3, 4, dtype=torch.int64), damp=1.0, block_size=2)
    with pytest.raises(TypeError, match="grads"):
        kind.from_grads([[1.0]], damp=1.0, block_size=2)
    with pytest.raises(ValueError, match="grads"):
        kind.from_grads(torch.tensor([[1.0, float("nan")]]), damp=1.0, block_size=2)
    finv = kind.from_grads(g, damp=1.0, block_size=2)
    with pytest.raises(ValueError, match="v must have shape"):
        finv.mul(torch.ones(5))
    with pytest.raises(ValueError, match="state_dict"):
        kind.from_state_dict({**finv.state_dict(), "d": 99})
