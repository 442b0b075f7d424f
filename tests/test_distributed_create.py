"""fsparse.create under FSDP2 (``fully_shard`` on CPU/gloo ranks): the one-process run, bit for bit.

Each rank trains a small conv net wrapped with ``fully_shard`` (its weights become
``Shard(0)`` DTensors, some shards uneven or empty) through ``fsparse.create.initialize``
and compares it with the same run of the plain net in the same process (same seed,
same batches, one thread each).

Why the comparison can be exact: every rank trains on the *same* batch, and FSDP2
reduce-scatters the gradients in float64 (``MixedPrecisionPolicy(reduce_dtype=float64)``).
Each rank's local gradient is the one-process gradient bit for bit (same ops on the
same all-gathered weights), and the average of ``world`` identical float32 values
computed in float64 is exact (the sum of ``world <= 2**29`` copies needs no rounding,
dividing by a power of two neither), so the reduced gradient, the optimizer step and
hence the weights equal the one-process run's. The test checks the weights too (all
parameters, after the run), so equal masks are not luck of a rounding: any mask
difference would come from create or the selection, not from FSDP's reductions.

One launch per world size runs every case, so process start-up is paid once.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
import torch
from test_distributed_launch import launch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

from fsparse import create, pruners
from fsparse.create.pruning import _revives

SPE, EPOCHS = 5, 2  # 10 steps; pruning (a mask update every step) over the first 5
VARIABLES = {"num_epochs": EPOCHS, "init_lr": 0.05, "final_lr": 0.01, "sparsity": 0.7}


def _net() -> nn.Module:
    """Weights of 8, 8, 9 and 1 rows: uneven shards (5 + 4 on 2 ranks) and empty ones (the
    one-row head: 1 + 0 on 2 ranks)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 4 * 4, 9), nn.ReLU(), nn.Linear(9, 1))


def _sharded_in_place(model: nn.Module, mesh: DeviceMesh) -> nn.Module:
    policy = MixedPrecisionPolicy(reduce_dtype=torch.float64)  # exact averaging (docstring)
    for layer in model.children():
        if any(True for _ in layer.parameters()):
            fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def _sharded(mesh: DeviceMesh) -> nn.Module:
    return _sharded_in_place(_net(), mesh)


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(step)
    return torch.randn(8, 3, 8, 8, generator=gen), torch.randn(8, 1, generator=gen)


Case = tuple[bool | str, dict[str, Any]]  # pruning=, extra recipe variables


def _start(model: nn.Module, case: Case) -> tuple[Any, Any]:
    sgd = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return create.initialize(model, sgd, SPE, pruning=case[0], quantization=False,
                             recipe_variables={**VARIABLES, **case[1]})


def _train(model: nn.Module, manager: Any, optimizer: Any, steps: range) -> None:
    for step in steps:
        x, y = _batch(step)
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _saved(*states: Any) -> list[Any]:
    """``states`` through ``torch.save``/``torch.load`` (each rank its own file)."""
    buffer = io.BytesIO()
    torch.save(list(states), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)  # type: ignore[no-any-return]


def _run(make: Callable[[], nn.Module], case: Case, resume_at: int | None = None
         ) -> tuple[nn.Module, Any]:
    """The whole recipe; with ``resume_at``, checkpointed there and resumed in a fresh run."""
    total = SPE * EPOCHS
    model = make()
    manager, optimizer = _start(model, case)
    if resume_at is None:
        _train(model, manager, optimizer, range(total))
        return model, manager
    _train(model, manager, optimizer, range(resume_at))
    sd, model_sd, opt_sd = _saved(manager.state_dict(), model.state_dict(),
                                  optimizer.state_dict())
    model = make()
    manager, optimizer = _start(model, case)
    manager.load_state_dict(sd)
    model.load_state_dict(model_sd)
    optimizer.load_state_dict(opt_sd)
    _train(model, manager, optimizer, range(resume_at, total))
    return model, manager


