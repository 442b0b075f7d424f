"""benchmarks/pruners_quality_second_order.py in a tiny configuration.

Every row appears (dense, the magnitude references, OBS and M-FAC under uniform,
ERK and global selection), and every pruned model's final masks zero exactly
the engine's count for its target, with the compensated weights kept at 0 there.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import pruners_quality as bench
import pruners_quality_second_order as second

CONFIG = bench.Config(epochs=2, seeds=(0,), sparsities=(0.9,), train_limit=320)


def test_tiny_run_has_every_row_and_exact_counts() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = second.run(CONFIG)
    finally:
        torch.set_num_threads(threads)
    got = {(r.algorithm, r.distribution) for r in results}
    assert got == {("dense", "-"), ("magnitude", "uniform"), ("magnitude", "erk"),
                   ("global_magnitude", "global")} | {
        (a, d) for a in second.SECOND_ORDER for d in second.DISTRIBUTIONS}
    for r in results:
        if r.algorithm == "dense":
            continue
        assert r.mask_zeros == r.expected_zeros, (r.algorithm, r.distribution)
        assert abs(r.measured - 0.9) < 1e-3
        assert r.zeros >= r.mask_zeros
    text = second.markdown(CONFIG, second.Settings(), results, 1.0)
    assert "| obs | global |" in text and "| mfac | erk |" in text


def test_tiny_one_shot_has_every_row_and_exact_counts() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        shots = second.run_one_shot(CONFIG, second.Settings(num_grads=8))
    finally:
        torch.set_num_threads(threads)
    assert len({(r.algorithm, r.distribution) for r in shots}) == 1 + 3 + 6
    for r in shots:
        assert r.mask_zeros == r.expected_zeros, (r.algorithm, r.distribution)
        assert r.zeros >= r.mask_zeros
    dense = [r for r in shots if r.algorithm == "dense"]
    assert len(dense) == 1 and dense[0].mask_zeros == 0
