"""What a file is: the format its name promises, what its bytes look like, and the error.

:class:`CheckpointError` is the one-line error for a checkpoint (or masks file)
that cannot be read; :func:`describe_file` says what the file looks like instead
(text, JSON, zip, pickle, empty, a damaged safetensors header...). Only the
first bytes are read; nothing is parsed or run. :func:`check_output_format`
refuses an output name whose suffix contradicts the format it is written in.
"""

from __future__ import annotations

import json
import os
import re
import struct
import zipfile
from pathlib import Path

__all__ = [
    "SUFFIX_FORMATS",
    "CheckpointError",
    "check_output_format",
    "describe_file",
    "module_hint",
]

SUFFIX_FORMATS: dict[str, str] = {
    ".safetensors": "safetensors",
    ".pt": "pt",
    ".pth": "pt",
    ".bin": "pt",
    ".ckpt": "pt",
}
_HEAD = 4096
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "a gzip file"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (Keras/h5py)"),
    (b"\x93NUMPY", "a NumPy .npy file"),
    (b"GGUF", "a GGUF file (llama.cpp)"),
    (b"\x89PNG", "a PNG image"),
    (b"%PDF", "a PDF document"),
    (b"BZh", "a bzip2 file"),
    (b"\xfd7zXZ", "an xz file"),
    (b"\x28\xb5\x2f\xfd", "a zstd file"),
)
_MODULE_GLOBAL = re.compile(r"GLOBAL ([A-Za-z_][\w.]*)")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, found or written; the message is one line."""


def _zip_kind(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return "a damaged or truncated zip archive"
    if any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
        return "a torch zip checkpoint that is damaged or truncated"
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"a zip archive of {len(names)} files ({shown or 'empty'}), not a torch checkpoint"


def _safetensors_kind(head: bytes, size: int) -> str | None:
    if len(head) < 9:
        return None
    (length,) = struct.unpack("<Q", head[:8])
    if head[8:9] != b"{":
        return None
    if 8 + length > size:
        return f"a truncated safetensors file (its header claims {length} bytes)"
    return "a safetensors file with a damaged header or data"


def check_output_format(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], fmt: str | None
) -> None:
    """Refuse a ``--format`` that contradicts ``dst``'s suffix (a ``ValueError``): other tools
    read a file by its name, and would fail on it.

    >>> check_output_format("in.pt", "out.safetensors", "pt")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    ValueError: --format pt contradicts OUT out.safetensors: a .safetensors name means ...
    """
    if fmt is None or Path(src).is_dir():
        return
    dst = Path(dst)
    implied = SUFFIX_FORMATS.get(dst.suffix.lower())
    if implied is not None and implied != fmt:
        raise ValueError(
            f"--format {fmt} contradicts OUT {dst}: a {dst.suffix} name means the {implied} "
            "format; rename OUT or change --format"
        )


def describe_file(path: Path) -> str:
    """A short phrase such as ``'an empty file'`` or ``'a text file ("hello ...")'``."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(_HEAD)
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _zip_kind(path)
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    safetensors = _safetensors_kind(head, size)
    if safetensors is not None:
        return safetensors
    if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:
        return f"a pickle (protocol {head[1]}) that torch cannot read as a checkpoint"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and all(ch.isprintable() or ch in "\t\r\n" for ch in text[:512]):
        stripped = text.lstrip()
        if stripped[:1] in "{[":
            try:
                json.loads(stripped)
                return "a JSON file"
            except ValueError:
                pass
        first = stripped.splitlines()[0][:40] if stripped else ""
        return f"a text file ({first!r})"
    return f"binary data starting {head[:8].hex(' ')}"


def module_hint(message: str) -> str | None:
    """For a ``weights_only`` refusal naming a class: a hint to save ``state_dict()``.

    >>> module_hint("Unsupported global: GLOBAL torch.nn.modules.linear.Linear was not")
    'it holds a whole pickled model (torch.nn.modules.linear.Linear)'
    """
    match = _MODULE_GLOBAL.search(message)
    if match is None:
        return None
    name = match[1]
    if name.startswith("torch.nn.modules.") or _is_module_class(name):
        return f"it holds a whole pickled model ({name})"
    return None


def _is_module_class(qualname: str) -> bool:
    """Whether ``qualname`` names an ``nn.Module`` subclass in an already-imported module
    (nothing is imported: a checkpoint's names must not trigger imports)."""
    import sys

    module_name, _, attr = qualname.rpartition(".")
    module = sys.modules.get(module_name)
    cls = getattr(module, attr, None) if module is not None else None
    if not isinstance(cls, type):
        return False
    import torch

    return issubclass(cls, torch.nn.Module)
