"""fsparse.oneshot layer functions: quality order, exact counts and patterns, the
references' algorithms (transcribed here as test oracles), purity, bad input."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from fsparse.oneshot import hessian_inverse_factor, magnitude_prune, sparsegpt_prune, wanda_prune

Layer = Callable[..., torch.Tensor]


def correlated(seed: int, tokens: int = 1024, features: int = 64, out: int = 32
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``X = Z A`` with a random mixing ``A`` (columns of different scales) and a weight."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(tokens, features, generator=g, dtype=torch.float64)
    a = torch.randn(features, features, generator=g, dtype=torch.float64)
    a = a * torch.rand(features, generator=g, dtype=torch.float64) * 3
    return z @ a, torch.randn(out, features, generator=g, dtype=torch.float64)


def methods(x: torch.Tensor) -> dict[str, Layer]:
    h = 2 * x.T @ x / x.shape[0]
    s = x.square().mean(0)
    return {
        "sparsegpt": lambda w, sp, **kw: sparsegpt_prune(w, h, sp, block_size=16, **kw),
        "wanda": lambda w, sp, **kw: wanda_prune(w, s, sp, **kw),
        "magnitude": lambda w, sp, **kw: magnitude_prune(w, sp, **kw),
    }


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("n_m", [None, (2, 4)])
def test_reconstruction_error_orders_sparsegpt_wanda_magnitude(seed: int, n_m: object) -> None:
    x, w = correlated(seed)
    errors = {name: float((x @ w.T - x @ f(w, 0.5, n_m=n_m).T).norm())
              for name, f in methods(x).items()}
    assert errors["sparsegpt"] < errors["wanda"] < errors["magnitude"], errors


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.77])
def test_every_method_hits_the_exact_count(sparsity: float) -> None:
    x, w = correlated(5, features=40, out=7)
    for name, f in methods(x).items():
        zeros = (f(w, sparsity) == 0)
        if name == "wanda":   # per output row
            assert zeros.sum(1).tolist() == [int(40 * sparsity)] * 7
        else:
            assert int(zeros.sum()) == int(w.numel() * sparsity), name


@pytest.mark.parametrize("n_m", [(2, 4), (1, 4), (3, 8), (0, 4)])
def test_every_method_hits_the_n_m_pattern(n_m: tuple[int, int]) -> None:
    x, w = correlated(6, features=32, out=5)
    for name, f in methods(x).items():
        zeros = (f(w, 0.5, n_m=n_m) == 0).view(5, -1, n_m[1]).sum(-1)
        assert bool((zeros == n_m[0]).all()), name
        assert bool((f(w, 0.0, n_m=n_m) == w).all()), name    # sparsity 0 prunes nothing


def reference_sparsegpt(w: torch.Tensor, h: torch.Tensor, counts: list[int] | None,
                        n_m: tuple[int, int] | None, block: int) -> torch.Tensor:
    """IST-DASLab/sparsegpt ``fasterprune``, transcribed, with the per-block count given
    (the reference's is ``int(numel_b * sparsity) + 1``) and masks by stable argsort."""
    w, h = w.clone(), h.clone()
    dead = h.diagonal() == 0
    h.diagonal()[dead] = 1
    w[:, dead] = 0
    h.diagonal().add_(0.01 * h.diagonal().mean())
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    for b, i1 in enumerate(range(0, w.shape[1], block)):
        i2 = min(i1 + block, w.shape[1])
        w1, d = w[:, i1:i2].clone(), hinv[i1:i2, i1:i2].diagonal()
        q1, err1 = torch.zeros_like(w1), torch.zeros_like(w1)
        mask = torch.zeros_like(w1, dtype=torch.bool)
        if counts is not None:
            order = (w1.square() / d.square()).flatten().argsort(stable=True)
            mask.view(-1)[order[: counts[b]]] = True
        for i in range(i2 - i1):
            if n_m is not None and i % n_m[1] == 0:
                tmp = w1[:, i:i + n_m[1]].square() / d[i:i + n_m[1]].square()
                mask.scatter_(1, i + tmp.argsort(dim=1, stable=True)[:, : n_m[0]], True)
            q = torch.where(mask[:, i], 0.0, w1[:, i])
            q1[:, i] = q
            err = (w1[:, i] - q) / d[i]
            w1[:, i:] -= err[:, None] @ hinv[i1 + i, i1 + i:i2][None, :]
            err1[:, i] = err
        w[:, i1:i2] = q1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return w


@pytest.mark.parametrize("n_m", [None, (2, 4)])
def test_sparsegpt_follows_the_reference_algorithm(n_m: tuple[int, int] | None) -> None:
    x, w = correlated(7, tokens=300, features=40, out=6)
    x[:, 3] = 0.0                                   # a dead column
    h = 2 * x.T @ x / x.shape[0]
    ours = sparsegpt_prune(w, h, 0.5, n_m=n_m, block_size=16)
    counts = None if n_m else [6 * 16 // 2, 6 * 16 // 2, 6 * 8 // 2]
    expected = reference_sparsegpt(w, h, counts, n_m, 16)
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-9)
    assert bool((ours[:, 3] == 0).all())


def test_wanda_and_magnitude_match_stable_sort_oracles() -> None:
    g = torch.Generator().manual_seed(3)
    w = torch.randn(9, 24, generator=g).round(decimals=1)    # many ties
    s = torch.rand(24, generator=g).round(decimals=1)
    scores = w.abs() * s.sqrt()
    expected = w.clone()
    expected.scatter_(1, scores.argsort(dim=1, stable=True)[:, : int(24 * 0.6)], 0.0)
    assert bool((wanda_prune(w, s, 0.6) == expected).all())
    flat = w.clone().view(-1)
    flat[w.abs().view(-1).argsort(stable=True)[: int(w.numel() * 0.6)]] = 0.0
    assert bool((magnitude_prune(w, 0.6) == flat.view(9, 24)).all())


def test_sparsegpt_compensates_a_quadratic_exactly_when_one_weight_goes() -> None:
    """One pruned weight: OBS's closed form ``w - w_p / [H^-1]_pp * H^-1 e_p`` (no damping)."""
    h = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 1.5]], dtype=torch.float64)
    w = torch.tensor([[0.1, 1.0, 2.0]], dtype=torch.float64)
    ours = sparsegpt_prune(w, h, 0.34, dampening=0.0)       # int(3 * 0.34) = 1 pruned
    hinv = torch.linalg.inv(h)
    obs = w - w[0, 0] / hinv[0, 0] * hinv[0]
    torch.testing.assert_close(ours, obs)


