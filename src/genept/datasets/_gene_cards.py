"""Offline gene cards: NCBI Gene + Gene Ontology facts for every human gene, as text.

The table ships with the package (``_data/gene_cards_human.tsv.gz``); it is built by
``scripts/build_gene_cards.py`` from Debian's ``r-bioc-org.hs.eg.db`` and
``r-bioc-go.db`` 3.16.0 (NCBI Gene of 2022-09-12, GO of 2022-07-01).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from importlib.resources import files
from typing import Literal

import numpy as np
import pandas as pd

from .._utils import renamed_arg

__all__ = ["CARD_LEVELS", "TEXT_LEVELS", "card_text", "gene_cards"]

_DATA = {"human": "gene_cards_human.tsv.gz"}
_ALIASES = {"human": "human", "homo sapiens": "human", "hsapiens": "human", "9606": "human"}

#: the levels of gene text, one vocabulary for :func:`card_text` and
#: :func:`genept.tl.embed_genes` (``text_level=``): ``"name"`` the symbol; ``"name_full"``
#: symbol and full name; ``"summary"`` the functional text (GenePT's NCBI summary; of a
#: card: symbol, full name and GO terms); ``"card"`` the full card; ``"card_nosym"`` the
#: card without symbol and aliases (the text of the shipped default gene embeddings)
TEXT_LEVELS = ("name", "name_full", "summary", "card", "card_nosym")
#: the levels a gene card is written at: all of them (kept name)
CARD_LEVELS = TEXT_LEVELS
#: the first sentence of a card: "Gene SYM (full name), also known as ..., is a ... gene."
_CARD_HEAD = r"^Gene (\S+ \(.*?\))(?:, also known as .*?,)? is an? [\w -]+ gene\."

_ONTOLOGY_LABELS = {
    "go_bp": "Biological processes",
    "go_mf": "Molecular functions",
    "go_cc": "Cellular components",
}
#: most aliases named in a card
_MAX_ALIASES = 10
#: order of the GO sections in a card
_CARD_SECTIONS = ("go_mf", "go_bp", "go_cc")


def _organism_key(organism: str) -> str:
    key = _ALIASES.get(str(organism).strip().lower())
    if key is None:
        raise ValueError(
            f"no gene cards for organism {organism!r}; available: {sorted(_DATA)}. "
            "Mouse is not shipped: the cards are built from Debian's Bioconductor "
            "packages and Debian has no org.Mm.eg.db (mouse) package."
        )
    return key


@lru_cache(maxsize=4)
def _load(organism: str) -> pd.DataFrame:
    path = files(__package__).joinpath("_data", _DATA[organism])
    with path.open("rb") as fh:
        df = pd.read_csv(
            fh,
            sep="\t",
            compression="gzip",
            dtype=str,
            keep_default_na=False,  # symbols like "NA" or "NAN" must stay strings
            na_values=[""],
        )
    df["entrez_id"] = df["entrez_id"].astype(np.int64)
    return df.set_index("symbol", drop=False).rename_axis(None)


def gene_cards(organism: str = "human") -> pd.DataFrame:
    """The gene-card table: one row per Entrez gene, indexed by gene symbol.

    Built from NCBI Gene and the Gene Ontology (GO) as shipped in Debian's
    ``r-bioc-org.hs.eg.db`` and ``r-bioc-go.db`` 3.16.0 (NCBI Gene of 2022-09-12).
    All gene types are included (protein-coding, ncRNA, pseudo…). A few symbols
    belong to several genes (e.g. ``HBD``); the better annotated gene comes first.

    Parameters
    ----------
    organism
        ``"human"`` (also ``"homo sapiens"``, ``"9606"``). Mouse is not available:
        Debian ships no ``org.Mm.eg.db``.

    Returns
    -------
    A new DataFrame (the file is read once per session) with the columns

    ``entrez_id``
        NCBI Gene id (int).
    ``symbol``, ``name``, ``gene_type``
        Official symbol, full name, NCBI gene type.
    ``aliases``, ``ensembl``
        ``'|'``-separated alias symbols (previous symbols included, the symbol
        itself excluded; ``MT-`` symbols added for mitochondrial genes) and
        Ensembl gene ids.
    ``chromosome``, ``map_location``
        Chromosome and cytogenetic band.
    ``go_mf``, ``go_bp``, ``go_cc``
        ``'|'``-separated GO term names (molecular function, biological process,
        cellular component; at most 30 each): experimentally supported terms
        first, then curated, then electronic ones; within each, the most
        specific terms (fewest genes annotated) first.

    Missing values are NaN.

    Examples
    --------
    >>> import genept as gpt
    >>> cards = gpt.datasets.gene_cards()
    >>> cards.loc["CD3E", "name"]
    'CD3 epsilon subunit of T-cell receptor complex'
    """
    return _load(_organism_key(organism)).copy()


def _split(value, max_terms: int) -> list[str]:
    if not isinstance(value, str) or not value:
        return []
    return value.split("|")[:max_terms]


def _go_sections(row: pd.Series, max_terms: int) -> str:
    """`` Molecular functions: a, b; Biological processes: c; ...`` (``""`` without GO terms)."""
    sections = [
        f"{_ONTOLOGY_LABELS[col]}: {', '.join(terms)}"
        for col in _CARD_SECTIONS
        if (terms := _split(row[col], max_terms))
    ]
    return " " + "; ".join(sections) + "." if sections else ""


def _card(row: pd.Series, max_terms: int) -> str:
    text = f"Gene {row['symbol']} ({row['name']})"
    if aliases := _split(row["aliases"], _MAX_ALIASES):
        text += f", also known as {', '.join(aliases)},"
    return text + f" is a {row['gene_type']} gene." + _go_sections(row, max_terms)


@renamed_arg("level", "text_level")
def card_text(
    cards: pd.DataFrame | Iterable[str] | str | None = None,
    symbols: Iterable[str] | None = None,
    text_level: Literal["name", "name_full", "summary", "card", "card_nosym"] = "card",
    *,
    max_terms: int = 15,
    resolve_aliases: bool = False,
) -> pd.Series:
    """Text describing each gene, at a chosen level of detail.

    Parameters
    ----------
    cards
        The table of :func:`gene_cards` (or a subset of its rows); or, for short, the
        symbols themselves (a list or one string), described from the human cards.
    symbols
        Gene symbols to describe, in the order wanted; ``None``: every symbol of
        ``cards``.
    text_level
        One of :data:`TEXT_LEVELS` (``level=`` is accepted with a :class:`FutureWarning`):

        ``"name"``
            the symbol alone, ``"TP53"``;
        ``"name_full"``
            symbol and full name, ``"TP53 (tumor protein p53)"``;
        ``"summary"``
            the functional text without aliases and gene type: ``"Gene TP53 (tumor
            protein p53). Molecular functions: ..."`` (what GenePT's NCBI summaries are
            for genes of the paper's table);
        ``"card"``
            the full card: symbol, full name, aliases (at most 10), gene type and
            GO terms, ``"Gene TP53 (tumor protein p53), also known as BCC7, …,
            TRP53, is a protein-coding gene. Molecular functions: a, b; Biological
            processes: c, d; Cellular components: e."`` (parts without values are
            left out). On GenePT's dosage-sensitive TF task with all-MiniLM-L6-v2
            this wording did best of the variants tried (ROC-AUC 0.905 LR /
            0.92 RF; see ``benchmarks/validate_gene_cards.py``);
        ``"card_nosym"``
            the card without symbol and aliases, ``"Gene tumor protein p53 is a
            protein-coding gene. Molecular functions: ..."``: the text of the shipped
            default gene embeddings (a small encoder otherwise groups genes by the
            spelling of their symbols; see ``docs/embeddings.md``).
    max_terms
        Most GO terms per ontology in a card (the table keeps at most 30).
    resolve_aliases
        Look symbols that are not official symbols up among the aliases
        (e.g. ``"MT-ND1"`` → ``ND1``, ``"P53"`` → ``TP53``); aliases shared by
        several genes are not used. The text then names the official symbol.

    Returns
    -------
    Texts indexed by ``symbols``; NaN for symbols not in ``cards``.

    Examples
    --------
    >>> import genept as gpt
    >>> cards = gpt.datasets.gene_cards()
    >>> texts = gpt.datasets.card_text(cards, ["CD3E", "NOT_A_GENE"], text_level="name_full")
    >>> texts["CD3E"]
    'CD3E (CD3 epsilon subunit of T-cell receptor complex)'
    >>> bool(texts.isna()["NOT_A_GENE"])
    True
    >>> gpt.datasets.card_text(["CD3E"], text_level="name")["CD3E"]  # symbols alone
    'CD3E'
    """
    if not isinstance(cards, pd.DataFrame):
        if (
            cards is None
            or isinstance(cards, str)
            or (isinstance(cards, Iterable) and not isinstance(cards, bytes | dict))
        ):
            if symbols is not None and not (isinstance(symbols, str) and symbols in CARD_LEVELS):
                raise TypeError(
                    "give either the table of gene_cards() and the symbols, or the symbols "
                    "alone: card_text(cards, ['CD3E']) or card_text(['CD3E'])"
                )
            if isinstance(symbols, str):  # card_text(["CD3E"], "name"): the level
                text_level = symbols
            symbols = cards
            cards = gene_cards("human")
        else:
            raise TypeError(
                f"`cards` must be the table of gpt.datasets.gene_cards() or gene symbols, got "
                f"{type(cards).__name__}"
            )
    if text_level not in TEXT_LEVELS:
        raise ValueError(f"unknown text_level {text_level!r}; choose one of {TEXT_LEVELS}")
    if max_terms < 0:
        raise ValueError(f"max_terms must be >= 0, got {max_terms}")
    missing_cols = {"symbol", "name", "gene_type", *_CARD_SECTIONS} - set(cards.columns)
    if missing_cols:
        raise ValueError(
            f"`cards` lacks the columns {sorted(missing_cols)}; pass the table of gene_cards()"
        )
    unique = cards[~cards.index.duplicated(keep="first")]
    if symbols is None:
        symbols = unique.index
    elif isinstance(symbols, str):
        symbols = [symbols]
    symbols = pd.Index(list(symbols), dtype=object)

    keys = symbols
    if resolve_aliases:
        keys = _resolve(unique, symbols)
    rows = unique.reindex(keys)
    found = rows["symbol"].notna().to_numpy()

    out = np.full(len(symbols), np.nan, dtype=object)
    if text_level == "card_nosym":
        from ._card_variants import _card_nosym

        out[found] = [_card_nosym(row, max_terms) for _, row in rows[found].iterrows()]
    elif text_level == "name":
        out[found] = rows["symbol"].to_numpy()[found]
    elif text_level == "name_full":
        sub = rows[found]
        out[found] = (sub["symbol"] + " (" + sub["name"] + ")").to_numpy()
    else:
        out[found] = [_card(row, max_terms) for _, row in rows[found].iterrows()]
        if text_level == "summary":  # the functional text without the gene-type sentence
            text = pd.Series(out[found], dtype=object)
            out[found] = text.str.replace(_CARD_HEAD, r"Gene \1.", n=1, regex=True).to_numpy()
    return pd.Series(out, index=symbols, name=f"text_{text_level}")


def _resolve(cards: pd.DataFrame, symbols: pd.Index) -> pd.Index:
    """Map symbols that are not in ``cards.index`` through unique aliases."""
    unknown = ~symbols.isin(cards.index)
    if not unknown.any():
        return symbols
    alias = cards["aliases"].dropna().str.split("|").explode()
    alias = pd.Series(alias.index, index=alias.to_numpy())
    alias = alias[~alias.index.duplicated(keep=False)]
    resolved = symbols.to_numpy(copy=True)
    resolved[unknown] = alias.reindex(symbols[unknown]).to_numpy()
    return pd.Index(resolved, dtype=object)
