"""SIGTERM and SIGHUP end a command the way Ctrl-C (SIGINT) does: cleanly.

``kill``, ``timeout``, ``docker stop`` and Slurm send SIGTERM; a closed terminal
sends SIGHUP. While :func:`handled_signals` is active each raises
:class:`Interrupted`, a ``BaseException`` like ``KeyboardInterrupt``, so every
``finally`` and cleanup runs (no temporary file is left) before the command exits
with status ``128 + signal number``, as a shell reports a process killed by it.
SIGINT still raises ``KeyboardInterrupt``. Inside :func:`deferred` all three wait
until the block ends.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

__all__ = ["HANDLED", "Interrupted", "deferred", "exit_status", "handled_signals"]

HANDLED: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class Interrupted(BaseException):
    """Raised in the main thread when a handled signal arrives."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"


def exit_status(signum: int) -> int:
    """The shell's exit status for a process ended by ``signum``.

    >>> exit_status(signal.SIGINT), exit_status(signal.SIGTERM)
    (130, 143)
    """
    return 128 + int(signum)


_state: dict[str, Any] = {"deferring": 0, "pending": None}


def _raise(signum: int, frame: FrameType | None) -> None:
    if _state["deferring"]:
        _state["pending"] = _state["pending"] or signum
        return
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Interrupted(signum)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold handled signals (SIGINT too) until the block ends, then act on the first one:
    for steps that must not stop halfway, such as renaming several outputs into place."""
    _state["deferring"] += 1
    try:
        yield
    finally:
        _state["deferring"] -= 1
        pending = _state["pending"]
        if not _state["deferring"] and pending is not None:
            _state["pending"] = None
            _raise(pending, None)


@contextlib.contextmanager
def handled_signals() -> Iterator[None]:
    """Turn :data:`HANDLED` signals into :class:`Interrupted` for the block (main thread only);
    the previous handlers are restored after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[signal.Signals, Any] = {}
    try:
        for sig in (*HANDLED, signal.SIGINT):
            previous[sig] = signal.signal(sig, _raise)
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
