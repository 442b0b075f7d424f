"""Distributed selection vs all_gather of the scores, on gloo ranks (not part of make test).

A ``ROWS x 64`` fp32 table is split by rows across 2 and 4 spawned gloo ranks
(loopback); each rank builds only its own shard. Per step and per rank:

* ``distributed``: :func:`fsparse.distributed.norm_mask` (radix select over
  all-reduced counts; nothing gathered);
* ``all_gather``: the block means (the scores) all-gathered, the engine's exact
  selection on the whole vector, this rank's slice of the mask expanded.

Bytes communicated are counted here by wrapping ``dist.all_reduce`` and
``dist.all_gather``: an all-reduce counts its payload once, an all-gather the
``world`` payloads every rank receives. Peak extra memory is the peak RSS
during the step (sampled every millisecond from ``/proc/self/statm``) minus
the RSS before it, the returned mask (``shard/4`` bytes) included (glibc told to
mmap big allocations, so freed memory leaves the RSS). Both masks are compared.

    python benchmarks/distributed_select.py                 # 4,000,000 rows, 2 and 4 ranks
    python benchmarks/distributed_select.py --rows 200000 --worlds 2
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WIDTH, BLOCK, LEVEL = 64, (1, 4), 0.6
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class _Peak:
    def __init__(self) -> None:
        self.base, self.peak, self._run = _rss(), 0, True
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while self._run:
            self.peak = max(self.peak, _rss())
            time.sleep(0.001)

    def __enter__(self) -> _Peak:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._run = False
        self._thread.join()
        self.peak = max(self.peak, _rss())


class _Counter:
    """Wraps the two collectives fsparse.distributed uses and counts their bytes."""

    def __init__(self) -> None:
        self.bytes, self.calls = 0, 0
        self._reduce, self._gather = dist.all_reduce, dist.all_gather

    def __enter__(self) -> _Counter:
        def all_reduce(tensor: torch.Tensor, *a: Any, **k: Any) -> Any:
            self.bytes += tensor.numel() * tensor.element_size()
            self.calls += 1
            return self._reduce(tensor, *a, **k)

        def all_gather(out: list[torch.Tensor], tensor: torch.Tensor, *a: Any, **k: Any) -> Any:
            self.bytes += len(out) * tensor.numel() * tensor.element_size()
            self.calls += 1
            return self._gather(out, tensor, *a, **k)

        dist.all_reduce, dist.all_gather = all_reduce, all_gather  # type: ignore[assignment]
        return self

    def __exit__(self, *_: object) -> None:
        dist.all_reduce, dist.all_gather = self._reduce, self._gather  # type: ignore[assignment]


def _gathered_mask(local: torch.Tensor, offset: int, total_rows: int) -> torch.Tensor:
    from fsparse._src.engine.scoring import pool_means
    from fsparse._src.engine.selection import pruned_count
    from fsparse._src.engine.threshold import kth_threshold, lowest_masks

    world = dist.get_world_size()
    means = pool_means(local.abs(), BLOCK).reshape(-1)
    sizes = torch.tensor([means.numel()])
    all_sizes = [torch.empty_like(sizes) for _ in range(world)]
    dist.all_gather(all_sizes, sizes)
    longest = int(max(all_sizes))
    padded = torch.zeros(longest)
    padded[: means.numel()] = means
    del means
    parts = [torch.empty(longest) for _ in range(world)]
    dist.all_gather(parts, padded)
    del padded
    pieces = [p[: int(n)] for p, n in zip(parts, all_sizes)]
    k = pruned_count(LEVEL, sum(int(n) for n in all_sizes))
    masks = lowest_masks(pieces, *kth_threshold(pieces, k))
    mine = masks[dist.get_rank()].view(local.shape[0], -1)
    del parts, pieces, masks
    return ~mine[..., None].expand(*mine.shape, BLOCK[1]).reshape(local.shape)


def _step(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    dist.barrier()
    with _Counter() as counter, _Peak() as peak:
        start = time.perf_counter()
        mask = fn()
        seconds = time.perf_counter() - start
    return mask, {"s": seconds, "bytes": counter.bytes, "calls": counter.calls,
                  "extra": peak.peak - peak.base}


def _worker(rank: int, world: int, port: int, rows: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=600))
    from fsparse.distributed import norm_mask

    sizes = [len(c) for c in torch.arange(rows).chunk(world)]
    offset = sum(sizes[:rank])
    local = torch.randn(sizes[rank], WIDTH, generator=torch.Generator().manual_seed(rank))
    shard = local.numel() * local.element_size()
    warm = local[: 1 << 12].clone()  # first-call costs (thread pools, lazy imports) off the clock
    norm_mask(warm, LEVEL, BLOCK, row_offset=rank * warm.shape[0])
    _gathered_mask(warm, rank * warm.shape[0], world * warm.shape[0])
    del warm
    mask_d, dist_stats = _step(lambda: norm_mask(local, LEVEL, BLOCK, row_offset=offset))
    del mask_d
    mask_g, gather_stats = _step(lambda: _gathered_mask(local, offset, rows))
    mask_d = norm_mask(local, LEVEL, BLOCK, row_offset=offset)
    same = bool(torch.equal(mask_d, mask_g))
    result = {"rank": rank, "shard": shard, "same": same, "distributed": dist_stats,
              "all_gather": gather_stats}
    Path(out, f"{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(world: int, rows: int) -> list[dict[str, Any]]:
    # big allocations mmapped (returned to the OS when freed), so RSS follows live memory
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(1 << 16))
    with tempfile.TemporaryDirectory() as out:
        mp.start_processes(_worker, args=(world, _free_port(), rows, out), nprocs=world,
                           start_method="spawn")
        return [json.loads(Path(out, f"{r}.json").read_text()) for r in range(world)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--worlds", default="2,4")
    args = parser.parse_args()
    mib = 1 << 20
    print(f"table {args.rows:,} x {WIDTH} fp32, block {BLOCK}, level {LEVEL}; per rank, worst rank")
    print("| ranks | method | time s | bytes communicated | comm ratio | peak extra MiB | "
          "extra / shard | masks equal |")
    print("|---|---|---|---|---|---|---|---|")
    for world in (int(w) for w in args.worlds.split(",")):
        results = run(world, args.rows)
        shard = max(r["shard"] for r in results)
        gather_bytes = max(r["all_gather"]["bytes"] for r in results)
        for method in ("distributed", "all_gather"):
            s = max(r[method]["s"] for r in results)
            b = max(r[method]["bytes"] for r in results)
            extra = max(r[method]["extra"] for r in results)
            same = all(r["same"] for r in results)
            print(f"| {world} | {method} | {s:.2f} | {b:,} | {b / gather_bytes:.2e} | "
                  f"{extra / mib:.0f} | {extra / shard:.2f} | {same} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
