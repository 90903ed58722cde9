"""A table of gene embeddings: a float32 matrix and the gene symbols of its rows."""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._utils import is_text_column

__all__ = ["GeneEmbeddings", "checked_varm", "read_gene_embeddings"]


@dataclass
class GeneEmbeddings:
    """Gene embeddings: row ``i`` of :attr:`matrix` embeds gene :attr:`genes` ``[i]``.

    Parameters
    ----------
    genes
        Gene symbols (or ids), unique.
    matrix
        ``(n_genes, dim)`` float32, finite.
    source, model, text_level
        Provenance, recorded in ``uns`` when the table is used.
    """

    genes: np.ndarray
    matrix: np.ndarray
    source: str = "user"
    model: str | None = None
    text_level: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.genes = np.asarray(self.genes, dtype=object).astype(str)
        m = np.asarray(self.matrix)
        if m.ndim != 2:
            raise ValueError(
                f"gene embeddings must be a 2-d (genes x dim) array, got shape {m.shape}"
            )
        if m.shape[0] != self.genes.shape[0]:
            raise ValueError(
                f"{self.genes.shape[0]} gene names but {m.shape[0]} embedding rows; "
                "each gene needs exactly one row"
            )
        if m.shape[1] == 0:
            raise ValueError("gene embeddings have zero columns")
        if np.issubdtype(m.dtype, np.complexfloating):
            raise ValueError(
                f"gene embeddings must be real numbers, got complex dtype {m.dtype}; pass "
                "np.real(...) or np.abs(...) yourself if that is what you mean"
            )
        if not np.issubdtype(m.dtype, np.number):
            raise ValueError(f"gene embeddings must be numeric, got dtype {m.dtype}")
        m = np.ascontiguousarray(m, dtype=np.float32)
        bad = ~np.isfinite(m).all(axis=1)
        if bad.any():
            raise ValueError(
                f"{int(bad.sum())} gene embeddings contain NaN or inf "
                f"(first: {', '.join(self.genes[bad][:5])}); drop or fix those rows"
            )
        dup = pd.Index(self.genes).duplicated()
        if dup.any():
            raise ValueError(
                f"duplicate gene names in the embeddings (first: {', '.join(self.genes[dup][:5])}); "
                "keep one row per gene"
            )
        self.matrix = m

    @property
    def dim(self) -> int:
        """Embedding width."""
        return int(self.matrix.shape[1])

    def __len__(self) -> int:
        return int(self.genes.shape[0])

    def __repr__(self) -> str:
        return (
            f"GeneEmbeddings({len(self)} genes x {self.dim}, source={self.source!r}, "
            f"model={self.model!r})"
        )

    def to_frame(self) -> pd.DataFrame:
        """As a DataFrame indexed by gene."""
        return pd.DataFrame(self.matrix, index=pd.Index(self.genes, name="gene"))

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], **kw) -> GeneEmbeddings:
        """From ``{gene: vector}``; all vectors must have the same length."""
        if not mapping:
            raise ValueError("the gene embedding mapping is empty")
        genes = list(mapping)
        vecs = [_one_vector(g, mapping[g]) for g in genes]
        lens = {v.shape[0] for v in vecs}
        if len(lens) != 1:
            raise ValueError(f"gene embeddings have different lengths: {sorted(lens)[:10]}")
        mat = np.stack(vecs)  # keeps the dtype: complex values are refused by __init__
        return cls(np.array(genes, dtype=object), mat, **kw)

    @classmethod
    def from_frame(cls, df: pd.DataFrame, **kw) -> GeneEmbeddings:
        """From a DataFrame indexed by gene, one column per dimension."""
        num = df.select_dtypes(include=[np.number])
        if num.shape[1] != df.shape[1]:
            extra = [c for c in df.columns if c not in num.columns][:5]
            raise ValueError(
                f"embedding DataFrame has non-numeric columns {extra}; index it by gene and keep "
                "only the dimensions"
            )
        return cls(df.index.astype(str).to_numpy(), df.to_numpy(), **kw)

    def save_npz(self, path: str | os.PathLike) -> None:
        """Write ``genes`` and ``matrix`` to a ``.npz`` file (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        try:
            np.savez(tmp, genes=self.genes.astype(str), matrix=self.matrix)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()


def _one_vector(gene, value) -> np.ndarray:
    """One gene's vector: 1-d, or ``(1, dim)``; anything else is refused, not flattened."""
    v = np.asarray(value)
    if v.ndim == 2 and v.shape[0] == 1:
        v = v[0]
    if v.ndim != 1:
        raise ValueError(
            f"the embedding of gene {gene!r} has shape {v.shape}; each gene needs one 1-d "
            "vector (several vectors per gene are not flattened: average or pick one first)"
        )
    return v


