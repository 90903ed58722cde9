"""Plotting."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._core._lazy import attach

if TYPE_CHECKING:
    from ._confusion import confusion_matrix
    from ._embeddings import bm_results, embeddings
    from ._genes import gene_umap
    from ._programs import gene_programs

# name -> module it lives in; imported on first access (one line per public name)
__getattr__, __dir__, __all__ = attach(
    __name__,
    attrs={
        "bm_results": "._embeddings",
        "confusion_matrix": "._confusion",
        "embeddings": "._embeddings",
        "gene_programs": "._programs",
        "gene_umap": "._genes",
    },
)
