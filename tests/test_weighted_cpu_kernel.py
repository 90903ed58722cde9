"""The CPU sparse kernel of GenePT-w: bitwise equal to scipy's float32 ``X @ E``.

The kernel keeps 64 output columns at a time in registers (an LLVM vector intrinsic) and
falls back to 32/16/8-wide and scalar loops for the rest of ``d``; every width and every
gene-chunk boundary must give exactly scipy's float32 result (each element summed over
the row's genes in order, multiply then add, never fused).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from genept._kernels.weighted import _cpu as cpu_mod
from genept.tl import weighted_embedding


def _skewed(n, g, nnz, seed=0):
    """Cells with ``nnz`` sorted distinct genes drawn with log-normal popularity (the
    benchmark's ``--skew`` data, small)."""
    rng = np.random.default_rng(seed)
    keys = rng.normal(0, 2.0, g) - np.log(-np.log(rng.random((n, g))))
    idx = np.sort(np.argpartition(-keys, nnz - 1, axis=1)[:, :nnz], axis=1)
    data = np.log1p(rng.gamma(0.7, 3.0, n * nnz)).astype(np.float32) + np.float32(0.01)
    return sparse.csr_matrix(
        (data, idx.ravel().astype(np.int32), np.arange(n + 1) * nnz), shape=(n, g)
    )


def _E(g, d, seed=1, coverage=0.8):
    rng = np.random.default_rng(seed)
    E = rng.standard_normal((g, d)).astype(np.float32)
    E[rng.random(g) >= coverage] = 0
    return E


def _sparse_only(monkeypatch):
    monkeypatch.setattr(cpu_mod, "_dense_threshold", lambda d: 2.0)


@pytest.mark.parametrize("d", [1, 5, 8, 13, 16, 24, 31, 40, 63, 64, 65, 100, 136, 200, 384])
def test_every_register_width_bitwise_equal_to_scipy(d, monkeypatch):
    _sparse_only(monkeypatch)
    X = _skewed(300, 500, 40, seed=d)
    E = _E(500, d, seed=d)
    emb, _ = weighted_embedding(X, E, normalize="none", device="cpu", show_progress=False)
    np.testing.assert_array_equal(emb, (X @ E).astype(np.float32))


@pytest.mark.parametrize("chunk", [1, 3, 16, 10_000])
@pytest.mark.parametrize("n_jobs", [1, 2])
def test_gene_chunks_and_threads_bitwise_equal_to_scipy(chunk, n_jobs, monkeypatch):
    _sparse_only(monkeypatch)
    monkeypatch.setattr(cpu_mod, "_gene_chunk", lambda d: chunk)
    X = _skewed(1100, 700, 60, seed=chunk)  # several 512-row sub-blocks
    X.data[X.indptr[5] : X.indptr[6]] = 0  # an empty row
    X.eliminate_zeros()
    E = _E(700, 72, seed=chunk)
    emb, w = weighted_embedding(
        X,
        E,
        normalize="none",
        device="cpu",
        n_jobs=n_jobs,
        block_rows=1024,
        show_progress=False,
    )
    np.testing.assert_array_equal(emb, (X @ E).astype(np.float32))
    assert not emb[5].any() and w[5] == 0


def test_kernel_never_fuses_multiply_add():
    """fp32 FMA would change the rounding (scipy multiplies, then adds): the kernel's IR
    has plain vector fmul/fadd on 64-wide accumulators and no fma / fast-math flags."""
    from numba import njit

    from genept._kernels.weighted import _numba

    kernel = njit(_numba._spmm_gene_chunks.py_func)  # fresh compile: the cache keeps no IR
    X, E = _skewed(20, 100, 10), _E(100, 64, coverage=1.0)
    out = np.empty((20, 64), np.float32)
    kernel(X.indptr.astype(np.int64), X.indices, X.data, E, out, 16, np.empty(20, np.int64))
    np.testing.assert_array_equal(out, X @ E)
    ir = "\n".join(kernel.inspect_llvm().values())
    assert "fadd <64 x float>" in ir and "fmul <64 x float>" in ir
    assert "llvm.fma" not in ir and "fmuladd" not in ir
    assert "fadd fast" not in ir and "contract" not in ir


def test_scan_fused_into_compaction_equals_separate_scan(monkeypatch):
    """A block sparse for sure (non-zeros / (rows x used genes) under the threshold) is
    scanned while compacted; one that needs the exact density is scanned first. Same
    numbers, bitwise, weight sums included."""
    X, E = _skewed(700, 400, 40, seed=5), _E(400, 48, seed=5, coverage=0.5)
    used = np.any(E != 0, axis=1)
    n_used = int(used.sum())
    density = X[:, used].nnz / (X.shape[0] * n_used)  # exact, over used genes
    bound = X.nnz / (X.shape[0] * n_used)  # what the fused path tests
    assert density < 0.8 * bound
    seen = []
    real = cpu_mod._cpu_block
    monkeypatch.setattr(cpu_mod, "_cpu_block", lambda *a, **k: seen.append(real(*a, **k)))
    got = {}
    for name, thr in {"scan first": (density + bound) / 2, "fused": 2.0}.items():
        monkeypatch.setattr(cpu_mod, "_dense_threshold", lambda d, thr=thr: thr)
        got[name] = weighted_embedding(X, E, normalize="none", device="cpu", show_progress=False)
    assert seen and set(seen) == {"sparse"}
    np.testing.assert_array_equal(got["fused"][0], got["scan first"][0])
    np.testing.assert_array_equal(got["fused"][1], got["scan first"][1])
    np.testing.assert_array_equal(got["fused"][0], (X @ E).astype(np.float32))
    np.testing.assert_allclose(got["fused"][1], X[:, used].sum(axis=1).A1, rtol=1e-6)

    Xn = X.copy()
    Xn.data[3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        weighted_embedding(Xn, E, device="cpu", show_progress=False)
