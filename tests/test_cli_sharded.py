"""``fsparse sparsify MODEL_DIR OUT_DIR`` on sharded Hugging Face-style directories (issue 11)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_helpers import fails, ok, run
from safetensors.torch import load_file, save_file

import fsparse
from fsparse.cli.checkpoint_io import MASK_SUFFIX, load_masks_file, split_masks

ST_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"


def shards() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        {"a.weight": torch.randn(16, 8, generator=g), "a.bias": torch.randn(16, generator=g)},
        {"b.weight": torch.randn(8, 16, generator=g), "norm.weight": torch.ones(8)},
    ]


def make_dir(root: Path, kind: str = "safetensors") -> Path:
    root.mkdir()
    weight_map: dict[str, str] = {}
    for i, part in enumerate(shards(), 1):
        if kind == "safetensors":
            name = f"model-0000{i}-of-00002.safetensors"
            save_file(part, root / name, metadata={"format": "pt"})
        else:
            name = f"pytorch_model-0000{i}-of-00002.bin"
            torch.save(part, root / name)
        weight_map.update(dict.fromkeys(part, name))
    total = sum(t.numel() * t.element_size() for p in shards() for t in p.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (root / (ST_INDEX if kind == "safetensors" else BIN_INDEX)).write_text(json.dumps(index))
    (root / "config.json").write_text('{"model_type": "tiny"}')
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    return root


def read_all(root: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for path in sorted(root.iterdir()):
        if path.suffix == ".safetensors":
            out.update(load_file(path))
        elif path.suffix == ".bin":
            out.update(torch.load(path, weights_only=True))
    return out


def temp_dirs(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".fsparse-" in p.name]


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
def test_sharded_directory_is_copied_sparsified(kind: str, tmp_path: Path) -> None:
    src, out = make_dir(tmp_path / "model", kind), tmp_path / "out"
    ok("sparsify", src, out, "-q")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in src.iterdir())
    index = ST_INDEX if kind == "safetensors" else BIN_INDEX
    assert json.loads((out / index).read_text()) == json.loads((src / index).read_text())
    assert (out / "config.json").read_text() == '{"model_type": "tiny"}'
    assert (out / "tokenizer" / "vocab.txt").read_text() == "a\nb\n"
    got, original = read_all(out), read_all(src)
    for name in ("a.weight", "b.weight"):
        mask = fsparse.norm_mask(original[name], sparsity_level=0.5)
        assert torch.equal(got[name], original[name] * mask)
    assert torch.equal(got["a.bias"], original["a.bias"])
    assert oct(out.stat().st_mode & 0o777) == oct(0o777 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_pattern_must_match_in_one_shard_not_each(tmp_path: Path) -> None:
    src = make_dir(tmp_path / "model")
    ok("sparsify", src, tmp_path / "out", "--include", "b.*", "-q")  # only in shard 2
    got = read_all(tmp_path / "out")
    assert torch.equal(got["a.weight"], shards()[0]["a.weight"])
    assert (got["b.weight"] == 0).float().mean() == 0.5
    fails(run("sparsify", src, tmp_path / "o2", "--include", "zzz.*"), 1, "zzz.*", "matches no")
    assert not (tmp_path / "o2").exists()


def test_out_dir_needs_force_and_is_replaced_whole(tmp_path: Path) -> None:
    src, out = make_dir(tmp_path / "model"), tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    fails(run("sparsify", src, out), 2, "exists; pass --force")
    assert (out / "old.txt").exists()
    ok("sparsify", src, out, "--force", "-q")
    assert not (out / "old.txt").exists() and (out / ST_INDEX).exists()
    assert temp_dirs(tmp_path) == []


def test_failure_midway_leaves_out_dir_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fsparse.cli import sparsify

    src, out = make_dir(tmp_path / "model"), tmp_path / "out"
    real = sparsify.sparsify_loaded
    calls: list[Path] = []

    def second_fails(ckpt: Any, selection: Any, dst: Path, *args: Any, **kwargs: Any) -> Any:
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(ckpt, selection, dst, *args, **kwargs)

    monkeypatch.setattr(sparsify, "sparsify_loaded", second_fails)
    fails(run("sparsify", src, out), 1, str(out), "No space left")
    assert not out.exists() and temp_dirs(tmp_path) == []
    out.mkdir()
    (out / "keep.txt").write_text("keep")
    calls.clear()
    fails(run("sparsify", src, out, "--force"), 1, "No space left")
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and temp_dirs(tmp_path) == []


def test_packed_masks_and_masks_file_for_a_directory(tmp_path: Path) -> None:
    src = make_dir(tmp_path / "model")
    ok("sparsify", src, tmp_path / "packed", "--packed-masks", "-q")
    index = json.loads((tmp_path / "packed" / ST_INDEX).read_text())
    assert index["weight_map"]["b.weight" + MASK_SUFFIX] == "model-00002-of-00002.safetensors"
    _, masks = split_masks(read_all(tmp_path / "packed"))
    assert set(masks) == {"a.weight", "b.weight"}
    masks_file = tmp_path / "masks.safetensors"
    ok("sparsify", src, tmp_path / "plain", "--masks-file", masks_file, "-q")
    from_file = load_masks_file(masks_file)
    assert all(torch.equal(from_file[n], masks[n]) for n in masks)
    assert not any(MASK_SUFFIX in k for k in read_all(tmp_path / "plain"))
    inside = tmp_path / "plain" / "masks.safetensors"  # would vanish with the old OUT
    fails(run("sparsify", src, tmp_path / "plain", "--force", "--masks-file", inside), 1, "outside")
    assert not inside.exists()


@pytest.mark.parametrize(
    ("shard", "fragment"),
    [("../evil.safetensors", "not a file name"), ("missing.safetensors", "is missing")],
)
def test_untrusted_index_is_checked(shard: str, fragment: str, tmp_path: Path) -> None:
    src = make_dir(tmp_path / "model")
    index = json.loads((src / ST_INDEX).read_text())
    index["weight_map"]["a.weight"] = shard
    (src / ST_INDEX).write_text(json.dumps(index))
    fails(run("sparsify", src, tmp_path / "out"), 1, fragment)


def test_directory_without_an_index(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    fails(run("sparsify", tmp_path / "empty", tmp_path / "out"), 1, "not a file")
    single = tmp_path / "single"
    single.mkdir()
    save_file(shards()[0], single / "model.safetensors")  # save_pretrained, unsharded
    ok("sparsify", single, tmp_path / "out", "-q")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.safetensors"]


def test_stale_temp_dir_of_a_dead_run_is_removed(tmp_path: Path) -> None:
    src = make_dir(tmp_path / "model")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    from fsparse.cli import atomic

    stale = tmp_path / f".out.fsparse-{atomic._HOST}-{dead.stdout.strip()}-0123abcd.tmpdir"
    stale.mkdir()
    (stale / "shard").write_bytes(b"x" * 100)
    ok("sparsify", src, tmp_path / "out", "-q")
    assert not stale.exists() and temp_dirs(tmp_path) == []


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
def test_one_shard_in_memory_at_a_time(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc
    import weakref

    from fsparse.cli import checkpoint_io

    src = make_dir(tmp_path / "model", kind)
    real = checkpoint_io.load_checkpoint
    alive: list[weakref.ref[Any]] = []

    def tracked(path: Any, **kwargs: Any) -> Any:
        gc.collect()
        assert all(ref() is None for ref in alive), "an earlier shard is still held"
        ckpt = real(path, **kwargs)
        alive.append(
            weakref.ref(ckpt.state_dict["a.weight" if "1-of" in str(path) else "b.weight"])
        )
        return ckpt

    monkeypatch.setattr(checkpoint_io, "load_checkpoint", tracked)
    ok("sparsify", src, tmp_path / "out", "-q")
    assert len(alive) >= 2


def test_out_dir_replaced_by_two_renames_where_no_exchange(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fsparse.cli import atomic

    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    src, out = make_dir(tmp_path / "model"), tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    ok("sparsify", src, out, "--force", "-q")
    assert not (out / "old.txt").exists() and (out / ST_INDEX).exists()
    assert temp_dirs(tmp_path) == []
