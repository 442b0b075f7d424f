"""Sparsify, then quantize, a recommender's embedding tables after training.

``post_training_sparse_quantize`` zeroes the lowest-norm blocks of every
``nn.Embedding``/``nn.EmbeddingBag`` (``DataNormSparsifier``) and converts them
to 8-bit weight-only quantized modules; other layers are left alone. It is the
drop-in for torch.ao's function of the same name, and this script checks that
both give the same quantized tables.

Run: python examples/embedding_sparsify_quantize.py
"""

import copy
import io
import os
import warnings
import zipfile

import torch
from torch import nn
from torch.ao.pruning._experimental.data_sparsifier import DataNormSparsifier as AoSparsifier
from torch.ao.pruning._experimental.data_sparsifier.quantization_utils import (
    post_training_sparse_quantize as ao_post_training_sparse_quantize,
)

from fsparse.data_sparsifier import DataNormSparsifier
from fsparse.data_sparsifier.quantization_utils import post_training_sparse_quantize

warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")

SMALL = os.environ.get("FSPARSE_EXAMPLE_SMALL") == "1"
USERS, PRODUCTS, DIM = (2_000, 1_000, 16) if SMALL else (100_000, 50_000, 32)
CONFIG = {"sparsity_level": 0.8, "sparse_block_shape": (1, 4), "zeros_per_block": 4}


class Recommender(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.users = nn.EmbeddingBag(USERS, DIM, mode="sum")
        self.products = nn.Embedding(PRODUCTS, DIM)
        self.head = nn.Linear(2 * DIM, 1)

    def forward(self, users: torch.Tensor, products: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([self.users(users), self.products(products).mean(1)], dim=1)
        return self.head(pooled)


def zipped_size(model: nn.Module) -> int:
    """Bytes of the state dict, saved and deflate-zipped (torch.ao's DLRM benchmark method)."""
    raw, out = io.BytesIO(), io.BytesIO()
    torch.save(model.state_dict(), raw)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("model.pt", raw.getvalue())
    return len(out.getvalue())


def zero_code_fraction(qweight: torch.Tensor) -> float:
    """Fraction of entries stored as their row's code for 0.0 (float zero points round)."""
    zero_codes = qweight.q_per_channel_zero_points().round().to(torch.int64)
    return (qweight.int_repr().to(torch.int64) == zero_codes[:, None]).float().mean().item()


torch.manual_seed(0)
model = Recommender()
users, products = torch.randint(0, USERS, (64, 5)), torch.randint(0, PRODUCTS, (64, 3))
print(f"{'dense fp32':<25} {zipped_size(model) / 2**20:7.2f} MiB zipped")

quantized_only = copy.deepcopy(model)
post_training_sparse_quantize(quantized_only, DataNormSparsifier, sparsity_level=0.0)
print(f"{'quantized only':<25} {zipped_size(quantized_only) / 2**20:7.2f} MiB zipped")

for sparsify_first in (True, False):
    ours, theirs = copy.deepcopy(model), copy.deepcopy(model)
    post_training_sparse_quantize(ours, DataNormSparsifier, sparsify_first, **CONFIG)
    ao_post_training_sparse_quantize(theirs, AoSparsifier, sparsify_first, **CONFIG)

    for name in ("users", "products"):  # the same int8 codes, scales and zero points as torch.ao
        a, b = getattr(ours, name).weight(), getattr(theirs, name).weight()
        assert torch.equal(a.int_repr(), b.int_repr())
        assert torch.equal(a.q_per_channel_scales(), b.q_per_channel_scales())
    assert type(ours.head) is nn.Linear  # only embeddings are changed

    zeros = zero_code_fraction(ours.users.weight())
    order = "sparsify, then quantize" if sparsify_first else "quantize, then sparsify"
    print(f"{order:<25} {zipped_size(ours) / 2**20:7.2f} MiB zipped, {zeros:.1%} zero codes")
    assert zeros >= CONFIG["sparsity_level"] - 0.01
    assert ours(users, products).shape == (64, 1)  # still runs: quantized embedding modules

# Only some tables: select_embeddings limits the change.
partial = copy.deepcopy(model)
post_training_sparse_quantize(
    partial, DataNormSparsifier, select_embeddings=[partial.users], **CONFIG
)
assert type(partial.products) is nn.Embedding and type(partial.users) is not nn.EmbeddingBag
print(f"{'only the users table':<25} {zipped_size(partial) / 2**20:7.2f} MiB zipped")
