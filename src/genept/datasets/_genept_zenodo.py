"""The precomputed GenePT gene embeddings and NCBI summaries (Zenodo record 10833191).

The record's archive ``GenePT_emebdding_v2.zip`` (574 MB) is fetched once with
:mod:`pooch` and checked against its MD5. Each member is converted once into a compact
form in the cache folder — a float32 ``.npy`` matrix (memory-mapped when read) plus
its gene index, or a plain JSON file — so later calls read those files in well under
a second and never open the archive again.

Chen & Zou, *GenePT: a simple but effective foundation model for genes and cells built
from ChatGPT*, bioRxiv (2023), doi:10.1101/2023.10.16.562533; data
doi:10.5281/zenodo.10833191.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

import numpy as np

from .._gene_embeddings import GeneEmbeddings
from .._settings import settings
from ._fetch import check_file, retrieve

__all__ = ["genept_embeddings", "ncbi_summaries"]

ZENODO_RECORD = "10833191"
ZENODO_DOI = "10.5281/zenodo.10833191"
ZIP_NAME = "GenePT_emebdding_v2.zip"  # sic: the record's spelling
ZIP_URL = f"https://zenodo.org/records/{ZENODO_RECORD}/files/{ZIP_NAME}?download=1"
ZIP_HASH = "md5:3f6ce4317e3a0091978ae5cb8fbf05a3"
ZIP_SIZE = 574_395_233

#: short name -> (archive member, OpenAI model that made the embeddings)
_MODELS = {
    "ada-002": ("GenePT_gene_embedding_ada_text.pickle", "text-embedding-ada-002"),
    # the trailing dot is part of the member's name in the archive
    "3-large": ("GenePT_gene_protein_embedding_model_3_text.pickle.", "text-embedding-3-large"),
}
_MODEL_ALIASES = {"ada": "ada-002", "text-embedding-ada-002": "ada-002",
                  "text-embedding-3-large": "3-large"}  # fmt: skip
#: kind -> archive member
_SUMMARIES = {
    "ncbi": "NCBI_summary_of_genes.json",
    "ncbi_uniprot": "NCBI_UniProt_summary_of_genes.json",
}


# -- public -------------------------------------------------------------------------


def genept_embeddings(
    model: str = "ada-002",
    *,
    url: str | None = None,
    known_hash: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> GeneEmbeddings:
    """GenePT's precomputed gene embeddings (embedded NCBI gene summaries).

    The first call downloads the Zenodo archive (574 MB, MD5-checked) and converts the
    embeddings into a float32 matrix in ``cache_dir``; later calls memory-map that
    matrix (read-only) without touching the archive.

    Parameters
    ----------
    model
        ``"ada-002"``: ``text-embedding-ada-002`` embeddings of the NCBI summaries
        (1536-d, GenePT's original release); ``"3-large"``: ``text-embedding-3-large``
        embeddings of NCBI + UniProt summaries (3072-d).
    url
        Where to get the archive instead of Zenodo: an ``http(s)://`` URL, or a local
        path / ``file://`` URL of an archive you downloaded yourself (used in place).
    known_hash
        Its checksum (``"md5:…"``, ``"sha256:…"``). Default: the Zenodo archive's MD5
        when ``url`` is not given, otherwise none (the pickle is then read with an
        unpickler that only builds plain numbers, lists and numpy arrays). Without it,
        the converted files of a local archive are keyed by its size, modification time
        and a hash of its first and last 64 KiB: a replaced archive is converted again.
    cache_dir
        Folder of the download and the converted files
        (default ``genept.settings.cache_dir / "zenodo"``).
    progress
        Show a download progress bar (default :attr:`genept.settings.progress`).

    Returns
    -------
    The gene table (``source="genept"``, ``text_level="summary"``).

    Examples
    --------
    >>> import genept as gpt
    >>> emb = gpt.datasets.genept_embeddings("ada-002")  # doctest: +SKIP
    >>> emb  # doctest: +SKIP
    GeneEmbeddings(93800 genes x 1536, source='genept', model='text-embedding-ada-002')
    """
    key = _MODEL_ALIASES.get(model, model)
    if key not in _MODELS:
        raise ValueError(
            f"unknown GenePT embedding model {model!r}; choose one of {sorted(_MODELS)} "
            "('ada-002': text-embedding-ada-002, '3-large': text-embedding-3-large)"
        )
    member, openai_model = _MODELS[key]
    src = _Source(url, known_hash, cache_dir, progress)
    stem = src.folder / f"genept_{key}_{src.tag}"
    meta = {"zenodo_doi": ZENODO_DOI, "member": member.rstrip("."), "url": src.url}
    loaded = _load_matrix(stem)
    if loaded is None:
        _convert_embeddings(src, member, stem)
        src.remove_stale(f"genept_{key}", stem)
        loaded = _load_matrix(stem)
        if loaded is None:  # pragma: no cover - we have just written the files
            raise RuntimeError(f"could not read the converted embeddings at {stem}.npy")
    genes, matrix = loaded
    kw = {"source": "genept", "model": openai_model, "text_level": "summary", "meta": meta}
    return _validated_table(genes, matrix, **kw)


def ncbi_summaries(
    kind: str = "ncbi",
    *,
    url: str | None = None,
    known_hash: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> dict[str, str]:
    """The gene summaries GenePT embedded, as ``{gene symbol: text}``.

    Parameters
    ----------
    kind
        ``"ncbi"``: the NCBI Gene summaries (behind ``"ada-002"``); ``"ncbi_uniprot"``:
        NCBI summaries joined with UniProt protein summaries (behind ``"3-large"``).
    url, known_hash, cache_dir, progress
        As in :func:`genept_embeddings` (the same archive).

    Examples
    --------
    >>> import genept as gpt
    >>> gpt.datasets.ncbi_summaries()["CD3E"][:40]  # doctest: +SKIP
    'Gene Symbol CD3E This gene encodes the C'
    """
    if kind not in _SUMMARIES:
        raise ValueError(f"unknown summary kind {kind!r}; choose one of {sorted(_SUMMARIES)}")
    member = _SUMMARIES[kind]
    src = _Source(url, known_hash, cache_dir, progress)
    path = src.folder / f"summaries_{kind}_{src.tag}.json"
    if not path.exists():
        with src.open_member(member) as f:
            data = json.load(io.TextIOWrapper(f, encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(
                f"{member} in {src.url} holds a {type(data).__name__}, not a dict gene -> text"
            )
        data = {str(k): v if isinstance(v, str) else str(v) for k, v in data.items()}
        _write_atomic(path, lambda f: f.write(json.dumps(data, ensure_ascii=False).encode()))
        src.remove_stale(f"summaries_{kind}", path)
        return data
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# -- the archive --------------------------------------------------------------------


class _Source:
    """Where the archive comes from, its checksum, and the folder for our files."""

    def __init__(self, url, known_hash, cache_dir, progress):
        default = url is None
        self.url = ZIP_URL if default else str(url)
        self.known_hash = ZIP_HASH if default and known_hash is None else known_hash
        base = settings.cache_dir / "zenodo" if cache_dir is None else cache_dir
        self.folder = Path(base).expanduser()
        self.progress = settings.progress if progress is None else bool(progress)
        # converted files are named after the archive they come from: its checksum, or
        # for an unchecked local file its path and content (a replaced zip is reconverted)
        ident = self.known_hash or self.url
        self.tag = hashlib.sha1(ident.encode()).hexdigest()[:10]
        self._stale_prefix: str | None = None
        if self.known_hash is None and self.local_path is not None:
            fp = _fingerprint(self.local_path)
            if fp is not None:
                self._stale_prefix = self.tag
                self.tag = f"{self.tag}-{fp}"
        self._zip: Path | None = None

    def remove_stale(self, prefix: str, keep: Path) -> None:
        """Remove files converted from earlier contents of the same local archive."""
        if self._stale_prefix is None:
            return
        for old in self.folder.glob(f"{prefix}_{self._stale_prefix}-*"):
            if not old.name.startswith(keep.name):
                try:
                    old.unlink()
                except OSError:  # pragma: no cover - in use elsewhere (Windows): harmless
                    pass

    @property
    def local_path(self) -> Path | None:
        """The archive as a local file given by the user (``file://`` or a path)."""
        if self.url.startswith("file://"):
            return Path(unquote(urlsplit(self.url).path))
        if "://" not in self.url and not self.url.startswith("doi:"):
            return Path(self.url).expanduser()
        return None

    def zip_path(self) -> Path:
        """The checked archive on disk (downloaded on first use)."""
        if self._zip is None:
            local = self.local_path
            self._zip = self._check_local(local) if local is not None else self._download()
        return self._zip

    def _check_local(self, path: Path) -> Path:
        if not path.is_file():
            raise FileNotFoundError(f"no GenePT archive at {path}")
        if self.known_hash is not None:
            check_file(path, self.known_hash, hint="download it again or check known_hash")
        return path

    def _download(self) -> Path:
        name = PurePosixPath(unquote(urlsplit(self.url).path)).name or ZIP_NAME
        if self.url != ZIP_URL:
            name = f"{self.tag}_{name}"
        return retrieve(
            self.url,
            known_hash=self.known_hash,
            fname=name,
            path=self.folder,
            progress=self.progress,
            hint="check the network, or download the GenePT archive yourself and pass "
            "url=<path of the .zip>",
        )

    def open_member(self, member: str):
        """A binary stream of ``member`` (found with or without the archive's folder)."""
        path = self.zip_path()
        try:
            zf = zipfile.ZipFile(path)
        except zipfile.BadZipFile as e:
            raise ValueError(f"{path} is not a zip archive; remove it and retry") from e
        names = [
            n for n in zf.namelist()
            if not n.startswith("__MACOSX/") and PurePosixPath(n).name == member
        ]  # fmt: skip
        if not names:
            listing = ", ".join(n for n in zf.namelist() if not n.endswith("/"))
            zf.close()
            raise ValueError(f"{path} has no member {member!r} (it holds: {listing})")
        raw = zf.open(min(names, key=len))
        return _ClosingReader(raw, zf)


def _fingerprint(path: Path, edge: int = 1 << 16) -> str | None:
    """Size, modification time and the first and last 64 KiB of a file (the end of a zip holds its directory with every member's CRC), hashed; ``None`` if it is not a file."""
    try:
        st = path.stat()
        if not path.is_file():
            return None
        h = hashlib.sha1(f"{st.st_size}:{st.st_mtime_ns}".encode())
        with open(path, "rb") as f:
            h.update(f.read(edge))
            if st.st_size > edge:
                f.seek(max(edge, st.st_size - edge))
                h.update(f.read(edge))
    except OSError:
        return None
    return h.hexdigest()[:10]


class _ClosingReader(io.BufferedReader):
    """A buffered stream of a zip member that also closes the archive."""

    def __init__(self, raw, zf: zipfile.ZipFile):
        super().__init__(raw, buffer_size=1 << 20)
        self._zf = zf

    def close(self):
        try:
            super().close()
        finally:
            self._zf.close()


class _PlainUnpickler(pickle.Unpickler):
    """Builds only numbers, strings, containers and numpy arrays (for unchecked files)."""

    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "scalar"),
            ("_codecs", "encode"),
            ("collections", "OrderedDict"),
        }
    )

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"the unverified pickle wants {module}.{name}, which genept does not load from a "
            "file without a known hash; pass known_hash=... for a file you trust"
        )


