"""The recycled memory of large fresh outputs (fsparse/_src/engine/pool.py, kernels/pool.c).

A block is reused only once torch has freed every tensor and view over it; the next
output of its size takes it; the cache is capped; outputs are ordinary tensors.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
import torch

import fsparse
from fsparse import pruners
from fsparse._src.engine import native, pool

pytestmark = pytest.mark.usefixtures("native_path")

BIG = (pool.MIN_BYTES // 4 + 1000,)  # float32 elements just over the pool's threshold


@pytest.fixture(autouse=True)
def _empty_cache():
    fsparse.release_cached_memory()
    yield
    fsparse.release_cached_memory()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool, torch.int64,
                                   torch.bfloat16])
def test_large_outputs_are_ordinary_tensors_of_their_shape_and_dtype(dtype):
    t = pool.empty((3, pool.MIN_BYTES // 3 + 7), dtype)
    assert type(t) is torch.Tensor and t.dtype == dtype and t.device.type == "cpu"
    assert t.shape == (3, pool.MIN_BYTES // 3 + 7) and t.is_contiguous()
    assert not t.untyped_storage().resizable()  # from the pool
    t.fill_(1)
    assert bool((t == 1).all())
    small = pool.empty((5, 2), dtype)
    assert small.shape == (5, 2) and small.untyped_storage().resizable()  # torch's own


def test_a_block_is_reused_only_after_every_view_is_gone():
    a = pool.empty(BIG, torch.float32)
    a.fill_(7.0)
    where = a.data_ptr()
    view = a[100:200]
    del a
    assert fsparse.cached_memory() == 0  # the view still holds the storage
    b = pool.empty(BIG, torch.float32)
    assert b.data_ptr() != where
    b.fill_(-1.0)
    assert bool((view == 7.0).all())  # untouched by the new output
    del view
    assert fsparse.cached_memory() >= pool.MIN_BYTES
    c = pool.empty(BIG, torch.float32)
    assert c.data_ptr() == where and fsparse.cached_memory() == 0


def test_other_sizes_do_not_take_a_cached_block():
    a = pool.empty(BIG, torch.float32)
    where = a.data_ptr()
    del a
    b = pool.empty((BIG[0] * 2,), torch.float32)
    assert b.data_ptr() != where and fsparse.cached_memory() > 0


def test_release_unmaps_the_cached_blocks_and_reports_their_bytes():
    a = pool.empty(BIG, torch.float32)
    del a
    held = fsparse.cached_memory()
    assert held >= pool.MIN_BYTES
    assert fsparse.release_cached_memory() == held
    assert fsparse.cached_memory() == 0 and fsparse.release_cached_memory() == 0


def test_the_cap_unmaps_what_does_not_fit():
    lib = native.KERNELS
    try:
        lib.fsp_pool_limit(pool.MIN_BYTES * 2)  # room for one block of BIG's size, not two
        a, b = pool.empty(BIG, torch.float32), pool.empty(BIG, torch.float32)
        del a
        one = fsparse.cached_memory()
        del b
        assert one > 0 and fsparse.cached_memory() == one
    finally:
        lib.fsp_pool_limit(pool._CAP)


def test_a_block_torch_refuses_goes_back(monkeypatch):
    def refuse(_):
        raise RuntimeError("refused")

    monkeypatch.setattr(torch, "from_dlpack", refuse)
    t = pool.empty(BIG, torch.float32)  # torch's own allocation instead
    assert t.shape == BIG and t.untyped_storage().resizable()
    assert fsparse.cached_memory() >= pool.MIN_BYTES


def test_tensors_freed_on_other_threads_return_safely():
    made = [pool.empty(BIG, torch.uint8) for _ in range(8)]
    for t, v in zip(made, range(8)):
        t.fill_(v)
    keep = made[::2]
    frees = [threading.Thread(target=made.__setitem__, args=(i, None)) for i in range(1, 8, 2)]
    for f in frees:
        f.start()
    for f in frees:
        f.join()
    fresh = [pool.empty(BIG, torch.uint8).fill_(99) for _ in range(4)]
    assert all(bool((t == v).all()) for t, v in zip(keep, range(0, 8, 2)))
    assert {t.data_ptr() for t in fresh}.isdisjoint(t.data_ptr() for t in keep)


def test_an_update_never_writes_the_masks_of_a_state_still_held():
    params = {"w": torch.randn(pool.MIN_BYTES // 16 + 16, 16)}  # its bool masks are pooled
    pruner = pruners.magnitude(0.5, start_step=0, end_step=4, update_every=1)
    dense = pruner.update(pruner.init(params), params)[0]  # step 0 of the ramp: all kept
    first = pruner.update(dense, params)[0]
    pooled = not first.masks["w"].untyped_storage().resizable()
    saved = first.masks["w"].clone()
    second = pruner.update(first, params)[0]
    apart = second.masks["w"].data_ptr() != first.masks["w"].data_ptr()
    intact = torch.equal(first.masks["w"], saved)
    assert pooled and apart and intact
    where = first.masks["w"].data_ptr()
    del first, saved  # its mask block goes back: the next update of that size takes it
    third = pruner.update(second, params)[0]
    reused = third.masks["w"].data_ptr() == where
    higher = int(third.masks["w"].sum()) < int(second.masks["w"].sum())  # its own masks
    assert reused and higher


def _run(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


def test_fsparse_pool_0_gives_torchs_own_tensors():
    got = _run({"FSPARSE_POOL": "0"}, (
        "import torch, fsparse; from fsparse._src.engine import pool\n"
        "t = pool.empty((pool.MIN_BYTES,), torch.bool)\n"
        "print(t.untyped_storage().resizable(), fsparse.cached_memory())"))
    assert got.returncode == 0, got.stderr
    assert got.stdout.split() == ["True", "0"]


@pytest.mark.parametrize("bad", ["lots", "-1"])
def test_a_bad_pool_size_names_the_variable(bad):
    got = _run({"FSPARSE_POOL_BYTES": bad}, "import fsparse")
    assert got.returncode != 0
    assert "ValueError: FSPARSE_POOL_BYTES must be" in got.stderr and bad in got.stderr


def test_a_fork_while_another_thread_uses_the_pool_leaves_the_child_a_working_pool():
    """pool.c's lock is taken around fork (pthread_atfork): a thread that holds it while
    the main thread forks (ctypes calls run without the GIL, as a DataLoader's fork meets
    a training thread) must not leave the child a lock that nobody will release."""
    import time

    size = (pool.SCRATCH_BYTES + 1,)  # one 2 MiB block each (mapped, never touched)
    held = [pool.empty(size, torch.uint8, scratch=True) for _ in range(400)]
    del held  # 400 cached blocks: each fsp_pool_limit call walks them all under the lock
    assert fsparse.cached_memory() >= 400 * (2 << 20)
    stop = threading.Event()

    def churn() -> None:  # holds the lock most of the time, without the GIL
        while not stop.is_set():
            for _ in range(64):
                native.KERNELS.fsp_pool_limit(pool._CAP)

    worker = threading.Thread(target=churn, daemon=True)
    worker.start()
    hung = 0
    try:
        for _ in range(150):
            pid = os.fork()
            if pid == 0:  # the child: one take and one give-back, then out
                t = pool.empty(size, torch.uint8, scratch=True)
                del t
                os._exit(0)
            deadline = time.monotonic() + 5.0
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    hung += 1
                    break
                time.sleep(0.001)
            if hung:
                break
    finally:
        stop.set()
        worker.join(10)
    assert hung == 0, "a forked child hung on the pool's lock"
