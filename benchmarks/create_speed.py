"""fsparse.create's mask updates on resnet18's prunable weights, against a read pass (issue 14).

torchvision is not installable here, so resnet18 (11.7M parameters; 20 conv
and one linear weight, 11.68M prunable) is built by hand. Printed, all in one run:

* **read passes**: ``w.abs().sum()`` over every prunable weight, the read pass of
  ``benchmarks/RESULTS.md`` (``cases.py``) that the issue's target cites (its
  fresh ``|w|`` pays first-touch page faults, as any fresh tensor does); the bare
  ``w.sum()``; and ``torch.abs(w, out=buf)`` (one read, one write into a warm
  buffer: ``pruners_speed.py``'s yardstick);
* **floors**: one bool-output compare ``torch.lt(buf, c, out=bools)``, the
  torch path's compare (``gt`` into 0/1 floats, then one bool copy), and fresh
  all-ones bool masks of every weight (their first touch): what any mask costs;
* **global magnitude update**: the manager's mask update of the default
  ``pruning=True`` recipe at a mid-schedule step, from the previous update's
  masks (pure pruner update, then the masks written into the weights as the
  manager does: by the native masked write where the kernels are built, else
  into the previous 0/1 factors reused in place), and for comparison fresh
  ``|w|`` tensors (which the update no longer builds) and the public
  ``global_select_masks`` on them;
* **plain step**: forward, backward and ``SGD.step`` of resnet18 on 8 images 32x32;
* **per mode**: the amortised overhead per step of the recipe (``before_step`` +
  ``after_step``, default recipe with ``num_epochs=20``, 4 steps per epoch, no
  QAT, 80 steps), gradients filled in as a training loop would leave them.

    python benchmarks/create_speed.py                      # every mode
    python benchmarks/create_speed.py --modes True movement
    FSPARSE_NATIVE=0 python benchmarks/create_speed.py --modes True   # the torch path
"""

from __future__ import annotations

import argparse
import functools
import time
from typing import Any

import torch
import torch.nn.functional as F
from measure import median_time as _median_time
from torch import nn

from fsparse import create
from fsparse._src.engine import global_select_masks, native
from fsparse.create.masks import apply_masks, keep_factors, prunable_parameters
from fsparse.create.pruning import step_state
from fsparse.create.schedules import mask_update_due

median_time = functools.partial(_median_time, warm_up=True)  # every timing starts warm
MODES: tuple[Any, ...] = (True, "movement", "acdc", "rigl", "set", "obs", "mfac")
SPE, EPOCHS = 4, 20.0


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.down is None else self.down(x)))


def resnet18() -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                               nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000)]
    return nn.Sequential(*layers)


