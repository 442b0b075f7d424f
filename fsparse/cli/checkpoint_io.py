"""Reading and atomically writing checkpoints: torch ``.pt``/``.pth`` files and ``.safetensors``.

Torch files are always read with ``torch.load(weights_only=True)``, so loading a
checkpoint can never run code. A checkpoint is a state dict (a dict of tensors)
or a dict holding one under one of :data:`WRAPPER_KEYS`; the wrapper's other
entries are kept when writing a torch file. Sparse-layout tensors are checked
(a file is untrusted) and passed through untouched. A safetensors file's header
metadata is kept, with fsparse's record added beside it.

Outputs are written once, into one temporary file beside them (see
:mod:`fsparse.cli.atomic`), then renamed. Tied weights (names sharing storage)
stay shared in a torch file and are stored once in a safetensors file (see
:mod:`fsparse.cli.tied_weights`).

Bit-packed masks (``fsparse sparsify --packed-masks``) are stored beside their
weights under ``NAME + MASK_SUFFIX`` as :func:`fsparse.pack_mask` bytes;
:func:`split_masks` takes them out again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from fsparse.cli.atomic import OutputError, atomic_outputs, atomic_write
from fsparse.cli.byte_progress import CountingFile, byte_progress
from fsparse.cli.file_kinds import (
    SUFFIX_FORMATS,
    CheckpointError,
    check_output_format,
    describe_file,
    module_hint,
)
from fsparse.cli.masks_file import (
    MASK_SUFFIX,
    masks_file_object,
    masks_from_checkpoint,
    split_masks,
    with_masks,
    with_packed_masks,
)
from fsparse.cli.safetensors_stream import write_safetensors
from fsparse.cli.sparse_layout import check_sparse, selectable
from fsparse.cli.tied_weights import dedupe_for_safetensors

__all__ = [
    "FORMATS",
    "SUFFIX_FORMATS",
    "MASK_SUFFIX",
    "WRAPPER_KEYS",
    "Checkpoint",
    "CheckpointError",
    "OutputError",
    "atomic_write",
    "byte_progress",
    "check_output_format",
    "check_sparse",
    "like_state_dict",
    "load_checkpoint",
    "load_masks_file",
    "masks_file_object",
    "metadata_json",
    "save_checkpoint",
    "selectable",
    "sniff_format",
    "split_masks",
    "stored_bytes",
    "with_masks",
    "with_packed_masks",
    "write_file",
]

FORMATS: tuple[str, ...] = ("pt", "safetensors")
WRAPPER_KEYS: tuple[str, ...] = ("state_dict", "model_state_dict", "model", "module", "net")
_ZIP_MAGIC = b"PK\x03\x04"


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: its state dict and, for wrapped ones, the wrapper and key."""

    state_dict: Mapping[str, Any]
    format: str
    wrapper: Mapping[str, Any] | None = None
    wrapper_key: str | None = None
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        """The state dict's dense (strided) tensor entries, in order."""
        return {
            k: v
            for k, v in self.state_dict.items()
            if isinstance(v, torch.Tensor) and v.layout == torch.strided
        }

    @property
    def sparse_layout(self) -> tuple[str, ...]:
        """Names of the sparse-layout tensors (COO, CSR, ...): always passed through."""
        return tuple(
            k
            for k, v in self.state_dict.items()
            if isinstance(v, torch.Tensor) and v.layout != torch.strided
        )


