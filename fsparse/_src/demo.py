"""Built-in demo: the functional API end to end on a small embedding model."""

from __future__ import annotations

import torch
from torch import nn

from fsparse._src.scheduler import Scheduler, schedule
from fsparse._src.schedules import cubic
from fsparse._src.state import SparsifierState, init, sparsity, step


def sparsity_table(state: SparsifierState) -> str:
    """A per-tensor table: name, shape, target and achieved sparsity."""
    achieved = sparsity(state)
    rows = [f"{'name':<16} {'shape':<14} {'block':<7} {'target':>7} {'achieved':>9}"]
    for name, entry in state.entries.items():
        cfg = entry.config
        block = "x".join(map(str, cfg.sparse_block_shape))
        rows.append(
            f"{name:<16} {tuple(entry.data.shape)!s:<14} {block:<7} "
            f"{cfg.sparsity_level:>7.3f} {achieved[name]:>9.3f}"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Sparsify a small recommender's tables and layers on a cubic schedule."""
    torch.manual_seed(0)
    model = nn.ModuleDict(
        {
            "users": nn.Embedding(10_000, 16),
            "products": nn.Embedding(5_000, 16),
            "mlp": nn.Linear(32, 8),
        }
    )
    named = {name.replace(".", "_"): p for name, p in model.named_parameters()}
    state = init(named, sparsity_level=0.0, sparse_block_shape=(1, 4))
    sched = Scheduler(cubic(0.0, 0.8, begin_step=0, num_updates=4))
    sched_state = sched.init(state)
    for epoch in range(5):
        sched_state, state = schedule(sched, sched_state, state)
        state = step(state)
        print(f"epoch {epoch}: target sparsity {state['users_weight'].config.sparsity_level:.3f}")
    print()
    print(sparsity_table(state))
    return 0
