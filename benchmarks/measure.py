"""Timing, peak-memory and data helpers shared by the benchmark workers.

Peak extra memory is read from the kernel: ``/proc/self/clear_refs`` resets the
process's peak resident set (``VmHWM``), the measured call runs, and the peak
minus the resident set just before the call is the memory the call needed.
Memory is measured in a fresh process started with ``MALLOC_MMAP_THRESHOLD_``
(see :data:`MEMORY_ENV`), so large blocks are mapped and unmapped one by one
and memory freed earlier cannot hide a call's needs. torch's CPU allocator
does not cache, so this sees every tensor allocation (tracemalloc would see
none of them). Times are taken in another process, with the allocator's
default behaviour.
"""

from __future__ import annotations

import gc
import os
import platform
import re
import resource
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

import torch

MIB = 1 << 20
MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        match = re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field}")
    return int(match.group(1))


def can_reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def peak_extra(fn: Callable[[], Any]) -> tuple[Any, float, int]:
    """Run ``fn`` once: its result, wall seconds, and peak extra resident bytes."""
    gc.collect()
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    return result, seconds, max(peak - before, 0) * 1024


def median_time(fn: Callable[[], Any], repeats: int, *, warm_up: bool = False) -> float:
    """Median wall time of ``repeats`` calls, in seconds (after one untimed call if ``warm_up``)."""
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def best_time(fn: Callable[[], Any], repeats: int) -> float:
    """Best wall time of ``repeats`` calls, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def limit_address_space(headroom: int = 1 << 30) -> int:
    """Cap this process's address space so a runaway allocation fails instead of
    calling the OOM killer; returns the cap in bytes."""
    available = _meminfo_kib("MemAvailable") * 1024
    cap = _status_kib("VmSize") * 1024 + max(available - headroom, 0)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    return cap


def _meminfo_kib(field: str) -> int:
    with open("/proc/meminfo") as info:
        match = re.search(rf"^{field}:\s+(\d+) kB", info.read(), re.MULTILINE)
    return int(match.group(1)) if match else 0


def available_bytes() -> int:
    return _meminfo_kib("MemAvailable") * 1024


def machine() -> dict[str, str]:
    """A short description of the machine and software."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            names = re.findall(r"^model name\s*:\s*(.+)$", info.read(), re.MULTILINE)
        cpu = names[0] if names else cpu
    except OSError:
        pass
    try:
        flags = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        caches = ", ".join(
            re.sub(r"\s+", " ", line.strip()) for line in flags.splitlines() if "cache" in line
        )
    except OSError:
        caches = ""
    return {
        "cpu": f"{cpu} ({os.cpu_count()} logical CPUs, torch threads: {torch.get_num_threads()})",
        "caches": caches or "n/a",
        "memory": f"{_meminfo_kib('MemTotal') / MIB:.1f} GiB RAM",
        "software": (
            f"Python {platform.python_version()}, torch {torch.__version__}, "
            f"{platform.system()} {platform.release()}"
        ),
        "load": "load average {:.2f} {:.2f} {:.2f} (1/5/15 min) at start".format(*os.getloadavg()),
    }


def tie_free(rows: int, cols: int, block: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """fp32 data whose block means (L1) are all distinct, as are the scores in a block.

    Each block gets its own base bit pattern (a random permutation, spaced far
    enough apart that rounding in the block sums cannot make two means meet)
    and its elements distinct small offsets from it, with random signs.
    """
    bh, bw = block
    size = bh * bw
    if rows % bh or cols % bw:
        raise ValueError("tie_free needs the block shape to divide the data shape")
    nbh, nbw = rows // bh, cols // bw
    gen = torch.Generator().manual_seed(seed)
    spacing = 1 if size == 1 else 8 * size + 16
    base = 0x2A000000 + spacing * torch.randperm(nbh * nbw, generator=gen)
    if int(base.max()) + 2 * size >= 0x7F000000:
        raise ValueError("too many blocks for distinct fp32 means")
    shift = torch.randint(0, size, (nbh * nbw, 1), generator=gen)
    bits = (base[:, None] + 2 * ((torch.arange(size) + shift) % size)).to(torch.int32)
    del base, shift
    data = bits.view(torch.float32).view(nbh, nbw, bh, bw).permute(0, 2, 1, 3).reshape(rows, cols)
    del bits
    negative = torch.randint(0, 2, (rows, cols), generator=gen, dtype=torch.uint8).bool()
    return torch.where(negative, -data, data)
