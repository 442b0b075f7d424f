"""Issue 11's bar: real clients' checkpoints, built from their libraries (configs, random
weights, nothing downloaded), go through ``fsparse sparsify`` and load back with the
library's own loader, run a forward pass, and keep their sparsity and sharing.

Each library's tests run whenever it is installed (transformers and lightning are in
the ``test`` extra; torchvision and timm are not installable on CPU here).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner, Result

from fsparse.cli import cli
from fsparse.cli.checkpoint_io import load_masks_file


def ok(*args: object) -> Result:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output + result.stderr
    return result


def zeros(t: torch.Tensor) -> float:
    return 1.0 - int(t.count_nonzero()) / t.numel()


def test_import_fsparse_loads_no_client_library() -> None:
    code = (
        "import sys, fsparse, fsparse.cli, fsparse.cli.sparsify, fsparse.cli.sharded; "
        "bad = {'transformers', 'lightning', 'timm', 'torchvision'} & set(sys.modules); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ------------------------------------------------------------------ Hugging Face BERT


@pytest.fixture(scope="module")
def bert() -> Any:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(
        vocab_size=96,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    return transformers, cfg, transformers.BertForMaskedLM(cfg).eval()


WORD = "bert.embeddings.word_embeddings.weight"
DECODER = "cls.predictions.decoder.weight"
INPUT = torch.tensor([[1, 5, 7, 9, 2]])


def check_bert(model: Any) -> None:
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert zeros(model.bert.embeddings.word_embeddings.weight) == pytest.approx(0.5, abs=0.02)
    assert zeros(model.bert.encoder.layer[0].attention.self.query.weight) >= 0.5
    assert model.bert.embeddings.LayerNorm.weight.count_nonzero() == 16  # 1-D: left dense
    with torch.no_grad():
        logits = model(INPUT).logits
    assert logits.shape == (1, 5, 96) and torch.isfinite(logits).all()


def from_pretrained(transformers: Any, path: Path) -> Any:
    model, info = transformers.BertForMaskedLM.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return model.eval()


def test_bert_save_pretrained_directory(bert: Any, tmp_path: Path) -> None:
    transformers, _, model = bert
    model.save_pretrained(tmp_path / "bert")
    masks = tmp_path / "masks.safetensors"
    ok("sparsify", tmp_path / "bert", tmp_path / "out", "--masks-file", masks, "-q")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        p.name for p in (tmp_path / "bert").iterdir()
    )
    check_bert(from_pretrained(transformers, tmp_path / "out"))
    assert WORD in load_masks_file(masks)


def test_bert_sharded_checkpoint(bert: Any, tmp_path: Path) -> None:
    transformers, _, model = bert
    src, out = tmp_path / "sharded", tmp_path / "out"
    model.save_pretrained(src, max_shard_size="20KB")
    index = json.loads((src / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2
    ok("sparsify", src, out, "-q")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in src.iterdir())
    new_index = json.loads((out / "model.safetensors.index.json").read_text())
    assert new_index["weight_map"] == index["weight_map"]
    check_bert(from_pretrained(transformers, out))
    # a pattern must match in one shard, not in each
    last = next(n for n, s in index["weight_map"].items() if s == shards[-1] and "weight" in n)
    ok("sparsify", src, tmp_path / "one", "--include", last, "-q")
    again = from_pretrained(transformers, tmp_path / "one")
    weights = dict(again.named_parameters())
    assert zeros(weights[last]) >= 0.5
    assert torch.equal(weights[WORD], model.state_dict()[WORD])  # not selected: unchanged


def test_bert_torch_save_state_dict_with_tied_weights(bert: Any, tmp_path: Path) -> None:
    transformers, cfg, model = bert
    src, out = tmp_path / "bert.pt", tmp_path / "out.pt"
    torch.save(model.state_dict(), src)
    ok("sparsify", src, out, "-q")
    assert out.stat().st_size < 1.2 * src.stat().st_size  # the tied tensor is written once
    loaded = torch.load(out, weights_only=True)
    assert loaded[WORD].data_ptr() == loaded[DECODER].data_ptr()
    fresh = transformers.BertForMaskedLM(cfg).eval()
    fresh.load_state_dict(loaded, strict=True)
    check_bert(fresh)
    result = CliRunner().invoke(
        cli, ["sparsify", str(src), str(tmp_path / "x.pt"), "--exclude", "cls.*"]
    )
    assert result.exit_code == 1 and "tied weights" in result.stderr
    # to safetensors, read back by safetensors' own loader for models
    from safetensors.torch import load_model

    ok("sparsify", src, tmp_path / "out.safetensors", "-q")
    other = transformers.BertForMaskedLM(cfg).eval()
    load_model(other, tmp_path / "out.safetensors", strict=True)
    check_bert(other)


# ------------------------------------------------------------------ Lightning


def _lightning_module() -> Any:
    L = pytest.importorskip("lightning")

    class TinyLit(L.LightningModule):  # type: ignore[misc, name-defined]
        def __init__(self, hidden: int = 16) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(8, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, index: int) -> torch.Tensor:
            return self.net(batch[0]).sum()

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return L, TinyLit


def test_lightning_ckpt(tmp_path: Path) -> None:
    L, TinyLit = _lightning_module()
    trainer = L.Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=tmp_path,
    )
    data = torch.utils.data.TensorDataset(torch.randn(8, 8))
    trainer.fit(TinyLit(), torch.utils.data.DataLoader(data, batch_size=4))
    src, out = tmp_path / "m.ckpt", tmp_path / "o.ckpt"
    trainer.save_checkpoint(src)
    ok("sparsify", src, out, "-q")
    model = TinyLit.load_from_checkpoint(out, weights_only=True)
    assert zeros(model.net[0].weight) == pytest.approx(0.5) and zeros(model.net[2].weight) >= 0.5
    assert model(torch.randn(3, 8)).shape == (3, 2)
    before, after = torch.load(src, weights_only=True), torch.load(out, weights_only=True)
    assert after["global_step"] == before["global_step"]
    assert after["optimizer_states"][0].keys() == before["optimizer_states"][0].keys()


# ------------------------------------------------------------------ torchvision / timm


@pytest.mark.parametrize(
    ("library", "build"),
    [
        ("torchvision", lambda m: m.models.resnet18(weights=None)),
        ("timm", lambda m: m.create_model("convnext_atto", pretrained=False)),
        ("timm", lambda m: m.create_model("mobilenetv3_small_050", pretrained=False)),
    ],
)
def test_vision_models(library: str, build: Any, tmp_path: Path) -> None:
    module = pytest.importorskip(library)  # not installable on CPU here: runs where it is
    model = build(module).eval()
    src, out = tmp_path / "m.pt", tmp_path / "o.safetensors"
    torch.save(model.state_dict(), src)
    ok("sparsify", src, out, "-q")
    from safetensors.torch import load_model

    fresh = build(module).eval()
    load_model(fresh, out, strict=True)
    weights = [p for p in fresh.parameters() if p.dim() >= 2 and p.numel() >= 64]
    assert weights and all(zeros(w) >= 0.4 for w in weights)
    with torch.no_grad():
        assert torch.isfinite(fresh(torch.randn(1, 3, 64, 64))).all()
