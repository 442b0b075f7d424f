"""One-shot pruning of a small causal LM: held-out perplexity and cost (issue 13).

A GPT-2-style model is built from a Hugging Face ``GPT2Config`` (random init,
nothing downloaded) over bytes (vocabulary 256) and trained briefly on the
Python standard library's own source files (``sysconfig.get_paths()["stdlib"]``,
top-level ``*.py``; every 10th file, by sorted name, is held out). Then, from a
copy of the trained model each time, ``fsparse.oneshot.prune_model`` prunes
every ``Conv1D`` of the transformer blocks (the tied ``lm_head`` is left out)
with magnitude, Wanda and SparseGPT, at 50 % unstructured and at 2:4, from
calibration sequences of the training split. Reported, in one run:

1. held-out perplexity of the dense and of each pruned model;
2. the wall time and the peak extra resident memory of each ``prune_model``
   call, against one forward pass over the calibration set (its time and peak).

Times are the best of 2 runs in this process. Peak extra memory is measured as
``measure.py`` does: in a fresh process per call with ``measure.MEMORY_ENV`` (large
blocks mapped one by one), by ``/proc/self/clear_refs`` + ``VmHWM`` around the call.

    python benchmarks/oneshot_lm.py            # full run, ~3 min on 2 busy cores: ONESHOT.md
    python benchmarks/oneshot_lm.py --quick    # a tiny run that only prints
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from fsparse.oneshot import LayerReport, prune_model

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from measure import MEMORY_ENV, can_reset_peak, machine, peak_extra  # noqa: E402


@dataclass(frozen=True)
class Config:
    n_embd: int = 128
    n_layer: int = 4
    n_head: int = 4
    context: int = 64
    batch: int = 32
    steps: int = 300
    lr: float = 3e-3
    calib_sequences: int = 64
    calib_batch: int = 16
    eval_sequences: int = 256
    train_bytes: int = 3_000_000
    seed: int = 0


def _worker(path: str, config_json: str, method: str, pattern: str) -> None:
    """In a fresh process with ``measure.MEMORY_ENV``: print the peak extra bytes of one
    forward pass over the calibration set (``method == "forward"``) or one ``prune_model``."""
    config = Config(**json.loads(config_json))
    saved = torch.load(path, weights_only=True)
    model = build(config)
    model.load_state_dict(saved["state"])
    model.eval()
    batches = list(saved["batches"])

    def forward() -> None:
        with torch.no_grad():
            for b in batches:
                model(b)

    forward()                                            # lazy initialisation, not counted
    if method == "forward":
        _, _, peak = peak_extra(forward)
    else:
        n_m = None if pattern == "50%" else (2, 4)
        _, _, peak = peak_extra(lambda: prune_model(model, batches, method=method, sparsity=0.5,
                                                    n_m=n_m, ignore="lm_head", quiet=True))
    print(f"PEAK {peak}")


def peak_in_fresh_process(path: str, config: Config, method: str, pattern: str) -> int:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", path, json.dumps(asdict(config)), method, pattern],
        env={**os.environ, **MEMORY_ENV}, capture_output=True, text=True, check=True).stdout
    return int(out.rsplit("PEAK ", 1)[1].split()[0])


def load_text(limit: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(train bytes, held-out bytes, number of files) from the stdlib's top-level sources."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    train, held = bytearray(), bytearray()
    for i, path in enumerate(files):
        (held if i % 10 == 0 else train).extend(path.read_bytes())
    train = train[:limit]
    held = held[: max(limit // 9, 1)]
    as_tensor = lambda b: torch.frombuffer(bytearray(b), dtype=torch.uint8).long()  # noqa: E731
    return as_tensor(train), as_tensor(held), len(files)


def windows(data: torch.Tensor, count: int, context: int, g: torch.Generator) -> torch.Tensor:
    starts = torch.randint(0, len(data) - context - 1, (count,), generator=g)
    return torch.stack([data[s : s + context + 1] for s in starts.tolist()])


def build(config: Config) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(config.seed)
    hf = GPT2Config(vocab_size=256, n_positions=config.context, n_embd=config.n_embd,
                    n_layer=config.n_layer, n_head=config.n_head, bos_token_id=0,
                    eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(hf)


def train(model: torch.nn.Module, data: torch.Tensor, config: Config,
          progress: bool = False) -> list[float]:
    g = torch.Generator().manual_seed(config.seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    warm = max(config.steps // 10, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min((t + 1) / warm, 1.0) * 0.5 * (
        1 + math.cos(math.pi * min(t / config.steps, 1.0))))
    losses = []
    model.train()
    for _ in range(config.steps):
        seq = windows(data, config.batch, config.context, g)
        loss = model(seq[:, :-1], labels=seq[:, :-1]).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if progress and len(losses) % 100 == 0:
            print(f"step {len(losses)}: loss {sum(losses[-20:]) / 20:.3f}", flush=True)
    model.eval()
    return losses


@torch.no_grad()
def perplexity(model: torch.nn.Module, sequences: torch.Tensor) -> float:
    model.eval()
    total, count = 0.0, 0
    for chunk in sequences.split(64):
        logits = model(chunk[:, :-1]).logits
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), chunk[:, 1:].reshape(-1),
                                                reduction="sum")
        total, count = total + float(nll), count + chunk[:, 1:].numel()
    return math.exp(total / count)


@dataclass
class Row:
    method: str
    pattern: str
    ppl: float
    seconds: float
    peak: int
    sparsity: float
    error: float


def run(config: Config, progress: bool = True) -> tuple[dict[str, float], list[Row]]:
    train_data, held, files = load_text(config.train_bytes)
    model = build(config)
    start = time.perf_counter()
    losses = train(model, train_data, config, progress)
    train_seconds = time.perf_counter() - start
    g = torch.Generator().manual_seed(config.seed + 2)
    calib = windows(train_data, config.calib_sequences, config.context, g)[:, :-1]
    batches = list(calib.split(config.calib_batch))
    evals = windows(held, config.eval_sequences, config.context, g)

    def forward() -> None:
        with torch.no_grad():
            for b in batches:
                model(b)

    forward()                                            # warm-up
    times = []
    for _ in range(3):
        start = time.perf_counter()
        forward()
        times.append(time.perf_counter() - start)
    workdir = tempfile.mkdtemp()
    path = os.path.join(workdir, "trained.pt")
    torch.save({"state": model.state_dict(), "batches": batches}, path)
    peak_fwd = peak_in_fresh_process(path, config, "forward", "-")
    info: dict[str, float] = {
            "files": files, "train_tokens": len(train_data), "held_tokens": len(held),
            "train_seconds": train_seconds, "loss_start": sum(losses[:10]) / 10,
            "loss_end": sum(losses[-10:]) / 10, "forward_seconds": min(times),
            "forward_peak": peak_fwd,
            "params": sum(p.numel() for p in model.parameters()),
            "calib_tokens": calib.numel(), "eval_tokens": evals[:, 1:].numel()}
    rows = [Row("dense", "-", perplexity(model, evals), 0.0, 0, 0.0, 0.0)]
    for n_m, pattern in ((None, "50%"), ((2, 4), "2:4")):
        for method in ("magnitude", "wanda", "sparsegpt"):
            best, pruned = math.inf, model
            report: dict[str, LayerReport] = {}
            for _ in range(2):
                pruned = copy.deepcopy(model)
                start = time.perf_counter()
                report = prune_model(pruned, batches, method=method, sparsity=0.5, n_m=n_m,
                                     ignore="lm_head", quiet=True)
                best = min(best, time.perf_counter() - start)
            first_peak = peak_in_fresh_process(path, config, method, pattern)
            zeros = sum(round(r.sparsity * math.prod(r.shape)) for r in report.values())
            total = sum(math.prod(r.shape) for r in report.values())
            errors = [r.error for r in report.values() if r.error is not None]
            info["layers"] = len(report)
            row = Row(method, pattern, perplexity(pruned, evals), best, first_peak,
                      zeros / total, sum(errors) / len(errors))
            rows.append(row)
            if progress:
                print(f"{method:>9} {pattern:>4}: ppl {row.ppl:8.2f}  {best:6.2f} s "
                      f"({best / info['forward_seconds']:.1f}x forward)  peak "
                      f"{first_peak / 2**20:.1f} MiB", flush=True)
    return info, rows


def markdown(config: Config, info: dict[str, float], rows: list[Row], seconds: float) -> str:
    fwd_s, fwd_peak = info["forward_seconds"], info["forward_peak"]
    dense = rows[0].ppl
    lines = [
        "# One-shot pruning of a small causal LM (`benchmarks/oneshot_lm.py`)", "",
        f"GPT-2-style model from `GPT2Config` ({config.n_layer} layers, width {config.n_embd}, "
        f"{config.n_head} heads, context {config.context}, byte vocabulary; "
        f"{int(info['params']):,} parameters), random init, trained {config.steps} steps "
        f"(batch {config.batch}, AdamW) on {int(info['train_tokens']):,} bytes of the Python "
        f"stdlib's top-level sources ({int(info['files'])} files, every 10th held out); "
        f"training loss {info['loss_start']:.2f} -> {info['loss_end']:.2f} nats/byte in "
        f"{info['train_seconds']:.0f} s. Pruned: the {int(info['layers'])} `Conv1D` layers of "
        "the blocks (the tied `lm_head`/embedding stay dense), from a fresh copy of the trained "
        f"model each time, calibrated on {int(info['calib_tokens']):,} training tokens "
        f"({config.calib_sequences} sequences in batches of {config.calib_batch}); perplexity "
        f"(per byte) on {int(info['eval_tokens']):,} held-out tokens.", "",
        f"One forward pass over the calibration set: {fwd_s * 1000:.0f} ms, peak extra "
        f"{fwd_peak / 2**20:.1f} MiB.", "",
        "| method | pattern | held-out ppl | vs dense | sparsity | mean layer rel. error | "
        "time (s) | time / forward | peak extra (MiB) | peak / forward |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| dense | - | {dense:.3f} | 1.00x | 0 | - | - | - | - | - |",
    ]
    for r in rows[1:]:
        lines.append(
            f"| {r.method} | {r.pattern} | {r.ppl:.3f} | {r.ppl / dense:.2f}x | {r.sparsity:.3f} | "
            f"{r.error:.4f} | {r.seconds:.2f} | {r.seconds / fwd_s:.1f}x | "
            f"{r.peak / 2**20:.1f} | "
            + (f"{r.peak / fwd_peak:.2f}x |" if fwd_peak >= 2**20 else "n/a |"))
    for pattern in ("50%", "2:4"):
        ranked = sorted((r for r in rows[1:] if r.pattern == pattern), key=lambda r: r.ppl)
        lines.append(f"\nOrder by held-out perplexity at {pattern}: "
                     + " < ".join(f"{r.method} ({r.ppl:.3f})" for r in ranked) + ".")
    lines += ["", "Time: best of 2 runs, each on a fresh copy of the trained model; peak extra "
              "memory: one call in a fresh process (`measure.py`'s method). The "
              "sequential calibration runs the calibration set once per layer (stopping at the "
              "hooked layer) plus one checking pass, so its cost is counted in forward passes.",
              "", "Machine:", ""]
    lines += [f"- {k}: {v}" for k, v in machine().items()]
    lines += [f"- run time: {seconds:.0f} s in all (torch threads: {torch.get_num_threads()})",
              ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny run, print only")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: much faster on a busy 2-core machine)")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        torch.set_num_threads(args.threads)
        _worker(*args.worker)
        return
    if not can_reset_peak():
        raise SystemExit("needs /proc/self/clear_refs (Linux) to measure peak memory")
    torch.set_num_threads(args.threads)
    config = Config()
    if args.quick:
        config = replace(config, n_embd=32, n_layer=2, n_head=2, steps=20, calib_sequences=8,
                         calib_batch=4, eval_sequences=16, train_bytes=200_000)
    if args.steps is not None:
        config = replace(config, steps=args.steps)
    start = time.perf_counter()
    info, rows = run(config)
    text = markdown(config, info, rows, time.perf_counter() - start)
    print(text)
    if not args.quick:
        (HERE / "ONESHOT.md").write_text(text)


if __name__ == "__main__":
    main()
