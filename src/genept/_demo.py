"""``genept demo``: the whole flow offline on scanpy's bundled pbmc68k_reduced."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd

__all__ = ["run_demo"]


def _say(msg: str) -> None:
    print(msg, flush=True)


def run_demo(out: str | os.PathLike = "genept_demo", *, model: str | None = None) -> pd.DataFrame:
    """Run the demo and write its outputs to ``out``.

    Steps (all offline): load ``sc.datasets.pbmc68k_reduced()``; embed its genes from
    the shipped gene cards with the packaged all-MiniLM-L6-v2; write a coverage report
    and a UMAP of the gene embeddings.

    Returns
    -------
    The metrics table (also written to ``out/metrics.tsv``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import scanpy as sc

    from . import pl, tl

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
        f"[2] gene embeddings ({p['model']}, {p['dim']}-d, text level {p['text_level']}): "
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

    pl.gene_umap(adata, color="gene_type", save=str(out / "gene_embedding_umap.png"))
    _say(f"    figure: {out / 'gene_embedding_umap.png'}")

    adata.write_h5ad(out / "pbmc68k_genept.h5ad")
    metric("total", "seconds", round(time.perf_counter() - t0, 2))
    table = pd.DataFrame(metrics)
    table.to_csv(out / "metrics.tsv", sep="\t", index=False)
    _say(f"[done] outputs in {out}/ ({time.perf_counter() - t0:.1f} s)")
    _say(table.to_string(index=False))
    return table