def sniff_format(path: Path) -> str:
    """``"safetensors"`` or ``"pt"``, from the file's first bytes (not its suffix)."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    return "pt"


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _unreadable(path: Path, detail: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: not a readable torch checkpoint: it looks like {describe_file(path)} ({detail})"
    )


def _load_pt(path: Path) -> Any:
    with open(path, "rb") as f:
        is_zip = f.read(4) == _ZIP_MAGIC
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as err:
        text = str(err)
        detail = next((ln.strip() for ln in text.splitlines() if "Unsupported" in ln), "")
        detail = detail.split(" was not an allowed global")[0]
        if "Weights only load failed" in text and "Unsupported operand" not in detail:
            model = module_hint(text)
            what = model or "it holds objects that torch.load(weights_only=True) does not allow"
            raise CheckpointError(
                f"{path}: refused to load: {what}, and fsparse never runs code from a "
                f"checkpoint ({detail}). If it is a model saved with torch.save(model), save "
                "its weights instead: torch.save(model.state_dict(), PATH)"
            ) from err
        raise _unreadable(path, detail or _first_line(err)) from err
    except Exception as err:  # torch.load fails on junk with many exception types
        raise _unreadable(path, _first_line(err)) from err


def _load_safetensors(path: Path, progress: bool) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:  # type: ignore[no-untyped-call]
            keys = list(f.keys())
            metadata = dict(f.metadata() or {})
            with byte_progress(f"loading {path.name}", path.stat().st_size, progress) as advance:
                tensors = {}
                for key in keys:
                    tensors[key] = f.get_tensor(key)
                    advance(tensors[key].numel() * tensors[key].element_size())
    except Exception as err:  # safetensors raises its own SafetensorError type
        raise CheckpointError(
            f"{path}: not a readable safetensors file: it looks like {describe_file(path)} "
            f"({_first_line(err)})"
        ) from err
    return tensors, metadata


def _has_tensor(obj: object) -> bool:
    return isinstance(obj, Mapping) and any(isinstance(v, torch.Tensor) for v in obj.values())


def _find_state_dict(obj: object, path: Path) -> tuple[Mapping[str, Any], str | None]:
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj, None
        for key in WRAPPER_KEYS:
            if _has_tensor(obj.get(key)):
                return obj[key], key
        if _has_tensor(obj):
            return obj, None
    raise CheckpointError(
        f"{path}: found no state dict: expected a dict of tensors, or a dict holding one "
        f"under one of {list(WRAPPER_KEYS)} (got {type(obj).__name__})"
    )


def load_checkpoint(path: str | os.PathLike[str], *, progress: bool = False) -> Checkpoint:
    """Load a ``.pt``/``.pth`` or ``.safetensors`` checkpoint, the format told by its content.

    Raises :class:`CheckpointError` (a ``ValueError``) with a one-line message;
    ``progress`` shows a bytes bar on a terminal.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "m.pt")
    >>> torch.save({"model": {"w": torch.ones(2)}, "epoch": 3}, path)
    >>> ckpt = load_checkpoint(path)
    >>> ckpt.wrapper_key, list(ckpt.tensors), ckpt.format
    ('model', ['w'], 'pt')
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")
    if sniff_format(path) == "safetensors":
        tensors, metadata = _load_safetensors(path, progress)
        return Checkpoint(tensors, "safetensors", metadata=metadata)
    with byte_progress(f"loading {path.name}", path.stat().st_size, progress) as advance:
        obj = _load_pt(path)
        advance(path.stat().st_size)
    state_dict, key = _find_state_dict(obj, path)
    ckpt = Checkpoint(state_dict, "pt", obj if key is not None else None, key)
    for name in ckpt.sparse_layout:
        check_sparse(f"{path}: {name}", state_dict[name])
    return ckpt


