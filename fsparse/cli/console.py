"""Terminal output helpers for the command line, built on rich."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Column

__all__ = ["human_bytes", "progress_bar", "stderr_console", "stdout_console"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_bytes(n: int | float) -> str:
    """``1536`` -> ``'1.5 KiB'``.

    >>> human_bytes(512), human_bytes(3 * 2**20)
    ('512 B', '3.0 MiB')
    """
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _width(stream: object) -> int | None:
    """Let rich size a terminal; use a roomy fixed width for pipes and files."""
    isatty = getattr(stream, "isatty", None)
    return None if callable(isatty) and isatty() else 120


def stdout_console() -> Console:
    """A console on the current ``sys.stdout``."""
    return Console(file=sys.stdout, width=_width(sys.stdout))


def stderr_console() -> Console:
    """A console on the current ``sys.stderr``."""
    return Console(file=sys.stderr, width=_width(sys.stderr))


def progress_bar(disable: bool = False, *, in_bytes: bool = False) -> Progress:
    """A transient progress bar on stderr: description, bar, done/total, elapsed.

    ``in_bytes`` counts bytes (done/total and speed), like the load and write bars
    of :mod:`fsparse.cli.byte_progress`, so one run's phases read alike. The
    description keeps a fixed width (long names are cut) so the bar stays put.
    It is shown only when stderr is a terminal, so pipes and logs stay clean.
    """
    console = stderr_console()
    counts: tuple[ProgressColumn, ...] = (
        (DownloadColumn(binary_units=True), TransferSpeedColumn())
        if in_bytes
        else (MofNCompleteColumn(),)
    )
    return Progress(
        TextColumn(
            "{task.description}",
            table_column=Column(width=40, no_wrap=True, overflow="ellipsis"),
        ),
        BarColumn(),
        *counts,
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=disable or not console.is_terminal,
    )
