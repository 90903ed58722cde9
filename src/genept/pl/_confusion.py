"""Confusion-matrix heatmap of an annotation against true labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._utils import check_adata
from ._utils import savefig_or_show

__all__ = ["confusion_matrix"]


def _confusion_table(
    truth: pd.Series, pred: pd.Series, normalize: bool | str
) -> tuple[pd.DataFrame, float]:
    """Counts (or fractions) with true classes as rows, predicted classes as columns.

    Columns are the true classes in the same order, then any other predicted label
    (e.g. ``"<unparsed>"``). Returns the table and the accuracy.
    """
    mask = truth.notna().to_numpy() & pred.notna().to_numpy()
    if not mask.any():
        raise ValueError("no cell has both a prediction and a true label")
    t = truth[mask].astype(str)
    p = pred[mask].astype(str)

    def order(s: pd.Series) -> list[str]:
        if isinstance(s.dtype, pd.CategoricalDtype):
            present = set(s.astype(str))
            return [str(c) for c in s.cat.categories if str(c) in present]
        return sorted(set(s.astype(str)))

    rows = order(truth[mask])
    cols = rows + [c for c in order(pred[mask]) if c not in set(rows)]
    table = pd.crosstab(t, p).reindex(index=rows, columns=cols, fill_value=0)
    accuracy = float((t.to_numpy() == p.to_numpy()).mean())
    if normalize is True or normalize == "true":
        table = table.div(table.sum(axis=1).replace(0, 1), axis=0)
    elif normalize == "pred":
        table = table.div(table.sum(axis=0).replace(0, 1), axis=1)
    elif normalize == "all":
        table = table / table.to_numpy().sum()
    elif normalize not in (False, None):
        raise ValueError(
            f"normalize must be True/'true', 'pred', 'all' or False, got {normalize!r}"
        )
    return table, accuracy


def _order_classes(table: pd.DataFrame, order) -> list[str]:
    """Row order: the given list, by size, or ``"diagonal"`` (confused classes adjacent)."""
    rows = list(table.index)
    if order is None:
        return rows
    if isinstance(order, str):
        if order == "size":
            return list(table.sum(axis=1).sort_values(ascending=False, kind="stable").index)
        if order == "diagonal":
            if len(rows) < 3:
                return rows
            from scipy.cluster.hierarchy import leaves_list, linkage, optimal_leaf_ordering
            from scipy.spatial.distance import squareform

            C = table[rows].to_numpy(dtype=float)
            C = C / np.maximum(C.sum(axis=1, keepdims=True), 1)
            S = (C + C.T) / 2  # symmetric confusion: classes often mistaken for each other
            D = 1.0 - S / max(S.max(), 1e-12)
            np.fill_diagonal(D, 0.0)
            y = squareform(D, checks=False)
            Z = optimal_leaf_ordering(linkage(y, "average"), y)
            return [rows[i] for i in leaves_list(Z)]
        raise ValueError(
            f"order must be None, 'size', 'diagonal' or a list of classes, got {order!r}"
        )
    order = [str(o) for o in order]
    unknown = [o for o in order if o not in rows]
    if unknown:
        raise ValueError(
            f"order names classes that are not true labels: {unknown[:5]} (classes: {rows})"
        )
    return order + [r for r in rows if r not in order]


def confusion_matrix(
    adata: AnnData,
    key: str = "genept_scmpt",
    *,
    label_key: str | None = None,
    normalize: bool | Literal["true", "pred", "all"] = True,
    annotate: bool | Literal["counts", "fraction"] | None = None,
    order: Literal["size", "diagonal"] | Sequence[str] | None = None,
    cmap: str = "viridis",
    fontsize: float = 9.0,
    ax=None,
    show: bool | None = None,
    save: bool | str | None = None,
):
    """Heatmap of predicted (``obs[key]``) against true labels (``obs[label_key]``).

    Colour is the fraction (``normalize``), the text in each cell the **number of
    cells**, and each row label carries its class size (``"CD34+ (n=3)"``), so a class of
    one cell, all predicted right, does not read like a large class at 1.00.

    Parameters
    ----------
    adata
        Annotated cells (e.g. after :func:`genept.tl.annotate_scmpt`).
    key
        ``obs`` column of predictions (an annotator's ``key_added``).
    label_key
        ``obs`` column of true labels; default: the ``label_key`` recorded in
        ``uns[key]["params"]``.
    normalize
        Colour scale. ``True``/``"true"``: fraction of each true class (rows sum to 1);
        ``"pred"``: of each predicted class; ``"all"``: of all cells; ``False``: counts.
    annotate
        Text in each non-empty cell: ``"counts"`` (number of cells), ``"fraction"`` (the
        coloured value) or ``False``. Default (``None``/``True``): counts, when there are
        at most 25 classes.
    order
        Order of the classes (rows; the columns follow): ``None`` keeps the categories'
        order, ``"size"`` sorts by class size, ``"diagonal"`` puts classes that are
        confused with each other next to each other (average-linkage clustering of the
        symmetrised row fractions, optimal leaf order), or a list of classes (the rest
        follow in their order).
    cmap
        Colour map.
    fontsize
        Size of the cell texts and tick labels, in points.
    ax
        Axes to draw into (default: a new figure sized to the number of classes).
    show
        Show the figure (default ``scanpy.settings.autoshow``).
    save
        ``True`` saves to ``scanpy.settings.figdir / "confusion_matrix.<format>"``; a
        string is appended to the name (``"_scmpt.png"`` →
        ``confusion_matrix_scmpt.png``), as in scanpy.

    Returns
    -------
    The :class:`~matplotlib.axes.Axes`, unless the figure was shown (then ``None``).
    Rows are true classes, columns predicted ones (the true classes in the same order,
    then other predicted labels such as ``"<unparsed>"``). Cells without a prediction
    or a true label are left out.

    Examples
    --------
    >>> gpt.pl.confusion_matrix(query, "genept_scmpt", label_key="bulk_labels", show=False)  # doctest: +SKIP
    >>> gpt.pl.confusion_matrix(query, "genept_scmpt", order="diagonal", save="_scmpt.pdf")  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    check_adata(adata)
    if key not in adata.obs:
        raise KeyError(
            f"{key!r} is not a column of adata.obs; run an annotator with key_added={key!r} "
            f"first (annotation columns present: {[c for c in adata.obs.columns if c + '_confidence' in adata.obs]})"
        )
    if label_key is None:
        record = adata.uns.get(key)  # uns[key] as written (no X_ prefix handling: a column)
        label_key = record.get("params", {}).get("label_key") if isinstance(record, dict) else None
        if label_key is None:
            raise ValueError(f"uns[{key!r}] records no label_key; pass label_key=...")
    if label_key not in adata.obs:
        raise KeyError(
            f"label_key={label_key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)})"
        )
    if annotate not in (None, True, False, "counts", "fraction"):
        raise ValueError(f"annotate must be True, False, 'counts' or 'fraction', got {annotate!r}")
    counts, accuracy = _confusion_table(adata.obs[label_key], adata.obs[key], False)
    rows = _order_classes(counts, order)
    cols = rows + [c for c in counts.columns if c not in set(rows)]
    counts = counts.reindex(index=rows, columns=cols)
    table, _ = _confusion_table(adata.obs[label_key], adata.obs[key], normalize)
    table = table.reindex(index=rows, columns=cols)
    n_rows, n_cols = table.shape
    if ax is None:
        longest = max(len(str(c)) for c in [*rows, *cols])
        cell = 0.42 * fontsize / 9
        margin = 0.075 * fontsize / 9 * (longest + 7)
        fig, ax = plt.subplots(figsize=(cell * n_cols + margin + 1.4, cell * n_rows + margin + 0.8))
    else:
        fig = ax.figure
    values = table.to_numpy(dtype=float)
    n = counts.to_numpy(dtype=int)
    vmax = 1.0 if normalize else max(values.max(), 1.0)
    im = ax.imshow(values, cmap=cmap, vmin=0.0, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.grid(False)  # scanpy's figure params switch grids on
    cbar_label = {"pred": "fraction of predicted class", "all": "fraction of all cells"}.get(
        normalize, "fraction of true class" if normalize else "cells"
    )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=cbar_label)
    row_n = n.sum(axis=1)
    ax.set_xticks(np.arange(n_cols), labels=list(table.columns), rotation=90, fontsize=fontsize)
    ax.set_yticks(
        np.arange(n_rows),
        labels=[f"{r} (n={k})" for r, k in zip(table.index, row_n, strict=True)],
        fontsize=fontsize,
    )
    ax.set_xlabel(f"predicted ({key})", fontsize=fontsize + 1)
    ax.set_ylabel(f"true ({label_key})", fontsize=fontsize + 1)
    ax.set_title(f"accuracy {accuracy:.3f} ({int(row_n.sum())} cells)", fontsize=fontsize + 2)
    if annotate in (None, True):
        annotate = "counts" if max(n_rows, n_cols) <= 25 else False
    if annotate:
        cmap_obj = plt.get_cmap(cmap)
        for i in range(n_rows):
            for j in range(n_cols):
                if n[i, j] == 0:
                    continue
                v = values[i, j]
                r, g, b, _ = cmap_obj(v / vmax)
                colour = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
                text = f"{n[i, j]}" if annotate == "counts" or not normalize else f"{v:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color=colour)
    return savefig_or_show("confusion_matrix", fig, ax, show=show, save=save)
