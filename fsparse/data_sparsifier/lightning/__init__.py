"""Drop-in for ``torch.ao.pruning._experimental.data_sparsifier.lightning``."""
