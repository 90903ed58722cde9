"""GenePT-w's random-vector control over several seeds, against the text vectors.

The annotation benchmark (``annotation_real.py``) draws the control's Gaussian gene
vectors with one seed. This script measures how much that control moves with the seed:
for each dataset of ``real_datasets.py`` it builds GenePT-w with the defaults from the
gene-card vectors and from ``--seeds`` random draws of the same shape (genes without a
text vector keep a zero vector in both), then scores a cosine 10-NN and the MLP probe
(``annotate_mlp``) on the benchmark's splits: ``--splits`` stratified 80/20 splits, or,
for a dataset with a condition column (``pbmc_cross``), each source as the reference and
the other as the query. It prints, per dataset and split kind, the text's accuracy, the
control's mean and SD over the seeds, and the text's margin in those SDs.

::

    python benchmarks/random_control_seeds.py                  # every dataset, 5 seeds
    python benchmarks/random_control_seeds.py --datasets pbmc_cross --seeds 10
    python benchmarks/random_control_seeds.py --datasets immune3 --holdout   # leave-one-out
    python benchmarks/random_control_seeds.py --gene-vectors ada-002   # GenePT's own vectors

``--gene-vectors`` / ``--zenodo-archive``: as in ``annotation_real.py`` (the text vectors
and the random draws then have the other vectors' size, 1536 for ada-002).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

import genept as gpt

sys.path.insert(0, str(Path(__file__).parent))
import annotation_real as ar
import real_datasets

LABEL = ar.LABEL


def split(a, shift: str | None, seed: int, holdout: bool):
    """``annotation_real.split``; with ``holdout`` the named value is the query instead."""
    ref, query, _ = ar.split(a, shift, seed)
    return (query, ref) if holdout and shift else (ref, query)


def accuracies(
    a, keys: list[str], splits: list[tuple[str | None, int]], holdout: bool = False
) -> np.ndarray:
    """``[split, key, (10-NN, MLP)]`` test accuracies."""
    out = np.zeros((len(splits), len(keys), 2))
    for i, (shift, seed) in enumerate(splits):
        ref, query = split(a, shift, seed, holdout)
        truth = query.obs[LABEL].astype(str).to_numpy()
        for j, key in enumerate(keys):
            gpt.tl.annotate_knn(query, ref, use_rep=key, label_key=LABEL, key_added="knn")
            gpt.tl.annotate_mlp(query, ref, use_rep=key, label_key=LABEL, key_added="mlp")
            out[i, j, 0] = np.mean(query.obs["knn"].astype(str).to_numpy() == truth)
            out[i, j, 1] = np.mean(query.obs["mlp"].astype(str).to_numpy() == truth)
    return out


def run(name: str, n_seeds: int, n_splits: int, holdout: bool = False, source="cards") -> None:
    info = real_datasets.DATASETS[name]
    a = real_datasets.load(name)
    a.obs[LABEL] = a.obs[info["label_key"]]
    a = ar.prepare(a, info["x_kind"], info.get("batch_key"))
    gpt.tl.embed_genes(a, source=source, show_progress=False)
    gpt.tl.embed_cells(a, method="w", key_added="X_text", show_progress=False)
    E = np.asarray(a.varm["X_genept"])
    has = np.abs(E).sum(1) > 0
    keys = ["X_text"]
    for s in range(n_seeds):
        R = np.random.default_rng(s).standard_normal(E.shape).astype(np.float32)
        R[~has] = 0
        a.varm[f"X_random{s}"] = R
        gpt.tl.embed_cells(
            a, method="w", gene_key=f"X_random{s}", key_added=f"X_r{s}", show_progress=False
        )
        keys.append(f"X_r{s}")
    shifts = ar.shifts_of(a, info.get("condition_key"))
    groups = {
        sh or f"{n_splits} stratified splits": [(sh, 0)]
        if sh
        else [(None, k) for k in range(n_splits)]
        for sh in shifts
    }
    for how, splits in groups.items():
        acc = accuracies(a, keys, splits, holdout).mean(0)  # mean over the splits
        if holdout and how.count("="):
            how = f"query {how}, reference the rest"
        for m, method in enumerate(("10-NN cosine", "MLP probe")):
            text, rand = acc[0, m], acc[1:, m]
            sd = rand.std(ddof=1) if n_seeds > 1 else float("nan")
            margin = f"{(text - rand.mean()) / sd:+.1f}" if sd > 0 else "n/a (SD 0)"
            print(
                f"| {name} | {how} | {method} | {text:.3f} | {rand.mean():.3f} | {sd:.3f} "
                f"| {rand.min():.3f}-{rand.max():.3f} | {margin} |",
                flush=True,
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", help="names in real_datasets.DATASETS (default all)")
    p.add_argument("--seeds", type=int, default=5, help="random-vector seeds 0..N-1 (default 5)")
    p.add_argument("--splits", type=int, default=3, help="stratified splits (default 3)")
    p.add_argument(
        "--holdout",
        action="store_true",
        help="datasets with a condition column: each value is the query and the rest the "
        "reference (default: each value is the reference)",
    )
    ar.add_gene_vector_args(p)
    args = p.parse_args()
    if args.seeds < 2 or args.splits < 1:
        p.error("--seeds must be >= 2 (an SD over seeds) and --splits >= 1")
    source = ar.gene_source(args.gene_vectors, args.zenodo_archive)
    print(f"gene vectors of GenePT-w and its control: {args.gene_vectors}\n")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    gpt.settings.progress = False
    print(
        "| dataset | split | method | text | random: mean | SD | range | text - mean (SDs) |\n"
        "|---|---|---|---:|---:|---:|---:|---:|"
    )
    for name in args.datasets or list(real_datasets.DATASETS):
        run(name, args.seeds, args.splits, args.holdout, source)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
