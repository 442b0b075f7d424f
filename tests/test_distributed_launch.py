"""Launcher for the multi-process tests: gloo over loopback, spawned ranks, bounded time.

``launch(fn, world, *args)`` spawns ``world`` processes that join one gloo group on
127.0.0.1 (a free port), run ``fn(rank, world, *args)`` and leave. A rank that
raises fails the launch with its traceback; ranks still running at the deadline
are killed and the launch fails (a hung collective cannot hang the suite).
"""

from __future__ import annotations

import datetime
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

INIT_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entry(
    rank: int, world: int, port: int, fn: Callable[..., None], args: tuple[Any, ...]
) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo",
                      OMP_NUM_THREADS="1")
    import torch

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=INIT_TIMEOUT_S))
    try:
        fn(rank, world, *args)
        # No rank tears its gloo pairs down while a peer may still be sending on them.
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # Every check has passed: leave without running C++ static destructors, where torch's
    # gloo threads can abort ('terminate called without an active exception', SIGABRT;
    # seen twice on the 2-core box, once despite the barrier above).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def launch(fn: Callable[..., None], world: int, *args: Any, timeout_s: float = 120.0) -> None:
    """Run ``fn(rank, world, *args)`` on ``world`` gloo ranks; fail on error or timeout."""
    context = mp.start_processes(_entry, args=(world, free_port(), fn, args), nprocs=world,
                                 join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            for process in context.processes:
                process.join(5)
            pytest.fail(f"distributed run of {fn.__name__} on {world} ranks timed out "
                        f"after {timeout_s} s")
        if context.join(timeout=min(remaining, 1.0)):
            return


def _hang(rank: int, world: int) -> None:
    if rank == 0:  # rank 0 waits in a collective that rank 1 never joins
        dist.barrier()
    else:
        time.sleep(60)


def test_a_hung_run_fails_instead_of_hanging() -> None:
    start = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match="timed out"):
        launch(_hang, 2, timeout_s=6.0)
    assert time.monotonic() - start < 40

