"""Packaging metadata: an SPDX license string, and nothing that pulls CUDA builds."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_license_is_an_spdx_string_with_a_setuptools_that_reads_it() -> None:
    # a `{ text = ... }` table makes setuptools >= 77 print deprecation banners on every install
    assert PYPROJECT["project"]["license"] == "BSD-3-Clause"
    (setuptools,) = [r for r in PYPROJECT["build-system"]["requires"] if "setuptools" in r]
    match = re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", setuptools.replace(" ", ""))
    assert match is not None and int(match[1]) >= 77, setuptools  # PEP 639 support


def test_the_installed_setuptools_reads_spdx_licenses() -> None:
    setuptools = pytest.importorskip("setuptools")
    assert int(setuptools.__version__.split(".")[0]) >= 77


def test_nothing_uses_torchvision() -> None:
    constraints = (ROOT / "constraints.txt").read_text()
    pins = [line for line in constraints.splitlines() if line and not line.startswith("#")]
    assert not any(line.startswith("torchvision") for line in pins)
    assert "torchvision" in constraints  # the comment says why it is not pinned
    deps = str(PYPROJECT["project"].get("dependencies", [])) + str(
        PYPROJECT["project"].get("optional-dependencies", {})
    )
    assert "torchvision" not in deps
    sources = [*ROOT.glob("fsparse/**/*.py"), *ROOT.glob("examples/**/*.py")]
    sources += [*ROOT.glob("docs/**/*.md"), ROOT / "README.md"]
    users = [p for p in sources if re.search(r"\b(import|from)\s+torchvision\b", p.read_text())]
    assert users == [], users


def test_the_sdist_carries_the_native_kernel_sources(tmp_path: Path) -> None:
    """setup.py builds fsparse/_src/engine/kernels/*.c: an sdist must carry them."""
    import subprocess
    import tarfile

    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path),
                    "--formats=gztar"], cwd=root, check=True, capture_output=True, timeout=300)
    (archive,) = tmp_path.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        names = {Path(n).name for n in tar.getnames() if "/engine/kernels/" in n}
    sources = {p.name for p in (root / "fsparse/_src/engine/kernels").iterdir()}
    assert sources and sources <= names
