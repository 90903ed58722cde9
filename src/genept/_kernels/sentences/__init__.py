"""GenePT-s kernels: cell sentences (rank genes by expression, cut, write the text).

``_numba`` (compiled ranking, shuffle and text kernels), ``_rank`` (ranking and token
cut on row blocks), ``_text`` (words, tokens, text layout), ``_build`` (the pipeline:
:func:`sentence_plan` then :func:`build_sentences`). The public faces are in
:mod:`genept.pp`.
"""

from ._build import SentencePlan, build_sentences, sentence_plan
from ._rank import rank_genes, truncate_to_budget
from ._text import hash_gene_name, missing_names, sentence_words, token_budget

__all__ = [
    "SentencePlan",
    "build_sentences",
    "hash_gene_name",
    "missing_names",
    "rank_genes",
    "sentence_plan",
    "sentence_words",
    "token_budget",
    "truncate_to_budget",
]
