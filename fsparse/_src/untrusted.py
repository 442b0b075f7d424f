"""The one place that validates what comes from a file before any of it is used.

A file that passes ``torch.load(weights_only=True)`` can still hold a sparse
tensor whose indices point outside its shape (``to_dense`` then writes outside
its buffer), and a ``yaml.safe_load`` document can still be an alias bomb or
nest deeply enough to exhaust the stack. These functions refuse both with a
``ValueError``/``TypeError`` naming what was wrong, never a crash.

>>> load_mask(torch.ones(2, 3).to_sparse_coo(), (2, 3), "mask").dtype
torch.bool
>>> bad = torch.sparse_coo_tensor(torch.tensor([[0], [100]]), torch.ones(1), (2, 3))
>>> load_mask(bad, (2, 3), "mask")  # doctest: +ELLIPSIS
Traceback (most recent call last):
    ...
ValueError: mask is not a valid sparse COO tensor of shape (2, 3): ...
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["MAX_YAML_BYTES", "MAX_YAML_DEPTH", "load_mask", "safe_yaml_load"]

# Mask values a file may hold: torch.ao saves float ones/int8/bool masks.
_MASK_DTYPES = (
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
)
MAX_YAML_BYTES = 1 << 20
MAX_YAML_DEPTH = 64


def load_mask(value: object, shape: Sequence[int], arg: str) -> torch.Tensor:
    """A dense bool mask from an untrusted dense or sparse COO tensor of ``shape``.

    The tensor must be strided or sparse COO, of a real mask dtype, on a real
    device, of exactly ``shape``; a sparse tensor's invariants (indices in range,
    index dtype, nnz) are checked before it is densified.
    """
    shape = tuple(int(s) for s in shape)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{arg} must be a torch.Tensor, got {type(value).__name__}")
    if value.is_meta or value.is_quantized:
        raise TypeError(f"{arg} must hold real values, got {value.dtype} on {value.device}")
    if value.dtype not in _MASK_DTYPES:
        raise TypeError(f"{arg} must be a bool, integer or float tensor, got dtype {value.dtype}")
    if tuple(value.shape) != shape:
        raise ValueError(f"{arg} has shape {tuple(value.shape)}, expected {shape}")
    if value.layout == torch.strided:
        return value != 0 if value.dtype != torch.bool else value.clone()
    if value.layout != torch.sparse_coo:
        raise TypeError(f"{arg} must be dense or sparse COO, got layout {value.layout}")
    try:
        # Checks index dtype, ndim, nnz and that every index lies inside the shape.
        torch._validate_sparse_coo_tensor_args(value._indices(), value._values(), value.shape)
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise ValueError(
            f"{arg} is not a valid sparse COO tensor of shape {shape}: {str(err)[:200]}"
        ) from None
    with torch.sparse.check_sparse_tensor_invariants():
        dense = value.to_dense()
    return dense != 0


def safe_yaml_load(text: object, what: str, *, max_bytes: int = MAX_YAML_BYTES) -> Any:
    """Plain data from YAML ``text``: no tags, no anchors or aliases, bounded size and depth.

    Raises ``ValueError`` naming ``what`` for a document over ``max_bytes``, one that
    uses an anchor or alias, nests deeper than :data:`MAX_YAML_DEPTH`, or does not parse.

    >>> safe_yaml_load("a: [1, 2]", "recipe")
    {'a': [1, 2]}
    >>> safe_yaml_load("a: &x [1]\\nb: *x", "recipe")
    Traceback (most recent call last):
        ...
    ValueError: recipe: YAML anchors and aliases are not allowed (line 1)
    """
    import yaml  # optional extra: imported only when a YAML text is read

    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str):
        raise TypeError(f"{what} must be YAML text (str), got {type(text).__name__}")
    if len(text) > max_bytes:
        raise ValueError(f"{what} is {len(text)} characters long; at most {max_bytes} are read")

    class _Refused(Exception):
        pass

    class _Loader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise _Refused(
                    f"YAML anchors and aliases are not allowed (line {event.start_mark.line + 1})"
                )
            self.depth += 1
            if self.depth > MAX_YAML_DEPTH:
                raise _Refused(f"YAML nests deeper than {MAX_YAML_DEPTH} levels")
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except _Refused as err:
        raise ValueError(f"{what}: {err}") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{what} is not valid YAML: {str(err)[:300]}") from None
    except RecursionError:
        raise ValueError(f"{what}: YAML nests too deeply") from None
