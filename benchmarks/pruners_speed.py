"""Time of one mask-computing ``update`` of every pruner vs a read pass (issue 12).

The data is one 1,000,000 x 64 fp32 table (256 MiB) with a gradient of the
same shape. Each algorithm's timed call is the one that computes masks: the
first ``update`` of a one-shot pruner (magnitude, random, saliency, their global
forms, SNIP, STE, movement, AC/DC entering a sparse phase), one drop-and-grow
``update`` for SET and RigL, and ``init`` for static_random (its only mask).
The call is pure, so it is repeated from the same state; each repeat is paired
with a read pass, and the ratio is median(update) / median(read pass).

The yardstick is ``torch.abs(x, out=buf)``: one read of the data and one write
of a score-sized buffer, preallocated. That is exactly the scoring half of the
cheapest algorithm (``|w|``) and the least any score-then-select update can do
(the scores must exist before they are selected), so "within 3x" leaves two
such passes for selection and the mask. ``x.sum()`` (read only) and ``x.abs()``
(into a fresh tensor, so it pays the page faults of a new 256 MiB buffer, as
every full-size temporary of an update does) are printed too.
Misses are profiled with ``torch.profiler``: the top operators by self time.

    python benchmarks/pruners_speed.py                # full size, writes PRUNERS.md section
    python benchmarks/pruners_speed.py --rows 100000  # smaller, print only
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fsparse import pruners

HERE = Path(__file__).resolve().parent
NAME = "table"
# The algorithms whose update is one scoring pass plus one selection (the 3x target).
SINGLE_PASS = ("magnitude", "global_magnitude", "random", "saliency", "global_saliency", "snip",
               "ste_magnitude", "ste_random", "static_random", "acdc", "movement")
TWO_SELECTIONS = ("set", "rigl")  # drop, then grow: two selections by design
TARGET = 3.0


def make_call(algorithm: str, sparsity: float, params: dict[str, torch.Tensor],
              grads: dict[str, torch.Tensor]) -> Callable[[], Any]:
    """A zero-argument callable doing the algorithm's mask-computing call once."""
    if algorithm == "static_random":
        pruner = pruners.static_random(sparsity, seed=0)
        return lambda: pruner.init(params)
    if algorithm in ("set", "rigl"):
        pruner = getattr(pruners, algorithm)(sparsity, update_every=1, drop_fraction=0.3)
    elif algorithm == "acdc":
        pruner = pruners.acdc(sparsity, init_dense_steps=0, final_sparse_start=0,
                              sparse_steps=1, dense_steps=1)
    else:
        pruner = getattr(pruners, algorithm)(sparsity)
    state = pruner.init(params)
    needs = pruner.needs_grads
    return lambda: pruner.update(state, params, grads=grads if needs else None)


def read_passes(x: torch.Tensor, buf: torch.Tensor) -> dict[str, Callable[[], Any]]:
    return {"abs_out": lambda: torch.abs(x, out=buf), "sum": lambda: x.sum(),
            "abs_alloc": lambda: x.abs()}


def timed(fn: Callable[[], Any]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(algorithm: str, call: Callable[[], Any], reads: dict[str, Callable[[], Any]],
            repeats: int) -> dict[str, Any]:
    """Median seconds of ``call`` and of each read pass, interleaved (one warm-up of each)."""
    call()
    for fn in reads.values():
        fn()
    times: dict[str, list[float]] = {"update": [], **{k: [] for k in reads}}
    for _ in range(repeats):
        for key, fn in reads.items():
            times[key].append(timed(fn))
        times["update"].append(timed(call))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"algorithm": algorithm, "seconds": med["update"], "read": med["abs_out"],
            "sum": med["sum"], "abs_alloc": med["abs_alloc"],
            "ratio": med["update"] / med["abs_out"], "ratio_sum": med["update"] / med["sum"],
            "ratio_alloc": med["update"] / med["abs_alloc"]}


