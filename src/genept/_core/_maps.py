"""Gene-map identifiers of GenePT-w embeddings, compared wherever a query meets a reference.

``gpt.tl.embed_cells`` records in ``uns[...]["params"]["gene_map"]`` an identifier of
the genes and gene vectors a cell was read through (see ``genept.tl._gene_map``); two
embeddings with different identifiers are not comparable cell to cell.
"""

from __future__ import annotations

import warnings

from anndata import AnnData

from ._keys import uns_key

__all__ = ["check_gene_maps", "recorded_gene_maps"]


def check_gene_maps(
    maps_a: dict[str, str | None], maps_b: dict[str, str | None], what: str
) -> None:
    """Warn for each representation whose two gene maps are known and differ."""
    for key, a in maps_a.items():
        b = maps_b.get(key)
        if a and b and a != b:
            warnings.warn(
                f"obsm[{key!r}] {what} were computed through different gene maps (other "
                "genes in use, other gene vectors or whitening), so their cells are not "
                "comparable; embed the query through the reference's map: "
                f"gpt.tl.embed_cells(query, reference=reference, key_added={key!r})",
                UserWarning,
                stacklevel=3,
            )


def recorded_gene_maps(adata: AnnData, keys) -> dict[str, str | None]:
    """The GenePT-w ``uns[...]["params"]["gene_map"]`` of each ``obsm`` key (else ``None``).

    Only GenePT-w maps are compared: there a different map means other coordinates
    (other whitening). GenePT-s sentences written from other genes are still texts in
    the encoder's one space; reading the query through the reference's genes helped
    within data sets but not across them (``benchmarks/reference_query.py``).
    """
    out = {}
    for key in keys:
        entry = adata.uns.get(uns_key(key)) if isinstance(key, str) and key else None
        params = entry.get("params") if isinstance(entry, dict) else None
        ok = isinstance(params, dict) and params.get("method") == "w"
        gm = params.get("gene_map") if ok else None
        out[key] = str(gm) if gm else None
    return out
