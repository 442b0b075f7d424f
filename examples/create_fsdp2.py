"""fsparse.create under FSDP2: the same three lines on a model wrapped with fully_shard.

Spawns 2 CPU ranks (gloo over 127.0.0.1). Each shards the model (its weights become
Shard(0) DTensors), runs the recipe through fsparse.create, and saves its own
checkpoint shard; rank 0 prints the whole weights' sparsity, which every rank agrees on.

Run: python examples/create_fsdp2.py   (FSPARSE_EXAMPLE_SMALL=1 for a 2-epoch run)
"""

import os
import socket
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

import fsparse.create

SMALL = os.environ.get("FSPARSE_EXAMPLE_SMALL") == "1"
WORLD, STEPS_PER_EPOCH = 2, 4


def train(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)
    torch.manual_seed(0)  # the same initial weights on every rank
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    mesh = init_device_mesh("cpu", (WORLD,))
    for layer in model.children():
        if any(True for _ in layer.parameters()):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)  # every weight is now a Shard(0) DTensor
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    manager, optimizer = fsparse.create.initialize(
        model, optimizer, STEPS_PER_EPOCH, quantization=False,  # no QAT under FSDP2
        recipe_variables={"num_epochs": 2.0 if SMALL else 10.0, "init_lr": 0.05},
    )
    gen = torch.Generator().manual_seed(1 + rank)  # each rank its own batches
    for _ in range(int(manager.max_epochs) * STEPS_PER_EPOCH):
        x, y = torch.randn(8, 3, 8, 8, generator=gen), torch.randint(0, 10, (8,), generator=gen)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()  # masks updated over the shards, then written into them
    manager.finalize()
    levels = manager.sparsity()  # a collective: every rank calls it
    torch.save(manager.state_dict(), os.path.join(out, f"create.rank{rank}.pt"))
    if rank == 0:
        for name, level in levels.items():
            mask = manager.masks[name]
            assert isinstance(mask, DTensor)  # placed Shard(0), like the weight
            print(f"{name:<4} sparsity {level:.3f}  (rank 0 holds "
                  f"{mask.to_local().shape[0]} of its {mask.shape[0]} rows)")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(train, args=(port, out), nprocs=WORLD)
        print(f"checkpoint shards: {sorted(os.listdir(out))}")
