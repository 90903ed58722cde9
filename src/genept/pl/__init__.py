"""Plotting."""

from ._genes import gene_umap

__all__ = ["gene_umap"]
