"""Soft movement pruning: against torch.optim.Adam on the paper's objective, and its edges."""

from __future__ import annotations

import io

import pytest
import torch

from fsparse import pruners


def _oracle(params, grads_seq, *, final, initial, lam, lr, start, end):
    """Masks per step from torch.optim.Adam on ``sum(g * w * S) + lambda_t * mean_t(mean(sig(S)))``.

    ``tau_t`` is the reference's ``schedule_threshold`` written out:
    ``final + (initial - final) * (1 - (t - start) / (end - start)) ** 3``.
    """
    scores = {n: torch.zeros_like(p, requires_grad=True) for n, p in params.items()}
    opt = torch.optim.Adam(list(scores.values()), lr=lr)
    out = []
    for t, grads in enumerate(grads_seq):
        if t < start:
            tau = initial
        elif t >= end:
            tau = final
        else:
            tau = final + (initial - final) * (1 - (t - start) / (end - start)) ** 3
        reg = lam * tau / final
        opt.zero_grad()
        loss = sum((grads[n] * params[n] * scores[n]).sum() for n in params)
        loss = loss + reg * sum(torch.sigmoid(s).mean() for s in scores.values()) / len(scores)
        loss.backward()
        opt.step()
        out.append(({n: s.detach().clone() for n, s in scores.items()}, tau))
    return out


@pytest.mark.parametrize("lam", [0.0, 40.0])
def test_matches_adam_on_the_soft_movement_objective(lam: float) -> None:
    gen = torch.Generator().manual_seed(0)
    params = {"fc.weight": torch.randn(6, 5, generator=gen), "b": torch.randn(7, generator=gen)}
    grads_seq = [{n: torch.randn(p.shape, generator=gen) for n, p in params.items()}
                 for _ in range(12)]
    kw = {"final": 0.45, "initial": 0.05, "lam": lam, "lr": 0.1, "start": 2, "end": 9}
    pruner = pruners.soft_movement(0.45, initial_threshold=0.05, final_lambda=lam, score_lr=0.1,
                                   start_step=2, end_step=9)
    state = pruner.init(params)
    assert all(bool(m.all()) for m in state.masks.values())  # dense until the first update
    pruned_counts = []
    for (want, tau), grads in zip(_oracle(params, grads_seq, **kw), grads_seq):
        state, same = pruner.update(state, params, grads=grads)
        assert all(same[n] is params[n] for n in params)  # weights are never changed
        for n in params:
            got = state.stats["movement"][n]
            torch.testing.assert_close(got, want[n], rtol=1e-5, atol=1e-6)
            sig = torch.sigmoid(want[n])
            clear = (sig - tau).abs() > 1e-5  # away from the threshold, rounding can't flip it
            assert torch.equal(state.masks[n][clear], (sig > tau)[clear])
        pruned_counts.append(sum(int((~m).sum()) for m in state.masks.values()))
    assert state.step == 12
    assert max(pruned_counts) > 0  # the threshold really pruned


def test_worked_example_movement_away_from_zero_survives() -> None:
    pruner = pruners.soft_movement(0.5, initial_threshold=0.5)
    w = {"w": torch.tensor([1.0, 1.0, -1.0, -1.0])}
    state = pruner.init(w)
    # g * w: [+, -, +, -]: the 2nd and 4th weights move away from zero
    state, _ = pruner.update(state, w, grads={"w": torch.tensor([1.0, -1.0, -1.0, 1.0])})
    assert state.masks["w"].tolist() == [False, True, False, True]
    torch.testing.assert_close(state.stats["movement"]["w"],
                               torch.tensor([-0.01, 0.01, -0.01, 0.01]))


def test_the_regulariser_alone_prunes_more_and_more() -> None:
    w = {"w": torch.linspace(-1, 1, 50)}
    pruner = pruners.soft_movement(0.45, initial_threshold=0.45, final_lambda=1e3,
                                   score_lr=1e-2)
    state, levels = pruner.init(w), []
    for _ in range(40):
        state, _ = pruner.update(state, w, grads={"w": torch.zeros(50)})
        levels.append(int((~state.masks["w"]).sum()))
    assert levels[0] == 0 and levels[-1] == 50
    assert levels == sorted(levels)


def test_update_is_pure_and_the_state_round_trips() -> None:
    params = {"w": torch.randn(4, 4)}
    grads = {"w": torch.randn(4, 4)}
    pruner = pruners.soft_movement(0.2, end_step=3)
    state = pruner.init(params)
    before = (params["w"].clone(), grads["w"].clone(), state.stats["movement"]["w"].clone())
    new, _ = pruner.update(state, params, grads=grads)
    assert torch.equal(params["w"], before[0]) and torch.equal(grads["w"], before[1])
    assert torch.equal(state.stats["movement"]["w"], before[2]) and state.step == 0
    buf = io.BytesIO()
    torch.save(pruners.state_dict(new), buf)
    buf.seek(0)
    loaded = pruners.load_state_dict(torch.load(buf, weights_only=True))
    assert loaded == new
    again, _ = pruner.update(loaded, params, grads=grads)
    expect, _ = pruner.update(new, params, grads=grads)
    assert again == expect
    assert pruner.straight_through and pruner.needs_grads


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"final_threshold": 0.0}, "final_threshold"),
    ({"final_threshold": 1.0}, "final_threshold"),
    ({"final_threshold": 1.5}, "final_threshold"),
    ({"initial_threshold": -0.1}, "initial_threshold"),
    ({"final_lambda": -1.0}, "final_lambda"),
    ({"score_lr": 0.0}, "score_lr"),
    ({"initial_score": float("nan")}, "initial_score"),
    ({"start_step": 5, "end_step": 2}, "end_step"),
])
def test_bad_arguments_name_themselves(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        pruners.soft_movement(**kwargs)


def test_bad_updates_change_nothing() -> None:
    params = {"w": torch.randn(3)}
    pruner = pruners.soft_movement()
    state = pruner.init(params)
    with pytest.raises(ValueError, match="grads is required"):
        pruner.update(state, params)
    with pytest.raises(ValueError, match="grads"):
        pruner.update(state, params, grads={"v": torch.randn(3)})
    other = pruners.magnitude(0.5).init(params)
    with pytest.raises(ValueError, match="soft movement scores"):
        pruner.update(other, params, grads={"w": torch.randn(3)})
    assert state.step == 0 and torch.equal(state.stats["movement"]["w"], torch.zeros(3))
