"""Atomic outputs: every file or directory the command line writes appears whole or not at all.

An output is written into one temporary file (or directory) beside it, named
``.NAME.fsparse-HOST-PID-TOKEN.tmp`` (``.tmpdir`` for a directory), and renamed
over ``NAME`` only once everything staged together has been written and synced.
On any error or interrupt the temporaries are removed and every ``NAME`` is left
as it was. A run killed with SIGKILL cannot clean up; the next run that writes
into the same directory removes the temporaries whose process (on this host) is
gone. A new output gets the mode ``open()`` would give it under the umask; a
replaced one keeps the mode of the file it replaces. Write errors name the
output, never the temporary, and a full disk says so with the size needed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

from fsparse.cli.signals import deferred

__all__ = [
    "OutputError",
    "Transaction",
    "atomic_outputs",
    "atomic_write",
    "new_file_mode",
    "remove_stale",
    "write_error",
]

_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_TEMP = re.compile(
    r"^\.(?P<name>.+)\.fsparse-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{8}\.(?P<kind>tmp|tmpdir)$"
)
_NAME_MAX = 120  # room for the tag within a 255-byte file name


class OutputError(ValueError):
    """An output that could not be written; the one-line message names the output."""


def _umask() -> int:
    """The process umask: read from ``/proc`` where it can be (setting it to read it back,
    the fallback, briefly changes it for every thread)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode(directory: bool = False) -> int:
    """The mode ``open()`` (or ``mkdir``) gives a new file under the current umask."""
    return (0o777 if directory else 0o666) & ~_umask()


def _temp_path(dst: Path, kind: str) -> Path:
    token = secrets.token_hex(4)
    return dst.parent / f".{dst.name[:_NAME_MAX]}.fsparse-{_HOST}-{os.getpid()}-{token}.{kind}"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: it exists, owned by someone else
        return True
    return True


