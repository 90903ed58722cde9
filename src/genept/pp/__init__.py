"""Preprocessing: cell sentences (GenePT-s input)."""

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

__all__ = [
    "PAPER_PREFIX",
    "build_sentences",
    "cell_sentences",
    "hash_gene_name",
    "rank_genes",
    "sentence_words",
    "token_budget",
    "truncate_to_budget",
]
