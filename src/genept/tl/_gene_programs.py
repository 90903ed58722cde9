"""``gpt.tl.gene_programs``: gene programs from a cosine graph of gene embeddings + Leiden.

GenePT (section 4.1, appendix B.4): join two genes when the cosine similarity of their
embeddings exceeds a threshold (0.9 for ``text-embedding-ada-002``), cluster the graph
with Leiden and keep the programs of at least 10 genes; score each cell by the mean
expression of each program's genes.

The numerics are small functions on arrays: :func:`similarity_edges` (row blocks of
``E @ E.T``, never the dense ``n x n`` matrix), :func:`similarity_quantile`,
:func:`leiden_programs` and :func:`program_scores` (sparse ``X @ W`` per row block).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg
from scipy import sparse

from .._core._blocks import check_block_rows, iter_row_blocks
from .._core._docs import doc_adata, doc_copy, doc_params, doc_random_state
from .._core._keys import recorded_params, sanitize_params, uns_key
from .._gene_embeddings import checked_varm
from .._utils import check_adata, get_matrix, get_var_names, renamed_arg, write_results

__all__ = [
    "PAPER_THRESHOLDS",
    "gene_programs",
    "leiden_programs",
    "program_scores",
    "similarity_edges",
    "similarity_quantile",
]

#: cosine thresholds calibrated for a model (GenePT used 0.9 with ada-002, appendix B.4:
#: ada-002 similarities crowd between 0.7 and 0.9). Other models use a quantile.
PAPER_THRESHOLDS: dict[str, float] = {
    "text-embedding-ada-002": 0.9,
    "ada-002": 0.9,
    "openai:text-embedding-ada-002": 0.9,
}
#: default quantile of the pairwise similarities used as threshold for other models
DEFAULT_QUANTILE = 0.995
#: default Leiden resolution (RBConfiguration) for graphs of up to ``_GENES_PER_RESOLUTION``
#: genes; larger graphs get a proportionally higher one (see :func:`default_resolution`)
DEFAULT_RESOLUTION = 1.0
_GENES_PER_RESOLUTION = 1500
_MAX_RESOLUTION = 20.0  # the paper's value, reached at 30,000 genes


def default_resolution(n_genes: int) -> float:
    """Leiden resolution for a graph of ``n_genes`` genes: 1 up to 1,500 genes, then growing linearly to the paper's 20 at 30,000 genes.

    RBConfiguration's resolution is relative to the graph's size: at a fixed value,
    programs of a fixed size merge as the graph grows (on 30,000 genes with 300 planted
    programs, resolution 1 finds 53 programs, ARI 0.23; 20 finds 198, ARI 0.73), while
    on a few hundred genes 20 splits programs below ``min_size``.
    """
    return float(np.clip(n_genes / _GENES_PER_RESOLUTION, DEFAULT_RESOLUTION, _MAX_RESOLUTION))


#: rows of ``E`` per block of ``E @ E.T``
_BLOCK_ROWS = 2048
#: most edges kept before asking for a higher threshold or ``n_neighbors``
_MAX_EDGES = 50_000_000


def _normalise(E: np.ndarray) -> np.ndarray:
    E = np.ascontiguousarray(E, dtype=np.float32)
    norm = np.linalg.norm(E, axis=1, keepdims=True)
    if (norm == 0).any():
        raise ValueError("some gene embeddings are all zero; select genes that have one")
    return E / norm


def similarity_quantile(E: np.ndarray, q: float, *, max_genes: int = 3000, seed: int = 0) -> float:
    """The ``q`` quantile of the pairwise cosine similarities between the rows of ``E``.

    Exact on at most ``max_genes`` rows; above that, on a seeded random sample of
    ``max_genes`` rows (an unbiased estimate of the same quantile).
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {q}")
    E = _normalise(E)
    n = E.shape[0]
    if n < 2:
        raise ValueError("need at least 2 genes")
    if n > max_genes:
        idx = np.sort(np.random.default_rng(seed).choice(n, max_genes, replace=False))
        E = E[idx]
        n = max_genes
    S = E @ E.T
    iu = np.triu_indices(n, k=1)
    return float(np.quantile(S[iu], q))


