"""Variants of the gene-card text, for choosing the default gene embedding (issue 16).

``card_nosym`` is the card of :func:`~genept.datasets.card_text` (level ``"card"``)
without the gene symbol and its aliases: a small encoder such as all-MiniLM-L6-v2
otherwise spends much of its vector on the word pieces of those tokens, and genes
whose symbols share their first letters (PSMB2, PPM1G, PDAP1 …) end up neighbours.
The symbol only indexes the result.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from ._gene_cards import _go_sections, card_text

__all__ = ["CARD_VARIANTS", "card_nosym_text"]

#: text variants of this module
CARD_VARIANTS = ("card_nosym",)


def _card_nosym(row: pd.Series, max_terms: int) -> str:
    return f"Gene {row['name']} is a {row['gene_type']} gene." + _go_sections(row, max_terms)


def card_nosym_text(
    cards: pd.DataFrame,
    symbols: Iterable[str] | None = None,
    max_terms: int = 15,
    *,
    resolve_aliases: bool = False,
) -> pd.Series:
    """The gene card without symbol and aliases.

    Same facts and wording as :func:`~genept.datasets.card_text` at level ``"card"``
    except the first sentence, which names the gene by its full name only:
    ``"Gene tumor protein p53 is a protein-coding gene. Molecular functions: a, b;
    Biological processes: c; Cellular components: d."``; the GO sections are
    identical to the card's.

    Parameters
    ----------
    cards
        The table of :func:`~genept.datasets.gene_cards` (or a subset of its rows).
    symbols
        Gene symbols to describe, in the order wanted; ``None``: every symbol of
        ``cards`` (the first row of a duplicated symbol, as ``card_text``).
    max_terms
        Most GO terms per ontology (as ``card_text``).
    resolve_aliases
        Look symbols that are not official symbols up among the unique aliases.

    Returns
    -------
    Texts indexed by ``symbols``, named ``"text_card_nosym"``; NaN for symbols not
    in ``cards``.

    Examples
    --------
    >>> import genept as gpt
    >>> from genept.datasets._card_variants import card_nosym_text
    >>> cards = gpt.datasets.gene_cards()
    >>> card_nosym_text(cards, ["TP53"])["TP53"][:49]
    'Gene tumor protein p53 is a protein-coding gene. '
    """
    return card_text(
        cards,
        symbols,
        text_level="card_nosym",
        max_terms=max_terms,
        resolve_aliases=resolve_aliases,
    )
