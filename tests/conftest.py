"""Shared fixtures."""

from __future__ import annotations

import pytest

from fsparse._src.engine import native


@pytest.fixture
def torch_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the engine's torch path, as where the native kernels were not built."""
    monkeypatch.setattr(native, "KERNELS", None)


@pytest.fixture
def native_path() -> None:
    """Require the native kernels (built by ``make test``'s install)."""
    if native.KERNELS is None:
        pytest.fail("the native kernels were not built (see setup.py)")
