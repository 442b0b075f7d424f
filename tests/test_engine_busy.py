"""The busy probe (fsparse/_src/engine/busy.py) and the thread counts it gives short kernels."""

from __future__ import annotations

import os

import pytest
import torch

from fsparse._src.engine import busy as busy_mod
from fsparse._src.engine import keep_masks as keep_mod
from fsparse._src.engine import native
from fsparse._src.engine.busy import BusyProbe


def _loadavg(tmp_path, text: str):
    path = tmp_path / "loadavg"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("field", "cores", "expected"), [
    ("5/200", 4, True), ("4/200", 4, False), ("1/86", 2, False), ("3/86", 2, True)])
def test_busy_when_more_threads_are_runnable_than_cores(tmp_path, field, cores, expected):
    path = _loadavg(tmp_path, f"0.50 0.40 0.30 {field} 1234\n")
    assert BusyProbe(str(path), every=0, cores=cores)() is expected


@pytest.mark.parametrize("text", ["", "0.1 0.2 0.3\n", "0.1 0.2 0.3 x/86 12\n", "a b c 5 d\n"])
def test_an_unreadable_count_is_not_busy(tmp_path, text):
    assert BusyProbe(str(_loadavg(tmp_path, text)), every=0, cores=1)() is False
    assert BusyProbe(str(tmp_path / "missing"), every=0, cores=1)() is False


def test_the_probe_reads_at_most_every_interval(tmp_path):
    path = _loadavg(tmp_path, "0 0 0 1/10 1\n")
    cached, fresh = BusyProbe(str(path), every=3600, cores=2), BusyProbe(str(path), every=0,
                                                                         cores=2)
    assert not cached() and not fresh()
    path.write_text("0 0 0 9/10 1\n")
    assert not cached()  # read less than an hour ago
    assert fresh()


def test_the_machine_probe_reads_linux_against_every_logical_cpu():
    assert busy_mod.busy.path == "/proc/loadavg" and busy_mod.busy.every == 0.005
    assert busy_mod.busy.cores == (os.cpu_count() or 1)


def test_short_work_takes_one_thread_only_while_busy(monkeypatch):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(busy_mod, "busy", lambda: True)
        assert native.threads(1 << 24, 1 << 10, short=True) == 1
        assert native.threads(1 << 24, 1 << 10) == 2  # a long pass keeps its threads
        monkeypatch.setattr(busy_mod, "busy", lambda: False)
        assert native.threads(1 << 24, 1 << 10, short=True) == 2
    finally:
        torch.set_num_threads(threads)


def test_a_busy_machine_gives_the_same_masks(monkeypatch):
    if native.KERNELS is None:
        pytest.skip("the kernels are not built: no short kernels to run")
    gen = torch.Generator().manual_seed(9)
    pieces = [torch.randn(2_000_000, generator=gen), torch.randn(700_001, generator=gen)]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(busy_mod, "busy", lambda: False)
        quiet = keep_mod.keep_masks(pieces, 1_300_000)
        monkeypatch.setattr(busy_mod, "busy", lambda: True)
        loaded = keep_mod.keep_masks(pieces, 1_300_000)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(x, y) for x, y in zip(quiet, loaded))
    assert sum(int((~m).sum()) for m in quiet) == 1_300_000


def test_a_busy_machine_runs_the_kernels_on_blocking_threads(monkeypatch):
    if native.KERNELS is None:
        pytest.skip("the kernels are not built: no threads of theirs to choose")
    told = []
    real = native.KERNELS.fsp_blocking
    monkeypatch.setattr(native.KERNELS, "fsp_blocking", lambda on: told.append(on) or real(on))
    gen = torch.Generator().manual_seed(10)
    pieces = [torch.randn(3_000_000, generator=gen)]
    flags = torch.rand(5_000_000, generator=gen) > 0.5
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(busy_mod, "busy", lambda: False)
        quiet = keep_mod.keep_masks(pieces, 1_000_000), native.count_true(flags)
        monkeypatch.setattr(busy_mod, "busy", lambda: True)
        loaded = keep_mod.keep_masks(pieces, 1_000_000), native.count_true(flags)
        assert native._told[1] is True
        monkeypatch.setattr(busy_mod, "busy", lambda: False)
        native.threads(1)
        assert native._told[1] is False
    finally:
        torch.set_num_threads(threads)
        real(native._told[1])
    assert told[-2:] == [True, False]  # told once each way, not at every call
    assert len(told) <= 3
    assert torch.equal(quiet[0][0], loaded[0][0]) and quiet[1] == loaded[1]
