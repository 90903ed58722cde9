"""Confusion-matrix heatmap of an annotation against true labels."""

from __future__ import annotations

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


def confusion_matrix(
    adata: AnnData,
    key: str = "genept_scmpt",
    *,
    label_key: str | None = None,
    normalize: bool | Literal["true", "pred", "all"] = True,
    annotate: bool | None = None,
    cmap: str = "viridis",
    ax=None,
    show: bool | None = None,
    save: bool | str | None = None,
):
    """Heatmap of predicted (``obs[key]``) against true labels (``obs[label_key]``).

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
        ``True``/``"true"``: fractions of each true class (rows sum to 1); ``"pred"``:
        of each predicted class; ``"all"``: of all cells; ``False``: counts.
    annotate
        Write the value in each cell (default: when there are at most 25 classes).
    cmap
        Colour map.
    ax
        Axes to draw into (default: a new figure).
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
    """
    import matplotlib.pyplot as plt

    check_adata(adata)
    if key not in adata.obs:
        raise KeyError(
            f"{key!r} is not a column of adata.obs; run an annotator with key_added={key!r} "
            f"first (annotation columns present: {[c for c in adata.obs.columns if c + '_confidence' in adata.obs]})"
        )
    if label_key is None:
        params = (
            adata.uns.get(key, {}).get("params", {}) if isinstance(adata.uns.get(key), dict) else {}
        )
        label_key = params.get("label_key")
        if label_key is None:
            raise ValueError(f"uns[{key!r}] records no label_key; pass label_key=...")
    if label_key not in adata.obs:
        raise KeyError(
            f"label_key={label_key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)})"
        )
    table, accuracy = _confusion_table(adata.obs[label_key], adata.obs[key], normalize)
    n_rows, n_cols = table.shape
    if ax is None:
        size = (max(4.0, 0.45 * n_cols + 2.5), max(3.5, 0.4 * n_rows + 2.0))
        fig, ax = plt.subplots(figsize=size)
    else:
        fig = ax.figure
    values = table.to_numpy(dtype=float)
    vmax = 1.0 if normalize else max(values.max(), 1.0)
    im = ax.imshow(values, cmap=cmap, vmin=0.0, vmax=vmax, aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction" if normalize else "cells")
    ax.set_xticks(np.arange(n_cols), labels=list(table.columns), rotation=90)
    ax.set_yticks(np.arange(n_rows), labels=list(table.index))
    ax.set_xlabel(f"predicted ({key})")
    ax.set_ylabel(f"true ({label_key})")
    ax.set_title(f"accuracy {accuracy:.3f}")
    if annotate is None:
        annotate = max(n_rows, n_cols) <= 25
    if annotate:
        cmap_obj = plt.get_cmap(cmap)
        for i in range(n_rows):
            for j in range(n_cols):
                v = values[i, j]
                if v == 0:
                    continue
                r, g, b, _ = cmap_obj(v / vmax)
                colour = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
                text = f"{v:.2f}" if normalize else f"{int(v)}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color=colour)
    return savefig_or_show("confusion_matrix", fig, ax, show=show, save=save)
