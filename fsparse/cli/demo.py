"""``fsparse demo``: train a small DLRM-style recommender sparse, and write ``demo-report/``."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import click
import torch

from fsparse.cli.console import human_bytes, stdout_console
from fsparse.cli.demo_model import QUICK, DemoConfig
from fsparse.cli.demo_run import DemoResult, run_demo

__all__ = ["PLOTS", "command", "fsparse_command", "write_plots"]

PLOTS: tuple[str, ...] = ("schedule.png", "layer_sparsity.png", "size_vs_sparsity.png")


def _plot_schedule(result: DemoResult, path: Path) -> None:
    import matplotlib.pyplot as plt

    h = result.history
    epochs = [r["epoch"] for r in h] + [result.config.epochs]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label, color in (
        ("table", "all tables", "tab:blue"),
        ("mlp", "MLP weights", "tab:orange"),
    ):
        targets = [r[f"{key}_target"] for r in h]
        ax.step(
            epochs, [*targets, targets[-1]], where="post", color=color, label=f"{label}: target"
        )
        ax.plot(
            epochs[:-1],
            [r[f"{key}_sparsity"] for r in h],
            "o",
            color=color,
            ms=4,
            label=f"{label}: achieved",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("sparsity")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Sparsity schedule (cubic, masks recomputed on each marker)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_layers(result: DemoResult, path: Path) -> None:
    import matplotlib.pyplot as plt

    names = list(result.layer_sparsity)
    shapes = {k: "x".join(map(str, v.shape)) for k, v in result.dense_state_dict.items()}
    labels = [f"{n} ({shapes[n]})" for n in names]
    fig, ax = plt.subplots(figsize=(7, 1.0 + 0.22 * len(names)))
    ax.barh(labels, [result.layer_sparsity[n] for n in names], color="tab:blue", label="achieved")
    ax.scatter(
        [result.layer_targets[n] for n in names],
        labels,
        marker="|",
        s=120,
        color="black",
        label="target",
        zorder=3,
    )
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("sparsity")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title("Per-layer sparsity after training (small tables are left dense)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_sizes(result: DemoResult, path: Path) -> None:
    import matplotlib.pyplot as plt

    levels = [r["level"] for r in result.sizes]
    fig, (ax_size, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (
        ("dense_zip_bytes", "dense tensors, zipped (torch.ao's method)"),
        ("bitmap_zip_bytes", "packed mask + values, zipped"),
    ):
        ax_size.plot(levels, [r[key] / 2**20 for r in result.sizes], "o-", label=label)
    ax_size.set_xlabel("embedding-table sparsity level (one-shot)")
    ax_size.set_ylabel("checkpoint size (MiB)")
    ax_size.set_ylim(bottom=0)
    ax_size.set_title("Compressed checkpoint size")
    ax_size.legend(fontsize=8)
    ax_size.grid(alpha=0.3)
    ax_acc.plot(
        levels,
        [r["accuracy"] for r in result.sizes],
        "o-",
        color="tab:green",
        label="one-shot, all tables",
    )
    ax_acc.axhline(result.dense_accuracy, color="gray", ls="--", label="dense")
    ax_acc.axhline(result.base_rate, color="red", ls=":", label="always 'no click'")
    ax_acc.set_xlabel("embedding-table sparsity level (one-shot)")
    ax_acc.set_ylabel("test accuracy")
    ax_acc.set_title("Accuracy without retraining")
    ax_acc.legend(fontsize=8)
    ax_acc.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_plots(result: DemoResult, out_dir: Path) -> list[Path]:
    """Draw the three report PNGs into ``out_dir``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    paths = [out_dir / name for name in PLOTS]
    _plot_schedule(result, paths[0])
    _plot_layers(result, paths[1])
    _plot_sizes(result, paths[2])
    return paths


def _summary(result: DemoResult) -> dict[str, object]:
    return {
        "config": dataclasses.asdict(result.config),
        "accuracy": {
            "dense": result.dense_accuracy,
            "training_aware_sparse": result.sparse_accuracy,
            "one_shot_sparse": result.one_shot_accuracy,
            "always_no_click": result.base_rate,
        },
        "layer_sparsity": result.layer_sparsity,
        "layer_targets": result.layer_targets,
        "schedule": result.history,
        "size_vs_sparsity": result.sizes,
    }


