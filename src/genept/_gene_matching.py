"""Match dataset gene names to the genes of an embedding source, deterministically.

Rules, tried in this order for each query name (the first that gives exactly one
target wins):

1. ``exact``: the name is a gene of the source;
2. ``ensembl``: an Ensembl gene id (``ENSG…``, version suffix ``.12`` ignored) whose
   gene symbol is in the source. An id listed under several genes in the cards goes to
   the official named gene (see :func:`ensembl_symbols`); a true tie is ``ambiguous``;
3. ``case``: the same name up to upper/lower case (e.g. ``Cd3e`` -> ``CD3E``);
4. ``alias``: an NCBI/HGNC alias or previous symbol whose official symbol is in the
   source (case-insensitive). An alias shared by several official symbols is
   ambiguous and left unmatched (counted as ``ambiguous``).

A name that matches nothing is ``none``. Missing names (NaN, ``None``, ``""`` and the
strings ``"nan"``, ``"NaN"``, ``"NA"``, ``"<NA>"``, ``"None"`` that missing values become
when written as text; no human gene is called that) are ``missing`` and never matched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "GeneMatch",
    "ensembl_symbols",
    "is_missing_name",
    "match_genes",
    "mouse_like",
    "strip_ensembl_version",
]

_ENSEMBL = re.compile(r"^(ENS[A-Z]*G\d{6,})(\.\d+)?$", re.IGNORECASE)
MATCH_KINDS = ("exact", "ensembl", "case", "alias", "ambiguous", "missing", "none")
#: what a missing value becomes as text (pandas, R, Python); no human gene has these names.
#: The one home of this set: the cell sentences (genept._kernels.sentences._text) use it too
MISSING_NAMES = frozenset({"", "nan", "NaN", "NAN", "NA", "N/A", "<NA>", "None", "null", "NULL"})
#: NCBI placeholder symbols of genes without a name (``LOC102724594``)
_PLACEHOLDER = re.compile(r"^LOC\d+$")
#: gene types preferred when an Ensembl id is listed under several genes
_TYPE_RANK = {"protein-coding": 0, "ncRNA": 1, "snoRNA": 1, "snRNA": 1, "rRNA": 1, "tRNA": 1,
              "scRNA": 1, "pseudo": 2}  # fmt: skip
#: a mouse-style symbol: capitalised with lower-case letters (``Cd3e``, ``Gm83``) or
#: ``mt-``; human symbols are upper case apart from ``orf`` (``C1orf112``)
_MOUSE = re.compile(r"^(?:mt-|[A-Z][a-z0-9]*[a-z][a-z0-9]*(?:-[a-z0-9]+)*$)")


def is_missing_name(name) -> bool:
    """Whether a gene name is a missing value (NaN, ``None``, ``""``, ``"nan"``, ``"NA"``…)."""
    if name is None:
        return True
    if not isinstance(name, str):
        try:
            return bool(pd.isna(name))
        except (TypeError, ValueError):
            return False
    return name.strip() in MISSING_NAMES


def mouse_like(names: Sequence[str]) -> np.ndarray:
    """Mask of names written like mouse gene symbols (``Cd3e``, ``Gm83``, ``mt-Co1``).

    Human symbols are upper case (``orf`` in ``C1orf112`` aside), so a dataset whose names
    are mostly of this form is very likely mouse (or rat).
    """
    out = np.zeros(len(names), dtype=bool)
    for i, n in enumerate(names):
        if isinstance(n, str) and "orf" not in n:
            out[i] = bool(_MOUSE.match(n.strip())) or n.upper().startswith("ENSMUSG")
    return out


def strip_ensembl_version(name: str) -> str | None:
    """``"ENSG00000141510.12"`` -> ``"ENSG00000141510"``; ``None`` if not an Ensembl gene id."""
    m = _ENSEMBL.match(name.strip())
    return m.group(1).upper() if m else None


@dataclass
class GeneMatch:
    """Result of :func:`match_genes`.

    Attributes
    ----------
    index
        For each query name, the row of the matched target gene, or -1.
    target
        The matched target gene name ("" when unmatched).
    kind
        How each name matched: one of ``exact``, ``ensembl``, ``case``, ``alias``,
        ``ambiguous``, ``none``.
    """

    index: np.ndarray
    target: np.ndarray
    kind: np.ndarray

    @property
    def matched(self) -> np.ndarray:
        """Boolean mask of matched query names."""
        return self.index >= 0

    @property
    def n_matched(self) -> int:
        return int(self.matched.sum())

    def counts(self) -> dict[str, int]:
        """Number of query names per match kind (all kinds present, zeros included)."""
        vc = pd.Series(self.kind).value_counts()
        return {k: int(vc.get(k, 0)) for k in MATCH_KINDS}


def _split(values: Iterable) -> Iterable[str]:
    for v in values:
        if isinstance(v, str) and v:
            yield from (x for x in v.split("|") if x)


def ensembl_symbols(cards: pd.DataFrame) -> dict[str, str | tuple[str, ...]]:
    """``ENSEMBL ID -> symbol`` from a gene-card table, an id shared by genes resolved.

    In NCBI Gene 350 Ensembl ids are listed under several genes (alternative haplotypes,
    read-throughs, antisense RNAs, ``LOC`` placeholders). Such an id goes to the gene
    that is, in this order: not a ``LOC…`` placeholder; not a read-through or compound
    symbol made of another candidate (``KLRC4-KLRK1`` loses to ``KLRK1``); of the more
    specific gene type (protein-coding, then RNA, then pseudogene, then others); listed
    with the fewest Ensembl ids (the id is then more likely its own, e.g. HLA-DQA2's 8
    against HLA-DQA1's 14). Candidates still equal are a true tie: the value is then the
    tuple of tied symbols (e.g. ``DEFB4A``/``DEFB4B``), matched as ``ambiguous``.

    Examples
    --------
    >>> import genept as gpt
    >>> from genept._gene_matching import ensembl_symbols
    >>> ensembl_symbols(gpt.datasets.gene_cards())["ENSG00000160201"]
    'U2AF1'
    """
    symbols = cards.index.astype(str)
    types = cards["gene_type"].to_numpy() if "gene_type" in cards else np.full(len(cards), "")
    cands: dict[str, list[str]] = {}
    n_ids: dict[str, int] = {}
    gtype: dict[str, str] = {}
    for sym, ens, gt in zip(symbols, cards["ensembl"].to_numpy(), types, strict=True):
        ids = [e.upper() for e in _split([ens])]
        if sym in n_ids:  # a symbol of several genes: the first (better annotated) row
            continue
        n_ids[sym], gtype[sym] = len(ids), gt if isinstance(gt, str) else ""
        for e in ids:
            lst = cands.setdefault(e, [])
            if sym not in lst:
                lst.append(sym)
    out: dict[str, str | tuple[str, ...]] = {}
    for e, syms in cands.items():
        if len(syms) == 1:
            out[e] = syms[0]
            continue
        parts = {s: set(s.split("-")) for s in syms}

        def rank(s, syms=syms, parts=parts):
            compound = any(t != s and t in parts[s] for t in syms)
            return (bool(_PLACEHOLDER.match(s)), compound, _TYPE_RANK.get(gtype[s], 3), n_ids[s])

        ranks = {s: rank(s) for s in syms}
        best = min(ranks.values())
        top = sorted(s for s in syms if ranks[s] == best)
        out[e] = top[0] if len(top) == 1 else tuple(top)
    return out


def build_alias_maps(
    cards: pd.DataFrame | None,
) -> tuple[dict[str, list[str]], dict[str, str | tuple[str, ...]]]:
    """``(alias_upper -> [official symbols], ensembl -> symbol)`` from a gene-card table.

    ``cards`` is indexed by official symbol with ``|``-separated ``aliases`` and
    ``ensembl`` columns (see :func:`genept.datasets.gene_cards`). An Ensembl id of
    several genes is resolved by :func:`ensembl_symbols` (a tuple for a true tie).
    """
    aliases: dict[str, list[str]] = {}
    ensembl: dict[str, str | tuple[str, ...]] = {}
    if cards is None:
        return aliases, ensembl
    symbols = cards.index.astype(str)
    if "aliases" in cards:
        for sym, al in zip(symbols, cards["aliases"].to_numpy(), strict=True):
            for a in _split([al]):
                if a.strip() in MISSING_NAMES:
                    continue
                lst = aliases.setdefault(a.upper(), [])
                if sym not in lst:
                    lst.append(sym)
    if "ensembl" in cards:
        ensembl = ensembl_symbols(cards)
    return aliases, ensembl


def match_genes(
    query: Sequence[str],
    targets: Sequence[str],
    *,
    aliases: Mapping[str, Sequence[str]] | None = None,
    ensembl: Mapping[str, str | Sequence[str]] | None = None,
    use_aliases: bool = True,
) -> GeneMatch:
    """Match ``query`` gene names to ``targets`` (the genes of an embedding source).

    Parameters
    ----------
    query
        Names of the dataset's genes (symbols or Ensembl ids).
    targets
        Genes of the source, unique.
    aliases
        ``ALIAS (upper case) -> official symbols``.
    ensembl
        ``ENSEMBL ID (upper case, no version) -> symbol``; a tuple of several symbols is
        a tie (``ambiguous``).
    use_aliases
        Try rule 4 (aliases); off for names of another species.

    Examples
    --------
    >>> m = match_genes(["CD3E", "cd8a", "ENSG00000141510.4", "P53", "XYZ"],
    ...                 ["CD3E", "CD8A", "TP53"],
    ...                 aliases={"P53": ["TP53"]}, ensembl={"ENSG00000141510": "TP53"})
    >>> list(m.target), list(m.kind)
    (['CD3E', 'CD8A', 'TP53', 'TP53', ''], ['exact', 'case', 'ensembl', 'alias', 'none'])
    """
    targets = pd.Index(pd.Series(list(targets), dtype=object).astype(str))
    if targets.has_duplicates:
        raise ValueError("target gene names must be unique")
    pos = {g: i for i, g in enumerate(targets)}
    upper: dict[str, list[int]] = {}
    for i, g in enumerate(targets):
        upper.setdefault(g.upper(), []).append(i)
    aliases = aliases or {}
    ensembl = ensembl or {}

    n = len(query)
    index = np.full(n, -1, dtype=np.int64)
    kind = np.full(n, "none", dtype=object)
    for qi, name in enumerate(query):
        if is_missing_name(name):
            kind[qi] = "missing"
            continue
        name = str(name).strip()
        if name in pos:
            index[qi], kind[qi] = pos[name], "exact"
            continue
        ens = strip_ensembl_version(name)
        if ens is not None:
            if ens in pos:
                index[qi], kind[qi] = pos[ens], "exact"
                continue
            sym = ensembl.get(ens)
            if sym is not None and not isinstance(sym, str) and len(sym) == 1:
                sym = next(iter(sym))
            if sym is not None and not isinstance(sym, str):  # a tie between genes
                tied = [s for s in sym if s in pos]
                if len(tied) > 1:
                    kind[qi] = "ambiguous"
                    continue
                sym = None  # at most one of the tied genes in the source: still a tie
                kind[qi] = "ambiguous" if tied else "none"
            if sym is not None and sym in pos:
                index[qi], kind[qi] = pos[sym], "ensembl"
            continue
        up = name.upper()
        cands = upper.get(up, [])
        if len(cands) == 1:
            index[qi], kind[qi] = cands[0], "case"
            continue
        if len(cands) > 1:  # several targets differ only by case: the upper-case one, if any
            exact_upper = [c for c in cands if targets[c] == up]
            if exact_upper:
                index[qi], kind[qi] = exact_upper[0], "case"
            else:
                kind[qi] = "ambiguous"
            continue
        if not use_aliases:
            continue
        official = [s for s in aliases.get(up, ()) if s in pos]
        if len(official) == 1:
            index[qi], kind[qi] = pos[official[0]], "alias"
        elif len(official) > 1:
            kind[qi] = "ambiguous"
    target = np.where(index >= 0, targets.to_numpy()[np.maximum(index, 0)], "")
    return GeneMatch(index=index, target=target.astype(object), kind=kind)
