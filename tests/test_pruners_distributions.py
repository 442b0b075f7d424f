"""Uniform and ERK distributions: worked examples, the kept-count property, bad input."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fsparse


def test_erk_worked_example_two_layers() -> None:
    # raw densities 20/100 and 50/400; kept 50 + 200 = 250 = eps * (0.2*100 + 0.125*400)
    erk = fsparse.erk_sparsities({"a": (10, 10), "b": (10, 40)}, 0.5)
    eps = 250 / 70
    assert erk == pytest.approx({"a": 1 - eps * 0.2, "b": 1 - eps * 0.125})


def test_erk_makes_a_tensor_dense_and_solves_again() -> None:
    # 'a' (raw 1) would get density 24.5; dense, it keeps 4, so b keeps 5000 - 2 of 10000
    erk = fsparse.erk_sparsities({"a": (2, 2), "b": (100, 100)}, 0.5)
    assert erk["a"] == 0.0
    assert erk["b"] == pytest.approx(1 - 4998 / 10000)


def test_erk_resolves_repeatedly_largest_raw_first() -> None:
    shapes = {"tiny": (1, 2), "small": (4, 4), "big": (64, 64)}
    erk = fsparse.erk_sparsities(shapes, 0.9)
    assert erk["tiny"] == 0.0 and erk["small"] == 0.0
    kept = 2 + 16 + (1 - erk["big"]) * 4096
    assert kept == pytest.approx(sum(n - math.floor(0.9 * n) for n in (2, 16, 4096)))


def test_erk_conv_kernels_and_include_kernel_false() -> None:
    shapes = {"conv": (8, 4, 3, 3), "fc": (16, 32)}
    with_kernel = fsparse.erk_sparsities(shapes, 0.8)
    raw = {"conv": 18 / 288, "fc": 48 / 512}
    eps = sum(n - math.floor(0.8 * n) for n in (288, 512)) / (raw["conv"] * 288 + raw["fc"] * 512)
    assert with_kernel == pytest.approx({n: 1 - eps * r for n, r in raw.items()})
    no_kernel = fsparse.erk_sparsities(shapes, 0.8, include_kernel=False)
    raw = {"conv": (3 + 3) / (3 * 3), "fc": 48 / 512}  # the last two dims as (n_in, n_out)
    eps = (58 + 103) / (raw["conv"] * 288 + raw["fc"] * 512)
    assert no_kernel == pytest.approx({n: 1 - eps * r for n, r in raw.items()})


def test_erk_power_scale_zero_is_uniform_density() -> None:
    erk = fsparse.erk_sparsities({"a": (10, 10), "b": (10, 40)}, 0.5, power_scale=0.0)
    assert erk == pytest.approx({"a": 0.5, "b": 0.5})


def test_overrides_win_and_stay_out_of_the_count() -> None:
    shapes = {"a": (10, 10), "b": (10, 40), "c": (7,)}
    erk = fsparse.erk_sparsities(shapes, 0.5, overrides={"c": 0.0})
    assert erk["c"] == 0.0
    assert {k: erk[k] for k in "ab"} == pytest.approx(
        fsparse.erk_sparsities({"a": (10, 10), "b": (10, 40)}, 0.5))
    uni = fsparse.uniform_sparsities(shapes, 0.3, overrides={"a": 0.9})
    assert uni == {"a": 0.9, "b": 0.3, "c": 0.3}


@settings(max_examples=40, deadline=None, database=None)
@given(shapes=st.dictionaries(st.sampled_from(["a", "b.w", "c", "d"]),
                              st.lists(st.integers(1, 12), min_size=1, max_size=4).map(tuple),
                              min_size=1, max_size=4),
       sparsity=st.floats(0.0, 1.0))
def test_erk_keeps_the_uniform_count_with_densities_in_range(shapes: dict, sparsity: float) -> None:
    erk = fsparse.erk_sparsities(shapes, sparsity)
    assert set(erk) == set(shapes) and all(0.0 <= s <= 1.0 for s in erk.values())
    kept = sum((1 - erk[n]) * math.prod(s) for n, s in shapes.items())
    uniform = sum(math.prod(s) - math.floor(sparsity * math.prod(s)) for s in shapes.values())
    assert kept == pytest.approx(uniform, rel=1e-9, abs=1e-6)


@pytest.mark.parametrize("call, match", [
    (lambda: fsparse.erk_sparsities({"a": (4, 4)}, 1.5), "sparsity"),
    (lambda: fsparse.uniform_sparsities({"a": (4, 4)}, -0.1), "sparsity"),
    (lambda: fsparse.erk_sparsities({"a": (4, 4)}, 0.5, overrides={"x": 0.1}), "overrides"),
    (lambda: fsparse.erk_sparsities({"a": (4, 4)}, 0.5, overrides={"a": 2.0}), "overrides"),
    (lambda: fsparse.erk_sparsities({"a": (4,)}, 0.5, include_kernel=False), "include_kernel"),
    (lambda: fsparse.erk_sparsities({"a": (4, -1)}, 0.5), "shapes"),
    (lambda: fsparse.erk_sparsities({"a": (4, 4)}, 0.5, power_scale=-1), "power_scale"),
    (lambda: fsparse.erk_sparsities([(4, 4)], 0.5), "shapes"),
    (lambda: fsparse.uniform_sparsities({"a": (4, 4)}, "0.5"), "sparsity"),
])
def test_bad_input_names_the_argument(call, match: str) -> None:
    with pytest.raises((TypeError, ValueError), match=match):
        call()
