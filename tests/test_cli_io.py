"""The command line never loses data: tied weights, metadata, sparse tensors, file modes,
signals, full disks, write errors, masks files and honest load messages (issue 11)."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_helpers import fails, ok, run
from rich.console import Console
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import fsparse
from fsparse.cli import atomic
from fsparse.cli.checkpoint_io import load_masks_file

REPO = Path(__file__).resolve().parents[1]
TEMP_MARK = ".fsparse-"


def sparsified(tensor: torch.Tensor, **config: Any) -> torch.Tensor:
    return tensor * fsparse.norm_mask(tensor, **config)


def state_dict() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "fc.weight": torch.randn(16, 8, generator=g),
        "fc.bias": torch.randn(16, generator=g),
        "emb.weight": torch.randn(32, 8, generator=g),
    }


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if TEMP_MARK in p.name)


@pytest.fixture
def pt_in(tmp_path: Path) -> Path:
    path = tmp_path / "in.pt"
    torch.save(state_dict(), path)
    return path


# ------------------------------------------------------------------ 1. tied weights


def tied_state_dict() -> OrderedDict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    shared = torch.randn(64, 16, generator=g)
    return OrderedDict(
        [
            ("enc.weight", shared),
            ("mid.weight", torch.randn(8, 16, generator=g)),
            ("dec.weight", shared),
        ]
    )


def test_tied_weights_are_one_tensor_in_pt(tmp_path: Path) -> None:
    src, out = tmp_path / "tied.pt", tmp_path / "out.pt"
    torch.save(tied_state_dict(), src)
    ok("sparsify", src, out, "-q")
    loaded = torch.load(out, weights_only=True)
    want = sparsified(tied_state_dict()["enc.weight"], sparsity_level=0.5)
    assert torch.equal(loaded["enc.weight"], want) and torch.equal(loaded["dec.weight"], want)
    assert loaded["enc.weight"].data_ptr() == loaded["dec.weight"].data_ptr()  # still shared
    assert out.stat().st_size < src.stat().st_size * 1.2  # written once, not twice


def test_tied_weights_conflicting_rules_are_refused(tmp_path: Path) -> None:
    src, out = tmp_path / "tied.pt", tmp_path / "out.pt"
    torch.save(tied_state_dict(), src)
    fails(run("sparsify", src, out, "--exclude", "dec.*"), 1, "enc.weight", "dec.weight", "tied")
    fails(run("sparsify", src, out, "--include", "enc.*"), 1, "tied", "left dense")
    assert not out.exists() and leftovers(tmp_path) == []
    ok("sparsify", src, out, "--exclude", "dec.*", "--exclude", "enc.*", "-q")
    loaded = torch.load(out, weights_only=True)
    assert torch.equal(loaded["dec.weight"], tied_state_dict()["dec.weight"])


def test_tied_weights_to_safetensors_follow_save_model(tmp_path: Path) -> None:
    src, out = tmp_path / "tied.pt", tmp_path / "out.safetensors"
    torch.save(tied_state_dict(), src)
    ok("sparsify", src, out, "-q")
    stored = load_file(out)
    assert set(stored) == {"dec.weight", "mid.weight"}  # the first sorted name is kept
    with safe_open(str(out), framework="pt") as f:
        assert f.metadata()["enc.weight"] == "dec.weight"  # as safetensors.torch.save_model
    model = torch.nn.Module()
    model.enc = torch.nn.Linear(16, 64, bias=False)
    model.mid = torch.nn.Linear(16, 8, bias=False)
    model.dec = model.enc  # tied
    from safetensors.torch import load_model

    load_model(model, out)
    assert torch.equal(model.enc.weight, sparsified(tied_state_dict()["enc.weight"]))


def test_help_says_what_happens_to_tied_weights() -> None:
    text = " ".join(ok("sparsify", "--help").output.split())
    assert "Tied weights" in text and "save_model" in text and "keeps them shared" in text


# ------------------------------------------------------------------ 2. suffix vs --format


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("o.safetensors", "pt"),
        ("o.pt", "safetensors"),
        ("o.pth", "safetensors"),
        ("o.bin", "safetensors"),
    ],
)
def test_format_contradicting_suffix_is_refused(
    name: str, fmt: str, pt_in: Path, tmp_path: Path
) -> None:
    fails(run("sparsify", pt_in, tmp_path / name, "--format", fmt), 2, "--format", "contradicts")
    assert not (tmp_path / name).exists()
    ok("sparsify", pt_in, tmp_path / "o.weights", "--format", fmt, "-q")  # no known suffix


# ------------------------------------------------------------------ 3. metadata


def test_safetensors_metadata_is_kept(tmp_path: Path) -> None:
    src, out = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    meta = {"format": "pt", "note": "mine", "ss_network_dim": "8", "modelspec.title": "x"}
    save_file(state_dict(), src, metadata=meta)
    ok("sparsify", src, out, "-q")
    with safe_open(str(out), framework="pt") as f:
        got = f.metadata()
    assert {k: got[k] for k in meta} == meta
    assert "fc.weight" in json.loads(got["fsparse"])


# ------------------------------------------------------------------ 4. sparse tensors


def sparse_state_dict() -> dict[str, torch.Tensor]:
    sd = state_dict()
    sd["adj.coo"] = torch.eye(6).to_sparse_coo() * 2.0
    sd["adj.csr"] = torch.eye(5).to_sparse_csr()
    return sd


def test_sparse_tensors_pass_through(tmp_path: Path) -> None:
    src, out = tmp_path / "in.pt", tmp_path / "out.pt"
    torch.save(sparse_state_dict(), src)
    result = ok("sparsify", src, out, "--exclude", "adj.coo")
    assert "passed through 2 sparse-layout tensors" in " ".join(result.stderr.split())
    loaded = torch.load(out, weights_only=True)
    assert loaded["adj.coo"].layout == torch.sparse_coo
    assert torch.equal(loaded["adj.coo"].to_dense(), sparse_state_dict()["adj.coo"].to_dense())
    assert torch.equal(loaded["adj.csr"].to_dense(), torch.eye(5))
    assert torch.equal(loaded["fc.weight"], sparsified(state_dict()["fc.weight"]))
    assert "fc.weight" in ok("inspect", src).output  # inspect reads the file
    ok("inspect", out)
    result = ok("sparsify", src, tmp_path / "out.safetensors", "-q")
    assert "left out 2 other entries: adj.coo, adj.csr" in result.stderr  # safetensors: dense only
    assert set(load_file(tmp_path / "out.safetensors")) == set(state_dict())


def test_invalid_sparse_tensor_is_a_clear_error(tmp_path: Path) -> None:
    bad = torch.sparse_coo_tensor(torch.tensor([[0], [100]]), torch.ones(1), (2, 3))
    src = tmp_path / "bad.pt"
    torch.save({"w": torch.ones(4, 4), "s": bad}, src)
    fails(run("sparsify", src, tmp_path / "o.pt"), 1, "bad.pt: s: not a valid sparse tensor")
    fails(run("inspect", src), 1, "found index 100")


def test_check_sparse_refuses_out_of_range_indices() -> None:
    from fsparse.cli.checkpoint_io import CheckpointError, check_sparse

    with torch.sparse.check_sparse_tensor_invariants(enable=False):
        bad = torch.sparse_coo_tensor(torch.tensor([[0], [100]]), torch.ones(1), (2, 3))
    with pytest.raises(CheckpointError, match=r"^s: not a valid sparse tensor"):
        check_sparse("s", bad)
    check_sparse("ok", torch.eye(3).to_sparse_csr())


# ------------------------------------------------------------------ 5. file modes


@pytest.fixture
def umask_022() -> Any:
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_new_output_mode_follows_umask(suffix: str, pt_in: Path, tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        ok("sparsify", pt_in, tmp_path / f"a{suffix}", "-q")
    finally:
        os.umask(old)
    assert (tmp_path / f"a{suffix}").stat().st_mode & 0o777 == 0o640
    os.umask(0o022)
    try:
        ok("sparsify", pt_in, tmp_path / f"b{suffix}", "-q")
    finally:
        os.umask(old)
    assert (tmp_path / f"b{suffix}").stat().st_mode & 0o777 == 0o644


def test_replaced_output_keeps_its_mode(pt_in: Path, tmp_path: Path, umask_022: None) -> None:
    out = tmp_path / "o.pt"
    out.write_bytes(b"old")
    os.chmod(out, 0o664)
    ok("sparsify", pt_in, out, "--force", "-q")
    assert out.stat().st_mode & 0o777 == 0o664
    os.chmod(out, 0o600)
    ok("sparsify", pt_in, out, "--force", "-q")
    assert out.stat().st_mode & 0o777 == 0o600


# ------------------------------------------------------------------ 6. signals, temp files

KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from fsparse.cli import byte_progress
    real = byte_progress.CountingFile.write
    def write(self, data):
        n = real(self, data)
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
        return n
    byte_progress.CountingFile.write = write
    from fsparse.cli import main
    main(sys.argv[2:])
    """
)


