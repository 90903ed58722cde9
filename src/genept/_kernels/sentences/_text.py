"""Words, tokens and text of the cell sentences."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd

from ..._gene_matching import MISSING_NAMES  # one home for what a missing name is
from ._numba import _SLOT, _render, _row_bytes

#: the prefix of the cell sentences in the scMPT paper (section 3.1); the default of
#: GenePT-s in :func:`genept.tl.embed_cells`
PAPER_PREFIX = "A cell with genes ranked by expression: "


def hash_gene_name(name: str) -> str:
    """The scMPT gene-name ablation: the first 10 hex digits of SHA-256 of the name.

    scMPT section 3.2 replaces every gene symbol of a cell sentence by such a hash, to
    test whether the text model uses what it knows about the names.

    Parameters
    ----------
    name
        A gene symbol (anything else is converted with ``str``).

    Returns
    -------
    Ten lower-case hexadecimal digits, the same for the same name in every process.

    Examples
    --------
    >>> import genept as gpt
    >>> gpt.pp.hash_gene_name("CD3E")
    '7f2f472aa2'
    """
    return hashlib.sha256(str(name).encode("utf-8")).hexdigest()[:10]


def missing_names(gene_names: Sequence[Any]) -> np.ndarray:
    """Boolean mask of the names that are missing: ``None``/NaN/``pd.NA`` or a string such as ``"nan"``, ``"NA"``, ``"<NA>"``, ``""`` (what a missing symbol prints as; the set is :data:`genept._gene_matching.MISSING_NAMES`, shared with gene matching).

    Examples
    --------
    >>> missing_names(["CD3E", None, float("nan"), "NA", " "]).tolist()
    [False, True, True, True, True]
    """
    values = pd.Series(list(gene_names), dtype=object)
    miss = values.isna().to_numpy()
    text = values.astype(str).str.strip()
    return miss | text.isin(MISSING_NAMES).to_numpy()


def sentence_words(gene_names: Sequence[Any], *, hash_names: bool = False) -> np.ndarray:
    """The word written for each gene: its symbol, or its hash when ``hash_names``.

    A missing symbol (see :func:`missing_names`) gets the word ``""``: that gene is never
    written in a sentence (it is not the word ``"nan"`` or ``"NA"``).

    Parameters
    ----------
    gene_names
        One name per gene (``var_names`` or a ``var`` column); ``None``, NaN, ``pd.NA``
        and strings such as ``"nan"``, ``"NA"``, ``""`` count as missing.
    hash_names
        Write :func:`hash_gene_name` of each name instead (scMPT's ablation).

    Returns
    -------
    An object array of words, ``""`` for missing names.

    Examples
    --------
    >>> sentence_words(["CD3E", None, "NA"]).tolist()
    ['CD3E', '', '']
    """
    miss = missing_names(gene_names)
    names = np.asarray(pd.Series(list(gene_names), dtype=object).astype(str), dtype=object)
    names[miss] = ""
    if hash_names:
        names = np.array([hash_gene_name(n) if n else "" for n in names], dtype=object)
    return names


def token_budget(
    encoder, words: Sequence[str], *, prefix: str = "", max_tokens: int | None = None
) -> tuple[np.ndarray, int | None]:
    """Tokens of each word in a sentence, and the tokens left to the words.

    Each word is counted in context (``"a " + word`` minus ``"a"``), so that it costs
    what it costs inside a sentence; for BERT WordPiece tokenizers this equals the
    word's own tokens and ``tokens(prefix + " ".join(words))`` is exactly
    ``tokens(prefix) + sum(word tokens)``, special tokens included in the first term.
    Unique words are tokenized once.

    Parameters
    ----------
    encoder
        A :class:`~genept.encoders.TextEncoder` (its ``count_tokens`` and ``max_tokens``).
    words
        The word of each gene (see :func:`sentence_words`).
    prefix
        Text written before the genes.
    max_tokens
        Token limit (default: ``encoder.max_tokens``).

    Returns
    -------
    ``(token_counts, budget)``; ``budget`` is ``None`` when the encoder has no limit.

    Examples
    --------
    >>> import genept as gpt
    >>> enc = gpt.encoders.get_encoder("all-MiniLM-L6-v2")  # doctest: +SKIP
    >>> counts, budget = gpt.pp.token_budget(enc, ["CD3E", "MS4A1"])  # doctest: +SKIP
    >>> counts.tolist(), budget  # doctest: +SKIP
    ([3, 3], 254)
    """
    limit = max_tokens if max_tokens is not None else getattr(encoder, "max_tokens", None)
    words = np.asarray(words, dtype=object)
    uniq, inverse = np.unique(words.astype(str), return_inverse=True)
    if uniq.size:
        in_ctx = encoder.count_tokens(["a " + w for w in uniq.tolist()])
        base = int(encoder.count_tokens(["a"])[0])
        counts = np.maximum(np.asarray(in_ctx, dtype=np.int64) - base, 0)[inverse.ravel()]
    else:
        counts = np.zeros(0, dtype=np.int64)
    if limit is None:
        return counts, None
    # the prefix's tokens with the special tokens ([CLS] ... [SEP]); an empty prefix
    # costs just the special tokens
    head = int(encoder.count_tokens([prefix.strip()])[0])
    budget = int(limit) - head
    if budget < 0:
        raise ValueError(
            f"the prefix {prefix!r} takes {head} tokens, more than max_tokens={limit}; "
            "shorten the prefix or raise max_tokens"
        )
    return counts, budget


class _Names:
    """Gene words as UTF-8 bytes, laid out for :func:`_render`."""

    def __init__(self, words: np.ndarray):
        enc = [w.encode("utf-8") for w in words.tolist()]
        self.length = np.fromiter((len(b) for b in enc), dtype=np.int64, count=len(enc))
        self.offset = np.concatenate([[0], np.cumsum(self.length)]).astype(np.int64)
        self.buf = np.frombuffer(b"".join(enc), dtype=np.uint8) if enc else np.zeros(0, np.uint8)
        fixed = np.zeros((len(enc), _SLOT), dtype=np.uint8)
        for g, b in enumerate(enc):
            fixed[g, : min(len(b), _SLOT)] = np.frombuffer(b[:_SLOT], dtype=np.uint8)
        self.slots = fixed
        self.ascii = all(w.isascii() for w in words.tolist())

    def render(self, indptr: np.ndarray, idx: np.ndarray, prefix: str) -> list[str]:
        """The sentence of each row of the ragged ``(indptr, idx)``."""
        pre = np.frombuffer(prefix.encode("utf-8"), dtype=np.uint8)
        if indptr.shape[0] <= 1:
            return []
        row_bytes = _row_bytes(indptr, idx, self.length, pre.size)
        out_off = np.concatenate([[0], np.cumsum(row_bytes)]).astype(np.int64)
        out = np.empty(int(out_off[-1]), dtype=np.uint8)
        if out.size:
            _render(indptr, idx, self.slots, self.length, self.buf, self.offset, pre, out_off, out)
        view = memoryview(out)
        bounds = out_off.tolist()
        codec = "ascii" if self.ascii and prefix.isascii() else "utf-8"
        return [str(view[a:b], codec) for a, b in pairwise(bounds)]
