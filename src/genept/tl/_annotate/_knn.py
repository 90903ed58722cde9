"""The GenePT papers' k-nearest-neighbour annotators: one representation, or pooled over several."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from anndata import AnnData
from scanpy import logging as logg

from ..._core._docs import doc_adata, doc_copy, doc_params
from ..._core._labels import (
    as_key_list,
    check_key_added,
    check_query,
    empty_rows,
    paired_reps,
    reference_labels,
)
from ..._utils import check_adata, write_results
from ._common import OUTPUT_DOC, annotation_writes, query_metrics

__all__ = ["annotate_knn", "annotate_knn_ensemble"]


def _knn_votes(
    ref: np.ndarray,
    codes: np.ndarray,
    query: np.ndarray,
    n_classes: int,
    *,
    n_neighbors: int,
    metric: str,
) -> np.ndarray:
    """Votes ``(n_query, n_classes)`` of the ``n_neighbors`` nearest reference cells."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=n_neighbors, metric=metric, algorithm="brute").fit(ref)
    idx = nn.kneighbors(query, return_distance=False)
    votes = np.zeros((query.shape[0], n_classes), dtype=np.float64)
    np.add.at(votes, (np.repeat(np.arange(query.shape[0]), idx.shape[1]), codes[idx].ravel()), 1.0)
    return votes


def _annotate_knn(
    adata: AnnData,
    reference: AnnData,
    keys: list[str],
    *,
    label_key: str,
    n_neighbors: int,
    metric: str,
    key_added: str,
    copy: bool,
    method: str,
) -> AnnData | None:
    check_adata(adata)
    check_adata(reference, "reference")
    check_query(adata)
    check_query(reference, "reference")
    check_key_added(key_added, label_key)
    y, keep = reference_labels(reference, label_key)
    n_neighbors = int(n_neighbors)
    if n_neighbors < 1:
        raise ValueError(f"n_neighbors must be >= 1, got {n_neighbors}")
    xq, xr = paired_reps(adata, reference, keys)
    # empty cells (all-zero rows): no neighbours in the reference, no label in the query
    ref_empty = empty_rows(xr)
    if (ref_empty & keep).any():
        warnings.warn(
            f"{int((ref_empty & keep).sum())} reference cells have an all-zero representation "
            "(empty cells); they are left out",
            UserWarning,
            stacklevel=3,
        )
        y = y[~ref_empty[keep]]
        keep = keep & ~ref_empty
    classes, codes = np.unique(y, return_inverse=True)
    if classes.size < 2:
        raise ValueError("fewer than two reference classes remain after dropping empty cells")
    n_ref = int(keep.sum())
    if n_neighbors > n_ref:
        warnings.warn(
            f"n_neighbors={n_neighbors} exceeds the {n_ref} labelled reference cells; "
            f"using {n_ref}",
            UserWarning,
            stacklevel=3,
        )
        n_neighbors = n_ref
    empty = empty_rows(xq)
    start = logg.info(f"annotating {adata.n_obs} cells by {n_neighbors}-NN vote on {keys}")
    votes = np.zeros((adata.n_obs, classes.size))
    if (~empty).any():
        for q, r in zip(xq, xr, strict=True):
            votes[~empty] += _knn_votes(
                r[keep], codes, q[~empty], classes.size, n_neighbors=n_neighbors, metric=metric
            )
    proba = np.full(votes.shape, np.nan)
    proba[~empty] = votes[~empty] / votes[~empty].sum(axis=1, keepdims=True)
    pred = classes.astype(object)[votes.argmax(axis=1)]  # ties: first class (as sklearn)
    pred[empty] = None
    if empty.any():
        logg.warning(
            f"{int(empty.sum())} query cells are empty (all-zero representation); not labelled"
        )
    uns: dict[str, Any] = {
        "method": method,
        "params": {
            "use_rep": keys if method == "knn_ensemble" else keys[0],
            "label_key": label_key,
            "n_neighbors": n_neighbors,
            "metric": metric,
            "n_reference": n_ref,
        },
        "n_empty": int(empty.sum()),
    }
    metrics = query_metrics(adata, label_key, pred)
    if metrics is not None:
        uns["metrics"] = metrics
    writes = annotation_writes(adata, key_added, classes, proba, uns, pred=pred)
    out = write_results(adata, writes, copy=copy)
    logg.info("    finished", time=start)
    return out


