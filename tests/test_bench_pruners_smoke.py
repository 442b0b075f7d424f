"""The pruner quality benchmark (benchmarks/pruners_quality.py) in a tiny configuration.

Every algorithm trains a few epochs on the digits at 90 % sparsity: the dense
model must learn (well above the 10 % of chance), every pruned model's final
masks must zero exactly the engine's count for its target, and the report and
the plot must be written (scikit-learn is in the ``test`` extra, matplotlib in
``cli``). Also: ``import fsparse`` does not import scikit-learn.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import pruners_quality as bench

CONFIG = bench.Config(epochs=4, seeds=(0,), sparsities=(0.9,))


@pytest.fixture(scope="module")
def results() -> list[bench.Result]:
    # One thread, as the benchmark script runs: a tiny model's many small ops are much
    # faster so on a busy machine. Restored afterwards for the rest of the session.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return bench.run(CONFIG)
    finally:
        torch.set_num_threads(threads)


def test_every_algorithm_and_distribution_ran(results: list[bench.Result]) -> None:
    got = {(r.algorithm, r.distribution) for r in results}
    want = {("dense", "-")} | {(a, d) for a, _, d in bench.combos(CONFIG)}
    assert got == want
    assert len(want) == 1 + 10 * 2 + 3  # per-tensor algorithms x 2 distributions + 3 global
    assert set(bench.ALGORITHMS) >= {"magnitude", "random", "snip", "set", "rigl", "acdc",
                                     "movement", "static_random", "ste_magnitude"}


def test_dense_model_learns(results: list[bench.Result]) -> None:
    dense = [r for r in results if r.algorithm == "dense"]
    assert len(dense) == 1
    assert dense[0].accuracy > 0.8  # chance is 0.1
    assert dense[0].mask_zeros == 0


def test_measured_sparsity_equals_target(results: list[bench.Result]) -> None:
    for r in results:
        if r.algorithm == "dense":
            continue
        assert r.mask_zeros == r.expected_zeros, (r.algorithm, r.distribution)
        assert abs(r.measured - 0.9) < 1e-3, (r.algorithm, r.distribution, r.measured)
        assert r.zeros >= r.mask_zeros  # every masked weight is zero in the effective model
        assert 0.0 <= r.accuracy <= 1.0


def test_erk_targets_differ_per_tensor_and_keep_the_count(
        results: list[bench.Result]) -> None:
    erk = next(r for r in results if r.algorithm == "magnitude" and r.distribution == "erk")
    uniform = next(r for r in results
                   if r.algorithm == "magnitude" and r.distribution == "uniform")
    assert len(set(erk.targets.values())) > 1  # ERK: not one sparsity everywhere
    assert set(uniform.targets.values()) == {0.9}
    assert abs(erk.mask_zeros - uniform.mask_zeros) <= len(erk.targets)


def test_pruned_models_beat_chance(results: list[bench.Result]) -> None:
    for name in ("magnitude", "global_magnitude", "snip"):
        acc = [r.accuracy for r in results if r.algorithm == name]
        assert min(acc) > 0.3, (name, acc)


def test_report_and_plot(results: list[bench.Result], tmp_path: Path) -> None:
    text = bench.markdown(CONFIG, results, 1.0)
    assert "| magnitude | erk |" in text and "Dense accuracy" in text
    target = tmp_path / "PRUNERS.md"
    target.write_text("<!-- speed -->\nspeed table\n<!-- /speed -->\n")
    bench.write_section(target, "quality", text)
    bench.write_section(target, "quality", text)  # replaced, not appended twice
    written = target.read_text()
    assert written.count("<!-- quality -->") == 1 and "speed table" in written
    bench.plot(CONFIG, results, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"


def test_import_fsparse_does_not_import_sklearn() -> None:
    code = ("import sys, fsparse, fsparse.pruners; "
            "assert 'sklearn' not in sys.modules, 'sklearn imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
