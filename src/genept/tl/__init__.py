"""Tools: gene and cell embeddings, annotation, gene programs."""

from ._embed_genes import embed_genes

__all__ = ["embed_genes"]
