"""``fsparse sparsify IN OUT``: the command line over :mod:`fsparse.cli.sparsify` (options,
help, notes and the summary table)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import click

from fsparse._src.config import NORMS, make_config
from fsparse.cli import checkpoint_io as io
from fsparse.cli.console import human_bytes, stderr_console, stdout_console
from fsparse.cli.paths import NonEmptyPath, check_output
from fsparse.cli.selection import load_per_tensor, parse_block
from fsparse.cli.sparsify import SparsifyResult, sparsify_checkpoint

__all__ = ["command"]


def _names(names: Sequence[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def _print_summary(result: SparsifyResult, dst: Path) -> None:
    from rich.table import Table

    table = Table(title=f"fsparse sparsify -> {dst}", title_justify="left")
    table.add_column("name", overflow="fold")
    table.add_column("shape")
    for col in ("target", "mask", "zeros", "bytes", "as bitmap"):
        table.add_column(col, justify="right")
    for r in result.tensors:
        table.add_row(
            r.name,
            "x".join(map(str, r.shape)) or "scalar",
            f"{r.target:.3f}",
            f"{r.achieved:.3f}",
            f"{r.zeros:.3f}",
            human_bytes(r.dense_bytes),
            human_bytes(r.compressed_bytes),
        )
    table.add_section()
    table.add_row(
        "total (all tensors)",
        "",
        "",
        "",
        "",
        human_bytes(result.total_dense_bytes),
        human_bytes(result.total_compressed_bytes),
    )
    console = stdout_console()
    console.print(table)
    written = f" ({human_bytes(dst.stat().st_size)} written)" if dst.is_file() else ""
    notes = [
        f"{len(result.tensors)} tensors sparsified, {len(result.passed_through)} entries passed "
        "through unchanged.",
        "mask = the fraction the mask zeroes; zeros = the exact zeros in the tensor written "
        "(zeros already in the input count too).",
        "as bitmap = the size the tensors would take in a compact form (a 1-bit-per-element "
        f"mask plus the nonzero values, or dense if smaller); OUT stores them dense{written}.",
    ]
    if result.below_2d:
        notes.append(
            f"left dense by the 2+ dims rule: {len(result.below_2d)} tensors with fewer than 2 "
            f"dims that a glob matched ({_names(result.below_2d)}); name them exactly or pass "
            "--allow-1d."
        )
    for note in notes:
        console.print(note, highlight=False, style="dim")


_EPILOG = """\b
Example --per-tensor file (later entries win):
  "*.weight": {sparsity_level: 0.5}
  "emb.*":    {sparsity_level: 0.9, block: 1x4, norm: L2}
  # a glob never takes a 1-D tensor (LayerNorm weights, biases): see --allow-1d
\b
Masks: prefer --masks-file MASKS.safetensors, which keeps OUT loadable by
load_state_dict(strict=True) and from_pretrained. Read the masks back with:
  from fsparse.cli.checkpoint_io import load_masks_file
  masks = load_masks_file("MASKS.safetensors")   # {name: bool mask}
Masks stored inside OUT by --packed-masks come back with:
  from fsparse.cli.checkpoint_io import load_checkpoint, split_masks
  weights, masks = split_masks(load_checkpoint(OUT).tensors)
