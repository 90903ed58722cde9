"""Plots of gene embeddings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._utils import renamed_arg
from ._utils import savefig_or_show

__all__ = ["gene_umap"]


#: words for the clusters of genes outside any program
_NO_PROGRAM = "no program"


def _leiden(g: AnnData, resolution: float, random_state: int) -> np.ndarray:
    """Leiden clusters of the gene kNN graph in ``g.obsp["connectivities"]``."""
    import igraph as ig
    import leidenalg
    from scipy import sparse

    A = sparse.triu(sparse.csr_matrix(g.obsp["connectivities"]), k=1).tocoo()
    graph = ig.Graph(n=g.n_obs, edges=list(zip(A.row.tolist(), A.col.tolist(), strict=True)))
    part = leidenalg.find_partition(
        graph,
        leidenalg.RBConfigurationVertexPartition,
        weights=A.data.tolist(),
        resolution_parameter=resolution,
        seed=random_state,
    )
    labels = np.asarray(part.membership)
    # clusters numbered by size, largest first
    order = np.argsort(-np.bincount(labels), kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[labels]


def _spread_labels(
    xy: np.ndarray, texts: list[str], span: np.ndarray, n_iter: int = 50
) -> np.ndarray:
    """Nudge label positions apart vertically until their (approximate) boxes do not overlap.

    Boxes are estimated in data units from the axes' span: 1.3 % of the x span per
    character, 4.5 % of the y span per line.
    """
    pos = np.asarray(xy, dtype=float).copy()
    w = np.array([0.013 * span[0] * len(t) for t in texts])
    h = 0.045 * span[1]
    for _ in range(n_iter):
        moved = False
        for i in range(len(pos)):
            for j in range(i + 1, len(pos)):
                dx, dy = pos[j] - pos[i]
                if abs(dx) < (w[i] + w[j]) / 2 and abs(dy) < h:
                    push = (h - abs(dy)) / 2 + 1e-9
                    sign = 1.0 if dy >= 0 else -1.0
                    pos[i, 1] -= sign * push
                    pos[j, 1] += sign * push
                    moved = True
        if not moved:
            break
    return pos


def _is_continuous(col: pd.Series | None) -> bool:
    """A numeric ``var`` column that is not a category or a boolean."""
    if col is None or isinstance(col.dtype, pd.CategoricalDtype):
        return False
    return pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)


def _central_genes(E: np.ndarray, names: np.ndarray, sel: np.ndarray, k: int) -> list[str]:
    """The ``k`` genes of ``sel`` closest (cosine) to their mean embedding."""
    V = E[sel]
    V = V / np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-12)
    centre = V.mean(axis=0)
    return list(names[sel][np.argsort(-(V @ centre), kind="stable")[:k]])


@renamed_arg("key", "gene_key")
def gene_umap(
    adata: AnnData,
    *,
    gene_key: str = "X_genept",
    color: str | None = "program",
    genes: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
    program_key: str = "genept_program",
    n_labels: int = 3,
    max_labelled: int = 10,
    resolution: float = 1.0,
    n_neighbors: int = 15,
    random_state: int = 0,
    size: float = 8.0,
    title: str | None = None,
    ax=None,
    show: bool | None = None,
    save: bool | str | None = None,
):
    """UMAP of the gene embeddings in ``adata.varm[gene_key]``, one dot per gene.

    By default genes are coloured by **gene program** and the largest programs are
    labelled on the plot with the names of a few of their most central genes (closest
    to the program's mean embedding): the programs of :func:`genept.tl.gene_programs`
    when ``adata.var[program_key]`` holds them, otherwise Leiden clusters of the
    gene-embedding kNN graph that the UMAP is built on. ``genes=`` highlights gene sets
    of your own instead. The view holds the central 99 % of the genes on each axis; the
    x label counts the few outlying genes left outside it.

    Parameters
    ----------
    adata
        Data with gene embeddings (see :func:`genept.tl.embed_genes`).
    gene_key
        ``varm`` key of the gene embeddings (as in :func:`genept.tl.embed_cells`;
        ``key=`` is deprecated).
    color
        ``"program"`` (default, see above), a column of ``adata.var``, or
        ``"gene_type"`` (looked up in the shipped gene cards when ``var`` has no such
        column). A numeric column is drawn on a colour scale, any other by category;
        genes with a missing value are light grey (``"NA"``). ``None``: one colour.
        Ignored when ``genes`` is given.
    genes
        Gene sets to highlight: ``{"T cell": ["CD3E", ...], ...}`` or one list. Their
        genes are coloured by set and named on the plot; all other genes are grey.
        Genes without an embedding or not in ``adata`` are left out (a warning names
        them).
    program_key
        ``var`` column of :func:`genept.tl.gene_programs` (its ``key_added``).
    n_labels
        Gene names written next to each labelled program.
    max_labelled
        Label at most this many programs (the largest; ``0``: none).
    resolution
        Leiden resolution of the clusters when ``var[program_key]`` is absent.
    n_neighbors, random_state
        Passed to :func:`scanpy.pp.neighbors` / :func:`scanpy.tl.umap` (and Leiden).
    size
        Dot size (points²).
    title
        Axes title.
    ax
        Draw into this Axes.
    show
        Show the figure (default ``scanpy.settings.autoshow``).
    save
        As in scanpy: ``True`` writes ``scanpy.settings.figdir / "gene_umap.<format>"``; a
        string is appended to that name, its extension picks the format
        (``"_pbmc.pdf"`` → ``gene_umap_pbmc.pdf``).

    Returns
    -------
    The :class:`~matplotlib.axes.Axes`, unless the figure was shown (then ``None``).

    Examples
    --------
    >>> gpt.tl.embed_genes(adata)  # doctest: +SKIP
    >>> gpt.pl.gene_umap(adata, show=False)  # coloured by gene program  # doctest: +SKIP
    >>> gpt.pl.gene_umap(adata, genes={"T cell": ["CD3D", "CD3E"], "B cell": ["MS4A1"]})  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt
    import scanpy as sc
    from scanpy import logging as logg

    if gene_key not in adata.varm:
        raise KeyError(
            f"adata.varm has no {gene_key!r}; run gpt.tl.embed_genes(adata) first "
            f"(varm keys: {list(adata.varm.keys())})"
        )
    E = np.asarray(adata.varm[gene_key], dtype=np.float32)
    has = np.abs(E).sum(axis=1) > 0
    if has.sum() < 3:
        raise ValueError(f"only {int(has.sum())} genes have an embedding; need at least 3")
    names = adata.var_names[has].astype(str).to_numpy()
    g = AnnData(E[has], obs=pd.DataFrame(index=names))
    sc.pp.neighbors(
        g,
        use_rep="X",
        n_neighbors=min(n_neighbors, g.n_obs - 1),
        metric="cosine",
        random_state=random_state,
    )
    sc.tl.umap(g, random_state=random_state)
    xy = g.obsm["X_umap"]
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.5, 5))
    fig = ax.figure
    texts: list[tuple[float, float, str]] = []  # (x, y, text) written on the plot
    if genes is not None:
        sets = {"genes": list(genes)} if not isinstance(genes, Mapping) else dict(genes)
        where = {n: i for i, n in enumerate(names)}
        ax.scatter(xy[:, 0], xy[:, 1], s=size * 0.6, linewidths=0, color="0.85", zorder=1)
        cmap = plt.get_cmap("tab10")
        missing = []
        for i, (set_name, members) in enumerate(sets.items()):
            idx = [where[m] for m in members if m in where]
            missing += [m for m in members if m not in where]
            ax.scatter(
                xy[idx, 0],
                xy[idx, 1],
                s=size * 4,
                color=cmap(i % 10),
                edgecolors="k",
                linewidths=0.3,
                label=f"{set_name} ({len(idx)})",
                zorder=3,
            )
            texts += [(xy[j, 0], xy[j, 1], names[j]) for j in idx] if len(idx) <= 30 else []
        if missing:
            logg.warning(
                f"gene_umap: {len(missing)} genes have no embedding or are not in adata: "
                f"{missing[:10]}"
            )
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, title="gene set")
        if texts:
            span = np.ptp(xy, axis=0)
            anchor = np.array([(x, y + 0.025 * span[1]) for x, y, _ in texts])
            pos = _spread_labels(anchor, [t for _, _, t in texts], span * [1.0, 0.8])
            for (x, y, t), (px, py) in zip(texts, pos, strict=True):
                ax.annotate(
                    t,
                    (x, y),
                    xytext=(px, py),
                    fontsize=8,
                    ha="center",
                    va="center",
                    zorder=4,
                    arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.5},
                )
        default_title = f"{int(has.sum())} gene embeddings: gene sets"
    elif color == "program":
        if program_key in adata.var.columns:
            lab = adata.var[program_key].astype("string").fillna("").to_numpy()[has]
            lab = np.where(lab == "", _NO_PROGRAM, lab).astype(object)
            source = "gene programs"
        else:
            lab = np.array([f"C{k}" for k in _leiden(g, resolution, random_state)], dtype=object)
            source = "clusters of the gene-embedding graph"
        counts = pd.Series(lab).value_counts(sort=True)
        progs = [p for p in counts.index if p != _NO_PROGRAM]
        palette = sc.pl.palettes.default_20 if len(progs) <= 20 else sc.pl.palettes.default_102
        if _NO_PROGRAM in counts.index:
            sel = lab == _NO_PROGRAM
            ax.scatter(xy[sel, 0], xy[sel, 1], s=size * 0.6, linewidths=0, color="0.85", zorder=1)
        for i, p in enumerate(progs):
            sel = lab == p
            ax.scatter(
                xy[sel, 0],
                xy[sel, 1],
                s=size,
                linewidths=0,
                color=palette[i % len(palette)],
                zorder=2,
            )
            if i < max_labelled and sel.sum() >= 3:
                central = _central_genes(E[has], names, sel, n_labels)
                x, y = np.median(xy[sel], axis=0)
                texts.append((x, y, ", ".join(central)))
        if texts:
            span = np.ptp(xy, axis=0)
            anchor = np.array([(x, y) for x, y, _ in texts])
            pos = _spread_labels(anchor, [t for _, _, t in texts], span)
            for (x, y, t), (px, py) in zip(texts, pos, strict=True):
                ax.annotate(
                    t,
                    (x, y),
                    xytext=(px, py),
                    fontsize=7.5,
                    ha="center",
                    va="center",
                    zorder=4,
                    arrowprops=None
                    if abs(py - y) < 0.03 * span[1]
                    else {"arrowstyle": "-", "color": "0.4", "lw": 0.6},
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
                )
        default_title = f"{int(has.sum())} gene embeddings, {len(progs)} {source}"
    else:
        labels = None
        if color is not None:
            if color in adata.var.columns:
                labels = adata.var[color].to_numpy()[has]
            elif color == "gene_type":
                from ..datasets import gene_cards

                cards = gene_cards("human")
                cards = cards[~cards.index.duplicated(keep="first")]
                sym_col = "genept_gene" if "genept_gene" in adata.var else None
                syms = (
                    adata.var[sym_col].astype(str) if sym_col else adata.var_names.to_series()
                ).to_numpy()[has]
                labels = cards["gene_type"].reindex(syms).fillna("unknown").to_numpy()
            else:
                raise KeyError(
                    f"color={color!r} is not a column of adata.var; use 'program', "
                    f"'gene_type' or one of {list(adata.var.columns)}"
                )
        missing = pd.isna(labels) if labels is not None else None
        if labels is None:
            ax.scatter(xy[:, 0], xy[:, 1], s=size, linewidths=0)
        elif _is_continuous(adata.var[color] if color in adata.var.columns else None):
            # a numeric column (e.g. a score per gene): one colour scale, as scanpy does
            values = pd.to_numeric(pd.Series(labels), errors="coerce").to_numpy(float)
            if missing.any():
                ax.scatter(*xy[missing].T, s=size, linewidths=0, color="lightgray")
            pts = ax.scatter(*xy[~missing].T, c=values[~missing], s=size, linewidths=0)
            ax.figure.colorbar(pts, ax=ax, label=color, shrink=0.8)
        else:
            # missing values are their own grey "NA" group (not a category "nan")
            cats = pd.Categorical(np.where(missing, None, labels.astype(str)))
            cmap = plt.get_cmap("tab10" if len(cats.categories) <= 10 else "tab20")
            groups = [(c, cats == c, cmap(i % cmap.N)) for i, c in enumerate(cats.categories)]
            if missing.any():
                groups.append(("NA", np.asarray(missing, bool), "lightgray"))
            for c, sel, col in groups:
                ax.scatter(
                    xy[sel, 0],
                    xy[sel, 1],
                    s=size,
                    linewidths=0,
                    color=col,
                    label=f"{c} ({int(sel.sum())})",
                )
            ax.legend(
                loc="center left",
                bbox_to_anchor=(1.0, 0.5),
                frameon=False,
                markerscale=2,
                title=color,
            )
        default_title = f"{int(has.sum())} gene embeddings"
    # a few far-away genes (isolated in the kNN graph) would shrink the rest to a corner:
    # the view holds the central 99 % of genes on each axis, with a margin
    lo, hi = np.quantile(xy, 0.005, axis=0), np.quantile(xy, 0.995, axis=0)
    pad = 0.08 * (hi - lo)
    outside = int((((xy < lo - pad) | (xy > hi + pad)).any(axis=1)).sum())
    if outside:
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("UMAP1" + (f" ({outside} outlying genes outside the view)" if outside else ""))
    ax.set_ylabel("UMAP2")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title(title or default_title)
    return savefig_or_show("gene_umap", fig, ax, show=show, save=save)
