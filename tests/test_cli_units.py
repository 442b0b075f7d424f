"""Unit tests of the command line's building blocks: checkpoint I/O, selection, output helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fsparse import make_config, pack_mask
from fsparse.cli.checkpoint_io import (
    MASK_SUFFIX,
    Checkpoint,
    CheckpointError,
    atomic_write,
    load_checkpoint,
    save_checkpoint,
    split_masks,
    with_masks,
)
from fsparse.cli.console import human_bytes
from fsparse.cli.selection import load_per_tensor, parse_block, select
from fsparse.cli.sparsify import bitmap_bytes, sparsify_checkpoint, sparsify_tensor


@pytest.mark.parametrize(("text", "want"), [("1x4", (1, 4)), ("2X2", (2, 2)), (" 8 x 1 ", (8, 1))])
def test_parse_block(text: str, want: tuple[int, int]) -> None:
    assert parse_block(text) == want


@pytest.mark.parametrize(
    "text", ["", "1", "1x", "x4", "1x4x2", "0x4", "1x0", "-1x4", "ax4", "1.5x2"]
)
def test_parse_block_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="--block must look like 1x4"):
        parse_block(text)


def test_select_default_and_non_float() -> None:
    tensors = {
        "w": torch.ones(4, 4),
        "b": torch.ones(4),
        "ints": torch.ones(4, 4, dtype=torch.int64),
        "flags": torch.ones(4, 4, dtype=torch.bool),
        "conv": torch.ones(2, 3, 3, 3),
    }
    chosen = select(tensors, make_config())
    assert list(chosen.configs) == ["w", "conv"]
    assert chosen.passed_through == ("b", "ints", "flags")
    # an include pattern never pulls in non-floating tensors
    assert list(select(tensors, make_config(), include=["*"], allow_1d=True).configs) == [
        "w",
        "b",
        "conv",
    ]


def test_select_per_tensor_cascade() -> None:
    tensors = {"a.w": torch.ones(4, 4), "a.b": torch.ones(4), "c.w": torch.ones(4, 4)}
    rules = [("*", {"sparsity_level": 0.1}), ("a.*", {"sparsity_level": 0.2, "norm": "L2"})]
    configs = select(
        tensors, make_config(sparsity_level=0.9), per_tensor=rules, allow_1d=True
    ).configs
    assert configs["a.w"].sparsity_level == 0.2 and configs["a.w"].norm == "L2"
    assert configs["a.b"].sparsity_level == 0.2  # 1-D, selected by the file with allow_1d
    assert configs["c.w"].sparsity_level == 0.1 and configs["c.w"].norm == "L1"


def test_load_per_tensor(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        '"*.weight": {sparsity_level: 0.5}\nemb.*: {block: [2, 2], zeros_per_block: 1}\n'
    )
    assert load_per_tensor(path) == [
        ("*.weight", {"sparsity_level": 0.5}),
        ("emb.*", {"sparse_block_shape": (2, 2), "zeros_per_block": 1}),
    ]


def test_atomic_write_removes_temp_on_error(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    with pytest.raises(RuntimeError, match="boom"), atomic_write(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_write(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and list(tmp_path.iterdir()) == [target]


def test_save_checkpoint_rejects_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fmt must be one of"):
        save_checkpoint(tmp_path / "x", {}, "onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key", ["state_dict", "model_state_dict", "model", "module", "net"])
def test_wrapper_keys(key: str, tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    torch.save({key: {"w": torch.ones(2, 2)}, "step": 10}, path)
    ckpt = load_checkpoint(path)
    assert ckpt.wrapper_key == key and list(ckpt.tensors) == ["w"]


def test_mixed_state_dict_keeps_non_tensors(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    torch.save({"w": torch.ones(2, 2), "version": 3}, path)
    ckpt = load_checkpoint(path)
    assert ckpt.wrapper is None and dict(ckpt.state_dict)["version"] == 3


def test_split_and_with_masks_round_trip() -> None:
    weights = {"w": torch.randn(5, 3), "b": torch.randn(3)}
    masks = {"w": torch.rand(5, 3) > 0.5}
    stored = with_masks(weights, masks)
    assert list(stored) == ["w", "w" + MASK_SUFFIX, "b"]
    back, restored = split_masks(stored)
    assert list(back) == ["w", "b"] and torch.equal(restored["w"], masks["w"])
    with pytest.raises(CheckpointError, match="already exists"):
        with_masks(stored, masks)
    with pytest.raises(CheckpointError, match="has no weight"):
        split_masks({"x" + MASK_SUFFIX: pack_mask(torch.ones(3, dtype=torch.bool))})


def test_sparsify_tensor_uses_the_core_mask() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    out, mask, achieved = sparsify_tensor(
        x, make_config(sparsity_level=0.5, sparse_block_shape=(1, 2))
    )
    assert torch.equal(out, torch.tensor([[0.0, 0.0, 0.0, 0.0], [5.0, 6.0, 7.0, 8.0]]))
    assert achieved == 0.5 and mask.dtype == torch.bool
    assert torch.equal(x[0], torch.tensor([1.0, 2.0, 3.0, 4.0]))  # input untouched


def test_sparsify_totals_count_each_weight_once(tmp_path: Path) -> None:
    src = tmp_path / "in.pt"
    torch.save({"w": torch.randn(8, 16), "b": torch.randn(16)}, src)
    config = make_config(sparsity_level=0.5)
    first = sparsify_checkpoint(src, tmp_path / "a.pt", config, packed_masks=True)
    (row,) = first.tensors
    assert row.compressed_bytes == 128 // 8 + 64 * 4  # half the elements kept, plus the bitmap
    assert first.total_dense_bytes == (128 + 16) * 4
    assert first.total_compressed_bytes == row.compressed_bytes + 16 * 4  # dense bias is smaller
    # re-sparsifying: the stored masks of the input are not weights, on either side
    again = sparsify_checkpoint(tmp_path / "a.pt", tmp_path / "b.pt", config, packed_masks=True)
    assert (again.total_dense_bytes, again.total_compressed_bytes) == (
        first.total_dense_bytes,
        first.total_compressed_bytes,
    )
    assert first.passed_through == again.passed_through == ("b",)  # the old mask was replaced


def test_bitmap_bytes_and_human_bytes() -> None:
    assert bitmap_bytes(torch.zeros(64)) == 8  # 64 bits of mask, no values
    assert bitmap_bytes(torch.ones(64)) == 64 * 4  # dense is smaller than mask + values
    assert bitmap_bytes(torch.ones(10, dtype=torch.int32)) == 40
    assert human_bytes(0) == "0 B" and human_bytes(1536) == "1.5 KiB"
    assert human_bytes(5 * 2**40) == "5.0 TiB"


def test_checkpoint_tensors_skips_non_tensors() -> None:
    ckpt = Checkpoint({"a": torch.ones(1), "n": 3}, "pt")
    assert list(ckpt.tensors) == ["a"]


def test_help_epilog_yaml_example_is_valid(tmp_path: Path) -> None:
    from fsparse.cli.sparsify_command import _EPILOG

    lines = _EPILOG.split("\b")[1].splitlines()[2:]
    path = tmp_path / "example.yaml"
    path.write_text("\n".join(line.strip() for line in lines if line.strip()))
    rules = load_per_tensor(path)
    assert [p for p, _ in rules] == ["*.weight", "emb.*"]
    assert rules[1][1] == {"sparsity_level": 0.9, "sparse_block_shape": (1, 4), "norm": "L2"}
