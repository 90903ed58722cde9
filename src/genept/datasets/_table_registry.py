"""Precomputed gene-embedding tables other than the shipped default, fetched on demand.

A registry maps a table name to its file and sha256. The file (a ``.npz`` holding
``codes`` int8, ``scale`` float32, ``genes`` and ``meta``, as written by
``scripts/build_default_embeddings.py --archive``) is downloaded once with :mod:`pooch`,
checked against the sha256 (a tampered or truncated download is refused and removed), and
unpacked into the cache as a memory-mappable table (:mod:`genept.datasets._default_table`),
renamed into place only when complete.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from .._settings import settings
from ._default_table import DefaultTable, DefaultTableError, load_table, write_table
from ._fetch import check_file, retrieve

__all__ = ["TABLES_URL_ENV", "TABLE_REGISTRY", "fetch_table"]

#: environment variable with the base URL (or folder) holding the registry's files
TABLES_URL_ENV = "GENEPT_TABLES_URL"

#: name -> file, sha256 of the file, what it holds. Built from the GPU encodings of
#: issue 16 (77,510 human genes, all-MiniLM-L6-v2 in fp16 on an H200, int8 + per-row
#: scale, cosine to fp32 >= 0.99993) by ``scripts/build_default_embeddings.py --archive``.
TABLE_REGISTRY: dict[str, dict] = {
    "minilm_card": {
        "file": "genept_table_minilm_card_v1.npz",
        "sha256": "9b80daf1c3f4d1f992e569d7a12c81a02f8e801c17e8cf4d84b7da65c66f6762",
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "text": "card",
    },
    "minilm_nosym": {
        "file": "genept_table_minilm_nosym_v1.npz",
        "sha256": "2a8bd354245c903c001f53cceacdf51c4bfacca2103c03e5229b17d49a787e55",
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "text": "card_nosym",
    },
}


def write_archive(
    path: str | os.PathLike, genes, matrix: np.ndarray, meta: dict | None = None
) -> str:
    """Write a table archive (``.npz``: int8 ``codes``, float32 ``scale``, ``genes``, JSON ``meta``) for the registry; returns its sha256."""
    import hashlib

    from ._default_table import content_sha256, genes_sha256, quantise

    genes = [str(g) for g in genes]
    codes, scale = quantise(matrix)
    meta = {
        **(meta or {}),
        "n_genes": len(genes),
        "dim": int(codes.shape[1]),
        "sha256": content_sha256(codes, scale),
        "genes_sha256": genes_sha256(genes),
    }
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                codes=codes,
                scale=scale,
                genes=np.asarray(genes, dtype=str),
                meta=np.asarray(json.dumps(meta)),
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _registry_entry(name: str, registry: dict | None) -> dict:
    reg = TABLE_REGISTRY if registry is None else registry
    if name not in reg:
        raise KeyError(f"no precomputed table {name!r}; available: {sorted(reg)}")
    entry = reg[name]
    if not {"file", "sha256"} <= set(entry):
        raise ValueError(f"registry entry {name!r} needs 'file' and 'sha256', got {sorted(entry)}")
    return entry


def _unpack(archive: Path, folder: Path, sha256: str) -> None:
    """Unpack a checked ``.npz`` into ``folder`` (through a temporary folder, renamed)."""
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with np.load(archive, allow_pickle=False) as z:
            missing = {"codes", "scale", "genes", "meta"} - set(z.files)
            if missing:
                raise DefaultTableError(
                    f"{archive} lacks {sorted(missing)}; it is not a genept table archive"
                )
            codes, scale = z["codes"], z["scale"]
            genes = [str(g) for g in z["genes"]]
            meta = json.loads(str(z["meta"]))
        if (
            codes.dtype != np.int8
            or scale.dtype != np.float32
            or codes.shape != (len(genes), codes.shape[1])
        ):
            raise DefaultTableError(
                f"{archive} holds codes {codes.dtype} {codes.shape}, scale {scale.dtype}"
            )
        M = codes.astype(np.float32) * scale[:, None]
        written = write_table(tmp, genes, M, {**meta, "archive_sha256": sha256})
        if written["sha256"] != meta.get("sha256", written["sha256"]):
            raise DefaultTableError(
                f"{archive}: the unpacked table does not match its own metadata"
            )
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch_table(
    name: str,
    *,
    url: str | None = None,
    registry: dict | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> DefaultTable:
    """A precomputed gene-embedding table of the registry, downloaded and checked once.

    Parameters
    ----------
    name
        Table name (see ``TABLE_REGISTRY``), e.g. ``"minilm_card"``.
    url
        Base URL (``http(s)://...``) or local folder holding the registry's files; default
        the environment variable ``GENEPT_TABLES_URL``.
    registry
        ``{name: {"file": ..., "sha256": ...}}`` instead of the built-in registry.
    cache_dir
        Folder for downloads and unpacked tables (default ``settings.cache_dir / "tables"``).
    progress
        Download progress bar (default ``genept.settings.progress``).

    Returns
    -------
    The verified :class:`~genept.datasets._default_table.DefaultTable` (memory-mapped).

    Examples
    --------
    >>> from genept.datasets._table_registry import fetch_table
    >>> table = fetch_table("minilm_card", url="https://example.org/tables/")  # doctest: +SKIP
    >>> found, rows = table.rows(["CD3E", "TP53"])  # doctest: +SKIP
    """
    entry = _registry_entry(name, registry)
    sha = str(entry["sha256"]).lower()
    base = Path(settings.cache_dir / "tables" if cache_dir is None else cache_dir).expanduser()
    folder = base / f"{name}-{sha[:16]}"
    if (folder / "default_gene_embeddings.json").exists():
        try:
            return load_table(folder)
        except DefaultTableError:  # damaged in the cache: fetch and unpack again
            shutil.rmtree(folder, ignore_errors=True)
    url = url if url is not None else os.environ.get(TABLES_URL_ENV)
    if not url:
        raise ValueError(
            f"no URL for the precomputed table {name!r} ({entry['file']}): pass url= or set "
            f"{TABLES_URL_ENV} to the base URL or folder holding it; or build it from a source "
            "checkout with `python scripts/build_default_embeddings.py --archive "
            f"{name}` (needs the GPU encodings)"
        )
    downloads = base / "downloads"
    if "://" not in url or url.startswith("file://"):  # a local folder: checked in place
        src = Path(url.removeprefix("file://")).expanduser() / entry["file"]
        if not src.is_file():
            raise FileNotFoundError(f"no file {src} for the precomputed table {name!r}")
        check_file(
            src, f"sha256:{sha}", error=DefaultTableError, hint="replace it with the published file"
        )
        _unpack(src, folder, sha)
        return load_table(folder)
    url = url.rstrip("/") + "/" + entry["file"]
    show = settings.progress if progress is None else bool(progress)
    path = retrieve(
        url,
        known_hash=f"sha256:{sha}",
        fname=entry["file"],
        path=downloads,
        progress=show,
        error=DefaultTableError,
    )
    try:
        _unpack(Path(path), folder, sha)
    finally:
        Path(path).unlink(missing_ok=True)  # the unpacked table is what is kept
    return load_table(folder)