def remove_stale(directory: Path) -> list[Path]:
    """Remove the temporaries of this naming in ``directory`` left by dead processes of
    this host; return what was removed. Others' files are never touched."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP.match(entry.name)
        if match is None or match["host"] != _HOST or _alive(int(match["pid"])):
            continue
        path = Path(entry.path)
        with contextlib.suppress(OSError):
            if match["kind"] == "tmpdir" and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            elif entry.is_file(follow_symlinks=False):
                path.unlink()
            else:
                continue
            removed.append(path)
    return removed


def _find_os_error(err: BaseException | None) -> OSError | None:
    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, OSError) and err.errno is not None:
            return err
        err = err.__cause__ or err.__context__
        seen += 1
    return None


def _find_interrupt(err: BaseException | None) -> BaseException | None:
    seen = 0
    while err is not None and seen < 8:
        if not isinstance(err, Exception):  # KeyboardInterrupt, signals.Interrupted
            return err
        err = err.__cause__ or err.__context__
        seen += 1
    return None


def _free_bytes(directory: Path) -> int | None:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def _size(n: int) -> str:
    from fsparse.cli.console import human_bytes

    return human_bytes(n)


def write_error(err: BaseException, dst: Path, needed: int = 0) -> OutputError:
    """A one-line :class:`OutputError` naming ``dst`` for a failed write."""
    os_err = _find_os_error(err)
    text = str(err)
    if (os_err is not None and os_err.errno in (errno.ENOSPC, errno.EDQUOT)) or (
        "os error 28" in text or "No space left" in text
    ):
        free = _free_bytes(dst.parent)
        have = f", {_size(free)} free" if free is not None else ""
        need = f" (it needs about {_size(needed)}{have})" if needed else ""
        return OutputError(f"{dst}: No space left on device{need}")
    if os_err is not None:
        return OutputError(f"{dst}: cannot write it: {os_err.strerror or os_err}")
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(err).__name__)
    return OutputError(f"{dst}: cannot write it: {first}")


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` in one step (Linux ``renameat2(RENAME_EXCHANGE)``), if possible."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


class Transaction:
    """Outputs staged together: each ``file``/``directory`` gives a temporary to fill; all are
    renamed into place by :func:`atomic_outputs` once the block ends without an error."""

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path, int]] = []  # (temporary, output, mode)
        self.needed = 0

    def _mode(self, dst: Path, directory: bool) -> int:
        try:
            st = dst.stat()
        except OSError:
            return new_file_mode(directory)
        return stat.S_IMODE(st.st_mode)

    def file(self, dst: Path, size_hint: int = 0) -> Path:
        """Create and return the temporary for output file ``dst`` (refusing a directory)."""
        dst = Path(dst)
        if dst.is_dir():
            raise OutputError(f"{dst}: is a directory, expected a file name")
        self._check_space(dst, size_hint)
        remove_stale(dst.parent)
        tmp = _temp_path(dst, "tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        except OSError as err:
            raise write_error(err, dst, size_hint) from None
        self._staged.append((tmp, dst, self._mode(dst, False)))
        return tmp

    def directory(self, dst: Path, size_hint: int = 0) -> Path:
        """Create and return the temporary directory for output directory ``dst``."""
        dst = Path(dst)
        if dst.exists() and not dst.is_dir():
            raise OutputError(f"{dst}: exists and is not a directory")
        self._check_space(dst, size_hint)
        remove_stale(dst.parent)
        tmp = _temp_path(dst, "tmpdir")
        try:
            tmp.mkdir(mode=0o700)
        except OSError as err:
            raise write_error(err, dst, size_hint) from None
        self._staged.append((tmp, dst, self._mode(dst, True)))
        return tmp

    def _check_space(self, dst: Path, size_hint: int) -> None:
        self.needed += size_hint
        free = _free_bytes(dst.parent)
        if free is not None and size_hint > free:
            raise write_error(OSError(errno.ENOSPC, "No space left on device"), dst, size_hint)

    def _commit(self) -> None:
        for tmp, dst, mode in self._staged:
            try:
                if tmp.is_dir():
                    self._sync_tree(tmp)
                else:
                    with open(tmp, "rb+") as f:
                        os.fsync(f.fileno())
                os.chmod(tmp, mode)
            except OSError as err:
                raise write_error(err, dst, self.needed) from None
        with deferred():  # a signal waits: the renames all happen, or an error stops them
            for tmp, dst, _ in self._staged:
                try:
                    if tmp.is_dir() and dst.is_dir():
                        self._replace_dir(tmp, dst)
                    else:
                        os.replace(tmp, dst)
                except OSError as err:
                    raise write_error(err, dst, self.needed) from None
                _fsync_dir(dst.parent)

    @staticmethod
    def _sync_tree(root: Path) -> None:
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink():
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
        _fsync_dir(root)

    @staticmethod
    def _replace_dir(tmp: Path, dst: Path) -> None:
        # One atomic swap where the kernel offers it; else two renames (a short window
        # in which dst is missing; the old copy is kept aside until the new one is in).
        if _exchange(tmp, dst):
            shutil.rmtree(tmp, ignore_errors=True)
            return
        aside = _temp_path(dst, "tmpdir")
        os.rename(dst, aside)
        try:
            os.rename(tmp, dst)
        except OSError:
            os.rename(aside, dst)
            raise
        shutil.rmtree(aside, ignore_errors=True)

    def _discard(self) -> None:
        for tmp, _, _ in self._staged:
            with contextlib.suppress(OSError):
                if tmp.is_dir() and not tmp.is_symlink():
                    shutil.rmtree(tmp)
                else:
                    tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_outputs() -> Iterator[Transaction]:
    """Stage outputs in a :class:`Transaction`; commit them all if the block succeeds.

    An ``OSError`` (or an error caused by one) inside the block becomes an
    :class:`OutputError` naming the first staged output. An interrupt propagates,
    also one that a writer (``torch.save``) wrapped in an error of its own.
    """
    tx = Transaction()
    try:
        yield tx
        tx._commit()
    except BaseException as err:
        tx._discard()
        interrupt = _find_interrupt(err)
        if interrupt is not None and interrupt is not err:
            raise interrupt from None
        if isinstance(err, Exception) and not isinstance(err, OutputError) and tx._staged:
            os_err = _find_os_error(err)
            if os_err is not None or "os error" in str(err):
                raise write_error(err, tx._staged[0][1], tx.needed) from None
        raise


@contextlib.contextmanager
def atomic_write(path: Path, size_hint: int = 0) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    with atomic_outputs() as tx:
        yield tx.file(Path(path), size_hint)
