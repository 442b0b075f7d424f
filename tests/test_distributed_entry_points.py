"""The library's own entry points on DTensors, on real gloo ranks (2 and 4).

``fsparse.select_mask`` / ``select_count_mask`` / ``global_select_masks`` /
``config_norm_mask``, ``fsparse.init`` / ``step``, the pruners and the drop-in take
``Shard(0)`` (uneven splits, empty shards) and ``Replicate()`` DTensors; every mask
comes back placed like the data and equals the single-process mask of the whole
tensors, ties at the threshold included. The cases run inside
``test_distributed_masks``'s launches (2 and 4 ranks), which share one process
start-up per world size.
"""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

import fsparse
import fsparse.distributed
from fsparse import pruners


def _whole(mask: torch.Tensor) -> torch.Tensor:
    assert isinstance(mask, DTensor), type(mask)
    return mask.full_tensor()


def _placements(mask: torch.Tensor) -> tuple[object, ...]:
    assert isinstance(mask, DTensor), type(mask)
    return tuple(mask.placements)


def _mislaid(mesh: DeviceMesh, full: torch.Tensor, sizes: list[int]) -> DTensor:
    """A Shard(0) DTensor whose local rows are not torch.chunk's (so its offsets are wrong)."""
    rank = dist.get_rank()
    offset = sum(sizes[:rank])
    local = full[offset : offset + sizes[rank]].clone()
    return DTensor.from_local(local, mesh, [Shard(0)], run_check=False, shape=full.shape,
                              stride=full.stride())


