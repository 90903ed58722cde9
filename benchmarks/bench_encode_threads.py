"""Benchmark: GenePT-s encoding speed on CPU, torch's default thread pool vs genept's sizing.

Encodes the cell sentences of ``sc.datasets.pbmc68k_reduced()`` (the log-normalised
``.raw``) with the packaged all-MiniLM-L6-v2 (``gpt.tl.embed_cells(method="s",
cache=False)``), in a fresh Python process per run:

* ``all cores``: ``gpt.settings.n_jobs = None``, torch's default of one thread per core
  (genept's default for encoding);
* ``free cores``: ``gpt.settings.n_jobs`` set to the cores not kept busy by other
  processes, as scMPT training sizes its pool (:func:`genept._core._device.torch_n_threads`,
  measured in the worker under the same load).

Measured here (2 cores): quiet 21-22 cells/s both; with two busy cores 9.9 cells/s
on all cores and 8.0 on the one free core (0.8x), so encoding keeps torch's default.

Conditions: ``quiet``, and ``busy`` -- as many ``python -c "while True: pass"`` processes
as cores, started before and killed after each busy run. The ratio default/auto is
measured within one invocation, so it holds on any machine::

    python benchmarks/bench_encode_threads.py                  # ~3-10 min on 2 cores
    python benchmarks/bench_encode_threads.py --cells 100 --conditions busy
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from _busy import run_worker

WORKER = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import scanpy as sc
import genept as gpt
n_cells, mode = int(sys.argv[1]), sys.argv[2]
gpt.settings.progress = False
from genept._core._device import torch_n_threads
gpt.settings.n_jobs = torch_n_threads() if mode == "free" else None
a = sc.datasets.pbmc68k_reduced().raw.to_adata()[:n_cells].copy()
enc = gpt.encoders.get_encoder("all-MiniLM-L6-v2", device="cpu")
enc.encode(["warm up the model"], cache=False)
import torch
used = gpt.settings.n_jobs or torch.get_num_threads()
t = time.perf_counter()
gpt.tl.embed_cells(a, method="s", model=enc, cache=False, show_progress=False)
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "cells_per_s": n_cells / dt, "threads": used}))
"""


def run(n_cells: int, mode: str, busy: int, timeout: float) -> dict:
    r = run_worker(WORKER, [str(n_cells), mode], busy=busy, timeout=timeout)
    if r is None:
        return {"seconds": float("inf"), "cells_per_s": n_cells / timeout, "threads": "?"}
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", type=int, default=200)
    ap.add_argument("--conditions", nargs="+", default=["quiet", "busy"], choices=["quiet", "busy"])
    ap.add_argument("--timeout", type=float, default=900, help="seconds per run")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"pbmc68k_reduced cell sentences, {args.cells} cells, all-MiniLM-L6-v2; {cores} cores\n")
    print("| condition | torch threads | threads | seconds | cells/s | all/free time |")
    print("|---|---|---:|---:|---:|---:|")
    for cond in args.conditions:
        res = {}
        for name, mode in (("all cores", "all"), ("free cores", "free")):
            r = res[name] = run(args.cells, mode, cores if cond == "busy" else 0, args.timeout)
            ratio = ""
            if name == "free cores":
                ratio = f"{res['all cores']['seconds'] / r['seconds']:.1f}x"
            print(
                f"| {cond} | {name} | {r['threads']} | {r['seconds']:.1f} | "
                f"{r['cells_per_s']:.1f} | {ratio} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
