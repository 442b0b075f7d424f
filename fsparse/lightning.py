"""The Lightning callbacks, short path: ``from fsparse.lightning import ...``.

Importing works without Lightning; constructing a callback then raises ``ImportError``.
See ``docs/lightning.md``.
"""

from fsparse.data_sparsifier.lightning.callbacks.data_sparsity import (
    PostTrainingDataSparsity,
    TrainingAwareDataSparsity,
)

__all__ = ["PostTrainingDataSparsity", "TrainingAwareDataSparsity"]
