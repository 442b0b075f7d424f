"""The built-in demo's model and data: a small DLRM-style recommender.

Synthetic Criteo-shaped data (13 dense features, 26 categorical ones with
Zipf-distributed ids over tables of very different sizes) is generated in
process from a seed; nothing is downloaded. :mod:`fsparse.cli.demo_run` trains
and sparsifies it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call

__all__ = ["DEFAULT", "QUICK", "Batch", "DemoConfig", "TinyDLRM", "evaluate", "is_table",
           "make_data", "state_names"]

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Sizes and targets of the demo; :data:`QUICK` is the smoke-test size."""

    n_train: int = 32_768
    n_test: int = 8_192
    n_dense: int = 13
    n_tables: int = 26
    min_rows: int = 10
    max_rows: int = 20_000
    dim: int = 16
    epochs: int = 4
    batch_size: int = 256
    lr: float = 0.05
    updates_per_epoch: int = 4
    table_target: float = 0.9
    min_sparse_rows: int = 1_000
    mlp_target: float = 0.5
    block: tuple[int, int] = (1, 4)
    size_levels: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.99, 1.0)
    seed: int = 0
    num_threads: int = 1  # the ops are small: one thread is as fast, and immune to a busy CPU

    @property
    def table_sizes(self) -> list[int]:
        """Rows per table, log-spaced from ``min_rows`` to ``max_rows``."""
        ratio = math.log(self.max_rows / self.min_rows)
        steps = max(self.n_tables - 1, 1)
        return [round(self.min_rows * math.exp(ratio * i / steps)) for i in range(self.n_tables)]


DEFAULT = DemoConfig()  # what `fsparse demo` runs
QUICK = DemoConfig(
    n_train=2_048,
    n_test=1_024,
    max_rows=2_000,
    min_sparse_rows=200,
    epochs=2,
    updates_per_epoch=2,
    size_levels=(0.0, 0.5, 0.9, 1.0),
)


class TinyDLRM(nn.Module):
    """Bottom MLP for dense features, one EmbeddingBag per categorical feature,
    pairwise dot-product interactions, and a top MLP giving one logit."""

    def __init__(self, n_dense: int, table_sizes: list[int], dim: int) -> None:
        super().__init__()
        self.bottom = nn.Sequential(
            nn.Linear(n_dense, 32), nn.ReLU(), nn.Linear(32, dim), nn.ReLU()
        )
        self.tables = nn.ModuleList(nn.EmbeddingBag(n, dim, mode="sum") for n in table_sizes)
        for table, n in zip(self.tables, table_sizes):
            nn.init.uniform_(table.get_parameter("weight"), -(n**-0.5), n**-0.5)  # DLRM's init
        n_vec = len(table_sizes) + 1
        self.register_buffer("pairs", torch.triu_indices(n_vec, n_vec, offset=1), persistent=False)
        self.top = nn.Sequential(
            nn.Linear(dim + n_vec * (n_vec - 1) // 2, 64), nn.ReLU(), nn.Linear(64, 1)
        )

    def forward(self, dense: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        x = self.bottom(dense)
        vecs = [x] + [table(ids[:, f : f + 1]) for f, table in enumerate(self.tables)]
        z = torch.stack(vecs, dim=1)
        inter = z @ z.transpose(1, 2)
        pairs = self.get_buffer("pairs")
        feats = torch.cat([x, inter[:, pairs[0], pairs[1]]], dim=1)
        return self.top(feats).squeeze(1)  # type: ignore[no-any-return]


def make_data(cfg: DemoConfig) -> tuple[Batch, Batch]:
    """Seeded synthetic click data ``(dense, ids, labels)`` for train and test.

    Labels come from a hidden teacher: a linear term on the dense features, a
    per-id value in every table (larger in a few tables) and one interaction.
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    n = cfg.n_train + cfg.n_test
    dense = torch.log1p(torch.empty(n, cfg.n_dense).exponential_(generator=gen) * 10)
    ids, logit = [], (dense - dense.mean(0)) @ (torch.randn(cfg.n_dense, generator=gen) * 0.3)
    for f, rows in enumerate(cfg.table_sizes):
        popularity = torch.arange(1, rows + 1, dtype=torch.float).pow(-1.05)
        ranks = torch.multinomial(popularity, n, replacement=True, generator=gen)
        col = torch.randperm(rows, generator=gen)[ranks]  # hashed ids: popularity is not by index
        weight = 1.0 if f % 5 == 0 else 0.25
        logit = logit + torch.randn(rows, generator=gen)[col] * weight
        ids.append(col)
    ids_t = torch.stack(ids, 1)
    tv = (
        torch.randn(cfg.table_sizes[1], 4, generator=gen),
        torch.randn(cfg.table_sizes[2], 4, generator=gen),
    )
    logit = logit + (tv[0][ids_t[:, 1]] * tv[1][ids_t[:, 2]]).sum(1)
    labels = torch.bernoulli(torch.sigmoid(logit - 1.2), generator=gen)
    k = cfg.n_train
    return (dense[:k], ids_t[:k], labels[:k]), (dense[k:], ids_t[k:], labels[k:])


def state_names(model: nn.Module) -> dict[str, str]:
    """State name (no dots) -> parameter key, for every weight matrix and table."""
    return {k.replace(".", "_"): k for k, p in model.named_parameters() if p.dim() == 2}


def evaluate(
    model: nn.Module, data: Batch, params: Mapping[str, torch.Tensor] | None = None
) -> float:
    """Accuracy of ``model`` (with ``params`` swapped in, if given) on ``data``."""
    dense, ids, labels = data
    with torch.no_grad():
        logits = functional_call(model, dict(params or {}), (dense, ids))
    return float(((logits > 0).float() == labels).float().mean())


def is_table(key: str) -> bool:
    """Whether the state-dict ``key`` is one of the embedding tables' weights.

    >>> [is_table(k) for k in ("tables.0.weight", "top.0.weight")]
    [True, False]
    """
    return key.startswith("tables.")
