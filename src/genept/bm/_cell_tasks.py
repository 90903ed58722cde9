"""Cell-level evaluations of the GenePT and scMPT papers on any cell representation.

* :func:`knn_metrics` — 10-NN cosine classifier on a random 80/20 split: accuracy and
  macro precision / recall / F1 (GenePT table C4, scMPT's kNN setup).
* :func:`cluster_metrics` — k-means with k = number of labels: ARI, AMI; silhouette of
  the true labels (GenePT section 3.2).
* :func:`batch_metrics` — PCA-50, k-means with k = number of batches, ARI with the batch
  (GenePT section 4.4: higher = stronger batch effect); and batch mixing of the cosine
  k-NN graph (1 = as mixed as a random assignment of batches, 0 = separated).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._core._docs import doc_params
from .._utils import check_adata, is_dask, renamed_arg

#: the first two parameters of every cell-level benchmark
DOC_CELLS = """\
adata
    Cells with a representation in ``obsm[rep]`` (or ``"X"``) and their labels or
    batches in ``obs``.
rep
    ``obsm`` key, e.g. ``"X_genept_w"``, or ``"X"``."""

__all__ = ["batch_metrics", "cluster_metrics", "get_rep", "knn_metrics"]


def get_rep(adata: AnnData, rep: str) -> np.ndarray:
    """A cell representation as a dense float array: ``obsm[rep]``, or ``"X"``."""
    check_adata(adata)
    if rep == "X":
        X = adata.X
        if is_dask(X):
            X = X.compute()
        X = X.toarray() if sparse.issparse(X) else np.asarray(X)
    elif rep in adata.obsm:
        X = adata.obsm[rep]
        X = X.to_numpy() if isinstance(X, pd.DataFrame) else X
        X = X.toarray() if sparse.issparse(X) else np.asarray(X)
    else:
        raise KeyError(
            f"rep={rep!r} is neither 'X' nor a key of adata.obsm ({list(adata.obsm.keys())})"
        )
    return X.astype(np.float32, copy=False)


def _labels(adata: AnnData, key: str) -> np.ndarray:
    if key not in adata.obs:
        raise KeyError(f"{key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)})")
    col = adata.obs[key]
    n_missing = int(col.isna().sum())
    if n_missing:
        raise ValueError(
            f"adata.obs[{key!r}] has {n_missing} missing value(s); these metrics need a label "
            f"for every cell: subset first, e.g. adata[adata.obs[{key!r}].notna()]"
        )
    return np.asarray(col.astype(str).to_numpy(), dtype=object)


def _tidy(rep: str, values: dict[str, float], **extra) -> pd.DataFrame:
    return pd.DataFrame(
        [{"rep": rep, "metric": k, "value": float(v), **extra} for k, v in values.items()]
    )


@doc_params(doc_cells=DOC_CELLS)
@renamed_arg("seed", "random_state")
def knn_metrics(
    adata: AnnData,
    rep: str,
    label_key: str,
    *,
    k: int = 10,
    test_size: float = 0.2,
    metric: str = "cosine",
    random_state: int = 0,
) -> pd.DataFrame:
    """k-nearest-neighbour annotation on a random train/test split of the cells.

    Parameters
    ----------
    {doc_cells}
    label_key
        ``obs`` column with the labels.
    k
        Neighbours (papers: 10).
    test_size
        Held-out fraction (papers: 0.2), stratified when every label has >= 2 cells.
    metric
        Neighbour distance (papers: cosine).
    random_state
        Seed of the train/test split.

    Returns
    -------
    Tidy DataFrame ``rep``, ``metric`` (accuracy, precision, recall, f1 — macro),
    ``value``.

    Examples
    --------
    >>> import scanpy as sc, genept as gpt
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> res = gpt.bm.knn_metrics(adata, "X_pca", "bulk_labels")
    >>> sorted(res["metric"])
    ['accuracy', 'f1', 'precision', 'recall']
    """
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support
    from sklearn.model_selection import train_test_split
    from sklearn.neighbors import KNeighborsClassifier

    X = get_rep(adata, rep)
    y = _labels(adata, label_key)
    _, counts = np.unique(y, return_counts=True)
    strat = y if counts.min() >= 2 else None
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=test_size, random_state=random_state, stratify=strat)
    clf = KNeighborsClassifier(n_neighbors=min(k, len(tr)), metric=metric).fit(X[tr], y[tr])
    pred = clf.predict(X[te])
    p, r, f, _ = precision_recall_fscore_support(y[te], pred, average="macro", zero_division=0)
    return _tidy(
        rep, {"accuracy": accuracy_score(y[te], pred), "precision": p, "recall": r, "f1": f}
    )


@doc_params(doc_cells=DOC_CELLS)
@renamed_arg("seed", "random_state")
def cluster_metrics(
    adata: AnnData,
    rep: str,
    label_key: str,
    *,
    method: str = "kmeans",
    resolution: float = 1.0,
    n_neighbors: int = 15,
    silhouette_metric: str = "euclidean",
    random_state: int = 0,
) -> pd.DataFrame:
    """Agreement of unsupervised clusters with the labels (ARI, AMI), and label silhouette.

    Parameters
    ----------
    {doc_cells}
    label_key
        ``obs`` column with the labels.
    method
        ``"kmeans"`` (default; k = number of labels, GenePT section 3.2) or ``"leiden"``
        (scanpy's graph clustering: :func:`scanpy.pp.neighbors` on ``rep``, cosine, then
        :func:`scanpy.tl.leiden` at ``resolution``; the number of clusters is found,
        not given, and reported as ``n_clusters``).
    resolution
        (leiden) Resolution; higher gives more clusters.
    n_neighbors
        (leiden) Neighbours of the graph.
    silhouette_metric
        Distance of the silhouette score.
    random_state
        Seed of k-means / Leiden.

    Returns
    -------
    Tidy DataFrame ``rep``, ``metric`` (ari, ami, silhouette, n_clusters), ``value``,
    ``method``.

    Examples
    --------
    >>> import scanpy as sc, genept as gpt
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> gpt.bm.cluster_metrics(adata, "X_pca", "bulk_labels")["metric"].tolist()
    ['ari', 'ami', 'silhouette', 'n_clusters']
    >>> gpt.bm.cluster_metrics(adata, "X_pca", "bulk_labels", method="leiden")  # doctest: +SKIP
    """
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, silhouette_score

    if method not in ("kmeans", "leiden"):
        raise ValueError(f"method must be 'kmeans' or 'leiden', got {method!r}")
    X = get_rep(adata, rep)
    y = _labels(adata, label_key)
    n = len(np.unique(y))
    if n < 2:
        raise ValueError(f"adata.obs[{label_key!r}] has a single label; need at least 2")
    if method == "kmeans":
        from sklearn.cluster import KMeans

        clusters = KMeans(n_clusters=n, n_init=10, random_state=random_state).fit_predict(X)
    else:
        import scanpy as sc

        if not resolution > 0:
            raise ValueError(f"resolution must be > 0, got {resolution!r}")
        g = AnnData(np.zeros((X.shape[0], 0), dtype=np.float32))
        g.obsm["rep"] = X
        sc.pp.neighbors(
            g,
            n_neighbors=int(n_neighbors),
            use_rep="rep",
            metric="cosine",
            random_state=random_state,
        )
        sc.tl.leiden(
            g,
            resolution=float(resolution),
            flavor="igraph",
            n_iterations=2,
            directed=False,
            random_state=random_state,
        )
        clusters = g.obs["leiden"].to_numpy()
    return _tidy(
        rep,
        {
            "ari": adjusted_rand_score(y, clusters),
            "ami": adjusted_mutual_info_score(y, clusters),
            "silhouette": silhouette_score(X, y, metric=silhouette_metric),
            "n_clusters": len(np.unique(clusters)),
        },
        method=method,
    )


@doc_params(doc_cells=DOC_CELLS)
@renamed_arg("seed", "random_state")
def batch_metrics(
    adata: AnnData,
    rep: str,
    batch_key: str,
    *,
    label_key: str | None = None,
    n_pcs: int = 50,
    n_neighbors: int = 15,
    random_state: int = 0,
) -> pd.DataFrame:
    """Batch effect of a representation: k-means ARI with the batches, and k-NN mixing.

    * ``batch_ari`` (GenePT section 4.4): project to the top ``n_pcs`` principal
      components, k-means with one cluster per batch (patient), ARI with the batches.
      Higher = stronger batch effect (the paper: 0.33 on expression, 0.07 on GenePT-s).
      Batches that differ in cell-type composition get an ARI above 0 from the biology
      alone (k-means may split the cell types, not the batches).
    * ``batch_mixing``: for every cell, the share of its ``n_neighbors`` nearest
      neighbours in the full ``rep`` (cosine, the cell itself excluded) that come from
      another batch, summed over the cells and divided by the sum of the shares expected
      if the batches were assigned to the cells at random (``(m - m_b) / (m - 1)`` for a
      cell of batch ``b`` among ``m`` cells, ``m_b`` of them in ``b``). 1 = as mixed as
      random (values a little above 1 happen), 0 = no neighbour from another batch. With
      ``label_key`` the neighbours are searched, and ``m`` and ``m_b`` counted, among the
      cells of the same label only, so that batches with different cell-type
      compositions are not counted as a batch effect (``label_key`` does not change
      ``batch_ari``). Groups (labels, or all cells) that hold a single batch, or at most
      ``n_neighbors`` cells (every other cell would be a neighbour, whatever the
      representation), carry no information and are left out. A batch with fewer than
      ``n_neighbors + 1`` cells in a group cannot reach 0 there.

    Parameters
    ----------
    {doc_cells}
    batch_key
        ``obs`` column with the batch (patient, dataset) of each cell.
    label_key
        Optional ``obs`` column with cell types: mixing is measured within each type.
    n_pcs
        Principal components before k-means (paper: 50).
    n_neighbors
        Neighbours of each cell for ``batch_mixing`` (scanpy's default graph: 15).
    random_state
        Seed of the PCA and k-means.

    Returns
    -------
    Tidy DataFrame ``rep``, ``metric`` (``batch_ari``, ``batch_mixing``), ``value``,
    ``n_pcs`` (the components of ``batch_ari``).

    Raises
    ------
    ValueError
        A single batch; a cell whose representation is all zeros (no cosine neighbours:
        leave empty cells out first); no group with two batches and more than
        ``n_neighbors`` cells.

    Examples
    --------
    >>> import scanpy as sc, genept as gpt
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> res = gpt.bm.batch_metrics(adata, "X_pca", "phase", label_key="bulk_labels")
    >>> res["metric"].tolist()
    ['batch_ari', 'batch_mixing']
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score

    X = get_rep(adata, rep)
    b = _labels(adata, batch_key)
    n = len(np.unique(b))
    if n < 2:
        raise ValueError(f"adata.obs[{batch_key!r}] has a single batch; need at least 2")
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, (int, np.integer)):
        raise TypeError(f"n_neighbors must be an integer, got {n_neighbors!r}")
    if n_neighbors < 1:
        raise ValueError(f"n_neighbors must be >= 1, got {n_neighbors!r}")
    empty = ~np.any(X != 0, axis=1)
    if empty.any():
        raise ValueError(
            f"{int(empty.sum())} cell(s) have an all-zero {rep!r} (no cosine neighbours, "
            f"e.g. cells without an embedded gene): leave them out first, e.g. "
            f"adata[np.any(adata.obsm[{rep!r}] != 0, axis=1)]"
        )
    groups = _labels(adata, label_key) if label_key is not None else np.zeros(len(b), dtype=object)
    mixing = _batch_mixing(X, b, groups, int(n_neighbors))
    if not np.isfinite(mixing):
        where = f"label in adata.obs[{label_key!r}]" if label_key else "set of cells"
        raise ValueError(
            f"no {where} has cells from two batches of adata.obs[{batch_key!r}] and more "
            f"than n_neighbors={n_neighbors} cells: batch mixing is undefined"
        )
    n_comp = min(n_pcs, X.shape[0] - 1, X.shape[1])
    Z = (
        PCA(n_components=n_comp, random_state=random_state).fit_transform(X)
        if n_comp < X.shape[1]
        else X
    )
    km = KMeans(n_clusters=n, n_init=10, random_state=random_state).fit_predict(Z)
    return _tidy(
        rep,
        {"batch_ari": adjusted_rand_score(b, km), "batch_mixing": mixing},
        n_pcs=int(n_comp),
    )


def _batch_mixing(X: np.ndarray, batches: np.ndarray, groups: np.ndarray, k: int) -> float:
    """Observed over expected share of other-batch neighbours (see :func:`batch_metrics`)."""
    from sklearn.neighbors import NearestNeighbors

    observed = expected = 0.0
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        m = len(idx)
        bg = batches[idx]
        _, inv, counts = np.unique(bg, return_inverse=True, return_counts=True)
        if m <= k + 1 or len(counts) < 2:
            continue  # one batch, or every other cell a neighbour: nothing to measure
        nn = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(X[idx])
        nbr = nn.kneighbors(X[idx], return_distance=False)
        # drop each cell itself (duplicates may put another cell first: drop one own index,
        # else the last neighbour)
        own = nbr == np.arange(m)[:, None]
        drop = np.where(own.any(1), own.argmax(1), k)
        keep = np.ones_like(nbr, dtype=bool)
        keep[np.arange(m), drop] = False
        nbr = nbr[keep].reshape(m, k)
        observed += float((inv[nbr] != inv[:, None]).mean(1).sum())
        expected += float(((m - counts[inv]) / (m - 1)).sum())
    return observed / expected if expected > 0 else float("nan")
