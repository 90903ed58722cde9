"""The output layout every annotator writes, and the metrics against known labels.

Every annotator writes, through one all-or-nothing :func:`genept._utils.write_results`:

* ``obs[key]`` -- predicted label (categorical; NaN for cells not annotated);
* ``obs[key + "_confidence"]`` -- probability of the predicted label (0 for empty cells);
* ``obsm[key + "_proba"]`` -- ``(n_obs, n_classes)`` float array of class probabilities,
  columns in the order of ``uns[key]["classes"]`` (a plain array, so that any class name,
  ``"CD4+/CD25 T Reg"`` included, round-trips through ``write_h5ad``);
* ``uns[key]`` -- ``method``, ``params``, ``classes`` and ``metrics`` when the query is
  labelled.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from ..._core._keys import ResultKeys, sanitize_params
from ..._core._labels import label_strings, query_labels

__all__ = [
    "OUTPUT_DOC",
    "annotation_writes",
    "classification_metrics",
    "proba_frame",
    "query_metrics",
]

#: the "Returns" text shared by the annotators
OUTPUT_DOC = """\
``None``, or a copy with ``copy=True``. Writes

* ``obs[key_added]`` -- predicted label (categorical over the reference classes);
  NaN for empty cells (an all-zero representation, e.g. flagged ``genept_w_empty``);
* ``obs[key_added + "_confidence"]`` -- probability of the predicted label (0 for
  empty cells);
* ``obsm[key_added + "_proba"]`` -- ``(n_obs, n_classes)`` float array of class
  probabilities (NaN rows for empty cells), columns in the order of
  ``uns[key_added]["classes"]``; :func:`proba_frame` gives it as a DataFrame;
* ``uns[key_added]`` -- ``params``, ``classes`` and, when ``adata.obs[label_key]``
  exists, ``metrics`` (see :func:`classification_metrics`).

