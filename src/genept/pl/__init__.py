"""Plotting."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._core._lazy import attach_stub

if TYPE_CHECKING:
    from ._attributions import attributions
    from ._confusion import confusion_matrix
    from ._embeddings import bm_results, embeddings
    from ._genes import gene_umap
    from ._programs import gene_programs

# the names above, imported on first access
__getattr__, __dir__, __all__ = attach_stub(__name__, __file__)
