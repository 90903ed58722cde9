"""The gene map of a GenePT embedding, and embedding a query through a reference's map.

A cell's GenePT-w vector is its expression read through a *gene map*: the genes in use
(``mask_var``, by default the highly variable genes) and their vectors (whitened over
those genes by default). GenePT-s reads sentences written from the genes in use. With
the defaults both depend on the data set: a reference and a query processed on their own
select different highly variable genes, and GenePT-w whitens over different gene sets,
which gives their embeddings different coordinates (10-NN annotation of pbmc3k fell from
0.914 to 0.866 in ``benchmarks/reference_query.py``). ``embed_cells(query,
reference=ref)`` therefore embeds the query through the reference's map, as
:func:`scanpy.tl.ingest` maps a query onto a reference's PCA; every embedding records an
identifier of its map (``uns[...]["params"]["gene_map"]``), which the annotators compare
for GenePT-w (:mod:`genept._core._maps`).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg

from .._core._keys import recorded_params, uns_key
from .._kernels.weighted._plan import check_gene_embeddings
from .._utils import gene_mask

__all__ = [
    "GeneMap",
    "gene_embedding_matrix",
    "gene_map_id",
    "matrix_var_names",
    "reference_gene_map",
]

#: the settings of each method that must be the same in a query and its reference
MAP_SETTINGS = {
    "w": ("gene_key", "whiten", "normalize"),
    "s": (
        "model",
        "gene_symbols",
        "n_genes",
        "prefix",
        "hash_names",
        "shuffle",
        "windows",
        "window_decay",
    ),
}


def matrix_var_names(adata: AnnData, use_raw: bool | None) -> pd.Index:
    """The gene identifiers of the matrix in use (``raw.var_names`` or ``var_names``)."""
    return pd.Index((adata.raw.var_names if use_raw else adata.var_names).astype(str))


def gene_embedding_matrix(
    adata: AnnData, gene_key: str, use_raw: bool | None, name: str = "adata"
) -> np.ndarray:
    """``varm[gene_key]`` aligned to the genes of the matrix in use (``raw`` or ``X``).

    ``name`` is how errors call ``adata``: ``"reference"`` for the vectors a reference
    was embedded with, whose key is the recorded one (no ``gene_key=`` to pass).
    """
    redo = f"gpt.tl.embed_genes({name}, key_added={gene_key!r}) and re-embed the {name}"
    if gene_key not in adata.varm:
        raise KeyError(
            f"{name}.varm has no {gene_key!r}: GenePT-w needs gene embeddings. Run "
            + (
                f"gpt.tl.embed_genes(adata) first (or pass gene_key=; varm keys: "
                f"{list(adata.varm.keys())})"
                if name == "adata"
                else redo
            )
        )
    E = check_gene_embeddings(
        adata.varm[gene_key],
        f"{name}.varm[{gene_key!r}]",
        "re-run "
        + ("gpt.tl.embed_genes(adata) or pass another gene_key=" if name == "adata" else redo),
    )
    if not use_raw:
        return E
    # raw may hold more genes than var: genes missing from var have no embedding
    if not adata.var_names.is_unique:
        dup = adata.var_names[adata.var_names.duplicated()].unique()[:5].tolist()
        raise ValueError(
            f"{name}.var_names has duplicates (e.g. {dup}), so varm[{gene_key!r}] cannot be "
            f"matched to {name}.raw's genes; run {name}.var_names_make_unique() first"
        )
    pos = adata.var_names.get_indexer(adata.raw.var_names)
    out = np.zeros((adata.raw.n_vars, E.shape[1]), dtype=np.float32)
    out[pos >= 0] = E[pos[pos >= 0]]
    n_missing = int((pos < 0).sum())
    if n_missing:
        logg.info(f"    {n_missing} genes of adata.raw are not in adata.var and have no embedding")
    return out


def gene_map_id(
    method: str,
    settings: dict[str, Any],
    names: pd.Index | None = None,
    rows: np.ndarray | None = None,
) -> str:
    """A 16-hex identifier of a gene map: equal maps, equal identifiers.

    ``names``/``rows`` are the genes in use and (GenePT-w) their vectors before
    whitening, exactly as stored (so the identifier does not depend on floating-point
    details of a machine); ``None`` for a map that does not depend on the data set
    (every gene, no whitening), which is then identified by its settings alone.
    """
    h = hashlib.sha256(method.encode())
    h.update(json.dumps({k: _canon(v) for k, v in settings.items()}, sort_keys=True).encode())
    if names is not None:
        order = np.argsort(np.asarray(names, dtype=str), kind="stable")
        h.update(("\n".join(np.asarray(names, dtype=str)[order]) + "\n").encode())
        if rows is not None:
            h.update(np.ascontiguousarray(np.asarray(rows, dtype=np.float32)[order]).tobytes())
    return h.hexdigest()[:16]


def _canon(v: Any) -> Any:
    """A setting as JSON sees it, the same before and after an h5ad round trip."""
    if v is None or isinstance(v, (bool, np.bool_)):
        return None if v is None else bool(v)
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    return str(v)


@dataclass
class GeneMap:
    """A reference's gene map: genes in use and (GenePT-w) their vectors before whitening."""

    names: pd.Index
    rows: np.ndarray | None
    id: str
    mask_var: str
    mask_kind: str
    n_total: int
    params: dict


