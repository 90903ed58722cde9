"""Side-by-side UMAPs of cell representations, and plots of benchmark tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._utils import renamed_arg
from ._utils import savefig_or_show

__all__ = ["bm_results", "embeddings"]


#: panel titles of the usual representations, in words
REP_TITLES = {
    "X": "expression",
    "X_pca": "expression PCA",
    "X_genept_w": "GenePT-w",
    "X_genept_s": "GenePT-s",
    "X_scGPT": "scGPT",
    "X_scgpt": "scGPT",
    "X_umap": "UMAP",
}


def _rep_title(rep: str, titles) -> str:
    if titles and rep in titles:
        return str(titles[rep])
    return REP_TITLES.get(rep, rep.removeprefix("X_"))


@renamed_arg("point_size", "size")
@renamed_arg("seed", "random_state")
def embeddings(
    adata: AnnData,
    reps: Sequence[str] = ("X_pca", "X_genept_w", "X_genept_s"),
    color: str | Sequence[str] | None = None,
    *,
    titles: Mapping[str, str] | None = None,
    n_neighbors: int = 15,
    metric: str = "cosine",
    random_state: int = 0,
    size: float | None = None,
    panel_size: float = 3.2,
    ax=None,
    show: bool | None = None,
    save: bool | str | None = None,
):
    """UMAPs of several cell representations side by side (GenePT figure 3 style).

    For each representation, neighbours and UMAP are computed on a light copy (``adata``
    is not modified). The representations are the **columns** of the figure, the
    ``color`` keys its rows; each row has **one** legend (or colour bar), right of its
    last panel, and the same colours in every panel. Panels are titled in words
    (``"GenePT-w"``, ``"expression PCA"``), not by their ``obsm`` keys.

    Parameters
    ----------
    adata
        Cells with the representations in ``obsm``. ``"X_pca"`` is computed on the copy
        when missing; missing GenePT representations are skipped with a warning.
    reps
        ``obsm`` keys (or ``"X"``).
    color
        ``obs`` columns to colour by, e.g. ``[label_key, batch_key]``.
    titles
        Panel titles ``{rep: title}``, for representations beyond the known ones
        (``X_pca``, ``X_genept_w``, ``X_genept_s``, ``X_scGPT``, ``X``).
    n_neighbors, metric, random_state
        Passed to :func:`scanpy.pp.neighbors` / :func:`scanpy.tl.umap` (``seed=`` is
        deprecated).
    size
        Dot size (default: half of scanpy's ``120000 / n_cells``, for the smaller panels;
        ``point_size=`` is deprecated).
    panel_size
        Inches per panel.
    ax
        Axes to draw into: one Axes for one representation and at most one colour, or an
        array of shape ``(n_reps, n_colors)``. Default: a new figure.
    show
        Show the figure (default ``scanpy.settings.autoshow``).
    save
        As in scanpy: ``True`` writes ``scanpy.settings.figdir / "embeddings.<format>"``;
        a string is appended to that name, its extension picks the format
        (``"_pbmc.pdf"`` → ``embeddings_pbmc.pdf``).

    Returns
    -------
    Array of :class:`~matplotlib.axes.Axes` indexed ``[rep, color]`` (shape
    ``(n_reps, n_colors)``; drawn with the representations side by side), unless the
    figure was shown (then ``None``).

    Examples
    --------
    >>> gpt.pl.embeddings(adata, color="bulk_labels", show=False)  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt
    import scanpy as sc
    from scanpy import logging as logg

    colors = [color] if isinstance(color, str) else list(color or [])
    for c in colors:
        if c not in adata.obs:
            raise KeyError(f"color={c!r} is not a column of adata.obs ({list(adata.obs.columns)})")
    light = AnnData(obs=adata.obs[colors].copy() if colors else pd.DataFrame(index=adata.obs_names))
    for c in colors:  # the same colours in every panel: scanpy's palette, or adata's
        if f"{c}_colors" in adata.uns:
            light.uns[f"{c}_colors"] = adata.uns[f"{c}_colors"]
    use = []
    for rep in reps:
        if rep == "X":
            X = adata.X
            light.obsm["X"] = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
        elif rep in adata.obsm:
            v = adata.obsm[rep]
            light.obsm[rep] = v.to_numpy() if isinstance(v, pd.DataFrame) else np.asarray(v)
        elif rep == "X_pca":
            tmp = AnnData(adata.X.copy(), obs=pd.DataFrame(index=adata.obs_names))
            sc.pp.pca(tmp, n_comps=min(50, min(tmp.shape) - 1), random_state=random_state)
            light.obsm[rep] = tmp.obsm["X_pca"]
        else:
            logg.warning(f"adata.obsm has no {rep!r}; skipped")
            continue
        use.append(rep)
    if not use:
        raise ValueError(
            f"none of {list(reps)} is available in adata.obsm ({list(adata.obsm.keys())})"
        )
    ncol = max(1, len(colors))
    if size is None:
        size = 60000 / max(adata.n_obs, 1)
    if ax is None:
        legend_w = 2.2 if colors else 0.0
        fig, grid = plt.subplots(
            ncol,
            len(use),
            squeeze=False,
            figsize=(panel_size * len(use) + legend_w, panel_size * ncol),
        )
        axes = grid.T  # [rep, color]
    else:
        axes = np.asarray(ax, dtype=object).reshape(-1)
        if axes.size != len(use) * ncol:
            raise ValueError(
                f"ax holds {axes.size} Axes; {len(use)} representation(s) x {ncol} "
                f"colour(s) need {len(use) * ncol}"
            )
        axes = axes.reshape(len(use), ncol)
        fig = axes[0, 0].figure
    for r, rep in enumerate(use):
        tmp = AnnData(obs=light.obs.copy())
        tmp.uns.update({k: v for k, v in light.uns.items() if k.endswith("_colors")})
        tmp.obsm[rep] = light.obsm[rep]
        sc.pp.neighbors(
            tmp,
            use_rep=rep,
            n_neighbors=min(n_neighbors, tmp.n_obs - 1),
            metric=metric,
            random_state=random_state,
        )
        sc.tl.umap(tmp, random_state=random_state)
        last = r == len(use) - 1
        for c in range(ncol):
            col = colors[c] if colors else None
            title = _rep_title(rep, titles)
            if ncol > 1 and col:
                title = f"{title}: {col}"
            sc.pl.embedding(
                tmp,
                basis="X_umap",
                color=col,
                ax=axes[r, c],
                show=False,
                size=size,
                title=title,
                legend_loc="right margin" if last else "none",
                colorbar_loc="right" if last else None,
                frameon=False,
            )
            if col is not None and f"{col}_colors" in tmp.uns:  # first panel fixes the palette
                light.uns[f"{col}_colors"] = tmp.uns[f"{col}_colors"]
    if ax is None:
        fig.tight_layout()
    return savefig_or_show("embeddings", fig, axes, show=show, save=save)


