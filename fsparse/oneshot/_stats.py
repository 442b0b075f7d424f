"""Calibration statistics of one layer, and the views of its weight and inputs.

Supported layers (the references' ``find_layers`` plus conv):

* ``nn.Linear``: weight ``(out, in)``, inputs ``(..., in)``.
* ``nn.Conv2d`` with ``groups == 1``: inputs unfolded into patches; the weight
  ``(O, I, kh, kw)`` is viewed channels-last as ``(O, kh*kw*I)`` so that N:M
  groups run along the input channels, as the engine's N:M rule for conv
  weights (the SparseGPT reference flattens ``(O, I*kh*kw)``).
* Hugging Face ``Conv1D`` (GPT-2): weight ``(in, out)``, viewed transposed.
  Recognised through ``sys.modules``; transformers is never imported here.

:class:`LayerStats` accumulates, over every calibration token ``x`` (a row of
the layer's unfolded input), ``sum x x^T`` (when asked) and ``sum x^2``:
``hessian()`` is SparseGPT's ``H = 2/n sum x x^T`` and ``sq_norms()`` Wanda's
``s_j = mean x_j^2``, with ``n`` the number of tokens. (The references count
sequences; the scale changes neither mask nor update.)
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn

from fsparse.oneshot._args import compute_dtype

__all__ = ["LayerStats", "layer_inputs", "layer_kind", "read_weight", "weight_of", "write_weight"]


def _conv1d_classes() -> tuple[type, ...]:
    found = []
    for name in ("transformers.pytorch_utils", "transformers.modeling_utils"):
        cls = getattr(sys.modules.get(name), "Conv1D", None)
        if isinstance(cls, type) and cls not in found:
            found.append(cls)
    return tuple(found)


def layer_kind(module: nn.Module) -> str | None:
    """``"linear"``, ``"conv2d"``, ``"conv1d"`` (Hugging Face) or ``None`` (unsupported)."""
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Conv2d):
        return "conv2d" if module.groups == 1 else None
    conv1d = _conv1d_classes()
    if conv1d and isinstance(module, conv1d):
        return "conv1d"
    return None


def weight_of(module: nn.Module) -> torch.Tensor:
    """``module.weight`` (typed)."""
    weight = module.weight
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"module {type(module).__name__} has no weight tensor")
    return weight


def read_weight(module: nn.Module, kind: str) -> torch.Tensor:
    """The ``(out, in)`` view of the module's weight (detached, may share memory)."""
    weight = weight_of(module).detach()
    if kind == "conv2d":
        return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)
    if kind == "conv1d":
        return weight.t()
    return weight


def write_weight(module: nn.Module, kind: str, matrix: torch.Tensor) -> None:
    """Copy the ``(out, in)`` ``matrix`` into the module's weight, in place."""
    weight = weight_of(module)
    if kind == "conv2d":
        o, i, kh, kw = weight.shape
        matrix = matrix.reshape(o, kh, kw, i).permute(0, 3, 1, 2)
    elif kind == "conv1d":
        matrix = matrix.t()
    with torch.no_grad():
        weight.copy_(matrix.reshape(weight.shape))


def layer_inputs(module: nn.Module, kind: str, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as ``(tokens, in)`` rows, matching :func:`read_weight`'s columns."""
    dtype = compute_dtype(weight_of(module).dtype)
    if kind != "conv2d":
        return x.detach().reshape(-1, x.shape[-1]).to(dtype)
    conv: nn.Conv2d = module  # type: ignore[assignment]
    x = x.detach().to(dtype)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    padding = conv.padding
    if isinstance(padding, str) or conv.padding_mode != "zeros":
        mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        x = F.pad(x, conv._reversed_padding_repeated_twice, mode=mode)
        padding = (0, 0)
    patches = F.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=padding,
                       stride=conv.stride)
    b, _, length = patches.shape
    k = conv.kernel_size[0] * conv.kernel_size[1]
    channels = conv.in_channels
    return patches.view(b, channels, k, length).permute(0, 3, 2, 1).reshape(-1, k * channels)


class LayerStats:
    """Running ``sum x x^T`` (if ``gram``) and ``sum x^2`` over calibration tokens."""

    def __init__(self, columns: int, *, gram: bool, dtype: torch.dtype, device: torch.device):
        self.columns = columns
        self.tokens = 0
        self.sum_sq = torch.zeros(columns, dtype=dtype, device=device)
        self.sum_xx = torch.zeros(columns, columns, dtype=dtype, device=device) if gram else None

    def add(self, rows: torch.Tensor) -> None:
        """Add ``(tokens, columns)`` rows."""
        self.tokens += rows.shape[0]
        self.sum_sq += rows.square().sum(0)
        if self.sum_xx is not None:
            self.sum_xx.addmm_(rows.t(), rows)

    def hessian(self) -> torch.Tensor:
        """``2/n sum x x^T`` (SparseGPT's ``H``); needs ``gram=True``."""
        if self.sum_xx is None:
            raise RuntimeError("these statistics were collected without the Gram matrix")
        return self.sum_xx * (2.0 / max(self.tokens, 1))

    def sq_norms(self) -> torch.Tensor:
        """``mean x_j^2`` per input column (Wanda's ``s``)."""
        return self.sum_sq / max(self.tokens, 1)
