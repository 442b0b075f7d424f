"""torch.ao-compatible ``DataNormSparsifier``: masks from :func:`fsparse.config_norm_mask`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from fsparse._src.config import SparsityConfig, make_config
from fsparse._src.engine.norm_mask import config_norm_mask
from fsparse._src.state import Entry, SparsifierState
from fsparse._src.state import step as core_step
from fsparse.data_sparsifier.base_data_sparsifier import BaseDataSparsifier, _ones_bool

_KEYS = ("sparsity_level", "sparse_block_shape", "zeros_per_block")


def _as_int8(mask: torch.Tensor) -> torch.Tensor:
    """``mask`` (bool) as int8: reinterpreted in place when it owns its whole storage,
    else copied (a view into a batch of masks, an expanded mask), like torch.ao's own."""
    own = (
        mask.is_contiguous()
        and mask.storage_offset() == 0
        and mask.untyped_storage().nbytes() == mask.numel()
    )
    return mask.view(torch.int8) if own and mask.dtype == torch.bool else mask.to(torch.int8)

__all__ = ["DataNormSparsifier"]


class DataNormSparsifier(BaseDataSparsifier):
    r"""Zeroes the ``sparse_block_shape`` blocks of lowest L1 or L2 norm.

    ``sparsity_level`` is the fraction of blocks to zero (clamped to [0, 1] when the
    mask is computed) and ``zeros_per_block`` the zeros inside each chosen block
    (``None``: the whole block). All three are defaults that ``add_data`` may override;
    ``norm`` applies to every entry. After :meth:`step` each mask is an int8 0/1 tensor
    (the same object as before), as in torch.ao. :meth:`step` computes every new mask
    through the pure core first and then commits them all, so a failure (NaN data,
    a bad config) changes no mask.

    >>> sp = DataNormSparsifier(sparsity_level=0.5, sparse_block_shape=(1, 2))
    >>> _ = sp.add_data("w", torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    >>> sp.step()
    >>> sp.get_mask("w")
    tensor([[0, 0, 1, 1]], dtype=torch.int8)
    """

    def __init__(
        self,
        data_list: Iterable[tuple[str, Any]] | None = None,
        sparsity_level: float = 0.5,
        sparse_block_shape: tuple[int, int] = (1, 4),
        zeros_per_block: int | None = None,
        norm: str = "L1",
    ):
        self.norm = norm
        defaults = {
            "sparsity_level": sparsity_level,
            "sparse_block_shape": sparse_block_shape,
            "zeros_per_block": zeros_per_block,
        }
        # validates every argument (norm included) and resolves zeros_per_block=None
        defaults["zeros_per_block"] = self._config_from_group(defaults).zeros_per_block
        super().__init__(data_list=data_list, **defaults)

    def _config_from_group(self, group: Mapping[str, Any]) -> SparsityConfig:
        """Validated norm config; a ``norm`` key in the group is ignored, as in torch.ao."""
        return make_config(**{k: v for k, v in group.items() if k != "norm"}, norm=self.norm)

    def step(self) -> None:
        """New masks for every entry (if enabled); all computed before any is written.

        A subclass that overrides :meth:`update_mask` is stepped entry by entry
        through it, as in :class:`BaseDataSparsifier`.
        """
        if type(self).update_mask is not DataNormSparsifier.update_mask:
            super().step()
            return
        if not self.enable_mask_update:
            return
        configs = self._check_step()
        for name, group in self.data_groups.items():
            absent = [key for key in _KEYS if key not in group]
            if absent:
                raise ValueError(f"data_groups[{name!r}] has no {absent}")
        entries = {}
        unused: dict[tuple[Any, ...], torch.Tensor] = {}  # the core ignores the old masks
        for name in self.data_groups:
            data = self.get_data(name)
            key = (data.shape, data.device)
            mask = unused[key] if key in unused else unused.setdefault(key, _ones_bool(data))
            entries[name] = Entry(data, mask, configs[name])
        new = core_step(SparsifierState(entries, configs[name] if entries else make_config()))
        del entries
        for name in self.data_groups:
            self._put_mask(name, _as_int8(new[name].mask))

    def update_mask(  # type: ignore[override]
        self,
        name: str,
        data: torch.Tensor,
        sparsity_level: float,
        sparse_block_shape: tuple[int, int],
        zeros_per_block: int | None,
        **kwargs: Any,
    ) -> None:
        """Write the norm block mask of ``data`` into ``self.get_mask(name)`` as int8."""
        config = self._config_from_group(
            {
                "sparsity_level": sparsity_level,
                "sparse_block_shape": sparse_block_shape,
                "zeros_per_block": zeros_per_block,
            }
        )
        try:
            mask = config_norm_mask(data, config)
        except ValueError as err:
            raise ValueError(f"{name!r}: {err}") from err
        self.get_mask(name).data = mask.to(torch.int8)