def bm_results(
    df: pd.DataFrame,
    *,
    x: str = "embedding",
    y: str | None = None,
    hue: str | None = "model",
    kind: str = "bar",
    reference: dict | None = None,
    title: str | None = None,
    ax=None,
    show: bool | None = None,
    save: bool | str | None = None,
):
    """Bar chart (mean ± sd over folds) or heatmap of a tidy benchmark DataFrame.

    Parameters
    ----------
    df
        A tidy result of :mod:`genept.bm` (one row per fold/run).
    x
        Column on the x axis (bar) or the rows (heatmap).
    y
        Metric column (default ``auc``, ``accuracy`` or ``value``, whichever exists).
    hue
        Column of the bars within a group (bar) or of the heatmap's columns; ``None``: one.
    kind
        ``"bar"`` or ``"heatmap"``.
    reference
        Papers' numbers ``{(x, hue) or x: value}`` drawn as black ticks on the bars.
    title
        Axes title (default: the metric).
    ax
        Axes to draw into (default: a new figure).
    show
        Show the figure (default ``scanpy.settings.autoshow``).
    save
        As in scanpy: ``True`` writes ``scanpy.settings.figdir / "bm_results.<format>"``;
        a string is appended to that name, its extension picks the format.

    Returns
    -------
    The :class:`~matplotlib.axes.Axes`, unless the figure was shown (then ``None``).

    Examples
    --------
    >>> res = gpt.bm.gene_property_auc(adata.varm["X_genept"], labels)  # doctest: +SKIP
    >>> gpt.pl.bm_results(res, show=False)  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    if y is None:
        y = next((m for m in ("auc", "accuracy", "value") if m in df.columns), None)
        if y is None:
            raise ValueError(f"no metric column in {list(df.columns)}; pass y=")
    for c in (x, y) + ((hue,) if hue else ()):
        if c not in df.columns:
            raise KeyError(f"{c!r} is not a column of the results ({list(df.columns)})")
    if kind not in {"bar", "heatmap"}:
        raise ValueError(f"kind must be 'bar' or 'heatmap', got {kind!r}")
    d = df.assign(_h=df[hue].astype(str) if hue else "")
    xs = list(pd.unique(d[x].astype(str)))
    hs = list(pd.unique(d["_h"]))
    g = d.assign(_x=d[x].astype(str)).groupby(["_x", "_h"])[y]
    mean = g.mean().unstack("_h").reindex(index=xs, columns=hs)
    sd = g.std().fillna(0.0).unstack("_h").reindex(index=xs, columns=hs)
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(xs) * max(1, len(hs)) ** 0.5 + 2), 3.6))
    fig = ax.figure
    if kind == "bar":
        width = 0.8 / len(hs)
        for j, h in enumerate(hs):
            pos = np.arange(len(xs)) + (j - (len(hs) - 1) / 2) * width
            ax.bar(
                pos, mean[h].to_numpy(), width, yerr=sd[h].to_numpy(), capsize=2, label=h or None
            )
            if reference:
                for i, xv in enumerate(xs):
                    ref = reference.get((xv, h), reference.get(xv) if not hue else None)
                    if ref is not None:
                        ax.hlines(ref, pos[i] - width / 2, pos[i] + width / 2, color="k", lw=2)
        ax.set_xticks(np.arange(len(xs)))
        ax.set_xticklabels(xs, rotation=30, ha="right")
        ax.set_ylabel(y)
        if hue:
            ax.legend(title=hue, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
        lo = np.nanmin(mean.to_numpy())
        if y in {"auc", "accuracy"} and lo > 0.3:
            ax.set_ylim(0.3, 1.0)
    else:
        im = ax.imshow(mean.to_numpy(), aspect="auto", cmap="viridis")
        for i in range(len(xs)):
            for j in range(len(hs)):
                v = mean.iat[i, j]
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w", fontsize=8)
        ax.set_xticks(range(len(hs)))
        ax.set_xticklabels(hs, rotation=30, ha="right")
        ax.set_yticks(range(len(xs)))
        ax.set_yticklabels(xs)
        fig.colorbar(im, ax=ax, label=y)
    ax.set_title(title or y)
    return savefig_or_show("bm_results", fig, ax, show=show, save=save)
