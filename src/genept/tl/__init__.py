"""Tools: gene and cell embeddings, annotation, gene programs."""

from ._annotate import (
    ScMPTModel,
    annotate_knn,
    annotate_knn_ensemble,
    annotate_llm,
    annotate_mlp,
    annotate_scmpt,
    classification_metrics,
)
from ._embed_cells import embed_cells
from ._embed_genes import embed_genes
from ._embed_scgpt import embed_scgpt
from ._gene_programs import gene_programs

__all__ = [
    "ScMPTModel",
    "annotate_knn",
    "annotate_knn_ensemble",
    "annotate_llm",
    "annotate_mlp",
    "annotate_scmpt",
    "classification_metrics",
    "embed_cells",
    "embed_genes",
    "embed_scgpt",
    "gene_programs",
]