def load_masks_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The bool masks of a ``fsparse sparsify --masks-file`` file, ``{name: mask}``.

    >>> import tempfile
    >>> from fsparse import pack_mask
    >>> from fsparse.cli.masks_file import masks_file_object
    >>> p = Path(tempfile.mkdtemp()) / "m.pt"
    >>> obj, _, _ = masks_file_object(p, {"w": pack_mask(torch.tensor([True, False]))}, {"w": [2]})
    >>> torch.save(obj, p)
    >>> load_masks_file(p)
    {'w': tensor([ True, False])}
    """
    return masks_from_checkpoint(load_checkpoint(path), Path(path))


def stored_bytes(values: Any) -> int:
    """Bytes of the distinct tensor storages among ``values`` (tied weights count once)."""
    seen: set[tuple[str, int]] = set()
    total = 0
    for value in values:
        if not isinstance(value, torch.Tensor) or value.layout != torch.strided:
            continue
        storage = value.untyped_storage()
        key = (str(value.device), storage.data_ptr())
        if storage.data_ptr() != 0 and key in seen:
            continue
        seen.add(key)
        total += value.numel() * value.element_size()
    return total


def write_file(
    tmp: Path, obj: Any, fmt: str, advance: Callable[[int], None], metadata: Mapping[str, str]
) -> None:
    """Serialize ``obj`` (a torch object, or a dict of tensors for safetensors) into ``tmp``."""
    with open(tmp, "wb") as raw:
        f = CountingFile(raw, advance)
        if fmt == "pt":
            torch.save(obj, f)  # type: ignore[arg-type]
        else:
            write_safetensors(obj, f, metadata, None)  # type: ignore[arg-type]
        raw.flush()


def save_checkpoint(
    path: str | os.PathLike[str],
    state_dict: Mapping[str, Any],
    fmt: str,
    *,
    like: Checkpoint | None = None,
    metadata: Mapping[str, str] | None = None,
    extra: Mapping[Path, tuple[Any, str, Mapping[str, str]]] | None = None,
    progress: bool = False,
) -> list[str]:
    """Write ``state_dict`` atomically to ``path`` as ``fmt``; return the dropped entry names.

    A torch file keeps ``like``'s wrapper, with the state dict swapped in, and
    the sharing of tied tensors. A safetensors file holds dense tensors only:
    non-tensor entries, sparse tensors and wrapper entries are dropped and named
    in the result, and tied names are stored once (see :mod:`~fsparse.cli.tied_weights`).
    Its header keeps ``like``'s safetensors metadata, with ``metadata`` (string
    values) added. ``extra`` maps more output paths to ``(object, fmt, metadata)``,
    committed together with ``path``: all are written or none.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    path = Path(path)
    dropped: list[str] = []
    obj: Any = state_dict
    header: dict[str, str] = {}
    if fmt == "pt":
        if like is not None and like.wrapper is not None and like.wrapper_key is not None:
            obj = dict(like.wrapper)
            obj[like.wrapper_key] = state_dict
    else:
        dense = {
            k: v
            for k, v in state_dict.items()
            if isinstance(v, torch.Tensor) and v.layout == torch.strided
        }
        dropped = [k for k in state_dict if k not in dense]
        if like is not None and like.wrapper is not None:
            dropped += [k for k in like.wrapper if k != like.wrapper_key]
        obj, aliases = dedupe_for_safetensors(dense)
        header = dict(like.metadata) if like is not None and like.format == "safetensors" else {}
        header.setdefault("format", "pt")
        header.update(metadata or {})
        for removed, kept in aliases.items():
            header.setdefault(removed, kept)  # safetensors.torch.save_model's record
    outputs = {path: (obj, fmt, header), **(extra or {})}
    sizes = {p: stored_bytes(_values(o)) for p, (o, _, _) in outputs.items()}
    with (
        byte_progress(f"writing {path.name}", sum(sizes.values()), progress) as advance,
        atomic_outputs() as tx,
    ):
        for out, (o, f, h) in outputs.items():
            write_file(tx.file(out, sizes[out]), o, f, advance, h)
    return dropped


def _values(obj: Any) -> list[Any]:
    if isinstance(obj, Mapping):
        return [v for value in obj.values() for v in _values(value)]
    return [obj]


def like_state_dict(entries: Mapping[str, Any], original: Mapping[str, Any]) -> dict[str, Any]:
    """``entries`` as an ``OrderedDict`` carrying ``original``'s ``_metadata`` (module versions
    that ``load_state_dict`` reads), when ``original`` has one."""
    out: dict[str, Any] = OrderedDict(entries)
    metadata = getattr(original, "_metadata", None)
    if metadata is not None:
        out._metadata = metadata  # type: ignore[attr-defined]
    return out


def metadata_json(configs: Mapping[str, Any]) -> dict[str, str]:
    """A safetensors header entry recording how each tensor was sparsified."""
    return {"fsparse": json.dumps(configs, sort_keys=True)}
