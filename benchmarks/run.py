"""fsparse vs torch.ao: mask computation at recommender scale. One command: ``make bench``.

Each case runs in a fresh worker process (``--worker CASE``), fsparse and torch.ao
on the same data in that process. The table gives best-of-N wall times, peak
extra memory, the fsparse/torch.ao ratio, whether the masks are identical, and
fsparse's multiple of one plain read pass (``x.abs().sum()``). At full scale the
suite writes ``benchmarks/RESULTS.md`` with the machine's description.

    python benchmarks/run.py                    # everything, full scale (~10 min)
    python benchmarks/run.py --scale 0.1 --cases 1,5,6
    python benchmarks/run.py --cases d1,d2,d3,many   # the torch.ao drop-in rows only

The drop-in cases (``d1``-``d3``, ``many``) are in ``dropin_cases.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ALL_CASES = ["1", "2", "3", "4", "5", "6", "train", "d1", "d2", "d3", "many", "contended"]
DROPIN = {"d1", "d2", "d3", "many"}
TITLES = {
    "1": "1: 1,000,000 x 64, block (1, 4), zeros_per_block 4",
    "2": "2: 1,000,000 x 64, block (1, 4), zeros_per_block 2",
    "3": "3: 1,000,000 x 64, block (1, 1)",
    "4": "4: 1,000,000 x 64, block (4, 4)",
    "5": "5: 1,000 tensors of 64 x 64",
    "6": "6: DLRM Criteo-Kaggle embeddings (26 tables, dim 16)",
}


def run_worker(case: str, phase: str, args: argparse.Namespace,
               results: dict[str, Any]) -> None:  # fmt: skip
    """Run one phase of a case in a fresh process; merge its RESULT lines into ``results``."""
    from measure import MEMORY_ENV

    env = dict(os.environ, **MEMORY_ENV) if phase == "memory" else None
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", case,
               "--phase", phase, "--scale", str(args.scale), "--repeats", str(args.repeats),
               "--ao-repeats", str(args.ao_repeats)]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("RESULT "):
                item = json.loads(line[len("RESULT ") :])
                results.setdefault(item.pop("kind"), {}).update(item)
                print(f"  case {case} ({phase}): {line[7:].strip()[:150]}", flush=True)
    if proc.returncode != 0:
        results.setdefault("crash", []).append(
            f"{phase} worker exited with status {proc.returncode}"
        )
        if "fsparse" in results and "torch.ao" not in results:
            results["torch.ao"] = {"skipped": f"worker died (status {proc.returncode}): "
                                   "most likely out of memory"}  # fmt: skip


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds * 1e3:,.1f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def _mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:,.0f} MiB"


def _identical(ao: dict[str, Any], clean: dict[str, Any] | None) -> str:
    if "identical" not in ao:
        return "n/a"
    parts = []
    if clean is not None:
        parts.append("yes (tie-free data)" if clean["identical"] else "NO (tie-free data)")
    if ao["identical"]:
        parts.append("yes" + (" (random data)" if clean is not None else ""))
    elif ao.get("ties_only"):
        parts.append(f"{ao['diff_elements']} elements differ, all in blocks tied at the "
                     "threshold (torch.ao's unstable sort)")  # fmt: skip
    else:
        parts.append(f"NO: {ao['diff_elements']} elements differ")
    return "; ".join(parts)


def table(results: dict[str, dict[str, Any]]) -> list[str]:
    head = ["case", "fsparse", "torch.ao", "fsparse / torch.ao", "speedup",
            "fsparse peak extra", "torch.ao peak extra", "masks identical",
            "read pass", "fsparse / read pass"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case, title in TITLES.items():
        res = results.get(case)
        if not res or "fsparse" not in res:
            continue
        data, fs, ao = res["data"]["bytes"], res["fsparse"], res.get("torch.ao", {})
        read = res.get("read", {}).get("seconds")
        ao_s = ao.get("seconds")
        cells = [
            title,
            _ms(fs["seconds"]),
            _ms(ao_s) if ao_s else ao.get("skipped", "n/a"),
            f"{fs['seconds'] / ao_s:.4f}" if ao_s else "n/a",
            f"{ao_s / fs['seconds']:,.1f}x" if ao_s else "n/a",
            f"{_mb(fs['peak_extra'])} ({fs['peak_extra'] / data:.2f}x data)",
            f"{_mb(ao['peak_extra'])} ({ao['peak_extra'] / data:.2f}x data)" if ao_s else "n/a",
            _identical(ao, res.get("tie_free")),
            _ms(read),
            f"{fs['seconds'] / read:.2f}x" if read else "n/a",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("MET" if ok else "MISSED")


def targets(results: dict[str, dict[str, Any]], scale: float) -> list[str]:
    """Each target, what was measured, and whether it is met (only judged at full scale)."""
    rows: list[tuple[str, str, bool | None]] = []
    for case in ["1", "2", "3", "4"]:
        res = results.get(case, {})
        if "fsparse" not in res or "seconds" not in res.get("torch.ao", {}):
            continue
        fs, ao, data = res["fsparse"], res["torch.ao"], res["data"]["bytes"]
        speed = ao["seconds"] / fs["seconds"]
        rows.append((f"case {case}: >= 30x faster than torch.ao", f"{speed:.1f}x", speed >= 30))
        mem = fs["peak_extra"] / data
        rows.append((f"case {case}: peak extra <= 0.5x data", f"{mem:.2f}x", mem <= 0.5))
        clean = res.get("tie_free", {})
        same = bool(clean.get("identical")) and bool(ao.get("ties_only"))
        rows.append((f"case {case}: masks identical", _identical(ao, clean or None), same))
        if case in ("1", "2", "3"):
            multiple = fs["seconds"] / res["read"]["seconds"]
            rows.append((f"case {case}: within 8x of a read pass", f"{multiple:.2f}x",
                         multiple <= 8))  # fmt: skip
    res = results.get("5", {})
    if "seconds" in res.get("torch.ao", {}):
        speed = res["torch.ao"]["seconds"] / res["fsparse"]["seconds"]
        rows.append(("case 5: >= 5x faster than torch.ao", f"{speed:.1f}x", speed >= 5))
    res = results.get("6", {})
    if "fsparse" in res:
        fs, data = res["fsparse"], res["data"]["bytes"]
        full = scale == 1.0
        rows.append(("case 6: one step < 5 s (full scale)", _ms(fs["seconds"]),
                     fs["seconds"] < 5 if full else None))  # fmt: skip
        rows.append(("case 6: peak extra < 1x data", f"{fs['peak_extra'] / data:.2f}x",
                     fs["peak_extra"] < data))  # fmt: skip
        ao = res.get("torch.ao", {})
        shown = _ms(ao["seconds"]) if "seconds" in ao else ao.get("skipped", "n/a")
        rows.append(("case 6: torch.ao beside it", shown, None))
    res = results.get("train", {})
    if "train" in res:
        tr = res["train"]
        ours, theirs = tr["fsparse"] / tr["dense"], tr["torch.ao"] / tr["dense"]
        rows.append(("training step <= 1.15x dense (functional_call on sparsified)",
                     f"{ours:.3f}x (torch.ao parametrization: {theirs:.3f}x)", ours <= 1.15))
    from dropin_cases import targets as dropin_targets

    rows += dropin_targets(results)
    res = results.get("1", {})
    if "storage" in res:
        st = res["storage"]
        ratio = st["coo_bytes"] / st["packed_bytes"]
        rows.append(("packed masks >= 8x smaller than torch.ao sparse COO (50% sparsity)",
                     f"{ratio:.1f}x smaller", ratio >= 8))  # fmt: skip
        rows.append(("packed masks load back exactly", str(st["round_trip_exact"]),
                     st["round_trip_exact"]))  # fmt: skip
    if scale != 1.0:  # sizes, speedups and fixed overheads all depend on the scale
        rows = [(f"{name} (at scale {scale})", value, None) for name, value, _ in rows]
    lines = ["| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {_verdict(ok)} |" for name, value, ok in rows]
    return lines


def details(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    res = results.get("5", {})
    if "fsparse" in res:
        lines.append(f"- Case 5 without batching (one mask call per tensor): "
                     f"{_ms(res['fsparse']['unbatched_seconds'])}.")  # fmt: skip
    res = results.get("train", {})
    if "train" in res:
        tr, data = res["train"], res["data"]
        lines.append(
            f"- Training step (EmbeddingBag {data['shape'][0]:,} x {data['shape'][1]} + MLP "
            f"{data['hidden']}-{data['hidden']}-1, batch {data['batch']}, sparsified: "
            f"{', '.join(data['weights'])}): dense {_ms(tr['dense'])}, fsparse "
            f"{_ms(tr['fsparse'])}, torch.ao {_ms(tr['torch.ao'])}; same masks: "
            f"{tr['same_masks']}, same loss: {tr['same_loss']}."
        )
    res = results.get("1", {})
    if "storage" in res:
        st = res["storage"]
        lines.append(
            f"- Mask storage (case 1 mask, {st['sparsity']:.1%} zeros): bool in memory "
            f"{_mb(st['bool_bytes'])}; fsparse bit-packed {_mb(st['packed_bytes'])} "
            f"(saved file {_mb(st['packed_file'])}); torch.ao sparse COO "
            f"{_mb(st['coo_bytes'])} (saved file {_mb(st['coo_file'])}). Pack "
            f"{_ms(st['pack_seconds'])}, unpack {_ms(st['unpack_seconds'])}."
        )
    for case, res in results.items():
        for crash in res.get("crash", []):
            lines.append(f"- Case {case}: {crash}.")
    return lines


METHOD = """\
## Method

