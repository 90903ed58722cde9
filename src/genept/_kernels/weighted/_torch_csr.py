"""GenePT-w on a GPU at the host-copy rate: in-memory CSR streamed through pinned slots.

For an in-memory scipy CSR matrix (the common case) the row blocks are zero-copy views
of ``indptr`` / ``indices`` / ``data``; no scipy slicing, no per-block conversion. The
pipeline keeps four stages busy at once:

1. **stage**: a pool of host threads copies block ``j + S - 1``'s indices (as int32) and
   values (as float32) into one of ``S`` pinned slots, each thread a contiguous piece
   (numpy copies release the GIL; 16 threads reach 30-45 GB/s where one reaches 9);
2. **upload**: block ``j``'s slot goes to the GPU on a copy stream (pinned: full PCIe /
   C2C rate, asynchronous);
3. **compute**: on the compute stream, the block is densified over the embedded genes
   (one scatter) and multiplied by the resident ``E_used`` (see :class:`DeviceMatmul`);
   rows are normalised there;
4. **download**: the block's rows go back on a third stream into a pinned output slot,
   then host threads copy them into the numpy result.

Each stage waits on CUDA events only where a buffer is reused, never on the whole
device, so host copies, both DMA directions and the GPU's arithmetic overlap. On a torch
CPU device (CI) the same blocks run without streams or pinning.

``fp32`` on CUDA is "3xTF32": each operand is split into a TF32 head and a TF32 tail
and three tensor-core products (head*head + head*tail + tail*head) are summed in fp32,
which matches float64 to about 1e-6 (the dropped tail*tail term is ~2^-22 relative) at
about a third of the tensor-core rate instead of the 15x slower IEEE fp32 SIMT path.
"""

from __future__ import annotations

import os
import threading
import warnings
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import numpy as np
from scipy import sparse

from ._plan import _Plan, _progress, _raise_if_bad, _Stats

#: non-zeros per streamed block (int32 + float32: 8 bytes each)
BLOCK_NNZ = 16 * 2**20
#: the densified block (rows x padded used genes, fp32) stays under this many bytes
DENSE_BLOCK_BYTES = {"cuda": 2 * 2**30, "cpu": 64 * 2**20}
#: pinned staging slots (blocks in flight between host copy and upload)
N_SLOTS = 3
#: density under which cuSPARSE SpMM beats densify + GEMM
SPARSE_BELOW = 0.01
#: fp32 on CUDA as three TF32 products (False: IEEE fp32 SIMT GEMM)
FP32_AS_3XTF32 = True
_TF32_MASK = np.int32(-8192)  # 0xFFFFE000: keep sign, exponent and 10 mantissa bits


