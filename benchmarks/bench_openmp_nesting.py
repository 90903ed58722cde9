"""Benchmark: torch on CPU after scanpy's numba code, with and without ``openmp_unnested``.

The state it measures: scanpy's ``highly_variable_genes`` (also ``neighbors``, ``umap``)
runs numba's parallel code; without TBB, numba's OpenMP layer loads the system
``libgomp.so.1`` and turns nested parallelism on in it. torch, imported afterwards,
shares that runtime. Once anything has called ``torch.set_num_threads`` (a user, or
genept sizing its pool on a busy machine and restoring it), MKL's dynamic threading is
off, and every parallel element-wise op MKL evaluates (``sqrt`` in AdamW, ``exp`` in
softmax, ``erf`` in GELU) opens a nested team from inside torch's workers: a thread
created per call. genept now runs its CPU torch work inside
:func:`genept._core._device.openmp_unnested` (nesting off, restored after).

Each scenario runs in a fresh Python process, on ``sc.datasets.pbmc68k_reduced()``
(the log-normalised ``.raw``; an 80/20 stratified split by ``bulk_labels``):

* ``torch first`` -- ``import torch`` before ``highly_variable_genes`` (the reference:
  torch's own libgomp, nesting off);
* ``hvg first, unguarded`` -- ``highly_variable_genes``, then ``import torch``, then
  ``torch.set_num_threads(torch.get_num_threads())``, with genept's guard switched off
  (``_device._openmp_libraries`` returns nothing: what genept did before);
* ``hvg first, guarded`` -- the same with the guard (genept now).

Measured: a 3,072-element ``torch.sqrt`` inside genept's guard (the mechanism, µs per
call), MiniLM encoding of the cells' sentences (``embed_cells(method="s",
cache=False)``, cells/s) and ``annotate_scmpt`` with its defaults on ``X_pca``
(seconds; ``--n-jobs``: its thread count, default the free cores). ``--busy N`` runs
N spinning processes next to each run. Scenarios are run ``--repeats`` times,
interleaved; the table gives medians and their ratios against ``torch first``::

    python benchmarks/bench_openmp_nesting.py                        # ~4 min, 2 quiet cores
    python benchmarks/bench_openmp_nesting.py --busy 2 --n-jobs 2    # ~11 min
    python benchmarks/bench_openmp_nesting.py --busy 2 --n-jobs 1 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import numpy as np
from _busy import run_worker

WORKER = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
n_cells, scenario = int(sys.argv[1]), sys.argv[2]
n_jobs = None if sys.argv[3] == "auto" else int(sys.argv[3])
if scenario == "torch first":
    import torch
import numba
import scanpy as sc
from sklearn.model_selection import train_test_split
full = sc.datasets.pbmc68k_reduced()
a = full.raw.to_adata()
a.obs["bulk_labels"] = full.obs["bulk_labels"].values
sc.pp.highly_variable_genes(a, n_top_genes=300)   # numba's parallel code runs here
sc.pp.pca(a, n_comps=50, mask_var="highly_variable")
import torch
import genept as gpt
from genept._core import _device
gpt.settings.progress = False
if scenario != "torch first":
    torch.set_num_threads(torch.get_num_threads())
nested = any(_device._nesting_on(lib, prefix)[0] for prefix, lib in _device._openmp_libraries())
if scenario.endswith("unguarded"):
    _device._openmp_libraries = lambda: []
x = torch.rand(3072) + 0.5
with _device.openmp_unnested():   # the mechanism: one VML op, as genept runs it
    for _ in range(20):
        x.sqrt()
    t = time.perf_counter()
    for _ in range(300):
        x.sqrt()
    sqrt_us = (time.perf_counter() - t) / 300 * 1e6
enc = gpt.encoders.get_encoder("all-MiniLM-L6-v2", device="cpu")
enc.encode(["warm up the model"], cache=False)
sub = a[:n_cells].copy()
t = time.perf_counter()
gpt.tl.embed_cells(sub, method="s", model=enc, cache=False, show_progress=False)
enc_s = time.perf_counter() - t
ref_idx, q_idx = train_test_split(
    range(a.n_obs), test_size=0.2, stratify=a.obs["bulk_labels"], random_state=0
)
ref, q = a[list(ref_idx)].copy(), a[list(q_idx)].copy()
t = time.perf_counter()
gpt.tl.annotate_scmpt(
    q, ref, reps=["X_pca"], label_key="bulk_labels", key_added="s", n_jobs=n_jobs
)
fit_s = time.perf_counter() - t
acc = float((q.obs["s"].astype(str) == q.obs["bulk_labels"].astype(str)).mean())
print(json.dumps({
    "numba_layer": numba.threading_layer(), "nested": nested, "encode_cells_per_s": n_cells / enc_s,
    "scmpt_seconds": fit_s, "accuracy": acc, "threads": torch.get_num_threads(),
    "sqrt_us": sqrt_us,
}))
"""

SCENARIOS = ("torch first", "hvg first, unguarded", "hvg first, guarded")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", type=int, default=128, help="cells encoded with MiniLM")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds per run")
    ap.add_argument(
        "--n-jobs", default="auto", help="annotate_scmpt's n_jobs (default: auto, the free cores)"
    )
    ap.add_argument(
        "--busy", type=int, default=0, help="processes spinning on the cores during each run"
    )
    ap.add_argument("--repeats", type=int, default=3, help="runs per scenario (median)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"pbmc68k_reduced, {args.cells} cells encoded, scMPT on X_pca (n_jobs={args.n_jobs}); "
        f"{cores} cores, {args.busy} busy\n"
    )
    print(
        "| scenario | numba layer | nesting on | sqrt µs | encode cells/s | speed / torch first "
        "| scMPT s | time / torch first | scMPT accuracy |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    runs: dict[str, list[dict]] = {name: [] for name in SCENARIOS}
    for _ in range(args.repeats):  # interleaved, so slow drift hits every scenario alike
        for name in SCENARIOS:
            r = run_worker(
                WORKER, [str(args.cells), name, args.n_jobs], busy=args.busy, timeout=args.timeout
            )
            if r is not None:
                runs[name].append(r)

    def med(name: str, key: str) -> float:
        return float(np.median([r[key] for r in runs[name]])) if runs[name] else float("nan")

    base = SCENARIOS[0]
    for name in SCENARIOS:
        if not runs[name]:
            print(f"| {name} | ? | ? | | all {args.repeats} runs timed out | | | | |", flush=True)
            continue
        r = runs[name][0]
        enc, fit = med(name, "encode_cells_per_s"), med(name, "scmpt_seconds")
        accs = sorted({f"{x['accuracy']:.3f}" for x in runs[name]})
        print(
            f"| {name} | {r['numba_layer']} | {r['nested']} | {med(name, 'sqrt_us'):.1f} | "
            f"{enc:.1f} | {enc / med(base, 'encode_cells_per_s'):.2f} | {fit:.1f} | "
            f"{fit / med(base, 'scmpt_seconds'):.2f} | {' / '.join(accs)} |",
            flush=True,
        )
    print(
        f"\nmedians of {args.repeats} run(s) per scenario; ratios against '{base}' "
        "(nan where it timed out); sqrt: a 3,072-element torch.sqrt inside genept's guard"
    )


if __name__ == "__main__":
    main()