- Each case runs in two fresh worker processes, one for times and mask checks,
  one for memory; in each, fsparse and torch.ao run on the same data (random
  normal fp32, fixed seeds). Times are the best of several runs (`--repeats`
  for fsparse and the read pass, `--ao-repeats` for torch.ao, whose steps take
  seconds each; in case 6 torch.ao is timed on a single step). One step means
  `fsparse.step(state)` and `DataNormSparsifier.step()` on the same data and
  config (level 0.5).
- **Peak extra memory**: one step of fsparse, then one of torch.ao, in the
  memory worker, each after a warm-up step on a small slice of the data (so
  that one-time process costs such as code pages are not counted). The
  kernel's peak resident set size (`VmHWM`) is reset through
  `/proc/self/clear_refs` just before the step and read after it; the figure
  is the peak minus the resident size just before. That worker starts with
  `MALLOC_MMAP_THRESHOLD_=131072`, so every block over 128 KiB is mapped and
  unmapped on its own and memory freed earlier cannot hide a later allocation.
  torch's CPU allocator does not cache, so this counts every tensor the step
  allocates, the new masks included (tracemalloc would see none of them). The
  time worker runs with the allocator's defaults.
- **Masks identical**: the fsparse mask is compared with torch.ao's (as bool)
  on the timed random data, and again on *tie-free* data of the same shape
  (each block's elements sit a few ulps apart around a base value; the bases
  are spaced so that no two block means can be equal). On random data a few
  blocks can have exactly equal means at the threshold; torch.ao's unstable
  sort then picks either, fsparse picks the lower index. The table says so
  when that is the only difference.
