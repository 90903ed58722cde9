"""Probes of what text encoders use in cell sentences (scMPT section 4.3).

* :func:`ablation_embeddings` — embeddings of the original cell sentences and of the
  ablations: gene names replaced by ``sha256(name)[:10]`` (``"hashed"``), gene order
  shuffled (``"shuffled"``), both (``"hashed_shuffled"``).
* :func:`marker_similarity` — cosine similarity between each cell type's top marker and
  the other markers of the same cell type (intra) or of other cell types (inter), with
  PanglaoDB-style marker tables (scMPT table 8: Pancreas 0.644 / 0.623, Aorta 0.667 / 0.653).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._gene_matching import is_missing_name
from .._utils import check_adata, get_matrix, get_var_names, renamed_arg
from ._common import as_embedding_frame

__all__ = ["ABLATION_MODES", "ablation_embeddings", "marker_similarity"]

#: the scMPT ablations: (hash names, shuffle order)
ABLATION_MODES = {
    "original": (False, False),
    "hashed": (True, False),
    "shuffled": (False, True),
    "hashed_shuffled": (True, True),
}


@renamed_arg("seed", "random_state")
def ablation_embeddings(
    adata: AnnData,
    encoder: Any = None,
    *,
    modes: Sequence[str] = ("original", "hashed", "shuffled", "hashed_shuffled"),
    n_genes: int | None = None,
    prefix: str = "",
    max_tokens: int | None = None,
    gene_symbols: str | None = None,
    layer: str | None = None,
    use_raw: bool | None = None,
    random_state: int = 0,
    cache: bool = True,
    show_progress: bool | None = None,
) -> dict[str, np.ndarray]:
    """Cell-sentence embeddings with the scMPT ablations.

    Each mode builds the cell sentences (genes by descending expression, zeros left out)
    with :func:`genept.pp.build_sentences`, cut to the encoder's token limit, and embeds
    them. Hashing is applied before the cut (hashes cost more tokens, so a hashed sentence
    may hold fewer genes, as in the paper where sentences are cut to the same length);
    shuffling is applied after the cut, so a shuffled sentence holds the same genes.

    Parameters
    ----------
    adata
        Cells with normalised expression.
    encoder
        A :class:`~genept.encoders.TextEncoder` or a name for
        :func:`genept.encoders.get_encoder` (default: the packaged MiniLM).
    modes
        Any of ``"original"``, ``"hashed"``, ``"shuffled"``, ``"hashed_shuffled"``.
    n_genes
        At most this many genes per sentence.
    prefix
        Text before the genes (e.g. ``genept.pp.PAPER_PREFIX``).
    max_tokens
        Token limit (default: the encoder's).
    gene_symbols, layer, use_raw
        Gene names and expression matrix (scanpy's rules).
    random_state
        Tie order and shuffle.
    cache, show_progress
        Passed to the encoder.

    Returns
    -------
    ``{mode: (n_obs, dim) float32}``. Evaluate with :func:`knn_metrics` after putting
    them in ``obsm``.

    Examples
    --------
    >>> import scanpy as sc, genept as gpt
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> out = gpt.bm.ablation_embeddings(adata, modes=["original", "hashed"],
    ...                                  use_raw=True)  # doctest: +SKIP
    >>> out["hashed"].shape  # doctest: +SKIP
    (700, 384)
    """
    from ..encoders import get_encoder
    from ..pp import build_sentences, sentence_plan

    check_adata(adata)
    bad = [m for m in modes if m not in ABLATION_MODES]
    if bad:
        raise ValueError(f"unknown ablation modes {bad}; choose from {list(ABLATION_MODES)}")
    enc = get_encoder(encoder)
    X = get_matrix(adata, layer=layer, use_raw=use_raw)
    names = get_var_names(adata, gene_symbols=gene_symbols, use_raw=use_raw)
    out = {}
    for mode in modes:
        hash_names, shuffle = ABLATION_MODES[mode]
        plan = sentence_plan(
            names, prefix=prefix, hash_names=hash_names, encoder=enc, max_tokens=max_tokens
        )
        sentences = build_sentences(
            X,
            plan,
            n_genes=n_genes,
            shuffle=shuffle,
            random_state=random_state,
            show_progress=False,
        )
        empty = [i for i, s in enumerate(sentences) if not s.strip()]
        if empty:
            raise ValueError(
                f"{len(empty)} cells express no gene (first: {adata.obs_names[empty[0]]}); "
                "filter them (sc.pp.filter_cells(adata, min_genes=1)) first"
            )
        out[mode] = enc.encode(
            sentences, cache=cache, show_progress=show_progress, desc=f"cell sentences ({mode})"
        )
    return out


def _marker_lists(
    markers: Any, cell_type_col: str, gene_col: str, rank_by: str | None
) -> dict[str, list[str]]:
    if isinstance(markers, Mapping):
        # missing genes (None / NaN) are no markers: str() would make them a gene "nan"
        return {str(k): [str(g) for g in v if not is_missing_name(g)] for k, v in markers.items()}
    df = pd.DataFrame(markers)
    ren = {"cell type": "cell_type", "official gene symbol": "gene"}
    df = df.rename(columns={k: v for k, v in ren.items() if k in df.columns})
    if cell_type_col not in df.columns or gene_col not in df.columns:
        raise ValueError(
            f"markers need columns {cell_type_col!r} and {gene_col!r} (PanglaoDB's 'cell type' and "
            f"'official gene symbol' are understood); got {list(df.columns)[:8]}"
        )
    if rank_by is not None and rank_by in df.columns:
        df = df.sort_values(rank_by, ascending=False, kind="stable")
    # rows without a cell type or a gene carry no marker (astype(str) would make them "nan")
    df = df.dropna(subset=[cell_type_col, gene_col])
    out: dict[str, list[str]] = {}
    for ct, g in zip(df[cell_type_col].astype(str), df[gene_col].astype(str), strict=True):
        lst = out.setdefault(ct, [])
        if g not in lst:
            lst.append(g)
    return out


def marker_similarity(
    emb: Any,
    markers: pd.DataFrame | Mapping[str, Sequence[str]],
    *,
    cell_types: Sequence[str] | None = None,
    cell_type_col: str = "cell_type",
    gene_col: str = "gene",
    rank_by: str | None = "sensitivity_human",
    min_markers: int = 2,
) -> pd.DataFrame:
    """Intra- vs inter-cell-type cosine similarity of marker genes (scMPT table 8).

    For each cell type, its top marker is compared with the other markers of the same
    cell type (intra) and with the markers of the other selected cell types (inter,
    excluding genes that also mark the cell type itself); both are averaged over cell
    types. A positive gap means the embedding groups markers of a cell type.

    Parameters
    ----------
    emb
        Gene (name) embeddings: :class:`~genept.GeneEmbeddings`, DataFrame indexed by gene,
        dict, AnnData with ``varm['X_genept']``, or a text encoder
        (:class:`~genept.encoders.TextEncoder`), which then embeds the gene names, as in
        scMPT.
    markers
        DataFrame with a cell-type and a gene column (PanglaoDB's ``cell type`` /
        ``official gene symbol`` are recognised; see :func:`genept.bm.panglao_markers`)
        or a mapping cell type -> genes, most important first.
    cell_types
        Cell types to use (default: all); the paper used the dataset's cell types.
    cell_type_col, gene_col
        Columns of ``markers``.
    rank_by
        Column ordering the markers of a cell type (highest first) to choose the top
        marker; PanglaoDB's ``sensitivity_human`` by default, file order when absent.
    min_markers
        Skip cell types with fewer embedded markers.

    Returns
    -------
    DataFrame, one row per cell type: ``top_marker``, ``n_markers``, ``intra``, ``inter``,
    ``gap``; ``.attrs["summary"]`` holds the averages over cell types
    (``intra``, ``inter``, ``gap``).

    Examples
    --------
    >>> import numpy as np, genept as gpt
    >>> emb = {"CD3E": np.array([1.0, 0]), "CD3D": np.array([1.0, 0.1]),
    ...        "MS4A1": np.array([0.0, 1]), "CD79A": np.array([0.1, 1])}
    >>> markers = {"T cell": ["CD3E", "CD3D"], "B cell": ["MS4A1", "CD79A"]}
    >>> res = gpt.bm.marker_similarity(emb, markers)
    >>> bool(res.attrs["summary"]["gap"] > 0)
    True
    """
    from ..encoders import TextEncoder

    lists = _marker_lists(markers, cell_type_col, gene_col, rank_by)
    if cell_types is not None:
        missing = [c for c in cell_types if c not in lists]
        if missing:
            raise KeyError(f"cell types not in the markers: {missing[:5]}")
        lists = {c: lists[c] for c in cell_types}
    if isinstance(emb, TextEncoder):
        genes = sorted({g for v in lists.values() for g in v})
        frame = pd.DataFrame(emb.encode(genes, show_progress=False), index=pd.Index(genes))
    else:
        frame = as_embedding_frame(emb)
    lists = {c: [g for g in v if g in frame.index] for c, v in lists.items()}
    lists = {c: v for c, v in lists.items() if len(v) >= min_markers}
    if len(lists) < 2:
        raise ValueError(f"need at least 2 cell types with >= {min_markers} embedded markers")
    M = frame.to_numpy(dtype=np.float64)
    M = M / np.linalg.norm(M, axis=1, keepdims=True)
    pos = {g: i for i, g in enumerate(frame.index)}
    rows = []
    for c, genes in lists.items():
        top = M[pos[genes[0]]]
        own = set(genes)
        intra = M[[pos[g] for g in genes[1:]]] @ top
        others = sorted({g for d, v in lists.items() if d != c for g in v} - own)
        inter = M[[pos[g] for g in others]] @ top if others else np.array([np.nan])
        rows.append(
            {
                "cell_type": c,
                "top_marker": genes[0],
                "n_markers": len(genes),
                "intra": float(intra.mean()),
                "inter": float(np.mean(inter)),
                "gap": float(intra.mean() - np.mean(inter)),
            }
        )
    df = pd.DataFrame(rows).set_index("cell_type")
    df.attrs["summary"] = {k: float(df[k].mean()) for k in ("intra", "inter", "gap")}
    return df
