"""GenePT-s cell sentences: gene symbols ranked by descending expression, zeros omitted.

The AnnData front end :func:`cell_sentences`. The numerics (compiled ranking, token cut,
shuffle and text kernels on CSR row blocks) live in :mod:`genept._kernels.sentences`;
their public faces are :func:`genept.pp.sentence_plan`, :func:`genept.pp.build_sentences`,
:func:`genept.pp.rank_genes`, :func:`genept.pp.truncate_to_budget`,
:func:`genept.pp.token_budget` and :func:`genept.pp.sentence_words`.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg

from .._core._blocks import check_block_rows
from .._core._docs import (
    doc_adata,
    doc_copy,
    doc_layer,
    doc_params,
    doc_random_state,
    doc_use_raw,
)
from .._core._keys import sanitize_params
from .._kernels.sentences._build import _build, sentence_plan
from .._kernels.sentences._rank import _check_n_genes
from .._kernels.sentences._text import PAPER_PREFIX
from .._settings import settings
from .._utils import (
    check_adata,
    gene_mask,
    get_matrix,
    get_var_names,
    mask_names,
    renamed_arg,
    write_results,
)

__all__ = ["PAPER_PREFIX", "cell_sentences"]


# --------------------------------------------------------------------------------------
# AnnData front end
# --------------------------------------------------------------------------------------


@doc_params(
    doc_adata=doc_adata,
    doc_copy=doc_copy,
    doc_layer=doc_layer,
    doc_random_state=doc_random_state,
    doc_use_raw=doc_use_raw,
)
@renamed_arg("seed", "random_state")
def cell_sentences(
    adata: AnnData,
    *,
    layer: str | None = None,
    use_raw: bool | None = None,
    n_genes: int | None = None,
    mask_var: str | np.ndarray | Literal[False] | None = None,
    gene_symbols: str | None = None,
    prefix: str = "",
    max_tokens: int | None = None,
    encoder: Any = None,
    hash_names: bool = False,
    shuffle: bool = False,
    random_state: int | None = 0,
    block_rows: int | None = None,
    key_added: str = "genept_sentence",
    show_progress: bool | None = None,
    copy: bool = False,
    inplace: bool = True,
) -> AnnData | pd.Series | None:
    """GenePT-s cell sentences: gene symbols by descending expression, zeros omitted.

    As in GenePT (Chen & Zou, section 3.1) and scMPT (section 3.1), each cell becomes the
    text of its expressed genes' symbols, most expressed first, separated by spaces,
    optionally after a ``prefix`` and cut to what a text encoder reads. Rank normalised
    data (``sc.pp.normalize_total`` + ``sc.pp.log1p``) or counts, not scaled data.

    Parameters
    ----------
    {doc_adata}
        ``X`` may be numpy, scipy sparse, dask or backed.
    {doc_layer}
    {doc_use_raw}
        Gene names then come from ``adata.raw.var``.
    n_genes
        Keep at most this many leading genes per cell.
    mask_var
        Genes that may be written, as in :func:`scanpy.pp.pca` and
        :func:`genept.tl.embed_cells`: a boolean ``var`` column name or mask. ``None``
        (default): ``var["highly_variable"]`` when it exists (after
        :func:`scanpy.pp.highly_variable_genes`), else every gene; ``False``: every gene
        (the papers' sentences). Housekeeping and ribosomal genes, the most expressed in
        every cell, otherwise fill the first places of every sentence.
    gene_symbols
        Column of ``var`` with the gene symbols, if ``var_names`` are not symbols.
    prefix
        Text before the genes, e.g. ``gpt.pp.PAPER_PREFIX`` =
        ``"A cell with genes ranked by expression: "`` (scMPT). Written as given.
    max_tokens
        Cut each sentence to this many tokens of the encoder's tokenizer (special tokens
        and the prefix included). Default: ``encoder.max_tokens`` when an encoder is
        given, no cut otherwise. Given alone, the default encoder's tokenizer counts.
    encoder
        Text encoder (a name or :class:`~genept.encoders.TextEncoder`, see
        :func:`genept.encoders.get_encoder`) whose tokenizer and limit set the cut: no
        sentence holds genes the model would cut anyway.
    hash_names
        Ablation (scMPT 3.2): replace each gene name by the first 10 hex digits of its
        SHA-256 hash.
    shuffle
        Ablation (scMPT 3.2): randomly permute the genes within each cell (the same genes
        as without shuffling: the cut happens first).
    {doc_random_state}
        Here: the order of equally expressed genes, and the shuffle. ``None``: ties by gene
        order in ``var`` (and an unseeded shuffle); an integer: ties by a seeded random
        permutation of the genes, the same for every cell (see :func:`rank_genes`).
    block_rows
        Rows processed at once (bounds memory; default about 16M non-zeros per block).
    key_added
        ``obs`` column of the sentences and ``uns`` key of the parameters.
    show_progress
        Progress bar (default ``genept.settings.progress``).
    {doc_copy}
    inplace
        Write to ``adata``; ``False`` returns the sentences and writes nothing.

    Returns
    -------
    With ``inplace=False`` a :class:`pandas.Series` of sentences indexed by
    ``obs_names``. Otherwise ``None`` (or a copy with ``copy=True``), setting

    ``adata.obs[key_added]``
        The sentence of each cell (``""`` for a cell without expressed genes).
    ``adata.uns[key_added]['params']``
        The options used, the tokenizer and the token budget.

    Examples
    --------
    >>> import scanpy as sc, genept as gpt
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> gpt.pp.cell_sentences(adata, use_raw=True, n_genes=5)
    >>> adata.obs["genept_sentence"].iloc[0]  # doctest: +SKIP
    'MALAT1 TMSB4X B2M RPL13 FTL'
    >>> s = gpt.pp.cell_sentences(  # doctest: +SKIP
    ...     adata, use_raw=True, prefix=gpt.pp.PAPER_PREFIX, encoder="all-MiniLM-L6-v2",
    ...     inplace=False)
    """
    check_adata(adata)
    if copy and not inplace:
        raise ValueError("copy=True writes to a copy, inplace=False writes nothing: pick one")
    n_genes = _check_n_genes(n_genes)
    block_rows = check_block_rows(block_rows)
    start = logg.info("building cell sentences")
    X = get_matrix(adata, layer=layer, use_raw=use_raw)
    names = get_var_names(adata, gene_symbols=gene_symbols, use_raw=use_raw)
    if X.shape[1] == 0:
        raise ValueError("adata has no genes (n_vars == 0)")
    mask, mask_name = gene_mask(adata, mask_var, use_raw)
    names = mask_names(names, mask)  # genes outside the mask are never written
    enc = None
    if encoder is not None or max_tokens is not None:
        from ..encoders import get_encoder

        enc = get_encoder(encoder)
    plan = sentence_plan(
        names, prefix=prefix, hash_names=hash_names, encoder=enc, max_tokens=max_tokens
    )
    if plan.budget is not None:
        logg.info(f"    token budget for genes: {plan.budget} ({enc!r})")
    sentences = _build(
        X,
        plan,
        n_genes=n_genes,
        shuffle=shuffle,
        random_state=random_state,
        block_rows=block_rows,
        show_progress=settings.progress if show_progress is None else show_progress,
    )
    series = pd.Series(sentences, index=adata.obs_names.copy(), dtype=object, name=key_added)
    if not inplace:
        logg.info("    finished", time=start)
        return series
    params: dict[str, Any] = {
        "n_genes": n_genes,
        "mask_var": mask_name,
        "layer": layer,
        "use_raw": bool(use_raw) if use_raw is not None else None,
        "gene_symbols": gene_symbols,
        "prefix": prefix,
        "max_tokens": plan.max_tokens,
        "token_budget": plan.budget,
        "encoder": None if enc is None else str(getattr(enc, "model_name", None) or enc.cache_id),
        "hash_names": bool(hash_names),
        "shuffle": bool(shuffle),
        "random_state": random_state,
        "n_empty": int(sum(1 for s in sentences if not s)),
    }
    params = sanitize_params(params)  # None left out: h5ad cannot store it
    return write_results(
        adata,
        [("obs", key_added, series.to_numpy()), ("uns", key_added, {"params": params})],
        copy=copy,
        log=lambda msg: logg.info("    finished", time=start, deep=msg),
    )
