"""Drop-in for ``torch.ao.pruning._experimental.data_sparsifier``."""

from fsparse.data_sparsifier.base_data_sparsifier import BaseDataSparsifier
from fsparse.data_sparsifier.data_norm_sparsifier import DataNormSparsifier

__all__ = ["BaseDataSparsifier", "DataNormSparsifier"]
