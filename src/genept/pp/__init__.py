"""Preprocessing: cell sentences (GenePT-s input)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._core._lazy import attach_stub

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

# the names above, imported on first access
__getattr__, __dir__, __all__ = attach_stub(__name__, __file__)
