"""Sharded implementations of the engine's entry points, by tensor kind.

The engine computes masks of tensors that one process holds whole. A tensor
kind spread over processes (today one: ``torch.distributed.tensor.DTensor``)
is served by implementations that a *provider* module registers here with
:func:`register`. The engine names each provider by its module name only and
imports it (``importlib``) the first time it meets such a tensor, so:

* ``import fsparse`` stays light (no ``torch.distributed.tensor``);
* the engine has no import edge to the provider (no cycle: the provider,
  ``fsparse.distributed``, is built on the engine);
* a tensor is recognised without importing anything: a DTensor can exist only
  once ``torch.distributed.tensor`` is in ``sys.modules``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["implementation", "register", "sharded_kind"]

DTENSOR = "DTensor"
# kind -> the module that registers that kind's implementations when imported
PROVIDERS: dict[str, str] = {DTENSOR: "fsparse.distributed"}
_IMPLEMENTATIONS: dict[tuple[str, str], Callable[..., Any]] = {}


def sharded_kind(*values: object) -> str | None:
    """``"DTensor"`` if any of ``values`` is a DTensor, else ``None``."""
    module = sys.modules.get("torch.distributed.tensor")
    if module is None:
        return None
    cls = module.DTensor
    for value in values:
        if isinstance(value, cls):
            return DTENSOR
    return None


def register(kind: str, name: str, fn: Callable[..., Any]) -> None:
    """Make ``fn`` the implementation of engine entry point ``name`` for tensors of ``kind``."""
    _IMPLEMENTATIONS[(kind, name)] = fn


def implementation(kind: str, name: str) -> Callable[..., Any]:
    """The registered implementation of ``name`` for ``kind`` (importing its provider once)."""
    if (kind, name) not in _IMPLEMENTATIONS:
        importlib.import_module(PROVIDERS[kind])
    try:
        return _IMPLEMENTATIONS[(kind, name)]
    except KeyError:
        raise TypeError(f"{name} does not support {kind} inputs") from None
