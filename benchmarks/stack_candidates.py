"""Benchmark: scMPT's stack candidates -- how its networks see their inputs, and a k-NN.

Two questions. Do the network candidates do better on z-scored inputs or with one scale
per input (``ScMPTParams.network_scaling``)? And, on bassez a cosine 10-NN on the expression beats every expression fusion of
``annotate_scmpt``. This script asks whether adding a 10-NN on each branch to the stack's
candidates (``select="stack"``) closes that gap. It replays the stack from saved
probabilities, one seed per candidate (the default stack refits three):

* the six candidates of the default stack, trained with ``genept.models.scmpt``'s own
  ``train_one`` / ``train_linear`` on the same folds as ``annotate_scmpt`` (the first
  validation split plus ``selection_folds="auto"`` folds): the fusion, an MLP on each
  branch, the linear fusion and a logistic regression on each branch;
* with ``--scaling both`` (default) each network candidate twice: on z-scored inputs
  (``network_scaling="feature"``, the default before) and with one scale per input
  (``"branch"``, the default now; the logistic regressions always see z-scores);
* the stack of the set of candidates ``annotate_scmpt`` keeps (``"stack of the kept
  set"``): each branch's network, each branch's candidates or all of them, chosen by
  cross-fitted log-likelihood and the one-standard-error rule
  (:func:`genept.models.scmpt._stack.choose_option`);
* a cosine ``--k``-NN on each branch (the raw representation, as the 10-NN rows of
  ``annotation_real.py``), its votes smoothed to ``(votes + alpha) / (k + alpha C)`` so
  that a wrong vote is not probability zero.

Stacking weights come from :func:`genept.models.scmpt._stack.stack_weights` on the
out-of-fold probabilities (candidates under 1% dropped); test accuracy is measured on the
same stratified 80/20 splits as ``annotation_real.py`` (``random_state`` 0, 1, ...).
The summary compares each stack with the best single model of its two branches (any
MLP, logistic regression or k-NN; chosen on test, an oracle) and with the best MLP branch.

::

    python benchmarks/real_datasets.py --fetch        # once
    python benchmarks/stack_candidates.py             # about 25 min on 2 cores
    python benchmarks/stack_candidates.py --datasets pbmc68k_reduced --splits 10 \
        --scaling branch --no-s --pairs X_pca+X_genept_w X_expr+X_genept_w
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.neighbors import NearestNeighbors

import genept as gpt
from genept.models.scmpt._fit import Hyper, input_stats, train_linear, train_one
from genept.models.scmpt._folds import extra_folds, stratified_split
from genept.models.scmpt._params import SELECTION_CELLS, ScMPTParams
from genept.models.scmpt._stack import (
    STACK_MIN_WEIGHT,
    choose_option,
    stack_options,
    stack_weights,
)

sys.path.insert(0, str(Path(__file__).parent))
import annotation_real as ar
import real_datasets

PAIRS = [
    ("X_pca", "X_genept_w"),
    ("X_expr", "X_genept_w"),
    ("X_pca", "X_genept_s"),
    ("X_expr", "X_genept_s"),
]
#: candidate -> (branches it reads, hidden widths; [] = logistic regression)
WIDTH = list(ScMPTParams().hidden)
NETS = {
    "fusion": ([0, 1], WIDTH),
    "mlp A": ([0], WIDTH),
    "mlp B": ([1], WIDTH),
    "linear": ([0, 1], []),
    "lr A": ([0], []),
    "lr B": ([1], []),
}


def knn_proba(X_tr, y_tr, X_te, n_classes: int, k: int, alpha: float) -> np.ndarray:
    """Smoothed vote fractions of a cosine k-NN: ``(votes + alpha) / (k + alpha C)``."""
    idx = NearestNeighbors(n_neighbors=k, metric="cosine").fit(X_tr).kneighbors(X_te)[1]
    votes = np.zeros((X_te.shape[0], n_classes))
    np.add.at(votes, (np.repeat(np.arange(len(votes)), k), y_tr[idx].ravel()), 1.0)
    return (votes + alpha) / (k + alpha * n_classes)


def standardise(x_ref: np.ndarray, x_query: np.ndarray) -> tuple[torch.Tensor, ...]:
    """z-scored reference and query, and the factors of ``network_scaling="branch"``."""
    m, s, branch = input_stats(x_ref)  # as ScMPTModel.fit
    return (
        torch.from_numpy((x_ref - m) / s),
        torch.from_numpy((x_query - m) / s),
        torch.from_numpy(branch),
    )


def one_pair(ref, query, pair, codes, y_query, folds, n_classes, k, alpha, scalings) -> dict:
    """Out-of-fold and test probabilities of every candidate for one pair of branches.

    Network candidates are trained once per ``scalings`` entry (``"feature"``: z-scored
    inputs; ``"branch"``: ``ScMPTParams.network_scaling="branch"``, named ``"<name> [branch]"``).
    """
    raw = [ref.obsm[r].astype(np.float32) for r in pair]
    raw_q = [query.obsm[r].astype(np.float32) for r in pair]
    xs, xq, factors = zip(
        *(standardise(a, b) for a, b in zip(raw, raw_q, strict=True)), strict=True
    )
    y = torch.from_numpy(codes.astype(np.int64))
    y_dummy = torch.from_numpy(np.where(y_query >= 0, y_query, 0))
    hp0 = ScMPTParams()
    hp = Hyper(*(hp0.grids[g][0] for g in ("lr", "epochs", "batch_size", "decay")))
    kw = dict(n_classes=n_classes, class_weight=None, device="cpu")
    oof, test = {}, {}
    runs = [(n, br, hid, None) for n, (br, hid) in NETS.items() if "feature" in scalings or not hid]
    runs += [(f"{n} [branch]", br, hid, [factors[i] for i in br]) for n, (br, hid) in NETS.items()
             if hid and "branch" in scalings]  # fmt: skip
    for name, br, hidden, scale in runs:
        oof[name], epochs = np.zeros((codes.size, n_classes)), hp.epochs
        for j, (tr, va) in enumerate(folds):
            a = ([xs[i][tr] for i in br], y[tr], [xs[i][va] for i in br], y[va])
            if hidden:
                h = hp if j == 0 else Hyper(hp.lr, epochs, hp.batch_size, hp.decay)
                _, info = train_one(
                    *a, in_dims=[xs[i].shape[1] for i in br], hidden=hidden, hp=h,
                    weight_decay=hp0.weight_decay, early_stopping=j == 0,
                    patience=hp0.patience, seed=0, scale=scale, **kw,
                )  # fmt: skip
                epochs = int(info["best_epoch"]) if j == 0 else epochs
            else:
                _, info = train_linear(*a, C=1.0, **kw)
            oof[name][va] = info["val_proba"]
        a = ([xs[i] for i in br], y, [xq[i] for i in br], y_dummy)
        if hidden:
            _, info = train_one(
                *a, in_dims=[xs[i].shape[1] for i in br], hidden=hidden,
                hp=Hyper(hp.lr, max(1, epochs), hp.batch_size, hp.decay),
                weight_decay=hp0.weight_decay, early_stopping=False,
                patience=hp0.patience, seed=0, scale=scale, **kw,
            )  # fmt: skip
        else:
            _, info = train_linear(*a, C=1.0, **kw)
        test[name] = info["val_proba"]
    everyone = np.arange(codes.size)
    for i, side in enumerate("AB"):
        oof[f"knn {side}"] = np.zeros((codes.size, n_classes))
        for _, va in folds:
            tr = np.setdiff1d(everyone, va)
            oof[f"knn {side}"][va] = knn_proba(
                raw[i][tr], codes[tr], raw[i][va], n_classes, k, alpha
            )
        test[f"knn {side}"] = knn_proba(raw[i], codes, raw_q[i], n_classes, k, alpha)
    return {"oof": oof, "test": test}


def stacked(oof, test, names, held_out, codes, sets=False) -> tuple[np.ndarray, dict]:
    """The stack of ``names`` on the test cells and its weights. ``sets``: the candidates
    mixed are chosen first, as ``annotate_scmpt`` does (:func:`choose_option` over
    each branch's network, each branch's candidates and all, one-standard-error rule)."""
    if sets:
        cands = [(n, NETS[n.removesuffix(" [branch]")][0], NETS[n.removesuffix(" [branch]")][1])
                 for n in names]  # fmt: skip
        options = stack_options(cands)
        P = np.stack([oof[n][held_out, codes[held_out]] for n in names], 1)
        kept, _ = choose_option(P, names, options, codes[held_out])
        names = options[kept]
    w = stack_weights(np.stack([oof[n][held_out, codes[held_out]] for n in names], 1))
    w = np.where(w < STACK_MIN_WEIGHT, 0.0, w)
    w = w / w.sum()
    return sum(wi * test[n] for wi, n in zip(w, names, strict=True)), dict(
        zip(names, w, strict=True)
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--datasets", nargs="+", default=list(real_datasets.DATASETS))
    ap.add_argument(
        "--pairs", nargs="+", default=["+".join(p) for p in PAIRS],
        help="branch pairs, e.g. X_pca+X_genept_w (default: the four of PAIRS)",
    )  # fmt: skip
    ap.add_argument("--no-s", action="store_true", help="no GenePT-s (pairs without it)")
    ap.add_argument("--splits", type=int, default=3)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--alpha", type=float, default=0.1, help="vote smoothing")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--scaling", choices=["feature", "branch", "both"], default="both",
        help="how the network candidates see their inputs (ScMPTParams.network_scaling)",
    )  # fmt: skip
    args = ap.parse_args()
    pairs = [tuple(p.split("+")) for p in args.pairs]
    if any(len(p) != 2 for p in pairs) or (args.no_s and any("X_genept_s" in p for p in pairs)):
        ap.error("--pairs: two obsm keys joined by '+' each; with --no-s none of them GenePT-s")
    warnings.filterwarnings("ignore")
    gpt.settings.progress = False
    torch.set_num_threads(args.threads)
    scalings = ["feature", "branch"] if args.scaling == "both" else [args.scaling]
    variants = {}
    for sc in scalings:
        nets = [f"{n} [branch]" if hid and sc == "branch" else n for n, (_, hid) in NETS.items()]
        variants[f"stack ({sc})"] = nets
        variants[f"stack of the kept set ({sc})"] = nets
        variants[f"+ k-NN ({sc})"] = [*nets, "knn A", "knn B"]
    rows = []
    for name in args.datasets:
        info = real_datasets.DATASETS[name]
        a = real_datasets.load(name)
        a.obs[ar.LABEL] = a.obs[info["label_key"]]
        a = ar.prepare(a, info["x_kind"])
        ar.add_genept(a, not args.no_s)
        for seed in range(args.splits):
            ref, query, _ = ar.split(a, None, seed)
            classes, codes = np.unique(ref.obs[ar.LABEL].astype(str), return_inverse=True)
            q = query.obs[ar.LABEL].astype(str).to_numpy()
            y_query = np.where(np.isin(q, classes), np.searchsorted(classes, q), -1)
            first = stratified_split(codes, 0.2, 0)
            n_folds = min(5, max(1, math.ceil(SELECTION_CELLS / len(first[1]))))
            folds = [first, *extra_folds(codes, first, n_folds, 5, 0)]
            held_out = np.concatenate([va for _, va in folds])
            for pair in pairs:
                r = one_pair(
                    ref, query, pair, codes, y_query, folds, classes.size, args.k, args.alpha,
                    scalings,
                )  # fmt: skip
                row = {"dataset": name, "split": seed, "pair": " + ".join(pair), "folds": n_folds}
                for cand, P in r["test"].items():
                    row[cand] = float((P.argmax(1) == y_query).mean())
                for label, names in variants.items():
                    P, w = stacked(
                        r["oof"], r["test"], names, held_out, codes, sets="kept set" in label
                    )
                    row[label] = float((P.argmax(1) == y_query).mean())
                    row[f"w {label}"] = {n: round(float(v), 2) for n, v in w.items() if v >= 0.05}
                rows.append(row)
                knn_w = {
                    v: {n: w for n, w in row[f"w {v}"].items() if "knn" in n}
                    for v in variants
                    if "k-NN" in v
                }
                print(
                    f"{name} split {seed} {row['pair']}: "
                    + ", ".join(f"{v} {row[v]:.3f}" for v in variants)
                    + f"; k-NN weights {knn_w}",
                    flush=True,
                )
    df = pd.DataFrame(rows)
    cells = df.groupby(["dataset", "pair"], sort=False).mean(numeric_only=True)
    mlps = [c for c in cells.columns if c.startswith("mlp ")]
    singles = [*mlps, "lr A", "lr B", "knn A", "knn B"]
    show = cells[[*mlps, "knn A", "knn B", *variants]].round(3)
    print("\nmean test accuracy over splits\n" + show.to_string())
    for v in variants:
        gap_single = cells[v] - cells[singles].max(1)
        gap_branch = cells[v] - cells[mlps].max(1)
        print(
            f"{v}: mean {cells[v].mean():.4f}; minus the best single model: mean "
            f"{gap_single.mean():+.4f}, worst {gap_single.min():+.4f}, "
            f"{int((gap_single < -0.005).sum())} of {len(cells)} cells below -0.005; minus the "
            f"best MLP branch: mean {gap_branch.mean():+.4f}, worst {gap_branch.min():+.4f}"
        )


if __name__ == "__main__":
    main()
