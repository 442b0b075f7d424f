"""Reading and atomically writing checkpoints: torch ``.pt``/``.pth`` files and ``.safetensors``.

Torch files are always read with ``torch.load(weights_only=True)``, so loading a
checkpoint can never run code. A checkpoint is a state dict (a dict of tensors)
or a dict holding one under one of :data:`WRAPPER_KEYS`; the wrapper's other
entries are kept when writing a torch file.

Bit-packed masks (``fsparse sparsify --packed-masks``) are stored beside their
weights under ``NAME + MASK_SUFFIX`` as :func:`fsparse.pack_mask` bytes;
:func:`split_masks` takes them out again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pickle
import tempfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from fsparse._src.packing import pack_mask, unpack_mask

__all__ = [
    "FORMATS",
    "MASK_SUFFIX",
    "WRAPPER_KEYS",
    "Checkpoint",
    "CheckpointError",
    "atomic_write",
    "like_state_dict",
    "load_checkpoint",
    "metadata_json",
    "save_checkpoint",
    "split_masks",
    "with_masks",
    "with_packed_masks",
]

FORMATS: tuple[str, ...] = ("pt", "safetensors")
MASK_SUFFIX = ".fsparse_mask"
WRAPPER_KEYS: tuple[str, ...] = ("state_dict", "model_state_dict", "model", "module", "net")
_ZIP_MAGIC = b"PK\x03\x04"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, found or written; the message is one line."""


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
        """The state dict's tensor entries, in order."""
        return {k: v for k, v in self.state_dict.items() if isinstance(v, torch.Tensor)}


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


def _load_pt(path: Path) -> Any:
    with open(path, "rb") as f:
        is_zip = f.read(4) == _ZIP_MAGIC
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as err:
        text = str(err)
        detail = next((ln.strip() for ln in text.splitlines() if "Unsupported" in ln), "")
        if "Weights only load failed" in text:
            raise CheckpointError(
                f"{path}: refused to load: it holds objects that torch.load(weights_only=True) "
                f"does not allow, and fsparse never runs code from a checkpoint ({detail})"
            ) from err
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint ({detail or text})"
        ) from err
    except Exception as err:  # torch.load fails on junk with many exception types
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint ({_first_line(err)})"
        ) from err


def _load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:  # type: ignore[no-untyped-call]
            tensors = {key: f.get_tensor(key) for key in f.keys()}
            metadata = dict(f.metadata() or {})
    except Exception as err:  # safetensors raises its own SafetensorError type
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({_first_line(err)})"
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


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Load a ``.pt``/``.pth`` or ``.safetensors`` checkpoint, the format told by its content.

    Raises :class:`CheckpointError` (a ``ValueError``) with a one-line message.

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
        tensors, metadata = _load_safetensors(path)
        return Checkpoint(tensors, "safetensors", metadata=metadata)
    obj = _load_pt(path)
    state_dict, key = _find_state_dict(obj, path)
    return Checkpoint(state_dict, "pt", obj if key is not None else None, key)


@contextlib.contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _unshared(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous tensors with no two sharing storage (safetensors refuses shared ones)."""
    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        ptr = tensor.untyped_storage().data_ptr()
        shared = ptr in seen and tensor.numel() > 0
        seen.add(ptr)
        out[name] = tensor.clone() if shared else tensor.contiguous()
    return out


def save_checkpoint(
    path: str | os.PathLike[str],
    state_dict: Mapping[str, Any],
    fmt: str,
    *,
    like: Checkpoint | None = None,
    metadata: Mapping[str, str] | None = None,
) -> list[str]:
    """Write ``state_dict`` atomically to ``path`` as ``fmt``; return the dropped entry names.

    A torch file keeps ``like``'s wrapper, with the state dict swapped in. A
    safetensors file holds tensors only: non-tensor entries and wrapper entries
    are dropped and named in the result. ``metadata`` goes to the safetensors
    header (string values) and is ignored for torch files.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    path = Path(path)
    if fmt == "pt":
        obj: Any = state_dict
        if like is not None and like.wrapper is not None and like.wrapper_key is not None:
            obj = dict(like.wrapper)
            obj[like.wrapper_key] = state_dict
        with atomic_write(path) as tmp:
            torch.save(obj, tmp)
        return []
    from safetensors.torch import save_file

    tensors = {k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    dropped = [k for k in state_dict if k not in tensors]
    if like is not None and like.wrapper is not None:
        dropped += [k for k in like.wrapper if k != like.wrapper_key]
    header = {"format": "pt", **(metadata or {})}
    with atomic_write(path) as tmp:
        save_file(_unshared(tensors), tmp, metadata=header)
    return dropped


def split_masks(
    state_dict: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Take the packed masks out of a state dict: ``(weights, {name: bool mask})``.

    >>> mask = torch.tensor([False, True])
    >>> sd = {"w": torch.tensor([0.0, 2.0]), "w" + MASK_SUFFIX: pack_mask(mask)}
    >>> weights, masks = split_masks(sd)
    >>> list(weights), masks["w"]
    (['w'], tensor([False,  True]))
    """
    weights = {k: v for k, v in state_dict.items() if not k.endswith(MASK_SUFFIX)}
    masks: dict[str, torch.Tensor] = {}
    for key, packed in state_dict.items():
        if not key.endswith(MASK_SUFFIX):
            continue
        name = key[: -len(MASK_SUFFIX)]
        weight = weights.get(name)
        if not isinstance(weight, torch.Tensor):
            raise CheckpointError(f"packed mask {key!r} has no weight named {name!r} beside it")
        masks[name] = unpack_mask(packed, weight.shape)
    return weights, masks


def with_masks(state_dict: Mapping[str, Any], masks: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """``state_dict`` with each mask packed under ``NAME + MASK_SUFFIX``, right after ``NAME``.

    >>> list(with_masks({"w": torch.ones(3), "b": torch.ones(1)}, {"w": torch.ones(3) > 0}))
    ['w', 'w.fsparse_mask', 'b']
    """
    return with_packed_masks(state_dict, {name: pack_mask(m) for name, m in masks.items()})


def with_packed_masks(
    state_dict: Mapping[str, Any], packed: Mapping[str, torch.Tensor]
) -> dict[str, Any]:
    """:func:`with_masks` for masks already packed by :func:`fsparse.pack_mask`."""
    out: dict[str, Any] = {}
    for name, value in state_dict.items():
        out[name] = value
        if name in packed:
            key = name + MASK_SUFFIX
            if key in state_dict:
                raise CheckpointError(f"cannot store the mask of {name!r}: {key!r} already exists")
            out[key] = packed[name]
    return out


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
