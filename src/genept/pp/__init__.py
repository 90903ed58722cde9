"""Preprocessing: cell sentences (GenePT-s input)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._core._lazy import attach

if TYPE_CHECKING:
    from .._kernels.sentences import (
        SentencePlan,
        build_sentences,
        hash_gene_name,
        rank_genes,
        sentence_plan,
        sentence_words,
        token_budget,
        truncate_to_budget,
    )
    from ._cell_sentences import PAPER_PREFIX, cell_sentences

# name -> module it lives in; imported on first access (one line per public name)
__getattr__, __dir__, __all__ = attach(
    __name__,
    attrs={
        "PAPER_PREFIX": "._cell_sentences",
        "SentencePlan": ".._kernels.sentences",
        "build_sentences": ".._kernels.sentences",
        "cell_sentences": "._cell_sentences",
        "hash_gene_name": ".._kernels.sentences",
        "rank_genes": ".._kernels.sentences",
        "sentence_plan": ".._kernels.sentences",
        "sentence_words": ".._kernels.sentences",
        "token_budget": ".._kernels.sentences",
        "truncate_to_budget": ".._kernels.sentences",
    },
)