def _run_scaled(model: nn.Module) -> tuple[nn.Module, Any]:
    """Movement pruning through a ``GradScaler`` (scale 1024): the pruner gets unscaled grads."""
    sgd = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    manager, wrapped = create.initialize(model, sgd, SPE, pruning="movement", quantization=False,
                                         recipe_variables=VARIABLES, scaler=scaler)
    for step in range(SPE * EPOCHS):
        x, y = _batch(step)
        sgd.zero_grad()
        scaler.scale(nn.functional.mse_loss(model(x), y)).backward()
        wrapped.step(sgd)
        scaler.update()
    return model, manager


def _run_distilled(model: nn.Module) -> tuple[nn.Module, Any]:
    """Gradual magnitude with distillation from a given (plain) teacher."""
    torch.manual_seed(5)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 1))
    sgd = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    manager, optimizer = create.initialize(model, sgd, SPE, quantization=False, distillation=True,
                                           distillation_teacher=teacher,
                                           recipe_variables=VARIABLES)
    for step in range(SPE * EPOCHS):
        x, y = _batch(step)
        out = model(x)
        loss = manager.loss_update(nn.functional.mse_loss(out, y), student_outputs=out,
                                   student_inputs=x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, manager


def _same_run(rank: int, world: int, ref: tuple[nn.Module, Any], got: tuple[nn.Module, Any],
              case: str) -> None:
    (ref_model, ref_manager), (model, manager) = ref, got
    for (name, p), (ref_name, q) in zip(model.named_parameters(), ref_model.named_parameters()):
        assert name == ref_name and isinstance(p, DTensor) and p.placements == (Shard(0),)
        assert torch.equal(p.full_tensor(), q), (case, "weights differ", name)
    masks, ref_masks = manager.masks, ref_manager.masks
    assert list(masks) == list(ref_masks)
    for name, mask in masks.items():
        assert isinstance(mask, DTensor) and mask.placements == (Shard(0),), (case, name)
        assert torch.equal(mask.full_tensor(), ref_masks[name]), (case, "masks differ", name)
    # the whole tensors' levels, not the local shard's: equal floats, from equal counts
    assert manager.sparsity() == ref_manager.sparsity(), case
    assert manager.target_sparsity() == ref_manager.target_sparsity(), case
    assert manager.target_sparsity(0.5) == ref_manager.target_sparsity(0.5), case
    levels = ref_manager.sparsity()
    assert sum(levels.values()) / len(levels) > 0.4, (case, levels)  # it did prune


def _wrong_use(rank: int, world: int, mesh: DeviceMesh) -> None:
    # a Shard(1) weight: ValueError naming the parameter and the placement, nothing changed
    layer = nn.Linear(4, 2 * world)
    layer.weight = nn.Parameter(distribute_tensor(layer.weight.detach(), mesh, [Shard(1)]))
    weight: Any = layer.weight
    before = weight.full_tensor().clone()
    sgd = torch.optim.SGD(layer.parameters(), lr=0.5)
    with pytest.raises(ValueError, match=r"model parameter 'weight' .*Shard\(dim=1\)"):
        create.initialize(layer, sgd, SPE, quantization=False, recipe_variables=VARIABLES)
    assert torch.equal(weight.full_tensor(), before) and sgd.param_groups[0]["lr"] == 0.5
    # block masks of an unevenly sharded conv weight (its matrix view has no DTensor form)
    conv = nn.Sequential(nn.Conv2d(4, 2 * world + 1, 1))
    fully_shard(conv, mesh=mesh)
    with pytest.raises(ValueError, match=r"model parameter '0.weight': mask_type 'block4'"):
        _start(conv, (True, {"mask_type": "block4"}))
    # fully_shard applied after initialize: the first step refuses (masks would miss)
    late = _net()
    manager, optimizer = _start(late, (True, {}))
    _sharded_in_place(late, mesh)
    with pytest.raises(ValueError, match=r"model: its weights .* fully_shard"):
        _train(late, manager, optimizer, range(1))
    assert manager.step == 0
    # self-distillation would deep-copy the FSDP2 model: refused, naming the argument
    with pytest.raises(ValueError, match="distillation: self-distillation"):
        create.initialize(_sharded(mesh), sgd, SPE, quantization=False, distillation=True,
                          recipe_variables=VARIABLES)
    # second-order modes: refused at initialize, naming the mode
    with pytest.raises(ValueError, match="pruning: mode 'obs'"):
        _start(_sharded(mesh), ("obs", {}))
    # QAT cannot run on FSDP2 modules: refused, naming the argument
    with pytest.raises(ValueError, match="quantization"):
        create.initialize(_sharded(mesh), sgd, SPE, recipe_variables=VARIABLES)
    # a checkpoint refused by one rank only: every rank raises, none hangs, nothing changes
    model = _sharded(mesh)
    manager, optimizer = _start(model, (True, {}))
    _train(model, manager, optimizer, range(3))
    sd = manager.state_dict()
    fresh, _ = _start(_sharded(mesh), (True, {}))
    if rank == world - 1:
        name = next(iter(sd["masks"]))
        sd["masks"][name] = sd["masks"][name].to_local().clone()  # a plain tensor
        expected = "must be a DTensor placed like this run's weight"
    else:
        expected = "refused on another rank"
    with pytest.raises(ValueError, match=expected):
        fresh.load_state_dict(sd)
    assert fresh.step == 0 and all(bool(m.to_local().all()) for m in fresh.masks.values())


def _resets_alike(rank: int, world: int, mesh: DeviceMesh) -> None:
    """Whether a mask update revives weights (whose optimizer state then restarts) is
    decided from the whole mask, alike on every rank, not from this rank's shard."""
    old = torch.ones(2 * world, 3, dtype=torch.bool)
    old[0, 0] = False  # revived in rank 0's rows only
    new = torch.ones(2 * world, 3, dtype=torch.bool)
    old_d, new_d = (distribute_tensor(t, mesh, [Shard(0)]) for t in (old, new))
    assert _revives(old_d, new_d) and _revives(old, new)


def _drop_and_grow_one_row(rank: int, world: int, mesh: DeviceMesh) -> None:
    """RigL/SET's exchange on a one-row weight (a head of one output: an empty shard on
    rank 1) keeps its Shard(0) placement and equals the one-process exchange."""
    gen = torch.Generator().manual_seed(3)
    mask = torch.rand(1, 9, generator=gen) > 0.4
    drop, grow = torch.randn(1, 9, generator=gen), torch.randn(1, 9, generator=gen)
    want = pruners.drop_and_grow(mask, drop, grow, 0.5)
    m, d, g = (distribute_tensor(t, mesh, [Shard(0)]) for t in (mask, drop, grow))
    got: Any = pruners.drop_and_grow(m, d, g, 0.5)
    assert got.placements == (Shard(0),) and torch.equal(got.full_tensor(), want)


def _fsdp_create(rank: int, world: int, cases: list[Case], more: bool) -> None:
    mesh = init_device_mesh("cpu", (world,))
    for case in cases:
        ref = _run(_net, case)
        _same_run(rank, world, ref, _run(lambda: _sharded(mesh), case), repr(case))
        if more and case == (True, {}):  # resumed halfway through pruning: the same run
            resumed = _run(lambda: _sharded(mesh), case, resume_at=3)
            _same_run(rank, world, ref, resumed, f"{case!r} resumed")
    if more:
        scaled = _run_scaled(_sharded(mesh))
        _same_run(rank, world, _run_scaled(_net()), scaled, "movement, AMP scaler")
        distilled = _run_distilled(_sharded(mesh))
        _same_run(rank, world, _run_distilled(_net()), distilled, "distillation")
        _resets_alike(rank, world, mesh)
        _drop_and_grow_one_row(rank, world, mesh)
        _wrong_use(rank, world, mesh)


# global magnitude (resumed too), a gradient mode (movement), optimizer-state resets
# (AC/DC's phases, RigL's regrowth from the gradients, SET's random regrowth), block and
# N:M masks (on a conv weight's channels-last view too)
CASES: list[Case] = [(True, {}), ("movement", {}), ("acdc", {}), ("rigl", {}), ("set", {}),
                     (True, {"mask_type": "block4"}), (True, {"mask_type": "2:4", "sparsity": 0.5})]


def test_create_under_fsdp2_matches_one_process() -> None:
    launch(_fsdp_create, 2, CASES, True, timeout_s=240)


@pytest.mark.slow
def test_create_under_fsdp2_on_4_ranks() -> None:
    launch(_fsdp_create, 4, CASES, True, timeout_s=400)
