"""The cell-sentence pipeline, assembled once: :func:`sentence_plan` then :func:`build_sentences`.

:func:`sentence_plan` turns the gene names into the words written (symbols or hashes;
missing symbols get no word) and, given an encoder, counts each word's tokens and the
tokens left after the prefix. :func:`build_sentences` ranks, cuts and writes the
sentences of a matrix with that plan; it never rebuilds the words. ``pp.cell_sentences``,
``tl.embed_cells`` and ``bm`` all go through these two functions.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..._core._blocks import check_block_rows
from ..._core._docs import doc_params, doc_random_state
from ..._core._progress import progress_bar
from ..._settings import settings
from ..._utils import renamed_arg
from ._numba import _shuffle_rows
from ._rank import _check_n_genes, _iter_row_blocks, _rank_block, _tie_priority, truncate_to_budget
from ._text import _Names, sentence_words, token_budget

__all__ = ["SentencePlan", "build_sentences", "sentence_plan"]


@dataclass(frozen=True, eq=False)
class SentencePlan:
    """What every cell sentence of a gene set is made of, computed once per gene set.

    Attributes
    ----------
    words
        The word of each gene (column of ``X``); ``""`` for a missing symbol, which is
        never written.
    prefix
        Text before the genes of each non-empty cell.
    token_counts
        Tokens of each word (``None`` without a token budget).
    budget
        Tokens available to the words after the prefix and special tokens (``None``: no
        cut).
    max_tokens
        The token limit the budget was computed from.
    hash_names
        Whether the words are hashed names (scMPT ablation).
    """

    words: np.ndarray
    prefix: str = ""
    token_counts: np.ndarray | None = None
    budget: int | None = None
    max_tokens: int | None = None
    hash_names: bool = False

    @property
    def n_vars(self) -> int:
        """Number of genes (columns of ``X``)."""
        return int(self.words.shape[0])

    @property
    def keep(self) -> np.ndarray:
        """Genes that have a word (a missing symbol is never written)."""
        return self.words != ""

    def _cut(self, n_genes: int | None) -> int | None:
        """Genes to rank per cell: ``n_genes``, or fewer when the budget fills sooner."""
        if self.token_counts is None:
            return n_genes
        # no cell keeps more genes than the cheapest genes fill: rank no further
        costs = np.sort(self.token_counts[self.keep])
        fit = int(np.searchsorted(np.cumsum(costs), self.budget, side="right"))
        return max(1, min(n_genes or fit, fit))


def sentence_plan(
    gene_names: Sequence[Any],
    *,
    prefix: str = "",
    hash_names: bool = False,
    encoder: Any = None,
    max_tokens: int | None = None,
) -> SentencePlan:
    """The words of the genes and, with an encoder, their token budget: the one entry point of the cell-sentence pipeline (words, then tokens, then :func:`build_sentences`).

    Parameters
    ----------
    gene_names
        Symbol of each column of ``X``; missing ones (NaN, ``None``, ``"NA"``...) are
        never written (see :func:`sentence_words`).
    prefix
        Text before the genes, e.g. :data:`genept.pp.PAPER_PREFIX`.
    hash_names
        Write ``sha256(name)[:10]`` instead of each name (scMPT ablation, section 3.2).
    encoder
        A :class:`~genept.encoders.TextEncoder`: sentences are cut to what it reads
        (``max_tokens`` or its own limit; no cut when it has none).
    max_tokens
        Token limit (default: ``encoder.max_tokens``); needs ``encoder``.

    Examples
    --------
    >>> import genept as gpt
    >>> plan = gpt.pp.sentence_plan(["CD3E", "NA", "LYZ"])
    >>> plan.words.tolist()
    ['CD3E', '', 'LYZ']
    """
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int | np.integer):
            raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        if encoder is None:
            raise ValueError("max_tokens needs the encoder whose tokenizer counts the tokens")
    words = sentence_words(gene_names, hash_names=hash_names)
    limit = max_tokens if max_tokens is not None else getattr(encoder, "max_tokens", None)
    counts = budget = None
    if encoder is not None and limit:
        counts, budget = token_budget(encoder, words, prefix=prefix, max_tokens=int(limit))
    return SentencePlan(
        words=words,
        prefix=prefix,
        token_counts=counts,
        budget=budget,
        max_tokens=None if budget is None else int(limit),
        hash_names=bool(hash_names),
    )


_LEGACY = ("prefix", "token_counts", "budget", "hash_names")


@doc_params(doc_random_state=doc_random_state)
@renamed_arg("seed", "random_state")
def build_sentences(
    X,
    plan: SentencePlan | Sequence[str],
    *,
    n_genes: int | None = None,
    shuffle: bool = False,
    random_state: int | None = 0,
    block_rows: int | None = None,
    show_progress: bool | None = None,
    **legacy: Any,
) -> list[str]:
    """Cell sentences of a matrix, block by block.

    Per row block: rank (:func:`rank_genes`), cut to ``n_genes`` and to the plan's token
    budget (:func:`truncate_to_budget`), shuffle if asked, write the plan's words.

    Parameters
    ----------
    X
        Cells x genes, non-negative (numpy, scipy sparse, dask, backed).
    plan
        A :class:`SentencePlan` from :func:`sentence_plan` (words, prefix, token
        budget), or the gene names alone (no prefix, no budget).
    n_genes
        At most this many leading genes per cell.
    shuffle
        Randomly permute the kept genes of each cell (scMPT ablation), after the cut,
        so a shuffled sentence holds the same genes as the ranked one.
    {doc_random_state}
        Here: the tie order (see :func:`rank_genes`) and the shuffle. The shuffle of a cell depends
        only on ``random_state`` and the cell's row; with ``random_state=None`` it is not reproducible.
    block_rows
        Rows per block (default: about 16M non-zeros or dense entries).
    show_progress
        Progress bar over blocks (default ``genept.settings.progress``).
    **legacy
        Deprecated: ``prefix``, ``token_counts``, ``budget``, ``hash_names`` (pass a
        plan instead).

    Returns
    -------
    One sentence per row of ``X``; a cell without expressed genes gives ``""``.

    Examples
    --------
    >>> import numpy as np, genept as gpt
    >>> plan = gpt.pp.sentence_plan(["CD3E", "MS4A1", "LYZ"], prefix="cell: ")
    >>> gpt.pp.build_sentences(np.array([[1.0, 0, 3.0]]), plan, show_progress=False)
    ['cell: LYZ CD3E']
    """
    unknown = set(legacy) - set(_LEGACY)
    if unknown:
        raise TypeError(f"build_sentences() got unexpected keyword arguments {sorted(unknown)}")
    if not isinstance(plan, SentencePlan):
        plan = _legacy_plan(plan, legacy)
    elif legacy:
        raise TypeError(f"{sorted(legacy)} belong to the plan; pass them to sentence_plan()")
    n_genes = _check_n_genes(n_genes)
    block_rows = check_block_rows(block_rows)
    if len(getattr(X, "shape", ())) != 2:
        raise ValueError(f"X must be a 2-D cells x genes matrix, got {type(X).__name__}")
    if plan.n_vars != int(X.shape[1]):
        raise ValueError(f"{plan.n_vars} gene names for {int(X.shape[1])} columns of X")
    progress = settings.progress if show_progress is None else show_progress
    return _build(
        X, plan, n_genes=n_genes, shuffle=shuffle, random_state=random_state, block_rows=block_rows,
        show_progress=progress,
    )  # fmt: skip


def _legacy_plan(gene_names: Sequence[str], legacy: dict[str, Any]) -> SentencePlan:
    if legacy:
        warnings.warn(
            f"build_sentences({', '.join(sorted(legacy))}=...) is deprecated: build a plan "
            "with gpt.pp.sentence_plan(gene_names, prefix=, hash_names=, encoder=) and pass it",
            DeprecationWarning,
            stacklevel=3,
        )
    counts, budget = legacy.get("token_counts"), legacy.get("budget")
    if (counts is None) != (budget is None):
        raise ValueError("give both `token_counts` and `budget`, or neither")
    words = sentence_words(gene_names, hash_names=bool(legacy.get("hash_names", False)))
    if counts is not None:
        counts = np.asarray(counts, dtype=np.int64)
        if counts.shape != words.shape:
            raise ValueError(f"token_counts must have one entry per gene ({words.shape[0]})")
        budget = int(budget)
    return SentencePlan(
        words=words,
        prefix=legacy.get("prefix", "") or "",
        token_counts=counts,
        budget=budget,
        hash_names=bool(legacy.get("hash_names", False)),
    )


def _iter_sentence_genes(
    X,
    plan: SentencePlan,
    *,
    n_genes: int | None,
    shuffle: bool,
    random_state: int | None,
    block_rows: int | None,
):
    """``(start, stop, indptr, idx)`` per row block: the genes of each cell's sentence, in sentence order (ranked, cut to ``n_genes`` and the budget, shuffled if asked).

    The text-free half of :func:`_build`: a token-id gather can map ``idx`` through
    per-gene token ids instead of writing and re-tokenizing the text.
    """
    keep = plan.keep
    keep = None if keep.all() else keep
    cut = plan._cut(n_genes)
    priority, gene_of = _tie_priority(plan.n_vars, random_state)
    shuffle_seed = (
        (int(random_state) & 0xFFFFFFFFFFFFFFFF)
        if random_state is not None
        else int(np.random.default_rng().integers(2**63))
    )
    for a, b, csr in _iter_row_blocks(X, block_rows):
        indptr, idx = _rank_block(csr, priority, gene_of, cut, keep=keep)
        if plan.token_counts is not None:
            indptr, idx = truncate_to_budget(indptr, idx, plan.token_counts, budget=plan.budget)
        if shuffle and idx.size:
            idx = np.array(idx, copy=True)
            _shuffle_rows(indptr, idx, np.uint64(shuffle_seed), np.int64(a))
        yield a, b, indptr, idx


def _build(
    X,
    plan: SentencePlan,
    *,
    n_genes: int | None,
    shuffle: bool,
    random_state: int | None,
    block_rows: int | None,
    show_progress: bool,
) -> list[str]:
    """:func:`build_sentences` on validated arguments."""
    text = _Names(plan.words)
    out: list[str] = []
    for indptr, idx in _sentence_blocks(
        X,
        plan,
        n_genes=n_genes,
        shuffle=shuffle,
        random_state=random_state,
        block_rows=block_rows,
        show_progress=show_progress,
    ):
        out.extend(text.render(indptr, idx, plan.prefix))
    return out


def _sentence_blocks(X, plan, *, show_progress: bool, **options):
    """:func:`_iter_sentence_genes`' ``(indptr, idx)`` per block, under a progress bar."""
    with progress_bar(
        int(X.shape[0]), desc="cell sentences", unit="cell", show=show_progress
    ) as bar:
        for a, b, indptr, idx in _iter_sentence_genes(X, plan, **options):
            yield indptr, idx
            bar.update(b - a)


