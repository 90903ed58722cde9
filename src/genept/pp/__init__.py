"""Preprocessing: cell sentences (GenePT-s input)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._core._lazy import attach

if TYPE_CHECKING:
    from ._cell_sentences import (
        PAPER_PREFIX,
        build_sentences,
        cell_sentences,
        hash_gene_name,
        rank_genes,
        sentence_words,
        token_budget,
        truncate_to_budget,
    )

# name -> module it lives in; imported on first access (one line per public name)
__getattr__, __dir__, __all__ = attach(
    __name__,
    attrs={
        "PAPER_PREFIX": "._cell_sentences",
        "build_sentences": "._cell_sentences",
        "cell_sentences": "._cell_sentences",
        "hash_gene_name": "._cell_sentences",
        "rank_genes": "._cell_sentences",
        "sentence_words": "._cell_sentences",
        "token_budget": "._cell_sentences",
        "truncate_to_budget": "._cell_sentences",
    },
)
