"""A reference and a query processed on their own, as a user has them: are their GenePT embeddings comparable?

``annotation_real.py`` normalises and selects highly variable genes on all cells before
splitting. A user annotating new data has the reference and the query apart: each is
normalised and gets its own highly variable genes. GenePT's defaults read a cell through
those genes (``mask_var``) and, for GenePT-w, through gene vectors whitened over them, so
the two sides are then read through different gene maps. This script measures 10-NN
test accuracy of four ways, per dataset and split:

* ``own genes``: each side embedded with the defaults on its own highly variable genes;
* ``reference=``: the query embedded through the reference's map
  (``gpt.tl.embed_cells(query, reference=ref)``);
* ``joint``: genes selected on all cells before the split (``annotation_real.py``'s
  setting, which a user with new data cannot use);
* for comparison, PCA of the reference's highly variable genes with the query projected
  on its loadings (what :func:`scanpy.tl.ingest` does);
* with ``--control-seeds N``, GenePT-w's random-vector control through ``reference=``:
  Gaussian gene vectors (one per gene name, the same on both sides; genes without a text
  vector keep none), mean over N draws, with the same whitening as the text.

::

    python benchmarks/reference_query.py     # 3 datasets x 3 splits, pbmc_cross, liu_covid
    python benchmarks/reference_query.py --datasets pbmc3k --splits 5 --no-s
    python benchmarks/reference_query.py --no-s --whiten 0     # the gene vectors as they are
    python benchmarks/reference_query.py --no-s --whiten 0.01  # less shrinkage
    python benchmarks/reference_query.py --no-s --control-seeds 5 --datasets pbmc_cross
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import scanpy as sc
from scipy import sparse
from sklearn.model_selection import train_test_split

import genept as gpt

sys.path.insert(0, str(Path(__file__).parent))
import real_datasets

LABEL = "label"


def normalised(a, x_kind: str):
    """A copy, log-normalised (counts), with its own highly variable genes."""
    a = a.copy()
    if x_kind == "counts":
        sc.pp.filter_genes(a, min_cells=3)
        sc.pp.normalize_total(a, target_sum=1e4)
        sc.pp.log1p(a)
    sc.pp.highly_variable_genes(a, n_top_genes=min(2000, a.n_vars // 2))
    return a


def prepare(a, x_kind: str):
    """One side on its own: :func:`normalised`, and its gene vectors."""
    a = normalised(a, x_kind)
    gpt.tl.embed_genes(a, show_progress=False)
    return a


def pca_projected(ref, query, n_comps: int = 50):
    """PCA of the reference's highly variable genes; the query projected on its loadings."""
    sc.pp.pca(ref, n_comps=n_comps, mask_var="highly_variable", random_state=0)
    genes = ref.var_names[ref.var["highly_variable"]]
    dense = lambda X: X.toarray() if sparse.issparse(X) else np.asarray(X)  # noqa: E731
    mean = dense(ref[:, genes].X).mean(0)
    Xq = np.zeros((query.n_obs, len(genes)), np.float32)
    pos = query.var_names.get_indexer(genes)
    Xq[:, pos >= 0] = dense(query.X[:, pos[pos >= 0]])
    query.obsm["X_pca"] = (Xq - mean) @ ref.varm["PCs"][ref.var["highly_variable"].to_numpy()]


def knn(ref, query, key: str) -> float:
    gpt.tl.annotate_knn(query, ref, use_rep=key, label_key=LABEL, key_added="pred")
    truth = query.obs[LABEL].astype(str).to_numpy()
    return float(np.mean(query.obs["pred"].astype(str).to_numpy() == truth))


def random_vectors(sides, seed: int, key: str = "X_random") -> None:
    """Gaussian gene vectors in ``varm[key]`` of each side: one per gene name, the same on
    every side; zero where the side's text vector is zero (no text, no vector)."""
    genes = sorted(set().union(*(s.var_names for s in sides)))
    dim = sides[0].varm["X_genept"].shape[1]
    draw = np.random.default_rng(seed).standard_normal((len(genes), dim)).astype(np.float32)
    pos = {g: i for i, g in enumerate(genes)}
    for side in sides:
        R = draw[[pos[g] for g in side.var_names]]
        R[np.abs(np.asarray(side.varm["X_genept"])).sum(1) == 0] = 0
        side.varm[key] = R


