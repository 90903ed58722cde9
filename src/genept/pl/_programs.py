"""Plot of gene programs: average program score per group of cells (GenePT figure 2g)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._utils import renamed_arg
from ._utils import savefig_or_show

__all__ = ["gene_programs"]


def _scale(M: np.ndarray, how: str | None) -> np.ndarray:
    if how is None:
        return M
    if how == "program":  # min-max over groups, per program (scanpy's standard_scale)
        lo = M.min(axis=1, keepdims=True)
        rng = M.max(axis=1, keepdims=True) - lo
        return np.divide(M - lo, rng, out=np.zeros_like(M), where=rng > 0)
    if how == "zscore":
        sd = M.std(axis=1, keepdims=True)
        return np.divide(M - M.mean(axis=1, keepdims=True), sd, out=np.zeros_like(M), where=sd > 0)
    raise ValueError(f"standard_scale must be 'program', 'zscore' or None, got {how!r}")


def _shrunken_means(S: np.ndarray, g: np.ndarray, cats: list) -> tuple[np.ndarray, np.ndarray]:
    """Group means of each program, shrunk towards the overall mean (empirical Bayes).

    For program ``p`` and group ``c`` with ``n_c`` cells, mean ``m_c``, within-group
    variance ``s2`` (pooled) and overall mean ``m``, the shrunken mean is
    ``m + w_c (m_c - m)`` with ``w_c = tau2 / (tau2 + s2 / n_c)``; ``tau2``, the variance
    of the true group means, is estimated by the method of moments
    (``max(0, var(m_c) - mean(s2 / n_c))``). A group's mean is trusted in proportion to
    how far its sampling noise (``s2 / n_c``) is below the real spread between groups:
    a program whose groups differ only by noise collapses to one value (``tau2 = 0``),
    and a group of 8 cells keeps less of its noisy deviation than a group of 200.
    Returns the shrunken means (programs x groups) and the weights ``w``.
    """
    n = np.array([(g == c).sum() for c in cats], dtype=float)
    means = np.stack([S[g == c].mean(axis=0) for c in cats], axis=1)  # programs x groups
    resid = np.concatenate([S[g == c] - means[:, i] for i, c in enumerate(cats)], axis=0)
    dof = max(len(S) - len(cats), 1)
    s2 = (resid**2).sum(axis=0) / dof  # pooled within-group variance per program
    overall = S.mean(axis=0)
    noise = s2[:, None] / n[None, :]
    tau2 = np.maximum(
        0.0, ((means - means.mean(axis=1, keepdims=True)) ** 2).mean(axis=1) - noise.mean(axis=1)
    )
    w = np.divide(
        tau2[:, None],
        tau2[:, None] + noise,
        out=np.zeros_like(noise),
        where=(tau2[:, None] + noise) > 0,
    )
    return overall[:, None] + w * (means - overall[:, None]), w


@renamed_arg("seed", "random_state")
def gene_programs(
    adata: AnnData,
    groupby: str,
    *,
    programs: Sequence[str] | int | None = None,
    key: str = "genept_program",
    style: str = "heatmap",
    show_members: int | bool = 6,
    standard_scale: str | None = "program",
    shrink: bool = True,
    min_cells: int = 5,
    cmap: str = "viridis",
    random_state: int = 0,
    ax=None,
    show: bool | None = None,
    save: bool | str | None = None,
):
    """Average score of each gene program per group of cells, with the programs' genes.

    GenePT figure 2(g) / B4: the mean expression of each program's genes, averaged over
    the cells of each group (cell type), after :func:`genept.tl.gene_programs`.

    Parameters
    ----------
    adata
        Data with ``obsm[f"{key}_scores"]`` and ``uns[f"{key}s"]``.
    groupby
        ``obs`` column of the groups (e.g. ``"cell_type"``).
    programs
        Program names to show, or an ``int`` ``n``: a seeded random sample of ``n`` programs
        (as the paper's 20 sampled programs). Default: all.
    key
        ``key_added`` of :func:`genept.tl.gene_programs`.
    style
        ``"heatmap"`` (programs x groups) or ``"dotplot"`` (colour: scaled mean score; size:
        fraction of the group's cells scoring above the program's overall 75th percentile,
        with a legend of dot sizes).
    show_members
        List up to this many genes of each program in its label (``True``: all,
        ``False``/``0``: none).
    standard_scale
        ``"program"``: scale each program to 0..1 across groups; ``"zscore"``; ``None``:
        raw mean scores.
    shrink
        Shrink each group's mean towards the overall mean by how reliable it is
        (empirical Bayes: weight ``tau2 / (tau2 + s2 / n)`` with ``s2`` the within-group
        variance, ``n`` the group's cells and ``tau2`` the between-group variance of the
        program). Without it, min-max scaling stretches a program whose groups differ
        only by noise to the full colour range, and the smallest group, whose mean is the
        noisiest, lights up most often. ``False``: plain means.
    min_cells
        Leave out groups with fewer cells (a warning names them). The x labels give
        each group's size.
    cmap
        Colour map.
    random_state
        Seed of the sample of ``programs`` when it is an int (``seed=`` is deprecated).
    ax
        Axes to draw into (default: a new figure).
    show
        Show the figure (default ``scanpy.settings.autoshow``).
    save
        As in scanpy: ``True`` writes ``scanpy.settings.figdir / "gene_programs.<format>"``; a
        string is appended to that name, its extension picks the format
        (``"_pbmc.pdf"`` → ``gene_programs_pbmc.pdf``).

    Returns
    -------
    The :class:`~matplotlib.axes.Axes`, unless the figure was shown (then ``None``).

    Examples
    --------
    >>> gpt.tl.gene_programs(adata, use_raw=True)  # doctest: +SKIP
    >>> gpt.pl.gene_programs(adata, "bulk_labels", save="_pbmc.png")  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    skey, ukey = f"{key}_scores", f"{key}s"
    if skey not in adata.obsm or ukey not in adata.uns:
        raise KeyError(f"no gene programs under {key!r}; run gpt.tl.gene_programs(adata) first")
    if groupby not in adata.obs:
        raise KeyError(
            f"groupby={groupby!r} is not a column of adata.obs ({list(adata.obs.columns)})"
        )
    if style not in {"heatmap", "dotplot"}:
        raise ValueError(f"style must be 'heatmap' or 'dotplot', got {style!r}")
    scores = adata.obsm[skey]
    if not isinstance(scores, pd.DataFrame):
        names = list(adata.uns[ukey]["members"].keys())
        scores = pd.DataFrame(np.asarray(scores), index=adata.obs_names, columns=names)
    members = adata.uns[ukey]["members"]
    names = list(scores.columns)
    if not names:
        raise ValueError(
            "no gene program was found; lower the threshold/min_size of gpt.tl.gene_programs"
        )
    if isinstance(programs, int | np.integer) and not isinstance(programs, bool):
        k = min(int(programs), len(names))
        pick = np.sort(np.random.default_rng(random_state).choice(len(names), k, replace=False))
        names = [names[i] for i in pick]
    elif programs is not None:
        unknown = [p for p in programs if p not in scores.columns]
        if unknown:
            raise KeyError(
                f"unknown programs {unknown[:5]}; available: {list(scores.columns)[:10]}..."
            )
        names = list(programs)
    groups = adata.obs[groupby]
    groups = (
        groups.astype("category") if not isinstance(groups.dtype, pd.CategoricalDtype) else groups
    )
    sizes = groups.value_counts()
    small = [str(c) for c in groups.cat.categories if 0 < sizes.get(c, 0) < min_cells]
    if small:
        from scanpy import logging as logg

        logg.warning(
            f"gene_programs: groups with fewer than min_cells={min_cells} cells left out: {small}"
        )
    cats = [c for c in groups.cat.categories if sizes.get(c, 0) >= max(min_cells, 1)]
    if not cats:
        raise ValueError(
            f"no group of {groupby!r} has min_cells={min_cells} cells; lower min_cells"
        )
    keep = groups.isin(cats).to_numpy()
    S = scores[names].to_numpy(dtype=float)[keep]
    g = groups.to_numpy()[keep]
    if shrink:
        mean, _ = _shrunken_means(S, g, cats)
    else:
        mean = np.stack([S[g == c].mean(axis=0) for c in cats], axis=1)  # programs x groups
    M = _scale(mean, standard_scale)

    def label(p):
        mem = list(members[p])
        n = len(mem) if show_members is True else int(show_members or 0)
        if n <= 0:
            return f"{p} ({len(mem)})"
        more = ", …" if len(mem) > n else ""
        return f"{p} ({len(mem)}): {', '.join(mem[:n])}{more}"

    labels = [label(p) for p in names]
    if ax is None:
        w = max(4.0, 0.45 * len(cats) + 3.5) + (1.6 if style == "dotplot" else 0.0)
        h = max(3.0, 0.32 * len(names) + 1.5)
        fig, ax = plt.subplots(figsize=(w, h))
    fig = ax.figure
    cbar_label = {
        "program": "scaled mean score",
        "zscore": "z-scored mean score",
        None: "mean score",
    }[standard_scale]
    if style == "heatmap":
        im = ax.imshow(M, aspect="auto", cmap=cmap, interpolation="nearest")
    else:
        q = np.quantile(S, 0.75, axis=0)
        frac = np.stack([(S[g == c] > q).mean(axis=0) for c in cats], axis=1)
        yy, xx = np.mgrid[0 : len(names), 0 : len(cats)]

        def area(f):
            return 15 + 235 * np.asarray(f)

        im = ax.scatter(
            xx.ravel(),
            yy.ravel(),
            c=M.ravel(),
            s=area(frac.ravel()),
            cmap=cmap,
            edgecolors="0.3",
            linewidths=0.3,
        )
        ax.set_xlim(-0.6, len(cats) - 0.4)
        ax.set_ylim(len(names) - 0.4, -0.6)
        ax.set_axisbelow(True)
        ax.grid(True, color="0.92")
        handles = [
            ax.scatter([], [], s=area(f), color="0.5", edgecolors="0.3", linewidths=0.3)
            for f in (0.25, 0.5, 0.75, 1.0)
        ]
        ax.legend(
            handles,
            ["25%", "50%", "75%", "100%"],
            title="cells above the\n75th percentile",
            loc="upper left",
            bbox_to_anchor=(1.12, 1.02),
            frameon=False,
            labelspacing=1.2,
            borderpad=0.8,
            fontsize=8,
            title_fontsize=8,
        )
    ax.set_xticks(range(len(cats)))
    ax.set_xticklabels([f"{c} ({int(sizes[c])})" for c in cats], rotation=90)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel(groupby)
    ax.set_title("gene programs" + (" (shrunken group means)" if shrink else ""))
    if style == "dotplot":  # colour bar, then the size legend, right of the dots
        cax = ax.inset_axes((1.02, 0.0, 0.03, 1.0))
        fig.colorbar(im, cax=cax, label=cbar_label)
    else:
        fig.colorbar(im, ax=ax, label=cbar_label, fraction=0.04, pad=0.02)
    return savefig_or_show("gene_programs", fig, ax, show=show, save=save)