def _scores(rng: random.Random, shape: tuple[int, ...]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(rng.randint(0, 2**31))
    if rng.random() < 0.5:  # few distinct values: ties at the threshold
        return (torch.randint(-2, 3, shape, generator=gen) / 2).float()
    return torch.randn(shape, generator=gen)


def _placed(rng: random.Random, mesh: DeviceMesh, full: torch.Tensor) -> DTensor:
    """Replicated or Shard(0) (torch.chunk splits: uneven, empty shards when rows < world)."""
    return distribute_tensor(full, mesh, [Replicate() if rng.random() < 0.25 else Shard(0)])


def _engine(rank: int, world: int, cases: int) -> None:
    """The engine's selection functions: every pattern, per tensor and global."""
    mesh = init_device_mesh("cpu", (world,))
    rng = random.Random(11 + world)  # the same cases on every rank
    for i in range(cases):
        pattern = rng.choice(["unstructured", "2:4", "1:4", "channel", "2x3", "1x1"])
        fulls, dts = {}, {}
        for t in range(rng.randint(1, 3)):
            rows = rng.randint(1, 13)
            shape = rng.choice([(rows, 8), (rows, 4, 2, 2), (rows,)])
            if pattern.count(":") and len(shape) == 1:
                shape = (rows, 4)
            if "x" in pattern:
                shape = (max(rows, 2), 8)
            fulls[f"t{t}"] = _scores(rng, shape)
            dts[f"t{t}"] = _placed(rng, mesh, fulls[f"t{t}"])
        kinds = {d.placements[0].is_replicate() for d in dts.values()}
        sparsity = rng.choice([0.0, 1.0, 0.5, rng.random()])
        for name, full in fulls.items():
            got = fsparse.select_mask(dts[name], sparsity, pattern)
            assert _placements(got) == dts[name].placements
            want = fsparse.select_mask(full, sparsity, pattern)
            assert torch.equal(_whole(got), want), (i, pattern, sparsity, name)
            units = fsparse.parse_pattern(pattern).units(tuple(full.shape))
            k = rng.randint(0, units)
            got = fsparse.select_count_mask(dts[name], k, pattern)
            want = fsparse.select_count_mask(full, k, pattern)
            assert torch.equal(_whole(got), want), (i, pattern, k, name)
        if len(kinds) == 1:
            got_all = fsparse.global_select_masks(dts, sparsity, pattern)
            want_all = fsparse.global_select_masks(fulls, sparsity, pattern)
            for name in fulls:
                assert torch.equal(_whole(got_all[name]), want_all[name]), (i, pattern, name)
        else:
            with pytest.raises(ValueError, match="not a mix"):
                fsparse.global_select_masks(dts, sparsity, pattern)


def _norm_and_state(rank: int, world: int) -> None:
    """config_norm_mask, init / step / squash / sparsity on DTensor data."""
    mesh = init_device_mesh("cpu", (world,))
    gen = torch.Generator().manual_seed(5)
    full = {"emb": (torch.randint(0, 4, (4 * world + 3, 12), generator=gen) / 2).float(),
            "w": torch.randn(2 * world + 1, 6, generator=gen),
            "conv": torch.randn(world + 3, 2, 3, 3, generator=gen)}
    config = fsparse.make_config(sparsity_level=0.6, sparse_block_shape=(3, 2), zeros_per_block=4)
    for placement in (Shard(0), Replicate()):
        data = {n: distribute_tensor(t, mesh, [placement]) for n, t in full.items()}
        mask = fsparse.config_norm_mask(data["emb"], config)
        assert torch.equal(_whole(mask), fsparse.config_norm_mask(full["emb"], config))
        state = fsparse.init(data, sparsity_level=0.6, sparse_block_shape=(3, 2))
        plain = fsparse.init(full, sparsity_level=0.6, sparse_block_shape=(3, 2))
        state, plain = fsparse.step(state), fsparse.step(plain)
        for name in full:
            assert _placements(state[name].mask) == (placement,)
            assert torch.equal(_whole(state[name].mask), plain[name].mask), name
            assert torch.equal(_whole(fsparse.squash(state)[name]), fsparse.squash(plain)[name])
        assert fsparse.sparsity(state) == fsparse.sparsity(plain)
        configs = {n: config for n in full}
        assert fsparse.global_levels(data, configs, 0.55) == \
            fsparse.global_levels(full, configs, 0.55)
    # NaN on one rank's shard only: every rank raises (no rank left waiting in a collective)
    nan = full["w"].clone()
    nan[-1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fsparse.existing_zeros_mask(distribute_tensor(nan, mesh, [Shard(0)]), None)
    # wrong use through step: a clear error, the state unchanged
    bad = fsparse.init({"w": distribute_tensor(full["w"], mesh, [Shard(1)])})
    with pytest.raises(ValueError, match="unsupported DTensor placement"):
        fsparse.step(bad)
    assert bool(_whole(bad["w"].mask).all())
    with pytest.raises(ValueError, match="unsupported DTensor placement"):
        fsparse.select_mask(distribute_tensor(full["w"], mesh, [Shard(1)]), 0.5)
    if world == 4:  # a 2-D mesh
        mesh2 = init_device_mesh("cpu", (2, 2))
        on_2d = distribute_tensor(full["w"], mesh2, [Shard(0), Replicate()])
        with pytest.raises(ValueError, match="only 1-D device meshes"):
            fsparse.step(fsparse.init({"w": on_2d}))
    sizes = [full["w"].shape[0] - world + 1] + [1] * (world - 1)  # not torch.chunk's split
    with pytest.raises(ValueError, match="do not tile"):
        fsparse.select_mask(_mislaid(mesh, full["w"], sizes), 0.5)


def _pruner_run(make: object, full: dict[str, torch.Tensor], grads: dict[str, torch.Tensor],
                mesh: DeviceMesh, steps: int) -> None:
    pruner = make()  # type: ignore[operator]
    dparams = {n: distribute_tensor(t, mesh, [Shard(0)]) for n, t in full.items()}
    dgrads = {n: distribute_tensor(t, mesh, [Shard(0)]) for n, t in grads.items()}
    sharded, plain = pruner.init(dparams), pruner.init(full)
    ps, pp = dparams, full
    for _ in range(steps):
        kw = ({"grads": dgrads}, {"grads": grads}) if pruner.needs_grads else ({}, {})
        sharded, ps = pruner.update(sharded, ps, **kw[0])
        plain, pp = pruner.update(plain, pp, **kw[1])
    for name in full:
        assert _placements(sharded.masks[name]) == (Shard(0),), pruner.name
        assert torch.equal(_whole(sharded.masks[name]), plain.masks[name]), (pruner.name, name)
        assert torch.equal(_whole(ps[name]), pp[name]), pruner.name
    applied = pruners.apply_masks(sharded, ps)
    want = pruners.apply_masks(plain, pp)
    assert all(torch.equal(_whole(applied[n]), want[n]) for n in full), pruner.name
    again = pruners.load_state_dict(pruners.state_dict(sharded))
    assert all(torch.equal(_whole(again.masks[n]), plain.masks[n]) for n in full), pruner.name


def _pruners(rank: int, world: int) -> None:
    mesh = init_device_mesh("cpu", (world,))
    gen = torch.Generator().manual_seed(9)
    full = {"a": (torch.randint(-3, 4, (3 * world + 1, 8), generator=gen) / 2).float(),
            "b": torch.randn(world + 1, 4, generator=gen)}
    grads = {n: torch.randn(t.shape, generator=gen) for n, t in full.items()}
    makers = [lambda: pruners.magnitude(0.5, end_step=2),
              lambda: pruners.global_magnitude(0.6, end_step=2),
              lambda: pruners.magnitude(0.5, sparsity_type="2:4"),
              lambda: pruners.global_magnitude(0.5, sparsity_type="channel"),
              lambda: pruners.random(0.5),
              lambda: pruners.snip(0.5),
              lambda: pruners.movement(0.5, end_step=2),
              lambda: pruners.ste_magnitude(0.5),
              lambda: pruners.rigl(0.5, update_every=1, end_step=2),
              lambda: pruners.set(0.5, update_every=1, end_step=2),
              lambda: pruners.acdc(0.5, 1, 4, 1, 1),
              lambda: pruners.global_saliency(0.5),
              lambda: pruners.static_random(0.5),
              lambda: pruners.soft_movement(0.9, end_step=2)]
    # reset_optimizer_state on DTensor momentum: the whole tensor's count on every rank
    weight = torch.nn.Parameter(distribute_tensor(full["a"].clone(), mesh, [Shard(0)]))
    opt = torch.optim.SGD([weight], lr=0.1, momentum=0.9)
    weight.grad = distribute_tensor(torch.ones(full["a"].shape), mesh, [Shard(0)])
    opt.step()
    revive = full["a"] > 0
    count = pruners.reset_optimizer_state(
        opt, {"a": weight}, {"a": distribute_tensor(revive, mesh, [Shard(0)])})
    assert count == int(revive.sum())
    momentum = _whole(opt.state[weight]["momentum_buffer"])
    assert torch.equal(momentum == 0, revive)

    for make in makers if world == 2 else makers[:2] + makers[8:9]:  # 4 ranks: fewer
        _pruner_run(make, full, grads, mesh, 2)


def _dropin(rank: int, world: int) -> None:
    """DataNormSparsifier on DTensor data: add_data, step, get_mask, state_dict, squash_mask."""
    from fsparse.data_sparsifier import DataNormSparsifier

    mesh = init_device_mesh("cpu", (world,))
    gen = torch.Generator().manual_seed(4)
    full = {"emb": (torch.randint(0, 3, (3 * world + 2, 8), generator=gen) / 2).float(),
            "w": torch.randn(world + 1, 6, generator=gen)}
    for placement in (Shard(0), Replicate()):
        sharded, plain = (DataNormSparsifier(sparsity_level=0.5, sparse_block_shape=(2, 2),
                                             zeros_per_block=3) for _ in range(2))
        for name, tensor in full.items():
            sharded.add_data(name, distribute_tensor(tensor, mesh, [placement]))
            plain.add_data(name, tensor.clone())
        sharded.step()
        plain.step()
        for name in full:
            assert _placements(sharded.get_mask(name)) == (placement,)
            assert torch.equal(_whole(sharded.get_mask(name)), plain.get_mask(name)), name
        loaded = DataNormSparsifier()
        loaded.load_state_dict(sharded.state_dict())
        for name in full:
            assert torch.equal(_whole(loaded.get_mask(name)), plain.get_mask(name)), name
        sharded.squash_mask()
        plain.squash_mask()
        for name in full:
            got = sharded.get_data(name, return_original=False)
            assert torch.equal(_whole(got), plain.get_data(name, return_original=False))
    # wrong use: a Shard(1) tensor raises a clear error at step and changes no mask
    wrong = DataNormSparsifier(sparsity_level=0.5)
    wrong.add_data("ok", distribute_tensor(full["emb"], mesh, [Shard(0)]))
    wrong.add_data("bad", distribute_tensor(full["emb"], mesh, [Shard(1)]))
    with pytest.raises(ValueError, match="unsupported DTensor placement"):
        wrong.step()
    assert bool(_whole(wrong.get_mask("ok")).all()) and bool(_whole(wrong.get_mask("bad")).all())


def _wrong_pruners(rank: int, world: int) -> None:
    """A pruner on Shard(1) params or on a group that isn't the mesh's: clear errors."""
    mesh = init_device_mesh("cpu", (world,))
    full = torch.randn(2 * world, 4, generator=torch.Generator().manual_seed(1))
    pruner = pruners.global_magnitude(0.5)
    params = {"w": distribute_tensor(full, mesh, [Shard(1)])}
    state = pruner.init(params)
    with pytest.raises(ValueError, match="unsupported DTensor placement"):
        pruner.update(state, params)
    assert bool(_whole(state.masks["w"]).all()) and state.step == 0
    sub = dist.new_group(list(range(world - 1)))
    shard = distribute_tensor(full, mesh, [Shard(0)])
    if rank < world - 1:
        with pytest.raises(ValueError, match="does not match"):
            fsparse.distributed.select_mask(shard, 0.5, group=sub)


def entry_point_cases(rank: int, world: int, cases: int) -> None:
    """Every case of this file, run by ``test_distributed_masks``'s launch (one process
    start-up per world size for both files: most of a launch's time on a small box)."""
    _engine(rank, world, cases)
    _norm_and_state(rank, world)
    _pruners(rank, world)
    _dropin(rank, world)
    _wrong_pruners(rank, world)


def test_import_fsparse_stays_light() -> None:
    """DTensor dispatch costs ``import fsparse`` nothing: no torch.distributed.tensor."""
    code = ("import sys, fsparse, torch; fsparse.select_mask(torch.ones(4), 0.5); "
            "print('torch.distributed.tensor' in sys.modules, "
            "'fsparse.distributed' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
