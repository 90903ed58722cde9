"""Top attributed genes per cell type (``gpt.tl.explain_annotation``), markers highlighted."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._utils import check_adata
from ._utils import savefig_or_show

__all__ = ["attributions"]

_METHOD_NAMES = {"ig": "integrated gradients", "lime": "LIME"}


def attributions(
    adata: AnnData | pd.DataFrame,
    key: str = "genept_mlp_attributions",
    *,
    groups: Sequence[str] | None = None,
    n_genes: int = 10,
    methods: Sequence[str] | None = None,
    markers: Mapping[str, Iterable[str]] | None = None,
    marker_color: str = "#d62728",
    color: str = "#8c8c8c",
    panel_size: tuple[float, float] = (2.6, 2.4),
    ncols: int | None = None,
    show: bool | None = None,
    save: bool | str | os.PathLike | None = None,
):
    """Bar charts of the top attributed genes of each cell type, known markers highlighted.

    One panel per group and method (rows: groups, columns: methods): the ``n_genes``
    genes of highest mean attribution (``uns[key]`` of
    :func:`genept.tl.explain_annotation`), longest bar on top; genes in ``markers[group]``
    are drawn in ``marker_color`` with a bold label, and the panel title counts them (as
    :func:`genept.bm.marker_recovery` does).

    Parameters
    ----------
    adata
        AnnData with the table in ``uns[key]``, or the table itself.
    key
        ``uns`` key of the attribution table.
    groups
        Groups to show, in this order (default: all in the table).
    n_genes
        Genes per panel.
    methods
        Methods (columns), default those in the table (``"ig"``, ``"lime"``).
    markers
        ``{group: marker genes}`` (e.g. :func:`genept.bm.marker_sets`), compared case-blind.
    marker_color, color
        Bar colours of markers and of other genes.
    panel_size
        Width and height of one panel in inches.
    ncols
        With one method: panels per row (default up to 4); ignored otherwise.
    show, save
        As in scanpy's plotting functions (``save`` picks the file name suffix/format).

    Returns
    -------
    The array of axes (rows x columns) unless the figure is shown.

    Examples
    --------
    >>> gpt.tl.explain_annotation(adata, "genept_mlp", method="ig", model="mlp_model")  # doctest: +SKIP
    >>> gpt.pl.attributions(adata, "genept_mlp_attributions", groups=["CD56+ NK", "CD19+ B"])  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    if isinstance(adata, AnnData):
        check_adata(adata)
        if key not in adata.uns:
            raise KeyError(
                f"adata.uns has no {key!r}; run gpt.tl.explain_annotation(adata, ...) first "
                f"(uns keys: {list(adata.uns.keys())[:8]})"
            )
        table = adata.uns[key]
    else:
        table = adata
    if not isinstance(table, pd.DataFrame) or not {"method", "group", "gene", "attribution"} <= set(
        table.columns
    ):
        raise ValueError(f"{key!r} is not an attribution table of gpt.tl.explain_annotation")
    if isinstance(n_genes, bool) or not isinstance(n_genes, int | np.integer) or n_genes < 1:
        raise ValueError(f"n_genes must be a positive integer, got {n_genes!r}")
    table = table.assign(group=table["group"].astype(str), method=table["method"].astype(str))
    methods = list(methods) if methods is not None else list(dict.fromkeys(table["method"]))
    all_groups = list(dict.fromkeys(table["group"]))
    groups = [str(g) for g in groups] if groups is not None else all_groups
    bad = [g for g in groups if g not in all_groups] + [
        m for m in methods if m not in set(table["method"])
    ]
    if bad:
        raise KeyError(
            f"not in the attribution table: {bad} (groups {all_groups}, methods {sorted(set(table['method']))})"
        )
    mk = {str(g): {str(x).upper() for x in v} for g, v in (markers or {}).items()}
    if len(methods) == 1:
        ncols = ncols or min(4, len(groups))
        nrows = -(-len(groups) // ncols)
        cells = [(g, methods[0]) for g in groups]
    else:
        ncols, nrows = len(methods), len(groups)
        cells = [(g, m) for g in groups for m in methods]
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows), squeeze=False
    )
    for ax, (g, m) in zip(axes.ravel(), cells, strict=False):
        s = table[(table["group"] == g) & (table["method"] == m)]
        s = s.sort_values("attribution", ascending=False, kind="stable").head(n_genes)
        genes = s["gene"].astype(str).tolist()
        is_m = [x.upper() in mk.get(g, set()) for x in genes]
        y = np.arange(len(genes))[::-1]
        ax.barh(y, s["attribution"].to_numpy(), color=[marker_color if f else color for f in is_m])
        ax.set_yticks(y, genes, fontsize=7)
        for lab, f in zip(ax.get_yticklabels(), is_m, strict=True):
            if f:
                lab.set_color(marker_color)
                lab.set_fontweight("bold")
        ax.tick_params(axis="x", labelsize=6)
        ax.axvline(0, color="black", lw=0.5)
        title = f"{g}\n{_METHOD_NAMES.get(m, m)}"
        if g in mk:
            title += f" ({sum(is_m)}/{len(genes)} markers)"
        ax.set_title(title, fontsize=8)
    for ax in axes.ravel()[len(cells) :]:
        ax.set_visible(False)
    fig.supxlabel("mean attribution to the class probability", fontsize=8)
    fig.tight_layout()
    return savefig_or_show("attributions", fig, axes, show=show, save=save)
