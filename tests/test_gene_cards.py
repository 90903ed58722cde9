"""The shipped gene-card table and its texts (real NCBI Gene / GO values)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from genept.datasets import TEXT_LEVELS, card_text, gene_cards


@pytest.fixture(scope="module")
def cards() -> pd.DataFrame:
    return gene_cards()


def test_table_shape_and_columns(cards):
    assert list(cards.columns) == [
        "entrez_id", "symbol", "name", "gene_type", "aliases", "ensembl",
        "chromosome", "map_location", "go_mf", "go_bp", "go_cc",
    ]  # fmt: skip
    assert len(cards) > 70_000
    assert cards["entrez_id"].is_unique
    assert cards["entrez_id"].dtype == np.int64
    assert (cards.index == cards["symbol"]).all()
    types = set(cards["gene_type"])
    assert {"protein-coding", "ncRNA", "pseudo"} <= types
    assert (cards["gene_type"] == "protein-coding").sum() > 19_000


def test_known_genes(cards):
    cd3e = cards.loc["CD3E"]
    assert cd3e["name"] == "CD3 epsilon subunit of T-cell receptor complex"
    assert cd3e["entrez_id"] == 916
    assert cd3e["gene_type"] == "protein-coding"

    tp53 = cards.loc["TP53"]
    assert tp53["entrez_id"] == 7157
    assert tp53["name"] == "tumor protein p53"
    assert tp53["chromosome"] == "17"
    assert tp53["map_location"] == "17p13.1"
    assert "ENSG00000141510" in tp53["ensembl"].split("|")
    aliases = tp53["aliases"].split("|")
    assert "P53" in aliases and "LFS1" in aliases
    assert "TP53" not in aliases
    assert any("DNA binding" in t for t in tp53["go_mf"].split("|"))
    assert "apoptotic process" in tp53["go_bp"] or "apoptotic" in tp53["go_bp"]
    assert "nucleus" in tp53["go_cc"].split("|")

    assert cards.loc["XIST", "gene_type"] == "ncRNA"
    # a pseudogene and a mitochondrial gene with its HGNC "MT-" symbol as alias
    assert (cards["gene_type"] == "pseudo").sum() > 10_000
    assert "MT-ND1" in cards.loc["ND1", "aliases"].split("|")


def test_go_terms_capped_and_experimental_first(cards):
    for col in ["go_mf", "go_bp", "go_cc"]:
        n = cards[col].dropna().str.count(r"\|") + 1
        assert n.max() <= 30
        assert (n == 30).any()  # well-studied genes hit the cap
    # CD3E's experimentally supported CC term comes before generic electronic ones
    cc = cards.loc["CD3E", "go_cc"].split("|")
    assert "T cell receptor complex" in cc[:5]


def test_shared_symbol_prefers_protein_coding(cards):
    hbd = cards.loc[["HBD"]]
    assert len(hbd) == 2
    assert hbd["gene_type"].iloc[0] == "protein-coding"
    assert (
        card_text(cards, ["HBD"], text_level="name_full")["HBD"] == "HBD (hemoglobin subunit delta)"
    )


def test_returns_copy():
    mine = gene_cards()
    mine.loc["TP53", "name"] = "changed"
    assert gene_cards().loc["TP53", "name"] == "tumor protein p53"


def test_text_levels(cards):
    genes = ["CD3E", "TP53"]
    name = card_text(cards, genes, text_level="name")
    assert name.tolist() == genes
    assert list(name.index) == genes
    full = card_text(cards, genes, text_level="name_full")
    assert full["CD3E"] == "CD3E (CD3 epsilon subunit of T-cell receptor complex)"
    card = card_text(cards, genes)  # default level "card"
    text = card["TP53"]
    assert text.startswith(
        "Gene TP53 (tumor protein p53), also known as BCC7, BMFS5, LFS1, P53, TRP53, "
        "is a protein-coding gene. Molecular functions: "
    )
    # no aliases: no "also known as"
    assert card["CD3E"].startswith(
        "Gene CD3E (CD3 epsilon subunit of T-cell receptor complex), also known as"
    ) == isinstance(cards.loc["CD3E", "aliases"], str)
    for section in ["Molecular functions: ", "Biological processes: ", "Cellular components: "]:
        assert section in text
    assert text.endswith(".")
    assert TEXT_LEVELS == ("name", "name_full", "summary", "card", "card_nosym")


def test_card_without_go_terms(cards):
    gene = cards[cards["go_mf"].isna() & cards["go_bp"].isna() & cards["go_cc"].isna()]
    gene = gene[(gene["gene_type"] == "pseudo") & gene["aliases"].isna()].index[0]
    text = card_text(cards, [gene])[gene]
    assert text == f"Gene {gene} ({cards.loc[gene, 'name']}) is a pseudo gene."


def _n_terms(text: str, label: str) -> int:
    part = text.split(f"{label}: ")[1].split(";")[0].rstrip(".")
    return part.count(", ") + 1  # term names may hold ", " too: an upper bound


@pytest.mark.parametrize("max_terms", [1, 3, 15])
def test_max_terms(cards, max_terms):
    text = card_text(cards, ["TP53"], max_terms=max_terms)["TP53"]
    terms = cards.loc["TP53", "go_bp"].split("|")[:max_terms]
    assert f"Biological processes: {', '.join(terms)};" in text
    assert cards.loc["TP53", "go_bp"].split("|")[max_terms] not in text.split(
        "Biological processes: "
    )[1].split(";")[0].split(", ")
    assert len(card_text(cards, ["TP53"], max_terms=max_terms)["TP53"]) < len(
        card_text(cards, ["TP53"], max_terms=30)["TP53"]
    )


def test_max_terms_zero_gives_header_only(cards):
    assert card_text(cards, ["TP53"], max_terms=0)["TP53"] == (
        "Gene TP53 (tumor protein p53), also known as BCC7, BMFS5, LFS1, P53, TRP53, "
        "is a protein-coding gene."
    )


def test_aliases_capped_in_card(cards):
    n = cards["aliases"].str.count(r"\|") + 1
    gene = n.idxmax()
    assert n[gene] > 10
    text = card_text(cards, [gene], text_level="card")[gene]
    named = text.split("also known as ")[1].split(", is a ")[0].split(", ")
    assert named == cards.loc[gene, "aliases"].split("|")[:10]


def test_missing_genes_are_nan(cards):
    out = card_text(cards, ["NOT_A_GENE", "CD3E", "MT-ND1"])
    assert out.isna().tolist() == [True, False, True]
    assert list(out.index) == ["NOT_A_GENE", "CD3E", "MT-ND1"]


def test_resolve_aliases(cards):
    out = card_text(cards, ["MT-ND1", "P53", "CD3E", "NOT_A_GENE"], text_level="name",
                    resolve_aliases=True)  # fmt: skip
    assert out.tolist()[:3] == ["ND1", "TP53", "CD3E"]
    assert np.isnan(out["NOT_A_GENE"])


def test_all_symbols_and_subsets(cards):
    sub = cards.loc[["CD3E", "TP53"]]
    out = card_text(sub, text_level="name")
    assert out.tolist() == ["CD3E", "TP53"]
    assert card_text(sub, "CD3E", text_level="name").tolist() == ["CD3E"]


def test_bad_arguments(cards):
    with pytest.raises(ValueError, match="unknown text_level 'paragraph'"):
        card_text(cards, ["TP53"], text_level="paragraph")
    with pytest.raises(ValueError, match="max_terms"):
        card_text(cards, ["TP53"], max_terms=-1)
    with pytest.raises(ValueError, match="lacks the columns"):
        card_text(cards[["name"]], ["TP53"])


@pytest.mark.parametrize("organism", ["mouse", "Mus musculus", "zebrafish"])
def test_bad_organism(organism):
    with pytest.raises(ValueError, match=r"available: \['human'\].*org\.Mm\.eg\.db"):
        gene_cards(organism)


def test_organism_synonyms():
    assert len(gene_cards("Homo sapiens")) == len(gene_cards("human"))


def test_one_vocabulary_of_text_levels(cards):
    """card_text and embed_genes share TEXT_LEVELS; ``level=`` still works, with a warning."""
    import genept as gpt

    assert gpt.datasets.TEXT_LEVELS is TEXT_LEVELS
    card = card_text(cards, ["TP53"], text_level="card")["TP53"]
    summary = card_text(cards, ["TP53"], text_level="summary")["TP53"]
    # the card without aliases and gene type: its functional sentences, unchanged
    assert summary.startswith("Gene TP53 (tumor protein p53). Molecular functions: ")
    assert card.endswith(summary.split(". ", 1)[1]) and "also known as" not in summary
    with pytest.warns(FutureWarning, match="text_level"):
        old = card_text(cards, ["TP53"], level="summary")
    assert old["TP53"] == summary
