"""The command line does what a user means and says what it did (issue 11's UX items)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from cli_helpers import ok, run
from click.testing import Result

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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
def test_plot_format_follows_the_suffix(
    name: str, magic: bytes, ckpt: Path, tmp_path: Path
) -> None:
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
    assert result.exit_code == 1 and "no space left" in result.stderr.lower()
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


# ---------------------------------------------------------------- the 2+ dims rule


def bert_like(tmp_path: Path) -> Path:
    g = torch.Generator().manual_seed(1)
    sd = {
        "layer.0.attn.weight": torch.randn(16, 16, generator=g),
        "layer.0.attn.bias": torch.randn(16, generator=g),
        "layer.0.LayerNorm.weight": torch.randn(16, generator=g),
        "layer.0.LayerNorm.bias": torch.randn(16, generator=g),
    }
    path = tmp_path / "bert.pt"
    torch.save(sd, path)
    return path


def changed(src: Path, out: Path) -> set[str]:
    before, after = torch.load(src, weights_only=True), torch.load(out, weights_only=True)
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_help_per_tensor_example_keeps_layernorm_dense(tmp_path: Path) -> None:
    src, out, cfg = bert_like(tmp_path), tmp_path / "out.pt", tmp_path / "levels.yaml"
    cfg.write_text('"*.weight": {sparsity_level: 0.5}\n')  # the example in --help
    ok("sparsify", src, out, "--per-tensor", cfg, "-q")
    assert changed(src, out) == {"layer.0.attn.weight"}


def test_globs_leave_1d_tensors_dense_and_the_summary_says_so(tmp_path: Path) -> None:
    src, out = bert_like(tmp_path), tmp_path / "out.pt"
    text = " ".join(ok("sparsify", src, out, "--include", "layer.0.*").output.split())
    assert changed(src, out) == {"layer.0.attn.weight"}
    assert "2+ dims rule: 3 tensors" in text and "layer.0.LayerNorm.weight" in text
    assert "--allow-1d" in text


@pytest.mark.parametrize(
    ("flags", "want"),
    [
        (["--include", "layer.0.LayerNorm.weight"], {"layer.0.LayerNorm.weight"}),  # exact
        (
            ["--include", "*LayerNorm*", "--allow-1d"],
            {"layer.0.LayerNorm.weight", "layer.0.LayerNorm.bias"},
        ),
    ],
)
def test_1d_tensors_named_exactly_or_allowed(
    flags: list[str], want: set[str], tmp_path: Path
) -> None:
    src, out = bert_like(tmp_path), tmp_path / "out.pt"
    ok("sparsify", src, out, *flags, "-q")
    assert changed(src, out) == want


def test_per_tensor_exact_name_takes_a_1d_tensor(tmp_path: Path) -> None:
    src, out, cfg = bert_like(tmp_path), tmp_path / "out.pt", tmp_path / "levels.yaml"
    cfg.write_text('"*": {sparsity_level: 0.5}\n"layer.0.attn.bias": {sparsity_level: 0.75}\n')
    ok("sparsify", src, out, "--per-tensor", cfg, "-q")
    assert changed(src, out) == {"layer.0.attn.weight", "layer.0.attn.bias"}
    written = torch.load(out, weights_only=True)["layer.0.attn.bias"]
    assert int((written == 0).sum()) == 12  # 0.75 of the 4 blocks of 4


def test_only_1d_matches_is_an_error_that_names_the_rule(tmp_path: Path) -> None:
    result = run("sparsify", bert_like(tmp_path), tmp_path / "o.pt", "--include", "*LayerNorm*")
    assert result.exit_code == 1 and "no tensor selected" in result.stderr
    assert "fewer than 2 dims" in result.stderr and "--allow-1d" in result.stderr
    assert not (tmp_path / "o.pt").exists()


# ---------------------------------------------------------------- --per-tensor YAML


BILLION_LAUGHS = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{c}: &{c} [{', '.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")]
    + ['"*": {sparsity_level: 0.5}']
)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (BILLION_LAUGHS, "anchors and aliases are not allowed"),
        ("[" * 50000, "nests deeper than"),
        ("x: " + "[" * 50000 + "1" + "]" * 50000, "nests deeper than"),
        ("#" * (2 << 20), "at most"),  # oversize: read no further than the limit
    ],
)
def test_per_tensor_bombs_give_one_short_line(
    text: str, fragment: str, ckpt: Path, tmp_path: Path
) -> None:
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(text)
    result = run("sparsify", ckpt, tmp_path / "o.pt", "--per-tensor", cfg)
    assert result.exit_code == 1, result.output + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert fragment in line and "bomb.yaml" in line and len(line) < 400, line
    assert not (tmp_path / "o.pt").exists()


@pytest.mark.parametrize(
    "text",
    [
        "p" * 100_000 + "*: {sparsity_level: 0.5}\n",  # a huge pattern matching nothing
        "fc.*: {" + "k" * 100_000 + ": 1}\n",  # a huge unknown key
        "fc.*: {block: [" + ", ".join(["7"] * 20_000) + "]}\n",  # a huge bad value
        "fc.*: {block: " + "9" * 50_000 + "}\n",
        "fc.*: {sparsity_level: " + "x" * 100_000 + "}\n",
        "? [" + ", ".join(["1"] * 20_000) + "]\n: {sparsity_level: 0.5}\n",  # not a str pattern
    ],
)
def test_per_tensor_messages_are_bounded(text: str, ckpt: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "big.yaml"
    cfg.write_text(text)
    result = run("sparsify", ckpt, tmp_path / "o.pt", "--per-tensor", cfg)
    assert result.exit_code == 1, result.output + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert len(line) < 500 and "big.yaml" in line, line[:1000]


# ---------------------------------------------------------------- honest numbers


def test_zeros_column_counts_the_zeros_written(ckpt: Path, tmp_path: Path) -> None:
    from fsparse import make_config
    from fsparse.cli.sparsify import sparsify_checkpoint

    result = sparsify_checkpoint(
        ckpt, tmp_path / "o.pt", make_config(), include=["fc.*"], allow_1d=True
    )
    rows = {r.name: r for r in result.tensors}
    bias = rows["fc.bias"]  # zero-initialised: the mask takes half, the file is all zeros
    assert bias.achieved == 0.5 and bias.zeros == 1.0
    assert rows["fc.weight"].zeros == pytest.approx(0.5)
    written = torch.load(tmp_path / "o.pt", weights_only=True)
    for name, row in rows.items():
        assert row.zeros == 1.0 - written[name].count_nonzero().item() / written[name].numel()


def test_summary_labels_the_compact_size_as_what_it_is(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.pt"
    output = ok("sparsify", ckpt, out, "--include", "fc.bias", "--include", "fc.weight").output
    header = next(line for line in output.splitlines() if "name" in line and "shape" in line)
    assert "compressed" not in header and "as bitmap" in header and "zeros" in header
    text = " ".join(output.split())
    assert "OUT stores them dense" in text and "would take in a compact form" in text
    from fsparse.cli.console import human_bytes

    assert f"({human_bytes(out.stat().st_size)} written)" in text
    bias_row = next(line for line in output.splitlines() if "fc.bias" in line)
    assert "0.500" in bias_row and "1.000" in bias_row  # mask 0.5, zeros written 1.0


def test_zeros_per_block_zero_is_refused(ckpt: Path, tmp_path: Path) -> None:
    usage_error(
        run("sparsify", ckpt, tmp_path / "o.pt", "--zeros-per-block", "0"),
        "--zeros-per-block must be at least 1",
    )
    cfg = tmp_path / "levels.yaml"
    cfg.write_text("fc.*: {zeros_per_block: 0}\n")
    result = run("sparsify", ckpt, tmp_path / "o.pt", "--per-tensor", cfg)
    assert result.exit_code == 1 and "zeros_per_block must be at least 1" in result.stderr
    assert not (tmp_path / "o.pt").exists()


# ---------------------------------------------------------------- messages


def test_nan_error_names_the_tensor_once(tmp_path: Path) -> None:
    src = tmp_path / "nan.pt"
    weight = torch.randn(8, 16)
    weight[2, 3] = float("nan")
    torch.save({"fc.weight": weight}, src)
    result = run("sparsify", src, tmp_path / "o.pt")
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("fsparse: error: fc.weight: data contains NaN"), line
    assert "'t'" not in line


# ---------------------------------------------------------------- progress


def terminal_stderr(monkeypatch: pytest.MonkeyPatch, *args: object) -> list[str]:
    """What ``fsparse ARGS`` draws on a stderr that rich takes for a terminal, frame by frame."""

    monkeypatch.setenv("FORCE_COLOR", "1")
    result = run(*args)
    assert result.exit_code == 0, result.output + result.stderr
    plain = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", result.stderr)
    return [line.strip() for line in re.split(r"[\r\n]", plain) if line.strip()]


def test_progress_covers_load_sparsify_and_write_in_bytes(
    ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames = terminal_stderr(monkeypatch, "sparsify", ckpt, tmp_path / "o.pt")
    phases = [f.split()[0] for f in frames]
    order = [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p]
    assert order == ["loading", "sparsifying", "writing"], order
    sparsifying = [f for f in frames if f.startswith("sparsifying fc.weight")]
    assert sparsifying, frames
    for frame in (frames[0], sparsifying[-1], frames[-1]):
        assert re.search(r"/\d+(\.\d+)? (bytes|KiB|MiB)", frame), frame  # done/total in bytes
    widths = {f.index("━") for f in frames if "━" in f}
    assert len(widths) == 1, widths  # one column layout for every phase: the bar stays put


def test_no_progress_with_quiet_even_on_a_terminal(
    ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert terminal_stderr(monkeypatch, "sparsify", ckpt, tmp_path / "o.pt", "-q") == []


def test_inspect_names_the_sparse_tensors_it_does_not_show(tmp_path: Path) -> None:
    src = tmp_path / "sp.pt"
    torch.save({"w": torch.randn(8, 16), "adj": torch.eye(4).to_sparse()}, src)
    output = ok("inspect", src).output
    assert "not shown: 1 sparse-layout tensors (adj)" in " ".join(output.split())