#: the parameters of ``uns[gene_key]`` that identify where gene vectors came from
GENE_SOURCE_KEYS = ("source", "model", "text_level", "table", "mouse_names", "context")


def w_id_settings(whiten: float, normalize: str, n_total: int, gene_params: dict) -> dict:
    """What identifies a GenePT-w map besides its genes and vectors.

    ``n_total`` (the matrix's gene count) scales ``normalize="notebook"`` embeddings;
    the gene-vector source names the vectors where they are not hashed (every gene, no
    whitening).
    """
    out = {"whiten": whiten, "normalize": normalize}
    if normalize == "notebook":
        out["n_total"] = int(n_total)
    out.update({f"genes_{k}": gene_params.get(k) for k in GENE_SOURCE_KEYS})
    return out


def own_gene_map_id(
    method: str, settings: dict[str, Any], all_genes: bool, names: pd.Index, rows
) -> str:
    """:func:`gene_map_id` of an embedding.

    Every gene without whitening (the papers' GenePT-w; GenePT-s over every gene) is the
    same map in every data set, identified by its settings (and the gene-vector source)
    alone; otherwise the genes in use (and their vectors) are part of it.
    """
    if all_genes and (method == "s" or not float(settings.get("whiten") or 0)):
        return gene_map_id(method, {**settings, "all_genes": True})
    return gene_map_id(method, settings, names, rows)


def vectors_id(names: pd.Index, rows: np.ndarray) -> str:
    """An identifier of the gene vectors in use (GenePT-w), whatever the map's mode."""
    return gene_map_id("vectors", {}, names, rows)


def mask_kind(mask_var: Any, mask: np.ndarray | None) -> str:
    """How the genes in use were chosen: ``"all"``, ``"column"`` or ``"array"``."""
    if mask is None:
        return "all"
    return "column" if mask_var is None or isinstance(mask_var, str) else "array"


def _shown(key: str, value: Any) -> Any:
    return None if key == "n_genes" and not value else value  # 0 is recorded for None


