"""GenePT-w on a GPU against the hardware's copy rate, same run.

A synthetic cells x genes CSR (default 100,000 x 30,000, 1,935 non-zeros per cell:
193.5M non-zeros, 1.55 GB of int32 indices + float32 values; sorted random columns drawn
cheaply by "stars and bars") is embedded with ``weighted_embedding(device="cuda")`` at
fp32 (3xTF32), tf32 and bf16 for each ``--dims``; the baseline is ONE pinned
host-to-device copy of the same CSR arrays, measured in the same run. Also timed:
``gpt.tl.embed_cells(device="cuda")`` on an AnnData holding the same matrix (overhead of
the AnnData layer over the kernel), and the CPU numba kernel with all cores. Accuracy:
each precision against a float64 scipy product on the first ``--check-rows`` cells
(norm-relative error of the rows).

    python benchmarks/bench_genept_w_gpu.py [--cells 100000] [--dims 384 1536]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy import sparse


def synthetic_csr(n: int, g: int, k: int, seed: int = 0, block: int = 8192) -> sparse.csr_matrix:
    """``n x g`` CSR with ``k`` sorted distinct random columns per row (stars and bars)."""
    rng = np.random.default_rng(seed)
    indices = np.empty(n * k, np.int32)
    for a in range(0, n, block):
        b = min(a + block, n)
        e = rng.exponential(size=(b - a, k + 1)).astype(np.float32)
        np.cumsum(e, axis=1, out=e)
        u = e[:, :k] / e[:, k:]
        cols = (u * (g - k)).astype(np.int32) + np.arange(k, dtype=np.int32)
        indices[a * k : b * k] = np.minimum(cols, g - 1).ravel()
    data = rng.random(n * k, dtype=np.float32) * 3 + 0.1
    indptr = np.arange(0, (n + 1) * k, k, dtype=np.int64)
    return sparse.csr_matrix((data, indices, indptr), shape=(n, g))


def _median_time(fn, repeat: int) -> float:
    import torch

    ts = []
    for _ in range(repeat):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def main(argv=None) -> None:
    import torch

    from genept.tl import weighted_embedding

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=100_000)
    ap.add_argument("--genes", type=int, default=30_000)
    ap.add_argument("--nnz-per-cell", type=int, default=1935)
    ap.add_argument("--dims", type=int, nargs="+", default=[384, 1536])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "tf32", "bf16"])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--check-rows", type=int, default=3000)
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU numba row")
    ap.add_argument("--no-anndata", action="store_true", help="skip embed_cells")
    ap.add_argument(
        "--breakdown",
        action="store_true",
        help="also time the stages alone and pipeline variants (threads, block size)",
    )
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("needs CUDA")

    t = time.perf_counter()
    X = synthetic_csr(args.cells, args.genes, args.nnz_per_cell)
    nbytes = X.indices.nbytes + X.data.nbytes + X.indptr.nbytes
    print(
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {os.cpu_count()} CPUs; "
        f"X {X.shape[0]:,} x {X.shape[1]:,}, {X.nnz / 1e6:.1f}M non-zeros, "
        f"{nbytes / 1e9:.2f} GB CSR (made in {time.perf_counter() - t:.1f} s)"
    )

    # baseline: one pinned host-to-device copy of the CSR arrays
    pinned = [torch.from_numpy(a).pin_memory() for a in (X.indptr, X.indices, X.data)]
    t_copy = _median_time(lambda: [p.to("cuda", non_blocking=True) for p in pinned], args.repeat)
    pinned.clear()
    print(f"pinned H2D copy of the CSR: {t_copy:.4f} s ({nbytes / t_copy / 1e9:.1f} GB/s)")

    rows = []
    ref_rows = X[: args.check_rows].astype(np.float64)
    for d in args.dims:
        E = np.random.default_rng(d).normal(size=(args.genes, d)).astype(np.float32)
        ref = np.asarray(ref_rows @ E.astype(np.float64))
        ref /= np.linalg.norm(ref, axis=1, keepdims=True)
        for p in args.precisions:

            def run(p=p, E=E):
                return weighted_embedding(X, E, device="cuda", precision=p, show_progress=False)

            emb, _ = run()  # warm-up: pinned buffers, cuBLAS handles
            err = np.linalg.norm(emb[: args.check_rows] - ref, axis=1).max()
            t_k = _median_time(run, args.repeat)
            rows.append((f"weighted_embedding {p}", d, t_k, err))
        if not args.no_anndata:
            import anndata as ad

            import genept as gpt

            adata = ad.AnnData(X)
            adata.varm["X_genept"] = E

            def cells(adata=adata):
                gpt.tl.embed_cells(adata, method="w", device="cuda", show_progress=False)

            cells()
            rows.append(("embed_cells (fp32)", d, _median_time(cells, args.repeat), float("nan")))
        if not args.no_cpu:
            t = time.perf_counter()
            weighted_embedding(X, E, device="cpu", show_progress=False)
            rows.append(
                (f"CPU numba, {os.cpu_count()} threads", d, time.perf_counter() - t, float("nan"))
            )

    if args.breakdown:
        breakdown(X, args, t_copy)
    print(
        f"\n| path | d | seconds | x pinned H2D copy ({t_copy:.4f} s) | max row error vs float64 |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, d, t_run, err in rows:
        e = f"{err:.1e}" if err == err else "-"
        print(f"| {name} | {d} | {t_run:.4f} | {t_run / t_copy:.2f}x | {e} |")


def breakdown(X, args, t_copy: float) -> None:
    """Each stage of the stream alone, then the whole stream under other settings."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from genept._kernels.weighted import _torch_csr as tc
    from genept._kernels.weighted._plan import _make_plan
    from genept.tl import weighted_embedding

    threads = min(16, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(threads)
    nnz = X.nnz
    h_idx = torch.empty(tc.BLOCK_NNZ, dtype=torch.int32, pin_memory=True).numpy()
    h_val = torch.empty(tc.BLOCK_NNZ, dtype=torch.float32, pin_memory=True).numpy()

    def stage_all():
        for s in range(0, nnz, tc.BLOCK_NNZ):
            e = min(s + tc.BLOCK_NNZ, nnz)
            jobs = []
            for p, q in tc._split(s, e, threads):
                jobs.append(pool.submit(tc._copy_piece, h_idx[p - s : q - s], X.indices[p:q]))
                jobs.append(pool.submit(tc._copy_piece, h_val[p - s : q - s], X.data[p:q]))
            for f in jobs:
                f.result()

    t_stage = _median_time(stage_all, args.repeat)
    print(f"\nstages alone ({threads} host threads):")
    print(
        f"  host staging of the CSR into pinned slots: {t_stage:.4f} s "
        f"({(X.indices.nbytes + X.data.nbytes) / t_stage / 1e9:.1f} GB/s)"
    )
    dev = torch.device("cuda")
    d_ptr = torch.from_numpy(X.indptr.astype(np.int64)).to(dev)
    d_idx = torch.from_numpy(X.indices).to(dev)
    d_val = torch.from_numpy(X.data).to(dev)
    for d in args.dims:
        n = X.shape[0]
        pinned_out = torch.empty((n, d), dtype=torch.float32, pin_memory=True)

        def out_copy(fresh=True, n=n, d=d, pinned_out=pinned_out):
            out = np.empty((n, d), np.float32)
            jobs = []
            if fresh:
                jobs = tc._prefault(out, pool.submit, threads)
                for f in jobs:
                    f.result()
            po = pinned_out.numpy()
            jobs = [
                pool.submit(tc._copy_piece, out[p:q], po[p:q])
                for p, q in tc._split(0, n, threads, align=64)
            ]
            for f in jobs:
                f.result()

        t_out = _median_time(out_copy, args.repeat)
        E = np.random.default_rng(d).normal(size=(X.shape[1], d)).astype(np.float32)
        plan = _make_plan(E)
        for p in args.precisions:
            restore = tc._fp32_mode(p)
            mm = tc.DeviceMatmul(plan, dev, p)
            comp = tc.BlockCompute(mm, normalize="l2", n_total=X.shape[1])
            max_rows = tc.DENSE_BLOCK_BYTES["cuda"] // (4 * mm.K)
            bounds = tc.block_bounds(X.indptr, block_nnz=tc.BLOCK_NNZ, max_rows=max_rows)

            def gpu_only(comp=comp, bounds=bounds):
                for a, b in bounds:
                    s, e = int(X.indptr[a]), int(X.indptr[b])
                    comp(d_ptr[a : b + 1] - s, d_idx[s:e], d_val[s:e], b - a)

            gpu_only()
            t_gpu = _median_time(gpu_only, args.repeat)
            restore()
            print(
                f"  d={d} {p}: GPU compute alone {t_gpu:.4f} s ({len(bounds)} blocks); "
                f"output copy pinned->numpy (prefaulted in parallel) {t_out:.4f} s"
            )
    print("stream variants (d=384, fp32):")
    E = np.random.default_rng(384).normal(size=(X.shape[1], 384)).astype(np.float32)
    saved = tc.BLOCK_NNZ
    for bnnz in (8 * 2**20, 16 * 2**20, 32 * 2**20):
        tc.BLOCK_NNZ = bnnz

        def run():
            return weighted_embedding(X, E, device="cuda", precision="fp32", show_progress=False)

        run()
        t = _median_time(run, args.repeat)
        print(f"  block {bnnz / 2**20:.0f}M non-zeros: {t:.4f} s ({t / t_copy:.2f}x copy)")
    tc.BLOCK_NNZ = saved
    pool.shutdown()


if __name__ == "__main__":
    main()
