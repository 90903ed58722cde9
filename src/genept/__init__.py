"""genept: GenePT and scMPT for scanpy.

Gene and cell embeddings built from language models of the literature (GenePT-w,
GenePT-s), cell-type annotation that fuses them with expression foundation models
(scMPT), gene programs, plots and the papers' evaluations.

Sub-packages load on first use, so ``import genept`` is cheap and does not import
torch, sentence-transformers, openai or scikit-learn.

>>> import scanpy as sc, genept as gpt
>>> adata = sc.datasets.pbmc68k_reduced()  # doctest: +SKIP
>>> gpt.tl.embed_genes(adata)  # doctest: +SKIP
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from ._core._lazy import attach_stub
from ._settings import settings

if TYPE_CHECKING:  # static analysers and IDEs see the eager names
    from . import bm, datasets, encoders, models, pl, pp, tl
    from ._gene_embeddings import GeneEmbeddings, read_gene_embeddings

try:
    __version__ = version("genept")
except PackageNotFoundError:  # pragma: no cover
    __version__ = "0.0.0"

# the names above, imported on first access
__getattr__, __dir__, _lazy = attach_stub(__name__, __file__)
__all__ = [*_lazy, "__version__", "settings"]
