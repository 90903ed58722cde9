"""GenePT-s input ids gathered from per-gene word pieces equal the tokenizer's ids."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import scanpy as sc

from genept.encoders import SentenceTransformerEncoder
from genept.encoders._token_gather import WordPieceTable, supports_gather


@pytest.fixture(scope="module")
def enc():
    return SentenceTransformerEncoder("all-MiniLM-L6-v2", device="cpu", batch_size=32)


@pytest.fixture(scope="module")
def ranked():
    """Ranked genes of pbmc68k's log-normalised raw data (real sentences)."""
    adata = sc.datasets.pbmc68k_reduced()
    X = adata.raw.X.tocsr()
    names = np.asarray(adata.raw.var_names, dtype=object)
    ptr, genes = [0], []
    for i in range(120):
        row = X[i]
        order = np.lexsort((row.indices, -row.data))
        genes.extend(row.indices[order].tolist())
        ptr.append(len(genes))
    return np.array(ptr, np.int64), np.array(genes, np.int32), names


def _texts(ptr, genes, names, prefix=""):
    return [prefix + " ".join(names[genes[a:b]]) for a, b in pairwise(ptr)]


def test_minilm_tokenizer_supports_gather(enc):
    assert supports_gather(enc.model.tokenizer)


def test_non_wordpiece_tokenizer_is_refused():
    class Fake:
        pass

    assert not supports_gather(Fake())
    with pytest.raises(ValueError, match="WordPiece"):
        WordPieceTable(Fake(), ["A"], max_len=8)


@pytest.mark.parametrize("prefix", ["", "A cell with genes ranked by expression: "])
def test_gathered_ids_equal_tokenizer_ids_on_real_sentences(enc, ranked, prefix):
    """Whole sentences (far past 256 tokens): the tokenizer truncates, so must the gather."""
    ptr, genes, names = ranked
    tok = enc.model.tokenizer
    max_len = enc.model.max_seq_length
    table = WordPieceTable(tok, names, max_len=max_len)
    head = table.head_ids(prefix)
    ids, lens = table.input_ids(ptr, genes, head=head)
    ref = tok(_texts(ptr, genes, names, prefix), truncation=True, max_length=max_len)["input_ids"]
    assert lens.tolist() == [len(r) for r in ref]
    assert (lens == max_len).any()  # real whole sentences run past the limit
    for row, r in zip(ids, ref, strict=True):
        assert row[: len(r)].tolist() == r
        assert (row[len(r) :] == tok.pad_token_id).all()


def test_gathered_ids_on_short_cells_with_punctuated_names(enc):
    """Names with hyphens, dots and digits, each cell short (no truncation)."""
    tok = enc.model.tokenizer
    names = np.array(
        ["HLA-DRA", "MT-CO1", "RP11-34P13.7", "CD3E", "LINC00115", "C1orf159"], dtype=object
    )
    ptr = np.array([0, 3, 4, 6, 12], np.int64)
    genes = np.array([0, 1, 2, 3, 4, 5, 5, 4, 3, 2, 1, 0], np.int32)
    table = WordPieceTable(tok, names, max_len=256)
    ids, lens = table.input_ids(ptr, genes)
    ref = tok(_texts(ptr, genes, names))["input_ids"]
    assert [row[:n].tolist() for row, n in zip(ids, lens, strict=True)] == ref


def test_rows_subset_and_flat_buffer(enc, ranked):
    ptr, genes, names = ranked
    table = WordPieceTable(enc.model.tokenizer, names, max_len=64)
    full, flen = table.input_ids(ptr, genes)
    rows = np.array([5, 2, 9])
    buf = np.full(3 * 64 + 7, -1, np.int64)
    sub, slen = table.input_ids(ptr, genes, rows, out=buf)
    assert sub.flags.c_contiguous and np.shares_memory(sub, buf)
    assert (slen == flen[rows]).all()
    assert (sub == full[rows, : sub.shape[1]]).all()


def test_encode_ragged_equals_encode_of_texts(enc, ranked, tmp_path):
    from genept.pp import token_budget, truncate_to_budget

    ptr, genes, names = ranked
    ptr, genes = ptr[:40].copy(), genes[: ptr[39]]
    counts, budget = token_budget(enc, names)
    ptr, genes = truncate_to_budget(ptr, genes, counts, budget=budget)
    texts = _texts(ptr, genes, names)
    ref = enc.encode(texts, cache=False, show_progress=False)
    got = enc.encode_ragged(ptr, genes, names, cache=False, show_progress=False, batch_size=16)
    assert got.shape == ref.shape == (39, 384)
    np.testing.assert_allclose(got, ref, atol=2e-5)
    # with the cache: a second call reads every vector back
    from genept._cache import EmbeddingCache

    store = EmbeddingCache(tmp_path / "c.sqlite")
    first = enc.encode_ragged(ptr, genes, names, texts=texts, cache=store, show_progress=False)
    np.testing.assert_allclose(first, ref, atol=2e-5)
    assert len(store.get_many(enc.cache_id, texts)) == 39
    again = enc.encode_ragged(ptr, genes, names, texts=texts, cache=store, show_progress=False)
    np.testing.assert_array_equal(again, first)


def test_encode_ragged_refuses_empty_cells_and_bad_batch(enc):
    names = ["CD3E", "CD3D"]
    with pytest.raises(ValueError, match="at least one gene"):
        enc.encode_ragged(np.array([0, 1, 1]), np.array([0]), names, cache=False)
    with pytest.raises(ValueError, match="batch_size"):
        enc.encode_ragged(np.array([0, 1]), np.array([0]), names, cache=False, batch_size=0)
