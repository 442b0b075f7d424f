"""The drop-in benchmark cases: ``DataNormSparsifier`` beside the functional core it wraps.

- ``d1``-``d3``: one 1,000,000 x 64 fp32 table (block (1, 4) with 4 or 2 zeros per
  block, block (1, 1)): ``DataNormSparsifier.step()`` against ``fsparse.step`` in
  the same process (time and peak extra memory), and what ``add_data`` holds.
- ``many``: N small (16 x 16) tensors for N = 5,000, 10,000, 20,000: ``fsparse.init``,
  ``masks_state_dict``/``load_masks``, ``add_data`` x N and ``step()``, fsparse's and
  torch.ao's, and how each grows per doubling of N (2.0 is linear).

Workers print ``RESULT {json}`` lines; :func:`tables` and :func:`targets` format them.
"""

from __future__ import annotations

import gc
import json
import math
import warnings
from typing import Any

import torch
from measure import _status_kib, best_time, peak_extra
from torch.ao.pruning._experimental.data_sparsifier import DataNormSparsifier as AoSparsifier

import fsparse
from fsparse.data_sparsifier import DataNormSparsifier

DROPIN_CASES: dict[str, tuple[tuple[int, int], int]] = {
    "d1": ((1, 4), 4),
    "d2": ((1, 4), 2),
    "d3": ((1, 1), 1),
}
TITLES = {
    "d1": "d1: 1,000,000 x 64, block (1, 4), zeros_per_block 4",
    "d2": "d2: 1,000,000 x 64, block (1, 4), zeros_per_block 2",
    "d3": "d3: 1,000,000 x 64, block (1, 1)",
}
COUNTS = (5_000, 10_000, 20_000)
LEVEL = 0.5


def emit(kind: str, **fields: Any) -> None:
    print("RESULT " + json.dumps({"kind": kind, **fields}), flush=True)


def _dropin(data: dict[str, torch.Tensor], **config: Any) -> DataNormSparsifier:
    sparsifier = DataNormSparsifier(**config)
    for name, tensor in data.items():
        sparsifier.add_data(name, tensor)
    return sparsifier


