"""The one checker (fsparse._src.checks): what each check accepts, refuses and says."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fsparse._src.checks import (
    check_instance,
    check_int,
    check_no_nan,
    check_real,
    check_shape,
    check_tensor,
    short_repr,
)


def test_check_tensor_names_the_argument_what_it_got_and_what_is_accepted() -> None:
    with pytest.raises(TypeError, match=r"^w must be a floating-point tensor \(float16.*got list"):
        check_tensor([1.0], "w")
    with pytest.raises(TypeError, match=r"^m must be a tensor \(bool\), got dtype torch.float32"):
        check_tensor(torch.ones(2), "m", dtypes=(torch.bool,))
    with pytest.raises(TypeError, match="meta"):
        check_tensor(torch.ones(2, device="meta"), "w")
    with pytest.raises(TypeError, match="strided"):
        check_tensor(torch.ones(2, 2).to_sparse(), "w")
    assert check_tensor(torch.ones(2, dtype=torch.int8), "w", floating=False).dtype == torch.int8


def test_check_real_refuses_overflow_nan_and_bool_without_leaking() -> None:
    with pytest.raises(ValueError, match="too large"):
        check_real(10**400, "x")
    with pytest.raises(ValueError, match="not NaN"):
        check_real(math.nan, "x", finite=False)
    with pytest.raises(ValueError, match="finite"):
        check_real(math.inf, "x")
    with pytest.raises(TypeError, match="real number"):
        check_real(True, "x")
    assert check_real(math.inf, "x", finite=False) == math.inf
    assert check_real(np.float32(0.5), "x") == 0.5  # numpy scalars are real numbers


def test_check_shape_refuses_floats_instead_of_truncating() -> None:
    assert check_shape(torch.tensor([4, 8]), "s") == (4, 8)
    assert check_shape(torch.Size([3]), "s") == (3,)
    bad_shapes = (torch.tensor([4.0, 8.9]), (4.0,), [True], "48", torch.ones(2, 2).long())
    for bad in bad_shapes:
        with pytest.raises(TypeError, match="s must"):
            check_shape(bad, "s")
    with pytest.raises(ValueError, match="non-negative"):
        check_shape([-1], "s")


def test_small_checks() -> None:
    with pytest.raises(TypeError, match=r"^state must be a dict, got list \[1\]"):
        check_instance([1], dict, "state")
    with pytest.raises(ValueError, match=r"k must be >= 0, got -1"):
        check_int(-1, "k", low=0)
    with pytest.raises(ValueError, match="NaN"):
        check_no_nan(torch.tensor([1.0, math.nan]), "v")
    assert check_no_nan(torch.tensor([math.inf]), "v").numel() == 1


def test_short_repr_is_bounded_even_for_hostile_values() -> None:
    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    class Huge:
        def __repr__(self) -> str:
            return "y" * 10**6

    assert short_repr(Hostile()).startswith("<Hostile")
    assert len(short_repr(Huge())) <= 80
    assert len(short_repr([[[["x" * 1000] * 1000]]])) <= 80
    assert len(short_repr(10**4000)) <= 80
    assert short_repr(torch.ones(2, 3)) == "tensor(shape=(2, 3), dtype=torch.float32)"


def test_check_tensor_calls_a_name_function_only_for_its_error():
    import torch

    from fsparse._src.checks import check_tensor

    calls = []

    def name() -> str:
        calls.append(1)
        return "params['w']"

    ok = torch.ones(2)
    assert check_tensor(ok, name) is ok and not calls
    with pytest.raises(TypeError, match=r"params\['w'\] must be a floating-point tensor"):
        check_tensor(torch.ones(2, dtype=torch.int64), name)
    assert calls
