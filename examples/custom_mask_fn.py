"""A custom mask function: prune whole embedding rows by L2 norm, on a schedule.

A mask function maps ``(data, config)`` to a bool mask of ``data``'s shape
(``False`` = pruned). Give it to ``fsparse.step(state, mask_fn=...)`` to use it
for every entry, or put it in one entry's config (``mask_fn=...``) so only that
entry uses it. Extra config keys (here ``threshold``) reach it through
``config.extra``; a schedule drives ``config.sparsity_level`` as usual.

Run: python examples/custom_mask_fn.py
"""

import os

import torch

import fsparse

SMALL = os.environ.get("FSPARSE_EXAMPLE_SMALL") == "1"
USERS, ITEMS, DIM = (2_000, 500, 16) if SMALL else (200_000, 50_000, 32)


def row_norm_mask(data: torch.Tensor, config: fsparse.SparsityConfig) -> torch.Tensor:
    """Prune the ``sparsity_level`` fraction of rows with the smallest L2 norm."""
    level = min(max(config.sparsity_level, 0.0), 1.0)
    norms = data.reshape(data.shape[0], -1).norm(dim=1)
    pruned = fsparse.select_k_smallest(norms, round(level * data.shape[0]))
    return (~pruned)[:, None].expand_as(data)


def threshold_mask(data: torch.Tensor, config: fsparse.SparsityConfig) -> torch.Tensor:
    """Keep the entries with ``|x| >= threshold`` (a user key of the config)."""
    return data.abs() >= config.extra("threshold", 0.0)


torch.manual_seed(0)
tables = {
    "users": torch.nn.Embedding(USERS, DIM),
    "items": torch.nn.Embedding(ITEMS, DIM),
}
state = fsparse.init(tables, sparsity_level=0.0)

# 1. One mask function for every entry, with a cubic schedule to 70% of rows.
scheduler = fsparse.Scheduler(fsparse.cubic(0.0, 0.7, num_updates=3))
sched_state = scheduler.init(state)
for epoch in range(4):
    sched_state, state = fsparse.schedule(scheduler, sched_state, state)
    state = fsparse.step(state, mask_fn=row_norm_mask)
    print(f"epoch {epoch}: users sparsity {fsparse.sparsity(state)['users']:.3f}")

mask = state["users"].mask
whole_rows = mask.all(dim=1) | (~mask).all(dim=1)
assert bool(whole_rows.all()), "every row is either kept or pruned whole"
assert (~mask[:, 0]).sum().item() == round(0.7 * USERS)

# 2. A per-entry mask function: only "mlp" uses the threshold; the tables keep the
#    default norm block mask (recomputed at their current 70% level).
state = fsparse.add(state, "mlp", torch.randn(64, 64), mask_fn=threshold_mask, threshold=1.0)
state = fsparse.step(state)
mlp = state["mlp"]
assert torch.equal(mlp.mask, mlp.data.abs() >= 1.0)
for name, level in fsparse.sparsity(state).items():
    fn = state[name].config.mask_fn
    print(f"{name:>5}: {level:.3f} sparse via {fn.__name__ if fn else 'norm block mask'}")

# 3. The result is ordinary tensors; squash drops the masks.
users = fsparse.squash(state)["users"]
zero_rows = int((users == 0).all(dim=1).sum())
print(f"users now: {(users == 0).float().mean():.1%} zeros in 1x4 blocks, {zero_rows} whole rows")
