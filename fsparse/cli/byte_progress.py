"""Progress in bytes for loading and writing multi-GB checkpoints.

The bar is drawn on stderr only when it is a terminal (pipes and logs stay
clean) and never under ``--quiet``; it is transient, so nothing is left behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["CountingFile", "byte_progress"]


@contextlib.contextmanager
def byte_progress(description: str, total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A transient bytes bar on stderr (a terminal only); yields ``advance(n_bytes)``."""
    if not enabled:
        yield lambda n: None
        return
    from fsparse.cli.console import progress_bar  # the sparsify phase's bar: same columns

    with progress_bar(in_bytes=True) as bar:
        task = bar.add_task(description, total=max(total, 1))
        yield lambda n: bar.advance(task, n)


class CountingFile:
    """A binary file that reports the bytes written through it (for the progress bar)."""

    def __init__(self, f: Any, advance: Callable[[int], None]) -> None:
        self._f = f
        self._advance = advance

    def write(self, data: Any) -> int:
        n = self._f.write(data)
        self._advance(memoryview(data).nbytes)
        return int(n) if n is not None else 0

    def flush(self) -> None:
        self._f.flush()
