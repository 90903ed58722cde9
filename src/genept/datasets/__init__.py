"""Datasets and resources: precomputed GenePT embeddings, NCBI summaries, gene cards."""

from ._gene_cards import card_text, gene_cards
from ._genept_zenodo import genept_embeddings, ncbi_summaries

__all__ = ["card_text", "gene_cards", "genept_embeddings", "ncbi_summaries"]
