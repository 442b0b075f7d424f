"""The functional API: immutable state, pure step/schedule, torch.func on top.

Run: python examples/functional_api.py
"""

import torch
from torch import nn

import fsparse

torch.manual_seed(0)
model = nn.Sequential(nn.Embedding(1000, 16), nn.Flatten(), nn.Linear(16 * 4, 1))

# 1. State from named parameters ("." is not allowed in names, as in torch.ao).
params = {name.replace(".", "_"): p for name, p in model.named_parameters()}
state = fsparse.init(params, sparsity_level=0.0, sparse_block_shape=(1, 4))

# 2. A cubic (Zhu & Gupta) schedule to 80% over 4 epochs; step() recomputes masks.
scheduler = fsparse.Scheduler(fsparse.cubic(0.0, 0.8, num_updates=4))
sched_state = scheduler.init(state)
for epoch in range(5):
    sched_state, state = fsparse.schedule(scheduler, sched_state, state)
    state = fsparse.step(state)
    print(f"epoch {epoch}: sparsity {fsparse.sparsity(state)['0_weight']:.3f}")

# 3. torch.func.functional_call runs the model on the sparsified parameters;
#    the model's own parameters are untouched.
sparse_params = {k.replace("_", ".", 1): v for k, v in fsparse.sparsified(state).items()}
tokens = torch.randint(0, 1000, (8, 4))
out = torch.func.functional_call(model, sparse_params, (tokens,))
print("output", tuple(out.shape), "| model weights untouched:", bool(model[0].weight.ne(0).all()))

# 4. vmap of the mask function over a stack of same-shaped tensors.
stack = torch.randn(16, 64, 64)
masks = torch.vmap(lambda w: fsparse.norm_mask(w, 0.5, (1, 4)))(stack)
assert all(torch.equal(masks[i], fsparse.norm_mask(stack[i], 0.5, (1, 4))) for i in range(16))
print("vmap masks", tuple(masks.shape), "match per-tensor masks")
