"""Bad input, as a hostile user would give it (issue 14): every test here failed on the
code before its fix and passes after. Four areas, one section each: the gene side
(matching, sources, ``gene_programs``), the cell kernels (GenePT-w, GenePT-s), annotation
with its caches and OpenAI plumbing, and the ``genept`` command.

=====  ==========================================================================
item   tests
=====  ==========================================================================
1      test_ensembl_prefers_named_gene_and_counts_ties,
       test_ensembl_map_of_shipped_cards_prefers_named_genes
2      test_missing_gene_symbols_stay_unmatched, test_missing_names_not_matched_by_alias,
       test_missing_names_not_embedded_by_name_source,
       test_missing_symbols_never_enter_sentences, test_missing_symbols_in_embed_cells_s,
       test_cell_with_only_missing_symbols_is_empty, test_sentence_words_marks_missing
3      test_interrupted_write_onto_the_input_keeps_it,
       test_output_equal_to_input_is_replaced_whole,
       test_interrupted_annotate_and_embed_genes_keep_the_input
4      test_damaged_cached_vectors_are_encoded_again,
       test_cached_vector_of_another_width_is_encoded_again
5      test_replaced_local_archive_is_reconverted
6      test_empty_cells_get_no_label, test_empty_reference_cells_are_left_out,
       test_llm_cells_without_sentence_get_confidence_0
7      test_gene_programs_non_finite_varm
8      test_s_refuses_non_finite_values, test_w_and_s_agree_on_inf
9      test_float_reference_labels_match_int_query_labels,
       test_disjoint_label_vocabularies_warn
10     test_llm_reply_cache_keeps_servers_apart
11     test_zero_width_varm_refused
12     test_key_added_equal_to_label_key_is_refused,
       test_empty_and_nan_strings_are_missing_labels
13     test_damaged_embedding_cache_is_moved_aside, test_cache_damaged_while_open_is_rebuilt,
       test_damaged_store_that_is_not_a_cache_names_the_file,
       test_damaged_reply_cache_is_rebuilt, test_store_survives_concurrent_writers,
       test_store_first_open_by_many_writers,
       test_reply_cache_of_earlier_versions_is_kept
14     test_bad_input_file_is_one_line, test_output_is_a_directory,
       test_missing_output_folder_is_found_before_the_work, test_cache_dir_that_is_a_file,
       test_demo_out_that_is_a_file, test_cuda_without_gpu, test_genept_source_offline,
       test_bad_numbers_refused_before_the_work, test_unavailable_device_one_exception_type
15     test_duplicate_var_names_with_use_raw_clear_error, test_sparse_and_complex_varm_refused,
       test_nonexistent_embedding_path_says_so, test_empty_query_is_refused_clearly,
       test_scmpt_save_to_a_file_fails_before_training,
       test_truncated_weights_name_the_file, test_broken_config_names_the_file,
       test_non_json_chat_answer_is_retried_then_clear,
       test_non_json_embeddings_answer_is_retried_then_clear,
       test_gene_programs_duplicate_raw_names, test_gene_programs_sparse_varm
16     test_batch_size_zero_refused, test_block_rows_not_positive_refused,
       test_block_rows_zero_refused, test_n_jobs_zero_refused,
       test_complex_expression_refused, test_counts_heuristic_samples_the_whole_matrix,
       test_mouse_names_warn_and_skip_human_aliases, test_user_vectors_2d_complex_zero,
       test_gene_programs_bad_numbers, test_gene_programs_warns_on_scaled_x,
       test_program_scores_dask_in_bounded_blocks
17     tests/test_cli.py::test_demo_writes_everything_inside_out (slow),
       tests/test_plots.py (one ``save=`` rule for every plot)
18     tests/test_cli.py::test_documented_command_runs,
       test_annotate_readme_defaults_need_no_scgpt, test_use_rep_takes_several_values
19     test_any_class_name_round_trips_without_warning
20     test_card_text_symbols_alone
21     test_neighbors_on_genept_w_at_15000_cells
=====  ==========================================================================
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
import zipfile
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from anndata import AnnData
from scipy import sparse

import genept as gpt
from genept._gene_matching import build_alias_maps, match_genes
from genept.cli import main
from genept.encoders import EmbeddingCache, TextEncoder
from genept.models import ScMPTModel
from genept.tl import (
    annotate_knn,
    annotate_knn_ensemble,
    annotate_llm,
    annotate_mlp,
    annotate_scmpt,
    classification_metrics,
    gene_programs,
    proba_frame,
)
from genept.tl._gene_programs import program_scores  # internals: row-block bounds

# ======================================================================================
# Gene side: matching, sources, gene_programs (items 1, 2, 5, 7, 15, 16, 20)
# ======================================================================================


# -- item 1: an Ensembl id listed under several symbols --------------------------------

#: Ensembl id -> the gene it names (Ensembl's primary assembly)
KNOWN_IDS = {
    "ENSG00000160201": "U2AF1",  # also under LOC102724594
    "ENSG00000140650": "PMM2",  # also under LOC100130283
    "ENSG00000108379": "WNT3",  # also under LOC101929777
    "ENSG00000237541": "HLA-DQA2",  # also under HLA-DQA1 (alt haplotypes)
    "ENSG00000196735": "HLA-DQA1",
    "ENSG00000263247": "PRR4",  # also under PRH1
    "ENSG00000143384": "MCL1",  # also under ADAMTSL4-AS1
    "ENSG00000213809": "KLRK1",  # also under the read-through KLRC4-KLRK1
}
DECOYS = ["LOC102724594", "LOC100130283", "LOC101929777", "PRH1", "ADAMTSL4-AS1", "KLRC4-KLRK1"]


def _table(genes, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    return {g: rng.standard_normal(dim) + 0.1 for g in genes}


def test_ensembl_prefers_named_gene_and_counts_ties():
    tie = "ENSG00000171711"  # DEFB4A and DEFB4B: identical copies, a true tie
    names = [*KNOWN_IDS, tie + ".3"]
    adata = ad.AnnData(np.ones((2, len(names)), np.float32), var=pd.DataFrame(index=names))
    source = _table([*KNOWN_IDS.values(), *DECOYS, "DEFB4A", "DEFB4B"])
    gpt.tl.embed_genes(adata, source=source)
    got = adata.var["genept_gene"].astype(str).tolist()
    assert got == [*KNOWN_IDS.values(), ""]
    np.testing.assert_allclose(adata.varm["X_genept"][0], source["U2AF1"], rtol=1e-6)
    counts = adata.uns["genept"]["params"]["match_counts"]
    assert counts["ensembl"] == len(KNOWN_IDS) and counts["ambiguous"] == 1


def test_ensembl_map_of_shipped_cards_prefers_named_genes():
    cards = gpt.datasets.gene_cards()
    _, ensembl = build_alias_maps(cards)
    for ens, sym in KNOWN_IDS.items():
        assert ensembl[ens] == sym
    assert sorted(ensembl["ENSG00000171711"]) == ["DEFB4A", "DEFB4B"]  # tie kept as a tie
    # no LOC placeholder wins over a named gene (64 shared ids had a LOC winner before)
    shared = cards["ensembl"].dropna().str.split("|").explode()
    cands = shared.index.to_series().groupby(shared.to_numpy()).agg(set)
    multi = cands[cands.map(len) > 1]
    for e, syms in multi.items():
        won = ensembl[e]
        if isinstance(won, str) and won.startswith("LOC"):
            assert all(s.startswith("LOC") for s in syms), (e, syms)
    # the benchmark loaders use the same rule
    from genept.bm._loaders import _ensembl_to_symbol

    e2s = _ensembl_to_symbol()
    assert e2s["ENSG00000160201"] == "U2AF1" and e2s["ENSG00000237541"] == "HLA-DQA2"
    assert "ENSG00000171711" not in e2s.index


# -- item 2: missing symbols ----------------------------------------------------------


@pytest.mark.parametrize("missing", [np.nan, None, "", "NA", "nan", "NaN", pd.NA])
def test_missing_gene_symbols_stay_unmatched(missing):
    var = pd.DataFrame(
        {"symbol": np.array([missing, "CD3E", "XK"], dtype=object)}, index=["a", "b", "c"]
    )
    adata = ad.AnnData(np.ones((2, 3), np.float32), var=var)
    gpt.tl.embed_genes(adata, source=_table(["SCN11A", "XK", "CD3E"]), gene_symbols="symbol")
    assert adata.var["genept_has_embedding"].tolist() == [False, True, True]
    assert adata.var["genept_gene"].astype(str).tolist() == ["", "CD3E", "XK"]
    assert not adata.varm["X_genept"][0].any()
    assert adata.uns["genept"]["params"]["match_counts"]["missing"] == 1


def test_missing_names_not_matched_by_alias():
    aliases, ensembl = build_alias_maps(gpt.datasets.gene_cards())
    m = match_genes(
        ["nan", "NaN", "NA", "", "XK"], ["SCN11A", "XK"], aliases=aliases, ensembl=ensembl
    )
    assert m.target.tolist() == ["", "", "", "", "XK"]
    assert m.kind.tolist()[:4] == ["missing"] * 4


def test_missing_names_not_embedded_by_name_source():
    enc = _ListEncoder()
    var = pd.DataFrame({"symbol": np.array([np.nan, "CD3E"], dtype=object)}, index=["a", "b"])
    adata = ad.AnnData(np.ones((2, 2), np.float32), var=var)
    gpt.tl.embed_genes(adata, source="name", model=enc, gene_symbols="symbol")
    assert enc.seen == ["CD3E"]
    assert adata.var["genept_has_embedding"].tolist() == [False, True]


class _ListEncoder(gpt.encoders.TextEncoder):
    """Records what it is asked to embed."""

    cache_id = "list:v1"
    dim = 4

    def __init__(self):
        self.seen: list[str] = []

    def _encode(self, texts):
        self.seen += texts
        return np.ones((len(texts), 4), np.float32)


# -- item 16: mouse names, bad user vectors -------------------------------------------


def test_mouse_names_warn_and_skip_human_aliases():
    names = ["Gm83", "Cd3e", "Actb", "Cd8a", "Gapdh", "Ms4a1"]
    adata = ad.AnnData(np.ones((2, len(names)), np.float32), var=pd.DataFrame(index=names))
    source = _table(["DCAF13", "CD3E", "ACTB", "CD8A", "GAPDH", "MS4A1"])
    with pytest.warns(UserWarning, match="mouse"):
        gpt.tl.embed_genes(adata, source=source)
    got = adata.var["genept_gene"].astype(str).tolist()
    assert got == ["", "CD3E", "ACTB", "CD8A", "GAPDH", "MS4A1"]  # Gm83 is not DCAF13
    # a mouse table of the user's: no warning, exact matches, still no human aliases
    m = ad.AnnData(np.ones((2, 2), np.float32), var=pd.DataFrame(index=["Cd3e", "Gm83"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gpt.tl.embed_genes(m, source=_table(["Cd3e", "Actb", "DCAF13"]))
    assert m.var["genept_gene"].astype(str).tolist() == ["Cd3e", ""]
    # human names do not warn
    h = ad.AnnData(np.ones((2, 2), np.float32), var=pd.DataFrame(index=["CD3E", "C1orf112"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gpt.tl.embed_genes(h, source=_table(["CD3E", "C1orf112"]))


def test_user_vectors_2d_complex_zero():
    with pytest.raises(ValueError, match=r"CD3E.*\(2, 3\)"):
        gpt.GeneEmbeddings.from_mapping({"CD3E": np.ones((2, 3)), "CD8A": np.ones((2, 3))})
    with pytest.raises(ValueError, match="complex"):
        gpt.GeneEmbeddings(np.array(["A", "B"]), np.ones((2, 3), dtype=np.complex64))
    with pytest.raises(ValueError, match="complex"):
        gpt.GeneEmbeddings.from_mapping({"A": np.ones(3) * 1j, "B": np.ones(3)})
    # (1, d) per gene is one vector, not flattened from several
    e = gpt.GeneEmbeddings.from_mapping({"A": np.ones((1, 3)), "B": np.zeros((1, 3)) + 2})
    assert e.matrix.shape == (2, 3)
    adata = ad.AnnData(np.ones((2, 2), np.float32), var=pd.DataFrame(index=["CD3E", "CD8A"]))
    with pytest.warns(UserWarning, match="all-zero"):
        gpt.tl.embed_genes(adata, source={"CD3E": np.zeros(4), "CD8A": np.ones(4)})
    assert adata.var["genept_has_embedding"].tolist() == [False, True]
    assert adata.uns["genept"]["params"]["n_genes_matched"] == 1
    zeros = ad.AnnData(np.ones((2, 1), np.float32), var=pd.DataFrame(index=["CD3E"]))
    with pytest.warns(UserWarning, match="all-zero"), pytest.raises(ValueError, match="all-zero"):
        gpt.tl.embed_genes(zeros, source={"CD3E": np.zeros(4), "CD8A": np.ones(4)})
    assert "X_genept" not in zeros.varm


# -- item 15: unclear messages --------------------------------------------------------


def test_nonexistent_embedding_path_says_so(tmp_path):
    adata = ad.AnnData(np.ones((2, 1), np.float32), var=pd.DataFrame(index=["CD3E"]))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gpt.tl.embed_genes(adata, source=str(tmp_path / "emb.npz"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gpt.tl.embed_genes(adata, source=str(tmp_path / "folder" / "emb"))
    with pytest.raises(ValueError, match="unknown gene embedding source"):
        gpt.tl.embed_genes(adata, source="cardz")


def _programs_adata(n_obs=30, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.standard_normal((8, 8)))[0][:2] * 3
    E = np.repeat(centres, 12, axis=0) + 0.1 * rng.standard_normal((24, 8))
    a = ad.AnnData(rng.poisson(1.0, (n_obs, 24)).astype(np.float32))
    a.var_names = [f"G{i}" for i in range(24)]
    a.varm["X_genept"] = E.astype(np.float32)
    return a


def test_gene_programs_duplicate_raw_names():
    a = _programs_adata()
    names = list(a.var_names)
    names[3] = names[4]
    a.var_names = names
    a.raw = a
    with pytest.raises(ValueError, match=r"duplicate.*G4.*var_names_make_unique"):
        gene_programs(a, threshold=0.8, use_raw=True)
    assert "genept_program" not in a.var


def test_gene_programs_sparse_varm():
    a = _programs_adata()
    a.varm["X_genept"] = sparse.csr_matrix(a.varm["X_genept"])
    with pytest.raises(TypeError, match=r"sparse.*toarray"):
        gene_programs(a, threshold=0.8)
    with pytest.raises(TypeError, match=r"sparse.*toarray"):  # the benchmarks' reader too
        gpt.bm.as_embedding_frame(a)


# -- item 7 and 16: gene_programs on bad varm and arguments ---------------------------


@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_gene_programs_non_finite_varm(bad):
    a = _programs_adata()
    a.varm["X_genept"][5, 2] = bad
    with pytest.raises(ValueError, match=r"G5.*embed_genes"):
        gene_programs(a)
    assert "genept_program" not in a.var
    with pytest.raises(ValueError, match=r"G5.*embed_genes"):
        gpt.bm.as_embedding_frame(a)


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"threshold": np.nan}, "threshold"),
        ({"threshold": 0.8, "resolution": -1.0}, "resolution"),
        ({"threshold": 0.8, "resolution": np.nan}, "resolution"),
        ({"quantile": np.nan}, "quantile"),
    ],
)
def test_gene_programs_bad_numbers(kw, msg):
    a = _programs_adata()
    with pytest.raises(ValueError, match=msg):
        gene_programs(a, **kw)


def test_gene_programs_warns_on_scaled_x():
    a = _programs_adata()
    a.layers["counts"] = a.X.copy()
    a.X = (a.X - a.X.mean(0)) / (a.X.std(0) + 1e-6)
    with pytest.warns(UserWarning, match=r"negative.*use_raw.*layer"):
        gene_programs(a, threshold=0.8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gene_programs(a, threshold=0.8, layer="counts")


def test_block_rows_zero_refused():
    from genept.tl._gene_programs import similarity_edges

    E = np.eye(4, dtype=np.float32)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="block_rows"):
            similarity_edges(E, 0.5, block_rows=bad)
        with pytest.raises(ValueError, match="block_rows"):
            program_scores(np.ones((3, 4)), [np.arange(4)], block_rows=bad)


def test_program_scores_dask_in_bounded_blocks(monkeypatch):
    import dask.array as da

    rng = np.random.default_rng(0)
    X = rng.poisson(1.0, (95, 24)).astype(np.float32)
    members = [np.arange(0, 12), np.arange(12, 24)]
    ref = np.stack([X[:, m].mean(1) for m in members], axis=1)
    Xd = da.from_array(X, chunks=(10, 24))
    orig = da.Array.compute

    def guarded(self, *args, **kw):
        assert self.shape[0] <= 20, f"computed {self.shape[0]} rows at once"
        return orig(self, *args, **kw)

    monkeypatch.setattr(da.Array, "compute", guarded)
    got = program_scores(Xd, members, block_rows=20)
    np.testing.assert_allclose(got, ref, rtol=1e-6)


# -- item 5: a replaced local archive -------------------------------------------------


def test_replaced_local_archive_is_reconverted(tmp_path):
    from genept.datasets._genept_zenodo import ZIP_NAME

    def make(path, genes):
        rng = np.random.default_rng(len(genes))
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(
                "GenePT_gene_embedding_ada_text.pickle",
                pickle.dumps({g: rng.standard_normal(4).tolist() for g in genes}),
            )

    zpath = tmp_path / ZIP_NAME
    cache = tmp_path / "cache"
    make(zpath, ["A", "B"])
    first = gpt.datasets.genept_embeddings(url=str(zpath), cache_dir=cache, progress=False)
    assert first.genes.tolist() == ["A", "B"]
    make(zpath, ["C", "D", "E"])
    st = zpath.stat()
    os.utime(zpath, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    second = gpt.datasets.genept_embeddings(url=str(zpath), cache_dir=cache, progress=False)
    assert second.genes.tolist() == ["C", "D", "E"]
    assert len(list(cache.glob("genept_ada-002_*.genes.npy"))) == 1  # the stale one removed
    # unchanged: read from the converted files
    t = time.perf_counter()
    third = gpt.datasets.genept_embeddings(url=str(zpath), cache_dir=cache, progress=False)
    assert third.genes.tolist() == ["C", "D", "E"] and time.perf_counter() - t < 5


# -- item 20 --------------------------------------------------------------------------


def test_card_text_symbols_alone():
    t = gpt.datasets.card_text(["CD3E", "NOT_A_GENE"], text_level="name_full")
    assert t["CD3E"] == "CD3E (CD3 epsilon subunit of T-cell receptor complex)"
    assert t.isna()["NOT_A_GENE"]
    assert gpt.datasets.card_text("CD3E").iloc[0].startswith("Gene CD3E (")
    with pytest.raises(TypeError, match="gene_cards"):
        gpt.datasets.card_text(42)


# ======================================================================================
# Cell kernels: GenePT-w and GenePT-s (items 2, 8, 11, 14, 15, 16)
# ======================================================================================


class WordEncoder(TextEncoder):
    """Fake encoder: one dimension per known word, the last for any other word."""

    cache_id = "words:v1"

    def __init__(self, vocab):
        self.vocab = {w: i for i, w in enumerate(vocab)}
        self.dim = len(vocab) + 1
        self.seen: list[str] = []

    def _encode(self, texts):
        self.seen += list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for r, t in enumerate(texts):
            for w in t.split():
                out[r, self.vocab.get(w, self.dim - 1)] += 1
        return out


def _adata(n_obs=20, n_vars=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.1, 3, (n_obs, n_vars)).astype(np.float32)
    X[rng.random(X.shape) < 0.4] = 0
    adata = AnnData(sparse.csr_matrix(X), var=pd.DataFrame(index=[f"G{i}" for i in range(n_vars)]))
    adata.varm["X_genept"] = rng.standard_normal((n_vars, 4)).astype(np.float32)
    return adata


# ---------------------------------------------------------------- item 8: GenePT-s +inf


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_s_refuses_non_finite_values(value):
    """Before: +inf was accepted and ranked first (only NaN was refused)."""
    adata = _adata()
    X = adata.X.toarray()
    X[2, 1] = value
    adata.X = sparse.csr_matrix(X)
    with pytest.raises(ValueError, match=r"NaN|infinite"):
        gpt.pp.cell_sentences(adata, show_progress=False)
    assert "genept_sentence" not in adata.obs
    with pytest.raises(ValueError, match=r"infinite|NaN"):
        gpt.pp.build_sentences(X, list(adata.var_names), show_progress=False)
    with pytest.raises(ValueError, match=r"infinite|NaN"):
        gpt.pp.rank_genes(X)
    with pytest.raises(ValueError, match=r"infinite|NaN"):
        gpt.tl.embed_cells(adata, method="s", model=WordEncoder(["G0"]), show_progress=False)
    assert "X_genept_s" not in adata.obsm


def test_w_and_s_agree_on_inf():
    """Both methods refuse +inf (GenePT-w did already)."""
    adata = _adata()
    X = adata.X.toarray()
    X[0, 0] = np.inf
    adata.X = X
    for method, kw in [("w", {}), ("s", {"model": WordEncoder(["G0"])})]:
        with pytest.raises(ValueError, match="infinite"):
            gpt.tl.embed_cells(adata, method=method, show_progress=False, **kw)


# ---------------------------------------------------------------- item 11: zero-width varm


def test_zero_width_varm_refused():
    """Before: a (n_vars, 0) varm gave (n_obs, 0) embeddings without a word."""
    adata = _adata()
    adata.varm["X_empty"] = np.zeros((adata.n_vars, 0), dtype=np.float32)
    with pytest.raises(ValueError, match="zero-width"):
        gpt.tl.embed_cells(adata, method="w", gene_key="X_empty", show_progress=False)
    assert "X_genept_w" not in adata.obsm and "genept_w_empty" not in adata.obs
    with pytest.raises(ValueError, match="zero-width"):
        gpt.tl.weighted_embedding(adata.X, np.zeros((adata.n_vars, 0)), device="cpu")


def test_sparse_and_complex_varm_refused():
    adata = _adata()
    E = adata.varm["X_genept"]
    with pytest.raises(ValueError, match="real numbers"):
        gpt.tl.weighted_embedding(adata.X, E.astype(np.complex64), device="cpu")
    with pytest.raises(ValueError, match="sparse"):
        gpt.tl.weighted_embedding(adata.X, sparse.csr_matrix(E), device="cpu")
    # item 15: a sparse varm said "setting an array element with a sequence"
    adata.varm["X_sp"] = sparse.csr_matrix(E)
    with pytest.raises(ValueError, match=r"adata.varm\['X_sp'\] is a sparse matrix"):
        gpt.tl.embed_cells(adata, method="w", gene_key="X_sp", show_progress=False)


def test_duplicate_var_names_with_use_raw_clear_error():
    """Item 15: duplicate var_names with use_raw=True raised pandas' InvalidIndexError."""
    adata = _adata()
    adata.raw = adata.copy()
    adata.var_names = ["G0", "G0", "G2", "G3", "G4", "G5"]
    with pytest.raises(ValueError, match=r"duplicates.*var_names_make_unique"):
        gpt.tl.embed_cells(adata, method="w", use_raw=True, show_progress=False)
    assert "X_genept_w" not in adata.obsm


