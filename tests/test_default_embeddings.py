"""The shipped default gene-embedding table: format, checks, lookups (issue 16)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genept.datasets._default_table import (
    STEM,
    DefaultTableError,
    content_sha256,
    load_table,
    quantise,
    write_table,
)


def _table(tmp_path, n=50, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((n, dim)).astype(np.float32)
    M /= np.linalg.norm(M, axis=1, keepdims=True)
    genes = [f"G{i}" for i in range(n)]
    meta = write_table(tmp_path, genes, M, {"name": "test", "model": "m"})
    return genes, M, meta


def test_quantise_known_values():
    codes, scale = quantise(np.array([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0]], dtype=np.float32))
    assert scale[0] == np.float32(1.0 / 127) and scale[1] == 0
    assert codes[0].tolist() == [64, -127, 32]  # round(63.5) = 64 (half to even: 64)
    assert codes[1].tolist() == [0, 0, 0]


def test_roundtrip_rows_memory_mapped_and_exact(tmp_path):
    genes, M, meta = _table(tmp_path)
    t = load_table(tmp_path)
    assert isinstance(t.codes, np.memmap) and t.codes.dtype == np.int8
    assert t.dim == 16 and list(t.genes) == genes and meta["n_genes"] == 50
    want = ["G7", "NOPE", "G3", "G7"]
    found, rows = t.rows(want)
    assert found.tolist() == [True, False, True, True]
    codes, scale = quantise(M)
    ref = codes[[7, 3, 7]].astype(np.float32) * scale[[7, 3, 7]][:, None]
    assert np.array_equal(rows[found], ref)  # bitwise: codes * scale in float32
    assert not rows[1].any()
    cos = (rows[found] * M[[7, 3, 7]]).sum(1) / np.linalg.norm(rows[found], axis=1)
    assert cos.min() > 0.999
    # reproducible: a second lookup gives the same bytes
    assert np.array_equal(t.rows(want)[1], rows)


def test_no_temporary_files_left(tmp_path):
    _table(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{STEM}.npy", f"{STEM}_scale.npy", f"{STEM}_genes.txt.gz", f"{STEM}.json"]
    )


def test_corrupted_codes_named_with_rebuild_hint(tmp_path):
    _table(tmp_path)
    path = tmp_path / f"{STEM}.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # one flipped bit in the last code
    path.write_bytes(bytes(data))
    with pytest.raises(
        DefaultTableError, match=rf"{STEM}\.npy.*sha256.*build_default_embeddings\.py"
    ):
        load_table(tmp_path)
    load_table(tmp_path, verify=False)  # shapes still fine: only the hash catches it


def test_shape_mismatch_and_truncation(tmp_path):
    _table(tmp_path)
    np.save(tmp_path / f"{STEM}_scale.npy", np.ones(49, np.float32))
    with pytest.raises(DefaultTableError, match=r"_scale\.npy.*\(49,\).*\(50,\)"):
        load_table(tmp_path)
    _table(tmp_path)
    path = tmp_path / f"{STEM}.npy"
    path.write_bytes(path.read_bytes()[:-100])  # truncated file
    with pytest.raises(DefaultTableError, match=rf"{STEM}\.npy"):
        load_table(tmp_path)


def test_metadata_missing_or_lying(tmp_path):
    with pytest.raises(DefaultTableError, match=rf"{STEM}\.json is missing"):
        load_table(tmp_path)
    _table(tmp_path)
    meta = json.loads((tmp_path / f"{STEM}.json").read_text())
    meta["dim"] = 17
    (tmp_path / f"{STEM}.json").write_text(json.dumps(meta))
    with pytest.raises(DefaultTableError, match=r"\(50, 16\).*\(50, 17\)"):
        load_table(tmp_path)
    (tmp_path / f"{STEM}.json").write_text("{not json")
    with pytest.raises(DefaultTableError, match="not valid metadata"):
        load_table(tmp_path)
    _table(tmp_path)
    (tmp_path / f"{STEM}_genes.txt.gz").unlink()
    with pytest.raises(DefaultTableError, match=r"_genes\.txt\.gz is missing"):
        load_table(tmp_path)


def test_content_hash_covers_scales(tmp_path):
    codes = np.zeros((2, 3), np.int8)
    assert content_sha256(codes, np.array([1, 2], np.float32)) != content_sha256(
        codes, np.array([1, 3], np.float32)
    )


def test_write_table_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match="unique"):
        write_table(tmp_path, ["A", "A"], np.ones((2, 3)))
    with pytest.raises(ValueError, match="shape"):
        write_table(tmp_path, ["A"], np.ones((2, 3)))


# ---------------------------------------------------------------- fetched tables (pooch)
import threading  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402

from genept.datasets._table_registry import fetch_table, write_archive  # noqa: E402


class _Server:
    """Serves one payload at /tables/<name> on 127.0.0.1 and counts the downloads."""

    def __init__(self, name: str, payload: bytes):
        self.payload, self.hits = payload, 0
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path != f"/tables/{name}":
                    self.send_error(404)
                    return
                srv.hits += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(srv.payload)))
                self.end_headers()
                self.wfile.write(srv.payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/tables/"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def archive(tmp_path, monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    rng = np.random.default_rng(5)
    M = rng.standard_normal((30, 8)).astype(np.float32)
    genes = [f"G{i}" for i in range(30)]
    path = tmp_path / "src" / "t.npz"
    path.parent.mkdir()
    sha = write_archive(path, genes, M, {"model": "m", "text": "card"})
    return path, sha, genes, M


def test_fetch_from_loopback_server_once(tmp_path, archive):
    path, sha, _, M = archive
    srv = _Server("t.npz", path.read_bytes())
    try:
        reg = {"t": {"file": "t.npz", "sha256": sha}}
        table = fetch_table(
            "t", url=srv.url, registry=reg, cache_dir=tmp_path / "c", progress=False
        )
        found, rows = table.rows(["G3", "X"])
        codes, scale = quantise(M)
        assert found.tolist() == [True, False]
        assert np.array_equal(rows[0], codes[3].astype(np.float32) * scale[3])
        assert table.meta["model"] == "m" and table.meta["archive_sha256"] == sha
        again = fetch_table(
            "t", url=srv.url, registry=reg, cache_dir=tmp_path / "c", progress=False
        )
        assert srv.hits == 1 and np.array_equal(again.rows(["G3"])[1], rows[:1])
        # only the unpacked table stays in the cache: no download, no temporary folder
        left = sorted(p.name for p in (tmp_path / "c").rglob("*") if p.is_file())
        assert left == sorted(
            [f"{STEM}.npy", f"{STEM}_scale.npy", f"{STEM}_genes.txt.gz", f"{STEM}.json"]
        )
    finally:
        srv.close()


@pytest.mark.parametrize("damage", ["tampered", "truncated"])
def test_bad_download_refused_and_removed(tmp_path, archive, damage):
    path, sha, _, _ = archive
    data = bytearray(path.read_bytes())
    if damage == "tampered":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    srv = _Server("t.npz", bytes(data))
    try:
        reg = {"t": {"file": "t.npz", "sha256": sha}}
        with pytest.raises(DefaultTableError, match=r"sha256 check.*removed"):
            fetch_table("t", url=srv.url, registry=reg, cache_dir=tmp_path / "c", progress=False)
        assert [p for p in (tmp_path / "c").rglob("*") if p.is_file()] == []
    finally:
        srv.close()


def test_fetch_local_folder_and_errors(tmp_path, archive, monkeypatch):
    path, sha, genes, _ = archive
    reg = {"t": {"file": "t.npz", "sha256": sha}}
    table = fetch_table("t", url=str(path.parent), registry=reg, cache_dir=tmp_path / "c")
    assert list(table.genes) == genes
    monkeypatch.delenv("GENEPT_TABLES_URL", raising=False)
    with pytest.raises(ValueError, match="GENEPT_TABLES_URL"):
        fetch_table("t", registry=reg, cache_dir=tmp_path / "d")
    with pytest.raises(KeyError, match="available"):
        fetch_table("nope", registry=reg)
    bad = {"t": {"file": "t.npz", "sha256": "0" * 64}}
    with pytest.raises(DefaultTableError, match="left in place"):
        fetch_table("t", url=str(path.parent), registry=bad, cache_dir=tmp_path / "e")
    assert path.exists()


# ---------------------------------------------------------------- the LSA default's projector
def test_lsa_projector_recovers_the_fitted_space():
    from genept.datasets._lsa import LsaProjector, fit_lsa, unit_rows

    rng = np.random.default_rng(0)
    words = [f"term{i}" for i in range(60)]
    texts = [" ".join(rng.choice(words, size=12)) for _ in range(200)]
    Y = fit_lsa(texts, 8, seed=0)
    assert Y.shape == (200, 8) and Y.dtype == np.float32
    proj = LsaProjector(texts, Y)
    cos = (proj.transform(texts[:50]) * unit_rows(Y[:50])).sum(1)
    # same vectoriser, components recovered as diag(S^-2) Y.T X (exact for an exact SVD;
    # the randomized SVD of a flat-spectrum corpus is close)
    assert cos.min() > 0.99 and np.median(cos) > 0.999
    # quantised rows (as shipped) still recover the space
    codes, scale = quantise(Y)
    proj_q = LsaProjector(texts, codes.astype(np.float32) * scale[:, None])
    assert ((proj_q.transform(texts[:50]) * unit_rows(Y[:50])).sum(1)).min() > 0.98
    # a new text lands next to the text it copies
    new = proj.transform([texts[7]])
    assert int(np.argmax(unit_rows(Y) @ new[0])) == 7


def test_normalise_rows_in_lookup(tmp_path):
    M = np.array([[3.0, 4.0], [0.0, 2.0]], np.float32)
    write_table(tmp_path, ["A", "B"], M, {"normalise_rows": True})
    found, rows = load_table(tmp_path).rows(["B", "A"])
    assert found.all()
    np.testing.assert_allclose(rows, [[0.0, 1.0], [0.6, 0.8]], atol=1e-2)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-6)


def test_lsa_encoder_embeds_missing_genes_in_the_table_space(tmp_path):
    import hashlib

    from genept._cache import EmbeddingCache
    from genept._gene_sources import _cards
    from genept.datasets._card_variants import card_nosym_text
    from genept.datasets._lsa import fit_lsa, lsa_encoder, unit_rows

    genes = [str(g) for g in _cards().index[:400]]
    texts = list(card_nosym_text(_cards(), genes))
    Y = fit_lsa(texts, 16, seed=0)
    sha = hashlib.sha256(("\n".join(texts) + "\n").encode("utf-8")).hexdigest()
    write_table(tmp_path, genes, Y, {"normalise_rows": True, "text_sha256": sha})
    table = load_table(tmp_path)
    enc = lsa_encoder(table)
    assert enc.dim == 16 and enc.cache_id.startswith("genept-lsa:")
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    got = enc.encode(texts[:50], cache=cache, show_progress=False)
    _, rows = table.rows(genes[:50])
    cos = (got * rows).sum(1)
    assert np.median(cos) > 0.95  # fold-in of a table gene lands on its row
    assert cache.count(enc.cache_id) == len(set(texts[:50]))
    again = lsa_encoder(table).encode(texts[:50], cache=cache, show_progress=False)
    assert np.array_equal(again, got)  # from the cache, bitwise
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    assert unit_rows(np.zeros((1, 3))).sum() == 0


# ---------------------------------------------------------------- embed_genes with the defaults
from anndata import AnnData  # noqa: E402

import genept as gpt  # noqa: E402
from genept.encoders import TextEncoder  # noqa: E402


class _CountingEncoder(TextEncoder):
    cache_id = "test-counting"
    dim = 4

    def __init__(self):
        self.seen = []

    def _encode(self, texts):
        self.seen.extend(texts)
        return np.array([[len(t), t.count(" "), 1.0, 0.5] for t in texts], dtype=np.float32)


def _adata(names):
    X = np.abs(np.random.default_rng(0).standard_normal((4, len(names)))).astype(np.float32)
    return AnnData(X, var=pd.DataFrame(index=list(names)))


import pandas as pd  # noqa: E402


def test_default_is_the_shipped_table_bitwise(monkeypatch):
    from genept.datasets._default_table import default_table

    def no_encoder(*a, **k):
        raise AssertionError("the default must not load a text encoder")

    monkeypatch.setattr("genept.tl._embed_genes.get_encoder", no_encoder)
    names = ["CD3E", "MS4A1", "TP53", "cd3e", "NOT_A_GENE"]
    a = _adata(names)
    gpt.tl.embed_genes(a)
    p = a.uns["genept"]["params"]
    assert (p["model"], p["text_level"], p["dim"], p["source"]) == (
        "lsa",
        "card_nosym",
        384,
        "cards",
    )
    assert a.var["genept_has_embedding"].tolist() == [True, True, True, True, False]
    _, ref = default_table().rows(["CD3E", "MS4A1", "TP53", "CD3E"])
    assert np.array_equal(a.varm["X_genept"][:4], ref)  # the table's rows, bitwise
    assert not a.varm["X_genept"][4].any()
    b = _adata(names)
    gpt.tl.embed_genes(b, model="lsa", text_level="card_nosym")  # the same, by name
    assert np.array_equal(a.varm["X_genept"], b.varm["X_genept"])
    # biology, not spelling: CD3E is closer to CD3D/CD247 (TCR complex) than to CDK1
    _, M = default_table().rows(["CD3E", "CD3D", "CD247", "CDK1"])
    assert M[0] @ M[1] > M[0] @ M[3] and M[0] @ M[2] > M[0] @ M[3]


def test_old_default_and_other_levels_by_name():
    enc = _CountingEncoder()
    a = _adata(["CD3E", "MS4A1"])
    gpt.tl.embed_genes(a, model=enc)  # an encoder object: the card (genept 0.1's default text)
    assert a.uns["genept"]["params"]["text_level"] == "card"
    assert enc.seen[0].startswith("Gene CD3E (")
    enc = _CountingEncoder()
    gpt.tl.embed_genes(a, model=enc, text_level="card_nosym")
    assert a.uns["genept"]["params"]["text_level"] == "card_nosym"
    assert all("CD3E" not in t and "MS4A1" not in t for t in enc.seen)
    with pytest.raises(ValueError, match=r"model='lsa'.*shipped default table"):
        gpt.tl.embed_genes(a, source="name", model="lsa")
    with pytest.raises(ValueError, match=r"card_nosym.*only for source='cards'"):
        gpt.tl.embed_genes(
            a, source={"CD3E": "a text"}, model=_CountingEncoder(), text_level="card_nosym"
        )
    with pytest.raises(ValueError, match="text_level must be one of"):
        gpt.tl.embed_genes(a, text_level="cards")


def test_missing_genes_are_projected_and_cached(tmp_path, monkeypatch):
    import hashlib

    from genept._gene_sources import _cards
    from genept.datasets._card_variants import card_nosym_text
    from genept.datasets._lsa import fit_lsa

    genes = [str(g) for g in _cards().index[:300]] + ["CD3E", "CD3D"]
    texts = list(card_nosym_text(_cards(), genes))
    sha = hashlib.sha256(("\n".join(texts) + "\n").encode("utf-8")).hexdigest()
    write_table(
        tmp_path / "t",
        genes,
        fit_lsa(texts, 16, seed=0),
        {"normalise_rows": True, "text_sha256": sha},
    )
    small = load_table(tmp_path / "t")
    monkeypatch.setattr(gpt.datasets, "default_table", lambda: small)  # the public face
    warned = []
    monkeypatch.setattr("genept.tl._embed_genes.logg.warning", lambda m, *a, **k: warned.append(m))
    a = _adata(["CD3E", "MS4A1", "CD3D"])  # MS4A1 is not in the small table
    gpt.tl.embed_genes(a)
    assert a.var["genept_has_embedding"].all()
    assert any("1 genes are not in the shipped default table" in m for m in warned)
    M = a.varm["X_genept"]
    np.testing.assert_allclose(np.linalg.norm(M, axis=1), 1.0, rtol=1e-5)
    _, ref = small.rows(["CD3E", "CD3D"])
    assert np.array_equal(M[[0, 2]], ref)
    # the projected gene is cached: a second call does not build the projector again
    monkeypatch.setattr(
        "genept.datasets._lsa._projector",
        lambda t: (_ for _ in ()).throw(AssertionError("not cached")),
    )
    b = _adata(["CD3E", "MS4A1", "CD3D"])
    gpt.tl.embed_genes(b)
    assert np.array_equal(a.varm["X_genept"], b.varm["X_genept"])


def test_corrupted_shipped_table_error_names_file_and_rebuild(tmp_path, monkeypatch):
    from genept.datasets import _default_table

    _table(tmp_path)
    path = tmp_path / f"{STEM}_scale.npy"
    np.save(path, np.ones(50, np.float32))  # right shape, wrong content
    monkeypatch.setattr(_default_table, "_folder", lambda: tmp_path)
    _default_table.default_table.cache_clear()
    try:
        a = _adata(["CD3E"])
        with pytest.raises(
            DefaultTableError,
            match=r"default_gene_embeddings\.npy.*sha256.*build_default_embeddings",
        ):
            gpt.tl.embed_genes(a)
        assert "X_genept" not in a.varm and "genept" not in a.uns  # nothing half-written
    finally:
        _default_table.default_table.cache_clear()


def test_cost_estimate_logged_before_encoding_many_texts(monkeypatch):
    warned = []
    monkeypatch.setattr("genept.tl._embed_genes.logg.warning", lambda m, *a, **k: warned.append(m))
    cards = gpt.datasets.gene_cards()
    names = list(dict.fromkeys(cards.index[:400]))
    enc = _CountingEncoder()
    a = _adata(names)
    gpt.tl.embed_genes(a, model=enc, text_level="card")
    msg = [m for m in warned if m.startswith("encoding ")]
    assert len(msg) == 1 and f"encoding {len(set(enc.seen))} gene texts" in msg[0]
    assert "texts/s on the first" in msg[0] and "shipped default needs no encoding" in msg[0]
    assert len(enc.seen) == len(set(enc.seen))  # the timed first batch is not encoded twice
    warned.clear()
    gpt.tl.embed_genes(a, model=_CountingEncoder(), text_level="card")  # all cached: no estimate
    assert not [m for m in warned if m.startswith("encoding ")]
    warned.clear()
    gpt.tl.embed_genes(_adata(names[:50]), model=_CountingEncoder(), text_level="name")  # few texts
    assert not [m for m in warned if m.startswith("encoding ")]


def test_30k_genes_fast_and_reproducible():
    import time

    from genept.datasets._default_table import default_table

    table = default_table()
    names = list(
        table.genes[np.random.default_rng(0).choice(len(table.genes), 30_000, replace=False)]
    )
    a, b = _adata(names), _adata(names)
    gpt.tl.embed_genes(a)  # warm: cards, alias maps
    t = time.perf_counter()
    gpt.tl.embed_genes(b)
    dt = time.perf_counter() - t
    assert np.array_equal(a.varm["X_genept"], b.varm["X_genept"])
    assert b.var["genept_has_embedding"].all()
    assert dt < 20  # measured ~1 s on 2 busy cores; generous for loaded CI machines


def test_card_text_level_card_nosym_is_the_table_text():
    from genept.datasets._card_variants import card_nosym_text

    cards = gpt.datasets.gene_cards()
    genes = ["TP53", "CD3E", "NOT_A_GENE"]
    got = gpt.datasets.card_text(cards, genes, text_level="card_nosym")
    want = card_nosym_text(cards, genes)
    assert got.iloc[:2].tolist() == want.iloc[:2].tolist() and got.isna().tolist() == [
        False,
        False,
        True,
    ]
    assert got["TP53"].startswith("Gene tumor protein p53 is a protein-coding gene.")
    assert "TP53" not in got["TP53"] and "P53" not in got["TP53"].replace("p53", "")


def test_params_name_the_table():
    from genept.datasets._default_table import default_table

    a = _adata(["CD3E"])
    gpt.tl.embed_genes(a)
    sha = default_table().meta["sha256"][:16]
    assert a.uns["genept"]["params"]["table"] == f"lsa_card_nosym_384 sha256:{sha}"
