"""Plotting."""

from ._confusion import confusion_matrix
from ._embeddings import bm_results, embeddings
from ._genes import gene_umap
from ._programs import gene_programs

__all__ = ["bm_results", "confusion_matrix", "embeddings", "gene_programs", "gene_umap"]
