"""fsparse.distributed on real gloo ranks: every shard's mask is the slice of the whole one.

Each launch runs many random cases (shapes, uneven splits with empty shards, block
shapes, zeros_per_block, levels, ties at the threshold) so process start-up is paid
once per world size.
"""

from __future__ import annotations

import random

import pytest
import torch
import torch.distributed as dist
from test_distributed_entry_points import entry_point_cases
from test_distributed_launch import launch
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Replicate, Shard, distribute_tensor

import fsparse
from fsparse import distributed as fd


def _split(rng: random.Random, rows: int, world: int) -> list[int]:
    cuts = sorted(rng.randint(0, rows) for _ in range(world - 1))
    bounds = [0, *cuts, rows]
    return [bounds[i + 1] - bounds[i] for i in range(world)]


def _data(rng: random.Random, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    gen = torch.Generator().manual_seed(rng.randint(0, 2**31))
    if rng.random() < 0.5:  # few distinct values: many ties at the threshold
        return (torch.randint(-3, 4, shape, generator=gen) / 2).to(dtype)
    return torch.randn(shape, generator=gen, dtype=dtype)


def _shard(full: torch.Tensor, sizes: list[int], rank: int) -> tuple[torch.Tensor, int]:
    offset = sum(sizes[:rank])
    return full[offset : offset + sizes[rank]].clone(), offset


def _case(rng: random.Random, world: int) -> tuple[torch.Tensor, list[int], dict[str, object]]:
    rows = rng.randint(2, 40)
    trailing = rng.choice([(rng.randint(2, 12),), (rng.randint(2, 4), rng.randint(1, 3))])
    full = _data(rng, (rows, *trailing), rng.choice([torch.float32, torch.float64]))
    bh, bw = rng.randint(1, 6), rng.randint(1, 5)
    zeros = rng.choice([None, rng.randint(0, bh * bw)])
    level = rng.choice([0.0, 1.0, 0.5, rng.random()])
    kwargs = dict(sparsity_level=level, sparse_block_shape=(bh, bw), zeros_per_block=zeros,
                  norm=rng.choice(["L1", "L2"]))
    return full, _split(rng, rows, world), kwargs


def _masks(rank: int, world: int, cases: int) -> None:
    rng = random.Random(1234 + world)
    for i in range(cases):
        full, sizes, kwargs = _case(rng, world)
        local, offset = _shard(full, sizes, rank)
        before = local.clone()
        got = fd.norm_mask(local, **kwargs, row_offset=offset)  # type: ignore[arg-type]
        want = fsparse.norm_mask(full, **kwargs)[offset : offset + sizes[rank]]  # type: ignore[arg-type]
        assert torch.equal(local, before)
        assert got.dtype == torch.bool and got.shape == local.shape
        assert torch.equal(got, want), (i, tuple(full.shape), sizes, kwargs)
    # a large table: the engine's chunked single-process path, ties crowding the threshold
    gen = torch.Generator().manual_seed(7)
    full = torch.randint(0, 50, (3001, 37), generator=gen).float()
    sizes = _split(random.Random(5), 3001, world)
    local, offset = _shard(full, sizes, rank)
    for block, zeros in (((3, 4), None), ((5, 2), 3), ((1, 1), None)):
        got = fd.norm_mask(local, 0.37, block, zeros, row_offset=offset)
        want = fsparse.norm_mask(full, 0.37, block, zeros)[offset : offset + sizes[rank]]
        assert torch.equal(got, want), (block, zeros)


def _global(rank: int, world: int, cases: int) -> None:
    rng = random.Random(99 + world)
    for _ in range(cases):
        fulls, locals_, offsets, configs, sizes_of = {}, {}, {}, {}, {}
        for t in range(rng.randint(1, 3)):
            full, sizes, kwargs = _case(rng, world)
            if rng.random() < 0.3:  # a conv-like weight: global levels use channels-last
                full = _data(rng, (full.shape[0], 3, 2, 2), full.dtype)
            name = f"t{t}"
            fulls[name], sizes_of[name] = full, sizes
            locals_[name], offsets[name] = _shard(full, sizes, rank)
            del kwargs["sparsity_level"]
            configs[name] = fsparse.make_config(**kwargs)  # type: ignore[arg-type]
        level = rng.choice([0.0, 1.0, rng.random()])
        got = fd.global_levels(locals_, configs, level, row_offsets=offsets)
        want = fsparse.global_levels(fulls, configs, level)
        assert got == want, (got, want)
        for name, full in fulls.items():
            config = fsparse.make_config(configs[name], sparsity_level=got[name])
            mask = fd.config_norm_mask(locals_[name], config, row_offset=offsets[name])
            o, n = offsets[name], sizes_of[name][rank]
            assert torch.equal(mask, fsparse.config_norm_mask(full, config)[o : o + n])


def _selects(rank: int, world: int, cases: int) -> None:
    """select_mask / global_select_masks on raw scores (negative and tied included)."""
    rng = random.Random(7 + world)
    for _ in range(cases):
        fulls, locals_, offsets, sizes_of = {}, {}, {}, {}
        pattern = rng.choice(["unstructured", f"{rng.randint(1, 5)}x{rng.randint(1, 4)}",
                              "channel", "2:4", "1:3"])
        for t in range(rng.randint(1, 3)):
            full, sizes, _ = _case(rng, world)
            if ":" in pattern:  # N:M groups run along dim 1 (within a row): make it fit
                m = int(pattern.split(":")[1])
                full = _data(rng, (full.shape[0], m * rng.randint(1, 3), *full.shape[2:]),
                             full.dtype)
            if rng.random() < 0.2:
                full.view(full.shape[0], -1)[0, 0] = -float("inf")
            fulls[f"s{t}"], sizes_of[f"s{t}"] = full, sizes
            locals_[f"s{t}"], offsets[f"s{t}"] = _shard(full, sizes, rank)
        sparsity = rng.choice([0.0, 1.0, rng.random()])
        got = fd.global_select_masks(locals_, sparsity, pattern, row_offsets=offsets)
        want = fsparse.global_select_masks(fulls, sparsity, pattern)
        for name, full in fulls.items():
            o, n = offsets[name], sizes_of[name][rank]
            assert torch.equal(got[name], want[name][o : o + n]), (pattern, sparsity)
            one = fd.select_mask(locals_[name], sparsity, pattern, row_offset=o)
            assert torch.equal(one, fsparse.select_mask(full, sparsity, pattern)[o : o + n])
            k = rng.randint(0, fsparse.parse_pattern(pattern).units(tuple(full.shape)))
            one = fd.select_count_mask(locals_[name], k, pattern, row_offset=o)
            want_k = fsparse.select_count_mask(full, k, pattern)[o : o + n]
            assert torch.equal(one, want_k), (pattern, k)
    with pytest.raises(ValueError, match="groups run across"):  # 1-D N:M groups span rows
        fd.select_mask(torch.ones(4), 0.5, "2:4", row_offset=4 * rank)


def _dtensors(rank: int, world: int) -> None:
    mesh = init_device_mesh("cpu", (world,))
    gen = torch.Generator().manual_seed(3)
    full = (torch.randint(0, 5, (4 * world + 3, 10), generator=gen) / 4).float()  # uneven
    for placement in (Shard(0), Replicate()):
        data = distribute_tensor(full, mesh, [placement])
        mask = fd.norm_mask(data, 0.5, (3, 2), 4)
        assert mask.placements == (placement,) and mask.shape == full.shape
        assert torch.equal(mask.full_tensor(), fsparse.norm_mask(full, 0.5, (3, 2), 4))
    weights = {"a": full, "b": full[:, :4] * 3}
    configs = {n: fsparse.make_config(sparse_block_shape=(2, 2)) for n in weights}
    shards = {n: distribute_tensor(w, mesh, [Shard(0)]) for n, w in weights.items()}
    assert fd.global_levels(shards, configs, 0.6) == fsparse.global_levels(weights, configs, 0.6)
    magnitude = fd.global_select_masks({n: s.abs() for n, s in shards.items()}, 0.6)
    want = fsparse.global_select_masks({n: w.abs() for n, w in weights.items()}, 0.6)
    assert all(torch.equal(magnitude[n].full_tensor(), want[n]) for n in weights)
    # wrong use: a clear error on every rank, and the group still works afterwards
    with pytest.raises(ValueError, match="unsupported DTensor placement"):
        fd.norm_mask(distribute_tensor(full, mesh, [Shard(1)]))
    sub = dist.new_group(list(range(world - 1)))
    if rank < world - 1:
        with pytest.raises(ValueError, match="does not match"):
            fd.norm_mask(distribute_tensor(full, mesh, [Shard(0)]), group=sub)
    else:
        with pytest.raises(TypeError, match="group"):
            fd.norm_mask(distribute_tensor(full, mesh, [Shard(0)]), group=sub)
    with pytest.raises(ValueError, match="row_offset must be None"):
        fd.norm_mask(distribute_tensor(full, mesh, [Shard(0)]), row_offset=0)
    local = full[: 2 * world].clone()
    with pytest.raises(ValueError, match="do not tile"):  # every rank claims row 0
        fd.norm_mask(local, row_offset=0)
    with pytest.raises(ValueError, match="do not tile"):  # a gap after rank 0
        fd.norm_mask(local[:2], row_offset=3 * rank)
    bad = local.clone()
    if rank == world - 1:
        bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fd.norm_mask(bad, row_offset=2 * world * rank)
    with pytest.raises(ValueError, match="matrix view"):
        fd.norm_mask(torch.ones(3), row_offset=3 * rank)
    with pytest.raises(ValueError, match="row_offset is required"):
        fd.norm_mask(local)
    with pytest.raises(ValueError, match="trailing shape"):
        fd.norm_mask(torch.ones(2, 3 + rank), row_offset=2 * rank)
    assert torch.equal(local, full[: 2 * world])
    check = torch.ones(1)
    dist.all_reduce(check)
    assert int(check) == world


def _fsdp(rank: int, world: int) -> None:
    """FSDP2 parameters (Shard(0) DTensors) after a training step: masks of the whole weights."""
    from torch import nn
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(9, 2 * world + 3, bias=False), nn.ReLU(),
                          nn.Linear(2 * world + 3, 6, bias=False))
    fully_shard(model, mesh=init_device_mesh("cpu", (world,)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(4, 9, generator=torch.Generator().manual_seed(1))).square().sum().backward()
    optimizer.step()
    params = dict(model.named_parameters())
    configs = {n: fsparse.make_config(sparse_block_shape=(2, 3)) for n in params}
    whole = {n: p.detach().full_tensor() for n, p in params.items()}  # type: ignore[attr-defined]
    levels = fd.global_levels({n: p.detach() for n, p in params.items()}, configs, 0.5)
    assert levels == fsparse.global_levels(whole, configs, 0.5)
    for name, param in params.items():
        config = fsparse.make_config(configs[name], sparsity_level=levels[name])
        mask = fd.config_norm_mask(param.detach(), config)
        assert mask.placements == param.placements  # type: ignore[attr-defined]
        assert torch.equal(mask.full_tensor(), fsparse.config_norm_mask(whole[name], config))


def _bounded_rounds(rank: int, world: int) -> None:
    """Values sharing their first 8 bits (all in [1, 2)): round 1 finds too many keys to keep,
    round 2 keeps the few matching 16 bits, so rounds 3+ see only those (before: all)."""
    import fsparse.distributed.selection as sel

    seen: dict[int, int] = {}
    real = sel.digit_counts

    def spy(keys: torch.Tensor, level: int, *args: int) -> torch.Tensor:
        seen[level] = seen.get(level, 0) + keys.numel()
        return real(keys, level, *args)

    n = 40_000
    full = 1 + torch.rand(n, generator=torch.Generator().manual_seed(2))
    chunk = full.chunk(world)[rank]
    sel.digit_counts = spy  # type: ignore[assignment]
    try:
        got = fd.distributed_lowest([chunk], n // 3, [list(range(world))], None)[0]
    finally:
        sel.digit_counts = real
    want = ~fsparse.select_count_mask(full, n // 3)
    assert torch.equal(got, want.chunk(world)[rank])
    assert seen[1] == seen[2] == chunk.numel() and seen[3] <= chunk.numel() // 16, seen


def _all(rank: int, world: int, cases: int) -> None:
    entry_point_cases(rank, world, 40 if world == 2 else 10)  # test_distributed_entry_points
    _bounded_rounds(rank, world)
    _masks(rank, world, cases)
    _global(rank, world, cases // 3)
    _selects(rank, world, cases // 3)
    _dtensors(rank, world)
    _fsdp(rank, world)


@pytest.mark.parametrize("world", [2, 4])
def test_shard_masks_equal_the_slices_of_the_single_process_mask(world: int) -> None:
    """Also runs every case of test_distributed_entry_points (the library's entry points)."""
    launch(_all, world, 30 if world == 2 else 12, timeout_s=150.0)