def test_layer_functions_do_not_mutate_inputs_and_keep_dtype() -> None:
    x, w = correlated(8, features=16, out=4)
    for dtype in (torch.float32, torch.bfloat16):
        wd, xd = w.to(dtype), x.to(dtype)
        h, s = (2 * xd.T @ xd / 64).float(), xd.float().square().mean(0)
        h[2, 2] = 0.0                      # a "dead" diagonal entry must stay 0 in the caller's H
        h[2, :] = h[:, 2] = 0.0
        copies = [t.clone() for t in (wd, h, s)]
        outs = [sparsegpt_prune(wd, h, 0.5, block_size=4), wanda_prune(wd, s, 0.5),
                magnitude_prune(wd, 0.5), sparsegpt_prune(wd, h, 0.5, n_m=(2, 4), block_size=8)]
        for before, after in zip(copies, (wd, h, s)):
            assert bool((before == after).all())
        assert all(o.dtype == dtype and o.shape == wd.shape for o in outs)


W, H, S = torch.randn(4, 8), torch.eye(8), torch.ones(8)


@pytest.mark.parametrize("call, error, words", [
    (lambda: sparsegpt_prune(W, torch.eye(8)[:, :7], 0.5), ValueError, "hessian"),
    (lambda: sparsegpt_prune(W, torch.eye(6), 0.5), ValueError, "hessian"),
    (lambda: sparsegpt_prune(W, torch.full((8, 8), float("nan")), 0.5), ValueError, "hessian"),
    (lambda: sparsegpt_prune(W, -torch.eye(8), 0.5), ValueError, "positive definite"),
    (lambda: sparsegpt_prune(W, H.long(), 0.5), TypeError, "hessian"),
    (lambda: sparsegpt_prune(W, H, 1.0), ValueError, "sparsity"),
    (lambda: sparsegpt_prune(W, H, -0.1), ValueError, "sparsity"),
    (lambda: sparsegpt_prune(W, H, float("nan")), ValueError, "sparsity"),
    (lambda: sparsegpt_prune(W, H, "0.5"), TypeError, "sparsity"),
    (lambda: sparsegpt_prune(W, H, 0.5, n_m=(2, 3)), ValueError, "n_m"),
    (lambda: sparsegpt_prune(W, H, 0.5, n_m=(4, 4)), ValueError, "n_m"),
    (lambda: sparsegpt_prune(W, H, 0.5, n_m=(2, 4), block_size=6), ValueError, "block_size"),
    (lambda: sparsegpt_prune(W, H, 0.5, n_m=2), TypeError, "n_m"),
    (lambda: sparsegpt_prune(W, H, 0.5, block_size=0), ValueError, "block_size"),
    (lambda: sparsegpt_prune(W, H, 0.5, dampening=-1.0), ValueError, "dampening"),
    (lambda: sparsegpt_prune(W[0], H, 0.5), ValueError, "weight"),
    (lambda: sparsegpt_prune(W * float("inf"), H, 0.5), ValueError, "weight"),
    (lambda: wanda_prune(W, torch.ones(7), 0.5), ValueError, "input_sq_norms"),
    (lambda: wanda_prune(W, -S, 0.5), ValueError, "input_sq_norms"),
    (lambda: wanda_prune(W, S * float("nan"), 0.5), ValueError, "input_sq_norms"),
    (lambda: wanda_prune(W, S, 1.5), ValueError, "sparsity"),
    (lambda: wanda_prune(W, S, 0.5, n_m=(1, 3)), ValueError, "n_m"),
    (lambda: magnitude_prune(W, 0.5, n_m=(1, 5)), ValueError, "n_m"),
    (lambda: magnitude_prune([[1.0]], 0.5), TypeError, "weight"),
    (lambda: hessian_inverse_factor(torch.ones(3)), ValueError, "hessian"),
    (lambda: hessian_inverse_factor(torch.ones(3, 2)), ValueError, "hessian"),
    (lambda: hessian_inverse_factor(torch.eye(3) * float("inf")), ValueError, "hessian"),
])
def test_bad_input_names_the_argument(call: Callable[[], object], error: type, words: str) -> None:
    with pytest.raises(error, match=words):
        call()
