"""fsparse.data_scheduler: torch.ao's BaseDataScheduler contract and the ready-made schedulers."""

from __future__ import annotations

import io
import warnings
from typing import Any

import pytest
import torch
from torch.ao.pruning._experimental import data_scheduler as ao_sched
from torch.ao.pruning._experimental import data_sparsifier as ao_sparse

import fsparse
from fsparse import data_scheduler as fs_sched
from fsparse import data_sparsifier as fs_sparse
from fsparse.data_scheduler import (
    BaseDataScheduler,
    CubicSLScheduler,
    LambdaSLScheduler,
    StepSLScheduler,
)
from fsparse.data_sparsifier import DataNormSparsifier

LIBS = {"fsparse": (fs_sparse, fs_sched), "torch.ao": (ao_sparse, ao_sched)}


# torch.ao's README example, verbatim, written once and put on both base classes.
def gamma_init(self: Any, data_sparsifier: Any, gamma: float, threshold_sl: float) -> None:
    type(self).__mro__[1].__init__(self, data_sparsifier, "sparsity_level")
    self.gamma = gamma
    self.threshold_sl = threshold_sl


def gamma_get_schedule_param(self: Any) -> dict[str, float]:
    if self.last_epoch > 0:
        return {
            name: min(self.threshold_sl, config["sparsity_level"] * self.gamma)
            for name, config in self.data_sparsifier.data_groups.items()
        }
    return {name: 0.0 for name, config in self.data_sparsifier.data_groups.items()}


def ramp_init(self: Any, data_sparsifier: Any, gamma: float, threshold_sl: float) -> None:
    self.gamma = gamma
    self.threshold_sl = threshold_sl
    type(self).__mro__[1].__init__(self, data_sparsifier, "sparsity_level")


def ramp_get_schedule_param(self: Any) -> dict[str, float]:
    """Like GammaScheduler but from each base value, so that masks actually change."""
    groups = self.data_sparsifier.data_groups
    return {
        name: min(
            self.threshold_sl,
            self.base_param.setdefault(name, config["sparsity_level"])
            * self.gamma**self.last_epoch,
        )
        for name, config in groups.items()
    }


def scheduler_classes(sched_module: Any) -> dict[str, type]:
    base = sched_module.BaseDataScheduler
    return {
        "gamma": type(
            "GammaScheduler",
            (base,),
            {
                "__init__": gamma_init,
                "get_schedule_param": gamma_get_schedule_param,
            },
        ),
        "ramp": type(
            "RampScheduler",
            (base,),
            {
                "__init__": ramp_init,
                "get_schedule_param": ramp_get_schedule_param,
            },
        ),
    }


def run_training(lib: str, kind: str, data: dict[str, torch.Tensor]) -> Any:
    sparse_module, sched_module = LIBS[lib]
    sparsifier = sparse_module.DataNormSparsifier(sparsity_level=0.1, sparse_block_shape=(1, 2))
    for name, tensor in data.items():
        sparsifier.add_data(name, tensor.clone())
    scheduler = scheduler_classes(sched_module)[kind](sparsifier, gamma=2.0, threshold_sl=0.7)
    history = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for epoch in range(5):
            for batch in range(2):
                out = sparsifier.add_data("train_data", data["batch"] * (epoch + batch + 1))
                sparsifier.step()
            scheduler.step()
            history.append(
                (
                    dict(sparsifier.data_groups),
                    {n: sparsifier.get_mask(n).clone() for n in sparsifier.data_groups},
                    out.detach().clone(),
                    scheduler.get_last_param(),
                )
            )
    return scheduler, history


@pytest.mark.parametrize("kind", ["gamma", "ramp"])
def test_user_scheduler_subclass_runs_the_same_under_both_libraries(kind: str) -> None:
    gen = torch.Generator().manual_seed(0)
    data = {"w": torch.randn(6, 8, generator=gen), "batch": torch.randn(4, 6, generator=gen)}
    ours, ours_history = run_training("fsparse", kind, data)
    ref, ref_history = run_training("torch.ao", kind, data)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    assert ours.state_dict() == ref.state_dict()
    for (groups, masks, out, last), (ref_groups, ref_masks, ref_out, ref_last) in zip(
        ours_history, ref_history, strict=True
    ):
        assert groups == ref_groups and last == ref_last
        for name, mask in masks.items():
            assert mask.dtype == ref_masks[name].dtype and torch.equal(mask, ref_masks[name])
        assert torch.equal(out, ref_out)
    if kind == "ramp":
        assert ours_history[-1][0]["w"]["sparsity_level"] == 0.7


