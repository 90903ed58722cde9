"""Gene-map identifiers of GenePT-w embeddings, compared wherever a query meets a reference.

``gpt.tl.embed_cells`` records in ``uns[...]["params"]["gene_map"]`` an identifier of
the genes and gene vectors a cell was read through (see ``genept.tl._gene_map``); two
embeddings with different identifiers are not comparable cell to cell.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from anndata import AnnData

from ._keys import recorded_params

__all__ = ["MODEL_MAPS_WARNING", "check_gene_maps", "recorded_gene_maps", "user_stacklevel"]

#: the start of the warning of ``ScMPTModel.predict_proba`` (a regex for filters)
MODEL_MAPS_WARNING = r"obsm\[.*\] of `adata` and the model's reference"

_PACKAGE = str(Path(__file__).resolve().parents[1])


def user_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first caller outside genept."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(_PACKAGE):
        frame = frame.f_back
        level += 1
    return level


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
                stacklevel=user_stacklevel(),
            )


def recorded_gene_maps(adata: AnnData, keys) -> dict[str, str | None]:
    """The GenePT-w ``uns[...]["params"]["gene_map"]`` of each ``obsm`` key (else ``None``).

    Only GenePT-w maps are compared: there a different map means other genes in every
    cell's weighted average, or other coordinates (other whitening). GenePT-s sentences
    written from other genes are still texts in the encoder's one space; reading the
    query through the reference's genes helped within data sets but not across them
    (``benchmarks/reference_query.py``).
    """
    out = {}
    for key in keys:
        params = recorded_params(adata, key) if isinstance(key, str) and key else {}
        gm = params.get("gene_map") if params.get("method") == "w" else None
        out[key] = str(gm) if gm else None
    return out
