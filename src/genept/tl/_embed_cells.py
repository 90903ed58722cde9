"""``gpt.tl.embed_cells``: GenePT-w and GenePT-s cell embeddings."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg
from scipy import sparse

from .._core._blocks import check_block_rows
from .._core._device import resolve_device
from .._core._docs import doc_common, doc_params
from .._core._keys import flag_key, recorded_params, sanitize_params, uns_key
from .._kernels.sentences._build import _ragged_sentence_windows, sentence_plan
from .._kernels.sentences._rank import _check_n_genes
from .._kernels.sentences._text import PAPER_PREFIX, _Names
from .._kernels.weighted._api import _run, check_options, check_values_dtype
from .._kernels.weighted._plan import _make_plan
from .._settings import settings
from .._utils import (
    check_adata,
    gene_mask,
    get_matrix,
    get_var_names,
    is_dask,
    mask_names,
    renamed_arg,
    write_results,
)
from ..encoders import TextEncoder, get_encoder
from ._gene_map import (
    align_rows,
    gene_embedding_matrix,
    mask_kind,
    matrix_var_names,
    own_gene_map_id,
    recorded_mask,
    reference_gene_map,
    report_overlap,
    vectors_id,
    w_id_settings,
)

__all__ = ["embed_cells"]


#: rows of the sample that the counts heuristic looks at, in windows spread over X
_SAMPLE_ROWS = 2000
_SAMPLE_WINDOWS = 20


def _sample_rows(X, n: int = _SAMPLE_ROWS, windows: int = _SAMPLE_WINDOWS):
    """About ``n`` rows in ``windows`` contiguous windows spread over the whole matrix.

    Row slices are cheap on every container (numpy, CSR, h5py, backed); a dask array
    gives up to 4 windows (each computes the chunks it touches). Returns a list of
    numpy / CSR blocks.
    """
    n_obs = int(X.shape[0])
    if is_dask(X):
        windows = min(windows, 4)
    windows = max(1, min(windows, n_obs))
    width = max(1, min(n, n_obs) // windows)
    starts = np.unique(np.linspace(0, max(0, n_obs - width), windows).astype(np.int64))
    out = []
    for a in starts.tolist():
        block = X[a : a + width]
        if is_dask(block):
            block = block.compute()
        if hasattr(block, "to_memory"):
            block = block.to_memory()
        out.append(sparse.csr_matrix(block) if sparse.issparse(block) else np.asarray(block))
    return out


def _looks_like_counts(X) -> bool:
    """Whether a sample of rows spread over ``X`` holds only non-negative integers with large values (raw counts)."""
    parts = [s.data if sparse.issparse(s) else np.asarray(s).ravel() for s in _sample_rows(X)]
    data = np.concatenate(parts) if parts else np.zeros(0)
    if data.size == 0 or not np.isfinite(data).all():
        return False
    integral = np.all(np.mod(data, 1) == 0)
    return bool(integral and data.max() > 30)


def _check_counts(X, allow_counts: bool) -> None:
    if not allow_counts and _looks_like_counts(X):
        warnings.warn(
            "the expression matrix looks like raw integer counts; GenePT expects normalised "
            "log expression: run sc.pp.normalize_total(adata, target_sum=1e4) and "
            "sc.pp.log1p(adata) first, or pass allow_counts=True to use counts as weights",
            UserWarning,
            stacklevel=3,
        )


#: default shrinkage of the gene-vector whitening (``whiten=True``)
WHITEN_SHRINK = 0.1


def _check_whiten(whiten) -> float:
    """The whitening shrinkage as a float (0: off)."""
    if whiten is True:
        return WHITEN_SHRINK
    if whiten is False or whiten is None:
        return 0.0
    if (
        isinstance(whiten, (int, float, np.floating, np.integer))
        and np.isfinite(whiten)
        and whiten >= 0
    ):
        return float(whiten)
    raise ValueError(
        f"whiten must be a shrinkage >= 0 ({WHITEN_SHRINK} default) or True/False, got {whiten!r}"
    )


def whiten_gene_embeddings(E: np.ndarray, shrink: float = WHITEN_SHRINK) -> np.ndarray:
    """Gene embeddings centred and decorrelated over the genes that have one (non-zero rows).

    ``(E - m) V (L + shrink * mean(L))^(-1/2) V^T`` with ``V L V^T`` the covariance of the
    dimensions over the embedded genes and ``m`` their mean; genes without an embedding
    stay zero rows (they still do not count).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> E = rng.normal(size=(500, 4)) * [10, 1, 1, 1] + 5
    >>> W = whiten_gene_embeddings(E.astype(np.float32), 0.0)
    >>> np.allclose(np.cov(W.T), np.eye(4), atol=1e-3)
    True
    """
    E = np.asarray(E, dtype=np.float32)
    used = np.abs(E).sum(1) > 0
    if used.sum() < 2:
        return E
    G = E[used].astype(np.float64)
    mean = G.mean(0)
    vals, vecs = np.linalg.eigh(np.cov(G - mean, rowvar=False).reshape(E.shape[1], E.shape[1]))
    vals = np.clip(vals, 0, None)
    floor = shrink * vals.mean() if vals.mean() > 0 else 1.0
    inv = np.where(vals + floor > 0, (vals + floor) ** -0.5, 0.0)
    W = (vecs * inv) @ vecs.T
    out = np.zeros_like(E)
    white = (G - mean) @ W
    # a gene that lands exactly on the mean would become a zero row (= no embedding)
    tiny = ~np.abs(white).sum(1).astype(bool)
    white[tiny] = np.finfo(np.float32).tiny * 16
    out[used] = white.astype(np.float32)
    return out


#: genes per GenePT-s sentence with ``n_genes="auto"`` and one window (chosen in
#: ``benchmarks/genept_s_variants.py``)
S_N_GENES = 25


def _resolve_n_genes(n_genes, windows) -> int | None:
    """The ``n_genes`` of GenePT-s (``"auto"`` resolved).

    ``"auto"`` is :data:`S_N_GENES` for one sentence, and every gene that fits for
    several windows (which split a longer ranking).
    """
    if isinstance(n_genes, str):
        if n_genes != "auto":
            raise ValueError(f"n_genes must be a positive integer, None or 'auto', got {n_genes!r}")
        return S_N_GENES if windows == 1 else None
    return _check_n_genes(n_genes)


@doc_params(**doc_common)
@renamed_arg("seed", "random_state")
def embed_cells(
    adata: AnnData,
    method: Literal["w", "s"] = "w",
    *,
    layer: str | None = None,
    use_raw: bool | None = None,
    key_added: str | None = None,
    # GenePT-w
    gene_key: str = "X_genept",
    mask_var: str | np.ndarray | Literal[False] | None = None,
    whiten: float | bool = WHITEN_SHRINK,
    normalize: Literal["l2", "notebook"] = "l2",
    device: str = "auto",
    precision: Literal["fp32", "tf32", "bf16"] = "fp32",
    block_rows: int | None = None,
    out: Literal["numpy", "dask"] = "numpy",
    # GenePT-s
    model: str | TextEncoder | None = None,
    n_genes: int | Literal["auto"] | None = "auto",
    prefix: str = PAPER_PREFIX,
    gene_symbols: str | None = None,
    hash_names: bool = False,
    shuffle: bool = False,
    random_state: int | None = 0,
    batch_size: int | None = None,
    cache: bool = True,
    windows: int = 1,
    window_decay: float = 0.5,
    # both
    reference: AnnData | None = None,
    allow_counts: bool = False,
    show_progress: bool | None = None,
    copy: bool = False,
) -> AnnData | None:
    """GenePT cell embeddings: GenePT-w (weighted gene embeddings) or GenePT-s (cell sentences).

    **GenePT-w** (``method="w"``) is the average of the gene embeddings
    ``varm[gene_key]`` weighted by each cell's normalised expression, over the genes
    that have an embedding, scaled to unit L2 norm: ``normalize(X @ E)`` (the division
    by the sum of weights of a weighted average does not change the direction).

    How it differs from GenePT's notebook: the notebook computes ``X @ E / n_genes``
    (a sum divided by the *number of genes* of the dataset, the same for every cell)
    and does not normalise, so cells with more total expression get longer vectors and
    cosine/Euclidean geometry mixes depth with composition. ``normalize="notebook"``
    reproduces it exactly; ``"l2"`` (default) follows the paper's text (section 3.1).

    **GenePT-s** (``method="s"``) embeds each cell's *sentence*, the gene symbols by
    descending expression with zeros omitted (see :func:`genept.pp.cell_sentences`),
    with a text encoder, then L2-normalises. By default a sentence holds the cell's top
    25 highly variable genes after scMPT's prefix (``mask_var``, ``n_genes``,
    ``prefix``; GenePT: every gene, as many as the encoder reads, no prefix). Sentences
    are cut to what the encoder reads (its token limit), so nothing is built that the
    model would ignore.

    Parameters
    ----------
    {doc_adata}
        Normalised and log-transformed (``sc.pp.normalize_total`` + ``sc.pp.log1p``);
        ``X`` may be numpy, scipy sparse, dask or backed.
    method
        ``"w"`` (GenePT-w) or ``"s"`` (GenePT-s).
    {doc_layer}
    {doc_use_raw}
        Genes of ``raw`` missing from ``var`` have no embedding for GenePT-w.
    {doc_key_added}
        Default ``"X_genept_w"`` / ``"X_genept_s"``.
    gene_key
        (w) ``varm`` key of the gene embeddings (see :func:`genept.tl.embed_genes`).
    mask_var
        (w, s) Genes to average over (w) or to write in sentences (s), as in
        :func:`scanpy.pp.pca`: a boolean ``var`` column name or mask. ``None``
        (default): ``var["highly_variable"]`` when it exists (after
        :func:`scanpy.pp.highly_variable_genes`), else every gene;
        ``False``: every gene (the paper's definition). Restricting GenePT-w to 2,000
        highly variable genes raised 10-NN accuracy on PBMC sets from 0.84 to 0.91
        (pbmc3k, Louvain labels) and from 0.82 / 0.79 to 0.88 / 0.90 (two more PBMC
        sets): all-gene averages are dominated by housekeeping genes shared by every
        cell. For GenePT-s the sentences then skip the housekeeping and ribosomal genes
        that lead every cell's ranking: with ``n_genes=25`` 10-NN accuracy (10 splits)
        rose from 0.768 / 0.809 / 0.662 (every gene) to 0.794 / 0.866 / 0.725 on
        pbmc68k_reduced, pbmc3k and a breast-tumour immune set. With ``use_raw=True``
        the mask of ``var`` is matched to ``raw`` by name (genes of ``raw`` missing from
        ``var`` are left out).
    whiten
        (w) Decorrelate the gene embeddings before averaging, over the genes in use:
        ``E <- (E - mean) V (L + whiten * mean(L))^(-1/2) V^T`` where ``V L V^T`` is the
        covariance of their dimensions; the value is the shrinkage (``0.1``, default);
        ``False`` (or ``0``): the embeddings as they are (the paper). Text embeddings of
        genes share a few dominant directions (generic words of every gene's text), which
        then dominate every cell; whitening gives each direction equal weight. Measured
        with 10-NN on three labelled sets (10 splits, highly variable genes):
        pbmc68k_reduced 0.810 -> 0.808, pbmc3k 0.910 -> 0.916, a breast-tumour immune
        set 0.728 -> 0.789.
    normalize
        (w) ``"l2"``: unit-norm rows (default); ``"notebook"``: GenePT notebook's
        ``X @ E / n_genes``, not normalised.
    {doc_device}
    precision
        (w, GPU) ``"fp32"`` (default), ``"tf32"`` or ``"bf16"`` tensor-core GEMMs:
        faster, with relative errors of about 1e-3 (tf32) / 1e-2 (bf16) per entry.
    block_rows
        (w) Rows per block (default: chosen from the data).
    out
        (w) ``"numpy"`` computes the result now; ``"dask"`` stores a lazy dask array in
        ``obsm`` for any input (in-memory input is wrapped in row chunks of
        ``block_rows``): nothing is computed by this call, the kernel runs once per row
        chunk when the array is computed, and ``obs[..._empty]`` is not written (an empty
        cell is a zero row).
    model
        (s) Text encoder (default: the packaged all-MiniLM-L6-v2; any
        sentence-transformers model such as ``"llmrails/ember-v1"``; or
        ``"openai:text-embedding-3-large"``).
    n_genes
        (s) Keep at most this many top genes per cell (fewer if the encoder's token
        limit comes first). ``"auto"`` (default): 25 with one window, every gene that
        fits with ``windows > 1``; ``None``: every gene that fits (the papers; about 76
        for MiniLM). Short sentences embed better with a small encoder: 10-NN accuracy
        (10 splits, highly variable genes) for 10 / 25 / 40 genes / every gene that fits
        was 0.770 / 0.794 / 0.782 / 0.780 on pbmc68k_reduced, 0.854 / 0.866 / 0.856 /
        0.791 on pbmc3k and 0.688 / 0.725 / 0.714 / 0.652 on a breast-tumour immune set
        (``benchmarks/genept_s_variants.py``, no prefix). GenePT's sentences:
        ``n_genes=None, mask_var=False, prefix=""``.
    prefix
        (s) Text before the genes. Default: scMPT's :data:`genept.pp.PAPER_PREFIX`
        (``"A cell with genes ranked by expression: "``), which tells the encoder what
        the list is: 10-NN accuracy (10 splits) 0.794 -> 0.804 on pbmc68k_reduced,
        0.866 -> 0.881 on pbmc3k, 0.725 -> 0.725 on a breast-tumour immune set. ``""``:
        GenePT's sentences (no prefix).
    gene_symbols
        (s) Column of ``var`` with the symbols to write in sentences.
    hash_names, shuffle
        (s) scMPT's ablations: gene names replaced by SHA-256 hashes (10 hex
        characters), gene order shuffled within each cell.
    {doc_random_state}
        (s) Here: the tie order and ``shuffle``.
    batch_size
        (s) Sentences per encoder batch (a positive integer; ``None``: the encoder's).
    cache
        (s) Use the persistent text-embedding cache, so an interrupted run resumes.
    windows
        (s) Sentences per cell. ``1`` (default): a single sentence, the top ``n_genes``
        genes that fit the encoder. ``k > 1``: the ranked genes are cut into up to ``k``
        consecutive sentences that each fit the encoder (window 0 is the single
        sentence, window 1 the genes after it, ...); each is embedded (cached by its
        text) and the cell is the L2-normalised sum of the unit window vectors weighted
        ``window_decay ** rank``. Measured on pbmc68k_reduced (10-NN, 10 splits, every
        gene): 1 window 0.702, 2 windows 0.698, 4 windows 0.698 with decay 0.5 (0.446
        unweighted): later, lower-expressed genes add no identity for MiniLM, so the
        default stays 1.
    window_decay
        (s) Weight ratio of consecutive windows, in ``(0, 1]``.
    reference
        (w, s) Embed ``adata`` (a query) through the *gene map* of
        ``reference.obsm[key_added]``, as :func:`scanpy.tl.ingest` maps a query onto a
        reference's PCA: the reference's genes in use (its ``mask_var``) and, for
        GenePT-w, its gene vectors whitened over them, matched by ``var_names`` (genes
        the query lacks count as unexpressed). The other settings must be the
        reference's (an error names any difference); ``mask_var`` must not be given.
        GenePT-w sides processed apart (each with its own highly variable genes) get
        other coordinates: 10-NN (3 splits) 0.794 / 0.866 / 0.754 on pbmc68k_reduced /
        pbmc3k / a breast-tumour immune set, 0.799 / 0.914 / 0.782 through the
        reference's map (``benchmarks/reference_query.py``), and the annotators warn
        on such pairs. For GenePT-s it is an option: sentences from other genes are
        still texts in one encoder space (within those sets +0.014 to +0.028, across
        two PBMC data sets -0.016 / -0.043).
    allow_counts
        Do not warn when the matrix looks like raw counts.
    show_progress
        Progress bars (default ``genept.settings.progress``).
    {doc_copy}

    Returns
    -------
    ``None``, or a copy of ``adata`` if ``copy=True``. Sets

    ``adata.obsm['X_genept_w']`` / ``['X_genept_s']``
        ``float32 (n_obs, dim)``, L2-normalised rows; zero rows for cells without any
        expressed embedded gene.
    ``adata.obs['genept_w_empty']`` / ``['genept_s_empty']``
        Cells that got a zero row (not written with ``out="dask"``).
    ``adata.uns['genept_w']`` / ``['genept_s']``
        ``params`` of the call, with ``gene_map``: an identifier of the genes (and
        gene vectors) the cells were read through, equal for embeddings that are
        comparable cell to cell.

    Examples
    --------
    >>> import scanpy as sc, genept as gpt
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> gpt.tl.embed_genes(adata)  # doctest: +SKIP
    >>> gpt.tl.embed_cells(adata, method="w", use_raw=True)  # doctest: +SKIP
    >>> sc.pp.neighbors(adata, use_rep="X_genept_w")  # doctest: +SKIP

    A query embedded through its reference's genes, then annotated:

    >>> gpt.tl.embed_cells(query, reference=reference)  # doctest: +SKIP
    >>> gpt.tl.annotate_knn(query, reference, label_key="cell_type")  # doctest: +SKIP
    """
    check_adata(adata)
    if reference is not None and mask_var is not None:
        raise ValueError(
            "pass mask_var or reference, not both: with reference= the query is read "
            "through the reference's genes"
        )
    if method not in ("w", "s"):
        raise ValueError(f"method must be 'w' (GenePT-w) or 's' (GenePT-s), got {method!r}")
    if normalize not in ("l2", "notebook"):
        raise ValueError(f"normalize must be 'l2' or 'notebook', got {normalize!r}")
    block_rows = check_options(
        normalize=normalize, precision=precision, out=out, block_rows=block_rows
    )
    if method == "s":
        if out == "dask":
            raise ValueError("out='dask' is for GenePT-w; GenePT-s returns a numpy array")
        batch_size = check_block_rows(batch_size, "batch_size")
        n_genes = _resolve_n_genes(n_genes, windows)
        if isinstance(windows, bool) or not isinstance(windows, (int, np.integer)) or windows < 1:
            raise ValueError(
                f"windows must be a positive integer (1 = one sentence), got {windows!r}"
            )
        if not (0 < float(window_decay) <= 1):
            raise ValueError(f"window_decay must be in (0, 1], got {window_decay!r}")
    dev = resolve_device(device)
    progress = settings.progress if show_progress is None else show_progress
    key_added = key_added or f"X_genept_{method}"
    prefix_key = uns_key(key_added)
    X = get_matrix(adata, layer=layer, use_raw=use_raw)
    if X.shape[0] == 0:
        raise ValueError("adata has no cells (adata.n_obs == 0)")
    check_values_dtype(X, "the expression matrix")
    _check_counts(X, allow_counts)
    start = logg.info(f"computing GenePT-{method} cell embeddings")
    params: dict[str, Any] = {
        "method": method,
        "layer": layer or "X",
        "use_raw": bool(use_raw),
    }
    if method == "w":
        shrink = _check_whiten(whiten)
        ids = matrix_var_names(adata, use_raw)
        n_total = int(X.shape[1])
        if reference is not None:
            gmap = reference_gene_map(
                reference,
                key_added,
                "w",
                {"gene_key": gene_key, "whiten": shrink, "normalize": normalize},
            )
            report_overlap(gmap, ids)
            mask_name, kind = recorded_mask(gmap, reference is adata)
            rows = whiten_gene_embeddings(gmap.rows, shrink) if shrink else gmap.rows
            E = align_rows(gmap.names, rows, ids)
            n_total = gmap.n_total  # "notebook": the reference's scale
            map_id, vec_id = gmap.id, gmap.params.get("gene_vectors")
            gparams = {
                "source": gmap.params.get("gene_source"),
                "model": gmap.params.get("gene_model"),
            }
        else:
            E = gene_embedding_matrix(adata, gene_key, use_raw)
            if X.shape[1] != E.shape[0]:
                raise ValueError(
                    f"the matrix has {X.shape[1]} genes but the gene embeddings have {E.shape[0]} rows"
                )
            mask, mask_name = gene_mask(adata, mask_var, use_raw)
            if mask is not None:
                E = np.where(mask[:, None], E, np.float32(0)).astype(np.float32, copy=False)
            used = np.abs(E).sum(1) > 0
            gparams = recorded_params(adata, gene_key)
            map_id = own_gene_map_id(
                "w",
                w_id_settings(shrink, normalize, n_total, gparams),
                mask is None,
                ids[used],
                E[used],
            )
            vec_id, kind = vectors_id(ids[used], E[used]), mask_kind(mask_var, mask)
            if shrink:
                E = whiten_gene_embeddings(E, shrink)
        plan = _make_plan(E, checked=True)
        emb, weight = _run(
            X,
            plan,
            normalize=normalize,
            n_total=n_total,
            device=dev,
            precision=precision,
            block_rows=block_rows,
            n_jobs=None,
            check=True,
            out=out,
            show_progress=progress,
        )
        # out="dask": nothing is computed here (the flag would need a pass over X); an
        # empty cell is a zero row of the lazy embedding
        empty = None if out == "dask" else np.asarray(weight) <= 0
        params.update(
            gene_key=gene_key,
            mask_var=mask_name,
            mask_kind=kind,
            whiten=shrink,
            normalize=normalize,
            device=dev,
            precision=precision,
            dim=int(E.shape[1]),
            n_genes_embedded=int(plan.n_used),
            gene_source=str(gparams.get("source", "unknown")),
            gene_model=str(gparams.get("model", "unknown")),
            gene_map=map_id,
            gene_vectors=vec_id,
        )
    else:
        encoder = get_encoder(model)
        s_settings = {
            "model": str(getattr(encoder, "model_name", None) or encoder.cache_id),
            "gene_symbols": gene_symbols or "var_names",
            "n_genes": int(n_genes) if n_genes else 0,
            "prefix": prefix,
            "hash_names": hash_names,
            "shuffle": shuffle,
            "windows": int(windows),
            "window_decay": float(window_decay),
        }
        ids = matrix_var_names(adata, use_raw)
        if reference is not None:
            gmap = reference_gene_map(reference, key_added, "s", s_settings)
            report_overlap(gmap, ids)
            mask, map_id = ids.isin(gmap.names), gmap.id
            mask_name, kind = recorded_mask(gmap, reference is adata)
        else:
            mask, mask_name = gene_mask(adata, mask_var, use_raw)
            kind = mask_kind(mask_var, mask)
            map_id = own_gene_map_id(
                "s", s_settings, mask is None, ids if mask is None else ids[mask], None
            )
        names = mask_names(get_var_names(adata, gene_symbols=gene_symbols, use_raw=use_raw), mask)
        plan = sentence_plan(names, prefix=prefix, hash_names=hash_names, encoder=encoder)
        indptr, idx, row, rank = _ragged_sentence_windows(
            X,
            plan,
            windows=int(windows),
            n_genes=n_genes,
            shuffle=shuffle,
            random_state=random_state,
            block_rows=block_rows,
            show_progress=progress,
        )
        n_obs = int(X.shape[0])
        n_words = np.diff(indptr)
        empty = np.bincount(row, minlength=n_obs) == 0
        emb = np.zeros((n_obs, encoder.dim or 0), dtype=np.float32)
        if row.size:
            # texts only as cache keys (and for encoders that cannot gather token ids)
            texts = _Names(plan.words).render(indptr, idx, plan.prefix)
            vec = None
            if hasattr(encoder, "encode_ragged"):  # no string tokenizer: gathered ids
                vec = encoder.encode_ragged(
                    indptr,
                    idx,
                    plan.words,
                    prefix=plan.prefix,
                    texts=texts if cache else None,
                    cache=cache,
                    batch_size=batch_size,
                    show_progress=progress,
                    desc="embedding cell sentences",
                )
            if vec is None:
                vec = encoder.encode(
                    texts,
                    batch_size=batch_size,
                    cache=cache,
                    show_progress=progress,
                    desc="embedding cell sentences",
                )
            vec = np.asarray(vec, dtype=np.float32)
            norms = np.linalg.norm(vec, axis=1, keepdims=True)
            vec = vec / np.where(norms > 0, norms, 1)
            if windows > 1:
                w = (float(window_decay) ** rank).astype(np.float32)
                pooled = np.zeros((n_obs, vec.shape[1]), dtype=np.float32)
                np.add.at(pooled, row, vec * w[:, None])
                norms = np.linalg.norm(pooled, axis=1, keepdims=True)
                vec = (pooled / np.where(norms > 0, norms, 1))[~empty]
            emb = np.zeros((n_obs, vec.shape[1]), dtype=np.float32)
            emb[~empty] = vec
        first = rank == 0
        params.update(
            **s_settings,
            dim=int(emb.shape[1]),
            max_tokens=int(encoder.max_tokens) if encoder.max_tokens else 0,
            mask_var=mask_name,
            mask_kind=kind,
            random_state=random_state,
            gene_map=map_id,
            mean_genes_per_sentence=float(n_words[first].mean()) if first.any() else 0.0,
            mean_genes_per_cell=float(np.bincount(row, n_words, n_obs)[~empty].mean())
            if (~empty).any()
            else 0.0,
        )
    writes = [("obsm", key_added, emb if is_dask(emb) else np.asarray(emb, dtype=np.float32))]
    if empty is not None:
        n_empty = int(empty.sum())
        params["n_cells_empty"] = n_empty
        if n_empty:
            logg.warning(
                f"{n_empty} cells have no expressed gene"
                f"{' with an embedding' if method == 'w' else ''}; they get a zero row "
                f"(flagged in obs[{flag_key(key_added)!r}])"
            )
        writes.append(("obs", flag_key(key_added), pd.Series(empty, index=adata.obs_names)))
    writes.append(("uns", prefix_key, {"params": sanitize_params(params)}))
    return write_results(
        adata,
        writes,
        copy=copy,
        log=lambda msg: logg.info("    finished", time=start, deep=msg),
    )