@pytest.mark.parametrize("lib", LIBS)
def test_constructor_steps_once_and_counts_calls(lib: str) -> None:
    sparse_module, sched_module = LIBS[lib]
    sp = sparse_module.DataNormSparsifier([("w", torch.randn(4, 4))], sparsity_level=0.4)
    sched = scheduler_classes(sched_module)["ramp"](sp, gamma=2.0, threshold_sl=1.0)
    assert sched.last_epoch == 0 and sched._step_count == 1
    assert sched.base_param == {"w": 0.4} and sched.get_last_param() == {"w": 0.4}
    assert sp._step_count == 0 and sp.step._with_counter
    sp.step()
    sp.step()
    assert sp._step_count == 2
    sp.enable_mask_update = False
    sched.step()
    assert sp.enable_mask_update is True
    assert sp.data_groups["w"]["sparsity_level"] == 0.8


@pytest.mark.parametrize("lib", LIBS)
def test_scheduler_before_sparsifier_warns(lib: str) -> None:
    sparse_module, sched_module = LIBS[lib]
    sp = sparse_module.DataNormSparsifier([("w", torch.randn(4, 4))])
    sched = scheduler_classes(sched_module)["ramp"](sp, gamma=2.0, threshold_sl=1.0)
    with pytest.warns(UserWarning, match=r"before `data_sparsifier.step\(\)`"):
        sched.step()
    sp2 = sparse_module.DataNormSparsifier([("w", torch.randn(4, 4))])
    sched2 = scheduler_classes(sched_module)["ramp"](sp2, gamma=2.0, threshold_sl=1.0)
    sp2.step = lambda: None
    with pytest.warns(UserWarning, match="overridden"):
        sched2.step()


def test_wrong_sparsifier_type_is_a_type_error() -> None:
    ref = ao_sparse.DataNormSparsifier([("w", torch.randn(4, 4))])
    with pytest.raises(TypeError, match="DataNormSparsifier is not an instance"):
        StepSLScheduler(ref)
    with pytest.raises(TypeError):
        StepSLScheduler(None)  # type: ignore[arg-type]


def test_get_schedule_param_flag_is_true_only_within_step() -> None:
    seen = []

    class Spy(BaseDataScheduler):
        def get_schedule_param(self) -> dict[str, Any]:
            seen.append(self._get_sp_called_within_step)
            return {}

    sched = Spy(DataNormSparsifier([("w", torch.randn(2, 4))]), "sparsity_level")
    assert seen == [True] and sched._get_sp_called_within_step is False
    sched.get_schedule_param()
    assert seen == [True, False]


def test_base_scheduler_without_get_schedule_param_raises() -> None:
    with pytest.raises(NotImplementedError):
        BaseDataScheduler(DataNormSparsifier(), "sparsity_level")


def test_verbose_prints(capsys: pytest.CaptureFixture[str]) -> None:
    StepSLScheduler(DataNormSparsifier([("w", torch.randn(2, 4))]), verbose=True)
    assert "Adjusting sparsity_level for group w to 0.5" in capsys.readouterr().out


def test_repr() -> None:
    sched = StepSLScheduler(DataNormSparsifier([("w", torch.randn(2, 4))]))
    assert repr(sched).startswith("StepSLScheduler (\nData Sparsifier DataNormSparsifier (")
    assert "sparsity_level: {'w': 0.5}" in repr(sched)


# -- ready-made schedulers -------------------------------------------------------------
def stepped(sched: BaseDataScheduler, epochs: int) -> list[dict[str, Any]]:
    out = [sched.get_last_param()]
    for _ in range(epochs):
        sched.data_sparsifier.step()
        sched.step()
        out.append(sched.get_last_param())
    return out


def test_step_sl_multiplies_by_gamma_every_step_size_epochs_unclamped() -> None:
    sp = DataNormSparsifier(
        [("a", torch.randn(4, 8)), ("b", torch.randn(4, 8))], sparsity_level=0.3
    )
    sp.data_groups["b"]["sparsity_level"] = 0.1
    sched = StepSLScheduler(sp, step_size=2, gamma=3)
    values = stepped(sched, 6)
    expected = fsparse.step_sl(3.0, step_size=2)
    for epoch, value in enumerate(values):
        assert value == pytest.approx({"a": 0.3 * expected(epoch), "b": 0.1 * expected(epoch)})
    assert values[-1]["a"] > 1.0  # not clamped; the mask clamps it
    assert bool((sp.get_mask("a") == 0).all())


