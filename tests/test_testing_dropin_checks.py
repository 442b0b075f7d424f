"""fsparse.testing.check_dropin_sparsifier: real subclasses pass; ones that diverge are caught."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from dropin_subclasses import FsImplemented

from fsparse import data_sparsifier as fs_sparse
from fsparse.testing.dropin_checks import (
    DropinCheckError,
    check_dropin_sparsifier,
    torch_ao_twin,
)

FAST = {"max_examples": 4, "steps": 2}


def test_torch_ao_style_subclass_matches_torch_ao() -> None:
    check_dropin_sparsifier(FsImplemented, **FAST)()


def test_data_norm_sparsifier_matches_torch_ao() -> None:
    check_dropin_sparsifier(fs_sparse.DataNormSparsifier, **FAST,
                            kwargs={"sparsity_level": 0.5, "sparse_block_shape": (1, 2),
                                    "zeros_per_block": 1})()


class Halves(fs_sparse.DataNormSparsifier):
    """A DataNormSparsifier subclass with a method of its own (copied onto torch.ao's twin)."""

    def level(self) -> float:
        return 0.5

    def update_mask(self, name: str, data: torch.Tensor, **kwargs: Any) -> None:
        mask = self.get_mask(name)
        mask[: data.shape[0] // 2] = 0
        self.state[name]["calls"] = self.state[name].get("calls", 0) + 1


def test_twin_keeps_the_class_own_methods() -> None:
    from torch.ao.pruning._experimental import data_sparsifier as ao_sparse
    twin = torch_ao_twin(Halves)
    assert issubclass(twin, ao_sparse.DataNormSparsifier) and twin.level is Halves.level
    check_dropin_sparsifier(Halves, **FAST)()


class LibraryDependent(fs_sparse.BaseDataSparsifier):
    """Deliberately broken: prunes differently under fsparse than under torch.ao."""

    def update_mask(self, name: str, data: torch.Tensor, **kwargs: Any) -> None:
        mask = self.get_mask(name)
        mask[0] = 0
        if type(self).__module__.startswith("fsparse") or "Ao" not in type(self).__name__:
            mask[-1] = 0


class ExtraState(fs_sparse.BaseDataSparsifier):
    """Deliberately broken: keeps a state entry only under fsparse."""

    def update_mask(self, name: str, data: torch.Tensor, **kwargs: Any) -> None:
        self.get_mask(name)[0] = 0
        if "Ao" not in type(self).__name__:
            self.state[name]["lib"] = 1


class Unloadable(fs_sparse.BaseDataSparsifier):
    """Deliberately broken: puts an arbitrary object in its state (not weights_only-safe)."""

    def update_mask(self, name: str, data: torch.Tensor, **kwargs: Any) -> None:
        self.get_mask(name)[0] = 0
        self.state[name]["thing"] = Unloadable


@pytest.mark.parametrize(("cls", "prop", "compare"), [
    (LibraryDependent, "masks", True),
    (ExtraState, "state", True),
    (Unloadable, "state_dict", False),
])
def test_diverging_subclass_is_caught(cls: type, prop: str, compare: bool) -> None:
    with pytest.raises(DropinCheckError, match=f"property '{prop}'"):
        check_dropin_sparsifier(cls, compare=compare, **FAST)()


def test_bad_class() -> None:
    with pytest.raises(TypeError, match="BaseDataSparsifier"):
        check_dropin_sparsifier(dict)