def read_gene_embeddings(
    path: str | os.PathLike, *, allow_pickle: bool = False, **kw
) -> GeneEmbeddings:
    """Read gene embeddings from a file.

    Formats, by suffix: ``.npz`` (arrays ``genes`` and ``matrix``, or ``genes`` and
    ``embeddings``), ``.parquet`` / ``.csv`` / ``.tsv`` (first column the gene, the
    others the dimensions), ``.pickle`` / ``.pkl`` (a ``{gene: vector}`` dict or a
    DataFrame, as GenePT distributes them).

    Parameters
    ----------
    path
        The file.
    allow_pickle
        Pickles can run arbitrary code when loaded: they are read only when you pass
        ``allow_pickle=True`` for a file you trust.
    **kw
        Passed to :class:`GeneEmbeddings` (``source``, ``model``…).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"the gene embedding file {path} does not exist")
    name = path.name.lower().rstrip(".")
    kw.setdefault("source", f"file:{path.name}")
    if name.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            mkey = "matrix" if "matrix" in keys else "embeddings" if "embeddings" in keys else None
            if "genes" not in keys or mkey is None:
                raise ValueError(
                    f"{path} must hold arrays 'genes' and 'matrix' (has {sorted(keys)})"
                )
            return GeneEmbeddings(z["genes"], z[mkey], **kw)
    if name.endswith((".parquet", ".pq")):
        return GeneEmbeddings.from_frame(_first_col_index(pd.read_parquet(path)), **kw)
    if name.endswith((".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz")):
        sep = "\t" if ".tsv" in name or name.endswith(".txt") else ","
        return GeneEmbeddings.from_frame(pd.read_csv(path, sep=sep, index_col=0), **kw)
    if name.endswith((".pickle", ".pkl")):
        if not allow_pickle:
            raise ValueError(
                f"{path} is a pickle, which can run code when loaded; pass allow_pickle=True "
                "if you trust it (downloads from genept.datasets are hash-checked instead)"
            )
        with open(path, "rb") as f:
            obj = pickle.load(f)
        return as_gene_embeddings(obj, **kw)
    raise ValueError(
        f"unknown gene embedding file type {path.suffix!r}; use .npz, .parquet, .csv, .tsv or .pickle"
    )


def _first_col_index(df: pd.DataFrame) -> pd.DataFrame:
    if is_text_column(df.index) or not isinstance(df.index, pd.RangeIndex):
        return df
    return df.set_index(df.columns[0])


def as_gene_embeddings(obj: Any, *, allow_pickle: bool = False, **kw) -> GeneEmbeddings:
    """Coerce a dict, DataFrame, :class:`GeneEmbeddings` or path into :class:`GeneEmbeddings`."""
    if isinstance(obj, GeneEmbeddings):
        return obj
    if isinstance(obj, pd.DataFrame):
        return GeneEmbeddings.from_frame(obj, **kw)
    if isinstance(obj, Mapping):
        return GeneEmbeddings.from_mapping(obj, **kw)
    if isinstance(obj, str | os.PathLike):
        return read_gene_embeddings(obj, allow_pickle=allow_pickle, **kw)
    raise TypeError(
        f"cannot use a {type(obj).__name__} as gene embeddings; pass a dict gene -> vector, a "
        "DataFrame indexed by gene, a GeneEmbeddings or a file path"
    )


def checked_varm(adata, key: str) -> np.ndarray:
    """``adata.varm[key]`` as a finite float32 ``(n_vars, dim)`` array, or a clear error (sparse, complex or non-numeric, zero-width, NaN/inf rows named by gene)."""
    from scipy import sparse

    V = adata.varm[key]
    if sparse.issparse(V) or type(V).__module__.startswith("sparse"):
        raise TypeError(
            f"adata.varm[{key!r}] is a sparse matrix; gene embeddings must be dense: "
            f"adata.varm[{key!r}] = adata.varm[{key!r}].toarray()"
        )
    V = V.to_numpy() if isinstance(V, pd.DataFrame) else np.asarray(V)
    if np.issubdtype(V.dtype, np.complexfloating) or not np.issubdtype(V.dtype, np.number):
        raise TypeError(f"adata.varm[{key!r}] must hold real numbers, got dtype {V.dtype}")
    if V.ndim != 2 or V.shape[1] == 0:
        raise ValueError(
            f"adata.varm[{key!r}] has shape {V.shape}; expected ({adata.n_vars}, dim) with "
            "dim > 0: re-run gpt.tl.embed_genes"
        )
    E = np.asarray(V, dtype=np.float32)
    bad = ~np.isfinite(E).all(axis=1)
    if bad.any():
        genes = ", ".join(map(str, adata.var_names[bad][:5]))
        raise ValueError(
            f"adata.varm[{key!r}] has NaN or inf in {int(bad.sum())} gene rows (first: "
            f"{genes}); re-run gpt.tl.embed_genes(adata), or set those rows to 0 to leave "
            "the genes out"
        )
    return E
