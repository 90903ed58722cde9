"""Benchmark: training time and accuracy of ``annotate_scmpt`` defaults, before and after.

"before" reproduces the previous defaults with options (hidden 4096, learning rates
1e-3 and 1e-4, 30 epochs, batches of 64, decay 0.95, patience 5, 3 seeds, the fusion
only, and torch's own thread count: one thread per core); "after" is today's defaults
(``annotate_scmpt(query, reference, reps=...)`` with nothing else). Each run is a fresh
Python process (no thread-pool state carried over), timed around the call.

Data: ``sc.datasets.pbmc68k_reduced()``, label ``bulk_labels``, the log-normalised
``.raw``; branch 1 is its PCA (30 components), branch 2 GenePT-w
(``gpt.tl.embed_genes`` + ``gpt.tl.embed_cells(method="w", use_raw=True)``, the packaged
MiniLM: offline) or, with ``--second pca2`` or if that fails, a PCA of the odd-numbered
genes. Stratified 80/20 split (``random_state=0``): a 560-cell reference and 140 query
cells. The 2,400-cell reference is drawn with replacement from those 560 cells with
small Gaussian jitter (timing at that size; its accuracy is on the same 140 cells).

Conditions: ``quiet`` and ``busy`` -- two ``python -c "while True: pass"`` processes
started before and killed after each busy run (by their own pid). Ratios
before/after are within one invocation, so they hold on any machine::

    python benchmarks/bench_scmpt_speed.py                    # all, ~5-15 min on 2 cores
    python benchmarks/bench_scmpt_speed.py --sizes 560 --conditions busy --timeout 300
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

import numpy as np
from _busy import run_worker

BEFORE = {
    "hidden": 4096,
    "lr_grid": [1e-3, 1e-4],
    "epochs_grid": [30],
    "batch_size_grid": [64],
    "decay_grid": [0.95],
    "patience": 5,
    "n_seeds": 3,
    "select": "fusion",
    "n_jobs": -1,  # torch's default: one thread per core
}
AFTER: dict = {}  # the defaults

WORKER = r"""
import json, sys, time, warnings
import numpy as np, anndata as ad, pandas as pd
import genept as gpt
warnings.filterwarnings("ignore")
gpt.settings.progress = False
data, size, opts = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
d = np.load(data, allow_pickle=True)
y, tr, te = d["y"], d["tr"], d["te"]
reps = {"X_pca": d["pca"], "X_second": d["second"]}
rng = np.random.default_rng(0)
if size != tr.size:
    pick = rng.choice(tr, size=size, replace=True)
else:
    pick = tr
def make(idx, jitter):
    a = ad.AnnData(np.zeros((idx.size, 1), np.float32),
                   obs=pd.DataFrame({"bulk_labels": y[idx]}, index=[f"c{i}" for i in range(idx.size)]))
    for k, v in reps.items():
        x = v[idx].astype(np.float32)
        if jitter:
            x = x + 0.05 * x.std(0) * rng.standard_normal(x.shape).astype(np.float32)
        a.obsm[k] = x
    return a
ref, query = make(pick, size != tr.size), make(te, False)
t = time.perf_counter()
gpt.tl.annotate_scmpt(query, ref, label_key="bulk_labels", reps=["X_pca", "X_second"],
                      device="cpu", **opts)
dt = time.perf_counter() - t
u = query.uns["genept_scmpt"]
print(json.dumps({"time": dt, "accuracy": u["metrics"]["accuracy"],
                  "f1_macro": u["metrics"]["f1_macro"],
                  "chosen": u.get("selection", {}).get("chosen", "fusion")
                  + (" of " + u["selection"]["candidates"]["stack"]["kept"]
                     if "stack" in u.get("selection", {}).get("candidates", {}) else ""),
                  "val": {k: round(v["val_accuracy"], 3) for k, v in u.get("selection", {}).get("candidates", {}).items()}}))
"""


def prepare(path: Path, second: str) -> str:
    import anndata as ad
    import scanpy as sc
    from sklearn.model_selection import train_test_split

    import genept as gpt

    gpt.settings.progress = False
    a = sc.datasets.pbmc68k_reduced()
    raw = ad.AnnData(a.raw.X.copy(), obs=a.obs[["bulk_labels"]].copy(), var=a.raw.var.copy())
    sc.pp.pca(raw, n_comps=30, random_state=0)
    what = "pca2"
    sec = None
    if second == "w":
        try:
            gpt.tl.embed_genes(raw)
            gpt.tl.embed_cells(raw, method="w")
            sec, what = np.asarray(raw.obsm["X_genept_w"]), "GenePT-w"
        except Exception as e:
            print(f"GenePT-w failed ({type(e).__name__}: {e}); using a PCA of odd genes")
    if sec is None:
        r2 = ad.AnnData(a.raw.X[:, 1::2].copy())
        sc.pp.pca(r2, n_comps=30, random_state=0)
        sec = r2.obsm["X_pca"]
    y = raw.obs["bulk_labels"].astype(str).to_numpy()
    tr, te = train_test_split(np.arange(a.n_obs), test_size=0.2, stratify=y, random_state=0)
    np.savez(path, pca=raw.obsm["X_pca"], second=sec, y=y, tr=tr, te=te)
    return f"X_pca (30 PCs of .raw) + {what} ({sec.shape[1]} dims)"


def run(data: Path, size: int, opts: dict, busy: int, timeout: float) -> dict:
    r = run_worker(WORKER, [str(data), str(size), json.dumps(opts)], busy=busy, timeout=timeout)
    return {"time": float("inf"), "timeout": timeout} if r is None else r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[560, 2400])
    ap.add_argument("--conditions", nargs="+", default=["quiet", "busy"], choices=["quiet", "busy"])
    ap.add_argument("--second", choices=["w", "pca2"], default="w")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per run (then '>T')")
    ap.add_argument("--skip-before", action="store_true")
    args = ap.parse_args()
    # a SIGTERM (e.g. from `timeout`) unwinds through run()'s finally: the hogs are killed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pbmc.npz"
        desc = prepare(data, args.second)
        print(f"pbmc68k_reduced, bulk_labels, {desc}; {cores} cores; query 140 cells\n")
        print(
            "| condition | ref cells | defaults | time (s) | accuracy | macro-F1 | chosen | before/after |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for cond in args.conditions:
            for size in args.sizes:
                res = {}
                for name, opts in (("before", BEFORE), ("after", AFTER)):
                    if name == "before" and args.skip_before:
                        continue
                    r = run(data, size, opts, busy=2 if cond == "busy" else 0, timeout=args.timeout)
                    res[name] = r
                    t = f">{args.timeout:.0f}" if not np.isfinite(r["time"]) else f"{r['time']:.1f}"
                    acc = f"{r['accuracy']:.3f}" if "accuracy" in r else "-"
                    f1 = f"{r['f1_macro']:.3f}" if "f1_macro" in r else "-"
                    ratio = ""
                    if name == "after" and "before" in res:
                        tb = res["before"]["time"]
                        ratio = (
                            f"{tb / r['time']:.1f}x"
                            if np.isfinite(tb)
                            else f">{args.timeout / r['time']:.0f}x"
                        )
                    print(
                        f"| {cond} | {size} | {name} | {t} | {acc} | {f1} | "
                        f"{r.get('chosen', '-')} {json.dumps(r.get('val', {}))} | {ratio} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