def _ao(data: dict[str, torch.Tensor], **config: Any) -> AoSparsifier:
    sparsifier = AoSparsifier(**config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, tensor in data.items():
            sparsifier.add_data(name, tensor)
    return sparsifier


def dropin_case(case: str, scale: float, repeats: int, phase: str) -> None:
    block, zeros = DROPIN_CASES[case]
    rows = max(4, round(1_000_000 * scale) // 4 * 4)
    x = torch.randn(rows, 64, generator=torch.Generator().manual_seed(int(case[1:])))
    config: dict[str, Any] = {
        "sparsity_level": LEVEL, "sparse_block_shape": block, "zeros_per_block": zeros
    }
    warm = x[: 1 << 15].clone()
    fsparse.step(fsparse.init({"w": warm}, **config))
    _dropin({"w": warm}, **config).step()
    if phase == "memory":
        state = fsparse.init({"w": x}, **config)
        _, _, extra = peak_extra(lambda: fsparse.step(state))
        emit("functional", peak_extra=extra)
        del state
        gc.collect()
        before = _status_kib("VmRSS")
        sparsifier = DataNormSparsifier(**config)
        _, _, add_peak = peak_extra(lambda: sparsifier.add_data("w", x) is None)
        gc.collect()
        held = (_status_kib("VmRSS") - before) * 1024
        _, _, first = peak_extra(sparsifier.step)
        _, _, later = peak_extra(sparsifier.step)
        emit("dropin", peak_extra=later, first_peak_extra=first, add_peak=add_peak,
             add_held=max(held, 0))  # fmt: skip
        return
    emit("data", shape=[rows, 64], bytes=x.nbytes)
    state = fsparse.init({"w": x}, **config)
    sparsifier = _dropin({"w": x}, **config)
    sparsifier.step()
    best = {"functional": math.inf, "dropin": math.inf}
    for _ in range(max(2 * repeats, 10)):  # interleaved rounds: drift hits both alike
        best["functional"] = min(best["functional"], best_time(lambda: fsparse.step(state), 1))
        best["dropin"] = min(best["dropin"], best_time(sparsifier.step, 1))
    mask = sparsifier.get_mask("w")
    same = bool(torch.equal(mask.bool(), fsparse.step(state)["w"].mask))
    emit("functional", seconds=best["functional"])
    emit("dropin", seconds=best["dropin"], identical=same, dtype=str(mask.dtype))


def many_case(repeats: int, ao_repeats: int, phase: str) -> None:
    gen = torch.Generator().manual_seed(9)
    config: dict[str, Any] = {"sparsity_level": LEVEL}
    if phase == "memory":
        count = COUNTS[-1]
        data = {f"t{i}": torch.randn(16, 16, generator=gen) for i in range(count)}
        _dropin({"warm": torch.randn(16, 16)}, **config).step()
        _ao({"warm": torch.randn(16, 16)}, **config).step()
        ours, _, extra = peak_extra(lambda: _stepped(_dropin(data, **config)))
        del ours
        gc.collect()
        emit("many_memory", n=count, data_bytes=16 * 16 * 4 * count, fsparse=extra)
        _, _, extra = peak_extra(lambda: _stepped(_ao(data, **config)))
        emit("many_memory", torch_ao=extra)
        return
    for count in COUNTS:
        data = {f"t{i}": torch.randn(16, 16, generator=gen) for i in range(count)}
        emit(f"many{count}", n=count, **_many_row(data, config, repeats, ao_repeats))


def _many_row(
    data: dict[str, torch.Tensor], config: dict[str, Any], repeats: int, ao_repeats: int
) -> dict[str, float]:
    """Best times; the sub-second calls get more runs than the drop-in's multi-second ones."""
    fast, reps = max(repeats, 5), min(repeats, 2)
    row = {"init": best_time(lambda: fsparse.init(data, **config), fast)}
    state = fsparse.step(fsparse.init(data, **config))
    packed = fsparse.masks_state_dict(state)
    row["masks_state_dict"] = best_time(lambda: fsparse.masks_state_dict(state), fast)
    row["load_masks"] = best_time(lambda: fsparse.load_masks(state, packed), fast)
    row["functional_step"] = best_time(lambda: fsparse.step(state), fast)
    row["add_data"] = best_time(lambda: _dropin(data, **config), reps)
    sparsifier = _dropin(data, **config)
    row["step"] = best_time(sparsifier.step, reps)
    del sparsifier
    row["ao_add_data"] = best_time(lambda: _ao(data, **config), ao_repeats)
    reference = _ao(data, **config)
    row["ao_step"] = best_time(reference.step, ao_repeats)
    return row


def _stepped(sparsifier: Any) -> Any:
    sparsifier.step()
    return sparsifier


def run(case: str, scale: float, repeats: int, ao_repeats: int, phase: str) -> None:
    torch.set_grad_enabled(False)
    if case in DROPIN_CASES:
        dropin_case(case, scale, repeats, phase)
    elif case == "many":
        many_case(repeats, ao_repeats, phase)
    else:
        raise ValueError(f"unknown case {case!r}")


# -- report ---------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def _x(nbytes: float, data: float) -> str:
    return f"{nbytes / 2**20:,.0f} MiB ({nbytes / data:.2f}x data)"


def tables(results: dict[str, dict[str, Any]]) -> list[str]:
    """The drop-in rows and the many-entries rows, as markdown tables."""
    lines = []
    head = ["case", "fsparse.step", "DataNormSparsifier.step()", "drop-in / functional",
            "functional peak extra", "drop-in peak extra", "drop-in first step peak extra",
            "add_data: held / peak extra", "masks identical"]  # fmt: skip
    rows = [c for c in TITLES if "seconds" in results.get(c, {}).get("dropin", {})]
    if rows:
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case in rows:
        res = results[case]
        fn, di, data = res["functional"], res["dropin"], res["data"]["bytes"]
        cells = [TITLES[case], _ms(fn["seconds"]), _ms(di["seconds"]),
                 f"{di['seconds'] / fn['seconds']:.2f}x"]  # fmt: skip
        if "peak_extra" in di:
            held = f"{di['add_held'] / 2**20:,.0f} MiB / {_x(di['add_peak'], data)}"
            cells += [_x(fn["peak_extra"], data), _x(di["peak_extra"], data),
                      _x(di["first_peak_extra"], data), held]  # fmt: skip
        else:
            cells += ["n/a"] * 4
        cells.append(f"{'yes' if di['identical'] else 'NO'} ({di['dtype']} mask)")
        lines.append("| " + " | ".join(cells) + " |")
    many = results.get("many", {})
    counts = [n for n in COUNTS if f"many{n}" in many]
    if counts:
        keys = [("init", "fsparse.init"), ("masks_state_dict", "fsparse.masks_state_dict"),
                ("load_masks", "fsparse.load_masks"), ("functional_step", "fsparse.step"),
                ("add_data", "DataNormSparsifier.add_data x N"),
                ("ao_add_data", "torch.ao add_data x N"), ("step", "DataNormSparsifier.step()"),
                ("ao_step", "torch.ao step()")]  # fmt: skip
        head = ["N tensors of 16 x 16", *[f"N={n:,}" for n in counts], "x per doubling"]
        lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for key, title in keys:
            values = [many[f"many{n}"][key] for n in counts]
            lines.append("| " + " | ".join([title, *map(_ms, values), _doubling(counts, values)])
                         + " |")  # fmt: skip
        last = many[f"many{counts[-1]}"]
        lines.append("| fsparse / torch.ao at the largest N | add_data "
                     f"{last['add_data'] / last['ao_add_data']:.2f}x, step "
                     f"{last['step'] / last['ao_step']:.2f}x |")  # fmt: skip
        mem = many.get("many_memory", {})
        if "fsparse" in mem:
            lines.append(f"\n- Peak extra memory of `add_data` x {mem['n']:,} + `step()` "
                         f"({mem['data_bytes'] / 2**20:.0f} MiB of data): fsparse "
                         f"{mem['fsparse'] / 2**20:,.0f} MiB, torch.ao "
                         f"{mem.get('torch_ao', 0) / 2**20:,.0f} MiB.")  # fmt: skip
    return lines


def _doubling(counts: list[int], values: list[float]) -> str:
    if len(counts) < 2:
        return "n/a"
    growth = (values[-1] / values[0]) ** (1 / math.log2(counts[-1] / counts[0]))
    return f"{growth:.2f}x"


def targets(results: dict[str, dict[str, Any]]) -> list[tuple[str, str, bool | None]]:
    rows: list[tuple[str, str, bool | None]] = []
    for case in TITLES:
        res = results.get(case, {})
        di, fn = res.get("dropin", {}), res.get("functional", {})
        if "seconds" not in di:
            continue
        ratio = di["seconds"] / fn["seconds"]
        rows.append((f"{case}: DataNormSparsifier.step() <= 1.2x fsparse.step", f"{ratio:.2f}x",
                     ratio <= 1.2))  # fmt: skip
        if "peak_extra" in di:
            data = res["data"]["bytes"]
            for key, what in (("peak_extra", "step"), ("first_peak_extra", "first step")):
                mem = di[key] / data
                rows.append((f"{case}: drop-in {what} peak extra <= 0.5x data", f"{mem:.2f}x",
                             mem <= 0.5))  # fmt: skip
            held = di["add_held"] / data
            rows.append((f"{case}: add_data holds no data-sized mask (< 0.05x data)",
                         f"{held:.3f}x", held < 0.05))  # fmt: skip
    many = results.get("many", {})
    counts = [n for n in COUNTS if f"many{n}" in many]
    if len(counts) > 1:
        for key, title in (("init", "fsparse.init"), ("load_masks", "fsparse.load_masks"),
                           ("add_data", "add_data x N"), ("step", "DataNormSparsifier.step()")):
            values = [many[f"many{n}"][key] for n in counts]
            growth = _doubling(counts, values)
            rows.append((f"many: {title} linear in N (<= 2.5x per doubling)", growth,
                         float(growth[:-1]) <= 2.5))  # fmt: skip
    return rows
