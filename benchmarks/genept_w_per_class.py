"""Where GenePT-w loses to its random-vector control: 10-NN recall per cell type.

GenePT-w is ``X @ E``: two genes whose texts are alike get alike vectors, so the cells
that differ by such genes move together. For each real labelled dataset of
``benchmarks/real_datasets.py`` (prepared as ``annotation_real.py`` does) this prints
the cosine 10-NN recall of every label (5-fold stratified cross-validation over all
cells) for PCA, GenePT-w (defaults) and GenePT-w from Gaussian random gene vectors,
then the text cosine of the default gene vectors for marker pairs of sibling types
(CD4 / CD8 T cells, ...) next to an unrelated pair::

    python benchmarks/real_datasets.py --fetch          # once
    python benchmarks/genept_w_per_class.py             # about a minute on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import normalize

import genept as gpt

sys.path.insert(0, str(Path(__file__).parent))
import annotation_real
import real_datasets

PAIRS = [("CD8A", "CD4"), ("CD8A", "CD8B"), ("CD4", "FOXP3"), ("CD79A", "CD3E"), ("CD8A", "GAPDH")]


def recall_per_label(Z: np.ndarray, y: np.ndarray, seed: int = 0) -> pd.Series:
    """Cosine 10-NN recall of each label, 5-fold stratified cross-validation."""
    Z = normalize(np.asarray(Z, dtype=np.float64))
    pred = np.empty(y.size, dtype=object)
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=seed).split(Z, y):
        pred[te] = KNeighborsClassifier(10).fit(Z[tr], y[tr]).predict(Z[te])
    hit = pd.Series(pred == y)
    return pd.concat([hit.groupby(y).mean(), pd.Series({"(all cells)": hit.mean()})])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(real_datasets.DATASETS))
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    for name in args.datasets:
        info = real_datasets.DATASETS[name]
        a = real_datasets.load(name)
        a.obs[annotation_real.LABEL] = a.obs[info["label_key"]]
        a = annotation_real.prepare(a, info["x_kind"])
        gpt.tl.embed_genes(a, show_progress=False)
        gpt.tl.embed_cells(a, method="w", key_added="X_w", show_progress=False)
        E = np.asarray(a.varm["X_genept"])
        R = np.random.default_rng(0).standard_normal(E.shape).astype(np.float32)
        R[np.abs(E).sum(1) == 0] = 0
        a.varm["X_random"] = R
        gpt.tl.embed_cells(
            a, method="w", gene_key="X_random", key_added="X_w_random", show_progress=False
        )
        y = a.obs[annotation_real.LABEL].astype(str).to_numpy()
        table = pd.DataFrame(
            {
                "cells": pd.Series(y).value_counts(),
                "PCA": recall_per_label(a.obsm["X_pca"], y),
                "GenePT-w": recall_per_label(a.obsm["X_w"], y),
                "random vectors": recall_per_label(a.obsm["X_w_random"], y),
            }
        )
        table["text - random"] = table["GenePT-w"] - table["random vectors"]
        print(f"\n## {name}: 10-NN recall per label (5-fold)\n")
        print(table.round(2).to_string())
        genes = list(a.var_names)
        cos = []
        for g, h in PAIRS:
            if g in genes and h in genes:
                u, v = E[genes.index(g)], E[genes.index(h)]
                cos.append(f"{g}-{h} {u @ v / (np.linalg.norm(u) * np.linalg.norm(v)):.2f}")
        print("\ntext cosine of the default gene vectors (before whitening): " + ", ".join(cos))


if __name__ == "__main__":
    main()
