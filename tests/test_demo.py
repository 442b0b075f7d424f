"""``fsparse demo --quick`` end to end: report files exist, PNGs are valid, numbers are sane."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
import torch
from click.testing import CliRunner

from fsparse.cli import cli
from fsparse.cli.demo import PLOTS
from fsparse.cli.demo_model import QUICK, DemoConfig, make_data

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "demo-report"
    result = CliRunner().invoke(cli, ["demo", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output + result.stderr
    return out, result.output


def test_report_files_are_valid_pngs(report: tuple[Path, str]) -> None:
    out, _ = report
    for name in PLOTS:
        path = out / name
        assert path.read_bytes()[:8] == PNG_MAGIC, name
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] >= 300 and image.shape[1] >= 500, name
        assert image[..., :3].std() > 0.05, f"{name} looks blank"


def test_summary_numbers(report: tuple[Path, str]) -> None:
    out, output = report
    summary = json.loads((out / "summary.json").read_text())
    acc = summary["accuracy"]
    assert all(0.0 <= v <= 1.0 for v in acc.values())
    # per-layer sparsity reaches each target, up to block rounding and partial edge blocks
    # (a 32x13 weight in 1x4 blocks has a 1-wide last block in every row)
    for name, target in summary["layer_targets"].items():
        assert summary["layer_sparsity"][name] == pytest.approx(target, abs=0.05), name
    assert any(t > 0.5 for t in summary["layer_targets"].values())
    # the schedule only rises, and ends at the targets
    targets = [h["table_target"] for h in summary["schedule"]]
    assert targets == sorted(targets) and targets[0] == 0.0
    assert summary["schedule"][-1]["mlp_target"] == pytest.approx(QUICK.mlp_target)
    # compressed size falls as the sparsity level rises; bitmap storage beats dense at 90%+
    sizes = summary["size_vs_sparsity"]
    assert [r["level"] for r in sizes] == list(QUICK.size_levels)
    dense = [r["dense_zip_bytes"] for r in sizes]
    assert dense == sorted(dense, reverse=True) and dense[-1] < 0.5 * dense[0]
    assert all(r["bitmap_zip_bytes"] < r["dense_zip_bytes"] for r in sizes if r["level"] >= 0.9)
    for text in ("Per-layer sparsity", "Test accuracy", "dense+zip", "done in"):
        assert text in output


def test_trained_sparse_checkpoint_is_sparse(report: tuple[Path, str]) -> None:
    out, _ = report
    summary = json.loads((out / "summary.json").read_text())
    sparse = torch.load(out / "dlrm_sparse.pt", weights_only=True)
    dense = torch.load(out / "dlrm_dense.pt", weights_only=True)
    assert sparse.keys() == dense.keys()
    for name, level in summary["layer_sparsity"].items():
        zeros = 1.0 - sparse[name].count_nonzero().item() / sparse[name].numel()
        assert zeros >= level - 1e-6, name  # the saved weights really hold the masks' zeros
    result = CliRunner().invoke(cli, ["inspect", str(out / "dlrm_sparse.pt")])
    assert result.exit_code == 0 and "tables.0.weight" in result.output


def next_commands(output: str) -> list[str]:
    """The commands the demo's ``next:`` hint prints, one per line."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("next: "))
    commands = [lines[start].removeprefix("next: ").strip()]
    for line in lines[start + 1 :]:
        if not line.startswith("      ") or line.strip().startswith("(or run"):
            break
        commands.append(line.strip())
    return commands


def fresh_shell_env() -> dict[str, str]:
    """The environment of a new shell: the venv is not activated, its bin not on PATH."""
    venv_bin = str(Path(sys.prefix) / "bin")
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return {**env, "PATH": os.pathsep.join(path or ["/usr/bin", "/bin"])}


def test_next_hints_run_as_printed_in_a_fresh_shell(report: tuple[Path, str]) -> None:
    out, output = report
    commands = next_commands(output)
    assert [c.split()[1] for c in commands] == ["inspect", "sparsify"]
    for command in commands:
        done = subprocess.run(
            ["bash", "-c", command],
            env=fresh_shell_env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
    assert (out / "tables.safetensors").is_file()
    activate = re.search(r"\(or run '(\. [^']+)' once", output)
    if activate is not None:  # the alternative it offers works too
        done = subprocess.run(
            ["bash", "-c", f"{activate[1]} && fsparse --version"],
            env=fresh_shell_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0 and "fsparse" in done.stdout, done.stderr


def test_progress_lines_give_durations(report: tuple[Path, str]) -> None:
    _, output = report
    for phase in ("trained the dense model", "trained the sparse model", "measured the"):
        assert re.search(rf"^{phase}.* in \d+\.\ds$", output, flags=re.M), phase
    assert not re.search(r"^\s*\d+\.\ds ", output, flags=re.M)  # no start-time stamps


def test_data_is_seeded_and_criteo_shaped() -> None:
    cfg = DemoConfig(n_train=256, n_test=64, max_rows=500)
    (d1, i1, y1), _ = make_data(cfg)
    (d2, i2, y2), _ = make_data(cfg)
    assert torch.equal(d1, d2) and torch.equal(i1, i2) and torch.equal(y1, y2)
    assert d1.shape == (256, 13) and i1.shape == (256, 26)
    assert bool((i1 < torch.tensor(cfg.table_sizes)).all()) and bool((i1 >= 0).all())
    assert 0.05 < y1.mean().item() < 0.6  # clicks are the minority, as in Criteo
    (d3, _, _), _ = make_data(DemoConfig(n_train=256, n_test=64, max_rows=500, seed=1))
    assert not torch.equal(d1, d3)
