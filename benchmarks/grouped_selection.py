"""Does leave-source-out model selection help scMPT annotate a new source?

``immune3`` (``real_datasets.py``) holds three sources of immune cells -- pbmc3k,
pbmc68k_reduced and breast-tumour immune cells (bassez) -- on their 411 shared genes and
6 shared types. Each source in turn is the query and the other two the reference.
scMPT (``annotate_scmpt`` defaults) is trained on every representation alone and on
four fusions, once with the default selection folds (random reference cells) and once
with ``selection_groups="dataset"`` (the validation split and the selection folds hold
out a whole source, so the stack's weights see how each candidate transfers to a source
it was not trained on). A 10-NN on PCA and celltypist's logistic regression (as in
``annotation_real.py``) are printed for scale. Output: test accuracy / macro-F1 per
held-out source, then mean differences (grouped - random folds) and each fusion against
its best branch.

::

    python benchmarks/real_datasets.py --fetch immune3     # after pbmc3k, bassez_tumor_immune
    python benchmarks/grouped_selection.py                 # ~15 min on 2 cores
    python benchmarks/grouped_selection.py --random-state 1 --json grouped1.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import genept as gpt

sys.path.insert(0, str(Path(__file__).parent))
import annotation_real as ar
import real_datasets

LABEL = ar.LABEL
BRANCHES = [["X_pca"], ["X_expr"], ["X_genept_w"], ["X_genept_s"]]
FUSIONS = [
    ["X_pca", "X_genept_w"],
    ["X_expr", "X_genept_w"],
    ["X_pca", "X_genept_s"],
    ["X_expr", "X_genept_s"],
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--random-state", type=int, default=0, help="annotate_scmpt's seed")
    p.add_argument("--json", help="also write every row as JSON here")
    args = p.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    gpt.settings.progress = False
    info = real_datasets.DATASETS["immune3"]
    a = real_datasets.load("immune3")
    a.obs[LABEL] = a.obs[info["label_key"]]
    t0 = time.perf_counter()
    a = ar.prepare(a, info["x_kind"], "dataset")
    gpt.tl.embed_genes(a, show_progress=False)
    gpt.tl.embed_cells(a, method="w", key_added="X_genept_w", show_progress=False)
    gpt.tl.embed_cells(a, method="s", key_added="X_genept_s", show_progress=False)
    print(
        f"immune3: {a.n_obs} cells, {a.n_vars} genes; embeddings {time.perf_counter() - t0:.0f} s"
    )
    rows = []
    for held in sorted(a.obs["dataset"].astype(str).unique()):
        is_q = (a.obs["dataset"].astype(str) == held).to_numpy()
        ref, query = a[~is_q].copy(), a[is_q].copy()
        y = query.obs[LABEL].to_numpy()
        print(f"\n## query {held} ({query.n_obs} cells), reference the other two ({ref.n_obs})")

        def add(method, rep, mode, pred, seconds, y=y, held=held, **extra):
            acc, f1 = ar.scores(y, pred)
            rows.append(dict(query=held, method=method, rep=rep, mode=mode, accuracy=acc,
                             f1_macro=f1, seconds=seconds, **extra))  # fmt: skip
            print(
                f"  {method:14s} {rep:26s} {mode:8s} {acc:.3f} / {f1:.3f} {seconds:6.1f}s",
                flush=True,
            )

        t = time.perf_counter()
        gpt.tl.annotate_knn(query, ref, use_rep="X_pca", label_key=LABEL, key_added="knn")
        add("10-NN cosine", "X_pca", "-", query.obs["knn"].to_numpy(), time.perf_counter() - t)
        t = time.perf_counter()
        pred = ar.celltypist_predict(ref, query, sgd=False)
        add("celltypist LR", "X (411 genes)", "-", pred, time.perf_counter() - t)
        for reps in BRANCHES + FUSIONS:
            for mode in ("random", "grouped"):
                opts = {"selection_groups": "dataset"} if mode == "grouped" else {}
                t = time.perf_counter()
                gpt.tl.annotate_scmpt(
                    query, ref, reps=reps, label_key=LABEL, key_added="s",
                    random_state=args.random_state, **opts,
                )  # fmt: skip
                sel = query.uns["s"]["selection"]
                add("scMPT", " + ".join(reps), mode, query.obs["s"].to_numpy(),
                    time.perf_counter() - t, weights=sel.get("weights"))  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
    summary(rows)


def summary(rows: list[dict]) -> None:
    """Table per held-out source; grouped - random; fusion - best branch per mode."""
    queries = list(dict.fromkeys(r["query"] for r in rows))
    acc = {(r["query"], r["method"], r["rep"], r["mode"]): r for r in rows}
    print(
        "\n| method | representation | selection | "
        + " | ".join(f"query {q}" for q in queries)
        + " |"
    )
    print("|---|---|---|" + "---:|" * len(queries))
    for key in dict.fromkeys((r["method"], r["rep"], r["mode"]) for r in rows):
        cells = [acc[(q, *key)] for q in queries]
        print(f"| {key[0]} | `{key[1]}` | {key[2]} | "
              + " | ".join(f"{c['accuracy']:.3f} / {c['f1_macro']:.3f}" for c in cells) + " |")  # fmt: skip
    for mode in ("random", "grouped"):
        d = [acc[(q, "scMPT", " + ".join(f), mode)]["accuracy"]
             - max(acc[(q, "scMPT", b, mode)]["accuracy"] for b in f)
             for q in queries for f in FUSIONS]  # fmt: skip
        print(f"fusion - best branch ({mode} folds, branches {mode} too): mean {np.mean(d):+.3f}, "
              f"worst {np.min(d):+.3f}, {sum(x < -0.005 for x in d)} of {len(d)} below -0.005")  # fmt: skip
    g = [acc[(q, "scMPT", " + ".join(f), "grouped")]["accuracy"]
         - acc[(q, "scMPT", " + ".join(f), "random")]["accuracy"] for q in queries for f in FUSIONS]  # fmt: skip
    print(
        f"fusions, grouped - random folds: mean {np.mean(g):+.3f} (from {np.min(g):+.3f} to {np.max(g):+.3f})"
    )
    b = [acc[(q, "scMPT", " + ".join(f), "grouped")]["accuracy"]
         - acc[(q, "celltypist LR", "X (411 genes)", "-")]["accuracy"] for q in queries for f in FUSIONS]  # fmt: skip
    print(
        f"fusions (grouped) - celltypist LR: mean {np.mean(b):+.3f} (from {np.min(b):+.3f} to {np.max(b):+.3f})"
    )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
