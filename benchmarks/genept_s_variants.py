"""Benchmark: which genes a GenePT-s sentence should hold (the defaults of ``embed_cells``).

For each real labelled dataset of ``benchmarks/real_datasets.py`` (prepared as in
``annotation_real.py``: log-normalised, 2,000 highly variable genes or half of a smaller
panel), GenePT-s with the packaged MiniLM is built from

* every gene, as many as the encoder reads (GenePT: ``mask_var=False, n_genes=None``),
* every gene, the top ``n`` only,
* the highly variable genes, as many as fit, and the top ``n`` of them,

all without a prefix, and the defaults (the top 25 highly variable genes after scMPT's
prefix ``gpt.pp.PAPER_PREFIX``),

each also with hashed gene names (the control: the same sentences without the names'
meaning), and scored by cosine 10-NN accuracy, mean over ``--splits`` stratified 80/20
splits. Sentences are cached by text, so a rerun encodes nothing new.

::

    python benchmarks/real_datasets.py --fetch        # once
    python benchmarks/genept_s_variants.py            # about 15 min on 2 cores, cold cache
    python benchmarks/genept_s_variants.py --datasets pbmc68k_reduced --n-genes 10 25 40
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier

import genept as gpt

sys.path.insert(0, str(Path(__file__).parent))
import annotation_real
import real_datasets


def knn_accuracy(Z: np.ndarray, y: np.ndarray, splits: int) -> float:
    """Mean test accuracy of a cosine 10-NN over ``splits`` stratified 80/20 splits."""
    accs = []
    for s in range(splits):
        tr, te = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=s)
        clf = KNeighborsClassifier(10, metric="cosine").fit(Z[tr], y[tr])
        accs.append(float((clf.predict(Z[te]) == y[te]).mean()))
    return float(np.mean(accs))


def variants(n_genes: list[int]) -> list[tuple[str, dict]]:
    """(name, embed_cells options) of every sentence variant, controls included."""
    hv = "highly_variable"
    out = [("every gene, all that fit (GenePT)", dict(mask_var=False, n_genes=None))]
    out += [(f"every gene, top {n}", dict(mask_var=False, n_genes=n)) for n in n_genes]
    out += [("highly variable, all that fit", dict(mask_var=hv, n_genes=None))]
    out += [(f"highly variable, top {n}", dict(mask_var=hv, n_genes=n)) for n in n_genes]
    out = [(name, {**opts, "prefix": ""}) for name, opts in out]
    # the defaults: the top 25 highly variable genes after scMPT's prefix
    out += [("highly variable, top 25, scMPT prefix (default)", dict(mask_var=hv, n_genes=25))]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(real_datasets.DATASETS))
    ap.add_argument("--splits", type=int, default=10)
    ap.add_argument("--n-genes", nargs="+", type=int, default=[10, 25, 40])
    ap.add_argument("--no-control", action="store_true", help="skip the hashed-name control")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    gpt.settings.progress = False
    rows: dict[str, dict[str, str]] = {}
    for name in args.datasets:
        raw = real_datasets.load(name)
        a = annotation_real.prepare(raw, raw.uns["genept_x_kind"])
        y = a.obs[annotation_real.LABEL].to_numpy()
        for label, opts in variants(args.n_genes):
            cells = []
            for hashed in (False,) if args.no_control else (False, True):
                t0 = time.time()
                gpt.tl.embed_cells(a, method="s", hash_names=hashed, key_added="X_s", **opts)
                acc = knn_accuracy(a.obsm["X_s"], y, args.splits)
                genes = a.uns["s"]["params"]["mean_genes_per_sentence"]
                cells.append(f"{acc:.3f}")
                print(
                    f"{name:22s} {label:34s} hashed={hashed!s:5s} 10-NN {acc:.3f} "
                    f"({genes:.0f} genes per sentence, {time.time() - t0:.0f} s)",
                    flush=True,
                )
            rows.setdefault(label, {})[name] = " / ".join(cells)
    print(f"\n10-NN accuracy, mean of {args.splits} splits (text / hashed-name control):\n")
    print("| sentence genes | " + " | ".join(args.datasets) + " |")
    print("|---|" + "---:|" * len(args.datasets))
    for label, cols in rows.items():
        print(f"| {label} | " + " | ".join(cols.get(d, "") for d in args.datasets) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
