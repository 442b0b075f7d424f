"""fsparse.oneshot.prune_model: MLP, conv net and tiny GPT-2; sequential calibration; bad input."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from fsparse.oneshot import LayerReport, prune_model, sparsegpt_prune, wanda_prune


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))


def batches(seed: int = 1, n: int = 4, shape: tuple[int, ...] = (12, 16)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g) for _ in range(n)]


def zeros(t: torch.Tensor) -> float:
    return float((t == 0).sum()) / t.numel()


@pytest.mark.parametrize("method", ["sparsegpt", "wanda", "magnitude"])
@pytest.mark.parametrize("n_m", [None, (2, 4)])
def test_mlp_exact_sparsity_and_report(method: str, n_m: tuple[int, int] | None) -> None:
    model, data = mlp(), batches()
    dense = model(data[0])
    report = prune_model(model, data, method=method, n_m=n_m, quiet=True)
    assert list(report) == ["0", "2"]
    for name, layer in (("0", model[0]), ("2", model[2])):
        entry = report[name]
        assert isinstance(entry, LayerReport) and entry.kind == "linear"
        assert entry.shape == tuple(layer.weight.shape) and entry.tokens == 48
        assert entry.sparsity == zeros(layer.weight) == 0.5
        assert entry.error is not None and 0 < entry.error < 1
        if n_m is not None:
            assert bool(((layer.weight == 0).view(layer.weight.shape[0], -1, 4).sum(-1) == 2).all())
    out = model(data[0])
    assert out.shape == dense.shape and bool(torch.isfinite(out).all())


def test_sequential_calibrates_on_the_pruned_outputs() -> None:
    model, data = mlp(), batches()
    dense = mlp()
    x = torch.cat(data)
    prune_model(model, data, quiet=True)
    first = sparsegpt_prune(dense[0].weight.detach(), 2 * x.T @ x / len(x), 0.5)
    torch.testing.assert_close(model[0].weight.detach(), first)

    def hessian(weight: torch.Tensor) -> torch.Tensor:
        h = torch.relu(x @ weight.T + dense[0].bias.detach())
        return 2 * h.T @ h / len(h)

    w2 = dense[2].weight.detach()
    on_pruned = sparsegpt_prune(w2, hessian(first), 0.5)
    on_dense = sparsegpt_prune(w2, hessian(dense[0].weight.detach()), 0.5)
    assert (on_pruned - on_dense).abs().max() > 1e-3          # the two calibrations differ
    torch.testing.assert_close(model[2].weight.detach(), on_pruned, rtol=1e-4, atol=1e-5)
    other = mlp()
    prune_model(other, data, sequential=False, quiet=True)
    torch.testing.assert_close(other[2].weight.detach(), on_dense, rtol=1e-4, atol=1e-5)


def test_wanda_uses_the_mean_square_of_each_input_feature() -> None:
    model, data = mlp(), batches()
    dense = mlp()
    prune_model(model, data, method="wanda", quiet=True, targets="0")
    x = torch.cat(data)
    expected = wanda_prune(dense[0].weight.detach(), x.square().mean(0), 0.5)
    assert bool((model[0].weight == expected).all())
    assert bool((model[2].weight == dense[2].weight).all())          # not a target


def test_conv_net_unfolded_channels_last_n_m() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding="same", padding_mode="reflect"),
        nn.ReLU(), nn.Conv2d(8, 4, 1, stride=2), nn.Flatten(), nn.Linear(4 * 3 * 3, 4),
    )
    data = batches(shape=(2, 4, 6, 6), n=3)
    report = prune_model(model, data, method="sparsegpt", n_m=(2, 4), quiet=True)
    assert [r.kind for r in report.values()] == ["conv2d"] * 3 + ["linear"]
    assert report["2"].tokens == 3 * 2 * 36 and report["4"].tokens == 3 * 2 * 9
    for name in ("0", "2", "4"):
        weight = model.get_submodule(name).weight
        groups = (weight == 0).permute(0, 2, 3, 1).reshape(weight.shape[0], -1, 4)
        assert bool((groups.sum(-1) == 2).all()), name    # 2 of every 4 input channels
    assert bool(torch.isfinite(model(data[0])).all())


def test_conv_matches_the_layer_function_on_unfolded_patches() -> None:
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    dense = conv.weight.detach().clone()
    data = batches(shape=(2, 3, 5, 5), n=2)
    prune_model(conv, data, method="sparsegpt", quiet=True)
    patches = torch.cat([nn.functional.unfold(x, 3, padding=1) for x in data])
    rows = patches.view(4, 3, 9, 25).permute(0, 3, 2, 1).reshape(-1, 27)
    matrix = dense.permute(0, 2, 3, 1).reshape(4, 27)
    expected = sparsegpt_prune(matrix, 2 * rows.T @ rows / len(rows), 0.5)
    torch.testing.assert_close(conv.weight.detach().permute(0, 2, 3, 1).reshape(4, 27), expected,
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("conv", [
    nn.Conv2d(3, 4, 3, padding="same", padding_mode="reflect"),
    nn.Conv2d(3, 4, (3, 2), stride=(2, 1), dilation=(1, 2), padding=(1, 0)),
    nn.Conv2d(3, 4, 3, padding="valid", padding_mode="circular"),
])
def test_unfolded_rows_times_the_weight_view_give_the_conv_output(conv: nn.Conv2d) -> None:
    from fsparse.oneshot._stats import layer_inputs, read_weight

    x = torch.randn(2, 3, 7, 6)
    out = conv(x) - conv.bias.detach()[:, None, None]
    rows = layer_inputs(conv, "conv2d", x)
    flat = (rows @ read_weight(conv, "conv2d").T).view(2, out.shape[2], out.shape[3], 4)
    torch.testing.assert_close(flat.permute(0, 3, 1, 2), out.detach(), rtol=1e-4, atol=1e-5)


def test_tiny_gpt2() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64,
                                     n_positions=16, bos_token_id=0, eos_token_id=0)
    g = torch.Generator().manual_seed(0)
    data = [torch.randint(0, 64, (2, 16), generator=g) for _ in range(3)]
    for method in ("sparsegpt", "wanda"):
        torch.manual_seed(0)
        model = transformers.GPT2LMHeadModel(config)
        with pytest.raises(ValueError, match=r"lm_head.*tied"):
            prune_model(model, data, quiet=True)
        report = prune_model(model, [{"input_ids": d} for d in data], method=method,
                             ignore="lm_head", quiet=True)
        assert len(report) == 8 and {r.kind for r in report.values()} == {"conv1d"}
        assert list(report)[:2] == ["transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj"]
        for name, entry in report.items():
            weight = model.get_submodule(name).weight
            assert entry.sparsity == zeros(weight) == 0.5 and entry.tokens == 96
            if method == "wanda":       # Conv1D's weight is (in, out): half of each column
                assert bool(((weight == 0).sum(0) == weight.shape[0] // 2).all())
        assert bool(torch.isfinite(model(data[0]).logits).all())
        assert model.transformer.wte.weight.eq(0).sum() == 0


def test_progress_lines_and_modes_restored(capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    model = mlp()
    model.train()
    model[2].eval()
    prune_model(model, batches(), method="magnitude", report_error=False)   # rich, if installed
    assert model.training and model[0].training and not model[2].training
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "rich" else real(name, *a))
    prune_model(mlp(), batches(), method="wanda", n_m=(2, 4))
    err = capsys.readouterr().err.splitlines()
    assert err[-2:] == ["wanda 2:4 [1/2] 0", "wanda 2:4 [2/2] 2"]
    prune_model(mlp(), batches(), method="wanda", quiet=True)
    assert capsys.readouterr().err == ""


def test_magnitude_without_error_needs_no_forward() -> None:
    model = mlp()
    calls: list[int] = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    out = prune_model(model, batches(n=2), method="magnitude", report_error=False, quiet=True)
    assert all(r.error is None and r.tokens == 0 for r in out.values())
    assert len(calls) == 2                           # the one checking pass only


class Fragile(nn.Module):
    """Its second layer's input becomes inf once the first layer has zeros: a late failure."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ok = (self.a.weight != 0).all().float()
        return self.b(self.a(x) / ok)