def profile(call: Callable[[], Any], top: int = 6) -> list[tuple[str, float, float]]:
    """(operator, self CPU ms, share of the call) for the ``top`` operators of one call."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        call()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [(e.key, e.self_cpu_time_total / 1e3, e.self_cpu_time_total / total)
            for e in events[:top]]


def _print(line: str) -> None:
    print(line, flush=True)


def run(rows: int, cols: int, sparsity: float, repeats: int, algorithms: tuple[str, ...],
        progress: Callable[[str], None] = _print
        ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, cols, generator=gen)
    g = torch.randn(rows, cols, generator=gen)
    buf = torch.empty_like(x)
    params, grads = {NAME: x}, {NAME: g}
    reads = read_passes(x, buf)
    results, profiles = [], {}
    for algorithm in algorithms:
        call = make_call(algorithm, sparsity, params, grads)
        r = measure(algorithm, call, reads, repeats)
        r["kind"] = "single pass" if algorithm in SINGLE_PASS else "two selections"
        r["met"] = r["ratio"] <= TARGET if algorithm in SINGLE_PASS else None
        results.append(r)
        progress(f"{algorithm:16s} {r['seconds'] * 1e3:8.1f} ms  {r['ratio']:5.2f}x abs(out=)  "
                 f"{r['ratio_sum']:5.2f}x sum()  {r['ratio_alloc']:5.2f}x abs()")
        if r["met"] is False or algorithm in TWO_SELECTIONS:
            profiles[algorithm] = profile(call)
            for op, ms, share in profiles[algorithm]:
                progress(f"    {op:36s} {ms:8.1f} ms  {share:5.1%}")
        del call
    return results, profiles


def markdown(results: list[dict[str, Any]], profiles: dict[str, Any], rows: int, cols: int,
             sparsity: float, repeats: int, seconds: float) -> str:
    from measure import machine

    read = statistics.median(r["read"] for r in results)
    total = statistics.median(r["sum"] for r in results)
    alloc = statistics.median(r["abs_alloc"] for r in results)
    lines = [
        "## Time of one update vs a read pass",
        "",
        f"Written by `python benchmarks/pruners_speed.py`. One {rows:,} x {cols} fp32 table, "
        f"unstructured, sparsity {sparsity}, {torch.get_num_threads()} torch threads; "
        f"median of {repeats} runs, each paired with the read "
        "passes. Yardstick: `torch.abs(x, out=buf)` (read the data, write one score-sized "
        "buffer: the scoring half of magnitude alone; median "
        f"{read * 1e3:.0f} ms); `x.sum()` (read only) median {total * 1e3:.0f} ms. Target: "
        f"within {TARGET:.0f}x for the single-pass algorithms. Also shown: `x.abs()`, the same "
        f"pass into a freshly allocated tensor (median {alloc * 1e3:.0f} ms): on this machine "
        f"first-touching a new {rows * cols * 4 >> 20} MiB tensor costs more than a read pass "
        "(page faults), and "
        "every full-size temporary an update allocates pays it.",
        "",
        "| algorithm | kind | update | / abs(out=) | / sum() | / abs() | within 3x |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        met = "n/a" if r["met"] is None else ("MET" if r["met"] else "**MISSED**")
        lines.append(f"| {r['algorithm']} | {r['kind']} | {r['seconds'] * 1e3:.0f} ms | "
                     f"{r['ratio']:.2f}x | {r['ratio_sum']:.2f}x | {r['ratio_alloc']:.2f}x | "
                     f"{met} |")
    if profiles:
        lines += ["", "Where the time goes (torch.profiler, self CPU time of one call, top "
                  "operators):", ""]
        for algorithm, ops in profiles.items():
            cells = "; ".join(f"`{op}` {ms:.0f} ms ({share:.0%})" for op, ms, share in ops)
            lines.append(f"- {algorithm}: {cells}")
    lines += ["", "Machine:", ""]
    lines += [f"- {k}: {v}" for k, v in machine().items()]
    lines += [f"- run time: {seconds:.0f} s", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cols", type=int, default=64)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--algorithms", type=str, default=",".join(SINGLE_PASS + TWO_SELECTIONS))
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's default); the table says which")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    began = time.perf_counter()
    results, profiles = run(args.rows, args.cols, args.sparsity, args.repeats,
                            tuple(args.algorithms.split(",")))
    text = markdown(results, profiles, args.rows, args.cols, args.sparsity, args.repeats,
                    time.perf_counter() - began)
    print(text)
    if args.rows == 1_000_000 and args.cols == 64 and args.threads is None:
        from pruners_quality import write_section

        write_section(HERE / "PRUNERS.md", "speed", text)
        print(f"wrote {HERE / 'PRUNERS.md'}")


if __name__ == "__main__":
    main()
