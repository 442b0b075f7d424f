"""``check_dropin_sparsifier``: a user's torch.ao-style sparsifier subclass, under both libraries.

The class subclasses fsparse's ``BaseDataSparsifier`` or ``DataNormSparsifier``
(the torch.ao prefix changed to ``fsparse``). The check builds the same class on
torch.ao's base (the class's own attributes copied onto it; pass ``ao_cls`` for a
class whose methods call zero-argument ``super()``), feeds both the same
generated 2-D data (no size-1 dims, where torch.ao's masks have the wrong shape)
for a few steps, and compares masks, ``data_groups``, the per-entry state and the
state dicts after every step. Without torch.ao it still runs the fsparse class
and checks that its masks are bool-valued, of the data's shape, and that its state
dict loads back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import importlib.util
import io
import warnings
from typing import Any

import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import FlakyFailure

from fsparse import data_sparsifier as fs_sparse
from fsparse.testing.strategies import tensors

__all__ = ["DropinCheckError", "check_dropin_sparsifier", "torch_ao_twin"]

_PHASES = tuple(p for p in Phase if p != Phase.explain)
_SKIP = {"__dict__", "__weakref__", "__module__", "__qualname__", "__doc__"}


class DropinCheckError(AssertionError):
    """fsparse and torch.ao disagree on the class (or a property failed); the message says where."""


def _fail(prop: str, detail: str) -> DropinCheckError:
    return DropinCheckError(f"check_dropin_sparsifier: property '{prop}' failed: {detail}")


def torch_ao_available() -> bool:
    return importlib.util.find_spec("torch.ao.pruning._experimental.data_sparsifier") is not None


def torch_ao_twin(cls: type) -> type:
    """``cls`` rebuilt on torch.ao's base class: the same own attributes, torch.ao's parent."""
    from torch.ao.pruning._experimental import data_sparsifier as ao_sparse
    pairs = [(fs_sparse.DataNormSparsifier, ao_sparse.DataNormSparsifier),
             (fs_sparse.BaseDataSparsifier, ao_sparse.BaseDataSparsifier)]
    for ours, theirs in pairs:
        if issubclass(cls, ours):
            own: dict[str, Any] = {}
            for klass in cls.__mro__:
                if klass is ours:
                    break
                own = {**{k: v for k, v in vars(klass).items() if k not in _SKIP}, **own}
            return type(f"Ao{cls.__name__}", (theirs,), own)
    raise TypeError(f"cls must subclass fsparse.data_sparsifier.BaseDataSparsifier, got "
                    f"{cls.__name__}")


def _dense_mask(sparsifier: Any, name: str) -> torch.Tensor:
    return sparsifier.get_mask(name).detach()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        a = a.to_dense() if a.is_sparse else a
        b = b.to_dense() if b.is_sparse else b
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def _compare(ours: Any, ref: Any, t: int) -> None:
    for name in ours.data_groups:
        if not _same(_dense_mask(ours, name), _dense_mask(ref, name)):
            raise _fail("masks", f"after step {t}: mask {name!r} differs from torch.ao's")
    if not _same(dict(ours.data_groups), dict(ref.data_groups)):
        raise _fail("data_groups", f"after step {t}: {dict(ours.data_groups)} vs torch.ao's "
                    f"{dict(ref.data_groups)}")
    for name in ours.data_groups:
        extras = {k: v for k, v in ours.state[name].items() if k != "mask"}
        if not _same(extras, {k: v for k, v in ref.state[name].items() if k != "mask"}):
            raise _fail("state", f"after step {t}: state[{name!r}] differs from torch.ao's")
    if not _same(ours.state_dict(), ref.state_dict()):
        raise _fail("state_dict", f"after step {t}: state_dict() differs from torch.ao's")


def _own_checks(ours: Any, data: dict[str, torch.Tensor], t: int) -> None:
    for name, tensor in data.items():
        mask = _dense_mask(ours, name)
        if mask.shape != tensor.shape or not bool(((mask == 0) | (mask == 1)).all()):
            raise _fail("masks", f"after step {t}: mask {name!r} is not a 0/1 mask of the "
                        f"data's shape {tuple(tensor.shape)}")
    buffer = io.BytesIO()
    torch.save(ours.state_dict(), buffer)
    buffer.seek(0)
    try:
        torch.load(buffer, weights_only=True)
    except Exception as error:
        raise _fail("state_dict", f"after step {t}: does not load with weights_only=True: "
                    f"{type(error).__name__}") from error


def check_dropin_sparsifier(cls: type, *, kwargs: dict[str, Any] | None = None,
                            ao_cls: type | None = None, steps: int = 3,
                            data: st.SearchStrategy[torch.Tensor] | None = None,
                            max_entries: int = 3, compare: bool | None = None,
                            max_examples: int = 10,
                            hypothesis_settings: settings | None = None) -> Any:
    """A property test of the drop-in subclass ``cls`` (see the module docstring).

    ``kwargs`` go to both constructors; ``data`` draws each entry's tensor (default:
    2-D fp32 without size-1 dims). ``compare`` defaults to "torch.ao is installed".
    Call the returned function to run it; failures raise :class:`DropinCheckError`.
    """
    if not isinstance(cls, type) or not issubclass(cls, fs_sparse.BaseDataSparsifier):
        raise TypeError("cls must be a subclass of fsparse.data_sparsifier.BaseDataSparsifier")
    use_ao = torch_ao_available() if compare is None else compare
    twin = (ao_cls or torch_ao_twin(cls)) if use_ao else None
    options = dict(kwargs or {})
    strategy = data if data is not None else tensors(
        shape=st.tuples(st.integers(2, 8), st.integers(2, 8)), dtypes=(torch.float32,),
        ties=False, zeros=False, extremes=False, contiguous=True)
    chosen = hypothesis_settings or settings(
        max_examples=max_examples, deadline=None, database=None, report_multiple_bugs=False,
        phases=_PHASES, suppress_health_check=[HealthCheck.too_slow])

    @chosen
    @given(st.lists(strategy, min_size=1, max_size=max_entries))
    def property_test(drawn: list[torch.Tensor]) -> None:
        entries = {f"t{i}": x for i, x in enumerate(drawn)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = cls(**options)
            ref = twin(**options) if twin is not None else None
            for name, tensor in entries.items():
                ours.add_data(name, tensor.clone())
                if ref is not None:
                    ref.add_data(name, tensor.clone())
            for t in range(steps):
                ours.step()
                _own_checks(ours, entries, t)
                if ref is not None:
                    ref.step()
                    _compare(ours, ref, t)

    def run() -> None:
        try:
            property_test()
        except FlakyFailure as error:
            found = [e for e in error.exceptions if isinstance(e, DropinCheckError)]
            if not found:
                raise
            raise DropinCheckError(f"{found[0]} (the failure did not reproduce on replay)"
                                   ) from error

    run.__name__ = f"test_dropin_{cls.__name__}"
    run.__qualname__ = run.__name__
    return run
