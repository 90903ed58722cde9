"""Quick GPU check of the GenePT-w stream and the GenePT-s gather on a bare CUDA image.

For a device machine that has torch, numba, scipy, pandas and sentence-transformers but
not anndata / scanpy / dask: those are stubbed (only module-level names are needed by
the kernels). Prints: pinned-copy baseline vs the stream at fp32/tf32/bf16 for a few
sizes with float64 errors, and MiniLM GenePT-s cells/s through the tokenizer and through
gathered ids.

    python benchmarks/gpu_smoke_nodeps.py --model .gpu_carry/minilm
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import types
from itertools import pairwise
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _stub_missing(names):
    class _Any:
        def __init__(self, *a, **k):
            pass

        def __call__(self, *a, **k):
            return _Any()

        def __getattr__(self, name):
            return _Any()

    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            mod = types.ModuleType(name)
            mod.__path__ = []

            def attr(name):
                if name.startswith("__"):
                    raise AttributeError(name)
                return _Any

            mod.__getattr__ = attr
            sys.modules[name] = mod
            print(f"(stubbed {name})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--cells", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    _stub_missing(
        [
            "anndata",
            "scanpy",
            "dask",
            "dask.array",
            "pooch",
            "legacy_api_wrap",
            "session_info2",
            "sklearn",
            "igraph",
            "leidenalg",
        ]
    )
    pkg = types.ModuleType("genept")
    pkg.__path__ = [str(REPO / "src" / "genept")]
    sys.modules["genept"] = pkg
    import torch

    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_genept_w_gpu import _median_time, synthetic_csr

    from genept._kernels.weighted._api import weighted_embedding

    print(torch.cuda.get_device_name(), torch.__version__)
    X = synthetic_csr(args.cells, 30000, 1935)
    nbytes = X.indices.nbytes + X.data.nbytes + X.indptr.nbytes
    pinned = [torch.from_numpy(a).pin_memory() for a in (X.indptr, X.indices, X.data)]
    t_copy = _median_time(lambda: [p.to("cuda", non_blocking=True) for p in pinned], args.repeat)
    pinned.clear()
    print(
        f"X {X.shape}, {X.nnz / 1e6:.1f}M nnz, {nbytes / 1e9:.2f} GB; pinned H2D {t_copy:.4f} s "
        f"({nbytes / t_copy / 1e9:.1f} GB/s)"
    )
    ref_rows = X[:2000].astype(np.float64)
    print("| d | precision | s | x copy | max row err |")
    for d in (384, 1536):
        E = np.random.default_rng(d).normal(size=(30000, d)).astype(np.float32)
        ref = np.asarray(ref_rows @ E.astype(np.float64))
        ref /= np.linalg.norm(ref, axis=1, keepdims=True)
        for p in ("fp32", "tf32", "bf16"):

            def run(p=p, E=E):
                return weighted_embedding(X, E, device="cuda", precision=p, show_progress=False)

            emb, _ = run()
            err = np.linalg.norm(emb[:2000] - ref, axis=1).max()
            t = _median_time(run, args.repeat)
            print(f"| {d} | {p} | {t:.4f} | {t / t_copy:.2f}x | {err:.1e} |", flush=True)
    # where the time goes (d=384 fp32): staging only, by switching the GEMM off
    from genept._kernels.weighted import _torch_csr as tc

    if args.model:
        from genept.encoders._sentence_transformers import SentenceTransformerEncoder
        from genept.encoders._token_gather import encode_gathered

        enc = SentenceTransformerEncoder(args.model, device="cuda")
        model = enc.model
        rng = np.random.default_rng(0)
        genes = np.array([f"GENE{i}" for i in range(2000)] + ["HLA-DRA", "MT-CO1", "RPL13"])
        n = 20000
        k = 75
        cg = rng.integers(0, genes.size, size=n * k).astype(np.int32)
        ptr = np.arange(0, n * k + 1, k, dtype=np.int64)
        table = enc.word_table(genes)
        texts = [" ".join(genes[cg[a:b]]) for a, b in pairwise(ptr)]
        ids, ln = table.input_ids(ptr[:201], cg[: ptr[200]])
        ref = model.tokenizer(texts[:200], truncation=True, max_length=table.max_len)["input_ids"]
        same = all(r == ids[i, : ln[i]].tolist() for i, r in enumerate(ref))
        print(
            f"gathered ids == tokenizer ids on 200 sentences: {same}; mean tokens {ln.mean():.0f}"
        )
        for bs in (256, 1024):
            encode_gathered(model, table, ptr[: bs + 1], cg[: ptr[bs]], batch_size=bs)
            torch.cuda.synchronize()
            t = time.perf_counter()
            v1 = encode_gathered(model, table, ptr, cg, batch_size=bs)
            torch.cuda.synchronize()
            t_g = time.perf_counter() - t
            t = time.perf_counter()
            for b in range(0, 4096, bs):
                enc._encode(texts[b : b + bs])
            torch.cuda.synchronize()
            t_t = (time.perf_counter() - t) * n / 4096
            v2 = enc._encode(texts[:64])
            cos = (
                (v1[:64] * v2).sum(1) / np.linalg.norm(v1[:64], axis=1) / np.linalg.norm(v2, axis=1)
            )
            print(
                f"GenePT-s batch {bs}: gather path {n / t_g:,.0f} cells/s, text path "
                f"{n / t_t:,.0f} cells/s; cos(gather, text) min {cos.min():.5f}",
                flush=True,
            )
    del tc


if __name__ == "__main__":
    main()
