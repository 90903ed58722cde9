"""scripts/encode_cards_gpu.py: int8 quantisation, file splitting and the loader (issue 16).

The encoding itself needs the model (checked by hand on CPU with ``--limit``); these
tests cover the storage format the next stage reads, without torch.
"""

import gzip
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "encode_cards_gpu.py"


@pytest.fixture
def enc():
    spec = importlib.util.spec_from_file_location("encode_cards_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quantise_error_is_half_a_step(enc):
    rng = np.random.default_rng(1)
    m = rng.standard_normal((50, 24)).astype(np.float32)
    m[3] = 0.0  # an all-zero row stays zero, no division by zero
    codes, scale = enc.quantise(m)
    assert codes.dtype == np.int8 and scale.dtype == np.float32
    assert np.abs(codes).max() == 127
    dec = enc.dequantise(codes, scale)
    assert np.all(np.abs(dec - m) <= scale[:, None] / 2 + 1e-7)
    np.testing.assert_array_equal(dec[3], 0.0)
    np.testing.assert_allclose(scale[0], np.abs(m[0]).max() / 127, rtol=1e-6)


def test_split_files_and_load_back(enc, tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    n, dim = 100, 16
    m = rng.standard_normal((n, dim)).astype(np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    monkeypatch.setattr(enc, "MAX_FILE_BYTES", 1024 + 30 * dim)  # 30 rows per file
    out, cards = tmp_path / "out", tmp_path / "cards"
    out.mkdir(), cards.mkdir()
    genes = [f"G{i}" for i in range(n)]
    with gzip.open(cards / "genes.txt.gz", "wt") as fh:
        fh.write("\n".join(genes) + "\n")
    codes, scale, files = enc.write_codes(out, "card", m)
    assert files == [f"card_int8_{k}.npy" for k in range(4)]
    assert [len(np.load(out / f)) for f in files] == [30, 30, 30, 10]
    manifest = {
        "n_genes": n,
        "dim": dim,
        "inputs": {"genes.txt.gz": enc._sha256(cards / "genes.txt.gz")},
        "variants": {"card": {"files": files, "sha256_codes": enc._sha256_codes(codes, scale)}},
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    np.savez(out / "meta.npz", card_scale=scale)
    got_genes, got = enc.load_embeddings(out, "card", cards=cards)
    assert got_genes == genes
    assert got.dtype == np.float32 and got.shape == (n, dim)
    cos = (got * m).sum(1) / np.linalg.norm(got, axis=1)
    assert cos.min() > 0.999
    with pytest.raises(KeyError, match="card_nosym"):
        enc.load_embeddings(out, "card_nosym")
    # a changed code is refused
    part = np.load(out / files[1])
    part[0, 0] = -part[0, 0] if part[0, 0] else 1
    np.save(out / files[1], part)
    with pytest.raises(ValueError, match="sha256"):
        enc.load_embeddings(out, "card")
