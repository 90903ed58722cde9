"""Plotting."""

from ._confusion import confusion_matrix
from ._genes import gene_umap

__all__ = ["confusion_matrix", "gene_umap"]
