"""Benchmark of GenePT-w (``genept.tl.weighted_embedding``).

Speed mode (default): a synthetic CSR at scRNA-seq density; prints, measured in the same
run, genept CPU time vs scipy ``X @ E`` (float32, single-threaded) with the max abs
difference (wall-clock best of ``--repeat``, interleaved; also the ratio of process CPU
times, which a busy shared machine disturbs less, and the 1-minute load average at the
end of each row), and with CUDA the GPU end-to-end time (host CSR in, host array out) vs one
pinned host-to-device copy of the CSR arrays.

    python benchmarks/bench_genept_w.py --cells 20000 --genes 30000 --nnz-per-cell 2000 \
        --dims 1536 384 [--skew] [--device cuda] [--repeat 3]

Memory mode: writes a backed h5ad (CSR, chunk-wise, never whole in memory) and embeds
it in a child process; reports peak RSS above the child's baseline (imports + E)
minus the output size.

    python benchmarks/bench_genept_w.py --memory --cells 1000000 --dims 384
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from scipy import sparse


def synthetic_csr(n, g, nnz, *, skew=False, seed=0, chunk=500):
    """n x g CSR, exactly ``nnz`` sorted distinct genes per cell, log1p-like values.

    ``skew``: genes drawn with log-normal popularity (as in real scRNA-seq, where a few
    thousand genes carry most non-zeros), via the Gumbel top-k trick.
    """
    rng = np.random.default_rng(seed)
    logw = rng.normal(0, 2.0, g) if skew else np.zeros(g)
    indices = np.empty(n * nnz, np.int32)
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        keys = logw - np.log(-np.log(rng.random((b - a, g))))
        top = np.argpartition(-keys, nnz - 1, axis=1)[:, :nnz]
        top.sort(axis=1)
        indices[a * nnz : b * nnz] = top.ravel()
    data = np.log1p(rng.gamma(0.7, 3.0, n * nnz)).astype(np.float32) + np.float32(0.01)
    indptr = np.arange(n + 1, dtype=np.int64) * nnz
    return sparse.csr_matrix((data, indices, indptr), shape=(n, g))


def embeddings(g, d, *, coverage=0.9, seed=1):
    rng = np.random.default_rng(seed)
    E = rng.standard_normal((g, d)).astype(np.float32)
    E[rng.random(g) >= coverage] = 0  # genes without a GenePT embedding
    return E


def best_of(fn, repeat):
    best, res = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = fn()
        best = min(best, time.perf_counter() - t0)
    return best, res


def timed(fn):
    """(wall s, CPU s of this process, result) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    res = fn()
    return time.perf_counter() - w0, time.process_time() - c0, res


