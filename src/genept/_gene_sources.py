"""Where gene embeddings come from: precomputed tables, or gene texts + an encoder."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ._gene_embeddings import GeneEmbeddings, as_gene_embeddings
from ._utils import is_text_column
from .datasets import TEXT_LEVELS

__all__ = ["TEXT_LEVELS", "TEXT_SOURCES", "GeneSource", "resolve_source"]

#: gene text sources embedded by a text encoder
TEXT_SOURCES = ("cards", "ncbi", "ncbi_uniprot", "name")
#: precomputed sources
PRECOMPUTED_SOURCES = ("genept",)
#: the levels of gene text: one vocabulary, :data:`genept.datasets.TEXT_LEVELS` (the
#: paper's three of appendix A, ``"name_full"`` and ``"card_nosym"`` of the gene cards)
#: levels that only the gene cards have
CARD_ONLY_LEVELS = ("name_full", "card_nosym")
#: the shipped default: TF-IDF + SVD (LSA) of the ``card_nosym`` gene cards (issue 16)
DEFAULT_MODEL = "lsa"
DEFAULT_TEXT_LEVEL = "card_nosym"
#: models of the precomputed GenePT embeddings
GENEPT_MODELS = {
    "ada-002": "ada-002",
    "text-embedding-ada-002": "ada-002",
    "3-large": "3-large",
    "text-embedding-3-large": "3-large",
}


@dataclass
class GeneSource:
    """A resolved source.

    Either :attr:`embeddings` is set (precomputed), or :attr:`texts` maps each gene of
    the source to the text to embed.
    """

    name: str
    genes: pd.Index
    embeddings: GeneEmbeddings | None = None
    texts: pd.Series | Callable[[pd.Index], pd.Series] | None = None
    text_level: str | None = None
    model: str | None = None
    #: the shipped precomputed table (:mod:`genept.datasets._default_table`): genes in it
    #: are looked up, the others embedded from :attr:`texts` by the table's own projection
    table: Any = None

    def texts_of(self, genes: pd.Index) -> pd.Series:
        """Texts of ``genes`` (all genes of the source)."""
        if self.texts is None:
            raise ValueError(f"source {self.name!r} has precomputed embeddings, not texts")
        if callable(self.texts):
            return self.texts(pd.Index(genes))
        return self.texts.loc[pd.Index(genes)]


def _cards():
    from .datasets import gene_cards

    cards = gene_cards("human")
    return cards[~cards.index.duplicated(keep="first")]


def _join_aliases(row) -> str:
    al = row.get("aliases") if hasattr(row, "get") else None
    if isinstance(al, str) and al:
        return ", ".join(al.split("|")[:8])
    return ""


def _meta_sentence(sym: str, cards: pd.DataFrame) -> str:
    """``"Gene SYM (full name), also known as A, B, is a protein-coding gene."``"""
    if sym not in cards.index:
        return f"Gene {sym}."
    row = cards.loc[sym]
    name = row.get("name")
    head = f"Gene {sym}" + (f" ({name})" if isinstance(name, str) and name else "")
    al = _join_aliases(row)
    if al:
        head += f", also known as {al},"
    gtype = row.get("gene_type")
    if isinstance(gtype, str) and gtype:
        article = "an" if gtype[:1].lower() in "aeiou" else "a"
        return f"{head} is {article} {gtype.replace('_', ' ')} gene."
    return head + "."


def summary_texts(
    summaries: Mapping[str, str], level: str, cards: pd.DataFrame | None
) -> pd.Series:
    """Texts of the genes of ``summaries`` (NCBI summaries or a user mapping) at ``level``."""
    out = {}
    for sym, text in summaries.items():
        text = str(text).strip() if text is not None else ""
        if level == "name" or not text:
            out[sym] = sym
        elif level == "summary":
            out[sym] = f"Gene {sym}. {text}"
        else:
            meta = _meta_sentence(sym, cards) if cards is not None else f"Gene {sym}."
            out[sym] = f"{meta} {text}"
    return pd.Series(out, dtype=object)


_FILE_SUFFIXES = (".npz", ".parquet", ".pq", ".csv", ".tsv", ".txt", ".gz", ".pickle", ".pkl")


def _looks_like_path(source: str) -> bool:
    """A string meant as a file: it has a folder part or a table file suffix."""
    import os

    seps = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    return any(c in source for c in seps) or source.lower().rstrip(".").endswith(_FILE_SUFFIXES)


def resolve_source(
    source: Any,
    *,
    model: str | None,
    text_level: str,
    allow_pickle: bool = False,
) -> GeneSource:
    """Turn the user's ``source`` argument into a :class:`GeneSource`.

    ``source="cards"`` with ``model`` ``None`` or ``"lsa"`` and ``text_level`` ``None`` or
    ``"card_nosym"`` is the shipped default table; ``text_level=None`` means ``"card"``
    otherwise; ``model="lsa"`` exists only for that table.
    """
    if (
        isinstance(source, str)
        and source == "cards"
        and model in (None, DEFAULT_MODEL)
        and text_level in (None, DEFAULT_TEXT_LEVEL)
    ):
        from .datasets import card_text, default_table

        cards = _cards()
        table = default_table()
        return GeneSource(
            "cards",
            pd.Index(cards.index),
            texts=lambda genes: card_text(cards, genes, text_level=DEFAULT_TEXT_LEVEL),
            text_level=DEFAULT_TEXT_LEVEL,
            model=DEFAULT_MODEL,
            table=table,
        )
    if model == DEFAULT_MODEL:
        raise ValueError(
            f"model='lsa' is the shipped default table of the gene cards (source='cards', "
            f"text_level='card_nosym'), not an encoder for source={source!r}, "
            f"text_level={text_level!r}; choose a text encoder (e.g. model='all-MiniLM-L6-v2')"
        )
    text_level = "card" if text_level is None else text_level
    if text_level not in TEXT_LEVELS:
        raise ValueError(f"text_level must be one of {TEXT_LEVELS}, got {text_level!r}")
    if text_level in CARD_ONLY_LEVELS and source != "cards":
        raise ValueError(
            f"text_level={text_level!r} (a level of the gene cards) exists only for "
            f"source='cards', not {source!r}; use 'name', 'summary' or 'card'"
        )
    if isinstance(source, str) and source in PRECOMPUTED_SOURCES:
        from .datasets import genept_embeddings

        key = GENEPT_MODELS.get(model or "ada-002")
        if key is None:
            raise ValueError(
                f"unknown GenePT model {model!r}; choose one of {sorted(set(GENEPT_MODELS))}"
            )
        emb = genept_embeddings(key)
        return GeneSource(
            "genept", pd.Index(emb.genes), embeddings=emb, model=emb.model, text_level="summary"
        )
    if isinstance(source, str) and source in TEXT_SOURCES:
        cards = _cards()
        if source == "cards" or source == "name":
            from .datasets import card_text

            level = "name" if source == "name" else text_level

            def texts(genes: pd.Index) -> pd.Series:
                return card_text(cards, genes, text_level=level)

            return GeneSource(source, pd.Index(cards.index), texts=texts, text_level=level)
        from .datasets import ncbi_summaries

        summ = ncbi_summaries(source)
        texts = summary_texts(summ, text_level, cards)
        return GeneSource(source, pd.Index(texts.index), texts=texts, text_level=text_level)
    if isinstance(source, str):
        from pathlib import Path

        if Path(source).exists():
            emb = as_gene_embeddings(source, allow_pickle=allow_pickle)
            return GeneSource(emb.source, pd.Index(emb.genes), embeddings=emb, model=emb.model)
        if _looks_like_path(source):
            raise FileNotFoundError(
                f"the gene embedding file {source!r} does not exist (looked in "
                f"{Path(source).expanduser().resolve().parent}); check the path, or use one of "
                f"the sources {list(TEXT_SOURCES) + list(PRECOMPUTED_SOURCES)}"
            )
        raise ValueError(
            f"unknown gene embedding source {source!r}; choose one of "
            f"{list(TEXT_SOURCES) + list(PRECOMPUTED_SOURCES)}, or pass your own embeddings "
            "(dict gene -> vector, DataFrame indexed by gene, GeneEmbeddings, or a .npz/"
            ".parquet/.csv/.pickle path) or texts (dict gene -> text, pandas Series)"
        )
    # user texts: a mapping / Series of strings
    if isinstance(source, pd.Series) and (
        is_text_column(source) and source.map(lambda v: isinstance(v, str)).all()
    ):
        source = source.to_dict()
    if isinstance(source, Mapping) and source and all(isinstance(v, str) for v in source.values()):
        cards = _cards() if text_level == "card" else None
        texts = summary_texts({str(k): v for k, v in source.items()}, text_level, cards)
        return GeneSource("user_text", pd.Index(texts.index), texts=texts, text_level=text_level)
    emb = as_gene_embeddings(source, allow_pickle=allow_pickle)
    return GeneSource(
        emb.source if emb.source != "user" else "user",
        pd.Index(emb.genes),
        embeddings=emb,
        model=emb.model,
        text_level=emb.text_level,
    )


def random_embeddings(genes, dim: int, seed: int = 0) -> GeneEmbeddings:
    """Gaussian random unit vectors, the papers' negative control."""
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((len(genes), dim)).astype(np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    return GeneEmbeddings(np.asarray(genes), m, source="random", model=f"gaussian-{dim}")
