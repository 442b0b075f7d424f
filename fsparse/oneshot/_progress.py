"""A progress bar over layers: rich's when installed, plain lines otherwise, or nothing."""

from __future__ import annotations

import importlib.util
import sys
from types import TracebackType
from typing import Any

__all__ = ["LayerProgress"]


class LayerProgress:
    """``with LayerProgress(total, quiet) as bar: bar.advance(name)``."""

    def __init__(self, total: int, *, quiet: bool, title: str) -> None:
        self.total, self.quiet, self.title, self.done = total, quiet, title, 0
        self._rich: Any = None
        self._task: Any = None

    def __enter__(self) -> LayerProgress:
        if not self.quiet and importlib.util.find_spec("rich") is not None:
            from rich.progress import Progress

            self._rich = Progress(transient=True)
            self._rich.start()
            self._task = self._rich.add_task(self.title, total=self.total)
        return self

    def start(self, name: str) -> None:
        """Announce the layer now being calibrated and pruned."""
        if self.quiet:
            return
        if self._rich is not None:
            self._rich.update(self._task, description=f"{self.title}: {name}")
        else:
            print(f"{self.title} [{self.done + 1}/{self.total}] {name}", file=sys.stderr,
                  flush=True)

    def advance(self) -> None:
        """One more layer done."""
        self.done += 1
        if self._rich is not None:
            self._rich.advance(self._task)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._rich is not None:
            self._rich.stop()
