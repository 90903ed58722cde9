"""Build genept's shipped default gene-embedding table (issue 16).

The default (chosen in ``benchmarks/default_gene_embeddings.py``, see ``docs/embeddings.md``)
is TF-IDF + truncated SVD (LSA, 384 components) of the gene card without symbol and aliases
(``card_nosym``), fitted on every human gene of the shipped gene cards. It needs no GPU and no
neural model (about a minute on one CPU core):

    python scripts/build_default_embeddings.py

writes into ``src/genept/datasets/_data/`` (see :mod:`genept.datasets._default_table`):
``default_gene_embeddings.npy`` (int8 codes, memory-mappable), ``..._scale.npy`` (float32
per-row scales), ``..._genes.txt.gz`` (symbols in row order) and ``...json`` (name, model,
text version, dims, sha256 of codes + scales, of the genes and of the texts). The rows are
the SVD scores before normalisation (``normalise_rows``: lookups scale them to unit length),
so a gene missing from the table can be projected later (:class:`genept.datasets._lsa.LsaProjector`).

Tables for the fetched registry (``genept.datasets._table_registry``), from the GPU encodings
of ``scripts/encode_cards_gpu.py``::

    python scripts/build_default_embeddings.py --archive minilm_card minilm_nosym --out _work/tables
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "src" / "genept" / "datasets" / "_data"
STEM = "default_gene_embeddings"


# ---------------------------------------------------------------- TF-IDF + SVD (LSA)
def fit_lsa(texts: list[str], dim: int, *, seed: int = 0, normalise: bool = True):
    """TF-IDF (sublinear tf, English stop words, unigrams + bigrams in >= 2 texts) and
    truncated SVD to ``dim`` (the package's :func:`genept.datasets._lsa.fit_lsa`);
    returns the (L2-normalised) float32 matrix and ``None``."""
    from genept.datasets._lsa import fit_lsa as _fit
    from genept.datasets._lsa import unit_rows

    Y = _fit(texts, dim, seed=seed)
    return (unit_rows(Y) if normalise else Y), None


def transform_lsa(model, texts: list[str]) -> np.ndarray:
    """Project ``texts`` with an :class:`~genept.datasets._lsa.LsaProjector`."""
    return model.transform(texts)


def _enc_module():
    spec = importlib.util.spec_from_file_location(
        "encode_cards_gpu", ROOT / "scripts" / "encode_cards_gpu.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def card_nosym_texts():
    """The symbols of the shipped cards (as ``embed_genes``) and their ``card_nosym`` texts."""
    from genept._gene_sources import _cards
    from genept.datasets._card_variants import card_nosym_text

    cards = _cards()
    genes = [str(g) for g in cards.index]
    texts = card_nosym_text(cards, genes)
    if texts.isna().any():
        raise SystemExit(f"{int(texts.isna().sum())} genes have no card_nosym text")
    return genes, [t.replace("\n", " ") for t in texts]


def build_default(out: Path, seed: int = 0) -> dict:
    from genept.datasets._default_table import DEFAULT_SPEC, write_table
    from genept.datasets._lsa import LSA_PARAMS, LsaProjector, unit_rows
    from genept.datasets._lsa import fit_lsa as _fit

    t0 = time.perf_counter()
    genes, texts = card_nosym_texts()
    t1 = time.perf_counter()
    Y = _fit(texts, DEFAULT_SPEC["dim"], seed=seed)
    t2 = time.perf_counter()
    text_sha = hashlib.sha256(("\n".join(texts) + "\n").encode("utf-8")).hexdigest()
    meta = {
        **DEFAULT_SPEC,
        "lsa": LSA_PARAMS,
        "normalise_rows": True,
        "text_sha256": text_sha,
        "fit_seconds": round(t2 - t1, 1),
    }
    meta = write_table(out, genes, Y, meta)
    # check: the projector (components recovered from the table) reproduces table rows
    from genept.datasets._default_table import load_table

    table = load_table(out)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(genes), size=min(500, len(genes)), replace=False))
    dec = table.codes[pick].astype(np.float32) * table.scale[pick][:, None]
    proj = LsaProjector(texts, np.asarray(table.codes, dtype=np.float32) * table.scale[:, None])
    got = proj.transform([texts[i] for i in pick])
    cos = (got * unit_rows(dec)).sum(1)
    print(
        f"texts {t1 - t0:.0f} s, LSA fit {t2 - t1:.0f} s; projector vs table rows: cosine min "
        f"{cos.min():.5f}, median {np.median(cos):.5f} on {len(pick)} genes"
    )
    return meta


def build_archive(name: str, gpu: Path, cards: Path, out: Path) -> str:
    from genept.datasets._table_registry import write_archive

    variant = {"minilm_card": "card", "minilm_nosym": "card_nosym"}[name]
    enc = _enc_module()
    genes, M = enc.load_embeddings(gpu, variant, cards=cards)
    manifest = json.loads((Path(gpu) / "manifest.json").read_text())
    meta = {
        "name": name,
        "model": manifest["model"],
        "text": variant,
        "text_sha256": manifest["inputs"][f"{variant}.txt.gz"],
        "encoder": {k: manifest[k] for k in ("dtype", "device", "max_tokens", "versions")},
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"genept_table_{name}_v1.npz"
    sha = write_archive(path, genes, M, meta)
    print(f"{name}: {path} {path.stat().st_size / 1e6:.1f} MB sha256 {sha}")
    return sha


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--gpu", default=str(ROOT / "_work" / "cards_gpu"), help="encode_cards_gpu.py output"
    )
    ap.add_argument(
        "--cards", default=str(ROOT / ".gpu_carry" / "cards"), help="prepare_card_texts.py output"
    )
    ap.add_argument(
        "--out", default=None, help=f"default {DATA} (tables) or _work/tables (archives)"
    )
    ap.add_argument(
        "--archive",
        nargs="*",
        default=None,
        choices=("minilm_card", "minilm_nosym"),
        help="write registry archives of these GPU tables instead of the default table",
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.archive:
        out = Path(args.out or ROOT / "_work" / "tables")
        for name in args.archive:
            build_archive(name, Path(args.gpu), Path(args.cards), out)
        return 0
    out = Path(args.out or DATA)
    meta = build_default(out, seed=args.seed)
    files = [*meta["files"].values(), "default_gene_embeddings.json"]
    sizes = {f: (out / f).stat().st_size for f in files}
    print(
        f"{meta['n_genes']} genes x {meta['dim']}; int8 cosine min {meta['int8_cosine_min']:.6f}; "
        f"{sum(sizes.values()) / 1e6:.1f} MB: {sizes}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