BAD: list[tuple[Callable[[nn.Module], object], type, str]] = [
    (lambda m: prune_model(m, batches(shape=(12, 15)), quiet=True), ValueError,
     r"calibration_batches\[0\]"),
    (lambda m: prune_model(m, batches()[:2] + batches(shape=(3, 9)), quiet=True), ValueError,
     r"calibration_batches\[2\]"),
    (lambda m: prune_model(m, [], quiet=True), ValueError, "calibration_batches"),
    (lambda m: prune_model(m, torch.randn(4, 16), quiet=True), TypeError, "calibration_batches"),
    (lambda m: prune_model(m, [3.0], quiet=True), TypeError, r"calibration_batches\[0\]"),
    (lambda m: prune_model(m, [torch.full((4, 16), float("nan"))], quiet=True), ValueError,
     "hessian"),
    (lambda m: prune_model(m, batches(), sparsity=1.0, quiet=True), ValueError, "sparsity"),
    (lambda m: prune_model(m, batches(), n_m=(2, 3), quiet=True), ValueError, "n_m"),
    (lambda m: prune_model(m, batches(), method="obs", quiet=True), ValueError, "method"),
    (lambda m: prune_model(m, batches(), targets="nope", quiet=True), ValueError, "targets"),
    (lambda m: prune_model(m, batches(), targets="1", quiet=True), TypeError, "targets"),
    (lambda m: prune_model(m, batches(), targets=[1], quiet=True), TypeError, "targets"),
    (lambda m: prune_model(m, batches(), ignore="*", quiet=True), ValueError, "no layer"),
    (lambda m: prune_model(m, batches(), quiet=1), TypeError, "quiet"),
    (lambda m: prune_model("model", batches()), TypeError, "model"),
]


@pytest.mark.parametrize("call, error, words", BAD)
def test_bad_input_changes_nothing(call: Callable[[nn.Module], object], error: type,
                                   words: str) -> None:
    model = mlp()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(error, match=words):
        call(model)
    assert all(bool((a == b).all()) for a, b in zip(before, model.parameters()))


def test_a_late_failure_restores_the_layers_already_written() -> None:
    model = Fragile()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"layer 'b'.*calibration_batches"):
        prune_model(model, batches(shape=(6, 8)), quiet=True)
    assert all(bool((a == b).all()) for a, b in zip(before, model.parameters()))
