"""Lightning callbacks (torch.ao's ``data_sparsifier.lightning.callbacks``)."""

from fsparse.data_sparsifier.lightning.callbacks.data_sparsity import (
    PostTrainingDataSparsity,
    TrainingAwareDataSparsity,
)

__all__ = ["PostTrainingDataSparsity", "TrainingAwareDataSparsity"]