# ---------------------------------------------------------------- item 16: minor acceptances


def test_batch_size_zero_refused():
    """Before: batch_size=0 silently meant the encoder's default."""
    adata = _adata()
    enc = WordEncoder(["G0"])
    for bad in (0, -3):
        with pytest.raises(ValueError, match="batch_size"):
            gpt.tl.embed_cells(adata, method="s", model=enc, batch_size=bad, show_progress=False)
    assert enc.seen == []  # refused before any work


@pytest.mark.parametrize("bad", [0, -1])
def test_block_rows_not_positive_refused(bad):
    """Before: block_rows=0 meant the default and negative values became 1."""
    adata = _adata()
    with pytest.raises(ValueError, match="block_rows"):
        gpt.tl.embed_cells(adata, method="w", block_rows=bad, show_progress=False)
    with pytest.raises(ValueError, match="block_rows"):
        gpt.tl.weighted_embedding(adata.X, adata.varm["X_genept"], device="cpu", block_rows=bad)
    with pytest.raises(ValueError, match="block_rows"):
        gpt.pp.cell_sentences(adata, block_rows=bad, show_progress=False)
    with pytest.raises(ValueError, match="block_rows"):
        gpt.pp.rank_genes(adata.X, block_rows=bad)
    assert "X_genept_w" not in adata.obsm and "genept_sentence" not in adata.obs