def inmemory_csr(X: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """``(indptr, indices, data)`` of an in-memory scipy CSR matrix/array, else ``None``."""
    if not sparse.issparse(X) or X.format != "csr":
        return None
    parts = (X.indptr, X.indices, X.data)
    if not all(isinstance(p, np.ndarray) for p in parts):
        return None
    return parts


def block_bounds(indptr: np.ndarray, *, block_nnz: int, max_rows: int) -> list[tuple[int, int]]:
    """Row ranges of at most ``block_nnz`` non-zeros (one row may exceed it) and ``max_rows`` rows each."""
    n = indptr.shape[0] - 1
    out, a = [], 0
    base = int(indptr[0])
    while a < n:
        target = int(indptr[a]) + block_nnz
        b = int(np.searchsorted(indptr, target, side="right")) - 1
        b = max(a + 1, min(b, a + max_rows, n))
        out.append((a, b))
        a = b
    del base
    return out


def _split(a: int, b: int, parts: int, align: int = 1 << 14) -> list[tuple[int, int]]:
    step = max(align, -(-(b - a) // max(1, parts)))
    return [(s, min(s + step, b)) for s in range(a, b, step)]


class DeviceMatmul:
    """``E_used`` resident on the device and the product of a densified block with it."""

    def __init__(self, plan: _Plan, dev, precision: str):
        import torch

        self.dev, self.precision = dev, precision
        self.cuda = dev.type == "cuda"
        self.n_used, self.d = plan.n_used, plan.d
        # unused genes map to the zero row n_used; K padded to 16 (aligned tensor-core tiles)
        self.K = -(-(self.n_used + 1) // 16) * 16
        E = torch.zeros((self.K, self.d), dtype=torch.float32, device=dev)
        if self.n_used:
            E[: self.n_used].copy_(torch.from_numpy(plan.E_used))
        self.E = E
        self.split = self.cuda and precision == "fp32" and FP32_AS_3XTF32
        if self.split:
            self.E_hi, self.E_lo = _tf32_split(E)
        elif precision == "bf16":
            self.E_bf16 = E.to(torch.bfloat16)
        colmap = plan.colmap.astype(np.int32)
        colmap[colmap < 0] = self.n_used
        self.colmap = torch.from_numpy(colmap).to(dev)

    def dense(self, A, A_lo=None):
        """``A @ E`` for a dense fp32 block, in the configured precision, fp32 out.

        With the 3xTF32 split, ``A`` must be TF32-exact and ``A_lo`` its fp32 remainder
        (built by scattering the split values: no dense split pass).
        """
        import torch

        if self.precision == "bf16":
            A16 = A.to(torch.bfloat16)
            if self.cuda:
                try:  # bf16 operands, fp32 accumulate and output
                    return torch.mm(A16, self.E_bf16, out_dtype=torch.float32)
                except (TypeError, RuntimeError):  # pragma: no cover - older torch
                    pass
            return (A16 @ self.E_bf16).float()
        if self.split:
            if A_lo is None:
                A, A_lo = _tf32_split(A)
            out = A_lo @ self.E_hi  # small terms first
            out.addmm_(A, self.E_lo)
            out.addmm_(A, self.E_hi)
            return out
        return A @ self.E

    def sparse(self, ptr, cols, vals, rows: int):
        import torch

        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.filterwarnings("ignore", "Sparse CSR tensor support", UserWarning)
            A = torch.sparse_csr_tensor(
                ptr, cols, vals, size=(rows, self.K), check_invariants=False
            )
        return torch.sparse.mm(A, self.E)


def _tf32_split(A):
    """``A = hi + lo`` with ``hi`` exactly representable in TF32 (and ``lo`` exact in fp32)."""
    import torch

    hi = (A.view(torch.int32) & int(_TF32_MASK)).view(torch.float32)
    return hi, A - hi


class BlockCompute:
    """One block on the device: checks, weight sums, densify, product, normalisation."""

    def __init__(self, mm: DeviceMatmul, *, normalize: str, n_total: int):
        import torch

        self.mm, self.normalize, self.n_total = mm, normalize, n_total
        self.vmin = torch.full((), float("inf"), dtype=torch.float32, device=mm.dev)
        self.nbad = torch.zeros((), dtype=torch.int64, device=mm.dev)

    def __call__(self, ptr, idx, val, rows: int, *, remapped: bool = False, use_sparse=False):
        """``ptr`` int64 (rows + 1, from 0), ``idx`` gene (or, ``remapped``, used-gene) indices, ``val`` fp32. Returns ``(emb fp32 (rows, d), weight sums fp64 (rows,))``."""
        import torch

        mm, dev = self.mm, self.mm.dev
        nnz = idx.numel()
        counts = ptr[1:] - ptr[:-1]
        cols = idx.long() if remapped else mm.colmap.index_select(0, idx).long()
        finite = torch.isfinite(val)
        if nnz:
            self.nbad += (~finite).sum()
            self.vmin = torch.minimum(self.vmin, torch.where(finite, val, torch.inf).min())
        vals = torch.where(finite, val, 0.0)
        if nnz == 0:
            emb = torch.zeros((rows, mm.d), dtype=torch.float32, device=dev)
            ws = torch.zeros(rows, dtype=torch.float64, device=dev)
        elif use_sparse:
            row_ids = torch.repeat_interleave(
                torch.arange(rows, device=dev), counts, output_size=nnz
            )
            usedv = torch.where(cols < mm.n_used, vals.double(), 0.0)
            ws = torch.zeros(rows, dtype=torch.float64, device=dev).index_add_(0, row_ids, usedv)
            emb = mm.sparse(ptr, cols, vals, rows)
        else:  # densify over the used genes (one scatter per part), then tensor cores
            flat = torch.repeat_interleave(
                torch.arange(0, rows * mm.K, mm.K, device=dev), counts, output_size=nnz
            ).add_(cols)
            parts = _tf32_split(vals) if mm.split else (vals,)
            dense = []
            for v in parts:
                A = torch.zeros((rows, mm.K), dtype=torch.float32, device=dev)
                A.view(-1).index_add_(0, flat, v)
                dense.append(A)
            # weight sums from the dense block: float64 sums of the fp32 values
            ws = sum(A[:, : mm.n_used].sum(1, dtype=torch.float64) for A in dense)
            emb = mm.dense(*dense)
        if self.normalize == "l2":
            norms = torch.linalg.vector_norm(emb, dim=1, keepdim=True, dtype=torch.float64)
            emb = torch.where(norms > 0, emb / norms.clamp_min(1e-300).float(), emb)
        elif self.normalize == "notebook":
            emb = emb / float(self.n_total)
        return emb, ws

    def stats(self) -> _Stats:
        return _Stats(vmin=float(self.vmin.item()), n_bad=int(self.nbad.item()))


class _Slot:
    """Pinned (on CUDA) host buffers of one block in flight, grown on demand."""

    def __init__(self, pin: bool):
        self.pin = pin
        self.bufs: dict[str, Any] = {}
        self.event = None  # CUDA event after which the buffers may be reused
        self.jobs: list[Future] = []  # host copies still writing / reading the buffers

    def host(self, name: str, n: int, dtype):
        import torch

        t = self.bufs.get(name)
        if t is None or t.numel() < n or t.dtype != dtype:
            t = torch.empty(max(int(n * 1.125), 1), dtype=dtype, pin_memory=self.pin)
            self.bufs[name] = t
        return t[:n]

    def settle(self) -> None:
        """Wait until nothing still uses the buffers (host copies, then the device)."""
        if self.jobs:
            for f in self.jobs:
                f.result()
            self.jobs = []
        if self.event is not None:
            self.event.synchronize()
            self.event = None


def _prefault(arr: np.ndarray, run, threads: int) -> list[Future]:
    """Touch every page of a fresh output array from the pool (the kernel zero-fills pages at first touch: done in parallel, ahead of the copies, not inside them)."""
    flat = arr.reshape(-1)
    step = max(1, 4096 // flat.itemsize)
    return [run(_touch, flat, p, q, step) for p, q in _split(0, flat.size, threads, align=step)]


def _touch(flat: np.ndarray, p: int, q: int, step: int) -> None:
    flat[p:q:step] = 0


def _copy_piece(dst: np.ndarray, src: np.ndarray, gate=None) -> None:
    if gate is not None:
        gate.synchronize()
    np.copyto(dst, src, casting="unsafe")


def embed_csr_stream(
    parts,
    n_cols: int,
    plan: _Plan,
    dev,
    *,
    normalize,
    n_total,
    precision,
    check,
    show_progress,
    block_rows: int | None = None,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """GenePT-w of an in-memory CSR ``(indptr, indices, data)`` on ``dev`` (see module)."""
    import torch

    indptr, indices, data = parts
    n, d = indptr.shape[0] - 1, plan.d
    emb_out = np.empty((n, d), np.float32)
    ws_out = np.empty(n, np.float64)
    if n == 0:
        return emb_out, ws_out
    cuda = dev.type == "cuda"
    mm = DeviceMatmul(plan, dev, precision)
    comp = BlockCompute(mm, normalize=normalize, n_total=n_total)
    max_rows = max(1, DENSE_BLOCK_BYTES["cuda" if cuda else "cpu"] // (4 * mm.K))
    if block_rows:
        max_rows = min(max_rows, int(block_rows))
    bounds = block_bounds(indptr, block_nnz=BLOCK_NNZ, max_rows=max_rows)
    n_used = max(plan.n_used, 1)
    threads = threads or min(16, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    idx32 = indices.dtype == np.int32 or n_cols < 2**31

    slots = [_Slot(cuda) for _ in range(N_SLOTS)]
    outs = [_Slot(cuda) for _ in range(2)]
    copy_stream = torch.cuda.Stream(dev) if cuda else None
    d2h_stream = torch.cuda.Stream(dev) if cuda else None
    comp_stream = torch.cuda.current_stream(dev) if cuda else None

    def run(fn, *a):
        if pool is None:
            fn(*a)
            f: Future = Future()
            f.set_result(None)
            return f
        return pool.submit(fn, *a)

    def stage(j: int):
        """Block ``j`` into its slot, by the pool; the copies first wait for the slot's previous upload (a CUDA event, normally long done)."""
        a, b = bounds[j]
        slot = slots[j % N_SLOTS]
        gate, slot.event = slot.event, None
        s, e = int(indptr[a]), int(indptr[b])
        h_ptr = slot.host("ptr", b - a + 1, torch.int64)
        if gate is not None:
            gate.synchronize()  # the pointer copy is tiny: do it here, after the gate
            gate = None
        h_ptr.numpy()[:] = indptr[a : b + 1] - s
        h_idx = slot.host("idx", e - s, torch.int32 if idx32 else torch.int64)
        h_val = slot.host("val", e - s, torch.float32)
        hi, hv = h_idx.numpy(), h_val.numpy()
        for p, q in _split(s, e, threads):
            slot.jobs.append(run(_copy_piece, hi[p - s : q - s], indices[p:q], gate))
            slot.jobs.append(run(_copy_piece, hv[p - s : q - s], data[p:q], gate))
        return a, b, (h_ptr, h_idx, h_val), e - s

    faulting = _prefault(emb_out, run, threads) if cuda else []

    def collect(j: int) -> None:
        """Block ``j``'s rows, once downloaded, into the result (by the pool)."""
        a, b = bounds[j]
        while faulting:
            faulting.pop().result()
        o = outs[j % 2]
        if o.event is not None:
            o.event.synchronize()
            o.event = None
        he, hw = o.bufs["emb"].numpy(), o.bufs["ws"].numpy()
        for p, q in _split(a, b, threads, align=64):
            o.jobs.append(
                run(_copy_piece, emb_out[p:q], he[(p - a) * d : (q - a) * d].reshape(q - p, d))
            )
        o.jobs.append(run(_copy_piece, ws_out[a:b], hw[: b - a]))

    restore = _fp32_mode(precision) if cuda else None
    try:
        with _progress(n, show_progress, f"GenePT-w ({dev.type})") as bar:
            ahead = N_SLOTS - 1  # blocks staged ahead of the one being uploaded
            staged = {j: stage(j) for j in range(min(ahead, len(bounds)))}
            for j in range(len(bounds)):
                a, b, h, nnz = staged.pop(j)
                slot = slots[j % N_SLOTS]
                for f in slot.jobs:
                    f.result()
                slot.jobs = []
                rows = b - a
                use_sparse = precision == "fp32" and nnz < SPARSE_BELOW * rows * n_used
                if cuda:
                    with torch.cuda.stream(copy_stream):
                        dev_in = [t.to(dev, non_blocking=True) for t in h]
                        slot.event = torch.cuda.Event()
                        slot.event.record(copy_stream)
                    comp_stream.wait_event(slot.event)
                    for t in dev_in:
                        t.record_stream(comp_stream)
                else:  # synchronous: the slot is read before it is refilled
                    dev_in = list(h)
                d_ptr, d_idx, d_val = dev_in
                if use_sparse:
                    emb, ws = _sparse_block(comp, d_ptr, d_idx, d_val, rows)
                else:
                    emb, ws = comp(d_ptr, d_idx, d_val, rows)
                o = outs[j % 2]
                for f in o.jobs:  # block j - 2's rows have left this output slot
                    f.result()
                o.jobs = []
                h_emb = o.host("emb", rows * d, torch.float32).view(rows, d)
                h_ws = o.host("ws", rows, torch.float64)
                if cuda:
                    done = torch.cuda.Event()
                    done.record(comp_stream)
                    with torch.cuda.stream(d2h_stream):
                        d2h_stream.wait_event(done)
                        h_emb.copy_(emb, non_blocking=True)
                        h_ws.copy_(ws, non_blocking=True)
                        emb.record_stream(d2h_stream)
                        ws.record_stream(d2h_stream)
                        o.event = torch.cuda.Event()
                        o.event.record(d2h_stream)
                else:
                    h_emb.copy_(emb)
                    h_ws.copy_(ws)
                if j + ahead < len(bounds):  # refill the slot of block j - 1
                    staged[j + ahead] = stage(j + ahead)
                if j >= 1:
                    collect(j - 1)  # waits for block j - 1's download: GPU-paced
                bar.update(rows)
            collect(len(bounds) - 1)
            for o in outs:
                o.settle()
        if cuda:
            torch.cuda.synchronize(dev)
        if check:
            _raise_if_bad(comp.stats())
    finally:
        for s in slots + outs:
            for f in s.jobs:
                f.cancel()
            wait([f for f in s.jobs if not f.cancelled()])
        if cuda:
            torch.cuda.synchronize(dev)
        if pool is not None:
            pool.shutdown()
        if restore is not None:
            restore()
    return emb_out, ws_out


def device_csr(X: Any):
    """``(crow, col, values)`` torch tensors of CSR data already on a GPU, else ``None``.

    Accepts a torch sparse CSR tensor and a CuPy ``csr_matrix`` (shared through DLPack,
    no copy).
    """
    mod = type(X).__module__
    if mod.startswith("torch"):
        import torch

        if isinstance(X, torch.Tensor) and X.layout == torch.sparse_csr:
            return X.crow_indices(), X.col_indices(), X.values()
        return None
    if mod.startswith("cupyx") and getattr(X, "format", None) == "csr":
        import torch

        return tuple(torch.from_dlpack(a) for a in (X.indptr, X.indices, X.data))
    return None


def embed_resident_csr(
    parts, plan: _Plan, dev, *, normalize, n_total, precision, check, show_progress
) -> tuple[np.ndarray, np.ndarray]:
    """GenePT-w of CSR arrays already on the device: blocks computed in place, no staging.

    Results are returned on the host like every other path.
    """
    import torch

    crow, col, val = parts
    if crow.device != dev and dev.type == "cuda" and crow.device.type == "cuda":
        dev = crow.device
    crow, col = crow.to(dev), col.to(dev)
    val = val.to(dev, torch.float32)
    n, d = crow.numel() - 1, plan.d
    mm = DeviceMatmul(plan, dev, precision)
    comp = BlockCompute(mm, normalize=normalize, n_total=n_total)
    max_rows = max(1, DENSE_BLOCK_BYTES["cuda" if dev.type == "cuda" else "cpu"] // (4 * mm.K))
    bounds = block_bounds(crow.cpu().numpy(), block_nnz=BLOCK_NNZ, max_rows=max_rows)
    emb_d = torch.empty((n, d), dtype=torch.float32, device=dev)
    ws_d = torch.empty(n, dtype=torch.float64, device=dev)
    restore = _fp32_mode(precision) if dev.type == "cuda" else None
    try:
        with _progress(n, show_progress, f"GenePT-w ({dev.type}, resident)") as bar:
            for a, b in bounds:
                s, e = crow[a], crow[b]
                ptr = crow[a : b + 1] - s
                idx = col[s:e] if col.dtype == torch.int32 else col[s:e].to(torch.int32)
                emb_d[a:b], ws_d[a:b] = comp(ptr.long(), idx, val[s:e], b - a)
                bar.update(b - a)
        if check:
            _raise_if_bad(comp.stats())
    finally:
        if restore is not None:
            restore()
    return emb_d.cpu().numpy(), ws_d.cpu().numpy()


def _sparse_block(comp: BlockCompute, ptr, idx, val, rows: int):
    """Very sparse block: drop unembedded genes on the device, then cuSPARSE SpMM."""
    import torch

    mm = comp.mm
    cols = mm.colmap.index_select(0, idx)
    bad = ~torch.isfinite(val) | (val < 0)
    keep = (cols < mm.n_used) | bad  # bad values still reach the checks
    counts = ptr[1:] - ptr[:-1]
    row_ids = torch.repeat_interleave(
        torch.arange(rows, device=mm.dev), counts, output_size=idx.numel()
    )
    kept = torch.zeros(rows, dtype=torch.int64, device=mm.dev).index_add_(0, row_ids, keep.long())
    new_ptr = torch.zeros(rows + 1, dtype=torch.int64, device=mm.dev)
    torch.cumsum(kept, 0, out=new_ptr[1:])
    c, v, r = cols[keep].long(), val[keep], row_ids[keep]
    order = torch.argsort(r * mm.K + c)  # cuSPARSE wants sorted columns within rows
    return comp(new_ptr, c[order], v[order], rows, remapped=True, use_sparse=True)


_LOCK = threading.Lock()


def _fp32_mode(precision: str):
    """torch's fp32 matmul mode for ``precision`` (TF32 for tf32 and the 3xTF32 split)."""
    import torch

    with _LOCK:
        try:
            prev = torch.get_float32_matmul_precision()
        except RuntimeError:  # legacy and new flags were mixed by the caller
            prev = None
        tf32 = precision == "tf32" or (precision == "fp32" and FP32_AS_3XTF32)
        torch.set_float32_matmul_precision("high" if tf32 else "highest")

    def restore():
        torch.set_float32_matmul_precision(prev or "highest")

    return restore
