"""One-shot pruning from calibration data: SparseGPT, Wanda and magnitude.

* Layer functions, pure on tensors: :func:`sparsegpt_prune`, :func:`wanda_prune`,
  :func:`magnitude_prune` (``(out, in)`` weights; nothing is modified).
* :func:`prune_model`: the edge. It hooks a model's ``nn.Linear``, ``nn.Conv2d``
  and Hugging Face ``Conv1D`` layers, calibrates them one at a time on the
  outputs of the layers already pruned, and writes the pruned weights in place.

See ``docs/oneshot.md``.
"""

from fsparse.oneshot._magnitude import magnitude_prune
from fsparse.oneshot._prune_model import METHODS, LayerReport, prune_model
from fsparse.oneshot._sparsegpt import hessian_inverse_factor, sparsegpt_prune
from fsparse.oneshot._wanda import wanda_prune, wanda_scores

__all__ = [
    "METHODS",
    "LayerReport",
    "hessian_inverse_factor",
    "magnitude_prune",
    "prune_model",
    "sparsegpt_prune",
    "wanda_prune",
    "wanda_scores",
]