def run_pair(
    ref_raw, query_raw, x_kind: str, joint_hvg, with_s: bool, whiten=None, control_seeds=0
) -> dict[str, float]:
    ref, query = prepare(ref_raw, x_kind), prepare(query_raw, x_kind)
    out = {}
    pca_projected(ref, query)
    out["PCA, query projected"] = knn(ref, query, "X_pca")
    methods = ["w", "s"] if with_s else ["w"]
    for m in methods:
        key = f"X_genept_{m}"
        kw = {"show_progress": False}
        if m == "w" and whiten is not None:
            kw["whiten"] = whiten
        gpt.tl.embed_cells(ref, method=m, **kw)
        gpt.tl.embed_cells(query, method=m, **kw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the warning this script measures the cost of
            out[f"GenePT-{m}, own genes"] = knn(ref, query, key)
        gpt.tl.embed_cells(query, method=m, reference=ref, **kw)
        out[f"GenePT-{m}, reference="] = knn(ref, query, key)
        if m == "w" and control_seeds:
            control = []
            for seed in range(control_seeds):
                random_vectors([ref, query], seed)
                gpt.tl.embed_cells(ref, gene_key="X_random", key_added="X_r", **kw)
                gpt.tl.embed_cells(query, reference=ref, gene_key="X_random", key_added="X_r", **kw)
                control.append(knn(ref, query, "X_r"))
            out["GenePT-w control, reference="] = float(np.mean(control))
            out["(control SD)"] = float(np.std(control, ddof=1)) if control_seeds > 1 else 0.0
        # genes selected on all cells (annotation_real.py): both sides on the same mask
        for side in (ref, query):
            side.var["joint_hvg"] = side.var_names.isin(joint_hvg)
        gpt.tl.embed_cells(ref, method=m, mask_var="joint_hvg", key_added="X_j", **kw)
        gpt.tl.embed_cells(query, method=m, reference=ref, key_added="X_j", **kw)
        out[f"GenePT-{m}, joint genes"] = knn(ref, query, "X_j")
    return out


def all_cells_hvg(a, x_kind: str):
    """Highly variable genes selected on every cell (annotation_real.py's setting)."""
    p = normalised(a, x_kind)
    return p.var_names[p.var["highly_variable"]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--datasets", nargs="+", default=None, help="default: 3 sets, pbmc_cross, liu_covid"
    )
    p.add_argument("--splits", type=int, default=3, help="stratified 80/20 splits (default 3)")
    p.add_argument("--no-s", action="store_true", help="GenePT-w only (no text encoder)")
    p.add_argument(
        "--whiten", type=float, default=None, help="GenePT-w whitening (default: the function's)"
    )
    p.add_argument(
        "--control-seeds",
        type=int,
        default=0,
        help="GenePT-w random-vector control through reference=, mean over N draws",
    )
    args = p.parse_args()
    if args.control_seeds < 0:
        p.error(f"--control-seeds must be >= 0, got {args.control_seeds}")
    names = args.datasets or [
        *("pbmc68k_reduced", "pbmc3k", "bassez_tumor_immune", "pbmc_cross", "liu_covid")
    ]
    gpt.settings.progress = False
    rows: dict[str, dict[str, list[float]]] = {}
    for name in names:
        info = real_datasets.DATASETS[name]
        a = real_datasets.load(name)
        a.obs[LABEL] = a.obs[info["label_key"]].astype(str)
        hvg = all_cells_hvg(a, info["x_kind"])
        cond = info.get("condition_key")
        if cond:
            pairs = [
                (f"reference {cond}={v}", a.obs[cond].astype(str) == v)
                for v in sorted(a.obs[cond].astype(str).unique())
            ]
        else:
            pairs = []
            for seed in range(args.splits):
                tr, _ = train_test_split(
                    a.obs_names, test_size=0.2, stratify=a.obs[LABEL], random_state=seed
                )
                pairs.append((f"{args.splits} stratified splits", a.obs_names.isin(tr)))
        for how, is_ref in pairs:
            res = run_pair(
                a[is_ref],
                a[~is_ref],
                info["x_kind"],
                hvg,
                not args.no_s,
                args.whiten,
                args.control_seeds,
            )
            for k, v in res.items():
                rows.setdefault(f"{name} | {how}", {}).setdefault(k, []).append(v)
            print(
                f"{name} | {how}: " + ", ".join(f"{k} {v:.3f}" for k, v in res.items()), flush=True
            )
    print("\n| dataset | split | " + " | ".join(next(iter(rows.values()))) + " |")
    print("|---|---|" + "---:|" * len(next(iter(rows.values()))))
    for where, res in rows.items():
        print(f"| {where} | " + " | ".join(f"{np.mean(v):.3f}" for v in res.values()) + " |")


if __name__ == "__main__":
    main()