@doc_params(doc_adata=doc_adata, doc_copy=doc_copy, output=OUTPUT_DOC)
def annotate_knn(
    adata: AnnData,
    reference: AnnData,
    *,
    use_rep: str = "X_genept_w",
    label_key: str = "cell_type",
    n_neighbors: int = 10,
    metric: str = "cosine",
    key_added: str = "genept_knn",
    copy: bool = False,
) -> AnnData | None:
    """Annotate cells by a vote of their nearest labelled reference cells.

    The GenePT papers' zero-shot classifier: the ``n_neighbors`` nearest reference cells
    in ``obsm[use_rep]`` (cosine distance by default) vote; probabilities are the vote
    fractions. Ties go to the first class in sorted order, as in scikit-learn's
    :class:`~sklearn.neighbors.KNeighborsClassifier`. Empty cells (an all-zero row, e.g.
    GenePT-w cells without any embedded gene) get no label in the query and are left
    out of the reference.

    Parameters
    ----------
    {doc_adata}
        The query cells to annotate.
    reference
        Labelled cells with the same representation. If it *is* ``adata``, each cell
        counts among its own neighbours.
    use_rep
        Key of ``obsm`` in both objects (same width: the same encoder or PCA).
    label_key
        Column of ``reference.obs`` with the labels; reference cells without a label
        (NaN, ``""``, ``"nan"``) are left out with a warning. Labels are compared by
        value (``1.0`` equals ``1``). If ``adata.obs`` has it too, metrics are computed
        against it; ``key_added`` must differ from it.
    n_neighbors
        Neighbours per cell (10 in the papers).
    metric
        Any metric of :class:`~sklearn.neighbors.NearestNeighbors`.
    key_added
        Where results are written.
    {doc_copy}

    Returns
    -------
    {output}

    Examples
    --------
    >>> gpt.tl.annotate_knn(query, reference, use_rep="X_pca", label_key="bulk_labels")  # doctest: +SKIP
    >>> query.obs["genept_knn"].head()  # doctest: +SKIP
    """
    if not isinstance(use_rep, str):
        raise TypeError(
            f"annotate_knn takes one obsm key, got {use_rep!r}; "
            "use annotate_knn_ensemble for several"
        )
    return _annotate_knn(
        adata,
        reference,
        [use_rep],
        label_key=label_key,
        n_neighbors=n_neighbors,
        metric=metric,
        key_added=key_added,
        copy=copy,
        method="knn",
    )


def annotate_knn_ensemble(
    adata: AnnData,
    reference: AnnData,
    *,
    use_rep: Sequence[str] = ("X_genept_w", "X_genept_s", "X_scGPT"),
    label_key: str = "cell_type",
    n_neighbors: int = 10,
    metric: str = "cosine",
    key_added: str = "genept_knn_ensemble",
    copy: bool = False,
) -> AnnData | None:
    """Annotate cells by the neighbours pooled over several representations.

    GenePT appendix C (table C4): the ``n_neighbors`` nearest reference cells are found
    in each representation separately and all their votes are pooled (10 neighbours x
    3 embeddings = 30 votes); the label with most votes wins (ties: first class in sorted
    order), probabilities are the pooled vote fractions.

    Parameters
    ----------
    adata
        Query cells.
    reference
        Labelled cells with the same representations.
    use_rep
        ``obsm`` keys present in both objects (default GenePT-w, GenePT-s and scGPT).
    label_key, n_neighbors, metric, key_added, copy
        As in :func:`annotate_knn`.

    Returns
    -------
    As :func:`annotate_knn`; ``uns[key_added]["params"]["use_rep"]`` lists the keys.

    Examples
    --------
    >>> gpt.tl.annotate_knn_ensemble(query, reference, use_rep=["X_genept_w", "X_genept_s", "X_scGPT"])  # doctest: +SKIP
    >>> query.obs["genept_knn_ensemble_confidence"].describe()  # doctest: +SKIP
    """
    return _annotate_knn(
        adata,
        reference,
        as_key_list(use_rep),
        label_key=label_key,
        n_neighbors=n_neighbors,
        metric=metric,
        key_added=key_added,
        copy=copy,
        method="knn_ensemble",
    )


# --------------------------------------------------------------------------------------
# neural annotators: MLP probe and scMPT fusion