# -- conversion ---------------------------------------------------------------------


def _write_atomic(path: Path, write) -> None:
    """Write ``path`` through a temporary file in the same folder and rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _validated_table(genes: np.ndarray, matrix: np.ndarray, **kw) -> GeneEmbeddings:
    """A :class:`GeneEmbeddings` of files that were validated when converted.

    The full check (finite values, unique genes) reads the whole matrix, which would
    undo the memory map; it ran once, before the files were written. The table is
    built on one row (so every field gets its usual treatment) and then given the
    memory-mapped matrix.
    """
    table = GeneEmbeddings(genes[:1], np.zeros((1, matrix.shape[1]), np.float32), **kw)
    table.genes = genes
    table.matrix = matrix.view(np.ndarray)  # still backed by the memory map
    return table


def _load_matrix(stem: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """Converted ``(genes, matrix)`` at ``stem``, or ``None`` if absent or unusable."""
    mfile, gfile = stem.with_suffix(".npy"), stem.with_suffix(".genes.npy")
    if not (mfile.exists() and gfile.exists()):
        return None
    try:
        genes = np.load(gfile, allow_pickle=False)
        matrix = np.load(mfile, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if (
        matrix.ndim != 2
        or matrix.dtype != np.float32
        or genes.ndim != 1
        or genes.dtype.kind != "U"
        or matrix.shape[0] != genes.shape[0]
        or matrix.shape[0] == 0
    ):
        return None
    return genes, matrix


def _convert_embeddings(src: _Source, member: str, stem: Path) -> None:
    """Unpickle ``member`` and save it as ``stem.npy`` (float32) + ``stem.genes.npy``."""
    from scanpy import logging as logg

    start = logg.info(f"converting {member.rstrip('.')} to a float32 matrix")
    with src.open_member(member) as f:
        if src.known_hash is not None:
            obj = pickle.load(f)  # trusted: the archive's checksum was verified
        else:
            obj = _PlainUnpickler(f).load()
    genes, matrix = _to_matrix(obj, member)
    del obj
    ok = np.isfinite(matrix).all(axis=1)
    if not ok.all():
        logg.warning(
            f"{member.rstrip('.')}: dropped {int((~ok).sum())} gene(s) with NaN/inf "
            f"embeddings (first: {', '.join(genes[~ok][:5])})"
        )
        genes, matrix = genes[ok], matrix[ok]
    table = GeneEmbeddings(genes, matrix)  # all checks, once (unique genes…)
    # genes first: the matrix is the marker of a finished conversion
    _write_atomic(stem.with_suffix(".genes.npy"), lambda f: np.save(f, table.genes))
    _write_atomic(stem.with_suffix(".npy"), lambda f: np.save(f, table.matrix))
    logg.info(f"    saved {matrix.shape[0]} x {matrix.shape[1]} to {stem}.npy", time=start)


def _to_matrix(obj: Any, member: str) -> tuple[np.ndarray, np.ndarray]:
    """``{gene: vector}`` (or a DataFrame indexed by gene) as ``(genes, float32 matrix)``."""
    import pandas as pd

    if isinstance(obj, pd.DataFrame):
        return obj.index.astype(str).to_numpy(), obj.to_numpy(dtype=np.float32)
    if not isinstance(obj, dict) or not obj:
        raise ValueError(
            f"{member} holds a {type(obj).__name__}, not a non-empty dict gene -> vector"
        )
    keys = list(obj)
    dim = np.asarray(obj[keys[0]]).reshape(-1).shape[0]
    matrix = np.empty((len(keys), dim), dtype=np.float32)
    for i, k in enumerate(keys):
        v = np.asarray(obj.pop(k), dtype=np.float32).reshape(-1)  # free memory as we go
        if v.shape[0] != dim:
            raise ValueError(f"{member}: gene {k!r} has a {v.shape[0]}-d vector, others {dim}-d")
        matrix[i] = v
    genes = np.array([str(k) for k in keys])
    return genes, matrix