def similarity_edges(
    E: np.ndarray,
    threshold: float,
    *,
    n_neighbors: int | None = None,
    block_rows: int = _BLOCK_ROWS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of rows of ``E`` whose cosine similarity exceeds ``threshold``.

    ``E @ E.T`` is computed in row blocks and only the entries ``> threshold`` are kept,
    so memory is ``block_rows x n`` plus the edges. With ``n_neighbors``, each gene keeps
    at most its ``n_neighbors`` most similar partners above the threshold; an edge stays
    when either end keeps it (union, as in a symmetrised kNN graph).

    Returns
    -------
    ``(i, j, sim)`` with ``i < j``, sorted by ``(i, j)``.
    """
    block_rows = check_block_rows(block_rows) or _BLOCK_ROWS
    E = _normalise(E)
    n = E.shape[0]
    if n_neighbors is not None and n_neighbors < 1:
        raise ValueError(f"n_neighbors must be >= 1, got {n_neighbors}")
    rows, cols, vals = [], [], []
    total = 0
    for s in range(0, n, block_rows):
        e = min(n, s + block_rows)
        if n_neighbors is not None and n_neighbors < n - 1:
            S = E[s:e] @ E.T  # whole rows: each gene ranks all its partners
            S[np.arange(e - s), np.arange(s, e)] = -np.inf  # no self-loops
            k = n_neighbors
            part = np.argpartition(-S, k - 1, axis=1)[:, :k]
            top = np.take_along_axis(S, part, axis=1)
            keep = top > threshold
            r = np.nonzero(keep)[0] + s
            c = part[keep]
            v = top[keep]
        else:
            # upper triangle only: columns from s on, strictly above the diagonal
            S = E[s:e] @ E[s:].T
            S[np.tril_indices(e - s)] = -np.inf
            r, c = np.nonzero(S > threshold)
            v = S[r, c]
            r = r + s
            c = c + s
        total += len(r)
        if total > _MAX_EDGES:
            raise MemoryError(
                f"more than {_MAX_EDGES:,} gene pairs exceed the similarity threshold "
                f"{threshold:.4g}; raise `threshold`/`quantile` or cap `n_neighbors`"
            )
        rows.append(r.astype(np.int64))
        cols.append(c.astype(np.int64))
        vals.append(v.astype(np.float32))
    i = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    j = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    v = np.concatenate(vals) if vals else np.zeros(0, np.float32)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    if n_neighbors is not None and len(lo):
        key = lo * n + hi
        key, first = np.unique(key, return_index=True)
        lo, hi, v = lo[first], hi[first], v[first]
    order = np.lexsort((hi, lo))
    return lo[order], hi[order], v[order]


def leiden_programs(
    n: int,
    i: np.ndarray,
    j: np.ndarray,
    *,
    resolution: float = DEFAULT_RESOLUTION,
    min_size: int = 10,
    seed: int = 0,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Leiden communities (RBConfiguration) of the graph on ``n`` nodes with edges ``(i, j)``.

    igraph's C implementation of Leiden (``Graph.community_leiden``, objective
    ``"modularity"`` with a resolution: the RBConfiguration quality of ``leidenalg``), two
    iterations (``leidenalg``'s default), seeded through igraph's random number generator
    (restored afterwards). On the 19,464 embedded genes of celltypist's 33k-gene sample
    (951,624 edges, resolution 13) it takes 1-2 s where ``leidenalg`` run to convergence
    took 266-340 s, with the same result: 159 programs either way (ARI 0.94), 82% of them
    enriched for a GO process against 83% (``benchmarks/bench_gene_programs.py --real``).

    Returns
    -------
    ``int`` label per node: programs of at least ``min_size`` nodes numbered ``0, 1, ...``
    by decreasing size (ties: smallest first node), ``-1`` elsewhere.
    """
    import random

    import igraph as ig

    labels = np.full(n, -1, dtype=np.int64)
    if n == 0 or len(i) == 0:
        return labels
    # a list of int tuples is what igraph converts fastest (3x faster than an array)
    edges = list(
        zip(
            np.asarray(i, dtype=np.int64).tolist(),
            np.asarray(j, dtype=np.int64).tolist(),
            strict=True,
        )
    )
    g = ig.Graph(n=n, edges=edges, directed=False)
    ig.set_random_number_generator(random.Random(int(seed)))
    try:
        part = g.community_leiden(
            objective_function="modularity",
            weights=None if weights is None else np.asarray(weights, dtype=float).tolist(),
            resolution=float(resolution),
            n_iterations=2,
        )
    finally:
        ig.set_random_number_generator(random)
    memb = np.asarray(part.membership, dtype=np.int64)
    comms = [np.flatnonzero(memb == c) for c in np.unique(memb)]
    comms = [c for c in comms if len(c) >= min_size]
    comms.sort(key=lambda c: (-len(c), int(c[0])))
    for k, c in enumerate(comms):
        labels[c] = k
    return labels


def _program_matrix(member_idx: Sequence[np.ndarray], n_vars: int) -> sparse.csr_matrix:
    """``(n_vars, n_programs)``: ``1/size`` where a gene belongs to a program."""
    r = (
        np.concatenate([np.asarray(m, dtype=np.int64) for m in member_idx])
        if member_idx
        else np.zeros(0, np.int64)
    )
    c = (
        np.concatenate([np.full(len(m), k) for k, m in enumerate(member_idx)])
        if member_idx
        else np.zeros(0, np.int64)
    )
    v = (
        np.concatenate([np.full(len(m), 1.0 / len(m)) for m in member_idx])
        if member_idx
        else np.zeros(0)
    )
    return sparse.csr_matrix((v, (r, c)), shape=(n_vars, len(member_idx)))


def program_scores(
    X, member_idx: Sequence[np.ndarray], *, block_rows: int | None = None
) -> np.ndarray:
    """Mean expression of each program's genes per cell: ``X @ W`` in row blocks.

    ``X`` may be numpy, scipy sparse (never densified), dask (one block of chunks in
    memory at a time, never the whole matrix) or h5py-backed; ``W`` is the sparse
    ``(n_vars, n_programs)`` matrix of ``1/size`` weights. ``block_rows``: rows per block
    (default :func:`genept._core._blocks.default_block_rows`).
    """
    return _scores_and_min(X, member_idx, block_rows=block_rows)[0]


def _scores_and_min(X, member_idx, *, block_rows: int | None = None) -> tuple[np.ndarray, float]:
    """Program scores and the smallest value of ``X`` seen on the program genes."""
    n_obs, n_vars = X.shape
    block_rows = check_block_rows(block_rows)
    W = _program_matrix(member_idx, n_vars)
    used = np.flatnonzero(np.diff(W.indptr))  # genes in some program
    out = np.empty((n_obs, W.shape[1]), dtype=np.float64)
    low = math.inf
    for s, e, blk in iter_row_blocks(X, block_rows):
        if sparse.issparse(blk):
            blk = sparse.csr_matrix(blk, dtype=np.float64)
            res = blk @ W
            out[s:e] = res.toarray() if sparse.issparse(res) else np.asarray(res)
            sub = blk[:, used]
            if sub.nnz:
                low = min(low, float(sub.data.min()))
        else:
            blk = np.asarray(blk, dtype=np.float64)
            out[s:e] = np.asarray(W.T @ blk.T).T
            if blk.size and len(used):
                low = min(low, float(blk[:, used].min()))
    return out, low


def _gene_mask(adata: AnnData, genes) -> np.ndarray:
    if genes is None:
        return np.ones(adata.n_vars, dtype=bool)
    if isinstance(genes, str):
        if genes not in adata.var.columns:
            raise KeyError(
                f"genes={genes!r} is not a column of adata.var (columns: {list(adata.var.columns)})"
            )
        col = adata.var[genes]
        if col.dtype != bool:
            raise TypeError(f"adata.var[{genes!r}] must be boolean, got {col.dtype}")
        return col.to_numpy()
    arr = np.asarray(genes)
    if arr.dtype == bool:
        if arr.shape != (adata.n_vars,):
            raise ValueError(f"boolean `genes` must have length n_vars={adata.n_vars}")
        return arr
    wanted = pd.Index(np.asarray(genes, dtype=object).astype(str))
    missing = wanted.difference(adata.var_names)
    if len(missing):
        raise KeyError(
            f"{len(missing)} of `genes` are not in adata.var_names (first: {', '.join(missing[:5])})"
        )
    return adata.var_names.isin(wanted)


def _check_unique(names: pd.Index, where: str) -> None:
    if names.has_duplicates:
        dup = ", ".join(map(str, names[names.duplicated()].unique()[:5]))
        fix = (
            "raw = adata.raw.to_adata(); raw.var_names_make_unique(); adata.raw = raw"
            if where.startswith("adata.raw")
            else "adata.var_names_make_unique()"
        )
        raise ValueError(
            f"{where} has duplicate names (first: {dup}); program genes are looked up by "
            f"name, so make them unique first ({fix}), or pass use_raw=False"
        )


def _model_of(adata: AnnData, key: str) -> str | None:
    p = recorded_params(adata, key)
    return str(p["model"]) if "model" in p else None


@doc_params(doc_adata=doc_adata, doc_copy=doc_copy, doc_random_state=doc_random_state)
@renamed_arg("key", "gene_key")
@renamed_arg("seed", "random_state")
def gene_programs(
    adata: AnnData,
    *,
    gene_key: str = "X_genept",
    threshold: float | None = None,
    quantile: float | None = None,
    resolution: float | None = None,
    min_size: int = 10,
    genes: Sequence[str] | str | np.ndarray | None = None,
    n_neighbors: int | None = None,
    layer: str | None = None,
    use_raw: bool | None = None,
    random_state: int = 0,
    key_added: str = "genept_program",
    copy: bool = False,
) -> AnnData | None:
    """Gene programs: Leiden communities of the cosine graph of gene embeddings.

    Two genes are joined when the cosine similarity of their embeddings
    (``adata.varm[gene_key]``) exceeds the threshold; the graph is clustered with Leiden
    (RBConfiguration, seeded) and communities of at least ``min_size`` genes are kept
    (GenePT section 4.1 and appendix B.4). Each cell is scored by the mean expression of
    each program's genes.

    The similarity graph is built in row blocks of ``E @ E.T`` keeping only the pairs
    above the threshold, so 30,000 genes need no 30,000 x 30,000 matrix.

    Parameters
    ----------
    {doc_adata}
        With gene embeddings (:func:`genept.tl.embed_genes`) and normalised,
        log-transformed expression (for the scores).
    gene_key
        ``varm`` key of the gene embeddings (the name :func:`embed_cells` uses;
        ``key=`` still works, with a FutureWarning).
    threshold
        Cosine similarity above which two genes are joined. Default: the value calibrated
        for the embedding model in :data:`PAPER_THRESHOLDS` (0.9 for ada-002, the paper's),
        otherwise the ``quantile`` of the pairwise similarities.
    quantile
        Use this quantile of the pairwise similarities of the selected genes as threshold
        (default 0.995 when no threshold applies: MiniLM similarities are spread much
        wider than ada-002's, so a fixed 0.9 would join almost nothing). Exclusive with
        ``threshold``.
    resolution
        Leiden resolution (RBConfiguration); default :func:`default_resolution` of the
        number of genes: 1.0 up to 1,500 genes, growing to the paper's 20 at 30,000 genes
        (high resolutions split programs of small graphs into pieces below ``min_size``).
    min_size
        Keep programs with at least this many genes (paper: 10).
    genes
        Genes to cluster: a list of ``var_names``, a boolean mask, or the name of a boolean
        ``var`` column such as ``"highly_variable"`` (the paper used highly variable
        genes). Genes without an embedding are always left out.
    n_neighbors
        Keep at most this many most-similar partners per gene (caps the graph of dense,
        low-threshold settings); ``None``: all pairs above the threshold.
    layer, use_raw
        Expression used for the scores (scanpy's rules; ``None``: ``adata.X``): normalised,
        log-transformed data. Scaled data (negative values) gives means of z-scores and
        a warning. With ``use_raw=True`` the program genes are looked up by name in
        ``adata.raw.var_names``, which must then be unique.
    {doc_random_state}
        Here: Leiden and the sample used to estimate a quantile on many genes.
    key_added
        ``var`` key of the program labels; ``uns`` gets ``f"{key_added}s"`` and ``obsm``
        ``f"{key_added}_scores"``.
    {doc_copy}

    Returns
    -------
    ``None``, or a copy of ``adata`` if ``copy=True``. Sets

    ``adata.var['genept_program']``
        Categorical program name (``"GP0"``, ``"GP1"``, … by decreasing size), NaN for
        genes in no kept program.
    ``adata.uns['genept_programs']``
        ``members`` (program -> list of genes), ``sizes`` and ``params`` (threshold used
        and how it was chosen, quantile, resolution, genes clustered, edges, …).
    ``adata.obsm['genept_program_scores']``
        DataFrame (cells x programs, index ``obs_names``): mean expression of the members.

    Examples
    --------
    >>> import scanpy as sc, genept as gpt
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> gpt.tl.embed_genes(adata)  # doctest: +SKIP
    >>> gpt.tl.gene_programs(adata, use_raw=True)  # doctest: +SKIP
    >>> gpt.pl.gene_programs(adata, "bulk_labels")  # doctest: +SKIP
    """
    check_adata(adata)
    start = logg.info("computing gene programs")
    if gene_key not in adata.varm:
        raise KeyError(
            f"adata.varm has no {gene_key!r}; run gpt.tl.embed_genes(adata) first "
            f"(varm keys: {list(adata.varm.keys())})"
        )
    if threshold is not None and quantile is not None:
        raise ValueError("give either `threshold` or `quantile`, not both")
    if min_size < 1:
        raise ValueError(f"min_size must be >= 1, got {min_size}")
    if resolution is not None and not (np.isfinite(resolution) and resolution > 0):
        raise ValueError(f"resolution must be a positive number, got {resolution}")
    if threshold is not None and not (np.isfinite(threshold) and -1.0 <= threshold < 1.0):
        raise ValueError(
            f"threshold must be a cosine similarity in [-1, 1), got {threshold}; "
            "or pass quantile= instead"
        )
    if quantile is not None and not (np.isfinite(quantile) and 0.0 < quantile < 1.0):
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    E_all = checked_varm(adata, gene_key)
    has = np.abs(E_all).sum(axis=1) > 0
    prefix = uns_key(gene_key)
    if f"{prefix}_has_embedding" in adata.var:
        has &= adata.var[f"{prefix}_has_embedding"].to_numpy(dtype=bool)
    sel = _gene_mask(adata, genes) & has
    idx = np.flatnonzero(sel)
    if len(idx) < 2:
        raise ValueError(
            f"only {len(idx)} selected genes have an embedding in varm[{gene_key!r}]; need at least 2"
        )
    E = E_all[idx]
    model = _model_of(adata, gene_key)
    if threshold is not None:
        thr, how = float(threshold), "given"
    elif quantile is None and model in PAPER_THRESHOLDS:
        thr, how = PAPER_THRESHOLDS[model], f"calibrated for {model}"
    else:
        quantile = DEFAULT_QUANTILE if quantile is None else float(quantile)
        thr = similarity_quantile(E, quantile, seed=random_state)
        how = f"quantile {quantile:g} of pairwise similarities"
    res = default_resolution(len(idx)) if resolution is None else float(resolution)
    i, j, _ = similarity_edges(E, thr, n_neighbors=n_neighbors)
    logg.info(f"    {len(idx)} genes, {len(i)} pairs with cosine similarity > {thr:.4f} ({how})")
    labels = leiden_programs(len(idx), i, j, resolution=res, min_size=min_size, seed=random_state)
    n_prog = int(labels.max()) + 1 if len(labels) else 0
    names = [f"GP{k}" for k in range(n_prog)]
    var_names = adata.var_names.astype(str)
    members_idx = [idx[labels == k] for k in range(n_prog)]
    members = {names[k]: [str(g) for g in var_names[m]] for k, m in enumerate(members_idx)}

    # scores on the chosen matrix
    X = get_matrix(adata, layer=layer, use_raw=use_raw)
    if use_raw:
        raw_names = get_var_names(adata, use_raw=True)
        _check_unique(var_names, "adata.var_names")
        _check_unique(raw_names, "adata.raw.var_names")
        pos = [raw_names.get_indexer(var_names[m]) for m in members_idx]
        bad = [var_names[m][p < 0] for m, p in zip(members_idx, pos, strict=True) if (p < 0).any()]
        if bad:
            raise KeyError(
                f"program genes missing from adata.raw.var_names (first: {', '.join(map(str, bad[0][:5]))})"
            )
        score_idx = pos
    else:
        score_idx = members_idx
    scores, low = _scores_and_min(X, score_idx) if n_prog else (np.zeros((adata.n_obs, 0)), 0.0)
    if low < 0:
        where = "adata.raw.X" if use_raw else f"adata.layers[{layer!r}]" if layer else "adata.X"
        warnings.warn(
            f"{where} has negative values (min {low:.3g}): it looks scaled, so the program "
            "scores are means of z-scores, not of expression. Score normalised, "
            "log-transformed data: pass use_raw=True (if adata.raw holds it) or layer=.",
            UserWarning,
            stacklevel=2,
        )
    scores_df = pd.DataFrame(scores, index=adata.obs_names.astype(str).copy(), columns=names)

    lab = np.full(adata.n_vars, None, dtype=object)
    lab[idx[labels >= 0]] = [names[k] for k in labels[labels >= 0]]
    var_col = pd.Categorical(lab, categories=names)
    params: dict[str, Any] = {
        "gene_key": gene_key,
        "model": model or "unknown",
        "threshold": float(thr),
        "threshold_source": how,
        "quantile": float(quantile)
        if quantile is not None and threshold is None and how.startswith("quantile")
        else None,
        "resolution": res,
        "min_size": int(min_size),
        "n_neighbors": n_neighbors,
        "n_genes": len(idx),
        "n_edges": len(i),
        "n_programs": n_prog,
        "genes": genes if isinstance(genes, str) else ("all" if genes is None else "list"),
        "layer": layer,
        "use_raw": bool(use_raw),
        "random_state": int(random_state),
    }
    params = sanitize_params(params)
    uns = {
        "members": members,
        "sizes": {n: len(m) for n, m in members.items()},
        "params": params,
    }
    logg.info(f"    found {n_prog} programs of >= {min_size} genes")
    return write_results(
        adata,
        [
            ("var", key_added, var_col),
            ("uns", f"{key_added}s", uns),
            ("obsm", f"{key_added}_scores", scores_df),
        ],
        copy=copy,
        log=lambda msg: logg.info("    finished", time=start, deep=msg),
    )