\b
Tied weights (names sharing storage, e.g. BERT's word embeddings and decoder)
are one tensor: sparsified once, so every name must get the same rules. A .pt
OUT keeps them shared. safetensors has no aliases: as safetensors.torch.save_model
does, a .safetensors OUT keeps one name (the first in sorted order), drops the
others and records each as 'dropped name: kept name' in its metadata;
from_pretrained and safetensors.torch.load_model tie them again.
\b
Sharded Hugging Face checkpoints: IN may be a directory holding
model.safetensors.index.json or pytorch_model.bin.index.json; OUT is then a
directory (written whole, then renamed into place) with every shard
sparsified, a new index and the other files copied. A pattern must match in
at least one shard. Shards are processed one at a time.
\b
Temporary files: OUT is written into one hidden file beside it,
.OUT.fsparse-HOST-PID-XXXXXXXX.tmp (.tmpdir for a directory). SIGINT, SIGTERM
and SIGHUP remove it and exit with 128 + the signal number; one left by SIGKILL
is removed by the next run writing into that directory.
"""


@click.command(
    "sparsify", short_help="Sparsify a .pt/.pth/.safetensors checkpoint.", epilog=_EPILOG
)
@click.argument("src", metavar="IN", type=NonEmptyPath())
@click.argument("dst", metavar="OUT", type=NonEmptyPath())
@click.option(
    "--sparsity-level",
    type=click.FloatRange(0.0, 1.0),
    default=0.5,
    show_default=True,
    help="Fraction of blocks to zero in each selected tensor.",
)
@click.option("--block", default="1x4", show_default=True, help="Block shape HxW.")
@click.option(
    "--zeros-per-block",
    type=int,
    default=None,
    help="Zeros inside each selected block, at least 1  [default: the whole block]",
)
@click.option(
    "--norm",
    type=click.Choice(NORMS),
    default="L1",
    show_default=True,
    help="Block score: mean |x| (L1) or mean x^2 (L2).",
)
@click.option(
    "--include",
    multiple=True,
    metavar="GLOB",
    help="Sparsify matching tensors (repeatable)  [default: all with 2+ dims]",
)
@click.option(
    "--allow-1d",
    is_flag=True,
    help="Let globs select tensors with fewer than 2 dims (biases, norm scales) too.",
)
@click.option(
    "--exclude", multiple=True, metavar="GLOB", help="Never sparsify matching tensors (repeatable)."
)
@click.option(
    "--per-tensor",
    type=NonEmptyPath(),
    metavar="CONFIG.yaml",
    help="YAML mapping of GLOB -> {sparsity_level, block, zeros_per_block, norm} "
    "(plain YAML: no anchors or aliases, at most 1 MiB).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(io.FORMATS),
    help="Output format  [default: safetensors for a .safetensors OUT, else pt]",
)
@click.option(
    "--packed-masks",
    is_flag=True,
    help=f"Also store each mask, bit-packed, in OUT as NAME{io.MASK_SUFFIX} (extra keys: "
    "strict loading fails; prefer --masks-file).",
)
@click.option(
    "--masks-file",
    type=NonEmptyPath(),
    metavar="MASKS.safetensors",
    help="Write the bit-packed masks to this file of their own (.safetensors, or .pt), "
    "together with OUT. Recommended.",
)
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or table.")
def command(
    src: Path,
    dst: Path,
    sparsity_level: float,
    block: str,
    zeros_per_block: int | None,
    norm: str,
    include: tuple[str, ...],
    allow_1d: bool,
    exclude: tuple[str, ...],
    per_tensor: Path | None,
    fmt: str | None,
    packed_masks: bool,
    masks_file: Path | None,
    force: bool,
    quiet: bool,
) -> None:
    """Sparsify the tensors of checkpoint IN and write OUT; IN is never modified.

    IN is a .pt/.pth state dict (or a dict holding one under 'state_dict',
    'model', ...) or a .safetensors file, loaded with torch.load(weights_only=True).
    OUT is written atomically (a temporary file beside it, then a rename).

    Selection: GLOB patterns are shell globs matched case-sensitively against
    the whole key ('*' also matches dots: 'emb.*', '*.weight'). A floating-point
    tensor is sparsified if it matches an --include (no --include: every tensor)
    or a --per-tensor pattern, and no --exclude. The 2+ dims rule: a tensor with
    fewer than 2 dims (a bias, a LayerNorm weight) is taken only when a pattern
    names it exactly ('fc.bias') or with --allow-1d; the summary lists the ones a
    glob matched. Other entries pass through untouched. A pattern matching no key
    is an error. --per-tensor overrides from every matching pattern apply in file
    order; later ones win.
    """
    check_output(dst, "OUT", {"IN": src}, force=force)
    try:
        io.check_output_format(src, dst, fmt)
    except ValueError as err:
        raise click.UsageError(str(err)) from err
    if masks_file is not None:
        check_output(masks_file, "--masks-file", {"IN": src, "OUT": dst}, force=force)
        if os.path.abspath(masks_file) == os.path.abspath(dst):
            raise click.UsageError("--masks-file must differ from OUT")
    if zeros_per_block == 0:
        raise click.UsageError(
            "--zeros-per-block must be at least 1 (0 would zero nothing); leave it out to "
            "zero whole blocks"
        )
    try:
        base = make_config(
            sparsity_level=sparsity_level,
            sparse_block_shape=parse_block(block),
            zeros_per_block=zeros_per_block,
            norm=norm,
        )
    except (TypeError, ValueError) as err:
        raise click.UsageError(str(err)) from err
    rules = load_per_tensor(per_tensor) if per_tensor is not None else []
    result = sparsify_checkpoint(
        src,
        dst,
        base,
        include=include,
        exclude=exclude,
        per_tensor=rules,
        fmt=fmt,
        packed_masks=packed_masks,
        show_progress=not quiet,
        allow_1d=allow_1d,
        masks_file=masks_file,
    )
    if result.dropped:
        names = ", ".join(result.dropped[:5]) + (", ..." if len(result.dropped) > 5 else "")
        kind = "non-tensor" if not set(result.dropped) & set(result.sparse_layout) else "other"
        stderr_console().print(
            f"note: safetensors holds dense tensors only; left out {len(result.dropped)} "
            f"{kind} entries: {names}",
            highlight=False,
            soft_wrap=True,
        )
    if result.sparse_layout:
        stderr_console().print(
            f"note: passed through {len(result.sparse_layout)} sparse-layout tensors "
            f"untouched: {_names(result.sparse_layout)}",
            highlight=False,
            soft_wrap=True,
        )
    if result.tied and not quiet:
        pairs = [f"{alias} = {name}" for alias, name in result.tied]
        stderr_console().print(
            f"note: tied weights sparsified once: {_names(pairs)}", highlight=False, soft_wrap=True
        )
    if not quiet:
        _print_summary(result, dst)
