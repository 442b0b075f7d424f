"""End-to-end tests of ``fsparse sparsify`` and ``fsparse inspect`` on small checkpoints."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_helpers import ok, run
from click.testing import Result
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import fsparse
from fsparse.cli.checkpoint_io import MASK_SUFFIX, load_checkpoint, split_masks


def make_state_dict() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "emb.weight": torch.randn(64, 8, generator=g),
        "fc.weight": torch.randn(16, 8, generator=g),
        "fc.bias": torch.randn(16, generator=g),
        "bn.running_mean": torch.randn(16, generator=g),
        "bn.num_batches_tracked": torch.tensor(7),
        "half.weight": torch.randn(8, 12, generator=g).half(),
    }


TWO_D = ("emb.weight", "fc.weight", "half.weight")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def pt_in(tmp_path: Path) -> Path:
    path = tmp_path / "in.pt"
    torch.save(make_state_dict(), path)
    return path


@pytest.fixture
def st_in(tmp_path: Path) -> Path:
    path = tmp_path / "in.safetensors"
    save_file(make_state_dict(), path)
    return path


def expected(tensor: torch.Tensor, **config: object) -> tuple[torch.Tensor, torch.Tensor]:
    mask = fsparse.norm_mask(tensor, **config)  # type: ignore[arg-type]
    return tensor * mask, mask


# ---------------------------------------------------------------- happy paths


@pytest.mark.parametrize(("src", "out_name"), [("pt_in", "out.pt"), ("st_in", "out.safetensors")])
def test_sparsify_end_to_end_both_formats(
    src: str, out_name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    src_path: Path = request.getfixturevalue(src)
    before = digest(src_path)
    out = tmp_path / out_name
    result = ok("sparsify", src_path, out, "--sparsity-level", "0.5")
    assert digest(src_path) == before  # IN untouched
    assert "emb.weight" in result.output and "zeros" in result.output
    assert result.stderr == ""
    original = make_state_dict()
    written = load_checkpoint(out).tensors
    assert sorted(written) == sorted(original)
    if out.suffix == ".pt":
        assert list(written) == list(original)  # same order (safetensors sorts its keys)
    for name in TWO_D:
        want, _ = expected(original[name], sparsity_level=0.5)
        assert written[name].dtype == original[name].dtype
        assert torch.equal(written[name], want), name
    for name in ("fc.bias", "bn.running_mean", "bn.num_batches_tracked"):
        assert torch.equal(written[name], original[name])
        assert written[name].dtype == original[name].dtype
    assert not any(k.endswith(MASK_SUFFIX) for k in written)


def test_format_conversion_both_ways(pt_in: Path, st_in: Path, tmp_path: Path) -> None:
    ok("sparsify", pt_in, tmp_path / "a.safetensors")  # inferred from the suffix
    ok("sparsify", st_in, tmp_path / "b.bin", "--format", "pt")
    ok("sparsify", pt_in, tmp_path / "c.out", "--format", "safetensors")
    a = load_file(tmp_path / "a.safetensors")
    b = torch.load(tmp_path / "b.bin", weights_only=True)
    c = load_file(tmp_path / "c.out")
    for name in make_state_dict():
        assert torch.equal(a[name], b[name]) and torch.equal(a[name], c[name])
    with safe_open(str(tmp_path / "a.safetensors"), framework="pt") as f:  # type: ignore[no-untyped-call]
        configs = json.loads(f.metadata()["fsparse"])
    assert configs["emb.weight"] == {
        "sparsity_level": 0.5,
        "sparse_block_shape": [1, 4],
        "zeros_per_block": 4,
        "norm": "L1",
    }


def test_block_zeros_per_block_and_norm(pt_in: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.pt"
    ok(
        "sparsify",
        pt_in,
        out,
        "--block",
        "2x2",
        "--zeros-per-block",
        "2",
        "--norm",
        "L2",
        "--sparsity-level",
        "0.75",
    )
    written = torch.load(out, weights_only=True)
    for name in TWO_D:
        want, _ = expected(
            make_state_dict()[name],
            sparsity_level=0.75,
            sparse_block_shape=(2, 2),
            zeros_per_block=2,
            norm="L2",
        )
        assert torch.equal(written[name], want), name


def test_wrapped_state_dict_keeps_wrapper(tmp_path: Path) -> None:
    src = tmp_path / "ckpt.pth"
    torch.save({"state_dict": make_state_dict(), "epoch": 3, "note": "hi"}, src)
    ok("sparsify", src, tmp_path / "out.pth")
    loaded = torch.load(tmp_path / "out.pth", weights_only=True)
    assert loaded["epoch"] == 3 and loaded["note"] == "hi"
    want, _ = expected(make_state_dict()["fc.weight"], sparsity_level=0.5)
    assert torch.equal(loaded["state_dict"]["fc.weight"], want)
    # safetensors holds tensors only: the wrapper's other entries are named on stderr
    result = ok("sparsify", src, tmp_path / "out.safetensors")
    assert "left out 2 non-tensor entries: epoch, note" in result.stderr


def test_state_dict_metadata_is_kept(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.BatchNorm1d(8))
    src = tmp_path / "model.pt"
    torch.save(model.state_dict(), src)
    ok("sparsify", src, tmp_path / "out.pt")
    loaded = torch.load(tmp_path / "out.pt", weights_only=True)
    assert loaded._metadata == model.state_dict()._metadata
    model.load_state_dict(loaded)  # loads back into the model
    assert loaded["1.num_batches_tracked"].dtype == torch.long


def test_legacy_torch_format_and_tied_weights(tmp_path: Path) -> None:
    shared = torch.randn(16, 8)
    sd = OrderedDict([("enc.weight", shared), ("dec.weight", shared), ("b", torch.ones(3))])
    src = tmp_path / "legacy.pt"
    torch.save(sd, src, _use_new_zipfile_serialization=False)
    ok("sparsify", src, tmp_path / "out.safetensors")
    out = load_file(tmp_path / "out.safetensors")
    assert set(out) == {"dec.weight", "b"}  # one tensor, stored once (safetensors.torch's rule)
    assert torch.equal(out["dec.weight"], expected(shared, sparsity_level=0.5)[0])


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_packed_masks_restore_exactly(suffix: str, tmp_path: Path) -> None:
    sd = make_state_dict()
    sd["fc.weight"][0, :] = 0.0  # natural zeros: only the stored mask tells them from pruned
    src = tmp_path / f"in{suffix}"
    (torch.save if suffix == ".pt" else save_file)(sd, src)
    out = tmp_path / f"out{suffix}"
    ok("sparsify", src, out, "--packed-masks", "--sparsity-level", "0.3")
    weights, masks = split_masks(load_checkpoint(out).tensors)
    assert set(masks) == set(TWO_D)
    assert sorted(weights) == sorted(sd)
    for name in TWO_D:
        want, want_mask = expected(sd[name], sparsity_level=0.3)
        assert torch.equal(masks[name], want_mask), name
        assert torch.equal(weights[name], want)
        assert masks[name].dtype == torch.bool and masks[name].shape == sd[name].shape
    # keys sit beside their weights, so a state dict reads naturally
    keys = list(load_checkpoint(out).tensors)
    assert keys[keys.index("emb.weight") + 1] == "emb.weight" + MASK_SUFFIX
    # re-sparsifying replaces the stale masks instead of clashing with them
    again = tmp_path / f"again{suffix}"
    ok("sparsify", out, again, "--packed-masks", "--sparsity-level", "0.6")
    _, masks2 = split_masks(load_checkpoint(again).tensors)
    assert masks2["emb.weight"].logical_not().float().mean() > 0.55
    result = ok("inspect", out)
    assert "mask" in result.output


# ---------------------------------------------------------------- selection


def selected(out: Path) -> set[str]:
    original = make_state_dict()
    written = load_checkpoint(out).tensors
    return {n for n in original if not torch.equal(written[n], original[n])}


@pytest.mark.parametrize(
    ("flags", "want"),
    [
        ([], set(TWO_D)),  # default: floating-point tensors with 2+ dims
        (["--include", "fc.*"], {"fc.weight"}),  # a glob never takes a 1-D tensor...
        (["--include", "fc.*", "--allow-1d"], {"fc.weight", "fc.bias"}),  # ...unless allowed
        (["--include", "*.weight"], set(TWO_D)),  # '*' spans dots
        (["--include", "fc.bias", "--include", "emb.weight"], {"fc.bias", "emb.weight"}),
        (["--exclude", "emb.*"], {"fc.weight", "half.weight"}),
        (["--include", "*", "--exclude", "*.weight", "--allow-1d"], {"fc.bias", "bn.running_mean"}),
        (["--include", "fc.?ias", "--allow-1d"], {"fc.bias"}),
        (["--include", "[eh]*"], {"emb.weight", "half.weight"}),
    ],
)
def test_include_exclude(flags: list[str], want: set[str], pt_in: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.pt"
    ok("sparsify", pt_in, out, "--sparsity-level", "0.9", *flags)
    assert selected(out) == want


def test_per_tensor_config(pt_in: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "'*.weight': {sparsity_level: 0.25}\n"
        "emb.*:\n  sparsity_level: 0.75\n  block: 1x2\n"
        "fc.bias: {sparsity_level: 0.5, sparse_block_shape: [1, 1]}\n"
    )
    out = tmp_path / "out.pt"
    ok("sparsify", pt_in, out, "--per-tensor", cfg, "--exclude", "half.*")
    sd, written = make_state_dict(), torch.load(out, weights_only=True)
    checks = {
        "emb.weight": {"sparsity_level": 0.75, "sparse_block_shape": (1, 2)},  # later entry wins
        "fc.weight": {"sparsity_level": 0.25},
        "fc.bias": {"sparsity_level": 0.5, "sparse_block_shape": (1, 1)},  # selected by the file
    }
    for name, config in checks.items():
        assert torch.equal(written[name], expected(sd[name], **config)[0]), name
    assert torch.equal(written["half.weight"], sd["half.weight"])  # --exclude still wins


# ---------------------------------------------------------------- errors


def one_line_error(result: Result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_error_missing_file(tmp_path: Path) -> None:
    one_line_error(run("sparsify", tmp_path / "nope.pt", tmp_path / "o.pt"), 1, "no such file")
    one_line_error(run("inspect", tmp_path / "nope.pt"), 1, "no such file")
    one_line_error(run("sparsify", tmp_path, tmp_path / "o.pt"), 1, "not a file")


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("garbage.pt", b"this is not a checkpoint at all", "not a readable torch checkpoint"),
        ("garbage.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{bad json", "safetensors"),
        ("empty.pt", b"", "not a readable torch checkpoint"),
    ],
)
def test_error_unreadable(name: str, content: bytes, fragment: str, tmp_path: Path) -> None:
    src = tmp_path / name
    src.write_bytes(content)
    one_line_error(run("sparsify", src, tmp_path / "o.pt"), 1, fragment)
    one_line_error(run("inspect", src), 1, fragment)
    assert not (tmp_path / "o.pt").exists()


class Payload:
    """Not allowed by weights_only loading."""


def test_error_checkpoint_with_code_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(4, 4), "obj": Payload()}, src)
    one_line_error(run("sparsify", src, tmp_path / "o.pt"), 1, "refused", "weights_only")


def test_error_no_state_dict(tmp_path: Path) -> None:
    src = tmp_path / "list.pt"
    torch.save([torch.ones(2), 3], src)
    one_line_error(run("sparsify", src, tmp_path / "o.pt"), 1, "found no state dict")


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--block", "1y4"], "--block must look like 1x4"),
        (["--block", "0x4"], "--block must look like 1x4"),
        (["--block", "4"], "--block must look like 1x4"),
        (["--zeros-per-block", "9"], "zeros_per_block must be in [0, 4]"),
        (["--sparsity-level", "nan"], "sparsity_level must be a number, not NaN"),
        (["--sparsity-level", "1.5"], "1.5 is not in the range 0.0<=x<=1.0"),
        (["--norm", "L3"], "'L3' is not one of"),
        (["--format", "onnx"], "'onnx' is not one of"),
        (["--bogus"], "No such option"),
    ],
)
def test_error_bad_options(flags: list[str], fragment: str, pt_in: Path, tmp_path: Path) -> None:
    one_line_error(run("sparsify", pt_in, tmp_path / "o.pt", *flags), 2, fragment, "--help")


def test_error_missing_argument(pt_in: Path) -> None:
    one_line_error(run("sparsify", pt_in), 2, "Missing argument 'OUT'")


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--include", "nothing.*"], "--include pattern 'nothing.*' matches no tensor"),
        (["--exclude", "FC.*"], "--exclude pattern 'FC.*' matches no tensor"),  # case-sensitive
        (["--include", "*num_batches*"], "no tensor selected"),  # matches only an int buffer
        (["--exclude", "*"], "no tensor selected"),
    ],
)
def test_error_patterns(flags: list[str], fragment: str, pt_in: Path, tmp_path: Path) -> None:
    one_line_error(run("sparsify", pt_in, tmp_path / "o.pt", *flags), 1, fragment)
    assert not (tmp_path / "o.pt").exists()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("emb.*: {sparsity_level: 0.5\n", "not valid YAML at line"),
        ("- just\n- a list\n", "expected a mapping"),
        ("emb.*: {level: 0.5}\n", "unknown keys ['level']"),
        ("emb.*: {block: 2by2}\n", "must look like 1x4"),
        ("emb.*: {sparsity_level: high}\n", "sparsity_level must be a real number"),
        ("emb.*: {sparsity_level: -0.5}\n", "sparsity_level must be in [0, 1]"),
        ("emb.*: 0.5\n", "each entry must be"),
        ("nomatch.*: {sparsity_level: 0.5}\n", "--per-tensor pattern 'nomatch.*' matches no"),
        ("emb.*: {block: 1x2}\n", "'emb.weight'"),  # --zeros-per-block 3 > 2 for this tensor
    ],
)
def test_error_per_tensor(text: str, fragment: str, pt_in: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(text)
    result = run(
        "sparsify", pt_in, tmp_path / "o.pt", "--per-tensor", cfg, "--zeros-per-block", "3"
    )
    one_line_error(result, 1, fragment)


def test_error_per_tensor_missing_file(pt_in: Path, tmp_path: Path) -> None:
    result = run("sparsify", pt_in, tmp_path / "o.pt", "--per-tensor", tmp_path / "none.yaml")
    one_line_error(result, 1, "none.yaml", "No such file")


def test_error_out_paths(pt_in: Path, tmp_path: Path) -> None:
    one_line_error(run("sparsify", pt_in, pt_in, "--force"), 2, "OUT must differ from IN")
    existing = tmp_path / "exists.pt"
    existing.write_bytes(b"keep me")
    one_line_error(run("sparsify", pt_in, existing), 2, "exists; pass --force")
    assert existing.read_bytes() == b"keep me"
    one_line_error(run("sparsify", pt_in, tmp_path / "no" / "dir.pt"), 2, "does not exist")
    ok("sparsify", pt_in, existing, "--force")
    assert torch.load(existing, weights_only=True).keys() == make_state_dict().keys()


def test_error_non_finite_data(tmp_path: Path) -> None:
    sd = make_state_dict()
    sd["fc.weight"][2, 3] = float("nan")
    src = tmp_path / "nan.pt"
    torch.save(sd, src)
    one_line_error(run("sparsify", src, tmp_path / "o.pt"), 1, "fc.weight", "NaN")


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_interrupted_write_leaves_no_file(
    suffix: str, pt_in: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    real_save = torch.save

    def crash_midway(obj: object, f: Any, *args: object, **kwargs: object) -> None:
        f.write(b"half a checkpoint")  # into fsparse's one temporary file
        raise OSError(28, "No space left on device")

    target = (
        ("torch.save", crash_midway)
        if suffix == ".pt"
        else ("fsparse.cli.checkpoint_io.write_safetensors", crash_midway)
    )
    monkeypatch.setattr(*target)
    out = out_dir / f"model{suffix}"
    one_line_error(run("sparsify", pt_in, out), 1, "No space left on device")
    assert list(out_dir.iterdir()) == []  # neither OUT nor a temporary file
    # an existing OUT survives a crashed --force rewrite unchanged
    out.write_bytes(b"previous version")
    one_line_error(run("sparsify", pt_in, out, "--force"), 1, "No space left")
    assert out.read_bytes() == b"previous version"
    assert list(out_dir.iterdir()) == [out]
    monkeypatch.setattr(torch, "save", real_save)


def test_keyboard_interrupt_leaves_no_file(
    pt_in: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(obj: object, f: Any, *args: object, **kwargs: object) -> None:
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    result = run("sparsify", pt_in, tmp_path / "o.pt")
    one_line_error(result, 130, "aborted")  # 128 + SIGINT, as a shell reports it
    assert [p.name for p in tmp_path.iterdir()] == ["in.pt"]


# ---------------------------------------------------------------- inspect


def test_inspect_table_and_plot(pt_in: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.safetensors"
    ok("sparsify", pt_in, out, "--sparsity-level", "0.75", "-q")
    png = tmp_path / "sparsity.png"
    result = ok("inspect", out, "--plot", png)
    assert "emb.weight" in result.output and "0.750" in result.output
    assert "bn.num_batches_tracked" not in result.output  # not floating-point
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    one_line_error(run("inspect", out, "--plot", tmp_path / "no" / "x.png"), 2, "does not exist")


def test_quiet_prints_nothing(pt_in: Path, tmp_path: Path) -> None:
    result = ok("sparsify", pt_in, tmp_path / "o.pt", "--quiet")
    assert result.output == "" and result.stderr == ""


# ---------------------------------------------------------------- real processes


def fsparse_process(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fsparse", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def test_subprocess_errors_are_one_line(pt_in: Path, tmp_path: Path) -> None:
    missing = fsparse_process("sparsify", "missing.pt", "out.pt", cwd=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "fsparse: error: missing.pt: no such file"
    bad_block = fsparse_process("sparsify", pt_in, "out.pt", "--block", "1x", cwd=tmp_path)
    assert bad_block.returncode == 2
    assert len(bad_block.stderr.strip().splitlines()) == 1
    assert "--block must look like 1x4" in bad_block.stderr and "Traceback" not in bad_block.stderr
    assert not (tmp_path / "out.pt").exists()


def console_script() -> Path:
    script = Path(sys.executable).with_name("fsparse")
    found = str(script) if script.exists() else shutil.which("fsparse")
    assert found is not None, "the fsparse console script is not installed (pip install -e .)"
    return Path(found)


def test_subprocess_sparsify_then_inspect_with_console_script(pt_in: Path, tmp_path: Path) -> None:
    done = fsparse_process("sparsify", pt_in, "out.safetensors", "--packed-masks", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "emb.weight" in done.stdout and done.stderr == ""
    shown = subprocess.run(
        [str(console_script()), "inspect", "out.safetensors"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "emb.weight" in shown.stdout and "mask" in shown.stdout