def reference_gene_map(
    reference: AnnData, key_added: str, method: str, settings: dict[str, Any]
) -> GeneMap:
    """The gene map that made ``reference.obsm[key_added]``, its settings checked against ``settings``.

    Raises a clear error when the reference has no such embedding, was made by the other
    method or with other settings, chose its genes with an array ``mask_var`` (which is
    not recorded) or through another reference, or when its genes or gene vectors
    changed since.
    """
    if not isinstance(reference, AnnData):
        raise TypeError(f"reference must be an AnnData, got {type(reference).__name__}")
    key = uns_key(key_added)
    params = recorded_params(reference, key_added)
    if key_added not in reference.obsm or not params:
        raise KeyError(
            f"reference has no GenePT embedding {key_added!r} (obsm[{key_added!r}] with "
            f"uns[{key!r}]['params']); run gpt.tl.embed_cells(reference, method={method!r}, "
            f"key_added={key_added!r}) first"
        )
    if params.get("method") != method:
        raise ValueError(
            f"reference.obsm[{key_added!r}] is GenePT-{params.get('method')}, not "
            f"GenePT-{method}; pass method={params.get('method')!r}"
        )
    differ = [
        f"{k}={_shown(k, settings[k])!r} (reference: {_shown(k, params.get(k))!r})"
        for k in MAP_SETTINGS[method]
        if k in params and _canon(settings[k]) != _canon(params[k])
    ]
    if differ:
        raise ValueError(
            "the query must be embedded with the reference's settings, but "
            + ", ".join(differ)
            + f"; pass the values the reference was embedded with (reference.uns[{key!r}]['params'])"
        )
    mask_var = str(params.get("mask_var", "all genes"))
    kind = str(params.get("mask_kind", "")) or (  # not recorded by the first 0.1 builds
        "all" if mask_var == "all genes" else "array" if mask_var == "mask" else "column"
    )
    if kind == "array":
        raise ValueError(
            f"reference.obsm[{key_added!r}] chose its genes with an array mask_var, which is "
            "not recorded; store the mask as a boolean column (reference.var['my_genes'] = "
            "mask), embed the reference with mask_var='my_genes', then the query"
        )
    if kind == "reference":
        raise ValueError(
            f"reference.obsm[{key_added!r}] was itself embedded through another "
            "reference's genes; pass that reference instead (both then share its map)"
        )
    use_raw = bool(params.get("use_raw"))
    if kind == "column" and mask_var not in reference.var:
        raise KeyError(
            f"reference.var has no column {mask_var!r} any more (it chose the genes of "
            f"reference.obsm[{key_added!r}]); re-embed the reference"
        )
    mask, _ = gene_mask(reference, False if kind == "all" else mask_var, use_raw)
    names = matrix_var_names(reference, use_raw)
    if not names.is_unique:
        dup = names[names.duplicated()].unique()[:5].tolist()
        raise ValueError(
            f"the reference's gene names have duplicates (e.g. {dup}), so its genes cannot "
            "be matched to the query's; run reference.var_names_make_unique() and re-embed it"
        )
    n_total = len(names)
    rows = None
    if method == "w":
        gene_key = str(params.get("gene_key", "X_genept"))
        E = gene_embedding_matrix(reference, gene_key, use_raw, "reference")
        if mask is not None:
            E = np.where(mask[:, None], E, np.float32(0))
        used = np.abs(E).sum(1) > 0
        names, rows = names[used], E[used]
        id_settings = w_id_settings(
            float(params.get("whiten") or 0),
            str(params.get("normalize")),
            n_total,
            recorded_params(reference, gene_key),
        )
        changed = "gene_vectors" in params and params["gene_vectors"] != vectors_id(names, rows)
    else:
        if mask is not None:
            names = names[mask]
        id_settings = {k: params.get(k) for k in MAP_SETTINGS["s"]}
        changed = False
    map_id = own_gene_map_id(method, id_settings, mask is None, names, rows)
    if changed or ("gene_map" in params and params["gene_map"] != map_id):
        what = "the genes in use" if kind == "all" else f"var[{mask_var!r}]"
        raise ValueError(
            f"the genes or gene vectors of the reference changed since reference.obsm"
            f"[{key_added!r}] was computed ({what} or varm re-computed?); re-embed the "
            "reference first"
        )
    if not len(names):
        raise ValueError(f"reference.obsm[{key_added!r}] was computed from no gene")
    return GeneMap(
        names=names,
        rows=rows,
        id=map_id,
        mask_var=mask_var,
        mask_kind=kind,
        n_total=n_total,
        params=params,
    )


def recorded_mask(gmap: GeneMap, itself: bool) -> tuple[str, str]:
    """``(mask_var, mask_kind)`` recorded for a query read through ``gmap``.

    A reference embedded through its own map (``itself``) keeps its own record, so that
    it stays usable as a reference.
    """
    if itself:
        return gmap.mask_var, gmap.mask_kind
    return f"reference ({gmap.mask_var})", "reference"


def align_rows(gmap_names: pd.Index, rows: np.ndarray, names: pd.Index) -> np.ndarray:
    """``rows`` (one per gene of the map) placed on the genes ``names`` (zero: not in the map)."""
    out = np.zeros((len(names), rows.shape[1]), dtype=np.float32)
    pos = pd.Index(gmap_names).get_indexer(names)
    out[pos >= 0] = rows[pos[pos >= 0]]
    return out


def report_overlap(gmap: GeneMap, names: pd.Index) -> int:
    """Genes of the map that the query has; an error for none, a warning for under half."""
    n = int(pd.Index(gmap.names).isin(names).sum())
    if n == 0:
        raise ValueError(
            f"the query has none of the reference's {len(gmap.names)} genes (e.g. "
            f"{list(gmap.names[:3])}); use the same gene identifiers in both (var_names)"
        )
    if n < 0.5 * len(gmap.names):
        warnings.warn(
            f"the query has only {n} of the reference's {len(gmap.names)} genes; its cells "
            "are read through those alone",
            UserWarning,
            stacklevel=3,
        )
    return n