def speed(args):
    from genept.tl import weighted_embedding

    X = synthetic_csr(args.cells, args.genes, args.nnz_per_cell, skew=args.skew)
    print(
        f"X: {X.shape[0]} x {X.shape[1]}, {X.nnz / X.shape[0]:.0f} nnz/cell, "
        f"skew={args.skew}, coverage={args.coverage}, threads={args.n_jobs or os.cpu_count()}"
    )
    rows = []
    for d in args.dims:
        E = embeddings(args.genes, d, coverage=args.coverage)
        flop = 2 * X.nnz * d
        # warm-up (numba compile / caches), then interleaved best-of-N
        weighted_embedding(X[:300], E, normalize="none", device="cpu", show_progress=False)
        t_sp, t_gp, c_sp, c_gp = np.inf, np.inf, np.inf, np.inf
        for _ in range(args.repeat):
            t, c, ref = timed(lambda E=E: X @ E)
            t_sp, c_sp = min(t_sp, t), min(c_sp, c)
            t, c, (emb, _) = timed(
                lambda E=E: weighted_embedding(
                    X, E, normalize="none", device="cpu", n_jobs=args.n_jobs, show_progress=False
                )
            )
            t_gp, c_gp = min(t_gp, t), min(c_gp, c)
        diff = float(np.abs(emb - ref).max())
        rows.append(
            (
                "cpu",
                d,
                t_sp,
                t_gp,
                t_sp / t_gp,
                f"{c_sp / c_gp:.2f}",
                flop / t_gp / 1e9,
                diff,
                bool(np.array_equal(emb, ref)),
                f"{os.getloadavg()[0]:.1f}",
            )
        )
        if args.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                print("CUDA not available; skipping GPU rows")
            else:
                parts = [
                    torch.from_numpy(np.ascontiguousarray(a)).pin_memory()
                    for a in (X.indptr, X.indices, X.data)
                ]

                def h2d(parts=parts):
                    out = [p.to("cuda", non_blocking=True) for p in parts]
                    torch.cuda.synchronize()
                    return out

                h2d()
                t_copy, _ = best_of(h2d, args.repeat)
                for prec in ("fp32", "tf32", "bf16"):
                    weighted_embedding(
                        X[:2000], E, device="cuda", precision=prec, show_progress=False
                    )
                    t_gpu, (eg, _) = best_of(
                        lambda prec=prec, E=E: weighted_embedding(
                            X,
                            E,
                            normalize="none",
                            device="cuda",
                            precision=prec,
                            show_progress=False,
                        ),
                        args.repeat,
                    )
                    rows.append(
                        (
                            f"cuda {prec}",
                            d,
                            t_copy,
                            t_gpu,
                            t_copy / t_gpu,
                            "",
                            flop / t_gpu / 1e9,
                            float(np.abs(eg - ref).max()),
                            False,
                            f"{os.getloadavg()[0]:.1f}",
                        )
                    )
    print()
    print(
        "| path | d | baseline s (scipy X@E / pinned H2D copy) | genept s | baseline/genept | "
        "CPU-time ratio | GFLOP/s (2*nnz*d) | max abs diff vs scipy | bitwise | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for p, d, tb, tg, r, cr, gf, diff, bw, load in rows:
        print(
            f"| {p} | {d} | {tb:.3f} | {tg:.3f} | {r:.2f} | {cr} | {gf:.1f} | {diff:.2e} | "
            f"{bw} | {load} |"
        )


def write_backed(path, n, g, nnz, chunk=20000):
    """Write an anndata-readable CSR h5ad chunk by chunk (never whole in memory)."""
    import anndata as ad
    import h5py
    import pandas as pd

    ad.AnnData(
        obs=pd.DataFrame(index=[str(i) for i in range(1)]),
        var=pd.DataFrame(index=[f"g{i}" for i in range(g)]),
    ).write_h5ad(path)
    with h5py.File(path, "a") as f:
        if "X" in f:
            del f["X"]
        grp = f.create_group("X")
        grp.attrs.update(
            {"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": (n, g)}
        )
        dset = grp.create_dataset("data", (0,), np.float32, maxshape=(None,), chunks=(1 << 20,))
        iset = grp.create_dataset("indices", (0,), np.int32, maxshape=(None,), chunks=(1 << 20,))
        grp.create_dataset("indptr", data=np.arange(n + 1, dtype=np.int64) * nnz)
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            rng = np.random.default_rng(a)  # fast: sorted random genes (repeats add up)
            idx = np.sort(rng.integers(0, g, ((b - a), nnz), dtype=np.int32), axis=1)
            Xc = sparse.csr_matrix(
                (
                    rng.random((b - a) * nnz, dtype=np.float32) * 3,
                    idx.ravel(),
                    np.arange(b - a + 1, dtype=np.int64) * nnz,
                ),
                shape=(b - a, g),
            )
            m = dset.shape[0]
            dset.resize((m + Xc.nnz,))
            iset.resize((m + Xc.nnz,))
            dset[m:] = Xc.data
            iset[m:] = Xc.indices


def memory_child(path, d, block_rows):
    import h5py
    import psutil

    try:
        from anndata.io import sparse_dataset
    except ImportError:  # pragma: no cover
        from anndata.experimental import sparse_dataset
    from genept.tl import weighted_embedding

    with h5py.File(path, "r") as f:
        X = sparse_dataset(f["X"])
        E = embeddings(X.shape[1], d)
        weighted_embedding(X[:100], E, device="cpu", show_progress=False)  # compile
        base = psutil.Process().memory_info().rss
        t0 = time.perf_counter()
        emb, w = weighted_embedding(X, E, device="cpu", block_rows=block_rows, show_progress=False)
        dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out_b = emb.nbytes + w.nbytes
    print(f"RESULT {emb.shape[0]} {d} {base} {peak} {out_b} {dt}")


def memory(args):
    tmp = tempfile.mkdtemp(prefix="genept_bench_")
    path = os.path.join(tmp, "backed.h5ad")
    t0 = time.perf_counter()
    write_backed(path, args.cells, args.genes, args.nnz_per_cell)
    print(
        f"wrote {path} ({os.path.getsize(path) / 2**30:.2f} GiB) in {time.perf_counter() - t0:.0f} s"
    )
    print(
        "| cells | d | baseline RSS MiB | peak RSS MiB | output MiB | peak - baseline - output MiB | time s |"
    )
    print("|---|---|---|---|---|---|---|")
    try:
        for d in args.dims:
            res = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--memory-child",
                    path,
                    "--dims",
                    str(d),
                    "--block-rows",
                    str(args.block_rows),
                ],
                capture_output=True,
                text=True,
            )
            if res.returncode:
                raise RuntimeError(res.stderr[-3000:])
            line = next(ln for ln in res.stdout.splitlines() if ln.startswith("RESULT"))
            n, dd, base, peak, out_b, dt = line.split()[1:]
            mib = 2**20
            base, peak, out_b = int(base), int(peak), int(out_b)
            print(
                f"| {n} | {dd} | {base / mib:.0f} | {peak / mib:.0f} | {out_b / mib:.0f} | "
                f"{(peak - base - out_b) / mib:.0f} | {float(dt):.1f} |"
            )
    finally:
        os.remove(path)
        os.rmdir(tmp)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", type=int, default=100_000)
    p.add_argument("--genes", type=int, default=30_000)
    p.add_argument("--nnz-per-cell", type=int, default=2000)
    p.add_argument("--dims", type=int, nargs="+", default=[1536, 384])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--skew", action="store_true", help="log-normal gene popularity")
    p.add_argument(
        "--coverage", type=float, default=0.9, help="fraction of genes with an embedding"
    )
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--n-jobs", type=int, default=None)
    p.add_argument("--block-rows", type=int, default=4096)
    p.add_argument("--memory", action="store_true")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.dims[0], args.block_rows)
    elif args.memory:
        memory(args)
    else:
        speed(args)


if __name__ == "__main__":
    main()
