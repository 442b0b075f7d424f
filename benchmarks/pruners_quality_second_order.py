"""OBS/oBERT and M-FAC beside the first-order pruners on the digits MLP (issue 13).

The setup of ``benchmarks/pruners_quality.py`` (imported: the same fixed split,
MLP, initialisation, optimizer, batch order and seeds). The second-order
pruners are used as a user would: ``update`` at every step with the training
loop's own gradients (no second data loader), the compensated weights they
return written back into the model, gradients masked. Their schedule is coarser
than the first-order ramp, since each pruning step needs ``num_grads`` fresh
gradients: 6 updates (the first prunes nothing), every 10 % of training from
10 % on (cubic ramp to the target at 60 %), each from the last
``min(num_grads, 10 % of training)`` gradients. Magnitude (per tensor) and
global magnitude, trained by ``pruners_quality.train`` in the same run, are the
first-order reference rows, at the same sparsities and distributions.

    python benchmarks/pruners_quality_second_order.py          # writes PRUNERS_SECOND_ORDER.md
    python benchmarks/pruners_quality_second_order.py --quick  # a few seconds, prints only

``run(config)`` is what ``tests/test_bench_pruners_smoke.py``-style tests call.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from fsparse import pruners

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pruners_quality as bench

SECOND_ORDER = ("obs", "mfac")
DISTRIBUTIONS = ("uniform", "erk", "global")


@dataclass(frozen=True)
class Settings:
    """The second-order pruners' hyperparameters."""

    num_grads: int = 64
    damp: float = 1e-3  # gradual: gradients of the training steps (picked on seed 0 of 1e-5..1e-3)
    oneshot_damp: float = 1e-5  # one-shot: the trained model's small gradients (1e-7..1e-1)
    obs_block: int = 64  # oBERT's explicit blocks (sparseml default: 50)
    mfac_block: int = 4096  # M-FAC holds no block matrix: large blocks are cheap
    oneshot_batch: int = 16  # images per gradient in the one-shot table


