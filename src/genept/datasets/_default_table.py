"""The shipped default gene-embedding table (issue 16): every human gene of the gene cards, embedded once by ``scripts/build_default_embeddings.py`` and stored in the package as int8 codes with a float32 scale per row (``row = codes[i] * scale[i]``).

The codes are memory-mapped, so looking up the genes of a dataset reads only their rows;
the content hash (codes + scales) and the shapes are checked against the table's metadata
once per session. The text and model of the table are chosen by measurement in
``benchmarks/default_gene_embeddings.py`` (see ``docs/embeddings.md``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_SPEC",
    "DefaultTable",
    "DefaultTableError",
    "default_table",
    "load_table",
    "write_table",
]

#: what the shipped table holds (the build script writes these into its metadata)
DEFAULT_SPEC = {
    "name": "lsa_card_nosym_384",
    "model": "lsa",
    "model_long": "TF-IDF + truncated SVD (LSA), 384 components, fitted on all human gene cards",
    "text": "card_nosym",
    "text_version": "card_nosym-1 (gene_cards_human: NCBI Gene 2022-09-12, GO 2022-07-01)",
    "dim": 384,
}
STEM = "default_gene_embeddings"
REBUILD = (
    "rebuild it with `python scripts/build_default_embeddings.py` from a source checkout, or "
    "reinstall genept (`pip install --force-reinstall genept`)"
)


class DefaultTableError(ValueError):
    """The shipped default table is missing, corrupted or does not match its metadata."""


def content_sha256(codes: np.ndarray, scale: np.ndarray) -> str:
    """sha256 of the int8 codes' bytes followed by the float32 scales' bytes."""
    h = hashlib.sha256(np.ascontiguousarray(codes, dtype=np.int8).data)
    h.update(np.ascontiguousarray(scale, dtype=np.float32).data)
    return h.hexdigest()


def genes_sha256(genes) -> str:
    """sha256 of the gene symbols, one per line (UTF-8)."""
    return hashlib.sha256(("\n".join(map(str, genes)) + "\n").encode("utf-8")).hexdigest()


@dataclass
class DefaultTable:
    """A verified table: ``genes`` (symbols, row order), memory-mapped ``codes``, ``scale``."""

    folder: Path
    genes: pd.Index
    codes: np.ndarray
    scale: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.codes.shape[1])

    def rows(self, genes) -> tuple[np.ndarray, np.ndarray]:
        """``(found, matrix)``: a mask of the ``genes`` in the table and their float32 rows (zero rows for genes not found), decoded as ``codes * scale`` (and scaled to unit length when the metadata says ``normalise_rows``)."""
        pos = self.genes.get_indexer(pd.Index(genes))
        found = pos >= 0
        out = np.zeros((len(pos), self.dim), dtype=np.float32)
        if found.any():
            take = pos[found]
            order = np.argsort(take, kind="stable")  # ascending reads from the memory map
            rows = np.empty((len(take), self.dim), dtype=np.float32)
            rows[order] = self.codes[take[order]].astype(np.float32)
            rows *= self.scale[take][:, None]
            if self.meta.get("normalise_rows"):
                norm = np.sqrt(np.einsum("ij,ij->i", rows, rows))
                rows /= np.where(norm > 0, norm, np.float32(1.0))[:, None]
            out[found] = rows
        return found, out

    def encoder(self):
        """A :class:`~genept.encoders.TextEncoder` projecting texts into this table (LSA fold-in).

        Used for genes missing from the table; cached under the table's hash.
        """
        from ._lsa import lsa_encoder

        return lsa_encoder(self)


def quantise(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes and float32 per-row scales: ``codes * scale`` approximates ``m`` (``scale = max|row| / 127``; an all-zero row gets scale 0)."""
    m = np.asarray(m, dtype=np.float32)
    scale = (np.abs(m).max(axis=1) / 127.0).astype(np.float32)
    safe = np.where(scale > 0, scale, 1.0).astype(np.float32)
    codes = np.clip(np.rint(m / safe[:, None]), -127, 127).astype(np.int8)
    return codes, scale


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_table(
    folder: str | os.PathLike, genes, matrix: np.ndarray, meta: dict | None = None
) -> dict:
    """Quantise ``matrix`` (row ``i`` for ``genes[i]``) and write a table into ``folder``: ``<stem>.npy`` (int8 codes), ``<stem>_scale.npy``, ``<stem>_genes.txt.gz`` and the metadata ``<stem>.json`` (written last, each file atomically). Returns the metadata."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    genes = [str(g) for g in genes]
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim != 2 or len(matrix) != len(genes):
        raise ValueError(f"matrix of shape {matrix.shape} for {len(genes)} genes")
    if len(set(genes)) != len(genes) or any("\n" in g for g in genes):
        raise ValueError("gene symbols must be unique and hold no newline")
    codes, scale = quantise(matrix)
    dec = codes.astype(np.float32) * scale[:, None]
    num = (dec * matrix).sum(1)
    den = np.linalg.norm(dec, axis=1) * np.linalg.norm(matrix, axis=1)
    cos = np.where(den > 0, num / np.where(den > 0, den, 1.0), 1.0)
    names = {"codes": f"{STEM}.npy", "scale": f"{STEM}_scale.npy", "genes": f"{STEM}_genes.txt.gz"}
    meta = {
        **(meta or {}),
        "n_genes": len(genes),
        "dim": int(matrix.shape[1]),
        "dtype": "int8",
        "quantisation": "codes = round(row / scale), scale = max|row| / 127 (float32)",
        "int8_cosine_min": float(cos.min()) if len(cos) else 1.0,
        "sha256": content_sha256(codes, scale),
        "genes_sha256": genes_sha256(genes),
        "files": names,
    }

    def save(arr):
        def write(p):
            with open(p, "wb") as fh:
                np.save(fh, arr)

        return write

    def write_genes(p):
        with (
            open(p, "wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as fh,
        ):
            fh.write(("\n".join(genes) + "\n").encode("utf-8"))

    _write_atomic(folder / names["codes"], save(codes))
    _write_atomic(folder / names["scale"], save(scale))
    _write_atomic(folder / names["genes"], write_genes)
    _write_atomic(
        folder / f"{STEM}.json", lambda p: Path(p).write_text(json.dumps(meta, indent=1) + "\n")
    )
    return meta


def _folder() -> Path:
    return Path(str(files(__package__).joinpath("_data")))


def _fail(path: Path, problem: str) -> DefaultTableError:
    return DefaultTableError(f"the default gene-embedding table {path} {problem}; {REBUILD}")


def load_table(folder: str | os.PathLike | None = None, *, verify: bool = True) -> DefaultTable:
    """Open (and check) the table in ``folder`` (default: the package's ``_data``).

    Raises :class:`DefaultTableError` naming the file when a file is missing or unreadable,
    a shape differs from the metadata, or the content hash does not match.
    """
    folder = _folder() if folder is None else Path(folder)
    meta_path = folder / f"{STEM}.json"
    if not meta_path.exists():
        raise _fail(meta_path, "is missing")
    try:
        meta = json.loads(meta_path.read_text())
        n, dim = int(meta["n_genes"]), int(meta["dim"])
        names = meta["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise _fail(meta_path, f"is not valid metadata ({e!r})") from None
    paths = {k: folder / names[k] for k in ("codes", "scale", "genes")}
    for p in paths.values():
        if not p.exists():
            raise _fail(p, "is missing")
    try:
        codes = np.load(paths["codes"], mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise _fail(paths["codes"], f"cannot be read ({e})") from None
    try:
        scale = np.load(paths["scale"], allow_pickle=False)
    except (ValueError, OSError) as e:
        raise _fail(paths["scale"], f"cannot be read ({e})") from None
    try:
        with gzip.open(paths["genes"], "rt", encoding="utf-8") as fh:
            genes = fh.read().rstrip("\n").split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise _fail(paths["genes"], f"cannot be read ({e})") from None
    if codes.dtype != np.int8 or codes.shape != (n, dim):
        raise _fail(
            paths["codes"],
            f"holds {codes.dtype} {codes.shape}, the metadata says int8 ({n}, {dim})",
        )
    if scale.dtype != np.float32 or scale.shape != (n,):
        raise _fail(
            paths["scale"], f"holds {scale.dtype} {scale.shape}, the metadata says float32 ({n},)"
        )
    if len(genes) != n:
        raise _fail(paths["genes"], f"lists {len(genes)} genes, the metadata says {n}")
    if verify:
        if content_sha256(codes, scale) != meta.get("sha256"):
            raise _fail(
                paths["codes"],
                f"(with {paths['scale'].name}) does not match the sha256 of {meta_path.name}",
            )
        if genes_sha256(genes) != meta.get("genes_sha256"):
            raise _fail(paths["genes"], f"does not match the genes_sha256 of {meta_path.name}")
    index = pd.Index(genes, dtype=object)
    if index.has_duplicates:
        raise _fail(paths["genes"], "lists a gene twice")
    return DefaultTable(folder, index, codes, scale, meta)


@lru_cache(maxsize=1)
def default_table() -> DefaultTable:
    """The gene embedding table shipped with genept, opened and verified once per session.

    TF-IDF + truncated SVD (LSA, 384 components) of the gene cards without symbol and
    aliases (``text_level="card_nosym"``), stored as int8 codes with a scale per row and
    checked against the sha256 of its metadata. :func:`genept.tl.embed_genes` uses it by
    default; see ``docs/embeddings.md`` for how it was chosen.

    Returns
    -------
    The table: ``genes`` (symbols), ``dim``, ``meta`` and ``rows(genes)`` (a mask of the
    genes found and their float32 vectors).

    Examples
    --------
    >>> import genept as gpt
    >>> table = gpt.datasets.default_table()
    >>> found, vectors = table.rows(["CD3E", "NOT_A_GENE"])
    >>> found.tolist(), vectors.shape[1] == table.dim
    ([True, False], True)
    """
    return load_table()
