"""Marker recovery of gene attributions (scMPT section 4.3, tables 3-4).

scMPT checks how many PanglaoDB markers of each cell type are among the 10 genes with the
highest attribution (integrated gradients, LIME) and which markers both methods found.
:func:`marker_recovery` does that for the table of :func:`genept.tl.explain_annotation`,
with a matched random baseline (k genes drawn from the genes of the same cells' sentences:
the hypergeometric expectation and tail probability) and the Jaccard agreement of the two
methods' top-k sets. :func:`marker_sets` builds the marker sets per group from the PanglaoDB
and CellMarker 2.0 tables (not shipped: their licences do not clearly allow
redistribution; pass the files you downloaded).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

__all__ = ["PBMC68K_MARKER_TYPES", "cellmarker_markers", "marker_recovery", "marker_sets"]

#: ``bulk_labels`` of ``sc.datasets.pbmc68k_reduced()`` -> cell types of PanglaoDB
#: (``"panglao"``) and CellMarker 2.0 (``"cellmarker"``) whose markers count for it
PBMC68K_MARKER_TYPES: dict[str, dict[str, list[str]]] = {
    "CD14+ Monocyte": {
        "panglao": ["Monocytes"],
        "cellmarker": ["Monocyte", "CD14+ monocyte", "CD14 monocyte", "Classical monocyte"],
    },
    "CD19+ B": {
        "panglao": ["B cells", "B cells naive", "B cells memory"],
        "cellmarker": ["B cell", "Naive B cell", "Memory B cell", "Mature B cell"],
    },
    "CD56+ NK": {
        "panglao": ["NK cells"],
        "cellmarker": [
            "Natural killer cell",
            "CD56dim Natural killer cell",
            "CD56bright Natural killer cell",
        ],
    },
    "Dendritic": {
        "panglao": ["Dendritic cells", "Plasmacytoid dendritic cells"],
        "cellmarker": [
            "Dendritic cell",
            "Myeloid dendritic cell",
            "Plasmacytoid dendritic cell",
            "Conventional dendritic cell 2(cDC2)",
        ],
    },
    "CD34+": {
        "panglao": ["Hematopoietic stem cells"],
        "cellmarker": ["Hematopoietic stem cell", "Hematopoietic progenitor cell"],
    },
    "CD8+ Cytotoxic T": {
        "panglao": ["T cytotoxic cells", "T cells"],
        "cellmarker": ["CD8+ T cell", "Cytotoxic T cell", "Cytotoxic CD8+ T cell"],
    },
    "CD8+/CD45RA+ Naive Cytotoxic": {
        "panglao": ["T cytotoxic cells", "T cells"],
        "cellmarker": ["Naive CD8+ T cell", "CD8+ T cell"],
    },
    "CD4+/CD25 T Reg": {
        "panglao": ["T regulatory cells", "T cells"],
        "cellmarker": [
            "Regulatory T(Treg) cell",
            "Regulatory T (Treg) cell",
            "CD4+CD25+ regulatory T cell",
            "CD4+ T cell",
        ],
    },
    "CD4+/CD45RO+ Memory": {
        "panglao": ["T memory cells", "T helper cells", "T cells"],
        "cellmarker": ["Memory CD4+ T cell", "CD4+ T cell"],
    },
    "CD4+/CD45RA+/CD25- Naive T": {
        "panglao": ["T helper cells", "T cells"],
        "cellmarker": ["Naive CD4+ T cell", "Naive CD4 T cell", "CD4+ T cell"],
    },
}


def cellmarker_markers(
    path: str | os.PathLike, *, tissue: str | Sequence[str] | None = None
) -> pd.DataFrame:
    """CellMarker 2.0 markers (``Tissue,CT,Gene`` with comma-separated genes) as a long table.

    Parameters
    ----------
    path
        ``CellMarker2_Human_Aug.csv`` (or a table with the same three columns).
    tissue
        Keep only these tissues (``None``: all).

    Returns
    -------
    DataFrame with columns ``tissue``, ``cell_type``, ``gene``, one row per marker.

    Examples
    --------
    >>> cm = gpt.bm.cellmarker_markers("CellMarker2_Human_Aug.csv")  # doctest: +SKIP
    """
    df = pd.read_csv(path)
    need = {"Tissue", "CT", "Gene"}
    if not need <= set(df.columns):
        raise ValueError(
            f"{path} is not a CellMarker 2.0 table: it needs the columns {sorted(need)}, "
            f"has {list(df.columns)[:6]}"
        )
    if tissue is not None:
        keep = [tissue] if isinstance(tissue, str) else list(tissue)
        df = df[df["Tissue"].isin(keep)]
    genes = df["Gene"].fillna("").astype(str).str.split(",")
    out = pd.DataFrame(
        {
            "tissue": df["Tissue"].repeat(genes.str.len()),
            "cell_type": df["CT"].repeat(genes.str.len()),
        }
    )
    out["gene"] = [g.strip() for gs in genes for g in gs]
    return out[out["gene"] != ""].reset_index(drop=True)


def marker_sets(
    panglao: str | os.PathLike | pd.DataFrame | None = None,
    cellmarker: str | os.PathLike | pd.DataFrame | None = None,
    *,
    groups: Mapping[str, Mapping[str, Sequence[str]] | Sequence[str]],
    species: str = "Hs",
) -> dict[str, set[str]]:
    """Marker genes of each group, from PanglaoDB and/or CellMarker 2.0 cell types.

    Parameters
    ----------
    panglao
        ``PanglaoDB_markers_27_Mar_2020.tsv`` or :func:`panglao_markers`'s table.
    cellmarker
        ``CellMarker2_Human_Aug.csv`` or :func:`cellmarker_markers`'s table.
    groups
        ``{group: {"panglao": [types], "cellmarker": [types]}}`` (e.g.
        :data:`PBMC68K_MARKER_TYPES`), or ``{group: [types]}`` looked up in both tables.
        A type named that is in neither table is an error (a typo would silently give no
        markers).
    species
        PanglaoDB species (``"Hs"`` human, ``"Mm"`` mouse).

    Returns
    -------
    ``{group: set of gene symbols}`` (upper case), the union over both tables.

    Examples
    --------
    >>> m = gpt.bm.marker_sets("PanglaoDB_markers_27_Mar_2020.tsv", groups=gpt.bm.PBMC68K_MARKER_TYPES)  # doctest: +SKIP
    >>> sorted(m["CD56+ NK"])[:3]  # doctest: +SKIP
    """
    from ._loaders import panglao_markers

    if panglao is None and cellmarker is None:
        raise ValueError("pass panglao= and/or cellmarker= (paths or tables)")
    tables: dict[str, pd.DataFrame] = {}
    if panglao is not None:
        tables["panglao"] = (
            panglao
            if isinstance(panglao, pd.DataFrame)
            else panglao_markers(panglao, species=species)
        )
    if cellmarker is not None:
        tables["cellmarker"] = (
            cellmarker if isinstance(cellmarker, pd.DataFrame) else cellmarker_markers(cellmarker)
        )
    by_type = {
        src: t.groupby(t["cell_type"].astype(str))["gene"].agg(
            lambda s: {str(g).upper() for g in s if isinstance(g, str)}
        )
        for src, t in tables.items()
    }
    out: dict[str, set[str]] = {}
    for group, spec in groups.items():
        genes: set[str] = set()
        wanted = spec if isinstance(spec, Mapping) else {src: list(spec) for src in tables}
        for src, types in wanted.items():
            if src not in by_type:
                continue
            types = [types] if isinstance(types, str) else list(types)
            known = [t for t in types if t in by_type[src].index]
            if not known and isinstance(spec, Mapping):
                raise KeyError(
                    f"none of the cell types {types} of group {group!r} is in the {src} table; "
                    f"e.g. {list(by_type[src].index[:5])}"
                )
            for t in known:
                genes |= by_type[src][t]
        if not isinstance(spec, Mapping) and not genes:
            raise KeyError(
                f"none of the cell types {list(spec)} of group {group!r} is in the tables"
            )
        out[str(group)] = genes
    return out


def marker_recovery(
    attributions: pd.DataFrame | AnnData,
    markers: Mapping[str, Iterable[str]],
    *,
    key: str = "genept_mlp_attributions",
    k: int = 10,
    methods: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
) -> pd.DataFrame:
    """How many known markers of each group are among its top-``k`` attributed genes.

    scMPT tables 3-4: for each cell type and attribution method, the markers among the
    ``k`` genes of highest mean attribution (:func:`genept.tl.explain_annotation`),
    compared with a **matched random baseline**: ``k`` genes drawn at random, without
    replacement, from the genes that appear in the sentences of the same explained cells
    (the group's rows of the table). Its expected number of markers is ``k M / N``
    (``N`` candidate genes, ``M`` of them markers) and ``p_value`` is the hypergeometric
    probability of at least the observed number. With two methods, ``jaccard`` is the
    Jaccard index of their top-``k`` sets and ``markers_both`` the markers both found.

    Parameters
    ----------
    attributions
        The tidy table of ``explain_annotation`` (``method``, ``group``, ``gene``,
        ``attribution``), or an AnnData holding it in ``uns[key]``.
    markers
        ``{group: marker genes}`` (e.g. from :func:`marker_sets`); compared case-blind.
        Groups without an entry are left out.
    key
        ``uns`` key when ``attributions`` is an AnnData.
    k
        Top genes per group and method.
    methods
        Methods to compare (default: those in the table).
    groups
        Groups to report (default: those in both the table and ``markers``).

    Returns
    -------
    One row per group: ``group``, ``n_candidates``, ``n_marker_candidates``,
    ``random_expected``; per method ``<m>_n_markers``, ``<m>_markers`` (comma-separated,
    in rank order), ``<m>_p_value``, ``<m>_top`` (the top genes); with two methods
    ``jaccard`` and ``markers_both``.

    Examples
    --------
    >>> import pandas as pd, genept as gpt
    >>> t = pd.DataFrame({"method": "ig", "group": "NK", "gene": ["NKG7", "ACTB", "GNLY", "RPL3"],
    ...                   "attribution": [0.4, 0.3, 0.2, 0.1]})
    >>> r = gpt.bm.marker_recovery(t, {"NK": {"NKG7", "GNLY"}}, k=2)
    >>> int(r.loc[0, "ig_n_markers"]), float(r.loc[0, "random_expected"]), r.loc[0, "ig_markers"]
    (1, 1.0, 'NKG7')
    """
    from scipy.stats import hypergeom

    if isinstance(attributions, AnnData):
        if key not in attributions.uns:
            raise KeyError(
                f"adata.uns has no {key!r}; run gpt.tl.explain_annotation first or pass key="
            )
        attributions = attributions.uns[key]
    if not isinstance(attributions, pd.DataFrame):
        raise TypeError(
            f"attributions must be a DataFrame or an AnnData, got {type(attributions).__name__}"
        )
    need = {"method", "group", "gene", "attribution"}
    if not need <= set(attributions.columns):
        raise ValueError(
            f"the attribution table needs columns {sorted(need)} (from gpt.tl.explain_annotation), "
            f"has {list(attributions.columns)}"
        )
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    df = attributions.copy()
    df["group"] = df["group"].astype(str)
    df["gene_u"] = df["gene"].astype(str).str.upper()
    mk = {str(g): {str(x).upper() for x in v} for g, v in markers.items()}
    methods = (
        list(methods) if methods is not None else list(dict.fromkeys(df["method"].astype(str)))
    )
    missing = [m for m in methods if m not in set(df["method"].astype(str))]
    if missing:
        raise ValueError(
            f"methods {missing} are not in the table (has {sorted(set(df['method']))})"
        )
    if groups is None:
        groups = [g for g in dict.fromkeys(df["group"]) if g in mk]
        if not groups:
            raise ValueError(
                f"no group of the table has markers: table groups {sorted(set(df['group']))[:5]}, "
                f"marker groups {sorted(mk)[:5]}"
            )
    rows = []
    for g in groups:
        if g not in mk:
            raise KeyError(f"no markers for group {g!r}")
        sub = df[df["group"] == g]
        cand = set(sub["gene_u"])
        n_cand = len(cand)
        m_cand = len(cand & mk[g])
        k_eff = min(k, n_cand)
        row: dict[str, Any] = {
            "group": g,
            "n_candidates": n_cand,
            "n_marker_candidates": m_cand,
            "random_expected": float(k_eff * m_cand / n_cand) if n_cand else 0.0,
        }
        tops = {}
        for m in methods:
            s = sub[sub["method"].astype(str) == m]
            s = s.sort_values("attribution", ascending=False, kind="stable")
            top = s["gene_u"].drop_duplicates().head(k).tolist()
            tops[m] = top
            found = [x for x in top if x in mk[g]]
            row[f"{m}_n_markers"] = len(found)
            row[f"{m}_markers"] = ", ".join(found)
            row[f"{m}_p_value"] = (
                float(hypergeom.sf(len(found) - 1, n_cand, m_cand, len(top))) if n_cand else 1.0
            )
            row[f"{m}_top"] = ", ".join(top)
        if len(methods) == 2:
            a, b = (set(tops[m]) for m in methods)
            row["jaccard"] = len(a & b) / len(a | b) if a | b else 0.0
            row["markers_both"] = ", ".join(x for x in tops[methods[0]] if x in b and x in mk[g])
        rows.append(row)
    return pd.DataFrame(rows)
