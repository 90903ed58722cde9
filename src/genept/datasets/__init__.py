"""Datasets and resources: precomputed GenePT embeddings, NCBI summaries, gene cards."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._core._lazy import attach

if TYPE_CHECKING:
    from ._gene_cards import card_text, gene_cards
    from ._genept_zenodo import genept_embeddings, ncbi_summaries

# name -> module it lives in; imported on first access (one line per public name)
__getattr__, __dir__, __all__ = attach(
    __name__,
    attrs={
        "card_text": "._gene_cards",
        "gene_cards": "._gene_cards",
        "genept_embeddings": "._genept_zenodo",
        "ncbi_summaries": "._genept_zenodo",
    },
)
