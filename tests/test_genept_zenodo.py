"""The GenePT Zenodo loader on a small archive made here, served locally."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genept.datasets._genept_zenodo import ZIP_NAME, genept_embeddings, ncbi_summaries

ADA = "GenePT_gene_embedding_ada_text.pickle"
LARGE = "GenePT_gene_protein_embedding_model_3_text.pickle."  # trailing dot, as on Zenodo
NCBI = "NCBI_summary_of_genes.json"
UNIPROT = "NCBI_UniProt_summary_of_genes.json"
GENES = [f"GENE{i}" for i in range(50)]


def _data():
    rng = np.random.default_rng(0)
    # lists of Python floats (as the OpenAI client returns them) and numpy arrays
    ada = {g: rng.standard_normal(8).tolist() for g in GENES}
    large = {g: rng.standard_normal(12) for g in GENES[:40]}
    ncbi = {g: f"Gene Symbol {g} This gene encodes protein {i}." for i, g in enumerate(GENES)}
    uniprot = {g: s + " UniProt: a protein. é" for g, s in ncbi.items()}
    return ada, large, ncbi, uniprot


def make_zip(path: Path, *, folder: bool = True, ada=None) -> Path:
    a, large, ncbi, uniprot = _data()
    prefix = "GenePT_emebdding_v2/" if folder else ""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        if folder:
            zf.writestr(prefix, "")
        zf.writestr(prefix + ADA, pickle.dumps(a if ada is None else ada))
        zf.writestr(prefix + LARGE, pickle.dumps(large, protocol=2))
        zf.writestr(prefix + NCBI, json.dumps(ncbi))
        zf.writestr(prefix + UNIPROT, json.dumps(uniprot))
    return path


def md5(path: Path) -> str:
    return "md5:" + hashlib.md5(path.read_bytes()).hexdigest()


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def assert_table(emb, expected: dict, dim: int):
    assert emb.genes.tolist() == list(expected)
    assert emb.matrix.dtype == np.float32 and emb.matrix.shape == (len(expected), dim)
    want = np.stack([np.asarray(v, dtype=np.float32) for v in expected.values()])
    np.testing.assert_array_equal(np.asarray(emb.matrix), want)


class ZipServer:
    """Serves one file over HTTP on 127.0.0.1 and counts the downloads."""

    def __init__(self, payload: bytes):
        self.payload = payload
        self.hits = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if not self.path.startswith(f"/records/1/files/{ZIP_NAME}"):
                    self.send_error(404)
                    return
                server.hits += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(server.payload)))
                self.end_headers()
                self.wfile.write(server.payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{port}/records/1/files/{ZIP_NAME}?download=1"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.lower(), raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def archive(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    return make_zip(src / ZIP_NAME)


@pytest.fixture
def served(archive):
    srv = ZipServer(archive.read_bytes())
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()
        srv.thread.join(timeout=10)


def _forbid_zip(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the archive was opened")

    monkeypatch.setattr(zipfile, "ZipFile", refuse)


@pytest.mark.parametrize("as_url", [False, True])
@pytest.mark.parametrize("folder", [True, False])
def test_local_archive(tmp_path, monkeypatch, as_url, folder):
    src = tmp_path / "src"
    src.mkdir()
    zpath = make_zip(src / ZIP_NAME, folder=folder)
    url = zpath.as_uri() if as_url else str(zpath)
    h = md5(zpath)
    cache = tmp_path / "cache"
    ada, large, *_ = _data()
    emb = genept_embeddings("ada-002", url=url, known_hash=h, cache_dir=cache, progress=False)
    assert_table(emb, ada, 8)
    assert (emb.source, emb.model, emb.text_level) == (
        "genept",
        "text-embedding-ada-002",
        "summary",
    )
    emb3 = genept_embeddings("3-large", url=url, known_hash=h, cache_dir=cache, progress=False)
    assert_table(emb3, large, 12)
    assert emb3.model == "text-embedding-3-large"
    # nothing extracted next to the archive, no copy of a local archive in the cache
    assert files_in(src) == [ZIP_NAME]
    assert not any(f.endswith((".zip", ".pickle", ".pickle.")) for f in files_in(cache))
    # later calls read the converted files only
    zpath.unlink()
    _forbid_zip(monkeypatch)
    assert_table(genept_embeddings("ada-002", url=url, known_hash=h, cache_dir=cache), ada, 8)
    assert_table(genept_embeddings("3-large", url=url, known_hash=h, cache_dir=cache), large, 12)


def test_http_download_once(tmp_path, served, monkeypatch):
    cache = tmp_path / "cache"
    ada, large, ncbi, uniprot = _data()
    kw = {"url": served.url, "known_hash": md5(tmp_path / "src" / ZIP_NAME), "cache_dir": cache}
    emb = genept_embeddings("ada-002", progress=False, **kw)
    assert served.hits == 1
    assert_table(emb, ada, 8)
    assert emb.meta["url"] == served.url
    # the other members come from the archive already downloaded
    assert_table(genept_embeddings("3-large", progress=False, **kw), large, 12)
    assert ncbi_summaries("ncbi", progress=False, **kw) == ncbi
    assert served.hits == 1
    # converted files only: no download, no archive opened
    for f in cache.glob("*.zip"):
        f.unlink()
    _forbid_zip(monkeypatch)
    assert_table(genept_embeddings("ada-002", **kw), ada, 8)
    assert ncbi_summaries("ncbi", **kw) == ncbi
    assert served.hits == 1
    # a member not converted yet needs the archive again: one more download
    monkeypatch.undo()
    assert ncbi_summaries("ncbi_uniprot", progress=False, **kw) == uniprot
    assert served.hits == 2


def test_converted_matrix_is_memory_mapped(tmp_path, archive):
    kw = {"url": str(archive), "known_hash": md5(archive), "cache_dir": tmp_path / "c"}
    genept_embeddings(**kw)
    emb = genept_embeddings(**kw)
    assert isinstance(emb.matrix, np.memmap) or isinstance(emb.matrix.base, np.memmap)
    assert not emb.matrix.flags.writeable


def test_bad_hash_download_is_removed(tmp_path, served):
    cache = tmp_path / "cache"
    wrong = "md5:" + "0" * 32
    with pytest.raises(ValueError, match=r"failed its hash check.*removed.*retry or check the url"):
        genept_embeddings(url=served.url, known_hash=wrong, cache_dir=cache, progress=False)
    assert served.hits == 1
    assert files_in(cache) == []


def test_corrupted_download_is_removed(tmp_path, served):
    good = md5(tmp_path / "src" / ZIP_NAME)
    served.payload = served.payload[:-100] + b"x" * 100  # corrupted in transit
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="failed its hash check"):
        genept_embeddings(url=served.url, known_hash=good, cache_dir=cache, progress=False)
    assert files_in(cache) == []


def test_bad_hash_local_file_is_kept(tmp_path, archive):
    with pytest.raises(ValueError, match="failed its hash check"):
        genept_embeddings(url=str(archive), known_hash="md5:" + "0" * 32, cache_dir=tmp_path / "c")
    assert archive.exists()


def test_http_error_is_clear(tmp_path, served):
    url = served.url.replace(ZIP_NAME, "nothing.zip")
    with pytest.raises(OSError, match="could not download"):
        genept_embeddings(url=url, cache_dir=tmp_path / "c", progress=False)


def test_ncbi_summaries(tmp_path, archive, monkeypatch):
    _, _, ncbi, uniprot = _data()
    kw = {"url": archive.as_uri(), "known_hash": md5(archive), "cache_dir": tmp_path / "c"}
    assert ncbi_summaries(**kw) == ncbi
    assert ncbi_summaries("ncbi_uniprot", **kw) == uniprot
    _forbid_zip(monkeypatch)
    assert ncbi_summaries("ncbi_uniprot", **kw) == uniprot
    with pytest.raises(ValueError, match="ncbi_uniprot"):
        ncbi_summaries("uniprot", **kw)


def test_unknown_model(tmp_path):
    with pytest.raises(ValueError, match=r"\['3-large', 'ada-002'\]"):
        genept_embeddings("gpt-4", cache_dir=tmp_path)


def test_full_model_names_accepted(tmp_path, archive):
    kw = {"url": str(archive), "known_hash": md5(archive), "cache_dir": tmp_path / "c"}
    assert genept_embeddings("text-embedding-3-large", **kw).dim == 12


def test_default_cache_dir_and_hash(tmp_path, archive, monkeypatch):
    from genept._settings import settings
    from genept.datasets import _genept_zenodo as z

    monkeypatch.setattr(settings, "cache_dir", tmp_path / "home")
    # the real archive's checksum is used when no url is given
    assert z._Source(None, None, None, False).known_hash == z.ZIP_HASH
    assert z._Source(None, None, None, False).url == z.ZIP_URL
    genept_embeddings(url=str(archive), known_hash=md5(archive))
    assert any(f.endswith(".npy") for f in files_in(tmp_path / "home" / "zenodo"))


def test_unverified_pickle_is_restricted(tmp_path):
    ada, *_ = _data()
    plain = make_zip(tmp_path / "plain.zip", ada={g: np.asarray(v) for g, v in ada.items()})
    emb = genept_embeddings(url=str(plain), cache_dir=tmp_path / "c")  # no known_hash
    assert_table(emb, ada, 8)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = make_zip(tmp_path / "evil.zip", ada={"A": Evil()})
    with pytest.raises(pickle.UnpicklingError, match="known_hash"):
        genept_embeddings(url=str(evil), cache_dir=tmp_path / "c2")


def test_non_finite_rows_dropped(tmp_path):
    ada, *_ = _data()
    ada["GENE3"] = [float("nan")] * 8
    zpath = make_zip(tmp_path / "nan.zip", ada=ada)
    emb = genept_embeddings(url=str(zpath), known_hash=md5(zpath), cache_dir=tmp_path / "c")
    assert "GENE3" not in emb.genes and len(emb) == 49


def test_missing_member_listed(tmp_path):
    zpath = tmp_path / "other.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match=r"readme\.txt"):
        genept_embeddings(url=str(zpath), cache_dir=tmp_path / "c")


def test_embed_genes_from_genept_sources(served, archive, monkeypatch):
    """gpt.tl.embed_genes(source="genept" / "ncbi") end to end, the zip served on 127.0.0.1."""
    import anndata as ad

    import genept as gpt
    from genept.datasets import _genept_zenodo as z
    from genept.encoders import TextEncoder

    monkeypatch.setattr(z, "ZIP_URL", served.url)
    monkeypatch.setattr(z, "ZIP_HASH", md5(archive))
    adata = ad.AnnData(
        np.ones((2, 3), dtype=np.float32), var=pd.DataFrame(index=["GENE1", "gene2", "NOPE"])
    )
    gpt.tl.embed_genes(adata, source="genept")
    ada = _data()[0]
    np.testing.assert_array_equal(adata.varm["X_genept"][0], np.float32(ada["GENE1"]))
    np.testing.assert_array_equal(adata.varm["X_genept"][1], np.float32(ada["GENE2"]))
    assert not adata.varm["X_genept"][2].any()
    p = adata.uns["genept"]["params"]
    assert (p["source"], p["model"], p["dim"]) == ("genept", "text-embedding-ada-002", 8)
    gpt.tl.embed_genes(adata, source="genept", model="3-large", key_added="X_large")
    assert adata.varm["X_large"].shape == (3, 12)

    class Echo(TextEncoder):
        cache_id = "echo:v1"
        dim = 1

        def __init__(self):
            self.seen = []

        def _encode(self, texts):
            self.seen += texts
            return np.ones((len(texts), 1), dtype=np.float32)

    enc = Echo()
    gpt.tl.embed_genes(adata, source="ncbi", model=enc, text_level="summary", key_added="X_n")
    assert sorted(enc.seen) == [
        "Gene GENE1. Gene Symbol GENE1 This gene encodes protein 1.",
        "Gene GENE2. Gene Symbol GENE2 This gene encodes protein 2.",
    ]
