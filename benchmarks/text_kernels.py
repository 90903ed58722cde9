"""Benchmark: can a text-derived gene kernel beat the expression's own geometry in GenePT-w?

GenePT-w is ``X @ E``: the cosine between two cells is their expression seen through the
gene kernel ``K = E Eᵀ``. This script scores, with cosine 10-NN (mean of ``--splits``
stratified 80/20 splits) on the highly variable genes of each real labelled dataset:

* ``identity``: the log-normalised expression itself (``K = I``), and its PCA;
* ``GenePT-w``: the defaults (shipped LSA gene vectors, whitened), and Gaussian random
  gene vectors of the same size (``K ≈ I``, the control);
* ``TF-IDF``: ``X @ T`` with ``T`` the unit TF-IDF vectors of the gene cards (the texts
  of the default table; ``K`` = 1 on the diagonal, text cosine off it), as is and with
  the mean gene vector removed;
* ``I + b S_k``: the identity plus ``b`` times the k-nearest-neighbour graph of the
  genes' text cosines (``X @ (I + b S_k)``), for k in {5, 20} and b in {0.5, 1, 2};

and each text kernel again with its rows shuffled among the genes that have a card
(the same spectrum, no gene identity). Then text kept only where the data agree:

* ``I + b C_5`` (b in {0.5, 1}): the 5-nearest-neighbour graph of the genes' positive
  expression correlations over the cells (co-expression smoothing, no text);
* ``I + b (S ⊙ C)_5``: the same graph of the product of the default gene vectors'
  cosine (the vectors as shipped, not whitened; clipped at 0) and that correlation: two
  genes are smoothed together only where their texts and their expression agree; and
  the control, with Gaussian random gene vectors.

::

    python benchmarks/real_datasets.py --fetch        # once
    python benchmarks/text_kernels.py                 # a few minutes on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.preprocessing import normalize

import genept as gpt
from genept._gene_sources import _cards
from genept.datasets._card_variants import card_nosym_text
from genept.datasets._lsa import LSA_PARAMS, _vectorizer

sys.path.insert(0, str(Path(__file__).parent))
import annotation_real
import real_datasets
from genept_s_variants import knn_accuracy


def knn_graph(K0: np.ndarray, k: int, has: np.ndarray) -> np.ndarray:
    """Symmetrised k-NN graph of a gene-gene similarity (zero diagonal), genes with a card."""
    S = np.zeros_like(K0)
    nn = np.argsort(-K0, axis=1)[:, :k]
    r = np.repeat(np.arange(len(K0)), k)
    S[r, nn.ravel()] = K0[r, nn.ravel()]
    S = np.maximum(S, S.T)
    S[~has] = 0
    S[:, ~has] = 0
    return S


def kernels(a, vectorizer, seed: int = 0) -> dict[str, np.ndarray]:
    """Every representation of the module docstring for AnnData ``a`` (HVGs in var)."""
    hv = a.var["highly_variable"].to_numpy()
    X = a.X[:, hv]
    X = X.toarray() if sparse.issparse(X) else np.asarray(X)
    genes = list(a.var_names[hv])
    gpt.tl.embed_genes(a, show_progress=False)
    gpt.tl.embed_cells(a, method="w", key_added="X_w", show_progress=False)
    E = np.asarray(a.varm["X_genept"])
    R = np.random.default_rng(seed).standard_normal(E.shape).astype(np.float32)
    R[np.abs(E).sum(1) == 0] = 0
    a.varm["X_random"] = R
    gpt.tl.embed_cells(a, method="w", gene_key="X_random", key_added="X_wr", show_progress=False)
    out = {
        "identity (expression)": X,
        "PCA (50)": a.obsm["X_pca"],
        "GenePT-w (defaults)": a.obsm["X_w"],
        "GenePT-w, random vectors": a.obsm["X_wr"],
    }
    text = card_nosym_text(_cards(), genes)
    has = text.notna().to_numpy()
    T = normalize(vectorizer.transform(text.fillna("").str.replace("\n", " ").tolist()))
    T = T.toarray().astype(np.float32)
    perm = np.arange(len(genes))
    perm[has] = np.random.default_rng(seed).permutation(perm[has])
    Tc = T.copy()
    Tc[has] -= Tc[has].mean(0)
    Tc = normalize(Tc)
    K0 = T @ T.T
    np.fill_diagonal(K0, 0)
    for name, M in (("TF-IDF", T), ("TF-IDF centred", Tc)):
        out[name] = X @ M
        out[name + ", shuffled"] = X @ M[perm]
    eye = np.eye(len(genes), dtype=np.float32)
    for k in (5, 20):
        S, Ss = knn_graph(K0, k, has), knn_graph(K0[np.ix_(perm, perm)], k, has)
        for b in (0.5, 1, 2):
            out[f"I + {b} S_{k}"] = X @ (eye + b * S)
            out[f"I + {b} S_{k}, shuffled"] = X @ (eye + b * Ss)
    # text gated by co-expression (correlations over every cell: unsupervised)
    C = np.clip(np.nan_to_num(np.corrcoef(X.T)), 0, None)
    np.fill_diagonal(C, 0)
    for b in (0.5, 1):
        out[f"I + {b} C_5 (co-expression)"] = X @ (eye + b * knn_graph(C, 5, np.ones_like(has)))
        for lab, V in (("", E[hv]), (", random vectors", R[hv])):
            V = normalize(V)
            G = knn_graph(np.clip(V @ V.T, 0, None) * C, 5, np.abs(V).sum(1) > 0)
            out[f"I + {b} (S * C)_5{lab}"] = X @ (eye + b * G)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(real_datasets.DATASETS))
    ap.add_argument("--splits", type=int, default=10)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    texts = card_nosym_text(_cards()).dropna().str.replace("\n", " ").tolist()
    vectorizer = _vectorizer(LSA_PARAMS).fit(texts)
    table: dict[str, dict[str, float]] = {}
    for name in args.datasets:
        raw = real_datasets.load(name)
        a = annotation_real.prepare(raw, raw.uns["genept_x_kind"])
        y = a.obs[annotation_real.LABEL].to_numpy()
        for rep, Z in kernels(a, vectorizer).items():
            table.setdefault(rep, {})[name] = acc = knn_accuracy(Z, y, args.splits)
            print(f"{name:22s} {rep:36s} 10-NN {acc:.3f}", flush=True)
    print(f"\n10-NN accuracy, mean of {args.splits} splits:\n")
    print("| representation | " + " | ".join(args.datasets) + " |")
    print("|---|" + "---:|" * len(args.datasets))
    for rep, cols in table.items():
        print(f"| {rep} | " + " | ".join(f"{cols[d]:.3f}" for d in args.datasets) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
