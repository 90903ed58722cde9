"""Tools: gene and cell embeddings, annotation, gene programs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._core._lazy import attach

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
    from ._gene_programs import gene_programs

# name -> module it lives in; imported on first access (one line per public name)
__getattr__, __dir__, __all__ = attach(
    __name__,
    attrs={
        "ScMPTModel": "._annotate",
        "ScMPTParams": "._annotate",
        "annotate_knn": "._annotate",
        "annotate_knn_ensemble": "._annotate",
        "annotate_llm": "._annotate",
        "annotate_mlp": "._annotate",
        "annotate_scmpt": "._annotate",
        "classification_metrics": "._annotate",
        "embed_cells": "._embed_cells",
        "embed_genes": "._embed_genes",
        "embed_scgpt": "._embed_scgpt",
        "gene_programs": "._gene_programs",
        "proba_frame": "._annotate",
        "weighted_embedding": ".._kernels.weighted",
    },
)
