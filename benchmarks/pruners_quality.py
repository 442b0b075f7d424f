"""Accuracy vs sparsity of every training pruner in ``fsparse.pruners`` (issue 12).

A small MLP (64-128-128-10) learns scikit-learn's handwritten digits (1,797
8x8 images, shipped with scikit-learn: nothing is downloaded), on one fixed
stratified train/test split, with SGD + momentum on minibatches. Each algorithm
trains the same number of steps from the same initialisation, used as a user
would: ``apply_masks`` under ``torch.func.functional_call`` for the forward
pass, ``update`` at every step with the gradients, changed weights written
back, gradients masked (except for straight-through pruners) and
``reset_optimizer_state`` for revived weights. Only the three weight matrices
are pruned; biases stay dense. The sparsity reported is measured on the
trained model: the weights its final masks zero, over the weight matrices (a
regrown weight may also sit at exactly 0; ``Result.zeros`` counts those too).

    python benchmarks/pruners_quality.py             # full run: PRUNERS.md table + plot
    python benchmarks/pruners_quality.py --quick     # a few seconds, prints only

``run(config)`` is what ``tests/test_bench_pruners_smoke.py`` calls.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fsparse import pruners

HERE = Path(__file__).resolve().parent

# name -> whether it takes a distribution ("uniform"/"erk"); the global ones have one threshold.
ALGORITHMS: dict[str, bool] = {
    "magnitude": True, "global_magnitude": False, "random": True, "saliency": True,
    "global_saliency": False, "snip": False, "ste_magnitude": True, "ste_random": True,
    "static_random": True, "set": True, "rigl": True, "acdc": True, "movement": True,
}


@dataclass(frozen=True)
class Config:
    """One benchmark run: what to train and how long."""

    epochs: int = 30
    batch_size: int = 64
    hidden: tuple[int, ...] = (128, 128)
    lr: float = 0.05
    momentum: float = 0.9
    seeds: tuple[int, ...] = (0, 1)
    sparsities: tuple[float, ...] = (0.8, 0.9, 0.95)
    distributions: tuple[str, ...] = ("uniform", "erk")
    algorithms: tuple[str, ...] = tuple(ALGORITHMS)
    train_limit: int | None = None  # use only this many training images (smoke tests)


@dataclass
class Result:
    algorithm: str
    distribution: str  # "uniform", "erk", "global" or "-" (dense)
    sparsity: float  # the target
    seed: int
    accuracy: float
    measured: float  # weights the final masks zero / weight count
    expected_zeros: int  # what the engine's rounding promises for the target
    zeros: int  # exact zeros of the effective weights (>= mask_zeros: a live weight may be 0)
    mask_zeros: int
    seconds: float
    targets: dict[str, float] = field(default_factory=dict)


def load_digits_split(limit: int | None = None) -> tuple[torch.Tensor, ...]:
    """The fixed split: 75 % train / 25 % test, stratified, ``random_state=0``; pixels / 16."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    if limit is not None:
        x_tr, y_tr = x_tr[:limit], y_tr[:limit]
    to_x = lambda a: torch.tensor(a, dtype=torch.float32) / 16.0  # noqa: E731
    to_y = lambda a: torch.tensor(a, dtype=torch.long)  # noqa: E731
    return to_x(x_tr), to_y(y_tr), to_x(x_te), to_y(y_te)


def make_model(hidden: tuple[int, ...], seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    sizes = (64, *hidden)
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], 10))