def _print_results(result: DemoResult) -> None:
    from rich.table import Table

    console = stdout_console()
    layers = Table(title="Per-layer sparsity (training-aware)", title_justify="left")
    for col in ("layer", "shape", "target", "achieved"):
        layers.add_column(col, justify="left" if col in ("layer", "shape") else "right")
    shapes = {k: tuple(v.shape) for k, v in result.dense_state_dict.items()}
    for name, level in result.layer_sparsity.items():
        layers.add_row(
            name,
            "x".join(map(str, shapes[name])),
            f"{result.layer_targets[name]:.3f}",
            f"{level:.3f}",
        )
    console.print(layers)

    acc = Table(title="Test accuracy", title_justify="left")
    acc.add_column("model")
    acc.add_column("accuracy", justify="right")
    acc.add_column("vs dense", justify="right")
    for label, value in (
        ("dense", result.dense_accuracy),
        ("sparse, training-aware (cubic schedule)", result.sparse_accuracy),
        ("sparse, one-shot from the dense model", result.one_shot_accuracy),
        ("always 'no click' (base rate)", result.base_rate),
    ):
        acc.add_row(label, f"{value:.4f}", f"{value - result.dense_accuracy:+.4f}")
    console.print(acc)

    sizes = Table(
        title="Zipped checkpoint size vs embedding-table sparsity (one-shot, all tables)",
        title_justify="left",
    )
    for col in ("level", "dense+zip", "ratio", "mask+values+zip", "ratio", "accuracy"):
        sizes.add_column(col, justify="right")
    dense0, bitmap0 = result.sizes[0]["dense_zip_bytes"], result.sizes[0]["bitmap_zip_bytes"]
    for r in result.sizes:
        sizes.add_row(
            f"{r['level']:.2f}",
            human_bytes(r["dense_zip_bytes"]),
            f"{r['dense_zip_bytes'] / dense0:.2f}",
            human_bytes(r["bitmap_zip_bytes"]),
            f"{r['bitmap_zip_bytes'] / bitmap0:.2f}",
            f"{r['accuracy']:.4f}",
        )
    console.print(sizes)
    full = result.sizes[-1]
    if full["level"] == 1.0:
        before, after = human_bytes(dense0), human_bytes(full["dense_zip_bytes"])
        console.print(
            f"At full table sparsity the zipped checkpoint is "
            f"{full['dense_zip_bytes'] / dense0:.2f} of its dense size ({before} -> {after}); "
            "torch.ao's DLRM benchmark, same method: 1.9 GB -> 150 MB (0.08).",
            highlight=False,
        )


def _shown(path: Path) -> str:
    """``path`` as a shell word: relative to the current directory when inside it."""
    try:
        path = path.absolute().relative_to(Path.cwd())
    except ValueError:
        pass
    return shlex.quote(str(path))


def fsparse_command() -> str:
    """How to run this installation's ``fsparse`` from the current shell, as a shell word.

    ``fsparse`` when that is on ``PATH`` and is the console script beside this Python;
    else that script's path (``.venv/bin/fsparse`` after ``make demo``); else
    ``PYTHON -m fsparse``.
    """
    script = Path(sys.executable).with_name("fsparse")
    if not script.is_file():
        return f"{_shown(Path(sys.executable))} -m fsparse"
    found = shutil.which("fsparse")
    if found is not None and os.path.samefile(found, script):
        return "fsparse"
    return _shown(script)


def _print_next_steps(dense_ckpt: Path, sparse_ckpt: Path, out_dir: Path) -> None:
    """Commands to try next, runnable as printed (copy-pasted into this shell)."""
    console = stdout_console()
    exe = fsparse_command()
    lines = [
        f"next: {exe} inspect {_shown(sparse_ckpt)}",
        f"      {exe} sparsify {_shown(dense_ckpt)} {_shown(out_dir / 'tables.safetensors')} "
        f"--include 'tables.*' --sparsity-level 0.9 --masks-file "
        f"{_shown(out_dir / 'tables.masks.safetensors')} --force",
    ]
    activate = Path(sys.prefix) / "bin" / "activate"
    if exe != "fsparse" and sys.prefix != sys.base_prefix and activate.is_file():
        lines.append(f"      (or run '. {_shown(activate)}' once, then plain 'fsparse ...')")
    for line in lines:  # no markup, no wrapping: what is printed is what runs
        console.print(line, markup=False, highlight=False, soft_wrap=True)


@click.command("demo", short_help="Train a small recommender sparse; write demo-report/.")
@click.option("--quick", is_flag=True, help="A tiny run (a few seconds), for smoke tests.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("demo-report"),
    show_default=True,
    help="Report directory (created if missing).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for data and weights.")
def command(quick: bool, out_dir: Path, seed: int) -> None:
    """Train a small DLRM-style recommender with training-aware sparsification.

    Synthetic Criteo-shaped data (13 dense and 26 categorical features) is made
    in process; nothing is downloaded. Prints per-layer sparsity, accuracy
    against the dense model and the zipped checkpoint size against sparsity
    level, and writes PNG plots, summary.json and both checkpoints to OUT.
    """
    start = time.perf_counter()
    cfg = dataclasses.replace(QUICK if quick else DemoConfig(), seed=seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    console = stdout_console()
    params = sum(cfg.table_sizes) * cfg.dim
    console.print(
        f"[bold]fsparse demo[/bold]: DLRM-style model, {cfg.n_tables} EmbeddingBag tables "
        f"({min(cfg.table_sizes)}..{max(cfg.table_sizes)} rows x {cfg.dim}, {params:,} table "
        f"parameters) + bottom/top MLPs; synthetic Criteo-shaped data, {cfg.n_train:,} train / "
        f"{cfg.n_test:,} test samples"
    )
    result = run_demo(cfg, log=lambda msg: console.print(msg, markup=False, highlight=False))
    _print_results(result)
    (out_dir / "summary.json").write_text(json.dumps(_summary(result), indent=2))
    dense_ckpt, sparse_ckpt = out_dir / "dlrm_dense.pt", out_dir / "dlrm_sparse.pt"
    torch.save(result.dense_state_dict, dense_ckpt)
    torch.save(result.sparse_state_dict, sparse_ckpt)
    paths = write_plots(result, out_dir)
    console.print(f"report: {', '.join(str(p) for p in paths)}, {out_dir / 'summary.json'}")
    console.print(f"checkpoints: {dense_ckpt} (dense), {sparse_ckpt} (trained sparse)")
    _print_next_steps(dense_ckpt, sparse_ckpt, out_dir)
    console.print(f"done in {time.perf_counter() - start:.1f}s")
