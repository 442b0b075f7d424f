"""Worked examples with known answers, and bad input that must change nothing."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import fsparse
from fsparse import pruners

MASK = torch.tensor([True, True, False, True, False, True, False, False])  # live: 0, 1, 3, 5
DROP = torch.tensor([0.5, 0.1, 9.0, 0.3, 9.0, 0.9, 9.0, 9.0])  # dead weights count as lowest
GROW = torch.tensor([0.7, 0.05, 0.8, 0.3, 0.2, 0.1, 0.6, 0.4])


@pytest.mark.parametrize("fraction, live", [
    (0.0, [0, 1, 3, 5]),     # nothing dropped
    (0.25, [0, 2, 3, 5]),    # drop 1 (0.1), grow 2 (0.8)
    (0.5, [0, 2, 5, 6]),     # drop 1, 3; grow 2, 6
    (0.75, [0, 2, 5, 6]),    # drop 1, 3, 0; grow 2, 0 (dropped and grown back), 6
    (1.0, [0, 2, 6, 7]),     # drop all; grow the 4 best of all 8
])
def test_drop_and_grow_on_eight_weights(fraction: float, live: list[int]) -> None:
    new = fsparse.drop_and_grow(MASK, DROP, GROW, fraction)
    assert torch.nonzero(new).view(-1).tolist() == live


def test_drop_and_grow_by_blocks_and_channels() -> None:
    mask = torch.tensor([[True, True, False, False], [False, False, True, True]])
    drop = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 5.0, 5.0]])
    grow = torch.tensor([[0.0, 0.0, 9.0, 9.0], [1.0, 1.0, 0.0, 0.0]])
    new = fsparse.drop_and_grow(mask, drop, grow, 0.5, pattern="1x2")
    assert new.tolist() == [[False, False, True, True], [False, False, True, True]]
    rows = fsparse.drop_and_grow(torch.tensor([[True], [False]]), torch.tensor([[1.0], [0.0]]),
                                 torch.tensor([[0.0], [1.0]]), 1.0, pattern="channel")
    assert rows.tolist() == [[False], [True]]


def test_gradual_magnitude_counts_on_the_cubic_ramp() -> None:
    w = {"w": torch.arange(1.0, 101.0)}
    pruner = pruners.magnitude(0.8, start_step=0, end_step=4)
    state = pruner.init(w)
    zeros = []
    for _ in range(6):
        state, w = pruner.update(state, w)
        zeros.append(int((~state.masks["w"]).sum()))
    # 0.8 * (1 - (1 - t/4)^3) * 100 = 0, 46.25, 70, 78.75, 80 -> rounded; held after the end
    assert zeros == [0, 46, 70, 79, 80, 80]
    assert torch.nonzero(~state.masks["w"]).view(-1).tolist() == list(range(80))


def test_one_shot_by_default_and_update_every_holds_masks() -> None:
    w = {"w": torch.arange(1.0, 9.0)}
    state, _ = pruners.magnitude(0.75).update(pruners.magnitude(0.75).init(w), w)
    assert int(state.masks["w"].sum()) == 2
    pruner = pruners.magnitude(0.5, start_step=2, end_step=6, update_every=3)
    state, counts = pruner.init(w), []
    for _ in range(8):
        state, _ = pruner.update(state, w)
        counts.append(int((~state.masks["w"]).sum()))
    # updates at 2 (ramp 0), 5 (ramp 1 - (1/4)^3), 6 (end): held in between
    assert counts == [0, 0, 0, 0, 0, round(0.5 * (1 - 0.25**3) * 8), 4, 4]


def test_pruned_weights_stay_pruned_when_gradual() -> None:
    pruner = pruners.magnitude(0.75, end_step=2)  # 0, round(5.25), 6 of 8 pruned
    w = torch.arange(1.0, 9.0)
    state = pruner.init({"w": w})
    state, _ = pruner.update(state, {"w": w})
    state, _ = pruner.update(state, {"w": w})
    assert torch.nonzero(~state.masks["w"]).view(-1).tolist() == [0, 1, 2, 3, 4]
    state, _ = pruner.update(state, {"w": torch.cat([torch.tensor([100.0]), w[1:]])})
    assert torch.nonzero(~state.masks["w"]).view(-1).tolist() == [0, 1, 2, 3, 4, 5]


def test_acdc_mask_sequence() -> None:
    pruner = pruners.acdc(0.5, init_dense_steps=2, final_sparse_start=7, sparse_steps=2,
                          dense_steps=1, reset_optimizer=True)
    up, down = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([4.0, 3.0, 2.0, 1.0])
    state = pruner.init({"w": up})
    masks, resets, zeroed = [], [], []
    for t in range(10):
        given = {"w": up if t < 5 else down}
        new, out = pruner.update(state, given)
        masks.append("".join("1" if m else "0" for m in new.masks["w"].tolist()))
        resets.append(bool(pruner.resets(state, new)["w"].all()))
        zeroed.append(out["w"] is not given["w"])
        state = new
    # D D S S D S S (final from 7, the running sparse phase continues) S S S
    assert masks == ["1111", "1111", "0011", "0011", "1111", "1100", "1100", "1100", "1100",
                     "1100"]
    assert resets == [False, False, True, False, True, True, False, False, False, False]
    assert zeroed == [False, False, False, False, True, False, False, False, False, False]


def test_rigl_regrows_at_zero_and_keeps_untouched_tensors() -> None:
    params = {"a": torch.tensor([[4.0, 3.0, 2.0, 1.0]]), "b": torch.ones(2, 2)}
    pruner = pruners.rigl(0.5, update_every=1, drop_fraction=0.5, overrides={"b": 0.0})
    state = pruner.init(params)
    live = state.masks["a"].clone()
    grads = {"a": torch.where(live, 0.0, 1.0).view(1, 4), "b": torch.zeros(2, 2)}
    new, out = pruner.update(state, params, grads=grads)
    assert int(new.masks["a"].sum()) == 2
    revived = new.masks["a"] & ~live
    assert int(revived.sum()) == 1 and float(out["a"][revived]) == 0.0
    assert out["b"] is params["b"] and out["a"] is not params["a"]
    assert torch.equal(pruner.resets(state, new)["a"], revived)


def test_set_grows_at_random_reproducibly_and_differs_by_seed() -> None:
    params = {"w": torch.randn(16, 16, generator=torch.Generator().manual_seed(0))}

    def run(seed: int) -> torch.Tensor:
        pruner = pruners.set(0.9, seed=seed, update_every=1)
        state = pruner.init(params)
        for _ in range(3):
            state, _ = pruner.update(state, params)
        return state.masks["w"]

    assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))


def test_movement_freezes_pruned_scores() -> None:
    pruner = pruners.movement(0.5)
    w = {"w": torch.tensor([1.0, 1.0, 1.0, 1.0])}
    state = pruner.init(w)
    state, _ = pruner.update(state, w, grads={"w": torch.tensor([1.0, -1.0, 1.0, -1.0])})
    assert state.masks["w"].tolist() == [False, True, False, True]
    state, _ = pruner.update(state, w, grads={"w": torch.tensor([5.0, 5.0, 5.0, 5.0])})
    assert state.stats["movement"]["w"].tolist() == [-1.0, -4.0, -1.0, -4.0]


def test_snip_is_one_shot_global_saliency() -> None:
    w = {"a": torch.tensor([1.0, 2.0, 3.0]), "b": torch.tensor([1.0])}
    g = {"a": torch.tensor([1.0, 0.1, 1.0]), "b": torch.tensor([0.5])}
    pruner = pruners.snip(0.5)
    state, _ = pruner.update(pruner.init(w), w, grads=g)
    assert {n: m.tolist() for n, m in state.masks.items()} == {
        "a": [True, False, True], "b": [False]}
    later, _ = pruner.update(state, w)  # after the one shot no grads are needed
    assert later.masks["a"] is state.masks["a"]


def test_sparsity_mapping_leaves_unnamed_tensors_dense() -> None:
    w = {"a": torch.arange(1.0, 5.0), "b": torch.arange(1.0, 5.0)}
    pruner = pruners.magnitude({"a": 0.5})
    state, _ = pruner.update(pruner.init(w), w)
    assert dict(state.targets) == {"a": 0.5, "b": 0.0}
    assert state.masks["b"].all() and int(state.masks["a"].sum()) == 2


FACTORIES = {
    "magnitude": lambda **k: pruners.magnitude(**k),
    "global_magnitude": lambda **k: pruners.global_magnitude(**k),
    "random": lambda **k: pruners.random(**k),
    "saliency": lambda **k: pruners.saliency(**k),
    "global_saliency": lambda **k: pruners.global_saliency(**k),
    "ste_magnitude": lambda **k: pruners.ste_magnitude(**k),
    "ste_random": lambda **k: pruners.ste_random(**k),
    "movement": lambda **k: pruners.movement(**k),
    "set": lambda **k: pruners.set(**k),
    "rigl": lambda **k: pruners.rigl(**k),
}


@pytest.mark.parametrize("name", sorted(FACTORIES))
@pytest.mark.parametrize("kwargs, match", [
    ({"sparsity": 1.5}, "sparsity"),
    ({"sparsity": -0.1}, "sparsity"),
    ({"sparsity": float("nan")}, "sparsity"),
    ({"sparsity": 0.5, "sparsity_type": "3x"}, "sparsity_type"),
    ({"sparsity": 0.5, "sparsity_type": 7}, "sparsity_type"),
    ({"sparsity": 0.5, "start_step": 4, "end_step": 2}, "end_step"),
    ({"sparsity": 0.5, "start_step": -1}, "start_step"),
    ({"sparsity": 0.5, "update_every": 0}, "update_every"),
    ({"sparsity": 0.5, "overrides": {"w": 2.0}}, "overrides"),
])
def test_bad_factory_arguments(name: str, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises((TypeError, ValueError), match=match):
        FACTORIES[name](**kwargs)


@pytest.mark.parametrize("call, match", [
    (lambda: pruners.magnitude(0.5, distribution="normal"), "distribution"),
    (lambda: pruners.random(0.5, seed=-1), "seed"),
    (lambda: pruners.rigl(0.5, drop_fraction=1.5), "drop_fraction"),
    (lambda: pruners.set(0.5, sparsity_type="2:4"), "sparsity_type"),
    (lambda: pruners.acdc(0.5, 4, 2, 1, 1), "final_sparse_start"),
    (lambda: pruners.acdc(0.5, 0, 2, 0, 1), "sparse_steps"),
    (lambda: pruners.acdc(0.5, 0, 2, 1, 1, reset_optimizer="yes"), "reset_optimizer"),
    (lambda: pruners.cosine_drop_fraction(0.3, 0), "end_step"),
    (lambda: pruners.global_magnitude({"a": 0.5}), "sparsity"),
    (lambda: fsparse.drop_and_grow(MASK, DROP, GROW, 1.1), "drop_fraction"),
    (lambda: fsparse.drop_and_grow(MASK, DROP, GROW[:4], 0.5), "grow_score"),
    (lambda: fsparse.drop_and_grow(MASK.float(), DROP, GROW, 0.5), "mask"),
    (lambda: fsparse.drop_and_grow(MASK, DROP * float("nan"), GROW, 0.5), "drop_score"),
    (lambda: fsparse.drop_and_grow(MASK, DROP, GROW, 0.5, pattern="2:4"), "N:M"),
    (lambda: fsparse.drop_and_grow(MASK.view(2, 4), DROP.view(2, 4), GROW.view(2, 4), 0.5,
                                   pattern="1x2"), "whole"),
])
def test_bad_arguments_name_what_is_wrong(call: Any, match: str) -> None:
    with pytest.raises((TypeError, ValueError), match=match):
        call()


def _frozen(state: pruners.PrunerState) -> dict[str, Any]:
    return {"step": state.step, "masks": {n: (m, m._version, m.clone())
                                          for n, m in state.masks.items()}}


def _same(state: pruners.PrunerState, before: dict[str, Any]) -> bool:
    return state.step == before["step"] and all(
        state.masks[n] is m and m._version == v and torch.equal(m, c)
        for n, (m, v, c) in before["masks"].items())


@pytest.mark.parametrize("pruner, match, args", [
    (pruners.saliency(0.5), "grads is required", {}),
    (pruners.global_saliency(0.5), "grads is required", {}),
    (pruners.snip(0.5), "grads is required", {}),
    (pruners.rigl(0.5), "grads is required", {}),
    (pruners.movement(0.5), "grads is required", {}),
    (pruners.saliency(0.5), "grads must have the same names",
     {"grads": {"fc.weight": torch.ones(4, 8), "other": torch.ones(2)}}),
    (pruners.rigl(0.5), "grads must have the same names", {"grads": {}}),
    (pruners.saliency(0.5), "shape", {"grads": {"fc.weight": torch.ones(8, 4)}}),
    (pruners.magnitude(0.5), "params must have the same names",
     {"params": {"fc.weight": torch.ones(4, 8), "extra": torch.ones(1)}}),
    (pruners.magnitude(0.5), "shape", {"params": {"fc.weight": torch.ones(8, 4)}}),
    (pruners.magnitude(0.5), "floating-point", {"params": {"fc.weight": torch.ones(4, 8).long()}}),
    (pruners.magnitude(0.5), "NaN", {"params": {"fc.weight": torch.full((4, 8), float("nan"))}}),
])
def test_bad_update_input_raises_and_changes_nothing(pruner: pruners.Pruner, match: str,
                                                     args: dict[str, Any]) -> None:
    params = {"fc.weight": torch.randn(4, 8)}
    state = pruner.init(params)
    before, given = _frozen(state), args.get("params", params)
    snapshot = {n: (p._version, p.clone()) for n, p in given.items()}
    with pytest.raises((TypeError, ValueError), match=match):
        pruner.update(state, given, grads=args.get("grads"))
    assert _same(state, before)
    assert all(given[n]._version == v and torch.equal(given[n].nan_to_num(), c.nan_to_num())
               for n, (v, c) in snapshot.items())
    with pytest.raises(TypeError, match="state"):
        pruner.update(pruners.state_dict(state), params)  # type: ignore[arg-type]


def test_bad_init_input() -> None:
    with pytest.raises(ValueError, match="not divisible by 4"):
        pruners.magnitude(0.5, sparsity_type="2:4").init({"fc.weight": torch.ones(4, 6)})
    with pytest.raises(ValueError, match="overrides"):
        pruners.magnitude(0.5, overrides={"x": 0.1}).init({"w": torch.ones(4)})
    with pytest.raises(ValueError, match="sparsity names"):
        pruners.magnitude({"x": 0.1}).init({"w": torch.ones(4)})
    with pytest.raises(TypeError, match="params"):
        pruners.magnitude(0.5).init([torch.ones(4)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        pruners.magnitude(0.5).init({"": torch.ones(4)})


def test_cosine_drop_fraction_with_a_huge_end_step() -> None:
    f = pruners.cosine_drop_fraction(0.3, 10**400)  # was OverflowError: int too large
    assert f(0) == 0.3 and f(5) == pytest.approx(0.3) and f(10**400) == 0.0


@pytest.mark.parametrize("algo", ["rigl", "set"])
def test_dst_refuses_nan_anywhere_in_its_scores(algo: str) -> None:
    """NaN in a weight or gradient raises, whether or not its place could move the masks."""
    pruner = getattr(pruners, algo)(0.5, update_every=1)
    state = pruner.init({"w": torch.randn(16, 16)})
    flat = state.masks["w"].reshape(-1)
    places = {"live": int(flat.nonzero()[0]), "dead": int((~flat).nonzero()[0])}
    for where, at in places.items():
        for source in ("w", "g") if algo == "rigl" else ("w",):
            w, g = torch.randn(16, 16), torch.randn(16, 16)
            (w if source == "w" else g).view(-1)[at] = float("nan")
            before = state.masks["w"].clone()
            with pytest.raises(ValueError, match="NaN"):
                pruner.update(state, {"w": w}, grads={"w": g})
            assert torch.equal(state.masks["w"], before), (where, source)
