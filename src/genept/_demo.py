"""``genept demo``: the whole flow offline on scanpy's bundled pbmc68k_reduced."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd

__all__ = ["run_demo"]


def _say(msg: str) -> None:
    print(msg, flush=True)


def _save(ax, path: Path) -> None:
    """Write the figure of ``ax`` to ``path`` (inside the demo's folder) and close it."""
    import matplotlib.pyplot as plt

    ax.figure.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(ax.figure)


def run_demo(out: str | os.PathLike = "genept_demo", *, model: str | None = None) -> pd.DataFrame:
    """Run the demo and write its outputs to ``out``.

    Steps (all offline): load ``sc.datasets.pbmc68k_reduced()``; embed its genes with
    the default (the shipped precomputed table, see :func:`genept.tl.embed_genes`); write a coverage report
    and a UMAP of the gene embeddings; embed the cells with GenePT-w and GenePT-s (on
    ``raw``, the log-normalised expression) and draw a UMAP per representation
    coloured by cell type; annotate a held-out 20 % of cells by 10-NN on each
    representation and by scMPT fusion (expression PCA + GenePT-s), with a confusion
    matrix.

    Returns
    -------
    The metrics table (also written to ``out/metrics.tsv``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import scanpy as sc

    from . import pl, tl
    from ._utils import atomic_write_h5ad

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics: list[dict] = []

    def metric(step: str, name: str, value) -> None:
        metrics.append({"step": step, "metric": name, "value": value})

    t0 = time.perf_counter()
    adata = sc.datasets.pbmc68k_reduced()
    _say(f"[1] pbmc68k_reduced: {adata.n_obs} cells x {adata.n_vars} genes")

    t = time.perf_counter()
    tl.embed_genes(adata, source="cards", model=model)
    p = adata.uns["genept"]["params"]
    dt = time.perf_counter() - t
    _say(
        f"[2] gene embeddings ({p['model']}, {p['dim']}-d, text level {p.get('text_level', 'none')}): "
        f"{p['n_genes_matched']}/{p['n_genes_total']} genes matched in {dt:.1f} s"
    )
    cov = pd.DataFrame(
        {"match": list(p["match_counts"]), "genes": list(p["match_counts"].values())}
    )
    cov["fraction"] = (cov["genes"] / p["n_genes_total"]).round(4)
    cov.to_csv(out / "gene_coverage.tsv", sep="\t", index=False)
    unmatched = adata.var_names[~adata.var["genept_has_embedding"].to_numpy()]
    pd.Series(unmatched, name="gene").to_csv(out / "genes_without_embedding.txt", index=False)
    _say("    coverage: " + ", ".join(f"{r.match} {r.genes}" for r in cov.itertuples() if r.genes))
    metric("genes", "genes_matched", p["n_genes_matched"])
    metric("genes", "genes_total", p["n_genes_total"])
    metric("genes", "coverage", round(p["n_genes_matched"] / p["n_genes_total"], 4))
    metric("genes", "seconds", round(dt, 2))

    _save(pl.gene_umap(adata, color="gene_type", show=False), out / "gene_embedding_umap.png")
    _say(f"    figure: {out / 'gene_embedding_umap.png'}")

    _cells_and_annotation(adata, out, metric, model)

    atomic_write_h5ad(adata, out / "pbmc68k_genept.h5ad")
    metric("total", "seconds", round(time.perf_counter() - t0, 2))
    table = pd.DataFrame(metrics)
    table.to_csv(out / "metrics.tsv", sep="\t", index=False)
    _say(f"[done] outputs in {out}/ ({time.perf_counter() - t0:.1f} s)")
    _say(table.to_string(index=False))
    return table


def _cells_and_annotation(adata, out: Path, metric, model) -> None:
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.model_selection import train_test_split

    from . import pl, tl
    from ._core._keys import uns_key
    from ._utils import atomic_write_h5ad

    label = "bulk_labels"
    for method in ("w", "s"):
        t = time.perf_counter()
        # the defaults: GenePT-s sentences of each cell's top 25 highly variable genes
        # after scMPT's prefix (about 100 word pieces instead of MiniLM's full 256)
        opts = {"model": model} if method == "s" else {}
        tl.embed_cells(adata, method=method, use_raw=True, **opts)
        dt = time.perf_counter() - t
        p = adata.uns[f"genept_{method}"]["params"]
        extra = f", {p['mean_genes_per_sentence']:.0f} genes/sentence" if method == "s" else ""
        _say(f"[{3 if method == 'w' else 4}] GenePT-{method}: {p['dim']}-d in {dt:.1f} s{extra}")
        metric(f"genept_{method}", "seconds", round(dt, 2))

    reps = {"X_pca": "expression PCA", "X_genept_w": "GenePT-w", "X_genept_s": "GenePT-s"}
    axes = pl.embeddings(adata, reps=list(reps), color=[label], show=False)
    _save(axes[0, 0], out / "umap_representations.png")
    for rep in ("X_genept_w", "X_genept_s"):  # each GenePT method on its own, as users expect
        axes = pl.embeddings(adata, reps=[rep], color=[label], show=False)
        _save(axes[0, 0], out / f"umap_{uns_key(rep)}.png")
    plt.close("all")
    _say(
        f"    figures: {out / 'umap_genept_w.png'}, {out / 'umap_genept_s.png'}, "
        f"{out / 'umap_representations.png'}"
    )

    y = adata.obs[label].astype(str).to_numpy()
    tr, te = train_test_split(np.arange(adata.n_obs), test_size=0.2, stratify=y, random_state=0)
    ref, query = adata[tr].copy(), adata[te].copy()
    rows = []
    for rep, title in reps.items():
        tl.annotate_knn(query, ref, use_rep=rep, label_key=label, key_added=f"knn_{rep}")
        m = query.uns[f"knn_{rep}"]["metrics"]
        rows.append((f"10-NN {title}", m["accuracy"], m["f1_macro"]))
    t = time.perf_counter()
    # sized for a demo: one seed, one learning rate (the default ensemble and grid, and
    # the paper's grid, stay in the API)
    tl.annotate_scmpt(
        query,
        ref,
        label_key=label,
        expr_rep="X_pca",
        text_rep="X_genept_s",
        key_added="scmpt",
        n_seeds=1,
        lr_grid=(1e-3,),
    )
    m = query.uns["scmpt"]["metrics"]
    rows.append(("scMPT fusion (PCA + GenePT-s)", m["accuracy"], m["f1_macro"]))
    _say(
        f"[5] annotation of {len(te)} held-out cells ({label}; scMPT trained in "
        f"{time.perf_counter() - t:.1f} s):"
    )
    for name, acc, f1 in rows:
        _say(f"    {name:32s} accuracy {acc:.3f}  macro-F1 {f1:.3f}")
        metric("annotation", f"{name} accuracy", round(float(acc), 4))
        metric("annotation", f"{name} macro-F1", round(float(f1), 4))
    # inside `out` (issue 14 #17): pl's save= follows scanpy (figdir + name), so save here
    _save(
        pl.confusion_matrix(query, "scmpt", label_key=label, show=False),
        out / "confusion_scmpt.png",
    )
    plt.close("all")
    atomic_write_h5ad(query, out / "pbmc68k_query_annotated.h5ad")
