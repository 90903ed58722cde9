"""genept: GenePT and scMPT for scanpy.

Gene and cell embeddings built from language models of the literature (GenePT-w,
GenePT-s), cell-type annotation that fuses them with expression foundation models
(scMPT), gene programs, plots and the papers' evaluations.

>>> import scanpy as sc, genept as gpt
>>> adata = sc.datasets.pbmc68k_reduced()  # doctest: +SKIP
>>> gpt.tl.embed_genes(adata)  # doctest: +SKIP
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import bm, datasets, encoders, models, pl, pp, tl
from ._gene_embeddings import GeneEmbeddings, read_gene_embeddings
from ._settings import settings

try:
    __version__ = version("genept")
except PackageNotFoundError:  # pragma: no cover
    __version__ = "0.0.0"

__all__ = [
    "GeneEmbeddings",
    "__version__",
    "bm",
    "datasets",
    "encoders",
    "models",
    "pl",
    "pp",
    "read_gene_embeddings",
    "settings",
    "tl",
]
