"""Paths on the command line: no empty names, and an output never overwrites an input.

``sparsify`` (OUT) and ``inspect --plot`` share :func:`check_output`, so both
refuse the same aliasing forms of an input (the same path, a symlink, a hard
link, a ``..`` path) and both need ``--force`` to replace an existing file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

__all__ = ["NonEmptyPath", "check_output", "same_file"]


class NonEmptyPath(click.Path):
    """A ``click.Path`` giving a :class:`~pathlib.Path` that refuses ``""``.

    ``Path("")`` is ``Path(".")``, so an empty argument would otherwise read as
    the current directory (``OUT . exists``).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(path_type=Path, **kwargs)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, (str, bytes)) and not value:
            self.fail("the path is empty; give a file name", param, ctx)
        return super().convert(value, param, ctx)


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether ``a`` and ``b`` name one existing file, by device and inode.

    >>> same_file(".", "./")
    True
    >>> same_file(".", "no-such-file")
    False
    """
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output(path: Path, what: str, inputs: Mapping[str, Path], *, force: bool) -> None:
    """Refuse an output ``path`` that is one of ``inputs`` (label -> path, always refused,
    ``--force`` or not), that exists without ``force``, or whose directory is missing.

    Raises :class:`click.UsageError` (exit status 2) naming ``what``.
    """
    for label, src in inputs.items():
        if same_file(path, src):
            raise click.UsageError(f"{what} must differ from {label} ({label} is never modified)")
    if (path.exists() or path.is_symlink()) and not force:
        raise click.UsageError(f"{what} {path} exists; pass --force to replace it")
    if not path.parent.is_dir():
        raise click.UsageError(f"{what}'s directory {path.parent} does not exist")