def test_n_jobs_zero_refused():
    """Before: n_jobs=0 silently meant all cores."""
    adata = _adata()
    with pytest.raises(ValueError, match="n_jobs"):
        gpt.tl.weighted_embedding(adata.X, adata.varm["X_genept"], device="cpu", n_jobs=0)


@pytest.mark.parametrize("kind", ["dense", "csr"])
def test_complex_expression_refused(kind):
    """Before: complex X was cast to float (imaginary part dropped, a ComplexWarning)."""
    adata = _adata()
    X = adata.X.toarray().astype(np.complex64) + 1j
    X = sparse.csr_matrix(X) if kind == "csr" else X
    with pytest.raises(ValueError, match="real numbers"):
        gpt.tl.weighted_embedding(X, adata.varm["X_genept"], device="cpu")
    ad2 = AnnData(X, var=adata.var, varm={"X_genept": adata.varm["X_genept"]})
    for method, kw in [("w", {}), ("s", {"model": WordEncoder(["G0"])})]:
        with pytest.raises(ValueError, match="real numbers"):
            gpt.tl.embed_cells(ad2, method=method, show_progress=False, **kw)
    with pytest.raises(ValueError, match="real numbers"):
        gpt.pp.cell_sentences(ad2, show_progress=False)


def test_counts_heuristic_samples_the_whole_matrix():
    """Before: only the first 2,000 rows were looked at; counts after them went unnoticed."""
    rng = np.random.default_rng(0)
    n_obs, n_vars = 6000, 30
    X = rng.poisson(20, (n_obs, n_vars)).astype(np.float32)
    X[:2500] = 0  # e.g. cells sorted by depth: the first 2,500 are empty
    adata = AnnData(sparse.csr_matrix(X), var=pd.DataFrame(index=[f"G{i}" for i in range(n_vars)]))
    adata.varm["X_genept"] = rng.standard_normal((n_vars, 4)).astype(np.float32)
    with pytest.warns(UserWarning, match="raw integer counts"):
        gpt.tl.embed_cells(adata, method="w", show_progress=False)
    # normalised data in the same layout: no warning
    adata.X = sparse.csr_matrix(np.log1p(X / 7))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        gpt.tl.embed_cells(adata, method="w", show_progress=False)


