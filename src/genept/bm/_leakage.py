"""Lexical leakage of gene embeddings: neighbours by spelling rather than by biology.

A text encoder reading ``"Gene PSMB2 (...)"`` spends part of its vector on the word
pieces of the symbol, so genes whose symbols begin alike (PSMB2, PPM1G, PDAP1, PLP2 ...)
become neighbours although they share no function. :func:`lexical_leakage` measures
this: among the ``k`` nearest neighbours (cosine) of well-annotated genes, the share of
(gene, neighbour) pairs whose symbols share their first ``prefix`` characters while the
two genes share no Gene Ontology term.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ._common import as_embedding_frame, random_like

__all__ = ["lexical_leakage"]

_GO_COLUMNS = ("go_mf", "go_bp", "go_cc")


def _go_sets(cards: pd.DataFrame, genes: pd.Index, max_terms: int | None = None) -> list[frozenset]:
    cols = [c for c in _GO_COLUMNS if c in cards.columns]
    if not cols:
        raise ValueError(
            f"`cards` has none of the GO columns {list(_GO_COLUMNS)}; pass the table of "
            "gpt.datasets.gene_cards()"
        )
    sub = cards.reindex(genes)
    out = []
    for row in sub[cols].itertuples(index=False):
        terms = set()
        for v in row:
            if isinstance(v, str) and v:
                terms.update(t for t in v.split("|")[:max_terms] if t)
        out.append(frozenset(terms))
    return out


def _knn(M: np.ndarray, k: int, block: int = 2048) -> np.ndarray:
    """Indices of the ``k`` nearest rows (cosine, self excluded), ties by lower index."""
    norms = np.linalg.norm(M, axis=1, keepdims=True)
    U = (M / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    n = len(U)
    out = np.empty((n, k), dtype=np.int64)
    for s in range(0, n, block):
        S = U[s : s + block] @ U.T
        S[np.arange(len(S)), np.arange(s, s + len(S))] = -np.inf
        part = (
            np.argpartition(-S, k - 1, axis=1)[:, :k]
            if k < n - 1
            else np.argsort(-S, axis=1)[:, :k]
        )
        vals = np.take_along_axis(S, part, axis=1)
        order = np.lexsort((part, -vals), axis=1)
        out[s : s + len(S)] = np.take_along_axis(part, order, axis=1)
    return out


def _leakage_of(frame: pd.DataFrame, go: list[frozenset], k: int, prefix: int) -> dict:
    nbr = _knn(frame.to_numpy(dtype=np.float32), k)
    sym = np.asarray([str(g).upper()[:prefix] for g in frame.index], dtype=object)
    long_enough = np.asarray([len(str(g)) >= prefix for g in frame.index])
    same = (sym[:, None] == sym[nbr]) & long_enough[:, None] & long_enough[nbr]
    shared = np.array([[bool(go[i] & go[j]) for j in row] for i, row in enumerate(nbr)])
    n_pairs = nbr.size
    return {
        "leakage": float((same & ~shared).sum() / n_pairs),
        "same_prefix": float(same.sum() / n_pairs),
        "shared_go": float(shared.sum() / n_pairs),
        "n_genes": len(frame),
        "n_pairs": int(n_pairs),
    }


def lexical_leakage(
    emb: Any,
    cards: pd.DataFrame | None = None,
    *,
    k: int = 10,
    prefix: int = 3,
    min_go_terms: int = 20,
    max_terms: int | None = 15,
    genes: Any = None,
    include_random: bool = True,
    random_state: int = 0,
    name: str | None = None,
) -> pd.DataFrame:
    """Share of nearest-neighbour pairs that look alike but share no biology.

    For each well-annotated gene, its ``k`` nearest neighbours by cosine similarity among
    the same genes are found; a (gene, neighbour) pair *leaks* when the two symbols share
    their first ``prefix`` characters (case-insensitive) and the two genes share no Gene
    Ontology term (molecular function, biological process or cellular component) among
    the terms their gene cards name (at most ``max_terms`` per ontology, as
    :func:`~genept.datasets.card_text`). On
    4,582 human genes with >= 20 GO terms, all-MiniLM-L6-v2 on the gene card (which
    begins with the symbol and its aliases) gives about 0.007, on the symbol alone 0.011,
    TF-IDF of the card 0.001 and random vectors 0.0001 (issue 16; see
    ``docs/embeddings.md``).

    Parameters
    ----------
    emb
        Gene embeddings: :class:`~genept.GeneEmbeddings`, DataFrame indexed by gene
        symbol, dict, or AnnData with ``varm['X_genept']``.
    cards
        Table with the columns ``go_mf``, ``go_bp``, ``go_cc`` (``'|'``-separated GO term
        names) indexed by symbol; default :func:`genept.datasets.gene_cards` (human).
    k
        Neighbours per gene.
    prefix
        Characters of the symbols compared.
    min_go_terms
        Well-annotated genes: at least this many GO terms in ``cards`` (a gene with no
        term would always "share no term"); counted over all terms of ``cards``.
    max_terms
        GO terms per ontology compared (the first ones, most specific and best supported
        first in :func:`~genept.datasets.gene_cards`); 15 is what a gene card names;
        ``None``: all terms of ``cards``.
    genes
        Restrict to these genes (then intersected with the embedded, well-annotated ones).
    include_random
        Also evaluate Gaussian random vectors of the same width (the negative control).
    random_state
        Seed of the random control.
    name
        Name of ``emb`` in the ``embedding`` column (default ``"genept"``).

    Returns
    -------
    DataFrame, one row per embedding: ``embedding``, ``leakage`` (the share above),
    ``same_prefix`` (share of pairs with the same prefix, GO or not), ``shared_go``
    (share of pairs sharing a GO term), ``n_genes``, ``n_pairs``, ``k``.

    Examples
    --------
    >>> import pandas as pd, numpy as np, genept as gpt
    >>> cards = pd.DataFrame({"go_mf": ["a", "b", "a", "b"], "go_bp": None, "go_cc": None},
    ...                      index=["ABC1", "ABC2", "XYZ1", "XYZ2"])
    >>> emb = pd.DataFrame(np.eye(4)[[0, 0, 1, 1]] + 0.01 * np.eye(4), index=cards.index)
    >>> res = gpt.bm.lexical_leakage(emb, cards, k=1, min_go_terms=1, include_random=False)
    >>> float(res["leakage"].iloc[0])  # every gene's neighbour shares its prefix, not its GO
    1.0
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if prefix < 1:
        raise ValueError(f"prefix must be >= 1, got {prefix}")
    frame = as_embedding_frame(emb)
    if cards is None:
        from ..datasets import gene_cards

        cards = gene_cards("human")
    cards = cards[~cards.index.duplicated(keep="first")]
    idx = frame.index.astype(str)
    frame = frame.set_axis(idx)
    if genes is not None:
        wanted = pd.Index(np.asarray(list(genes), dtype=object).astype(str))
        idx = idx[idx.isin(wanted)]
    idx = idx[idx.isin(cards.index)]
    n_terms = np.array([len(s) for s in _go_sets(cards, idx)])
    idx = idx[n_terms >= min_go_terms]
    go = _go_sets(cards, idx, max_terms)
    if len(idx) <= k:
        raise ValueError(
            f"only {len(idx)} embedded genes have >= {min_go_terms} GO terms in `cards`; need more "
            f"than k={k} (lower min_go_terms= or k=)"
        )
    sub = frame.loc[idx]
    embs = {name or "genept": sub}
    if include_random:
        embs["random"] = random_like(sub, random_state=random_state)
    rows = [
        {"embedding": ename, **_leakage_of(f, go, k, prefix), "k": k} for ename, f in embs.items()
    ]
    return pd.DataFrame(rows)
