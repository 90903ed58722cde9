"""Shared helpers of the benchmarks: embeddings as a DataFrame, random controls, summaries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._core._keys import uns_key
from .._gene_embeddings import GeneEmbeddings, as_gene_embeddings, checked_varm
from .._utils import renamed_arg

__all__ = ["as_embedding_frame", "random_like", "summarize"]


@renamed_arg("key", "gene_key")
def as_embedding_frame(emb: Any, *, gene_key: str = "X_genept") -> pd.DataFrame:
    """Gene embeddings as a float32 DataFrame indexed by gene.

    ``emb`` may be a :class:`~genept.GeneEmbeddings`, a DataFrame indexed by gene, a dict
    gene -> vector, or an AnnData whose ``varm[gene_key]`` holds gene embeddings (genes
    without one, i.e. all-zero rows or ``var['genept_has_embedding']`` False, are left out).

    Parameters
    ----------
    emb
        The embeddings, in any of the forms above.
    gene_key
        ``varm`` key when ``emb`` is an AnnData (the name :func:`genept.tl.embed_cells`
        uses); the array is checked (dense, finite). ``key=`` is accepted with a
        :class:`FutureWarning`.

    Examples
    --------
    >>> import numpy as np, genept as gpt
    >>> gpt.bm.as_embedding_frame({"CD3E": np.ones(3), "CD8A": np.zeros(3) + 2}).shape
    (2, 3)
    """
    if isinstance(emb, AnnData):
        if gene_key not in emb.varm:
            raise KeyError(
                f"adata.varm has no {gene_key!r} (available: {list(emb.varm.keys())}); "
                "run gpt.tl.embed_genes(adata) first"
            )
        M = checked_varm(emb, gene_key)
        has = np.abs(M).sum(axis=1) > 0
        prefix = uns_key(gene_key)
        if f"{prefix}_has_embedding" in emb.var:
            has &= emb.var[f"{prefix}_has_embedding"].to_numpy(dtype=bool)
        names = emb.var_names.astype(str)[has]
        df = pd.DataFrame(M[has], index=names)
        return df[~df.index.duplicated()]
    if isinstance(emb, pd.DataFrame):
        ge = GeneEmbeddings.from_frame(emb)
    elif isinstance(emb, GeneEmbeddings | Mapping):
        ge = as_gene_embeddings(emb)
    else:
        raise TypeError(
            f"cannot use a {type(emb).__name__} as gene embeddings; pass GeneEmbeddings, a "
            "DataFrame indexed by gene, a dict gene -> vector or an AnnData with varm embeddings"
        )
    return pd.DataFrame(ge.matrix, index=pd.Index(ge.genes))


@renamed_arg("seed", "random_state")
def random_like(frame: pd.DataFrame, random_state: int = 0) -> pd.DataFrame:
    """The papers' negative control: Gaussian unit vectors, same genes and width, seeded.

    Parameters
    ----------
    frame
        Embeddings indexed by gene (:func:`as_embedding_frame`).
    random_state
        Seed of the Gaussian vectors.

    Examples
    --------
    >>> import numpy as np, pandas as pd, genept as gpt
    >>> r = gpt.bm.random_like(pd.DataFrame(np.ones((2, 4)), index=["A", "B"]))
    >>> r.shape, bool(np.allclose(np.linalg.norm(r, axis=1), 1))
    ((2, 4), True)
    """
    from .._gene_sources import random_embeddings

    r = random_embeddings(frame.index.to_numpy(), frame.shape[1], seed=random_state)
    return pd.DataFrame(r.matrix, index=frame.index.copy())


def summarize(
    df: pd.DataFrame, metric: str | None = None, by: list[str] | None = None
) -> pd.DataFrame:
    """Mean and standard deviation of a tidy result over folds.

    Parameters
    ----------
    df
        A tidy result of :mod:`genept.bm` (one row per fold).
    metric
        Column to summarise (default: ``auc``, ``accuracy`` or ``value``, whichever exists).
    by
        Grouping columns (default: the non-numeric columns other than ``fold``).

    Examples
    --------
    >>> import pandas as pd, genept as gpt
    >>> df = pd.DataFrame({"model": ["lr", "lr"], "fold": [0, 1], "auc": [0.8, 0.9]})
    >>> gpt.bm.summarize(df).round(3).to_dict("records")
    [{'model': 'lr', 'mean': 0.85, 'sd': 0.071, 'n': 2}]
    """
    if metric is None:
        metric = next((m for m in ("auc", "accuracy", "value") if m in df.columns), None)
        if metric is None:
            raise ValueError(f"no metric column in {list(df.columns)}; pass metric=")
    if by is None:
        by = [
            c
            for c in df.columns
            if c not in {metric, "fold"} and not pd.api.types.is_numeric_dtype(df[c])
        ]
    g = df.groupby(by, sort=False, observed=True)[metric]
    out = g.agg(mean="mean", sd="std", n="count").reset_index()
    out["sd"] = out["sd"].fillna(0.0)
    return out