Everything survives ``write_h5ad``/``read_h5ad``, whatever the class names."""


def classification_metrics(
    y_true: Sequence | np.ndarray | pd.Series,
    y_pred: Sequence | np.ndarray | pd.Series,
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Accuracy, macro precision/recall/F1 and the confusion matrix.

    Parameters
    ----------
    y_true, y_pred
        True and predicted labels, compared by value: ``1``, ``1.0`` and ``"1"`` are one
        class. Pairs where either label is missing (NaN, ``None``, ``""``, ``"nan"``)
        are left out.
    labels
        Classes over which the macro averages and the confusion matrix are taken
        (default: the sorted union of ``y_true`` and ``y_pred``, as scikit-learn does).
        A prediction outside ``labels`` (e.g. ``"<unparsed>"``) counts as an error of
        its true class.

    Returns
    -------
    dict
        Keys ``accuracy``, ``precision_macro``, ``recall_macro``, ``f1_macro``,
        ``n_cells``, ``labels`` and ``confusion_matrix``;
        the confusion matrix is a nested list, rows are true classes,
        columns predicted classes, both in the order of ``labels``. Classes without true or
        predicted cells count as 0 in the macro averages (``zero_division=0``).

    Examples
    --------
    >>> m = classification_metrics(["a", "b", "b"], ["a", "b", "a"])
    >>> round(m["accuracy"], 3), m["confusion_matrix"]
    (0.667, [[1, 0], [1, 1]])
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    yt, yp = label_strings(y_true), label_strings(y_pred)
    if yt.shape != yp.shape:
        raise ValueError(f"y_true has {yt.size} labels but y_pred has {yp.size}")
    ok = np.array([a is not None and b is not None for a, b in zip(yt, yp, strict=True)], bool)
    yt, yp = yt[ok].astype(str), yp[ok].astype(str)
    if yt.size == 0:
        raise ValueError("no labels to compare (none given, or all missing)")
    labels = sorted(set(yt) | set(yp)) if labels is None else [str(c) for c in labels]
    p, r, f, _ = precision_recall_fscore_support(
        yt, yp, labels=labels, average="macro", zero_division=0
    )
    cm = confusion_matrix(yt, yp, labels=labels)
    return {
        "accuracy": float(accuracy_score(yt, yp)),
        "precision_macro": float(p),
        "recall_macro": float(r),
        "f1_macro": float(f),
        "n_cells": int(yt.size),
        "labels": list(labels),
        "confusion_matrix": cm.astype(int).tolist(),
    }


def query_metrics(
    adata: AnnData,
    label_key: str | None,
    pred: np.ndarray,
    *,
    exclude: Sequence[str] = (),
) -> dict[str, Any] | None:
    """Metrics against ``adata.obs[label_key]`` when present (labelled, predicted cells)."""
    truth = query_labels(adata, label_key)
    if truth is None:
        return None
    pred = label_strings(pd.Series(pred, dtype=object))
    mask = np.array([t is not None and p is not None for t, p in zip(truth, pred, strict=True)])
    if not mask.any():
        return None
    yt, yp = truth[mask].astype(str), pred[mask].astype(str)
    if not set(yt) & (set(yp) - set(exclude)):
        warnings.warn(
            f"no label of adata.obs[{label_key!r}] (e.g. {sorted(set(yt))[:3]}) is among the "
            f"predicted classes (e.g. {sorted(set(yp))[:3]}); the metrics will be 0; do "
            "query and reference name the cell types alike?",
            UserWarning,
            stacklevel=3,
        )
    labels = sorted((set(yt) | set(yp)) - set(exclude))
    return classification_metrics(yt, yp, labels=labels)


def proba_frame(adata: AnnData, key: str) -> pd.DataFrame:
    """``obsm[key + "_proba"]`` as a DataFrame (index ``obs_names``, columns the classes).

    Reads both this layout (array + ``uns[key]["classes"]``) and the DataFrame that
    genept wrote before. Class names are stored in ``uns``, not as column names of a
    written table, so any label (``"CD4+/CD25 T Reg"``) round-trips through h5ad.

    Parameters
    ----------
    adata
        The annotated query.
    key
        The annotator's ``key_added`` (``"genept_knn"``, ``"genept_scmpt"``…).

    Returns
    -------
    Class probabilities, one row per cell (NaN rows for cells that got no label).

    Examples
    --------
    >>> gpt.tl.annotate_knn(query, reference, use_rep="X_pca")  # doctest: +SKIP
    >>> gpt.tl.proba_frame(query, "genept_knn").head()  # doctest: +SKIP
    """
    k = ResultKeys(key)
    pkey = k.proba
    if pkey not in adata.obsm:
        raise KeyError(
            f"{pkey!r} is not in adata.obsm (available: {list(adata.obsm.keys())}); run an "
            f"annotator with key_added={key!r} first"
        )
    p = adata.obsm[pkey]
    if isinstance(p, pd.DataFrame):
        return p.astype(np.float64)
    classes = adata.uns.get(k.uns, {}).get("classes")
    if classes is None or len(classes) != np.shape(p)[1]:
        raise KeyError(f"uns[{k.uns!r}]['classes'] is missing or does not match obsm[{pkey!r}]")
    return pd.DataFrame(
        np.asarray(p, dtype=np.float64),
        index=adata.obs_names.copy(),
        columns=pd.Index([str(c) for c in classes], dtype=object),
    )


def annotation_writes(
    adata: AnnData,
    key: str,
    classes: Sequence[str],
    proba: np.ndarray,
    uns: dict[str, Any],
    *,
    pred: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
    categories: Sequence[str] | None = None,
    extra_obs: Mapping[str, Any] | None = None,
) -> list[tuple[str, str, Any]]:
    """The ``(attr, key, value)`` writes shared by every annotator (keys: :class:`ResultKeys`).

    Rows of ``proba`` that are all NaN (empty cells) get no label and confidence 0,
    unless ``pred``/``confidence`` are given.
    """
    classes = [str(c) for c in classes]
    proba = np.asarray(proba, dtype=np.float64)
    none = np.isnan(proba).all(axis=1) if proba.size else np.ones(proba.shape[0], bool)
    if pred is None:
        pred = np.asarray(classes, dtype=object)[np.nan_to_num(proba, nan=-1).argmax(axis=1)]
        pred[none] = None
    if confidence is None:
        confidence = np.where(none, 0.0, np.nan_to_num(proba, nan=0).max(axis=1))
    cats = classes if categories is None else [str(c) for c in categories]
    k = ResultKeys(key)
    writes: list[tuple[str, str, Any]] = [
        ("obs", k.labels, pd.Categorical(pred, categories=cats)),
        ("obs", k.confidence, np.asarray(confidence, dtype=np.float64)),
        ("obsm", k.proba, proba),
    ]
    for name, v in (extra_obs or {}).items():
        writes.append(("obs", name, v))
    writes.append(("uns", k.uns, sanitize_params({**uns, "classes": classes})))
    return writes
