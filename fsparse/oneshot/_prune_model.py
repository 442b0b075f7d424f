"""``prune_model``: one-shot pruning of a model's layers from calibration batches (the edge).

Sequential, as the SparseGPT paper and both references: layers are taken in the
order the model first calls them, and each is calibrated by running every
calibration batch through the model with a hook on that layer only, so its
inputs come from the layers already pruned before it. The forward stops at the
hooked layer when the model calls it once per batch (as the references'
``Catcher``). One layer's statistics exist at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fsparse._src.checks import check_bool, check_instance, check_int, check_real, short_repr
from fsparse.oneshot._args import check_n_m, check_sparsity
from fsparse.oneshot._layers import find_layers
from fsparse.oneshot._magnitude import magnitude_prune
from fsparse.oneshot._progress import LayerProgress
from fsparse.oneshot._sparsegpt import sparsegpt_prune
from fsparse.oneshot._stats import (
    LayerStats,
    layer_inputs,
    read_weight,
    weight_of,
    write_weight,
)
from fsparse.oneshot._wanda import wanda_prune

__all__ = ["METHODS", "LayerReport", "prune_model"]

METHODS = ("sparsegpt", "wanda", "magnitude")


@dataclass(frozen=True)
class LayerReport:
    """What ``prune_model`` did to one layer.

    ``error`` is the relative output reconstruction error on the layer's own
    calibration inputs ``X``: ``||X W^T - X What^T||^2 / ||X W^T||^2`` (``None``
    when not computed); ``tokens`` counts the rows of ``X``.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    sparsity: float
    error: float | None
    tokens: int
    seconds: float


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the hooked layer has its input."""


def _run(model: nn.Module, batch: object) -> None:
    if isinstance(batch, torch.Tensor):
        model(batch)
    elif isinstance(batch, Mapping):
        model(**batch)
    else:
        model(*batch)  # type: ignore[misc]


def _forward(model: nn.Module, i: int, batch: object) -> None:
    """``batch`` (number ``i``) through ``model``; a failure is a ``ValueError`` naming it."""
    try:
        _run(model, batch)
    except _Stop:
        pass
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        raise ValueError(
            f"calibration_batches[{i}] ({short_repr(batch)}) does not fit the model: "
            f"{type(error).__name__}: {str(error)[:300]}"
        ) from error


def _check_batches(calibration_batches: object) -> list[object]:
    if isinstance(calibration_batches, (torch.Tensor, str, bytes)) or not isinstance(
        calibration_batches, Iterable
    ):
        raise TypeError("calibration_batches must be an iterable of batches (tensors, tuples of "
                        f"arguments or dicts of keyword arguments), got "
                        f"{type(calibration_batches).__name__} {short_repr(calibration_batches)}")
    batches = list(calibration_batches)
    if not batches:
        raise ValueError("calibration_batches is empty; pass at least one batch")
    for i, batch in enumerate(batches):
        if not isinstance(batch, (torch.Tensor, tuple, list, Mapping)):
            raise TypeError(f"calibration_batches[{i}] must be a tensor, a tuple/list of "
                            f"arguments or a dict of keyword arguments, got "
                            f"{type(batch).__name__} {short_repr(batch)}")
    return batches


def _hook(name: str, module: nn.Module, kind: str, columns: int, stats: LayerStats | None,
          calls: dict[str, int], stop: bool) -> Callable[..., None]:
    def hook(_: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        calls[name] = calls.get(name, 0) + 1
        if stats is not None:
            x = args[0] if args else next(iter(kwargs.values()), None)
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"layer {name!r} got a {type(x).__name__} input, not a tensor")
            rows = layer_inputs(module, kind, x)
            if rows.shape[1] != columns:
                raise ValueError(f"layer {name!r} expects {columns} input features, got input "
                                 f"of shape {tuple(x.shape)}")
            stats.add(rows)
        if stop:
            raise _Stop

    return hook


def _discover(model: nn.Module, layers: dict[str, tuple[nn.Module, str]],
              batches: list[object]) -> tuple[list[str], set[str]]:
    """Layers in first-call order (uncalled ones last), and those called at most once per batch.

    This dense pass also checks that every batch fits the model before anything is written.
    """
    order: dict[str, None] = {}
    per_batch: dict[str, int] = {}

    def counter(name: str) -> Callable[..., None]:
        def hook(_: nn.Module, args: tuple[Any, ...]) -> None:
            order.setdefault(name)
            per_batch[name] = per_batch.get(name, 0) + 1
        return hook

    handles = [m.register_forward_pre_hook(counter(n)) for n, (m, _) in layers.items()]
    once = set(layers)
    try:
        for i, batch in enumerate(batches):
            per_batch.clear()
            _forward(model, i, batch)
            once -= {n for n, c in per_batch.items() if c > 1}
    finally:
        for handle in handles:
            handle.remove()
    return list(order) + [n for n in layers if n not in order], once


def _relative_error(dense: torch.Tensor, pruned: torch.Tensor, gram: torch.Tensor) -> float:
    delta = dense.to(gram.dtype) - pruned.to(gram.dtype)
    total = float(((dense.to(gram.dtype) @ gram) * dense.to(gram.dtype)).sum())
    return float(((delta @ gram) * delta).sum()) / total if total > 0 else 0.0


def prune_model(
    model: nn.Module,
    calibration_batches: Iterable[object],
    *,
    method: str = "sparsegpt",
    sparsity: float = 0.5,
    n_m: tuple[int, int] | None = None,
    targets: str | Iterable[str] | None = None,
    ignore: str | Iterable[str] = (),
    sequential: bool = True,
    block_size: int = 128,
    dampening: float = 0.01,
    report_error: bool = True,
    quiet: bool = False,
) -> dict[str, LayerReport]:
    """Prune ``model``'s layers in place from ``calibration_batches``; a report per layer.

    ``method`` is ``"sparsegpt"``, ``"wanda"`` or ``"magnitude"``; ``sparsity``
    and ``n_m=(N, M)`` (N pruned in every M input columns) as the layer
    functions. ``targets``/``ignore`` are module names or globs (``None``: every
    ``nn.Linear``, ``nn.Conv2d`` and Hugging Face ``Conv1D``). Each batch is a
    tensor (``model(batch)``), a tuple (``model(*batch)``) or a dict
    (``model(**batch)``). ``sequential=False`` calibrates every layer on the
    dense model and writes all weights at the end. ``report_error`` also
    accumulates the Gram matrix for Wanda and magnitude (SparseGPT needs it
    anyway). The model runs in eval mode under ``torch.no_grad`` and gets its
    modes back. The original weights of the layers written so far are kept on
    the CPU until the call returns, so an error restores them.
    """
    check_instance(model, nn.Module, "model")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {short_repr(method)}")
    sparsity = check_sparsity(sparsity)
    block_size = check_int(block_size, "block_size", low=1)
    dampening = check_real(dampening, "dampening", low=0.0)
    for flag, arg in ((sequential, "sequential"), (report_error, "report_error"), (quiet, "quiet")):
        check_bool(flag, arg)
    layers = find_layers(model, targets, ignore)
    for name, (module, kind) in layers.items():
        try:
            check_n_m(n_m, read_weight(module, kind).shape[1])
        except ValueError as error:
            raise ValueError(f"layer {name!r}: {error}") from error
    batches = _check_batches(calibration_batches)
    modes = {m: m.training for m in model.modules()}
    backups: dict[str, torch.Tensor] = {}
    pending: dict[str, torch.Tensor] = {}
    reports: dict[str, LayerReport] = {}
    model.eval()
    try:
        with torch.no_grad():
            order, once = _discover(model, layers, batches)
            with LayerProgress(len(order), quiet=quiet, title=f"{method} {sparsity:g}"
                               if n_m is None else f"{method} {n_m[0]}:{n_m[1]}") as bar:
                for name in order:
                    bar.start(name)
                    module, kind = layers[name]
                    reports[name], new = _prune_layer(
                        model, name, module, kind, batches, once, method, sparsity, n_m,
                        block_size, dampening, report_error)
                    if sequential:
                        backups[name] = weight_of(module).detach().to("cpu", copy=True)
                        write_weight(module, kind, new)
                    else:
                        pending[name] = new
                    bar.advance()
            for name, new in pending.items():
                module, kind = layers[name]
                backups[name] = weight_of(module).detach().to("cpu", copy=True)
                write_weight(module, kind, new)
    except BaseException:
        with torch.no_grad():
            for name, weight in backups.items():
                weight_of(layers[name][0]).copy_(weight)
        raise
    finally:
        for m, mode in modes.items():
            m.training = mode
    return reports


def _prune_layer(model: nn.Module, name: str, module: nn.Module, kind: str, batches: list[object],
                 once: set[str], method: str, sparsity: float, n_m: tuple[int, int] | None,
                 block_size: int, dampening: float, report_error: bool
                 ) -> tuple[LayerReport, torch.Tensor]:
    start = time.perf_counter()
    dense = read_weight(module, kind)
    needs_data = method != "magnitude" or report_error
    gram = method == "sparsegpt" or report_error
    stats = LayerStats(dense.shape[1], gram=gram, dtype=torch.float64
                       if dense.dtype == torch.float64 else torch.float32, device=dense.device)
    if needs_data:
        calls: dict[str, int] = {}
        handle = module.register_forward_pre_hook(
            _hook(name, module, kind, dense.shape[1], stats, calls, name in once), with_kwargs=True)
        try:
            for i, batch in enumerate(batches):
                _forward(model, i, batch)
        finally:
            handle.remove()
        if method != "magnitude" and not stats.tokens:
            raise ValueError(f"targets: layer {name!r} is never called by the model on "
                             "calibration_batches; leave it out with ignore=")
    try:
        if method == "sparsegpt":
            new = sparsegpt_prune(dense, stats.hessian(), sparsity, n_m=n_m,
                                  block_size=block_size, dampening=dampening)
        elif method == "wanda":
            new = wanda_prune(dense, stats.sq_norms(), sparsity, n_m=n_m)
        else:
            new = magnitude_prune(dense, sparsity, n_m=n_m)
    except ValueError as error:
        raise ValueError(f"layer {name!r} (from calibration_batches): {error}") from error
    error_value = (_relative_error(dense, new, stats.hessian())
                   if gram and stats.tokens else None)
    report = LayerReport(name, kind, tuple(weight_of(module).shape),
                         float((new == 0).sum()) / max(new.numel(), 1), error_value,
                         stats.tokens, time.perf_counter() - start)
    return report, new