def make_pruner(algorithm: str, sparsity: float, distribution: str, total: int,
                seed: int) -> pruners.Pruner:
    """Each algorithm on its usual schedule, scaled to ``total`` training steps.

    Gradual pruners ramp (cubic) from 10 % to 60 % of training, updating masks
    every 2 % of it, then fine-tune; SET/RigL drop and grow every 2 % until 75 %
    (cosine-decayed drop fraction from 0.3); AC/DC: 10 % dense warm-up, sparse
    and dense phases of 10 % each, sparse from 70 %; SNIP prunes at step 0.
    """
    start, end, every = total // 10, total * 6 // 10, max(total // 50, 1)
    dist: dict[str, Any] = {"distribution": distribution} if ALGORITHMS[algorithm] else {}
    ramp = {"start_step": start, "end_step": end, "update_every": every}
    if algorithm in ("magnitude", "saliency", "movement", "ste_magnitude"):
        return getattr(pruners, algorithm)(sparsity, **dist, **ramp)  # type: ignore[no-any-return]
    if algorithm in ("global_magnitude", "global_saliency"):
        return getattr(pruners, algorithm)(sparsity, **ramp)  # type: ignore[no-any-return]
    if algorithm in ("random", "ste_random"):
        return getattr(pruners, algorithm)(sparsity, seed=seed, **dist, **ramp)  # type: ignore[no-any-return]
    if algorithm == "snip":
        return pruners.snip(sparsity)
    if algorithm == "static_random":
        return pruners.static_random(sparsity, seed=seed, **dist)
    if algorithm in ("set", "rigl"):
        stop = total * 3 // 4
        return getattr(pruners, algorithm)(  # type: ignore[no-any-return]
            sparsity, seed=seed, update_every=every, end_step=stop,
            drop_fraction=pruners.cosine_drop_fraction(0.3, stop), **dist)
    if algorithm == "acdc":
        phase = max(total // 10, 1)
        return pruners.acdc(sparsity, init_dense_steps=phase, final_sparse_start=7 * phase,
                            sparse_steps=phase, dense_steps=phase, **dist)
    raise ValueError(f"unknown algorithm {algorithm!r}")


def _expected_zeros(algorithm: str, targets: dict[str, float],
                    weights: dict[str, torch.Tensor], sparsity: float) -> int:
    """Zeros the engine promises: ``round(s * n)`` per tensor, or over all for one threshold."""
    if not ALGORITHMS[algorithm]:
        return round(sparsity * sum(w.numel() for w in weights.values()))
    return sum(round(targets[n] * w.numel()) for n, w in weights.items())


def train(algorithm: str | None, sparsity: float, distribution: str, seed: int, config: Config,
          data: tuple[torch.Tensor, ...]) -> Result:
    """Train one model (``algorithm=None``: dense) and measure its test accuracy and sparsity."""
    began = time.perf_counter()
    x_tr, y_tr, x_te, y_te = data
    model = make_model(config.hidden, seed)
    named: dict[str, torch.Tensor] = dict(model.named_parameters())
    weights = {n: p for n, p in named.items() if n.endswith("weight")}
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    gen = torch.Generator().manual_seed(1000 + seed)
    per_epoch = -(-len(x_tr) // config.batch_size)
    total = config.epochs * per_epoch
    pruner = None if algorithm is None else make_pruner(algorithm, sparsity, distribution,
                                                        total, seed)
    state = None if pruner is None else pruner.init({n: p.detach() for n, p in weights.items()})
    straight = pruner is not None and pruner.straight_through
    # RigL grows by |g| of the pruned weights too: it needs the dense gradient, which the
    # straight-through forward gives (same forward value); its step still masks the gradient.
    dense_grads = straight or algorithm == "rigl"

    def loss_at(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        masked = named if state is None else pruners.apply_masks(state, named,
                                                                 straight_through=dense_grads)
        logits = torch.func.functional_call(model, masked, (xb,))
        return nn.functional.cross_entropy(logits, yb)

    for _ in range(config.epochs):
        order = torch.randperm(len(x_tr), generator=gen)
        for i in range(per_epoch):
            idx = order[i * config.batch_size:(i + 1) * config.batch_size]
            loss = loss_at(x_tr[idx], y_tr[idx])
            opt.zero_grad()
            loss.backward()
            if pruner is not None and state is not None:
                given = {n: p.detach() for n, p in weights.items()}
                grads = {n: p.grad for n, p in weights.items()}
                new, params = pruner.update(state, given, grads=grads)  # type: ignore[arg-type]
                with torch.no_grad():
                    for n, p in weights.items():
                        if params[n] is not given[n]:  # revived weights restart at zero
                            p.copy_(params[n])
                        if not straight:  # pruned weights stay put
                            p.grad.mul_(new.masks[n])  # type: ignore[union-attr]
                pruners.reset_optimizer_state(opt, weights, pruner.resets(state, new))
                state = new
            opt.step()
    if pruner is not None and state is not None and straight:
        # Straight-through masks follow the dense weights: take them from the final weights.
        state, _ = pruner.update(state, {n: p.detach() for n, p in weights.items()})
    with torch.no_grad():
        effective = named if state is None else pruners.apply_masks(state, named)
        logits = torch.func.functional_call(model, effective, (x_te,))
        accuracy = float((logits.argmax(1) == y_te).float().mean())
        zeros = sum(int((effective[n] == 0).sum()) for n in weights)
    count = sum(w.numel() for w in weights.values())
    if state is None or pruner is None:
        mask_zeros, expected, targets = 0, 0, {}
    else:
        mask_zeros = sum(int((~m).sum()) for m in state.masks.values())
        targets = dict(state.targets)
        expected = _expected_zeros(pruner.name, targets, dict(weights), sparsity)
    return Result(algorithm or "dense", distribution, sparsity, seed, accuracy,
                  mask_zeros / count, expected, zeros, mask_zeros, time.perf_counter() - began,
                  targets)


def combos(config: Config) -> list[tuple[str, float, str]]:
    """Every (algorithm, sparsity, distribution) of the run, dense excluded."""
    out = []
    for algorithm in config.algorithms:
        dists = config.distributions if ALGORITHMS[algorithm] else ("global",)
        out += [(algorithm, s, d) for s in config.sparsities for d in dists]
    return out


def run(config: Config, progress: Callable[[str], None] | None = None) -> list[Result]:
    """Dense plus every combination, for every seed."""
    data = load_digits_split(config.train_limit)
    results = []
    for seed in config.seeds:
        results.append(train(None, 0.0, "-", seed, config, data))
        for algorithm, sparsity, dist in combos(config):
            results.append(train(algorithm, sparsity, dist, seed, config, data))
            if progress is not None:
                r = results[-1]
                progress(f"seed {seed} {algorithm:16s} {dist:7s} {sparsity:.2f}: "
                         f"acc {r.accuracy:.3f} sparsity {r.measured:.4f} ({r.seconds:.2f} s)")
    return results


def summarise(results: list[Result]) -> dict[tuple[str, str], dict[float, float]]:
    """(algorithm, distribution) -> sparsity -> mean accuracy over seeds."""
    groups: dict[tuple[str, str], dict[float, list[float]]] = {}
    for r in results:
        groups.setdefault((r.algorithm, r.distribution), {}).setdefault(r.sparsity, []).append(
            r.accuracy)
    return {k: {s: statistics.fmean(v) for s, v in d.items()} for k, d in groups.items()}


def markdown(config: Config, results: list[Result], seconds: float) -> str:
    from measure import machine

    table = summarise(results)
    dense = table[("dense", "-")][0.0]
    sps = config.sparsities
    pruned = [r for r in results if r.algorithm != "dense"]
    exact = sum(r.mask_zeros == r.expected_zeros for r in pruned)
    lines = [
        "# fsparse.pruners: accuracy vs sparsity (scikit-learn digits)",
        "",
        "Written by `python benchmarks/pruners_quality.py` (`make bench-pruners`). "
        f"MLP 64-{'-'.join(map(str, config.hidden))}-10, SGD lr {config.lr} momentum "
        f"{config.momentum}, batch {config.batch_size}, {config.epochs} epochs, the same "
        "steps and initialisation for every algorithm; test accuracy on the fixed 25 % split "
        f"(450 images), mean over seeds {', '.join(map(str, config.seeds))}. Sparsity is of "
        "the three weight matrices (biases dense), measured on the trained model's final "
        f"masks: {exact} of {len(pruned)} pruned runs zero exactly the engine's count for "
        "their target (`round(s * n)` per tensor, or over all weights for the global "
        "pruners). Schedules: see `make_pruner` in the script.",
        "",
        f"Dense accuracy: **{dense:.3f}**.",
        "",
        "| algorithm | distribution | " + " | ".join(f"{s:.0%}" for s in sps) + " |",
        "|---|---|" + "---|" * len(sps),
    ]
    for (algorithm, dist), accs in table.items():
        if algorithm == "dense":
            continue
        cells = " | ".join(f"{accs[s]:.3f}" for s in sps)
        lines.append(f"| {algorithm} | {dist} | {cells} |")
    top = max(sps)
    for dist in ("uniform", "erk"):
        ranked = sorted(((accs[top], a) for (a, d), accs in table.items()
                         if d in (dist, "global") and top in accs), reverse=True)
        if ranked:
            order = ", ".join(f"{a} {acc:.3f}" for acc, a in ranked)
            lines += ["", f"Ordering at {top:.0%} ({dist}, global pruners included): {order}."]
    measured = max(abs(r.measured - r.sparsity) for r in results if r.algorithm != "dense")
    lines += ["", f"Largest |measured - target| sparsity: {measured:.5f} (rounding to whole "
              "weights per tensor).", "", "Machine:", ""]
    lines += [f"- {k}: {v}" for k, v in machine().items()]
    lines += [f"- run time: {seconds:.0f} s for {len(results)} trainings "
              f"(torch threads: {torch.get_num_threads()})", ""]
    return "\n".join(lines)


def write_section(path: Path, key: str, text: str) -> None:
    """Put ``text`` between ``<!-- key -->`` markers in ``path``, keeping the other sections."""
    begin, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    old = path.read_text() if path.exists() else ""
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        new = (old.rstrip() + "\n\n" if old.strip() else "") + block
    path.write_text(new)


def plot(config: Config, results: list[Result], path: Path) -> None:
    """Test error (log scale) vs sparsity, one panel per distribution, one colour per algorithm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summarise(results)
    dense = 1 - table[("dense", "-")][0.0]
    cmap = plt.get_cmap("tab20")
    colours = [cmap(i) for i in range(20)]
    style = {a: (colours[i % len(colours)], "os^vD<>"[i % 7]) for i, a in enumerate(ALGORITHMS)}
    xs = list(config.sparsities)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), sharey=True)
    for ax, dist in zip(axes, ("uniform", "erk")):
        for (algorithm, d), accs in table.items():
            if algorithm == "dense" or d not in (dist, "global"):
                continue
            colour, marker = style[algorithm]
            ax.plot([100 * s for s in xs], [max(1 - accs[s], 1e-3) for s in xs], color=colour,
                    marker=marker, ms=4, lw=1.2, label=algorithm)
        ax.axhline(max(dense, 1e-3), color="k", ls="--", lw=1, label="dense")
        ax.set_yscale("log")
        ax.set_title(f"{dist} (global pruners: one threshold)")
        ax.set_xlabel("sparsity (%)")
        ax.set_xticks([100 * s for s in xs])
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("test error (1 - accuracy), log scale")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, ncol=1, loc="center right")
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    fig.savefig(path, dpi=72)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny run, print only")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seeds", type=str, default=None, help="comma-separated seeds")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for this script (a tiny model: 1 is fastest)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = Config()
    if args.quick:
        config = replace(config, epochs=2, seeds=(0,), train_limit=256)
    if args.epochs is not None:
        config = replace(config, epochs=args.epochs)
    if args.seeds is not None:
        config = replace(config, seeds=tuple(int(s) for s in args.seeds.split(",")))
    began = time.perf_counter()
    results = run(config, progress=lambda line: print(line, flush=True))
    seconds = time.perf_counter() - began
    text = markdown(config, results, seconds)
    print(text)
    if not args.quick:
        write_section(HERE / "PRUNERS.md", "quality", text)
        plot(config, results, HERE / "pruners_quality.png")
        print(f"wrote {HERE / 'PRUNERS.md'} and {HERE / 'pruners_quality.png'}")


if __name__ == "__main__":
    main()