# ---------------------------------------------------------------- item 2: missing symbols


MISSING = [np.nan, None, "NA", "nan", "<NA>", ""]


def _symbols_adata():
    X = np.array([[5, 4, 3, 2, 1, 1, 0.5, 0.2], [1, 2, 3, 4, 5, 6, 7, 8]], dtype=np.float32)
    symbols = ["CD3E", *MISSING, "LYZ"]
    var = pd.DataFrame({"sym": np.array(symbols, dtype=object)}, index=[f"g{i}" for i in range(8)])
    return AnnData(X, var=var)


@pytest.mark.parametrize("hash_names", [False, True])
def test_missing_symbols_never_enter_sentences(hash_names):
    """Before: NaN became the word "nan" and R's "NA" the word "NA" in the sentences."""
    adata = _symbols_adata()
    out = gpt.pp.cell_sentences(
        adata, gene_symbols="sym", hash_names=hash_names, inplace=False, show_progress=False
    )
    words = [s.split() for s in out]
    want = [["CD3E", "LYZ"], ["LYZ", "CD3E"]]
    if hash_names:
        want = [[gpt.pp.hash_gene_name(w) for w in ws] for ws in want]
    assert words == want
    for bad in ("nan", "NA", "None", "<NA>", gpt.pp.hash_gene_name("nan")):
        assert all(bad not in ws for ws in words)


