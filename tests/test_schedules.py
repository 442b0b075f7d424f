"""Schedule formulas and the pure scheduler."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fsparse

LEVELS = st.floats(0, 1)


@settings(max_examples=100, deadline=None)
@given(LEVELS, LEVELS, st.integers(0, 20), st.integers(1, 10), st.integers(1, 5))
def test_cubic_endpoints_and_monotone(s_i: float, s_f: float, t0: int, n: int, dt: int) -> None:
    sched = fsparse.cubic(s_i, s_f, begin_step=t0, num_updates=n, update_every=dt)
    assert sched(t0) == pytest.approx(s_i)
    assert sched(max(t0 - 1, 0)) == pytest.approx(s_i)
    assert sched(t0 + n * dt) == pytest.approx(s_f)
    assert sched(t0 + n * dt + 7) == pytest.approx(s_f)
    values = [sched(t) for t in range(t0, t0 + n * dt + 1)]
    sign = 1 if s_f >= s_i else -1
    assert all(sign * (b - a) >= -1e-12 for a, b in pairwise(values))


def test_cubic_formula() -> None:
    s_i, s_f, t0, n, dt = 0.1, 0.9, 3, 5, 2
    sched = fsparse.cubic(s_i, s_f, begin_step=t0, num_updates=n, update_every=dt)
    for t in range(t0, t0 + n * dt + 1, dt):
        expected = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3
        assert sched(t) == pytest.approx(expected)
        assert sched(t + dt - 1 if t < t0 + n * dt else t) == pytest.approx(expected)


@settings(max_examples=100, deadline=None)
@given(st.floats(-2, 2), st.floats(-2, 2), st.floats(0.5, 4), st.integers(1, 30))
def test_polynomial_endpoints_and_monotone(a: float, b: float, power: float, steps: int) -> None:
    sched = fsparse.polynomial(a, b, power, steps)
    assert sched(0) == pytest.approx(a)
    assert sched(steps) == pytest.approx(b)
    values = [sched(t) for t in range(steps + 1)]
    sign = 1 if b >= a else -1
    assert all(sign * (y - x) >= -1e-12 for x, y in pairwise(values))


def test_linear_is_a_line() -> None:
    sched = fsparse.linear(0.0, 1.0, transition_steps=10, transition_begin=5)
    assert [sched(t) for t in (0, 5, 10, 15, 20)] == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])


def test_step_sl_multiplies_every_step_size() -> None:
    sched = fsparse.step_sl(gamma=0.5, step_size=3, init_value=0.8)
    assert [sched(t) for t in range(7)] == pytest.approx([0.8] * 3 + [0.4] * 3 + [0.2])


def test_lambda_sl_calls_the_function() -> None:
    assert fsparse.lambda_sl(lambda t: t / 10)(3) == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("factory", "needle"),
    [
        (lambda: fsparse.step_sl(2.0, step_size=0), "step_size"),
        (lambda: fsparse.step_sl(float("nan")), "gamma"),
        (lambda: fsparse.cubic(0.0, 0.8, num_updates=0), "num_updates"),
        (lambda: fsparse.cubic(0.0, 0.8, update_every=-1), "update_every"),
        (lambda: fsparse.polynomial(0.0, 1.0, 2.0, transition_steps=0), "transition_steps"),
        (lambda: fsparse.linear(0.0, float("inf"), 3), "end_value"),
    ],
)
def test_bad_schedule_arguments(factory, needle: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=needle):
        factory()


def test_lambda_sl_rejects_non_callable() -> None:
    with pytest.raises(TypeError, match="fn"):
        fsparse.lambda_sl(0.5)  # type: ignore[arg-type]


def test_relative_scheduler_matches_torch_ao_step_semantics() -> None:
    state = fsparse.init({"a": torch.randn(4, 4), "b": torch.randn(8)}, sparsity_level=0.1)
    state = fsparse.add(state, "b", state["b"].data, sparsity_level=0.2)
    sched = fsparse.Scheduler(fsparse.step_sl(gamma=2.0, step_size=1), relative=True)
    sched_state = sched.init(state)
    assert sched_state.last_epoch == -1
    levels = []
    for _ in range(3):
        sched_state, state = fsparse.schedule(sched, sched_state, state)
        levels += [state["a"].config.sparsity_level, state["b"].config.sparsity_level]
    assert levels == pytest.approx([0.1, 0.2, 0.2, 0.4, 0.4, 0.8])
    assert sched_state.last_epoch == 2


def test_absolute_scheduler_and_purity() -> None:
    state = fsparse.init({"a": torch.randn(4, 4)}, sparsity_level=0.0)
    sched = fsparse.Scheduler(fsparse.cubic(0.0, 0.8, num_updates=2))
    sched_state = sched.init(state)
    new_sched_state, new_state = fsparse.schedule(sched, sched_state, state)
    new_sched_state, new_state = fsparse.schedule(sched, new_sched_state, new_state)
    assert state["a"].config.sparsity_level == 0.0
    assert sched_state.last_epoch == -1
    assert new_state["a"].config.sparsity_level == pytest.approx(0.7)


def test_scheduler_on_user_key_and_missing_key() -> None:
    state = fsparse.init({"a": torch.randn(4)}, temperature=1.0)
    sched = fsparse.Scheduler(fsparse.step_sl(0.5), param="temperature", relative=True)
    st_, state2 = fsparse.schedule(sched, sched.init(state), state)
    _, state2 = fsparse.schedule(sched, st_, state2)
    assert state2["a"].config.extra("temperature") == pytest.approx(0.5)
    with pytest.raises(KeyError, match="'missing'"):
        fsparse.Scheduler(fsparse.step_sl(0.5), param="missing").init(state)