def test_step_sl_state_dict_is_safe_loadable_and_restores() -> None:
    sp = DataNormSparsifier([("a", torch.randn(4, 8))], sparsity_level=0.2)
    sched = StepSLScheduler(sp, gamma=1.5)
    stepped(sched, 3)
    buffer = io.BytesIO()
    torch.save(sched.state_dict(), buffer)
    buffer.seek(0)
    fresh = StepSLScheduler(DataNormSparsifier([("a", torch.randn(4, 8))], sparsity_level=0.2))
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert fresh.last_epoch == 3 and fresh.gamma == 1.5
    fresh.data_sparsifier.step()
    fresh.step()
    sp.step()
    sched.step()
    assert fresh.get_last_param() == sched.get_last_param()


def test_data_added_later_starts_from_its_own_value() -> None:
    sp = DataNormSparsifier([("a", torch.randn(4, 8))], sparsity_level=0.2)
    sched = StepSLScheduler(sp, gamma=2)
    sp.add_data("late", torch.randn(4, 8), sparsity_level=0.1)
    sp.step()
    sched.step()
    assert sched.get_last_param() == pytest.approx({"a": 0.4, "late": 0.2})


def test_step_sl_rejects_bad_hyperparameters() -> None:
    sp = DataNormSparsifier([("a", torch.randn(4, 8))])
    for kwargs in ({"step_size": 0}, {"gamma": float("nan")}, {"step_size": 1.5}):
        with pytest.raises((TypeError, ValueError)):  # a float step_size is a TypeError
            StepSLScheduler(sp, **kwargs)
    assert sp.data_groups["a"]["sparsity_level"] == 0.5
    with pytest.raises(ValueError, match="'missing'"):
        StepSLScheduler(sp, schedule_param="missing")


@pytest.mark.parametrize("final", [None, 0.9])
def test_cubic_follows_the_core_schedule(final: float | None) -> None:
    sp = DataNormSparsifier(
        [("a", torch.randn(8, 8)), ("b", torch.randn(8, 8))], sparsity_level=0.8
    )
    sp.add_data("b", torch.randn(8, 8), sparsity_level=0.6)
    sched = CubicSLScheduler(
        sp, initial_sparsity=0.1, final_sparsity=final, begin_step=1, num_updates=3, update_every=2
    )
    values = stepped(sched, 10)
    for name, target in (("a", 0.8), ("b", 0.6)):
        ramp = fsparse.cubic(0.1, final or target, begin_step=1, num_updates=3, update_every=2)
        assert [v[name] for v in values] == pytest.approx([ramp(t) for t in range(11)])
        assert values[-1][name] == pytest.approx(final or target)
    density = 1.0 - float((sp.get_mask("a") == 0).float().mean())
    assert density == pytest.approx(1.0 - (final or 0.8), abs=0.07)


def test_cubic_rejects_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match="num_updates"):
        CubicSLScheduler(DataNormSparsifier(), num_updates=0)


def test_lambda_scales_the_base_value() -> None:
    sp = DataNormSparsifier(
        [("a", torch.randn(4, 8)), ("b", torch.randn(4, 8))], sparsity_level=0.5
    )
    sched = LambdaSLScheduler(sp, {"a": lambda epoch: 0.9**epoch})
    values = stepped(sched, 3)
    assert [v["a"] for v in values] == pytest.approx([0.5 * 0.9**t for t in range(4)])
    assert all(v["b"] == 0.5 for v in values)
    assert "sl_lambda" not in sched.state_dict()
    one_fn = LambdaSLScheduler(DataNormSparsifier([("a", torch.randn(2, 4))]), lambda e: e + 1)
    assert stepped(one_fn, 2)[-1] == {"a": 1.5}


def test_lambda_rejects_non_callables() -> None:
    with pytest.raises(TypeError, match="callable"):
        LambdaSLScheduler(DataNormSparsifier(), 0.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        LambdaSLScheduler(DataNormSparsifier(), {"a": 0.5})  # type: ignore[dict-item]
