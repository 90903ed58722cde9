"""``gpt.tl.embed_scgpt``: scGPT cell embeddings (``<cls>`` output) without the ``scgpt`` package.

The preprocessing copies ``scgpt.tasks.cell_emb.get_batch_cell_embeddings`` (scGPT
0.2.4) step for step, on row blocks so that memory stays bounded:

1. genes are matched to the vocabulary by name; unmatched genes are dropped;
2. per cell, the non-zero matched genes are taken in ``var`` order, values cast to
   float32;
3. the values are binned per cell (``scgpt.preprocess.binning`` with ``n_bins=51``:
   50 quantile edges of the cell's non-zero values, ``np.digitize`` from both sides,
   ties spread uniformly at random — here from a seeded :class:`numpy.random.Generator`
   instead of numpy's global state);
4. ``<cls>`` is prepended with value ``pad_value`` (``args.json``, ``-2``);
5. cells with more than ``max_length`` tokens keep ``<cls>`` and a random sample of
   ``max_length - 1`` genes (``DataCollator._sample``), others are padded with
   ``<pad>``/``pad_value``;
6. the encoder runs (CUDA: fp16 autocast as scGPT), position 0 is the cell embedding,
   L2-normalised per cell.

Unlike scGPT, cells are grouped by length before batching (less padding; the ``<cls>``
output does not depend on padding), and cells without any vocabulary gene get a zero
row and a flag instead of an exception.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scanpy import logging as logg
from scipy import sparse

from .._core._blocks import iter_row_blocks
from .._core._device import openmp_unnested, resolve_device
from .._core._docs import doc_common, doc_params
from .._core._keys import flag_key, sanitize_params, uns_key
from .._core._progress import progress_bar
from .._settings import settings
from .._utils import (
    as_float_block,
    check_adata,
    get_matrix,
    get_var_names,
    is_text_column,
    renamed_arg,
    write_results,
)
from ..models import SCGPT_SPECIAL_TOKENS, ScGPTCheckpoint, ScGPTEncoder, load_scgpt

__all__ = [
    "bin_values",
    "embed_scgpt",
    "embed_scgpt_tokens",
    "match_scgpt_vocab",
    "tokenize_scgpt",
]


# --------------------------------------------------------------------------- numerics


def _digitize(x: np.ndarray, bins: np.ndarray, rng) -> np.ndarray:
    """``scgpt.preprocess._digitize(side="both")``: a value equal to several edges gets a uniformly random bin among them. ``rng.random(n)`` replaces ``np.random.rand(n)``."""
    left = np.digitize(x, bins)
    right = np.digitize(x, bins, right=True)
    rands = rng.random(len(x))
    return np.ceil(rands * (right - left) + left).astype(np.int64)


def bin_values(row: np.ndarray, n_bins: int = 51, *, rng=None) -> np.ndarray:
    """scGPT's per-cell value binning (``scgpt.preprocess.binning``), same dtype out.

    ``n_bins - 1`` quantile edges of the non-zero values; bins ``1..n_bins-1``, zeros
    stay 0. ``rng`` is anything with ``.random(n)`` (a :class:`numpy.random.Generator`;
    a :class:`numpy.random.RandomState` seeded like ``np.random.seed`` reproduces scGPT
    draw for draw).
    """
    if rng is None:
        rng = np.random.default_rng()
    row = np.asarray(row)
    dtype = row.dtype
    if row.size == 0:
        return row.copy()
    if row.max() == 0:
        return np.zeros_like(row, dtype=dtype)
    if row.min() <= 0:
        nz = row.nonzero()
        nz_row = row[nz]
        bins = np.quantile(nz_row, np.linspace(0, 1, n_bins - 1))
        binned = np.zeros_like(row, dtype=np.int64)
        binned[nz] = _digitize(nz_row, bins, rng)
    else:
        bins = np.quantile(row, np.linspace(0, 1, n_bins - 1))
        binned = _digitize(row, bins, rng)
    return binned.astype(dtype)


def tokenize_scgpt(
    block,
    gene_ids: np.ndarray,
    *,
    cls_id: int,
    pad_value: float,
    max_length: int = 1200,
    n_bins: int = 51,
    rng=None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """scGPT's ``Dataset`` + ``DataCollator`` for a block of cells, before padding.

    Parameters
    ----------
    block
        ``(n_cells, n_genes)`` expression (numpy or scipy sparse), columns already
        restricted to vocabulary genes.
    gene_ids
        Vocabulary id of each column.
    cls_id, pad_value
        ``<cls>`` id and the value it gets (``args.json``'s ``pad_value``).
    max_length
        Longer cells keep ``<cls>`` + a random sample of ``max_length - 1`` genes.
    n_bins
        Number of bins (scGPT's collator: 51).
    rng
        Random source for tie-breaking and sampling, consumed cell by cell in order.

    Returns
    -------
    Per cell ``(genes int64, values float32)``, ``<cls>`` first; just ``<cls>`` for a cell
    without expressed genes.
    """
    if rng is None:
        rng = np.random.default_rng()
    gene_ids = np.asarray(gene_ids, dtype=np.int64)
    csr = sparse.csr_matrix(block)  # dense blocks lose their zeros here; order kept
    csr.sort_indices()
    out = []
    for i in range(csr.shape[0]):
        lo, hi = csr.indptr[i], csr.indptr[i + 1]
        vals = csr.data[lo:hi]
        cols = csr.indices[lo:hi]
        keep = vals != 0  # explicit zeros are not expressed (scGPT: np.nonzero on the row)
        vals = vals[keep].astype(np.float32)
        genes = np.empty(len(vals) + 1, dtype=np.int64)
        genes[0] = cls_id
        genes[1:] = gene_ids[cols[keep]]
        values = np.empty(len(vals) + 1, dtype=np.float32)
        values[0] = pad_value
        values[1:] = bin_values(vals, n_bins, rng=rng)
        if len(genes) > max_length:
            idx = rng.permutation(len(genes) - 1)[: max_length - 1] + 1
            idx = np.concatenate([[0], idx])
            genes, values = genes[idx], values[idx]
        out.append((genes, values))
    return out


def pad_tokens(
    cells: list[tuple[np.ndarray, np.ndarray]], *, pad_id: int, pad_value: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pad cells to the longest one: ``(genes int64, values float32)``, both ``(n, L)``."""
    width = max(len(g) for g, _ in cells)
    genes = np.full((len(cells), width), pad_id, dtype=np.int64)
    values = np.full((len(cells), width), pad_value, dtype=np.float32)
    for i, (g, v) in enumerate(cells):
        genes[i, : len(g)] = g
        values[i, : len(v)] = v
    return genes, values


def embed_scgpt_tokens(
    model: ScGPTEncoder,
    cells: list[tuple[np.ndarray, np.ndarray]],
    *,
    pad_value: float,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    autocast: bool | None = None,
    progress=None,
) -> np.ndarray:
    """Raw ``<cls>`` outputs ``(n_cells, d_model)`` float32 for tokenised cells.

    Cells are sorted by length and batched so that each batch is padded to its own
    longest cell. ``autocast`` (default: on CUDA) runs the encoder in fp16 like scGPT.
    """
    device = torch.device(device)
    if autocast is None:
        autocast = device.type == "cuda"
    n = len(cells)
    out = np.zeros((n, model.d_model), dtype=np.float32)
    if n == 0:
        return out
    lengths = np.fromiter((len(g) for g, _ in cells), dtype=np.int64, count=n)
    order = np.argsort(-lengths, kind="stable")
    pin = device.type == "cuda"
    with torch.inference_mode(), warnings.catch_warnings(), openmp_unnested():
        # torch's fast path for padded batches warns that nested tensors are a prototype
        warnings.filterwarnings("ignore", message="The PyTorch API of nested tensors")
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            genes, values = pad_tokens(
                [cells[j] for j in idx], pad_id=model.pad_token_id, pad_value=pad_value
            )
            g = torch.from_numpy(genes)
            v = torch.from_numpy(values)
            if pin:
                g, v = g.pin_memory(), v.pin_memory()
            g = g.to(device, non_blocking=pin)
            v = v.to(device, non_blocking=pin)
            with torch.autocast(device.type, dtype=torch.float16, enabled=bool(autocast)):
                emb = model.cell_embedding(g, v)
            out[idx] = emb.float().cpu().numpy()
            if progress is not None:
                progress.update(len(idx))
    return out


def match_scgpt_vocab(names: pd.Index, vocab: dict[str, int]) -> np.ndarray:
    """Vocabulary id per gene name, ``-1`` when absent (special tokens never match)."""
    specials = set(SCGPT_SPECIAL_TOKENS)
    return np.fromiter(
        (vocab.get(n, -1) if n not in specials else -1 for n in names),
        dtype=np.int64,
        count=len(names),
    )


# --------------------------------------------------------------------------- AnnData


def _no_match_error(names: pd.Index, adata: AnnData, vocab: dict[str, int], gene_col, use_raw):
    var = adata.raw.var if use_raw else adata.var
    cols = [c for c in var.columns if is_text_column(var[c])]
    hint = (
        f" Pass gene_col= one of the var columns {cols} holding gene symbols?"
        if cols and gene_col is None
        else ""
    )
    vocab_ex = ", ".join(t for t in list(vocab)[:5])
    return ValueError(
        f"no gene of the dataset is in the scGPT vocabulary ({len(vocab)} tokens; e.g. {vocab_ex}); "
        f"dataset genes ({'var_names' if gene_col is None else f'var[{gene_col!r}]'}): "
        f"{', '.join(map(str, names[:5]))}, ... scGPT's whole-human vocabulary uses HGNC symbols "
        f"(case-sensitive).{hint}"
    )


@doc_params(**doc_common)
@renamed_arg("seed", "random_state")
def embed_scgpt(
    adata: AnnData,
    model_dir: str | os.PathLike | ScGPTCheckpoint,
    *,
    gene_col: str | None = None,
    layer: str | None = None,
    use_raw: bool | None = None,
    max_length: int = 1200,
    batch_size: int = 64,
    n_bins: int = 51,
    device: str | torch.device = "auto",
    random_state: int | None = 0,
    key_added: str = "X_scGPT",
    show_progress: bool | None = None,
    copy: bool = False,
) -> AnnData | None:
    """scGPT cell embeddings (the ``<cls>`` output of a pretrained scGPT checkpoint).

    Reproduces ``scgpt.tasks.embed_data`` (scGPT 0.2.4) without importing ``scgpt``:
    matched genes, per-cell 51-bin value binning, ``<cls>`` token, up to ``max_length``
    tokens, L2-normalised ``<cls>`` output. Random choices (ties in binning, gene
    sampling of long cells) come from ``random_state``, so results are reproducible. Works on
    numpy, scipy sparse, dask or backed ``X`` in row blocks; never densifies the matrix.

    Parameters
    ----------
    {doc_adata}
        scGPT was pretrained on normalised, log1p data binned per cell; since binning is rank-based per cell, raw counts and log-normalised values
        give the same tokens up to ties.
    model_dir
        scGPT checkpoint folder with ``args.json``, ``vocab.json``, ``best_model.pt``
        (e.g. the whole-human model), or a checkpoint from
        :func:`genept.models.load_scgpt`.
    gene_col
        Column of ``var`` with gene symbols matching the vocabulary (default:
        ``var_names``). scGPT's own default is ``"feature_name"``.
    {doc_layer}
    {doc_use_raw}
    max_length
        Most tokens per cell (``<cls>`` included); longer cells keep a random sample.
    batch_size
        Cells per forward pass.
    n_bins
        Number of value bins (scGPT: 51).
    {doc_device}
    {doc_random_state}
        Here: the random tie-breaking and sampling (``None``: not reproducible).
    {doc_key_added}
    show_progress
        Progress bar (default ``genept.settings.progress``).
    {doc_copy}

    Returns
    -------
    ``None``, or a copy of ``adata`` if ``copy=True``. Sets

    ``adata.obsm['X_scGPT']``
        ``float32 (n_obs, d_model)``, unit norm; zero rows for cells without any
        vocabulary gene.
    ``adata.obs['scGPT_empty']``
        Whether the cell had no expressed vocabulary gene.
    ``adata.uns['scGPT']['params']``
        Checkpoint, genes matched/total, options.

    Examples
    --------
    >>> import scanpy as sc, genept as gpt
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> gpt.tl.embed_scgpt(adata, "scGPT_human", use_raw=True)  # doctest: +SKIP
    >>> sc.pp.neighbors(adata, use_rep="X_scGPT")  # doctest: +SKIP
    """
    check_adata(adata)
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 (<cls> and one gene), got {max_length}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if n_bins < 3:
        raise ValueError(f"n_bins must be at least 3, got {n_bins}")
    start = logg.info("computing scGPT cell embeddings")
    dev = torch.device(resolve_device(device))
    if isinstance(model_dir, ScGPTCheckpoint):
        ckpt = model_dir
        ckpt.model.to(dev).eval()
    else:
        ckpt = load_scgpt(model_dir, device=dev)
    model, vocab, config = ckpt.model, ckpt.vocab, ckpt.config

    X = get_matrix(adata, layer=layer, use_raw=use_raw)
    names = get_var_names(adata, gene_symbols=gene_col, use_raw=use_raw)
    ids = match_scgpt_vocab(names, vocab)
    cols = np.flatnonzero(ids >= 0)
    n_matched = len(cols)
    if n_matched == 0:
        raise _no_match_error(names, adata, vocab, gene_col, use_raw)
    logg.info(
        f"    matched {n_matched}/{len(names)} genes in the scGPT vocabulary of size {len(vocab)}"
    )
    gene_ids = ids[cols]

    n_obs = X.shape[0]
    chunk = max(batch_size * 16, 2048)
    rng = np.random.default_rng(random_state)
    emb = np.zeros((n_obs, config.d_model), dtype=np.float32)
    no_genes = np.zeros(n_obs, dtype=bool)
    show = settings.progress if show_progress is None else show_progress
    warned_negative = False
    with progress_bar(n_obs, desc="scGPT embedding", unit="cell", show=show) as bar:
        for lo, hi, block in iter_row_blocks(X, chunk):
            block = as_float_block(block)
            block = block[:, cols]
            if not warned_negative and (block.min() < 0):
                logg.warning(
                    "the expression matrix has negative values; scGPT expects "
                    "non-negative (count or log-normalised) data"
                )
                warned_negative = True
            cells = tokenize_scgpt(
                block,
                gene_ids,
                cls_id=ckpt.cls_token_id,
                pad_value=config.pad_value,
                max_length=max_length,
                n_bins=n_bins,
                rng=rng,
            )
            empty = np.fromiter((len(g) == 1 for g, _ in cells), dtype=bool, count=len(cells))
            no_genes[lo:hi] = empty
            keep = np.flatnonzero(~empty)
            if len(keep):
                out = embed_scgpt_tokens(
                    model,
                    [cells[j] for j in keep],
                    pad_value=config.pad_value,
                    batch_size=batch_size,
                    device=dev,
                )
                emb[lo + keep] = out
            bar.update(hi - lo)

    has = ~no_genes
    norms = np.linalg.norm(emb[has], axis=1, keepdims=True)
    emb[has] = emb[has] / norms
    n_empty = int(no_genes.sum())
    if n_empty:
        logg.warning(
            f"{n_empty} of {n_obs} cells express no gene of the scGPT vocabulary; "
            f"their embedding is 0 (see obs[{flag_key(key_added)!r}])"
        )

    prefix = uns_key(key_added)
    params: dict[str, Any] = {
        "model_dir": str(ckpt.path),
        "gene_col": gene_col or "var_names",
        "layer": layer or ("raw.X" if use_raw else "X"),
        "use_raw": bool(use_raw),
        "max_length": int(max_length),
        "batch_size": int(batch_size),
        "n_bins": int(n_bins),
        "random_state": random_state,
        "device": str(dev),
        "autocast_fp16": dev.type == "cuda",
        "cell_embedding": "cls",
        "d_model": int(config.d_model),
        "vocab_size": len(vocab),
        "n_genes_matched": int(n_matched),
        "n_genes_total": len(names),
        "n_cells_empty": n_empty,
        "key_added": key_added,
    }
    return write_results(
        adata,
        [
            ("obsm", key_added, emb),
            ("obs", flag_key(key_added), no_genes),
            ("uns", prefix, {"params": sanitize_params(params)}),
        ],
        copy=copy,
        log=lambda msg: logg.info("    finished", time=start, deep=msg),
    )
