"""Tools: gene and cell embeddings, annotation, gene programs."""

from ._embed_genes import embed_genes
from ._embed_scgpt import embed_scgpt

__all__ = ["embed_genes", "embed_scgpt"]
