"""Plots of gene embeddings."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from .._utils import renamed_arg
from ._utils import savefig_or_show

__all__ = ["gene_umap"]


@renamed_arg("key", "gene_key")
def gene_umap(
    adata: AnnData,
    *,
    gene_key: str = "X_genept",
    color: str | None = "gene_type",
    n_neighbors: int = 15,
    random_state: int = 0,
    title: str | None = None,
    ax=None,
    show: bool | None = None,
    save: bool | str | None = None,
):
    """UMAP of the gene embeddings in ``adata.varm[gene_key]``, one dot per gene.

    Parameters
    ----------
    adata
        Data with gene embeddings (see :func:`genept.tl.embed_genes`).
    gene_key
        ``varm`` key of the gene embeddings (as in :func:`genept.tl.embed_cells`;
        ``key=`` is deprecated).
    color
        A column of ``adata.var``, or ``"gene_type"`` (looked up in the shipped gene
        cards when ``var`` has no such column). ``None``: one colour.
    n_neighbors, random_state
        Passed to :func:`scanpy.pp.neighbors` / :func:`scanpy.tl.umap`.
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
    >>> gpt.pl.gene_umap(adata, color="gene_type")  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt
    import scanpy as sc

    if gene_key not in adata.varm:
        raise KeyError(
            f"adata.varm has no {gene_key!r}; run gpt.tl.embed_genes(adata) first "
            f"(varm keys: {list(adata.varm.keys())})"
        )
    E = np.asarray(adata.varm[gene_key])
    has = np.abs(E).sum(axis=1) > 0
    if has.sum() < 3:
        raise ValueError(f"only {int(has.sum())} genes have an embedding; need at least 3")
    g = AnnData(E[has].astype(np.float32), obs=pd.DataFrame(index=adata.var_names[has].astype(str)))
    labels = None
    if color is not None:
        if color in adata.var.columns:
            labels = adata.var[color].to_numpy()[has]
        elif color == "gene_type":
            from ..datasets import gene_cards

            cards = gene_cards("human")
            cards = cards[~cards.index.duplicated(keep="first")]
            sym_col = "genept_gene" if "genept_gene" in adata.var else None
            syms = (adata.var[sym_col].astype(str) if sym_col else adata.var_names.to_series()).to_numpy()[has]
            labels = cards["gene_type"].reindex(syms).fillna("unknown").to_numpy()
        else:
            raise KeyError(f"color={color!r} is not a column of adata.var")
    sc.pp.neighbors(g, use_rep="X", n_neighbors=min(n_neighbors, g.n_obs - 1), metric="cosine",
                    random_state=random_state)
    sc.tl.umap(g, random_state=random_state)
    xy = g.obsm["X_umap"]
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 5))
    fig = ax.figure
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=6, linewidths=0)
    else:
        cats = pd.Categorical(labels.astype(str))
        cmap = plt.get_cmap("tab10" if len(cats.categories) <= 10 else "tab20")
        for i, c in enumerate(cats.categories):
            sel = cats == c
            ax.scatter(xy[sel, 0], xy[sel, 1], s=6, linewidths=0, color=cmap(i % cmap.N),
                       label=f"{c} ({int(sel.sum())})")
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, markerscale=2,
                  title=color)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("UMAP1")
    ax.set_ylabel("UMAP2")
    ax.set_title(title or f"{int(has.sum())} gene embeddings ({gene_key})")
    return savefig_or_show("gene_umap", fig, ax, show=show, save=save)
