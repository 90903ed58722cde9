"""Gene name matching: exact, Ensembl, case, alias; deterministic and reported."""

from __future__ import annotations

import numpy as np
import pandas as pd

from genept._gene_matching import build_alias_maps, match_genes, strip_ensembl_version

TARGETS = ["CD3E", "CD8A", "TP53", "MS4A1", "Foxp3", "FOXP3"]
CARDS = pd.DataFrame(
    {
        "aliases": ["T3E", "CD8|Leu2", "P53|LFS1", "CD20|B1", "", ""],
        "ensembl": ["ENSG00000198851", "ENSG00000153563", "ENSG00000141510", "", "", ""],
    },
    index=["CD3E", "CD8A", "TP53", "MS4A1", "Foxp3", "FOXP3"],
)


def test_each_kind():
    aliases, ensembl = build_alias_maps(CARDS)
    q = ["CD3E", "cd8a", "ENSG00000141510.17", "CD20", "ENSG00000153563", "NOPE", "foxp3", "lfs1"]
    m = match_genes(q, TARGETS, aliases=aliases, ensembl=ensembl)
    assert m.target.tolist() == ["CD3E", "CD8A", "TP53", "MS4A1", "CD8A", "", "FOXP3", "TP53"]
    assert m.kind.tolist() == [
        "exact",
        "case",
        "ensembl",
        "alias",
        "ensembl",
        "none",
        "case",
        "alias",
    ]
    assert m.counts() == {
        "exact": 1,
        "ensembl": 2,
        "case": 2,
        "alias": 2,
        "ambiguous": 0,
        "missing": 0,
        "none": 1,
    }
    assert m.n_matched == 7
    np.testing.assert_array_equal(m.index[m.matched], [0, 1, 2, 3, 1, 5, 2])


def test_exact_beats_alias_and_ambiguous_alias_is_left_unmatched():
    cards = pd.DataFrame(
        {"aliases": ["X1", "X1", "CD8A"], "ensembl": ["", "", ""]}, index=["GA", "GB", "CD8A"]
    )
    aliases, ensembl = build_alias_maps(cards)
    m = match_genes(["X1", "CD8A"], ["GA", "GB", "CD8A"], aliases=aliases, ensembl=ensembl)
    assert m.kind.tolist() == ["ambiguous", "exact"]
    assert m.target.tolist() == ["", "CD8A"]


def test_ensembl_parsing():
    assert strip_ensembl_version("ENSG00000141510.4") == "ENSG00000141510"
    assert strip_ensembl_version("ensmusg00000000001") == "ENSMUSG00000000001"
    assert strip_ensembl_version("TP53") is None


def test_deterministic_under_query_order():
    aliases, ensembl = build_alias_maps(CARDS)
    q = ["lfs1", "CD3E", "cd8a"]
    a = match_genes(q, TARGETS, aliases=aliases, ensembl=ensembl)
    b = match_genes(q[::-1], TARGETS, aliases=aliases, ensembl=ensembl)
    assert a.target.tolist() == b.target.tolist()[::-1]


def test_ensembl_ties_are_ambiguous():
    ens = {
        "ENSG00000000001": ("GA", "GB"),
        "ENSG00000000002": ["GC"],
        "ENSG00000000003": ("GD", "GE"),
    }
    m = match_genes(
        ["ENSG00000000001", "ENSG00000000002", "ENSG00000000003.2"], ["GA", "GB", "GC"], ensembl=ens
    )
    assert m.target.tolist() == ["", "GC", ""]
    assert m.kind.tolist() == ["ambiguous", "ensembl", "none"]
    assert m.counts()["ambiguous"] == 1
