"""Write a ``.safetensors`` file into a file fsparse opened, one tensor at a time.

``safetensors.torch.save_file`` writes through its own temporary file (a second
hidden file beside fsparse's, and a second full write), and ``save`` builds the
whole file in memory. This writer streams the same format (an 8-byte
little-endian header length, a JSON header padded with spaces to 8 bytes, then
each tensor's raw little-endian bytes in header order) into an open binary file,
so the output is written once, into fsparse's one temporary, in bounded extra
memory. Files it writes load with ``safetensors.safe_open``.
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Callable, Mapping
from typing import BinaryIO

import torch

__all__ = ["DTYPE_NAMES", "header_bytes", "write_safetensors"]

DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.uint16: "U16",
    torch.uint32: "U32",
    torch.uint64: "U64",
    torch.complex64: "C64",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
}
_CHUNK = 64 << 20  # bytes per write: bounded copies, and signals are seen between chunks


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def header_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """The length prefix and padded JSON header for ``tensors`` stored in order."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, tensor in tensors.items():
        if tensor.dtype not in DTYPE_NAMES:
            raise TypeError(f"{name}: safetensors cannot store dtype {tensor.dtype}")
        end = offset + _nbytes(tensor)
        header[name] = {
            "dtype": DTYPE_NAMES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, end],
        }
        offset = end
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def write_safetensors(
    tensors: Mapping[str, torch.Tensor],
    f: BinaryIO,
    metadata: Mapping[str, str] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> int:
    """Write dense ``tensors`` and string ``metadata`` to ``f`` (``torch.save``'s argument
    order); return the bytes written."""
    if sys.byteorder != "little":  # pragma: no cover - no big-endian CI
        raise OSError("writing safetensors needs a little-endian machine")
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor) or tensor.layout != torch.strided:
            raise TypeError(f"{name}: safetensors stores dense tensors only")
    head = header_bytes(tensors, metadata or {})
    f.write(head)
    total = len(head)
    if on_bytes is not None:
        on_bytes(len(head))
    for tensor in tensors.values():
        if tensor.numel() == 0:
            continue
        flat = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
        for start in range(0, flat.numel(), _CHUNK):
            piece = flat[start : start + _CHUNK].numpy()
            f.write(piece.data)
            total += piece.nbytes
            if on_bytes is not None:
                on_bytes(piece.nbytes)
    return total
