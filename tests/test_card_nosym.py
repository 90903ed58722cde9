"""The ``card_nosym`` text variant: the card without symbol and aliases (issue 16)."""

import pandas as pd

import genept as gpt
from genept.datasets._card_variants import card_nosym_text


def test_card_nosym_drops_symbol_and_aliases_keeps_the_rest():
    cards = gpt.datasets.gene_cards()
    genes = ["TP53", "PSMB2", "NOT_A_GENE"]
    full = gpt.datasets.card_text(cards, genes, text_level="card")
    nosym = card_nosym_text(cards, genes)
    assert list(nosym.index) == genes
    assert nosym.isna()["NOT_A_GENE"]
    assert nosym["TP53"].startswith("Gene tumor protein p53 is a protein-coding gene. ")
    for gene in ["TP53", "PSMB2"]:
        row = cards.loc[gene]
        words = set(nosym[gene].replace(",", " ").split())
        assert gene not in words
        assert not words & set(row["aliases"].split("|"))
        # everything after the first sentence (the GO sections) is identical
        assert full[gene].split(" gene. ", 1)[1] == nosym[gene].split(" gene. ", 1)[1]


def test_card_nosym_every_gene_has_a_text():
    cards = gpt.datasets.gene_cards().iloc[:500]
    texts = card_nosym_text(cards)
    assert texts.notna().all() and (texts.str.len() > 0).all()
    expected = "Gene " + cards["name"] + " is a " + cards["gene_type"] + " gene."
    expected = expected[~cards.index.duplicated()]
    assert isinstance(texts, pd.Series)
    assert all(t.startswith(e) for t, e in zip(texts, expected.loc[texts.index], strict=True))


def test_card_nosym_matches_card_minus_its_head():
    """Independent reference: cut the card's head (symbol, name, aliases) by string."""
    cards = gpt.datasets.gene_cards().iloc[:300]
    full = gpt.datasets.card_text(cards)
    nosym = card_nosym_text(cards)
    unique = cards[~cards.index.duplicated()]
    for sym, text in full.items():
        row = unique.loc[sym]
        tail = text.split(f" is a {row['gene_type']} gene.", 1)[1]
        assert nosym[sym] == f"Gene {row['name']} is a {row['gene_type']} gene.{tail}"
