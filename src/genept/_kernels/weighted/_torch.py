"""GenePT-w on torch: the CUDA pipeline (also runs on a torch CPU device in CI)."""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from scipy import sparse

from ._plan import (
    _as_block,
    _n_jobs,
    _Plan,
    _progress,
    _raise_if_bad,
    _row_blocks,
    _sub_ranges,
)
from ._torch_csr import (
    BlockCompute,
    DeviceMatmul,
    _fp32_mode,
    device_csr,
    embed_csr_stream,
    embed_resident_csr,
    inmemory_csr,
)

_GPU_CUSPARSE_BELOW = 0.01  # density (over used genes) under which cuSPARSE SpMM is used
_GPU_PINNED_OUT_BYTES = 4 * 2**30  # outputs up to this size are pinned: D2H goes straight in
_STAGE_SPLIT_BYTES = 8 * 2**20  # host staging copies are split across threads above this


def _par_copy(
    dst: np.ndarray, src: np.ndarray, pool: ThreadPoolExecutor | None, workers: int
) -> None:
    """``dst[:] = src`` split across ``pool`` (numpy releases the GIL for plain copies)."""
    n = src.shape[0]
    parts = 1 if pool is None else min(workers, max(1, src.nbytes // _STAGE_SPLIT_BYTES))
    if parts <= 1:
        dst[:] = src
        return

    def cp(rng):
        a, b = rng
        dst[a:b] = src[a:b]

    list(pool.map(cp, _sub_ranges(n, -(-n // parts))))


class _Slot:
    """Host staging buffers of one in-flight block (pinned on CUDA), grown on demand."""

    def __init__(self, pin: bool):
        self.pin = pin
        self.bufs: dict[str, Any] = {}
        self.h2d_done = None  # CUDA event: the input buffers may be overwritten after it
        self.d2h_done = None  # CUDA event: the output buffers hold the results after it
        self.pending = None  # (start, stop, emb buffer, weight-sum buffer) not yet copied

    def host(self, name: str, n: int, dtype):
        import torch

        t = self.bufs.get(name)
        if t is None or t.numel() < n or t.dtype != dtype:  # grow by 1.25x: fewer re-pins
            t = torch.empty(max(int(n * 1.25), 1), dtype=dtype, pin_memory=self.pin)
            self.bufs[name] = t
        return t[:n]


_TORCH_INDEX = {np.dtype(np.int32): "int32", np.dtype(np.int64): "int64"}


_GPU_LOCK = threading.Lock()  # one GPU run at a time (dask threads; global matmul flags)


def _embed_torch(
    X, plan: _Plan, *, normalize, n_total, device, precision, block_rows, check, show_progress
) -> tuple[np.ndarray, np.ndarray]:
    """GPU path (torch; also runs on a torch CPU device, which is how CI tests its logic).

    In-memory CSR goes through :func:`embed_csr_stream` (zero-copy blocks, threaded
    pinned staging, see ``_torch_csr``); CSR already on the GPU (a torch sparse CSR
    tensor or a CuPy matrix) is multiplied where it is. Everything else (dense, backed,
    dask chunks) goes through the general pipeline: a stager thread reads the next row block (from memory, disk or dask), converts it to
    CSR and copies indptr / indices (kept int32) / data into a slot of pinned host
    buffers, the copy split across threads, while the GPU works on the current block.
    Each slot goes to the GPU on a copy stream; the compute stream waits for it (event),
    densifies the block over the used genes (one ``index_add_`` scatter; columns padded
    to a multiple of 16 for aligned tensor-core GEMMs) and multiplies it by the resident
    ``E_used``: fp32 IEEE, TF32 or bf16 (fp32 output where cuBLAS offers it). Below
    ``_GPU_CUSPARSE_BELOW`` density the stager drops unembedded genes and remaps columns
    on the host (cheap at that density) and cuSPARSE SpMM (fp32) is used. Normalised
    rows go back on a third stream into the slot's pinned output buffers and are copied
    into the numpy result when the slot comes round again. GPU memory is bounded by a
    few blocks whatever the number of cells. Checks (min, non-finite) accumulate on the
    device and are read at the end.
    """
    import torch

    dev = torch.device(device)
    with _GPU_LOCK if dev.type == "cuda" else contextlib.nullcontext():
        opts = {
            "normalize": normalize,
            "n_total": n_total,
            "precision": precision,
            "check": check,
            "show_progress": show_progress,
        }
        resident = device_csr(X)
        if resident is not None:
            return embed_resident_csr(resident, plan, dev, **opts)
        parts = inmemory_csr(X)
        if parts is not None:  # the fast path: zero-copy blocks, threaded pinned staging
            return embed_csr_stream(
                parts, int(X.shape[1]), plan, dev, block_rows=block_rows, **opts
            )
        return _embed_torch_run(
            X, plan, dev, normalize, n_total, precision, block_rows, check, show_progress
        )


def _embed_torch_run(X, plan, dev, normalize, n_total, precision, block_rows, check, show_progress):
    import torch

    cuda = dev.type == "cuda"
    n, d = X.shape[0], plan.d
    n_used = plan.n_used
    emb_out = np.empty((n, d), np.float32)
    ws_out = np.empty(n, np.float64)
    if n == 0:
        return emb_out, ws_out
    mm = DeviceMatmul(plan, dev, precision)
    comp = BlockCompute(mm, normalize=normalize, n_total=n_total)

    copy_stream = torch.cuda.Stream(dev) if cuda else None
    d2h_stream = torch.cuda.Stream(dev) if cuda else None
    comp_stream = torch.cuda.current_stream(dev) if cuda else None
    slots = [_Slot(pin=cuda), _Slot(pin=cuda)]
    copy_workers = min(8, _n_jobs(None))
    copy_pool = ThreadPoolExecutor(copy_workers) if cuda and copy_workers > 1 else None
    stager = ThreadPoolExecutor(1)
    blocks = _row_blocks(X, block_rows)

    def stage(slot: _Slot):
        """Next block into the slot's host buffers; None at the end."""
        item = next(blocks, None)
        if item is None:
            return None
        a, b, blk = item
        blk = _as_block(blk)
        if not sparse.issparse(blk):
            blk = sparse.csr_matrix(blk)
        rows = b - a
        use_sparse = precision == "fp32" and blk.nnz < _GPU_CUSPARSE_BELOW * rows * max(n_used, 1)
        indptr, indices, data = blk.indptr, blk.indices, blk.data
        if use_sparse and blk.nnz:
            # cuSPARSE wants sorted, unique columns: drop unembedded genes, remap on the host
            if not blk.has_sorted_indices:
                blk = blk.sorted_indices()
                indptr, indices, data = blk.indptr, blk.indices, blk.data
            c = plan.colmap[indices]
            keep = c >= 0
            # unembedded genes still count for the checks: keep their bad values visible
            bad = ~np.isfinite(data) | (data < 0)
            keep |= bad
            c = np.where(keep & (c < 0), n_used, c)
            kept_before = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
            indptr = kept_before[indptr - indptr[0]]
            indices, data = c[keep].astype(np.int32), data[keep]
        if slot.h2d_done is not None:
            slot.h2d_done.synchronize()  # the slot's previous upload has left its buffers
        idx_dtype = getattr(torch, _TORCH_INDEX.get(np.dtype(indices.dtype), "int64"))
        h = (
            slot.host("indptr", rows + 1, torch.int64),
            slot.host("indices", indices.size, idx_dtype),
            slot.host("data", data.size, torch.float32),
        )
        for t, src in zip(h, (indptr, indices, data), strict=True):
            _par_copy(t.numpy(), src, copy_pool, copy_workers)
        return a, b, h, use_sparse and blk.nnz > 0

    def compute(d_indptr, d_idx, d_data, rows, use_sparse):
        return comp(d_indptr, d_idx, d_data, rows, remapped=use_sparse, use_sparse=use_sparse)

    def finish(slot: _Slot):
        """The slot's last results, once their D2H copy is done, into the numpy output."""
        if slot.pending is None:
            return
        a, b, h_emb, h_ws = slot.pending
        slot.pending = None
        slot.d2h_done.synchronize()
        _par_copy(emb_out[a:b], h_emb.numpy(), copy_pool, copy_workers)
        ws_out[a:b] = h_ws.numpy()

    restore = _fp32_mode(precision) if cuda else None
    try:
        with _progress(n, show_progress, f"GenePT-w ({dev.type})") as bar:
            i = 0
            fut = stager.submit(stage, slots[0])
            while (item := fut.result()) is not None:
                a, b, h, use_sparse = item
                rows = b - a
                slot = slots[i % 2]
                finish(slot)  # block i - 2's results leave the slot's output buffers
                if cuda:
                    with torch.cuda.stream(copy_stream):
                        dev_in = [t.to(dev, non_blocking=True) for t in h]
                        slot.h2d_done = torch.cuda.Event()
                        slot.h2d_done.record(copy_stream)
                    fut = stager.submit(stage, slots[(i + 1) % 2])  # overlaps from here
                    comp_stream.wait_event(slot.h2d_done)
                    for t in dev_in:
                        t.record_stream(comp_stream)
                else:  # torch CPU: the stager fills the other slot meanwhile
                    dev_in = list(h)
                    fut = stager.submit(stage, slots[(i + 1) % 2])
                emb, ws = compute(*dev_in, rows, use_sparse)
                if cuda:
                    done = torch.cuda.Event()
                    done.record(comp_stream)
                    with torch.cuda.stream(d2h_stream):
                        d2h_stream.wait_event(done)
                        h_emb = slot.host("emb", rows * d, torch.float32).view(rows, d)
                        h_ws = slot.host("ws", rows, torch.float64)
                        h_emb.copy_(emb, non_blocking=True)
                        h_ws.copy_(ws, non_blocking=True)
                        emb.record_stream(d2h_stream)
                        ws.record_stream(d2h_stream)
                        slot.d2h_done = torch.cuda.Event()
                        slot.d2h_done.record(d2h_stream)
                    slot.pending = (a, b, h_emb, h_ws)
                else:
                    emb_out[a:b] = emb.numpy()
                    ws_out[a:b] = ws.numpy()
                bar.update(rows)
                i += 1
            for slot in slots:
                finish(slot)
        if cuda:
            torch.cuda.synchronize(dev)
        if check:
            _raise_if_bad(comp.stats())
    finally:
        stager.shutdown(wait=True, cancel_futures=True)
        if cuda:
            torch.cuda.synchronize(dev)  # no copy may still target a slot being freed
        if copy_pool is not None:
            copy_pool.shutdown()
        if restore is not None:
            restore()
    return emb_out, ws_out
