"""Datasets and resources: precomputed GenePT embeddings, NCBI summaries, gene cards."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._core._lazy import attach_stub

if TYPE_CHECKING:
    from ._default_table import default_table
    from ._gene_cards import TEXT_LEVELS, card_text, gene_cards
    from ._genept_zenodo import genept_embeddings, ncbi_summaries

# the names above, imported on first access
__getattr__, __dir__, __all__ = attach_stub(__name__, __file__)