def test_missing_symbols_in_embed_cells_s():
    adata = _symbols_adata()
    enc = WordEncoder(["CD3E", "LYZ"])
    gpt.tl.embed_cells(
        adata, method="s", prefix="", model=enc, gene_symbols="sym", show_progress=False
    )
    assert enc.seen == ["CD3E LYZ", "LYZ CD3E"]
    Z = adata.obsm["X_genept_s"]
    assert np.all(Z[:, -1] == 0)  # no unknown word was written


def test_cell_with_only_missing_symbols_is_empty():
    X = np.array([[0, 3, 0], [1, 0, 0]], dtype=np.float32)
    plan = gpt.pp.sentence_plan(["CD3E", None, "LYZ"])
    assert gpt.pp.build_sentences(X, plan, show_progress=False) == ["", "CD3E"]


def test_sentence_words_marks_missing():
    assert gpt.pp.sentence_words(["A", np.nan, "NA", pd.NA, "B"]).tolist() == ["A", "", "", "", "B"]


# ---------------------------------------------------------------- devices


def test_unavailable_device_one_exception_type():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from genept._core._device import DeviceError

    adata = _adata()
    with pytest.raises(DeviceError, match="no CUDA") as err:
        gpt.tl.embed_cells(adata, method="w", device="cuda", show_progress=False)
    assert isinstance(err.value, ValueError) and isinstance(err.value, RuntimeError)
    with pytest.raises(DeviceError, match="device must be"):
        gpt.tl.weighted_embedding(adata.X, adata.varm["X_genept"], device="gpu")
    assert "X_genept_w" not in adata.obsm


# ======================================================================================
# Annotation, caches and the OpenAI plumbing (items 4, 6, 9, 10, 12, 13, 15, 19)
# ======================================================================================


KEY = "sk-test-SECRET-bad-input-0123456789"


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    progress, gpt.settings.progress = gpt.settings.progress, False
    yield
    torch.set_num_threads(n)
    gpt.settings.progress = progress


