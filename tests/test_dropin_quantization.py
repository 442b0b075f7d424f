"""post_training_sparse_quantize against torch.ao's version as the oracle."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch
from torch import nn
from torch.ao.pruning._experimental.data_sparsifier import DataNormSparsifier as AoNorm
from torch.ao.pruning._experimental.data_sparsifier.quantization_utils import (
    post_training_sparse_quantize as ao_ptsq,
)

from fsparse.data_sparsifier import DataNormSparsifier
from fsparse.data_sparsifier.quantization_utils import post_training_sparse_quantize

CONFIG = {"sparsity_level": 0.6, "sparse_block_shape": (1, 4), "zeros_per_block": 4}


class Tower(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(12, 8)
        self.proj = nn.Linear(8, 8)


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Embedding(10, 16),
        nn.ModuleDict({"towers": nn.ModuleList([Tower(), Tower()]), "head": nn.Linear(8, 2)}),
    )


def quantized_weights(model: nn.Module) -> dict[str, Any]:
    out = {}
    for name, module in model.named_modules():
        if callable(getattr(module, "weight", None)) and hasattr(module, "set_weight"):
            weight = module.weight()
            out[name] = (
                weight.int_repr(),
                weight.q_per_channel_scales(),
                weight.q_per_channel_zero_points(),
            )
    return out


def run_both(**kwargs: Any) -> tuple[nn.Module, nn.Module, nn.Module]:
    original = make_model()
    ours, ref = copy.deepcopy(original), copy.deepcopy(original)
    select = kwargs.pop("select", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        post_training_sparse_quantize(
            ours, DataNormSparsifier, select_embeddings=select and select(ours), **kwargs, **CONFIG
        )
        ao_ptsq(ref, AoNorm, select_embeddings=select and select(ref), **kwargs, **CONFIG)
    return original, ours, ref


@pytest.mark.parametrize("sparsify_first", [True, False])
def test_matches_torch_ao_on_nested_embeddings(sparsify_first: bool) -> None:
    original, ours, ref = run_both(sparsify_first=sparsify_first)
    found, expected = quantized_weights(ours), quantized_weights(ref)
    assert sorted(found) == ["0", "1.towers.0.bag", "1.towers.1.bag"] == sorted(expected)
    for name, (ints, scales, zero_points) in found.items():
        ref_ints, ref_scales, ref_zero_points = expected[name]
        assert torch.equal(ints, ref_ints)
        assert torch.equal(scales, ref_scales) and torch.equal(zero_points, ref_zero_points)
    # other layers are left alone
    for name, module in original.named_modules():
        if type(module) is nn.Linear:
            twin = ours.get_submodule(name)
            assert type(twin) is nn.Linear
            assert torch.equal(twin.weight, module.weight) and torch.equal(twin.bias, module.bias)


@pytest.mark.parametrize("sparsify_first", [True, False])
def test_pruned_blocks_hold_the_quantized_zero(sparsify_first: bool) -> None:
    _, ours, _ = run_both(sparsify_first=sparsify_first)
    weight = ours[0].weight()
    zero = torch.quantize_per_channel(
        torch.zeros(10, 16),
        weight.q_per_channel_scales(),
        weight.q_per_channel_zero_points(),
        axis=0,
        dtype=weight.dtype,
    )
    pruned = (weight.int_repr() == zero.int_repr()).reshape(10, 4, 4).all(-1)
    assert int(pruned.sum()) == round(0.6 * 40)


def test_select_embeddings_limits_the_change() -> None:
    _, ours, ref = run_both(select=lambda m: [m[1]["towers"][1].bag], sparsify_first=True)
    assert sorted(quantized_weights(ours)) == ["1.towers.1.bag"] == sorted(quantized_weights(ref))
    assert type(ours[0]) is nn.Embedding and type(ours[1]["towers"][0].bag) is nn.EmbeddingBag
    assert torch.equal(ours[0].weight, make_model()[0].weight)


@pytest.mark.parametrize(
    ("select", "error"),
    [
        (lambda m: m[0], TypeError),
        (lambda m: [m[1]["head"]], TypeError),
        (lambda m: [nn.Embedding(3, 4)], ValueError),
    ],
)
def test_bad_select_embeddings(select: Any, error: type) -> None:
    model = make_model()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(error, match="select_embeddings"):
        post_training_sparse_quantize(model, DataNormSparsifier, select_embeddings=select(model))
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