def _ragged_sentence_genes(X, plan, **options) -> tuple[np.ndarray, np.ndarray]:
    """Every cell's sentence genes as one ragged ``(indptr, idx)``, no text written.

    For encoders that gather token ids; options as :func:`_sentence_blocks`.
    """
    ptrs, idxs, offset = [np.zeros(1, dtype=np.int64)], [], 0
    for indptr, idx in _sentence_blocks(X, plan, **options):
        ptrs.append(np.asarray(indptr[1:], dtype=np.int64) + offset)
        idxs.append(idx)
        offset += int(indptr[-1])
    idx = np.concatenate(idxs) if idxs else np.zeros(0, dtype=np.int32)
    return np.concatenate(ptrs), idx


def _ragged_sentence_windows(
    X, plan: SentencePlan, *, windows: int, **options
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every cell's top genes split into up to ``windows`` sentences that each fit the budget.

    The cell's ranked genes (cut to ``windows`` budgets of tokens and ``n_genes``) are
    cut greedily, in rank order, into consecutive windows of at most ``plan.budget``
    tokens: window 0 is the single sentence of :func:`_ragged_sentence_genes`, window 1
    the genes that follow it, and so on. Returns ``(indptr, idx, row, rank)``: the
    windows as one ragged gene list, the cell of each window and its rank in the cell.
    Without a token budget every cell is one window.
    """
    import dataclasses

    from ._numba import _window_bounds

    if plan.budget is None or windows == 1:
        indptr, idx = _ragged_sentence_genes(X, plan, **options)
        n = np.diff(indptr)
        rows = np.flatnonzero(n > 0)
        keep = np.concatenate([[0], np.cumsum(n[rows])])
        return keep.astype(np.int64), idx, rows.astype(np.int64), np.zeros(rows.size, np.int64)
    wide = dataclasses.replace(plan, budget=int(plan.budget) * int(windows))
    indptr, idx = _ragged_sentence_genes(X, wide, **options)
    start, stop, row, rank = _window_bounds(
        indptr,
        np.asarray(idx, dtype=np.int64),
        np.asarray(plan.token_counts, dtype=np.int64),
        np.int64(plan.budget),
        np.int64(windows),
    )
    lengths = stop - start
    win_ptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    # positions of the kept genes: start of each window + offset within it
    pos = np.repeat(start - win_ptr[:-1], lengths) + np.arange(int(win_ptr[-1]))
    return win_ptr, np.asarray(idx)[pos], row, rank
