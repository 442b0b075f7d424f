"""The built-in demo's run: training-aware sparsification of :mod:`fsparse.cli.demo_model`.

A dense model and a sparse model are trained from the same initial weights. The
sparse one runs the functional core every few steps: :func:`~fsparse.schedule`
raises each entry's target on a cubic schedule, :func:`~fsparse.step` recomputes
the masks, and the forward pass uses :func:`~fsparse.sparsified` weights through
``torch.func.functional_call``. Finally the dense model's tables are sparsified
one-shot at a sweep of levels to measure the compressed checkpoint size, as
torch.ao's DLRM benchmark did.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from fsparse._src.packing import pack_mask
from fsparse._src.scheduler import Scheduler, schedule
from fsparse._src.schedules import cubic
from fsparse._src.state import SparsifierState, add, init, sparsified, sparsity, squash, step
from fsparse.cli.demo_model import (
    DEFAULT,
    Batch,
    DemoConfig,
    TinyDLRM,
    evaluate,
    is_table,
    make_data,
    state_names,
)

__all__ = ["DemoResult", "run_demo", "zipped_size"]


@dataclasses.dataclass(frozen=True)
class DemoResult:
    """Everything the report shows."""

    config: DemoConfig
    dense_accuracy: float
    sparse_accuracy: float
    one_shot_accuracy: float
    base_rate: float
    history: list[dict[str, float]]
    layer_sparsity: dict[str, float]
    layer_targets: dict[str, float]
    sizes: list[dict[str, float]]
    dense_state_dict: dict[str, torch.Tensor]
    sparse_state_dict: dict[str, torch.Tensor]


def _train(
    model: nn.Module,
    data: Batch,
    cfg: DemoConfig,
    on_update: Callable[[int, float], Callable[[], dict[str, torch.Tensor]]] | None,
) -> None:
    """Adagrad training; every few steps ``on_update(step, epoch)`` gives a function
    returning the masked weights for each forward pass."""
    opt = torch.optim.Adagrad(model.parameters(), lr=cfg.lr)
    dense, ids, labels = data
    steps_per_epoch = math.ceil(len(labels) / cfg.batch_size)
    every = max(steps_per_epoch // cfg.updates_per_epoch, 1)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    masked: Callable[[], dict[str, torch.Tensor]] = dict
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(labels), generator=gen)
        for i in range(steps_per_epoch):
            global_step = epoch * steps_per_epoch + i
            if on_update is not None and i % every == 0:
                masked = on_update(global_step, global_step / steps_per_epoch)
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            logits = functional_call(model, masked(), (dense[idx], ids[idx]))
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def _target(key: str, param: torch.Tensor, cfg: DemoConfig) -> float:
    """MLP weights get ``mlp_target``; tables ``table_target`` from ``min_sparse_rows`` rows
    up (they hold nearly all the bytes); smaller tables stay dense."""
    if not is_table(key):
        return cfg.mlp_target
    return cfg.table_target if param.shape[0] >= cfg.min_sparse_rows else 0.0


def _sparse_state(model: nn.Module, cfg: DemoConfig) -> tuple[SparsifierState, dict[str, str]]:
    names = state_names(model)
    params = dict(model.named_parameters())
    state = init(sparse_block_shape=cfg.block)
    for name, key in names.items():
        state = add(state, name, params[key], sparsity_level=_target(key, params[key], cfg))
    return state, names


def _group_levels(
    state: SparsifierState, names: Mapping[str, str], tables: bool
) -> tuple[float, float]:
    """Element-weighted ``(target, achieved)`` sparsity of all tables (or all MLP weights)."""
    achieved = sparsity(state)
    chosen = [n for n, k in names.items() if is_table(k) == tables]
    sizes = {n: state[n].mask.numel() for n in chosen}
    total = max(sum(sizes.values()), 1)
    target = sum(min(max(state[n].config.sparsity_level, 0.0), 1.0) * sizes[n] for n in chosen)
    return target / total, sum(achieved[n] * sizes[n] for n in chosen) / total


def zipped_size(obj: Any) -> int:
    """Bytes of ``torch.save(obj)`` in a deflate-compressed zip (torch.ao's benchmark method)."""
    raw = io.BytesIO()
    torch.save(obj, raw)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        zf.writestr("model.pt", raw.getvalue())
    return len(out.getvalue())


def _size_sweep(model: nn.Module, test: Batch, cfg: DemoConfig) -> list[dict[str, float]]:
    """One-shot sparsify the trained dense tables per level: zipped sizes and accuracy."""
    weights = {k: v.detach() for k, v in model.state_dict().items()}
    tables = {n: k for n, k in state_names(model).items() if is_table(k)}
    rows = []
    for level in cfg.size_levels:
        state = step(
            init(
                {n: weights[k] for n, k in tables.items()},
                sparsity_level=level,
                sparse_block_shape=cfg.block,
            )
        )
        pruned = {tables[n]: t for n, t in squash(state).items()}
        bitmap = {k: v for k, v in weights.items() if not is_table(k)}
        for name, key in tables.items():
            mask = state[name].mask
            bitmap[key + ".mask"] = pack_mask(mask)
            bitmap[key + ".values"] = weights[key][mask]
        rows.append(
            {
                "level": level,
                "dense_zip_bytes": zipped_size({**weights, **pruned}),
                "bitmap_zip_bytes": zipped_size(bitmap),
                "accuracy": evaluate(model, test, pruned),
            }
        )
    return rows


@contextlib.contextmanager
def _timed(log: Callable[[str], None], done: str) -> Iterator[None]:
    """Log ``done`` with the phase's duration once the phase has finished."""
    start = time.perf_counter()
    yield
    log(f"{done} in {time.perf_counter() - start:.1f}s")


def run_demo(cfg: DemoConfig = DEFAULT, log: Callable[[str], None] = print) -> DemoResult:
    """Train dense and sparse models on the synthetic data; measure sizes. See the module doc.

    ``log`` gets one line per phase when it ends, with its duration. Runs on
    ``cfg.num_threads`` torch threads and restores the previous count.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(cfg.num_threads)
    try:
        return _run(cfg, log)
    finally:
        torch.set_num_threads(previous)


def _train_sparse(
    model: nn.Module, train: Batch, cfg: DemoConfig
) -> tuple[SparsifierState, dict[str, str], list[dict[str, float]]]:
    """Training-aware sparsification of ``model``: ``(final state, names, schedule history)``."""
    state, names = _sparse_state(model, cfg)
    ramp = max((cfg.epochs - 1) * cfg.updates_per_epoch, 1)
    scheduler = Scheduler(cubic(0.0, 1.0, begin_step=0, num_updates=ramp), relative=True)
    sched_state = scheduler.init(state)
    history: list[dict[str, float]] = []

    def on_update(global_step: int, epoch: float) -> Callable[[], dict[str, torch.Tensor]]:
        nonlocal state, sched_state
        sched_state, state = schedule(scheduler, sched_state, state)
        state = step(state)
        table_target, table_sparsity = _group_levels(state, names, tables=True)
        mlp_target, mlp_sparsity = _group_levels(state, names, tables=False)
        history.append(
            {
                "step": global_step,
                "epoch": epoch,
                "table_target": table_target,
                "table_sparsity": table_sparsity,
                "mlp_target": mlp_target,
                "mlp_sparsity": mlp_sparsity,
            }
        )
        current = state  # data * mask, recomputed from the live parameters each forward
        return lambda: {names[n]: t for n, t in sparsified(current).items()}

    _train(model, train, cfg, on_update)
    state = step(state)
    model.load_state_dict({names[n]: t for n, t in squash(state).items()}, strict=False)
    return state, names, history


def _run(cfg: DemoConfig, log: Callable[[str], None]) -> DemoResult:
    torch.manual_seed(cfg.seed)
    train, test = make_data(cfg)
    dense_model = TinyDLRM(cfg.n_dense, cfg.table_sizes, cfg.dim)
    sparse_model = TinyDLRM(cfg.n_dense, cfg.table_sizes, cfg.dim)
    sparse_model.load_state_dict(dense_model.state_dict())

    with _timed(log, f"trained the dense model ({cfg.epochs} epochs, {cfg.n_train} samples)"):
        _train(dense_model, train, cfg, None)
        dense_acc = evaluate(dense_model, test)

    every = f"{1 / cfg.updates_per_epoch:g}"
    with _timed(log, f"trained the sparse model (cubic schedule, masks every {every} epoch)"):
        state, names, history = _train_sparse(sparse_model, train, cfg)
        sparse_acc = evaluate(sparse_model, test)
        one_shot, _ = _sparse_state(dense_model, cfg)
        one_shot = step(one_shot)
        pruned = {names[n]: t for n, t in squash(one_shot).items()}
        one_shot_acc = evaluate(dense_model, test, pruned)

    with _timed(log, "measured the compressed checkpoint size against sparsity level"):
        sizes = _size_sweep(dense_model, test, cfg)
    levels = sparsity(state)
    return DemoResult(
        config=cfg,
        dense_accuracy=dense_acc,
        sparse_accuracy=sparse_acc,
        one_shot_accuracy=one_shot_acc,
        base_rate=float(1 - test[2].mean()),
        history=history,
        layer_sparsity={names[n]: levels[n] for n in names},
        layer_targets={names[n]: state[n].config.sparsity_level for n in names},
        sizes=sizes,
        dense_state_dict={k: v.detach().clone() for k, v in dense_model.state_dict().items()},
        sparse_state_dict={k: v.detach().clone() for k, v in sparse_model.state_dict().items()},
    )