def kill_run(sig: str, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, sig, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


@pytest.mark.parametrize(
    ("sig", "suffix"),
    [("SIGTERM", ".pt"), ("SIGTERM", ".safetensors"), ("SIGHUP", ".pt"), ("SIGINT", ".pt")],
)
def test_signal_mid_write_cleans_up_and_exits_128_plus_n(
    sig: str, suffix: str, pt_in: Path, tmp_path: Path
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    done = kill_run(sig, "sparsify", pt_in, out_dir / f"m{suffix}", "-q")
    assert done.returncode == 128 + getattr(signal, sig), done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert list(out_dir.iterdir()) == []  # neither OUT nor a temporary file


def test_sigkill_leftover_is_removed_by_the_next_run(pt_in: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    done = kill_run("SIGKILL", "sparsify", pt_in, out_dir / "m.safetensors", "-q")
    assert done.returncode == -signal.SIGKILL
    left = leftovers(out_dir)
    assert len(left) == 1 and left[0].startswith(".m.safetensors.fsparse-")  # one, ours
    foreign = out_dir / ".m.safetensors.tmp123"  # not our naming: never touched
    foreign.write_bytes(b"x")
    live = out_dir / left[0].replace(f"-{left[0].split('-')[2]}-", f"-{os.getpid()}-")
    live.write_bytes(b"a live run's")  # a running process's temporary: kept
    ok("sparsify", pt_in, out_dir / "other.pt", "-q")
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        [foreign.name, live.name, "other.pt"]
    )


def test_safetensors_output_is_written_once_into_one_temp_file(
    pt_in: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import safetensors.torch

    from fsparse.cli import checkpoint_io

    seen: list[list[str]] = []
    real = checkpoint_io.write_safetensors

    def spy(obj: Any, f: Any, *args: Any) -> int:
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        return real(obj, f, *args)

    def never(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("safetensors' own writer (and its temporary file) is not used")

    monkeypatch.setattr(checkpoint_io, "write_safetensors", spy)
    monkeypatch.setattr(safetensors.torch, "save_file", never)
    out = tmp_path / "o.safetensors"
    ok("sparsify", pt_in, out, "-q")
    assert len(seen) == 1 and len([n for n in seen[0] if TEMP_MARK in n]) == 1
    assert torch.equal(load_file(out)["fc.weight"], sparsified(state_dict()["fc.weight"]))


def test_help_says_where_temp_files_are() -> None:
    text = " ".join(ok("sparsify", "--help").output.split())
    assert ".OUT.fsparse-HOST-PID-XXXXXXXX.tmp" in text and "SIGTERM" in text


# ------------------------------------------------------------------ 7. full disks, write errors


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_full_disk_says_no_space_and_names_out(
    suffix: str, pt_in: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    from fsparse.cli import checkpoint_io

    real_open = builtins.open

    def open_full(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        # the writer's temporary file is /dev/full: every write fails with ENOSPC
        return real_open("/dev/full" if mode == "wb" else file, mode, *args, **kwargs)

    monkeypatch.setattr(checkpoint_io, "open", open_full, raising=False)
    out = tmp_path / f"model{suffix}"
    message = fails(run("sparsify", pt_in, out), 1, str(out), "No space left on device", "needs")
    assert TEMP_MARK not in message
    assert not out.exists() and leftovers(tmp_path) == []


def test_too_little_free_space_is_refused_before_writing(
    pt_in: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: usage._replace(free=100))
    out = tmp_path / "o.pt"
    fails(run("sparsify", pt_in, out), 1, str(out), "No space left", "100 B free")
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("code", "text"),
    [(errno.EACCES, "Permission denied"), (errno.EROFS, "Read-only file system")],
)
def test_write_errors_name_out_not_the_temp_file(
    code: int, text: str, pt_in: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def refuse(path: Any, flags: int, *args: Any) -> int:
        if TEMP_MARK in str(path):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(atomic.os, "open", refuse)
    out = tmp_path / "o.pt"
    message = fails(run("sparsify", pt_in, out), 1, f"{out}: cannot write it: {text}")
    assert TEMP_MARK not in message


def test_out_that_is_a_directory_is_named(pt_in: Path, tmp_path: Path) -> None:
    out = tmp_path / "dir.pt"
    out.mkdir()
    fails(run("sparsify", pt_in, out, "--force"), 1, f"{out}: is a directory")
    assert out.is_dir() and list(out.iterdir()) == []


# ------------------------------------------------------------------ 9. --masks-file


@pytest.mark.parametrize("masks_name", ["masks.safetensors", "masks.pt"])
def test_masks_file_keeps_out_strict_loadable(masks_name: str, tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4))
    src, out, masks = tmp_path / "m.pt", tmp_path / "o.pt", tmp_path / masks_name
    torch.save(model.state_dict(), src)
    ok("sparsify", src, out, "--masks-file", masks, "-q")
    model.load_state_dict(torch.load(out, weights_only=True), strict=True)  # no extra keys
    got = load_masks_file(masks)
    assert set(got) == {"0.weight", "1.weight"}
    for name, mask in got.items():
        original = torch.load(src, weights_only=True)[name]
        assert torch.equal(mask, fsparse.norm_mask(original, sparsity_level=0.5))


def test_masks_file_is_committed_with_out(
    pt_in: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fsparse.cli import checkpoint_io

    real = checkpoint_io.write_file
    calls: list[Path] = []

    def second_fails(tmp: Path, *args: Any) -> None:
        calls.append(tmp)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(tmp, *args)

    monkeypatch.setattr(checkpoint_io, "write_file", second_fails)
    out, masks = tmp_path / "o.pt", tmp_path / "masks.safetensors"
    fails(run("sparsify", pt_in, out, "--masks-file", masks), 1, "No space left")
    assert not out.exists() and not masks.exists() and leftovers(tmp_path) == []


def test_masks_file_paths_are_checked(pt_in: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.pt"
    fails(run("sparsify", pt_in, out, "--masks-file", pt_in), 2, "--masks-file must differ")
    fails(run("sparsify", pt_in, out, "--masks-file", out), 2, "--masks-file must differ")
    existing = tmp_path / "m.safetensors"
    existing.write_bytes(b"keep")
    fails(run("sparsify", pt_in, out, "--masks-file", existing), 2, "exists")
    assert existing.read_bytes() == b"keep"


def test_help_recommends_the_masks_file() -> None:
    text = " ".join(ok("sparsify", "--help").output.split())
    assert "prefer --masks-file" in text and "load_masks_file" in text


# ------------------------------------------------------------------ 10. messages, progress


def zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme.md", "hello")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "content", "looks"),
    [
        ("notes.txt", b"remember the milk\n", "a text file ('remember the milk')"),
        ("empty.pt", b"", "an empty file"),
        ("data.pt", None, "a zip archive of 1 files (readme.md)"),
        ("cfg.pt", b'{"a": 1}', "a JSON file"),
        ("arr.pt", b"\x93NUMPY\x01\x00", "a NumPy .npy file"),
        (
            "bad.safetensors",
            b"\x10\x00\x00\x00\x00\x00\x00\x00{broken",
            "a truncated safetensors file (its header claims 16 bytes)",
        ),
    ],
)
def test_unreadable_file_says_what_it_looks_like(
    name: str, content: bytes | None, looks: str, tmp_path: Path
) -> None:
    path = tmp_path / name
    path.write_bytes(zip_bytes() if content is None else content)
    fails(run("inspect", path), 1, str(path), f"looks like {looks}")


def test_pickled_module_is_told_to_save_its_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(4, 4), path)
    fails(
        run("sparsify", path, tmp_path / "o.pt"),
        1,
        "whole pickled model",
        "torch.save(model.state_dict(), PATH)",
    )


def test_progress_shows_bytes_loading_and_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fsparse.cli import console

    src = tmp_path / "in.safetensors"
    save_file(state_dict(), src)
    buf = io.StringIO()
    monkeypatch.setattr(
        console, "stderr_console", lambda: Console(file=buf, force_terminal=True, width=100)
    )
    ok("sparsify", src, tmp_path / "o.pt", "--quiet")
    assert buf.getvalue() == ""  # --quiet: nothing
    ok("sparsify", src, tmp_path / "o2.pt")
    drawn = buf.getvalue()
    assert "loading in.safetensors" in drawn and "writing o2.pt" in drawn and "KiB" in drawn


COMMIT_KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from fsparse.cli import atomic
    real = os.replace
    def replace(a, b):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives between the renames of one commit
        return real(a, b)
    atomic.os.replace = replace
    from fsparse.cli import main
    main(sys.argv[1:])
    """
)


def test_signal_during_commit_waits_until_every_output_is_renamed(
    pt_in: Path, tmp_path: Path
) -> None:
    out, masks = tmp_path / "out" / "o.pt", tmp_path / "out" / "m.safetensors"
    out.parent.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            COMMIT_KILL_SCRIPT,
            "sparsify",
            str(pt_in),
            str(out),
            "--masks-file",
            str(masks),
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert "interrupted by SIGTERM" in done.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.safetensors", "o.pt"]  # both
    assert set(load_masks_file(masks)) == {"fc.weight", "emb.weight"}
    assert torch.equal(
        torch.load(out, weights_only=True)["fc.weight"], sparsified(state_dict()["fc.weight"])
    )


def test_tied_views_of_different_shapes_are_refused(tmp_path: Path) -> None:
    whole = torch.randn(8, 8)
    src = tmp_path / "views.pt"
    torch.save({"qkv.weight": whole, "q.weight": whole[:4]}, src)  # torch.save keeps the view
    fails(run("sparsify", src, tmp_path / "o.pt"), 1, "different views", "--exclude both")
    loaded = torch.load(src, weights_only=True)
    assert loaded["q.weight"].data_ptr() == loaded["qkv.weight"].data_ptr()  # the case is real
