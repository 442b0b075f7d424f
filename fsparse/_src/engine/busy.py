"""Whether the machine is busy: more threads runnable than it has cores.

The engine's short kernels (the bracket's sample and selects, and the finish, each a
small share of a pass) run on one thread while it is. Waking a second thread for about
a millisecond's work then waits for that thread's turn on a core, a time slice of a few
milliseconds, and the caller waits with it. On the contended rows of
``benchmarks/contended.py`` (1,000,000 x 64, a 2-thread burner on both cores of a 2-core
machine) the three took 11-20 ms a step on two threads and 4-11 ms on one; quiet, they
take 3.5 ms on two threads and 6 ms on one, so a quiet machine keeps both. The long
passes keep every thread either way (their tasks go to whichever thread is running).

This reads the state of the machine; it sets none (no thread counts, no priorities).
"""

from __future__ import annotations

import math
import os
import time

__all__ = ["BusyProbe", "busy"]


class BusyProbe:
    """``probe()``: whether more threads are runnable than ``cores`` (the machine's logical
    CPUs), as ``path`` counted them at most ``every`` seconds ago. ``path`` is Linux's
    ``/proc/loadavg``, whose fourth field is ``runnable/all`` threads, this process's own
    among them (the caller, and torch's workers while they spin after an op: never more
    than the cores on a quiet machine). ``False`` where it cannot be read or parsed.

    >>> BusyProbe("/no/such/file")()
    False
    """

    def __init__(self, path: str = "/proc/loadavg", every: float = 0.005,
                 cores: int | None = None) -> None:
        self.path, self.every = path, every
        self.cores = cores if cores is not None else os.cpu_count() or 1
        self._at, self._busy = -math.inf, False

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self._at >= self.every:
            self._at, self._busy = now, self._read()
        return self._busy

    def _read(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                text = os.read(fd, 256)
            finally:
                os.close(fd)
            running, slash, total = text.split()[3].partition(b"/")
            runnable, _ = int(running), int(total)  # both numbers, or it is not the field
        except (OSError, IndexError, ValueError):
            return False
        return bool(slash) and runnable > self.cores


busy = BusyProbe()
