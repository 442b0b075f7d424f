"""Helpers of the Lightning callbacks (torch.ao's module name, typo included).

They attach a model's parameters to a data sparsifier and read sparsity back from
the sparsifier's masks; none of them needs Lightning.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

from torch import nn

from fsparse._src.state import SUPPORTED_TYPES, sparsity
from fsparse.data_sparsifier.base_data_sparsifier import BaseDataSparsifier

__all__ = ["_attach_model_to_data_sparsifier", "_get_valid_name", "_log_sparsified_level"]

logger: logging.Logger = logging.getLogger(__name__)


def _get_valid_name(name: str) -> str:
    """``name`` with ``.`` replaced by ``_`` (a sparsifier name cannot hold a dot).

    >>> _get_valid_name("encoder.0.weight")
    'encoder_0_weight'
    """
    return name.replace(".", "_")


def _attach_model_to_data_sparsifier(
    module: nn.Module,
    data_sparsifier: BaseDataSparsifier,
    config: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Attach every parameter of ``module`` to ``data_sparsifier`` under its valid name.

    ``config`` maps valid names to ``add_data`` keyword arguments. A name already in
    the sparsifier is replaced (keeping its mask and config) without the "Replacing
    existing data" warning: the callbacks re-attach fresh model copies on purpose.

    >>> from fsparse.data_sparsifier import DataNormSparsifier
    >>> sp = DataNormSparsifier(sparsity_level=0.5)
    >>> _attach_model_to_data_sparsifier(nn.Linear(4, 2), sp)
    >>> list(sp.data_groups)
    ['weight', 'bias']
    """
    config = config or {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Replacing existing data", UserWarning)
        for name, parameter in module.named_parameters():
            if type(parameter) in SUPPORTED_TYPES:
                valid_name = _get_valid_name(name)
                data_sparsifier.add_data(
                    name=valid_name, data=parameter, **dict(config.get(valid_name, {}))
                )


def _sparsity_by_layer(
    model: nn.Module, data_sparsifier: BaseDataSparsifier
) -> dict[str, float]:
    """Fraction of zeros in each attached parameter's mask, keyed by parameter name,
    plus ``"overall"`` (zeros over elements of all of them together).

    >>> from fsparse.data_sparsifier import DataNormSparsifier
    >>> model = nn.Linear(4, 4)
    >>> sp = DataNormSparsifier(sparsity_level=0.5, sparse_block_shape=(1, 2))
    >>> _attach_model_to_data_sparsifier(model, sp)
    >>> sp.step()
    >>> _sparsity_by_layer(model, sp)
    {'weight': 0.5, 'bias': 0.5, 'overall': 0.5}
    """
    state = data_sparsifier.core_state
    by_entry = sparsity(state)
    levels: dict[str, float] = {}
    zeros = total = 0
    for name, parameter in model.named_parameters():
        valid_name = _get_valid_name(name)
        if type(parameter) not in SUPPORTED_TYPES or valid_name not in state:
            continue
        mask = state[valid_name].mask
        levels[name] = by_entry[valid_name]
        zeros += mask.numel() - int(mask.count_nonzero())
        total += mask.numel()
    levels["overall"] = zeros / total if total else 0.0
    return levels


def _log_sparsified_level(model: nn.Module, data_sparsifier: BaseDataSparsifier) -> None:
    """Log (``logging.INFO``) each layer's sparsity after a sparsifier step."""
    for name, level in _sparsity_by_layer(model, data_sparsifier).items():
        if name != "overall":
            logger.info("Sparsity in layer %s = %.2f%%", name, 100 * level)