- **Read pass**: `x.abs().sum()` over the same data, best of the same number of
  runs: the memory-bandwidth yardstick. It writes the `abs` result to fresh
  memory before summing, so it costs more than a bare read; fsparse's chunked
  pass writes only unit-sized scratch and the mask.
- The machine is shared with other work; the load average at the start is
  given above. Timings on a 2-core box vary by 10-30% between runs.
"""


def write_report(path: Path, results: dict[str, dict[str, Any]], args: argparse.Namespace,
                 machine: dict[str, str], seconds: float) -> None:  # fmt: skip
    from dropin_cases import tables as dropin_tables

    text = [
        "# Benchmark results: fsparse vs torch.ao",
        "",
        f"Written by `python benchmarks/run.py` ({' '.join(sys.argv[1:]) or 'no options'}) "
        f"on {time.strftime('%Y-%m-%d %H:%M %Z')}, scale {args.scale}, "
        f"in {seconds / 60:.1f} min.",
        "",
        "## Machine",
        "",
        *[f"- {key}: {value}" for key, value in machine.items()],
        "",
        "## Results",
        "",
        *table(results),
        "",
        *details(results),
        "",
        "## The torch.ao drop-in beside the functional core",
        "",
        *dropin_tables(results),
        "",
        "## Under a competing load (benchmarks/contended.py)",
        "",
        *results.get("contended", {}).get("lines", ["not run"]),
        "",
        "## Targets",
        "",
        *targets(results, args.scale),
        "",
        METHOD,
    ]
    path.write_text("\n".join(text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="data size factor for cases 1-4 and 6 (default 1.0: full size)")
    parser.add_argument("--cases", default=",".join(ALL_CASES),
                        help=f"comma-separated subset of {','.join(ALL_CASES)}")
    parser.add_argument("--repeats", type=int, default=5, help="fsparse runs per case (best kept)")
    parser.add_argument("--ao-repeats", type=int, default=2, help="torch.ao runs per case")
    parser.add_argument("--out", type=Path, default=None,
                        help="report path (default benchmarks/RESULTS.md for a full-scale run "
                             "of every case, else none)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=["time", "memory"], help=argparse.SUPPRESS)
    args = parser.parse_args()  # fmt: skip
    if args.scale <= 0 or args.repeats < 1 or args.ao_repeats < 1:
        parser.error("--scale must be positive and --repeats/--ao-repeats at least 1")
    if args.worker:
        sys.path.insert(0, str(HERE))
        if args.worker in DROPIN:
            from dropin_cases import run
        else:
            from cases import run

        run(args.worker, args.scale, args.repeats, args.ao_repeats, args.phase or "time")
        return
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(ALL_CASES))
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {ALL_CASES}")
    sys.path.insert(0, str(HERE))
    from measure import can_reset_peak, machine

    if not can_reset_peak():
        sys.exit("this benchmark needs a writable /proc/self/clear_refs (Linux) to measure peaks")
    info = machine()
    print("\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    start = time.perf_counter()
    results: dict[str, Any] = {}
    for case in cases:
        print(f"case {case} ...", flush=True)
        results[case] = {}
        if case == "contended":  # its own script: burners, quiet and loaded in one run
            rows = subprocess.run([sys.executable, str(HERE / "contended.py"), "--scale",
                                   str(args.scale)], capture_output=True, text=True).stdout
            results[case]["lines"] = rows.strip().splitlines()
            print(rows, flush=True)
            continue
        for phase in ("time", "memory"):
            run_worker(case, phase, args, results[case])
    elapsed = time.perf_counter() - start
    from dropin_cases import tables as dropin_tables

    print("\n" + "\n".join([*table(results), "", *dropin_tables(results)]))
    print("\n".join(["", *details(results), "", *targets(results, args.scale)]))
    out = args.out
    if out is None and args.scale == 1.0 and cases == ALL_CASES:
        out = HERE / "RESULTS.md"
    if out is not None:
        write_report(out, results, args, info, elapsed)
        print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
