"""Benchmark: why pbmc68k cells get their label -- IG and LIME over GenePT-s cell sentences.

scMPT section 4.3 (tables 3-4) on ``sc.datasets.pbmc68k_reduced()``: GenePT-s of the
log-normalised ``.raw`` (MiniLM, the packaged default), the MLP probe of
:func:`genept.tl.annotate_mlp` (same settings, trained on an 80% split stratified by
``bulk_labels``, ``random_state=0``), then :func:`genept.tl.explain_annotation` with
integrated gradients and LIME on ``--n-cells`` cells per true type (``groupby=bulk_labels``,
each cell explained for its true class), and :func:`genept.bm.marker_recovery` of the top
10 genes against PanglaoDB (and CellMarker 2.0) markers of the matching cell types
(:data:`genept.bm.PBMC68K_MARKER_TYPES`). Needs ``../shared/data/markers`` (or
``--markers``); writes the tables and the figure under ``benchmarks/out/explain/``::

    python benchmarks/explain_pbmc68k.py --n-cells 8            # both methods
    python benchmarks/explain_pbmc68k.py --methods ig --n-cells 8   # one method (run two in parallel)
    python benchmarks/explain_pbmc68k.py --report-only          # tables + figure from saved results
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import torch

import genept as gpt
from genept.models import ScMPTModel, ScMPTParams

LABEL = "bulk_labels"
OUT = Path(__file__).parent / "out" / "explain"
MARKERS = Path(__file__).resolve().parents[2] / "shared" / "data" / "markers"


def prepare(out: Path) -> tuple[ad.AnnData, ScMPTModel]:
    h5 = out / "pbmc68k_genept_s_mlp.h5ad"
    folder = out / "mlp_model"
    if h5.exists() and (folder / "weights.pt").exists():
        return ad.read_h5ad(h5), ScMPTModel.load(folder)
    adata = sc.datasets.pbmc68k_reduced()
    adata.uns.pop("rank_genes_groups", None)
    t = time.perf_counter()
    gpt.tl.embed_cells(adata, method="s", use_raw=True)
    print(f"embed_cells(method='s'): {time.perf_counter() - t:.1f} s")
    from sklearn.model_selection import train_test_split

    train, _ = train_test_split(
        adata.obs_names, test_size=0.2, stratify=adata.obs[LABEL], random_state=0
    )
    ref = adata[train].copy()
    # the MLP probe of annotate_mlp (defaults), kept as a model to explain
    p = ScMPTParams(
        hidden=(256,), lr_grid=(1e-3,), epochs_grid=(200,), batch_size_grid=(64,),
        decay_grid=(1.0,), weight_decay=1e-4, val_size=0.1, n_seeds=1,
        early_stopping=True, patience=10, standardize=True, random_state=0, device="cpu",
    )  # fmt: skip
    t = time.perf_counter()
    model = ScMPTModel.fit(ref, label_key=LABEL, reps=["X_genept_s"], params=p)
    print(f"MLP probe training: {time.perf_counter() - t:.1f} s")
    model.save(folder)
    gpt.tl.annotate_scmpt(adata, model=folder, key_added="genept_mlp", device="cpu")
    test = ~adata.obs_names.isin(train)
    acc = float(
        (adata.obs["genept_mlp"][test].astype(str) == adata.obs[LABEL][test].astype(str)).mean()
    )
    print(f"MLP probe test accuracy: {acc:.3f}")
    adata.uns["genept_mlp"]["params"]["saved_to"] = str(folder)
    adata.write_h5ad(h5)
    return adata, model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", nargs="+", default=["ig", "lime"])
    ap.add_argument("--n-cells", type=int, default=8)
    ap.add_argument("--n-steps", type=int, default=20)
    ap.add_argument("--n-samples", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--groups", nargs="+", help="bulk_labels to explain (default: all)")
    ap.add_argument("--markers", default=str(MARKERS))
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)
    gpt.settings.progress = False
    OUT.mkdir(parents=True, exist_ok=True)
    adata, model = prepare(OUT)
    times = {}
    if not args.report_only:
        for m in args.methods:
            t = time.perf_counter()
            gpt.tl.explain_annotation(
                adata, "genept_mlp", method=m, model=model, groupby=LABEL,
                groups=args.groups, n_cells=args.n_cells, n_steps=args.n_steps,
                n_samples=args.n_samples,
                random_state=0,
            )  # fmt: skip
            times[m] = time.perf_counter() - t
            n = len(adata.uns["genept_mlp_attributions_params"][m]["cells"])
            print(
                f"explain_annotation(method={m!r}): {times[m]:.1f} s for {n} cells "
                f"({times[m] / n:.2f} s/cell, {args.threads} thread)"
            )
            df = adata.uns["genept_mlp_attributions"]
            df[df["method"] == m].to_csv(OUT / f"attributions_{m}.csv", index=False)
            p = adata.uns["genept_mlp_attributions_params"][m]
            extra = {"seconds": times[m], "n_cells": n}
            if m == "ig":
                err = np.abs(np.asarray(p["completeness_error"]))
                extra["completeness_abs_error_median"] = float(np.median(err))
                extra["completeness_abs_error_max"] = float(err.max())
                print(
                    f"  IG completeness |error|: median {np.median(err):.2g}, max {err.max():.2g}"
                )
            (OUT / f"params_{m}.json").write_text(json.dumps({**p, **extra}, indent=1, default=str))
    # report from the saved per-method tables
    tabs = [pd.read_csv(OUT / f"attributions_{m}.csv") for m in ("ig", "lime")
            if (OUT / f"attributions_{m}.csv").exists()]  # fmt: skip
    if not tabs:
        return
    table = pd.concat(tabs, ignore_index=True)
    adata.uns["genept_mlp_attributions"] = table
    mdir = Path(args.markers)
    if not (mdir / "PanglaoDB_markers_27_Mar_2020.tsv").exists():
        print(f"no marker tables in {mdir}; skipping marker recovery")
        return
    panglao = mdir / "PanglaoDB_markers_27_Mar_2020.tsv"
    blood = gpt.bm.cellmarker_markers(
        mdir / "CellMarker2_Human_Aug.csv", tissue=["Blood", "Peripheral blood"]
    )
    well = ["CD14+ Monocyte", "CD19+ B", "CD56+ NK", "Dendritic", "CD34+", "CD8+ Cytotoxic T"]
    sets = {
        "PanglaoDB": gpt.bm.marker_sets(panglao, groups=gpt.bm.PBMC68K_MARKER_TYPES),
        "PanglaoDB + CellMarker 2.0 (blood)": gpt.bm.marker_sets(
            panglao, blood, groups=gpt.bm.PBMC68K_MARKER_TYPES
        ),
    }
    for name, markers in sets.items():
        res = gpt.bm.marker_recovery(table, markers, k=10)
        tag = "panglao" if name == "PanglaoDB" else "panglao_cellmarker"
        res.to_csv(OUT / f"marker_recovery_{tag}.csv", index=False)
        cols = [c for c in res.columns if not c.endswith("_top")]
        print(f"\n## markers: {name}")
        with pd.option_context(
            "display.width",
            250,
            "display.max_columns",
            30,
            "display.max_colwidth",
            50,
            "display.precision",
            3,
        ):
            print(res[cols].to_string(index=False))
        sub = res[res["group"].isin(well)]
        if {"ig_n_markers", "lime_n_markers"} <= set(res.columns):
            both2 = int(((sub["ig_n_markers"] >= 2) & (sub["lime_n_markers"] >= 2)).sum())
            print(
                f"well-named types {well}: >= 2 markers in the top 10 by both methods: "
                f"{both2}/{len(sub)}; mean markers IG {sub['ig_n_markers'].mean():.2f}, "
                f"LIME {sub['lime_n_markers'].mean():.2f}, random {sub['random_expected'].mean():.2f}"
            )
    markers = sets["PanglaoDB"]
    ax = gpt.pl.attributions(
        adata, "genept_mlp_attributions", markers=markers, n_genes=10, show=False
    )
    fig = np.ravel(ax)[0].figure
    fig.savefig(OUT / "attributions_pbmc68k.png", dpi=110, bbox_inches="tight")
    print(f"figure: {OUT / 'attributions_pbmc68k.png'}")


if __name__ == "__main__":
    main()
