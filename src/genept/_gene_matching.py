"""Match dataset gene names to the genes of an embedding source, deterministically.

Rules, tried in this order for each query name (the first that gives exactly one
target wins):

1. ``exact``: the name is a gene of the source;
2. ``ensembl``: an Ensembl gene id (``ENSG…``, version suffix ``.12`` ignored) whose
   gene symbol is in the source;
3. ``case``: the same name up to upper/lower case (e.g. ``Cd3e`` -> ``CD3E``);
4. ``alias``: an NCBI/HGNC alias or previous symbol whose official symbol is in the
   source (case-insensitive). An alias shared by several official symbols is
   ambiguous and left unmatched (counted as ``ambiguous``).

A name that matches nothing is ``none``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["GeneMatch", "match_genes", "strip_ensembl_version"]

_ENSEMBL = re.compile(r"^(ENS[A-Z]*G\d{6,})(\.\d+)?$", re.IGNORECASE)
MATCH_KINDS = ("exact", "ensembl", "case", "alias", "ambiguous", "none")


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


def build_alias_maps(cards: pd.DataFrame | None) -> tuple[dict[str, list[str]], dict[str, str]]:
    """``(alias_upper -> [official symbols], ensembl -> symbol)`` from a gene-card table.

    ``cards`` is indexed by official symbol with ``|``-separated ``aliases`` and
    ``ensembl`` columns (see :func:`genept.datasets.gene_cards`).
    """
    aliases: dict[str, list[str]] = {}
    ensembl: dict[str, str] = {}
    if cards is None:
        return aliases, ensembl
    symbols = cards.index.astype(str)
    if "aliases" in cards:
        for sym, al in zip(symbols, cards["aliases"].to_numpy(), strict=True):
            for a in _split([al]):
                lst = aliases.setdefault(a.upper(), [])
                if sym not in lst:
                    lst.append(sym)
    if "ensembl" in cards:
        for sym, ens in zip(symbols, cards["ensembl"].to_numpy(), strict=True):
            for e in _split([ens]):
                ensembl.setdefault(e.upper(), sym)
    return aliases, ensembl


def match_genes(
    query: Sequence[str],
    targets: Sequence[str],
    *,
    aliases: Mapping[str, Sequence[str]] | None = None,
    ensembl: Mapping[str, str] | None = None,
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
        ``ENSEMBL ID (upper case, no version) -> symbol``.

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
    for qi, name in enumerate(map(str, query)):
        name = name.strip()
        if name in pos:
            index[qi], kind[qi] = pos[name], "exact"
            continue
        ens = strip_ensembl_version(name)
        if ens is not None:
            if ens in pos:
                index[qi], kind[qi] = pos[ens], "exact"
                continue
            sym = ensembl.get(ens)
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
        official = [s for s in aliases.get(up, ()) if s in pos]
        if len(official) == 1:
            index[qi], kind[qi] = pos[official[0]], "alias"
        elif len(official) > 1:
            kind[qi] = "ambiguous"
    target = np.where(index >= 0, targets.to_numpy()[np.maximum(index, 0)], "")
    return GeneMatch(index=index, target=target.astype(object), kind=kind)
