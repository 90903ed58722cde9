"""GeneEmbeddings validation and user-supplied embedding files."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from genept import GeneEmbeddings, read_gene_embeddings
from genept._gene_embeddings import as_gene_embeddings


@pytest.fixture
def table():
    rng = np.random.default_rng(0)
    return GeneEmbeddings(np.array(["A", "B", "C"]), rng.standard_normal((3, 4)))


def test_dtype_and_shape(table):
    assert table.matrix.dtype == np.float32
    assert table.dim == 4 and len(table) == 3


@pytest.mark.parametrize(
    ("genes", "mat", "msg"),
    [
        (["A", "B"], np.ones((3, 4)), "2 gene names but 3 embedding rows"),
        (["A", "B", "C"], np.ones(3), "2-d"),
        (["A", "B", "A"], np.ones((3, 4)), "duplicate gene names"),
        (["A", "B", "C"], np.array([[1, np.nan], [0, 1], [1, 1]]), "NaN or inf"),
        (["A", "B", "C"], np.ones((3, 0)), "zero columns"),
    ],
)
def test_bad_tables(genes, mat, msg):
    with pytest.raises(ValueError, match=msg):
        GeneEmbeddings(np.array(genes), mat)


def test_nan_error_names_gene():
    with pytest.raises(ValueError, match="first: B"):
        GeneEmbeddings(np.array(["A", "B"]), np.array([[1.0, 2.0], [np.inf, 0.0]]))


def test_mapping_lengths_must_agree():
    with pytest.raises(ValueError, match="different lengths"):
        GeneEmbeddings.from_mapping({"A": [1, 2], "B": [1, 2, 3]})


@pytest.mark.parametrize("suffix", [".npz", ".csv", ".tsv", ".parquet", ".pickle"])
def test_file_round_trip(tmp_path, table, suffix):
    path = tmp_path / f"emb{suffix}"
    df = table.to_frame()
    if suffix == ".npz":
        table.save_npz(path)
    elif suffix == ".csv":
        df.to_csv(path)
    elif suffix == ".tsv":
        df.to_csv(path, sep="\t")
    elif suffix == ".parquet":
        pytest.importorskip("pyarrow")
        df.columns = df.columns.astype(str)
        df.to_parquet(path)
    else:
        with open(path, "wb") as f:
            pickle.dump({g: v for g, v in zip(table.genes, table.matrix, strict=True)}, f)
    back = read_gene_embeddings(path, allow_pickle=suffix == ".pickle")
    assert list(back.genes) == ["A", "B", "C"]
    np.testing.assert_allclose(back.matrix, table.matrix, rtol=1e-6)


def test_pickle_needs_explicit_opt_in(tmp_path, table):
    path = tmp_path / "emb.pickle"
    with open(path, "wb") as f:
        pickle.dump({"A": [1.0]}, f)
    with pytest.raises(ValueError, match="allow_pickle=True"):
        read_gene_embeddings(path)


def test_unknown_suffix_and_missing(tmp_path):
    (tmp_path / "x.xyz").write_text("hi")
    with pytest.raises(ValueError, match="unknown gene embedding file type"):
        read_gene_embeddings(tmp_path / "x.xyz")
    with pytest.raises(FileNotFoundError):
        read_gene_embeddings(tmp_path / "missing.npz")


def test_coercion():
    df = pd.DataFrame([[1.0, 2.0]], index=["G"])
    assert as_gene_embeddings(df).genes.tolist() == ["G"]
    with pytest.raises(TypeError, match="cannot use a int"):
        as_gene_embeddings(3)
    with pytest.raises(ValueError, match="non-numeric"):
        as_gene_embeddings(pd.DataFrame({"a": ["x"]}, index=["G"]))
