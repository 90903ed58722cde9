"""Tools: gene and cell embeddings, annotation, gene programs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._core._lazy import attach_stub

if TYPE_CHECKING:
    from .._kernels.weighted import weighted_embedding
    from ._annotate import (
        ScMPTModel,
        ScMPTParams,
        annotate_knn,
        annotate_knn_ensemble,
        annotate_llm,
        annotate_mlp,
        annotate_scmpt,
        classification_metrics,
        proba_frame,
    )
    from ._embed_cells import embed_cells
    from ._embed_genes import embed_genes
    from ._embed_scgpt import embed_scgpt
    from ._explain import explain_annotation
    from ._gene_programs import gene_programs

# the names above, imported on first access
__getattr__, __dir__, __all__ = attach_stub(__name__, __file__)
