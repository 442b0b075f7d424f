"""The command line does what a user means and says what it did (issue 11's UX items)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from fsparse.cli import cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def ok(*args: object) -> Result:
    result = run(*args)
    assert result.exit_code == 0, result.output + result.stderr
    return result


def usage_error(result: Result, *fragments: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.stderr)
    (line,) = result.stderr.strip().splitlines()
    assert "Traceback" not in line
    for fragment in fragments:
        assert fragment in line, line
    return line


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    path = tmp_path / "model.pt"
    torch.save({"fc.weight": torch.randn(8, 16, generator=g), "fc.bias": torch.zeros(8)}, path)
    return path


# ---------------------------------------------------------------- inspect --plot


def aliases(ckpt: Path) -> dict[str, Path]:
    """Every way of naming ``ckpt`` again: itself, a symlink, a hard link, a '..' path."""
    sub = ckpt.parent / "sub"
    sub.mkdir()
    link = ckpt.parent / "link.png"
    link.symlink_to(ckpt)
    hard = ckpt.parent / "hard.png"
    os.link(ckpt, hard)
    return {
        "same": ckpt,
        "symlink": link,
        "hard link": hard,
        "dotdot": sub / ".." / ckpt.name,
        "relative": Path(os.path.relpath(ckpt)),
    }


def test_plot_never_replaces_the_checkpoint_being_inspected(ckpt: Path) -> None:
    before = ckpt.read_bytes()
    for form, path in aliases(ckpt).items():
        for force in ([], ["--force"]):
            line = usage_error(run("inspect", ckpt, "--plot", path, *force), "--plot")
            assert "must differ from CKPT" in line or "exists" in line, (form, line)
            assert ckpt.read_bytes() == before, form
    assert torch.load(ckpt, weights_only=True)["fc.weight"].shape == (8, 16)


@pytest.mark.parametrize("form", ["same", "symlink", "hard link", "dotdot"])
def test_plot_alias_refused_with_force(form: str, ckpt: Path) -> None:
    path = aliases(ckpt)[form]
    usage_error(run("inspect", ckpt, "--plot", path, "--force"), "--plot must differ from CKPT")


def test_plot_refuses_an_existing_file_without_force(ckpt: Path, tmp_path: Path) -> None:
    existing = tmp_path / "chart.png"
    existing.write_bytes(b"keep me")
    usage_error(run("inspect", ckpt, "--plot", existing), "exists; pass --force")
    assert existing.read_bytes() == b"keep me"
    ok("inspect", ckpt, "--plot", existing, "--force")
    assert existing.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize(
    ("name", "magic"),
    [("c.png", PNG_MAGIC), ("c.PNG", PNG_MAGIC), ("c.svg", b"<?xml"), ("c.pdf", b"%PDF")],
)
def test_plot_format_follows_the_suffix(name: str, magic: bytes, ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / name
    ok("inspect", ckpt, "--plot", out)
    assert out.read_bytes()[: len(magic)] == magic
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model.pt", name])  # no temp


@pytest.mark.parametrize("name", ["c.jpg", "c", "c.pt", "c.png.bak"])
def test_plot_refuses_a_suffix_it_cannot_write(name: str, ckpt: Path, tmp_path: Path) -> None:
    usage_error(run("inspect", ckpt, "--plot", tmp_path / name), "--plot", ".png, .svg, .pdf")
    assert not (tmp_path / name).exists()


def test_plot_failure_leaves_no_file(
    ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import matplotlib.figure

    def broken(self: object, fname: object, **kwargs: object) -> None:
        Path(str(fname)).write_bytes(b"half an image")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
    existing = tmp_path / "c.png"
    existing.write_bytes(b"previous")
    result = run("inspect", ckpt, "--plot", existing, "--force")
    assert result.exit_code == 1 and "No space left" in result.stderr
    assert existing.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "model.pt"]


def test_inspect_total_row_puts_bytes_in_the_bytes_column(ckpt: Path) -> None:
    lines = ok("inspect", ckpt).output.splitlines()
    header = next(line for line in lines if "dtype" in line)
    cells = [c.strip() for c in header.split("┃")[1:-1]] or header.split()
    assert "bytes" in cells
    total = next(line for line in lines if line.lstrip("│ ").startswith("all 2"))
    cols = [c.strip() for c in total.split("│")[1:-1]]
    dtype, size = cols[cells.index("dtype")], cols[cells.index("bytes")]
    assert dtype == "float32" and size == "544 B", cols  # (128 + 8) * 4 bytes


# ---------------------------------------------------------------- paths


@pytest.mark.parametrize("position", ["IN", "OUT"])
def test_empty_path_is_refused_clearly(position: str, ckpt: Path, tmp_path: Path) -> None:
    args = ["", tmp_path / "o.pt"] if position == "IN" else [ckpt, ""]
    line = usage_error(run("sparsify", *args), position, "the path is empty")
    assert "exists" not in line
    usage_error(run("inspect", ""), "CKPT", "the path is empty")
    usage_error(run("inspect", ckpt, "--plot", ""), "--plot", "the path is empty")
