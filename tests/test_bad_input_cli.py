"""Hostile input to the ``genept`` command (issue 14 #3, #14, #21).

* #3: an output is written to a temporary file beside the target and renamed, so an
  interrupted write never destroys the input, also when output == input and --backed.
* #14: bad paths and options end in one line on stderr with exit status 2, no traceback,
  and a missing output folder is reported before the work.
* #21: ``sc.pp.neighbors(use_rep="X_genept_w")`` works at 15,000 cells with the
  dependency versions genept allows.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest

from genept.cli import main


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def files(tmp_path):
    """A small valid input (with gene embeddings), and broken look-alikes."""
    rng = np.random.default_rng(0)
    a = ad.AnnData(np.log1p(rng.poisson(1.0, (30, 12)).astype(np.float32)),
                   obs=pd.DataFrame({"cell_type": rng.choice(["T", "B"], 30)},
                                    index=[f"c{i}" for i in range(30)]),
                   var=pd.DataFrame(index=[f"G{i}" for i in range(12)]))
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
    rc, err = _cli(["annotate", "in.h5ad", "out.h5ad", "--reference", bad, "--method", "knn",
                    "--use-rep", "X_pca"], capsys)
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
    rc, err = _cli(["embed-genes", "in.h5ad", "out.h5ad", "--source", "genept",
                    "--cache-dir", str(files / "cache")], capsys)
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
    argv = ["embed-cells", "in.h5ad", "in.h5ad", "--device", "cpu"] + (["--backed"] if backed else [])
    rc, err = _cli(argv, capsys)
    assert rc == 2 and "killed" in err
    assert _digest(files / "in.h5ad") == before
    assert [p.name for p in files.iterdir() if p.name.endswith(".tmp")] == []  # cleaned up


@pytest.mark.parametrize("backed", [False, True])
def test_output_equal_to_input_is_replaced_whole(files, monkeypatch, capsys, backed):
    """Output == input works: the file is replaced by the complete result."""
    monkeypatch.chdir(files)
    argv = ["embed-cells", "in.h5ad", "in.h5ad", "--device", "cpu"] + (["--backed"] if backed else [])
    rc, err = _cli(argv, capsys)
    assert rc == 0, err
    b = ad.read_h5ad(files / "in.h5ad")
    X, E = b.X, b.varm["X_genept"]
    ref = X @ E
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(b.obsm["X_genept_w"], ref, rtol=1e-4, atol=1e-5)


def test_interrupted_annotate_and_embed_genes_keep_the_input(files, monkeypatch, capsys):
    monkeypatch.chdir(files)
    before = _digest(files / "in.h5ad")
    _failing_write(monkeypatch)
    rc, _ = _cli(["annotate", "in.h5ad", "in.h5ad", "--reference", "in.h5ad", "--method", "knn",
                  "--use-rep", "X_pca", "--label-key", "cell_type"], capsys)
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
