"""Write the gene-card texts of every human gene for the GPU encoding run (issue 16).

Writes into ``.gpu_carry/cards/`` (git-ignored), one gzip text file per variant, one
text per line, in the same gene order, plus the symbols:

``genes.txt.gz``
    the symbols: every symbol of the shipped gene cards (``gene_cards("human")``),
    a duplicated symbol once (its first, better annotated row; as ``embed_genes``).
``card.txt.gz``
    today's default text: exactly what ``gpt.tl.embed_genes(adata)`` encodes with its
    defaults (``source="cards"``, ``text_level="card"``), taken from the same
    ``resolve_source`` code path.
``card_nosym.txt.gz``
    the same card without symbol and aliases
    (:func:`genept.datasets._card_variants.card_nosym_text`).
``texts_meta.json``
    genept version and commit, gene count, number of newlines replaced.

Newlines inside a text (there are none today) are replaced by spaces. The gzip files
carry no timestamp, so their sha256 only depends on the texts.

    python scripts/prepare_card_texts.py [--out .gpu_carry/cards]

Then ``scripts/encode_cards_gpu.py`` encodes them on the GPU machine. Note that
``benchmarks/gpu_prepare.sh`` starts with ``rm -rf .gpu_carry``: run it first (or only
its ``python`` part, which writes ``.gpu_carry/minilm``), then this script.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("card", "card_nosym")


def _write_lines(path: Path, lines: list[str]) -> str:
    """Write ``lines`` gzip-compressed (no timestamp); return the file's sha256."""
    data = ("\n".join(lines) + "\n").encode("utf-8")
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as fh,
    ):
        fh.write(data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def variant_texts(genes: pd.Index) -> dict[str, pd.Series]:
    """The texts of ``genes`` for every variant, indexed like ``genes``."""
    from genept._gene_sources import _cards, resolve_source
    from genept.datasets._card_variants import card_nosym_text

    src = resolve_source("cards", model=None, text_level="card")
    return {
        "card": src.texts_of(genes),
        "card_nosym": card_nosym_text(_cards(), genes),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / ".gpu_carry" / "cards"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import genept
    from genept._gene_sources import resolve_source

    genes = pd.Index(resolve_source("cards", model=None, text_level="card").genes)
    if genes.has_duplicates or genes.hasnans:
        raise RuntimeError("the gene-card symbols are not unique")
    texts = variant_texts(genes)
    meta = {"n_genes": len(genes), "variants": {}, "genept_version": genept.__version__}
    try:
        meta["genept_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        meta["genept_commit"] = None
    if any("\n" in g or "\r" in g for g in genes):
        raise RuntimeError("a gene symbol contains a newline")
    meta["genes_sha256"] = _write_lines(out / "genes.txt.gz", list(genes))
    for name in VARIANTS:
        series = texts[name]
        if not series.index.equals(genes):
            raise RuntimeError(f"{name}: texts are not in gene order")
        if series.isna().any() or (series.str.strip() == "").any():
            raise RuntimeError(f"{name}: {int(series.isna().sum())} genes have no text")
        n_nl = int(series.str.contains(r"[\r\n]", regex=True).sum())
        lines = series.str.replace(r"[\r\n]+", " ", regex=True).tolist()
        sha = _write_lines(out / f"{name}.txt.gz", lines)
        lengths = series.str.len()
        meta["variants"][name] = {
            "file": f"{name}.txt.gz",
            "sha256": sha,
            "newlines_replaced": n_nl,
            "chars_mean": round(float(lengths.mean()), 1),
            "chars_max": int(lengths.max()),
        }
        print(
            f"{name}: {len(lines)} texts, mean {lengths.mean():.0f} chars, "
            f"{n_nl} with newlines; example: {lines[genes.get_loc('TP53')][:110]!r}"
        )
    (out / "texts_meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    total = sum(p.stat().st_size for p in out.iterdir())
    print(f"{len(genes)} genes -> {out} ({total / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
