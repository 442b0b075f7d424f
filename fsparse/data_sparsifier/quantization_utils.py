"""Post-training sparsification and quantization of a model's embeddings."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fsparse._src.state import EMBEDDING_TYPES
from fsparse.data_sparsifier.base_data_sparsifier import BaseDataSparsifier

__all__ = ["post_training_sparse_quantize"]


def _embeddings(model: nn.Module, select: list[nn.Module] | None) -> list[tuple[str, nn.Module]]:
    """``(qualified name, module)`` of every embedding in ``model``, or of ``select``."""
    found = [(n, m) for n, m in model.named_modules() if n and type(m) in EMBEDDING_TYPES]
    if select is None:
        return found
    if not isinstance(select, list):
        raise TypeError(f"select_embeddings must be a list of modules, got {type(select).__name__}")
    by_id = {id(m): n for n, m in reversed(found)}  # first name of a shared module
    out = []
    for module in select:
        if type(module) not in EMBEDDING_TYPES:
            raise TypeError(
                f"select_embeddings must hold nn.Embedding or nn.EmbeddingBag, "
                f"got {type(module).__name__}"
            )
        if id(module) not in by_id:
            raise ValueError(f"select_embeddings holds a module that is not in model: {module}")
        out.append((by_id[id(module)], module))
    return out


def _quantize(model: nn.Module, embeddings: list[tuple[str, nn.Module]]) -> None:
    for _, module in embeddings:
        module.qconfig = torch.ao.quantization.float_qparams_weight_only_qconfig  # type: ignore[assignment]
    torch.ao.quantization.prepare(model, inplace=True)
    torch.ao.quantization.convert(model, inplace=True)


def post_training_sparse_quantize(
    model: nn.Module,
    data_sparsifier_class: type[BaseDataSparsifier],
    sparsify_first: bool = True,
    select_embeddings: list[nn.Module] | None = None,
    **sparse_config: Any,
) -> None:
    """Sparsify and quantize (per-channel, weight only) the embeddings of ``model`` in place.

    ``sparsify_first=True`` sparsifies and then quantizes. Otherwise the embeddings
    are quantized, their dequantized weights sparsified, and requantized with the
    saved scales and zero points. ``select_embeddings`` (default: every
    ``nn.Embedding``/``nn.EmbeddingBag``, however nested) limits the change; other
    layers are left alone. ``sparse_config`` goes to ``data_sparsifier_class``.

    >>> from fsparse.data_sparsifier import DataNormSparsifier
    >>> model = nn.Sequential(nn.Embedding(8, 8), nn.Linear(8, 2))
    >>> post_training_sparse_quantize(model, DataNormSparsifier, sparsity_level=0.5)
    >>> type(model[0]).__module__, type(model[1]).__module__, model[0].weight().dtype
    ('torch.ao.nn.quantized.modules.embedding_ops', 'torch.nn.modules.linear', torch.quint8)
    """
    sparsifier = data_sparsifier_class(**sparse_config)
    embeddings = _embeddings(model, select_embeddings)
    valid = {name: name.replace(".", "_") for name, _ in embeddings}
    if sparsify_first:
        for name, module in embeddings:
            sparsifier.add_data(valid[name], module)
        sparsifier.step()
        sparsifier.squash_mask()
        _quantize(model, embeddings)
        return

    _quantize(model, embeddings)
    quantized: list[tuple[str, Any]] = [(n, model.get_submodule(n)) for n, _ in embeddings]
    saved = {}
    for name, module in quantized:
        weight = module.weight()
        dense = torch.dequantize(weight)
        saved[name] = (dense, weight)
        sparsifier.add_data(valid[name], dense)
    sparsifier.step()
    sparsifier.squash_mask()  # writes the sparse values into each `dense` in place
    for name, module in quantized:
        dense, weight = saved[name]
        module.set_weight(
            torch.quantize_per_channel(
                dense,
                scales=weight.q_per_channel_scales(),
                zero_points=weight.q_per_channel_zero_points(),
                axis=weight.q_per_channel_axis(),
                dtype=weight.dtype,
            )
        )