def _manager(model: nn.Module, mode: Any) -> tuple[create.RecipeManager, torch.optim.SGD]:
    sgd = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    manager, _ = create.initialize(model, sgd, SPE, pruning=mode, quantization=False,
                                   recipe_variables={"num_epochs": EPOCHS})
    return manager, sgd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="*", default=[str(m) for m in MODES])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own, as users run; 1 gives steadier "
                             "timings on a shared machine)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = resnet18()
    weights = prunable_parameters(model)
    numel = sum(w.numel() for w in weights.values())
    print(f"resnet18 by hand: {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{len(weights)} prunable weights, {numel:,} prunable elements; "
          f"{torch.get_num_threads()} threads")

    def read() -> None:
        for w in weights.values():
            w.detach().sum()

    t_read = median_time(read, args.repeats * 3)

    def read_abs() -> None:  # RESULTS.md's read pass (cases.py: ``x.abs().sum()``)
        for w in weights.values():
            w.detach().abs().sum()

    t_results = median_time(read_abs, args.repeats * 3)
    bufs = {n: torch.empty_like(w) for n, w in weights.items()}

    def read_write() -> None:  # benchmarks/pruners_speed.py's yardstick: read + one write
        for n, w in weights.items():
            torch.abs(w.detach(), out=bufs[n])

    t_rw = median_time(read_write, args.repeats * 3)
    bools = {n: torch.empty(w.shape, dtype=torch.bool) for n, w in weights.items()}
    floats = {n: torch.empty_like(w) for n, w in weights.items()}

    def compare() -> None:  # one bool-output compare pass (what any mask must at least cost)
        for n, b in bufs.items():
            torch.lt(b, 0.01, out=bools[n])

    def compare_float() -> None:  # the torch path's compare: 0/1 floats, then one bool copy
        for n, b in bufs.items():
            bools[n].copy_(torch.gt(b, 0.01, out=floats[n]))

    t_lt = median_time(compare, args.repeats * 3)
    t_gt = median_time(compare_float, args.repeats * 3)
    t_fresh = median_time(lambda: [torch.ones(w.shape, dtype=torch.bool)
                                   for w in weights.values()], args.repeats * 3)
    manager, _ = _manager(model, True)
    plan, state = manager._pruning[0]
    detached = {n: w.detach() for n, w in weights.items()}
    t = 10  # a mid-schedule mask update (level ~0.68 of 0.8), from the previous update's masks
    before = max(s for s in range(t) if mask_update_due(plan.modifier, s, SPE))
    state = step_state(plan, state, detached, None, before, SPE)[0]
    update = median_time(lambda: step_state(plan, state, detached, None, t, SPE), args.repeats)
    masks = step_state(plan, state, detached, None, t, SPE)[0].masks
    clone = {n: w.detach().clone() for n, w in weights.items()}
    previous = keep_factors(clone, dict(state.masks))  # the manager's factors, reused in place
    write = median_time(lambda: apply_masks(clone, keep_factors(clone, masks, reuse=previous)),
                        args.repeats)
    scores = median_time(lambda: {n: w.abs() for n, w in detached.items()}, args.repeats)
    absw = {n: w.abs() for n, w in detached.items()}
    select = median_time(lambda: global_select_masks(absw, 0.68), args.repeats)
    total = update + write
    path = ("native kernels: one fused pass over |w|" if native.KERNELS is not None else
            "torch path: |w| read in ~1M batches, one selection pass")
    verdict = "MET" if total <= 3 * t_results else "MISSED"
    print(f"read pass, RESULTS.md's (w.abs().sum()) {t_results * 1e3:8.1f} ms   1.00x")
    print(f"bare read (w.sum())                     {t_read * 1e3:8.1f} ms  "
          f"{t_read / t_results:5.2f}x")
    print(f"read + write pass (abs, out=)           {t_rw * 1e3:8.1f} ms  "
          f"{t_rw / t_results:5.2f}x")
    print(f"floor: one lt(out=bool) pass            {t_lt * 1e3:8.1f} ms  "
          f"{t_lt / t_results:5.2f}x")
    print(f"floor: gt(out=float)+bool copy          {t_gt * 1e3:8.1f} ms  "
          f"{t_gt / t_results:5.2f}x")
    print(f"floor: fresh bool masks                 {t_fresh * 1e3:8.1f} ms  "
          f"{t_fresh / t_results:5.2f}x")
    print(f"global magnitude mask update            {total * 1e3:8.1f} ms  "
          f"{total / t_results:5.2f}x the read pass (target <= 3x: {verdict}); "
          f"{total / t_read:5.2f}x a bare read, {total / t_rw:5.2f}x read+write")
    print(f"  pure pruner update                    {update * 1e3:8.1f} ms  "
          f"{update / t_results:5.2f}x ({path})")
    print(f"  writing the masks                     {write * 1e3:8.1f} ms  "
          f"{write / t_results:5.2f}x")
    print("  for comparison:")
    print(f"    fresh |w| tensors                   {scores * 1e3:8.1f} ms  "
          f"{scores / t_results:5.2f}x (what the update no longer builds)")
    print(f"    global_select_masks(|w|)            {select * 1e3:8.1f} ms  "
          f"{select / t_results:5.2f}x (the public engine call on them, one-shot)")

    sgd = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 1000, (8,))

    def plain() -> None:
        loss = F.cross_entropy(model(x), y)
        sgd.zero_grad()
        loss.backward()
        sgd.step()

    t_plain = median_time(plain, max(3, args.repeats // 2))
    print(f"plain training step                     {t_plain * 1e3:8.1f} ms  "
          f"{t_plain / t_results:5.2f}x the read pass")
    print("amortised recipe overhead per step (80 steps of the default recipe):")
    for name in args.modes:
        mode: Any = {"True": True}.get(name, name)
        torch.manual_seed(0)
        net = resnet18()
        for p in net.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        try:
            manager, opt = _manager(net, mode)
        except (ValueError, MemoryError) as err:
            print(f"  {name:<9} not run: {err}")
            continue
        start = time.perf_counter()
        for _ in range(int(EPOCHS * SPE)):
            manager.before_step(opt)
            manager.after_step()
        per = (time.perf_counter() - start) / (EPOCHS * SPE)
        print(f"  {name:<9} {per * 1e3:8.1f} ms/step  {per / t_results:6.2f}x the read pass  "
              f"{per / t_plain:6.2f}x plain step")


if __name__ == "__main__":
    main()
