"""``fsparse inspect CKPT``: per-tensor sparsity of a checkpoint, as a table and a bar chart."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import click
from rich.table import Table

from fsparse.cli import checkpoint_io as io
from fsparse.cli.console import human_bytes, stdout_console
from fsparse.cli.paths import NonEmptyPath, check_output

__all__ = [
    "PLOT_FORMATS",
    "TensorSparsity",
    "command",
    "plot_format",
    "plot_sparsity",
    "tensor_sparsity",
]

_MAX_BARS = 80
PLOT_FORMATS: dict[str, str] = {".png": "png", ".svg": "svg", ".pdf": "pdf"}


@dataclasses.dataclass(frozen=True)
class TensorSparsity:
    """Zero fraction of one floating-point tensor, and of its stored mask if it has one."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    numel: int
    itemsize: int
    zeros: float
    mask_sparsity: float | None


def tensor_sparsity(ckpt: io.Checkpoint) -> list[TensorSparsity]:
    """One row per floating-point tensor of ``ckpt``, in order; packed masks are read too.

    >>> import torch
    >>> ckpt = io.Checkpoint({"w": torch.tensor([0.0, 1.0]), "n": torch.tensor(3)}, "pt")
    >>> [(r.name, r.zeros) for r in tensor_sparsity(ckpt)]
    [('w', 0.5)]
    """
    weights, masks = io.split_masks(ckpt.tensors)
    rows = []
    for name, t in weights.items():
        if not t.is_floating_point():
            continue
        numel = max(t.numel(), 1)
        mask = masks.get(name)
        rows.append(
            TensorSparsity(
                name,
                tuple(t.shape),
                str(t.dtype).removeprefix("torch."),
                t.numel(),
                t.element_size(),
                1.0 - int(t.count_nonzero()) / numel,
                None if mask is None else 1.0 - int(mask.count_nonzero()) / numel,
            )
        )
    return rows


def plot_format(path: str | os.PathLike[str]) -> str:
    """The image format named by ``path``'s suffix (case-insensitive), or a ``ValueError``.

    >>> plot_format("chart.SVG")
    'svg'
    """
    suffix = Path(path).suffix.lower()
    if suffix not in PLOT_FORMATS:
        raise ValueError(
            f"--plot {path}: the file name must end in one of {', '.join(PLOT_FORMATS)} "
            f"(the image format follows it), got {suffix or 'no suffix'!r}"
        )
    return PLOT_FORMATS[suffix]


def plot_sparsity(rows: Sequence[TensorSparsity], path: str | os.PathLike[str], title: str) -> None:
    """A horizontal bar chart of zero fraction per tensor (the largest 80 if more).

    The format follows ``path``'s suffix (:data:`PLOT_FORMATS`); the file is written
    atomically (a temporary file beside it, then a rename).
    """
    fmt = plot_format(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = list(rows)
    if len(shown) > _MAX_BARS:
        keep = {r.name for r in sorted(shown, key=lambda r: -r.numel)[:_MAX_BARS]}
        shown = [r for r in shown if r.name in keep]
        title += f" (largest {_MAX_BARS} of {len(rows)} tensors)"
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.28 * max(len(shown), 1)))
    ax.barh([r.name for r in shown], [r.zeros for r in shown], color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("sparsity (fraction of zeros)")
    ax.set_title(title)
    for i, r in enumerate(shown):
        inside = r.zeros > 0.85  # no room right of the bar: write inside it
        x, ha, color = (
            (r.zeros - 0.01, "right", "white") if inside else (r.zeros + 0.01, "left", "black")
        )
        ax.text(x, i, f"{r.zeros:.1%}", va="center", ha=ha, color=color, fontsize=8)
    fig.tight_layout()
    try:
        with io.atomic_write(Path(path)) as tmp:
            fig.savefig(tmp, format=fmt, dpi=100)
    finally:
        plt.close(fig)


def _table(ckpt: Path, fmt: str, rows: Sequence[TensorSparsity]) -> Table:
    has_masks = any(r.mask_sparsity is not None for r in rows)
    table = Table(title=f"{ckpt} ({fmt})", title_justify="left")
    table.add_column("name", overflow="fold")
    table.add_column("shape")
    table.add_column("dtype")
    table.add_column("bytes", justify="right")
    table.add_column("sparsity", justify="right")
    if has_masks:
        table.add_column("mask", justify="right")
    for r in rows:
        cells = [
            r.name,
            "x".join(map(str, r.shape)) or "scalar",
            r.dtype,
            human_bytes(r.numel * r.itemsize),
            f"{r.zeros:.3f}",
        ]
        if has_masks:
            cells.append("-" if r.mask_sparsity is None else f"{r.mask_sparsity:.3f}")
        table.add_row(*cells)
    total = sum(r.numel for r in rows)
    zeros = sum(r.zeros * r.numel for r in rows)
    dtypes = {r.dtype for r in rows}
    table.add_section()
    table.add_row(
        f"all {len(rows)} floating-point tensors",
        f"{total:,} elements",
        dtypes.pop() if len(dtypes) == 1 else "mixed",
        human_bytes(sum(r.numel * r.itemsize for r in rows)),
        f"{zeros / max(total, 1):.3f}",
        *([""] if has_masks else []),
    )
    return table


@click.command("inspect", short_help="Show the sparsity of each tensor in a checkpoint.")
@click.argument("ckpt", metavar="CKPT", type=NonEmptyPath())
@click.option(
    "--plot",
    type=NonEmptyPath(),
    metavar="FILE.png|.svg|.pdf",
    help="Also draw a bar chart of sparsity per tensor; the suffix picks the format.",
)
@click.option("--force", is_flag=True, help="Replace the --plot file if it exists.")
def command(ckpt: Path, plot: Path | None, force: bool) -> None:
    """Print the sparsity (fraction of exact zeros) of each floating-point tensor in CKPT.

    CKPT is a .pt/.pth state dict (or a dict holding one) or a .safetensors file.
    Masks stored by 'fsparse sparsify --packed-masks' are shown in a 'mask' column.
    The --plot file is written atomically and is never CKPT itself.
    """
    if plot is not None:
        check_output(plot, "--plot", {"CKPT": ckpt}, force=force)
        try:
            plot_format(plot)
        except ValueError as err:
            raise click.UsageError(str(err)) from err
    loaded = io.load_checkpoint(ckpt)
    rows = tensor_sparsity(loaded)
    if not rows:
        raise ValueError(f"{ckpt}: holds no floating-point tensors")
    console = stdout_console()
    console.print(_table(ckpt, loaded.format, rows))
    if loaded.sparse_layout:
        names = ", ".join(loaded.sparse_layout[:5]) + (
            ", ..." if len(loaded.sparse_layout) > 5 else ""
        )
        console.print(
            f"not shown: {len(loaded.sparse_layout)} sparse-layout tensors ({names})",
            highlight=False,
            markup=False,
            style="dim",
        )
    if plot is not None:
        plot_sparsity(rows, plot, f"sparsity per tensor: {ckpt.name}")
        console.print(f"wrote {plot}", highlight=False, markup=False)