def make_second_order(algorithm: str, sparsity: float, distribution: str, total: int,
                      settings: Settings) -> pruners.Pruner:
    every = max(total // 10, 1)
    block = settings.obs_block if algorithm == "obs" else settings.mfac_block
    factory: Callable[..., pruners.Pruner] = getattr(pruners, algorithm)
    return factory(sparsity, num_grads=min(settings.num_grads, every), damp=settings.damp,
                   block_size=block, distribution=distribution, start_step=every,
                   end_step=6 * every, update_every=every)


def train(algorithm: str, sparsity: float, distribution: str, seed: int, config: bench.Config,
          data: tuple[torch.Tensor, ...], settings: Settings) -> bench.Result:
    """``pruners_quality.train``'s loop for a second-order pruner (compensated weights kept)."""
    began = time.perf_counter()
    x_tr, y_tr, x_te, y_te = data
    model = bench.make_model(config.hidden, seed)
    named: dict[str, torch.Tensor] = dict(model.named_parameters())
    weights = {n: p for n, p in named.items() if n.endswith("weight")}
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    gen = torch.Generator().manual_seed(1000 + seed)
    per_epoch = -(-len(x_tr) // config.batch_size)
    pruner = make_second_order(algorithm, sparsity, distribution, config.epochs * per_epoch,
                               settings)
    state = pruner.init({n: p.detach() for n, p in weights.items()})
    for _ in range(config.epochs):
        order = torch.randperm(len(x_tr), generator=gen)
        for i in range(per_epoch):
            idx = order[i * config.batch_size:(i + 1) * config.batch_size]
            logits = torch.func.functional_call(model, pruners.apply_masks(state, named),
                                                (x_tr[idx],))
            loss = nn.functional.cross_entropy(logits, y_tr[idx])
            opt.zero_grad()
            loss.backward()
            given = {n: p.detach() for n, p in weights.items()}
            grads = {n: p.grad for n, p in weights.items()}
            new, params = pruner.update(state, given, grads=grads)  # type: ignore[arg-type]
            with torch.no_grad():
                for n, p in weights.items():
                    if params[n] is not given[n]:  # the OBS-compensated weights
                        p.copy_(params[n])
                    p.grad.mul_(new.masks[n])  # type: ignore[union-attr]
            pruners.reset_optimizer_state(opt, weights, pruner.resets(state, new))
            state = new
            opt.step()
    with torch.no_grad():
        effective = pruners.apply_masks(state, named)
        logits = torch.func.functional_call(model, effective, (x_te,))
        accuracy = float((logits.argmax(1) == y_te).float().mean())
        zeros = sum(int((effective[n] == 0).sum()) for n in weights)
    count = sum(w.numel() for w in weights.values())
    mask_zeros = sum(int((~m).sum()) for m in state.masks.values())
    targets = dict(state.targets)
    expected = round(sparsity * count) if distribution == "global" else sum(
        round(targets[n] * w.numel()) for n, w in weights.items())
    return bench.Result(algorithm, distribution, sparsity, seed, accuracy, mask_zeros / count,
                        expected, zeros, mask_zeros, time.perf_counter() - began, targets)


def train_dense(seed: int, config: bench.Config, data: tuple[torch.Tensor, ...]) -> nn.Module:
    """The dense model of ``pruners_quality`` (same init, optimizer and batches), trained."""
    x_tr, y_tr = data[0], data[1]
    model = bench.make_model(config.hidden, seed)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    gen = torch.Generator().manual_seed(1000 + seed)
    per_epoch = -(-len(x_tr) // config.batch_size)
    for _ in range(config.epochs):
        order = torch.randperm(len(x_tr), generator=gen)
        for i in range(per_epoch):
            idx = order[i * config.batch_size:(i + 1) * config.batch_size]
            loss = nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


def one_shot(model: nn.Module, algorithm: str, sparsity: float, distribution: str, seed: int,
             data: tuple[torch.Tensor, ...], settings: Settings) -> bench.Result:
    """Prune the trained ``model`` at once (no retraining); second-order pruners first see
    ``num_grads`` gradients of batches of ``oneshot_batch`` training images."""
    began = time.perf_counter()
    x_tr, y_tr, x_te, y_te = data
    named = {n: p.detach() for n, p in model.named_parameters()}
    weights = {n: p for n, p in named.items() if n.endswith("weight")}
    m = settings.num_grads
    if algorithm in SECOND_ORDER:
        block = settings.obs_block if algorithm == "obs" else settings.mfac_block
        pruner = getattr(pruners, algorithm)(
            sparsity, num_grads=m, damp=settings.oneshot_damp, block_size=block,
            distribution=distribution, start_step=m - 1)
    elif algorithm == "global_magnitude":
        pruner, m = pruners.global_magnitude(sparsity), 1
    else:
        pruner, m = pruners.magnitude(sparsity, distribution=distribution), 1
    state, params = pruner.init(weights), dict(weights)
    gen = torch.Generator().manual_seed(2000 + seed)
    for _ in range(m):
        idx = torch.randint(len(x_tr), (settings.oneshot_batch,), generator=gen)
        live = {n: params.get(n, p).detach().requires_grad_(True) for n, p in named.items()}
        logits = torch.func.functional_call(model, live, (x_tr[idx],))
        loss = nn.functional.cross_entropy(logits, y_tr[idx])
        grads = dict(zip(weights, torch.autograd.grad(loss, [live[n] for n in weights]),
                         strict=True))
        state, params = pruner.update(state, params, grads=grads)
    with torch.no_grad():
        effective = pruners.apply_masks(state, {**named, **params})
        logits = torch.func.functional_call(model, effective, (x_te,))
        accuracy = float((logits.argmax(1) == y_te).float().mean())
        zeros = sum(int((effective[n] == 0).sum()) for n in weights)
    count = sum(w.numel() for w in weights.values())
    mask_zeros = sum(int((~k).sum()) for k in state.masks.values())
    expected = round(sparsity * count) if distribution == "global" else sum(
        round(state.targets[n] * w.numel()) for n, w in weights.items())
    return bench.Result(algorithm, distribution, sparsity, seed, accuracy, mask_zeros / count,
                        expected, zeros, mask_zeros, time.perf_counter() - began,
                        dict(state.targets))


def run_one_shot(config: bench.Config, settings: Settings = Settings(),
                 progress: Callable[[str], None] | None = None) -> list[bench.Result]:
    """One-shot pruning of each seed's trained dense model, no retraining."""
    data = bench.load_digits_split(config.train_limit)
    results = []
    for seed in config.seeds:
        model = train_dense(seed, config, data)
        jobs: list[tuple[str, float, str]] = [("dense", 0.0, "-")]
        for s in config.sparsities:
            jobs += [("magnitude", s, "uniform"), ("magnitude", s, "erk"),
                     ("global_magnitude", s, "global")]
            jobs += [(a, s, d) for a in SECOND_ORDER for d in DISTRIBUTIONS]
        for algorithm, s, d in jobs:
            dense = algorithm == "dense"
            r = one_shot(model, "magnitude" if dense else algorithm, s,
                         "uniform" if dense else d, seed, data, settings)
            if algorithm == "dense":
                r = replace(r, algorithm="dense", distribution="-")
            results.append(r)
            if progress is not None:
                progress(f"one-shot seed {seed} {r.algorithm:16s} {d:7s} {s:.2f}: "
                         f"acc {r.accuracy:.3f} ({r.seconds:.2f} s)")
    return results


def run(config: bench.Config, settings: Settings = Settings(),
        progress: Callable[[str], None] | None = None) -> list[bench.Result]:
    """Dense, the magnitude references and OBS/M-FAC at every sparsity and distribution."""
    data = bench.load_digits_split(config.train_limit)
    results = []
    for seed in config.seeds:
        jobs: list[tuple[str, float, str]] = [("dense", 0.0, "-")]
        for s in config.sparsities:
            jobs += [("magnitude", s, "uniform"), ("magnitude", s, "erk"),
                     ("global_magnitude", s, "global")]
            jobs += [(a, s, d) for a in SECOND_ORDER for d in DISTRIBUTIONS]
        for algorithm, s, d in jobs:
            if algorithm in SECOND_ORDER:
                r = train(algorithm, s, d, seed, config, data, settings)
            else:
                r = bench.train(None if algorithm == "dense" else algorithm, s, d, seed, config,
                                data)
            results.append(r)
            if progress is not None:
                progress(f"seed {seed} {r.algorithm:16s} {d:7s} {s:.2f}: acc {r.accuracy:.3f} "
                         f"sparsity {r.measured:.4f} ({r.seconds:.2f} s)")
    return results


def _rows(results: list[bench.Result], sps: tuple[float, ...]) -> list[str]:
    lines = ["| algorithm | distribution | " + " | ".join(f"{s:.0%}" for s in sps) + " |",
             "|---|---|" + "---|" * len(sps)]
    for (algorithm, dist), accs in bench.summarise(results).items():
        if algorithm != "dense":
            lines.append(f"| {algorithm} | {dist} | "
                         + " | ".join(f"{accs[s]:.3f}" for s in sps) + " |")
    return lines


def markdown(config: bench.Config, settings: Settings, results: list[bench.Result],
             seconds: float, shots: list[bench.Result] | None = None) -> str:
    from measure import machine

    table = bench.summarise(results)
    sps = config.sparsities
    pruned = [r for r in results if r.algorithm != "dense"]
    exact = sum(r.mask_zeros == r.expected_zeros for r in pruned)
    lines = [
        "# Second-order pruners (OBS/oBERT, M-FAC) on the digits MLP",
        "",
        "Written by `python benchmarks/pruners_quality_second_order.py`: the setup of "
        "`pruners_quality.py`'s table in PRUNERS.md (same split, MLP, initialisation, "
        "optimizer, batches, seeds "
        f"{', '.join(map(str, config.seeds))}; {config.epochs} epochs). OBS and M-FAC prune at 6 "
        "updates every 10 % of training from 10 % (the cubic ramp reaches the target at 60 %), "
        f"each from the last {settings.num_grads} training gradients (at most 10 % of the "
        f"steps), damp {settings.damp:g} (both damps picked by a sweep on seed 0), Fisher "
        f"blocks {settings.obs_block} (OBS) and "
        f"{settings.mfac_block} (M-FAC); the compensated weights are kept. Magnitude rows: "
        f"`pruners_quality.train` in the same run. {exact} of {len(pruned)} pruned runs zero "
        "exactly the engine's count.",
        "",
        f"Dense accuracy: **{table[('dense', '-')][0.0]:.3f}**.",
        "",
        "Gradual pruning with fine-tuning (test accuracy, mean over seeds):",
        "",
        *_rows(results, sps),
    ]
    if shots:
        lines += [
            "", "One-shot pruning of the trained dense model, no retraining: OBS and M-FAC "
            f"from {settings.num_grads} gradients of batches of {settings.oneshot_batch} "
            f"training images at the trained weights, damp {settings.oneshot_damp:g} (the "
            "compensation applied), magnitude by `|w|` alone:", "", *_rows(shots, sps)]
    lines += ["", "Machine:", ""] + [f"- {k}: {v}" for k, v in machine().items()]
    lines += [f"- run time: {seconds:.0f} s for {len(results)} trainings"
              f"{f' and {len(shots)} one-shot prunings' if shots else ''}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny run, print only")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seeds", type=str, default=None, help="comma-separated seeds")
    parser.add_argument("--damp", type=float, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config, settings = bench.Config(), Settings()
    if args.quick:
        config = replace(config, epochs=2, seeds=(0,), train_limit=256)
    if args.epochs is not None:
        config = replace(config, epochs=args.epochs)
    if args.seeds is not None:
        config = replace(config, seeds=tuple(int(s) for s in args.seeds.split(",")))
    if args.damp is not None:
        settings = replace(settings, damp=args.damp)
    began = time.perf_counter()
    results = run(config, settings, progress=lambda line: print(line, flush=True))
    shots = run_one_shot(config, settings, progress=lambda line: print(line, flush=True))
    text = markdown(config, settings, results, time.perf_counter() - began, shots)
    print(text)
    if not args.quick:
        out = bench.HERE / "PRUNERS_SECOND_ORDER.md"
        bench.write_section(out, "quality-second-order", text)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
