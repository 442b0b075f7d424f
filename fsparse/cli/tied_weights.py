"""Tied weights: state-dict names whose tensors share storage are one tensor.

``torch.save`` keeps the sharing (BERT's word embeddings and its decoder
weight), so ``fsparse sparsify`` sparsifies such a tensor once, refuses rules
that treat its names differently (one name sparsified and the other left dense
would come apart, and ``load_state_dict`` would undo the sparsification), and
writes the same tensor under every name, so a ``.pt`` output keeps the sharing.

safetensors has no aliases. A ``.safetensors`` output follows
``safetensors.torch.save_model``: one name of each shared group is kept (the
first in sorted order that covers the whole storage) and the others are
dropped, each recorded in the header metadata as ``dropped name -> kept name``
(Hugging Face ``from_pretrained`` and ``safetensors.torch.load_model`` re-tie them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from fsparse._src.checks import short_repr

__all__ = ["TiedGroups", "dedupe_for_safetensors", "shared_groups", "tie_selection"]


def _storage_key(tensor: torch.Tensor) -> tuple[str, int] | None:
    if tensor.layout != torch.strided or tensor.device.type == "meta":
        return None
    storage = tensor.untyped_storage()
    if storage.nbytes() == 0 or storage.data_ptr() == 0:
        return None
    return str(tensor.device), storage.data_ptr()


def shared_groups(tensors: Mapping[str, Any]) -> list[list[str]]:
    """Names whose tensors share storage, two or more per group, in state-dict order.

    >>> w = torch.ones(2, 2)
    >>> shared_groups({"a": w, "b": torch.ones(2), "c": w})
    [['a', 'c']]
    """
    by_storage: dict[tuple[str, int], list[str]] = {}
    for name, tensor in tensors.items():
        key = _storage_key(tensor) if isinstance(tensor, torch.Tensor) else None
        if key is not None:
            by_storage.setdefault(key, []).append(name)
    return [names for names in by_storage.values() if len(names) > 1]


def _same_view(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (
        a.data_ptr() == b.data_ptr()
        and a.dtype == b.dtype
        and a.shape == b.shape
        and a.stride() == b.stride()
    )


def _describe(config: Any) -> str:
    if config is None:
        return "left dense"
    block = "x".join(map(str, config.sparse_block_shape))
    return f"sparsified at {config.sparsity_level:g} (block {block}, norm {config.norm})"


@dataclasses.dataclass(frozen=True)
class TiedGroups:
    """The sparsified tied tensors: the one name each is computed under, and its aliases."""

    aliases: dict[str, str]  # alias name -> the name it is computed (and reported) under

    def retie(self, out: dict[str, Any]) -> None:
        """Put each computed tensor under its aliases too (the same object: shared storage)."""
        for alias, name in self.aliases.items():
            out[alias] = out[name]


def tie_selection(
    tensors: Mapping[str, Any], configs: dict[str, Any]
) -> tuple[dict[str, Any], TiedGroups]:
    """Drop the aliases of each tied group from ``configs`` (name -> config, ``None`` or
    absent for a name left dense); raise ``ValueError`` if a group's names disagree."""
    aliases: dict[str, str] = {}
    kept = dict(configs)
    for group in shared_groups(tensors):
        chosen = {name: configs.get(name) for name in group}
        if all(c is None for c in chosen.values()):
            continue
        first = group[0]
        for name in group[1:]:
            a, b = short_repr(first), short_repr(name)
            if chosen[name] != chosen[first]:
                raise ValueError(
                    f"{a} and {b} are one tensor (tied weights: they share storage), but the "
                    f"rules treat them differently ({a}: {_describe(chosen[first])}; {b}: "
                    f"{_describe(chosen[name])}); give every name of a tied tensor the same "
                    "rules (e.g. --exclude both names, or neither)"
                )
            if not _same_view(tensors[first], tensors[name]):
                raise ValueError(
                    f"{a} and {b} share storage as different views (shape, offset or strides); "
                    "fsparse cannot sparsify one without changing the other: --exclude both"
                )
            aliases[name] = first
            kept.pop(name, None)
    return kept, TiedGroups(aliases)


def dedupe_for_safetensors(
    tensors: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors to store, {dropped name: kept name})`` by ``safetensors.torch``'s rule.

    Groups whose tensors overlap without one covering the whole storage (which
    ``save_model`` refuses) are stored as separate copies instead.

    >>> w = torch.ones(2, 2)
    >>> kept, dropped = dedupe_for_safetensors({"dec": w, "enc": w, "b": torch.ones(1)})
    >>> sorted(kept), dropped
    (['b', 'dec'], {'enc': 'dec'})
    """
    from safetensors.torch import _remove_duplicate_names

    out = dict(tensors)
    dropped: dict[str, str] = {}
    for group in shared_groups(tensors):
        sub = {name: tensors[name] for name in group}
        try:
            to_remove = _remove_duplicate_names(sub)
        except RuntimeError:  # no name covers the storage: store copies
            to_remove = {}
        for kept, removed in to_remove.items():
            for name in removed:
                del out[name]
                dropped[name] = kept
    return {k: v.contiguous() for k, v in out.items()}, dropped