def blobs(n_per=20, labels=("a", "b", "c"), seed=0, d=4) -> ad.AnnData:
    """Well separated classes in obsm["X_e"] and obsm["X_f"]."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.asarray(labels, dtype=object), n_per)
    centers = {lab: rng.normal(scale=6, size=d) for lab in labels}
    x = np.stack([centers[v] for v in y]) + rng.normal(size=(y.size, d))
    a = ad.AnnData(
        np.zeros((y.size, 1), np.float32),
        obs=pd.DataFrame({"cell_type": y}, index=[f"c{seed}_{i}" for i in range(y.size)]),
    )
    a.obsm["X_e"] = x.astype(np.float32)
    a.obsm["X_f"] = (x[:, ::-1] * 2).astype(np.float32)
    return a


SMALL = dict(hidden=8, epochs_grid=(5,), lr_grid=(1e-2,), n_seeds=1, device="cpu")


# ----------------------------------------------------------------------------- item 6
@pytest.mark.parametrize("method", ["knn", "ensemble", "mlp", "scmpt"])
def test_empty_cells_get_no_label(method):
    ref, query = blobs(seed=0), blobs(n_per=3, seed=0)
    query.obsm["X_e"][0] = 0  # an empty GenePT-w cell
    query.obsm["X_f"][0] = 0
    if method == "knn":
        annotate_knn(query, ref, use_rep="X_e", key_added="k")
    elif method == "ensemble":
        annotate_knn_ensemble(query, ref, use_rep=["X_e", "X_f"], key_added="k")
    elif method == "mlp":
        annotate_mlp(query, ref, use_rep="X_e", epochs=5, device="cpu", key_added="k")
    else:
        annotate_scmpt(query, ref, reps=["X_e", "X_f"], key_added="k", **SMALL)
    assert pd.isna(query.obs["k"].iloc[0])
    assert query.obs["k_confidence"].iloc[0] == 0
    assert np.isnan(query.obsm["k_proba"][0]).all()
    assert query.obs["k"].iloc[1:].notna().all()
    assert (query.obs["k_confidence"].iloc[1:] > 0).all()


def test_empty_reference_cells_are_left_out():
    ref, query = blobs(seed=0), blobs(n_per=2, seed=0)
    ref.obsm["X_e"][:5] = 0
    with pytest.warns(UserWarning, match="5 reference cells have an all-zero"):
        annotate_knn(query, ref, use_rep="X_e")
    assert query.uns["genept_knn"]["params"]["n_reference"] == ref.n_obs - 5


def test_llm_cells_without_sentence_get_confidence_0(tmp_path, monkeypatch):
    monkeypatch.setattr(gpt.settings, "cache_dir", tmp_path)
    a = ad.AnnData(
        np.zeros((2, 1)), obs=pd.DataFrame({"genept_sentence": ["", np.nan]}, index=["x", "y"])
    )
    with pytest.warns(UserWarning, match="no sentence"):
        annotate_llm(a, candidates=["B cell", "T cell"], api_key=KEY)
    assert a.obs["genept_llm"].isna().all()
    np.testing.assert_array_equal(a.obs["genept_llm_confidence"], [0, 0])


# ----------------------------------------------------------------------------- item 9
def test_float_reference_labels_match_int_query_labels():
    ref = blobs(labels=(1.0, 2.0, 3.0), seed=1)
    ref.obs["cell_type"] = ref.obs["cell_type"].astype(float)
    query = blobs(n_per=4, labels=(1, 2, 3), seed=1)
    query.obs["cell_type"] = query.obs["cell_type"].astype(int)
    annotate_knn(query, ref, use_rep="X_e")
    assert query.uns["genept_knn"]["classes"] == ["1", "2", "3"]
    by_hand = (query.obs["genept_knn"].astype(str) == query.obs["cell_type"].astype(str)).mean()
    assert query.uns["genept_knn"]["metrics"]["accuracy"] == pytest.approx(by_hand)
    assert by_hand > 0.8
    assert classification_metrics([1.0, 2.0], [1, 2])["accuracy"] == 1.0


def test_disjoint_label_vocabularies_warn():
    ref, query = blobs(seed=2), blobs(n_per=3, labels=("x", "y", "z"), seed=2)
    with pytest.warns(UserWarning, match="name the cell types alike"):
        annotate_knn(query, ref, use_rep="X_e")


# ----------------------------------------------------------------------------- item 12
def test_key_added_equal_to_label_key_is_refused():
    ref, query = blobs(seed=3), blobs(n_per=3, seed=3)
    before = query.obs["cell_type"].copy()
    with pytest.raises(ValueError, match="overwrite"):
        annotate_knn(query, ref, use_rep="X_e", key_added="cell_type")
    with pytest.raises(ValueError, match="overwrite"):
        annotate_scmpt(query, ref, reps=["X_e", "X_f"], key_added="cell_type", **SMALL)
    pd.testing.assert_series_equal(query.obs["cell_type"], before)


@pytest.mark.parametrize("missing", ["", "nan", "NaN", "  "])
def test_empty_and_nan_strings_are_missing_labels(missing):
    ref, query = blobs(seed=4), blobs(n_per=3, seed=4)
    ref.obs["cell_type"] = ref.obs["cell_type"].astype(object)
    ref.obs.iloc[:4, 0] = missing
    with pytest.warns(UserWarning, match="4 reference cells have no 'cell_type' label"):
        annotate_knn(query, ref, use_rep="X_e")
    assert query.uns["genept_knn"]["classes"] == ["a", "b", "c"]


# ----------------------------------------------------------------------------- item 15
def test_empty_query_is_refused_clearly():
    ref = blobs(seed=5)
    with pytest.raises(ValueError, match="no cells"):
        annotate_knn(ref[:0].copy(), ref, use_rep="X_e")
    with pytest.raises(ValueError, match="`reference` has no cells"):
        annotate_knn(ref, ref[:0].copy(), use_rep="X_e")
    with pytest.raises(ValueError, match="no cells"):
        annotate_scmpt(ref[:0].copy(), ref, reps=["X_e", "X_f"], **SMALL)


def test_scmpt_save_to_a_file_fails_before_training(tmp_path, monkeypatch):
    ref, query = blobs(seed=6), blobs(n_per=2, seed=6)
    target = tmp_path / "model"
    target.write_text("not a folder")
    calls = []
    monkeypatch.setattr(ScMPTModel, "fit", classmethod(lambda *a, **k: calls.append(1)))
    with pytest.raises(FileExistsError, match="existing file"):
        annotate_scmpt(query, ref, reps=["X_e", "X_f"], save=target, **SMALL)
    assert calls == []
    assert target.read_text() == "not a folder"


@pytest.fixture
def saved_model(tmp_path):
    m = ScMPTModel.fit(blobs(seed=7), reps=["X_e", "X_f"], **SMALL)
    return m.save(tmp_path / "m")


def test_truncated_weights_name_the_file(saved_model):
    w = saved_model / "weights.pt"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"weights\.pt.*truncated or damaged"):
        ScMPTModel.load(saved_model)


def test_broken_config_names_the_file(saved_model):
    (saved_model / "config.json").write_text('{"format": "genept-scmpt", ')
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        ScMPTModel.load(saved_model)


# ----------------------------------------------------------------------------- item 19
def test_any_class_name_round_trips_without_warning(tmp_path):
    labels = ("CD4+/CD25 T Reg", "CD8+/CD45RA+ Naive", "B cell")
    ref, query = blobs(labels=labels, seed=8), blobs(n_per=3, labels=labels, seed=8)
    annotate_knn(query, ref, use_rep="X_e")
    with warnings.catch_warnings():
        # anndata's "Forward slashes will be disallowed in h5 stores" (and any other
        # FutureWarning of ours) is an error; pandas 3's deprecation notices about
        # options anndata's reader sets are not about the labels
        warnings.simplefilter("error", FutureWarning)
        warnings.filterwarnings("ignore", "The 'future.infer_string' option")
        query.write_h5ad(tmp_path / "q.h5ad")
        back = ad.read_h5ad(tmp_path / "q.h5ad")
    pd.testing.assert_frame_equal(
        proba_frame(back, "genept_knn"), proba_frame(query, "genept_knn"), check_index_type=False
    )
    assert list(proba_frame(back, "genept_knn").columns) == sorted(labels)
    # readers take it: the two-stage LLM flow finds each cell's top labels
    pf = proba_frame(back, "genept_knn")
    assert pf.idxmax(axis=1).tolist() == back.obs["genept_knn"].astype(str).tolist()


# ----------------------------------------------------------------------------- item 4
class Counting(TextEncoder):
    cache_id = "counting"
    dim = 3

    def __init__(self):
        self.seen: list[str] = []

    def _encode(self, texts):
        self.seen += texts
        return np.array([[len(t), 1.0, 2.0] for t in texts], dtype=np.float32)


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e30])
def test_damaged_cached_vectors_are_encoded_again(tmp_path, bad):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    enc = Counting()
    enc.encode(["CD3E", "CD4"], cache=cache)
    row = np.array([bad, 1, 2], dtype=np.float32).tobytes()
    with sqlite3.connect(cache.path) as con:
        con.execute("UPDATE vectors SET value = ? WHERE ns = 'counting'", (row,))
    enc.seen.clear()
    with pytest.warns(UserWarning, match="2 cached vector"):
        out = enc.encode(["CD3E", "CD4"], cache=cache)
    np.testing.assert_array_equal(out, [[4, 1, 2], [3, 1, 2]])
    assert sorted(enc.seen) == ["CD3E", "CD4"]
    enc.seen.clear()
    enc.encode(["CD3E", "CD4"], cache=cache)  # repaired: no call
    assert enc.seen == []


def test_cached_vector_of_another_width_is_encoded_again(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    cache.put_many(
        "counting", ["CD3E"], np.ones((1, 2))
    )  # written under the same id by another model
    enc = Counting()
    np.testing.assert_array_equal(enc.encode(["CD3E"], cache=cache), [[4, 1, 2]])
    assert enc.seen == ["CD3E"]


# ----------------------------------------------------------------------------- item 13
def test_damaged_embedding_cache_is_moved_aside(tmp_path):
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.warns(
        UserWarning, match=r"c\.sqlite was damaged.*moved it to .*c\.sqlite\.corrupt-"
    ):
        cache = EmbeddingCache(path)
    assert cache.count() == 0
    moved = list(tmp_path.glob("c.sqlite.corrupt-*"))
    assert len(moved) == 1 and moved[0].read_bytes().startswith(b"this is not")
    enc = Counting()
    enc.encode(["CD3E"], cache=cache)
    assert cache.count() == 1


def test_cache_damaged_while_open_is_rebuilt(tmp_path):
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    Counting().encode(["CD3E"], cache=cache)
    for f in tmp_path.glob("c.sqlite*"):
        f.write_bytes(b"\0garbage" * 512)
    with pytest.warns(UserWarning, match="damaged"):
        assert cache.get_many("counting", ["CD3E"]) == {}


def test_damaged_store_that_is_not_a_cache_names_the_file(tmp_path):
    from genept._core._store import KVStore, StoreError

    path = tmp_path / "keep.sqlite"
    path.write_bytes(b"garbage" * 1000)
    with pytest.raises(StoreError, match=r"keep\.sqlite is damaged"):
        KVStore(path, "t", disposable=False)
    assert path.read_bytes().startswith(b"garbage")


def one_cell() -> ad.AnnData:
    return ad.AnnData(
        np.zeros((1, 1)), obs=pd.DataFrame({"genept_sentence": ["MS4A1 CD79A"]}, index=["c"])
    )


# ----------------------------------------------------------------------------- item 10
def test_llm_reply_cache_keeps_servers_apart(tmp_path, monkeypatch, chat_server):
    monkeypatch.setattr(gpt.settings, "cache_dir", tmp_path)
    s1, s2 = chat_server(lambda _: "B cell"), chat_server(lambda _: "T cell")
    a = one_cell()
    annotate_llm(a, candidates=["B cell", "T cell"], api_key=KEY, base_url=s1.url)
    b = one_cell()
    annotate_llm(b, candidates=["B cell", "T cell"], api_key=KEY, base_url=s2.url)
    c = one_cell()
    annotate_llm(c, candidates=["B cell", "T cell"], api_key=KEY, base_url=s1.url)
    assert (len(s1.requests), len(s2.requests)) == (
        1,
        1,
    )  # the third run came from server 1's cache entry
    assert a.obs["genept_llm"].iloc[0] == "B cell" and b.obs["genept_llm"].iloc[0] == "T cell"
    assert c.uns["genept_llm"]["usage"]["n_cache_hits"] == 1


def test_damaged_reply_cache_is_rebuilt(tmp_path, monkeypatch, chat_server):
    monkeypatch.setattr(gpt.settings, "cache_dir", tmp_path)
    (tmp_path / "llm").mkdir()
    (tmp_path / "llm" / "chat.sqlite").write_bytes(b"junk" * 1000)
    s = chat_server(lambda _: "B cell")
    with pytest.warns(UserWarning, match=r"chat\.sqlite was damaged"):
        annotate_llm(one_cell(), candidates=["B cell", "T cell"], api_key=KEY, base_url=s.url)
    assert len(s.requests) == 1


# ----------------------------------------------------------------------------- item 15
def test_non_json_chat_answer_is_retried_then_clear(tmp_path, monkeypatch, chat_server):
    monkeypatch.setattr(gpt.settings, "cache_dir", tmp_path)
    monkeypatch.setattr("genept._core._openai.backoff", lambda *a: 0.0)
    s = chat_server(lambda _: "B cell", non_json=True)
    a = one_cell()
    with pytest.raises(RuntimeError, match=r"not the API's JSON.*after 3 attempt") as info:
        annotate_llm(a, candidates=["B cell", "T cell"], api_key=KEY, base_url=s.url, max_retries=2)
    assert len(s.requests) == 3 and KEY not in str(info.value)
    assert "genept_llm" not in a.obs


def test_non_json_embeddings_answer_is_retried_then_clear(tmp_path, chat_server):
    from genept.encoders import OpenAIEncoder

    s = chat_server(lambda _: "", non_json=True)
    enc = OpenAIEncoder("mock", api_key=KEY, base_url=s.url, max_retries=1, backoff_base=0.01)
    with pytest.raises(RuntimeError, match=r"not the API's JSON.*after 2 attempt"):
        enc.encode(["CD3E"], cache=False)
    assert len(s.requests) == 2


def test_store_survives_concurrent_writers(tmp_path):
    """Writers with their own connections (as separate processes have) lose nothing."""
    path = tmp_path / "c.sqlite"
    errors: list[Exception] = []

    def writer(w: int):
        try:
            cache = EmbeddingCache(path)
            for b in range(20):
                texts = [f"w{w}-b{b}-{i}" for i in range(5)]
                cache.put_many("m", texts, np.full((5, 3), w + b / 100, np.float32))
                assert len(cache.get_many("m", texts)) == 5
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert EmbeddingCache(path).count("m") == 4 * 20 * 5
    got = EmbeddingCache(path).get_many("m", ["w3-b19-4"])
    np.testing.assert_array_equal(got[0], np.full(3, 3.19, np.float32))


def test_store_first_open_by_many_writers(tmp_path):
    """Eight writers opening a new cache at once (the WAL switch races) all succeed.

    SQLite's busy handler does not cover the journal-mode switch: before the store
    retried locked errors itself, about 1 run in 13 of this test failed.
    """
    for rep in range(25):
        path = tmp_path / f"c{rep}.sqlite"
        errors: list[Exception] = []

        def writer(w: int, path=path, errors=errors):
            try:
                cache = EmbeddingCache(path)
                texts = [f"w{w}-{i}" for i in range(3)]
                cache.put_many("m", texts, np.full((3, 2), w, np.float32))
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [], f"repetition {rep}: {errors[0]}"
        assert EmbeddingCache(path).count("m") == 8 * 3


def test_reply_cache_of_earlier_versions_is_kept(tmp_path, monkeypatch):
    """Paid replies in the old table are migrated, not thrown away."""
    from genept.tl._annotate._chat import LLM_PROMPT, ReplyCache, format_candidates

    monkeypatch.setattr(gpt.settings, "cache_dir", tmp_path)
    (tmp_path / "llm").mkdir()
    prompt = LLM_PROMPT.format(
        candidates=format_candidates(["B cell", "T cell"]),
        sentence="MS4A1 CD79A",
        context="a single-cell RNA-seq dataset",
    )
    key = ReplyCache.key("gpt-4o-mini", [{"role": "user", "content": prompt}], {"temperature": 0.0})
    with sqlite3.connect(tmp_path / "llm" / "chat.sqlite") as con:
        con.execute(
            "CREATE TABLE replies (key TEXT PRIMARY KEY, model TEXT NOT NULL, reply TEXT NOT NULL)"
        )
        con.execute("INSERT INTO replies VALUES (?, ?, ?)", (key, "gpt-4o-mini", "T cell"))
    a = one_cell()
    annotate_llm(a, candidates=["B cell", "T cell"])  # no key, no server: from the cache
    assert a.obs["genept_llm"].iloc[0] == "T cell"


# ======================================================================================
# The genept command (items 3, 14, 21)
# ======================================================================================


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def files(tmp_path):
    """A small valid input (with gene embeddings), and broken look-alikes."""
    rng = np.random.default_rng(0)
    a = ad.AnnData(
        np.log1p(rng.poisson(1.0, (30, 12)).astype(np.float32)),
        obs=pd.DataFrame(
            {"cell_type": rng.choice(["T", "B"], 30)}, index=[f"c{i}" for i in range(30)]
        ),
        var=pd.DataFrame(index=[f"G{i}" for i in range(12)]),
    )
    a.varm["X_genept"] = rng.standard_normal((12, 8)).astype(np.float32)
    a.obsm["X_pca"] = rng.standard_normal((30, 5)).astype(np.float32)
    a.write_h5ad(tmp_path / "in.h5ad")
    (tmp_path / "text.h5ad").write_text("cell,gene\n1,2\n")
    (tmp_path / "empty.h5ad").write_bytes(b"")
    with h5py.File(tmp_path / "garbage.h5ad", "w") as f:  # HDF5, but not an AnnData
        f["foo"] = np.arange(3)
    (tmp_path / "folder").mkdir()
    (tmp_path / "a_file").write_text("x")
    return tmp_path


def _cli(argv, capsys) -> tuple[int, str]:
    rc = main([*argv, "--no-progress"])
    err = capsys.readouterr().err
    return rc, err


def _assert_one_line_error(rc, err, *needles):
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genept "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err


@pytest.mark.parametrize("bad", ["text.h5ad", "empty.h5ad", "garbage.h5ad", "missing.h5ad"])
def test_bad_input_file_is_one_line(files, monkeypatch, capsys, bad):
    monkeypatch.chdir(files)
    rc, err = _cli(["embed-cells", bad, "out.h5ad"], capsys)
    _assert_one_line_error(rc, err, bad)
    rc, err = _cli(
        [
            "annotate",
            "in.h5ad",
            "out.h5ad",
            "--reference",
            bad,
            "--method",
            "knn",
            "--use-rep",
            "X_pca",
        ],
        capsys,
    )
    _assert_one_line_error(rc, err, bad, "--reference")
    assert not (files / "out.h5ad").exists()


def test_output_is_a_directory(files, monkeypatch, capsys):
    monkeypatch.chdir(files)
    rc, err = _cli(["embed-cells", "in.h5ad", "folder"], capsys)
    _assert_one_line_error(rc, err, "folder")


def test_missing_output_folder_is_found_before_the_work(files, monkeypatch, capsys):
    """Old code computed everything, then failed writing (after minutes on real data)."""
    monkeypatch.chdir(files)
    calls = []
    import genept.tl

    monkeypatch.setattr(genept.tl, "embed_cells", lambda *a, **k: calls.append(1))
    rc, err = _cli(["embed-cells", "in.h5ad", "nope/out.h5ad"], capsys)
    _assert_one_line_error(rc, err, "nope", "mkdir")
    assert calls == []  # nothing computed


def test_cache_dir_that_is_a_file(files, monkeypatch, capsys):
    monkeypatch.chdir(files)
    rc, err = _cli(["embed-genes", "in.h5ad", "out.h5ad", "--cache-dir", "a_file"], capsys)
    _assert_one_line_error(rc, err, "--cache-dir")


def test_demo_out_that_is_a_file(files, monkeypatch, capsys):
    monkeypatch.chdir(files)
    rc, err = _cli(["demo", "--out", "a_file"], capsys)
    _assert_one_line_error(rc, err, "--out", "a_file")
    assert (files / "a_file").read_text() == "x"


def test_cuda_without_gpu(files, monkeypatch, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.chdir(files)
    rc, err = _cli(["embed-cells", "in.h5ad", "out.h5ad", "--device", "cuda"], capsys)
    _assert_one_line_error(rc, err, "cuda")


def test_genept_source_offline(files, monkeypatch, capsys):
    """A failed download (no network) is one line, not a traceback."""
    monkeypatch.chdir(files)

    def offline(*args, **kwargs):
        import requests

        raise requests.exceptions.ConnectionError(
            "HTTPSConnectionPool(host='zenodo.org', port=443): Max retries exceeded\n"
            "(Caused by NameResolutionError)"
        )

    monkeypatch.setattr("pooch.retrieve", offline)
    rc, err = _cli(
        [
            "embed-genes",
            "in.h5ad",
            "out.h5ad",
            "--source",
            "genept",
            "--cache-dir",
            str(files / "cache"),
        ],
        capsys,
    )
    _assert_one_line_error(rc, err)
    assert not (files / "out.h5ad").exists()


def test_bad_numbers_refused_before_the_work(files, monkeypatch, capsys):
    monkeypatch.chdir(files)
    rc, err = _cli(["embed-cells", "in.h5ad", "out.h5ad", "--batch-size", "0"], capsys)
    _assert_one_line_error(rc, err, "--batch-size")


# ------------------------------------------------------------------ #3 never lose a file
def _failing_write(monkeypatch):
    """Make every h5ad write truncate its target and die half-way (like a kill)."""

    def write(self, filename=None, *args, **kwargs):
        Path(filename).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # truncated file
        raise OSError("killed during the write")

    monkeypatch.setattr(ad.AnnData, "write_h5ad", write)
    monkeypatch.setattr(ad.AnnData, "write", write)


@pytest.mark.parametrize("backed", [False, True])
def test_interrupted_write_onto_the_input_keeps_it(files, monkeypatch, capsys, backed):
    """`genept embed-cells in.h5ad in.h5ad` killed while writing: in.h5ad survives intact
    (old code wrote in place: h5py truncated the input first)."""
    monkeypatch.chdir(files)
    before = _digest(files / "in.h5ad")
    _failing_write(monkeypatch)
    argv = ["embed-cells", "in.h5ad", "in.h5ad", "--device", "cpu"] + (
        ["--backed"] if backed else []
    )
    rc, err = _cli(argv, capsys)
    assert rc == 2 and "killed" in err
    assert _digest(files / "in.h5ad") == before
    assert [p.name for p in files.iterdir() if p.name.endswith(".tmp")] == []  # cleaned up


@pytest.mark.parametrize("backed", [False, True])
def test_output_equal_to_input_is_replaced_whole(files, monkeypatch, capsys, backed):
    """Output == input works: the file is replaced by the complete result."""
    monkeypatch.chdir(files)
    argv = ["embed-cells", "in.h5ad", "in.h5ad", "--device", "cpu"] + (
        ["--backed"] if backed else []
    )
    rc, err = _cli(argv, capsys)
    assert rc == 0, err
    from genept.tl._embed_cells import whiten_gene_embeddings  # the default (tested apart)

    b = ad.read_h5ad(files / "in.h5ad")
    X, E = b.X, whiten_gene_embeddings(b.varm["X_genept"])
    ref = X @ E
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(b.obsm["X_genept_w"], ref, rtol=1e-4, atol=1e-5)


def test_interrupted_annotate_and_embed_genes_keep_the_input(files, monkeypatch, capsys):
    monkeypatch.chdir(files)
    before = _digest(files / "in.h5ad")
    _failing_write(monkeypatch)
    rc, _ = _cli(
        [
            "annotate",
            "in.h5ad",
            "in.h5ad",
            "--reference",
            "in.h5ad",
            "--method",
            "knn",
            "--use-rep",
            "X_pca",
            "--label-key",
            "cell_type",
        ],
        capsys,
    )
    assert rc == 2 and _digest(files / "in.h5ad") == before


# ------------------------------------------------------------------ #21 neighbours at scale
def test_neighbors_on_genept_w_at_15000_cells():
    """`sc.pp.neighbors(use_rep="X_genept_w")` at 15,000 cells (pynndescent path): failed
    with `'csr_array' object has no attribute 'getnnz'` under pynndescent 0.7 + scipy 1.17
    + scanpy 1.11.5; genept pins pynndescent<0.7. Runs in a subprocess so that the numba
    compilation of pynndescent does not count against other tests' memory."""
    code = """
import numpy as np, anndata as ad, scanpy as sc
import genept as gpt
rng = np.random.default_rng(0)
n, g = 15_000, 50
X = rng.poisson(0.3, (n, g)).astype(np.float32)
a = ad.AnnData(np.log1p(X), var={"gene": [f"G{i}" for i in range(g)]})
a.var_names = [f"G{i}" for i in range(g)]
a.varm["X_genept"] = rng.standard_normal((g, 16)).astype(np.float32)  # random gene embeddings
gpt.tl.embed_cells(a, method="w", device="cpu")
sc.pp.neighbors(a, use_rep="X_genept_w", n_neighbors=10)
C = a.obsp["connectivities"]
assert C.shape == (n, n) and C.nnz >= n
print("ok", C.nnz)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]
