"""Sparse-training algorithms as pure transformations (optax-style, after jaxpruner).

A pruner is a small frozen object made by a factory that closes over its
hyperparameters: ``state = pruner.init(params)`` and
``state, params = pruner.update(state, params, grads=grads)``, both pure; the
state is an immutable pytree (optree and torch's pytree). Every mask comes from
the one selection engine (``fsparse._src.engine``). See ``docs/pruners.md``.

>>> import torch
>>> from fsparse import pruners
>>> params = {"fc.weight": torch.randn(8, 8)}
>>> pruner = pruners.magnitude(sparsity=0.75)
>>> state, params = pruner.update(pruner.init(params), params)
>>> int((~state.masks["fc.weight"]).sum()), state.step
(48, 1)
"""

from fsparse.pruners._acdc import acdc
from fsparse.pruners._distributions import erk_sparsities, uniform_sparsities
from fsparse.pruners._drop_and_grow import drop_and_grow
from fsparse.pruners._dst import rigl
from fsparse.pruners._dst import set_ as set  # the algorithm's name
from fsparse.pruners._fisher import FisherInverse, MFACInverse
from fsparse.pruners._magnitude import (
    global_magnitude,
    global_saliency,
    magnitude,
    random,
    saliency,
    snip,
)
from fsparse.pruners._masks import apply_masks
from fsparse.pruners._movement import movement
from fsparse.pruners._obs import mfac, obs
from fsparse.pruners._optim import reset_optimizer_state
from fsparse.pruners._protocol import Pruner, activated
from fsparse.pruners._schedules import cosine_drop_fraction
from fsparse.pruners._soft_movement import soft_movement
from fsparse.pruners._state import PrunerState, load_state_dict, state_dict
from fsparse.pruners._ste import static_random, ste_magnitude, ste_random

__all__ = [
    "FisherInverse",
    "MFACInverse",
    "Pruner",
    "PrunerState",
    "acdc",
    "activated",
    "apply_masks",
    "cosine_drop_fraction",
    "drop_and_grow",
    "erk_sparsities",
    "global_magnitude",
    "global_saliency",
    "load_state_dict",
    "magnitude",
    "mfac",
    "movement",
    "obs",
    "random",
    "reset_optimizer_state",
    "rigl",
    "saliency",
    "set",
    "snip",
    "soft_movement",
    "state_dict",
    "static_random",
    "ste_magnitude",
    "ste_random",
    "uniform_sparsities",
]
