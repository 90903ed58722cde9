"""TF-IDF + truncated SVD (latent semantic analysis) of gene-card texts: genept's default gene embedding (issue 16; chosen in ``benchmarks/default_gene_embeddings.py``).

The shipped table holds ``Y = X V`` (the SVD scores, before L2 normalisation) for every
human gene of the cards, where ``X`` is the TF-IDF matrix of the card texts and ``V`` the
SVD components. The components are not shipped: since the columns of ``Y = U S`` are
orthogonal with squared norms ``S**2``, ``V.T = diag(S**-2) Y.T X``, so a gene missing
from the table is embedded by refitting the (deterministic) TF-IDF vectoriser on the
texts of the table's genes and projecting its text with the recovered components.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LSA_PARAMS", "LsaProjector", "fit_lsa"]

#: TF-IDF settings of the default (also written into the table's metadata)
LSA_PARAMS = {
    "sublinear_tf": True,
    "stop_words": "english",
    "ngram_range": [1, 2],
    "min_df": 2,
    "svd": "randomized, n_iter=5, random_state=0",
}


def _vectorizer(params: dict):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(
        sublinear_tf=params["sublinear_tf"],
        stop_words=params["stop_words"],
        ngram_range=tuple(params["ngram_range"]),
        min_df=params["min_df"],
        dtype=np.float32,
    )


def unit_rows(M: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32."""
    M = np.asarray(M, dtype=np.float32)
    n = np.linalg.norm(M, axis=1, keepdims=True)
    return M / np.where(n > 0, n, np.float32(1.0))


def fit_lsa(texts: list[str], dim: int, *, seed: int = 0) -> np.ndarray:
    """SVD scores ``Y = X V`` (float32, not normalised) of the TF-IDF matrix of ``texts``."""
    from sklearn.decomposition import TruncatedSVD

    X = _vectorizer(LSA_PARAMS).fit_transform(texts)
    svd = TruncatedSVD(n_components=dim, algorithm="randomized", n_iter=5, random_state=seed)
    return svd.fit_transform(X).astype(np.float32)


class LsaProjector:
    """Embeds new texts into the space of an LSA table.

    Parameters
    ----------
    texts
        The texts of the table's genes, in row order (what the table was fitted on).
    scores
        The table's rows ``Y`` (SVD scores, not normalised), ``(n_genes, dim)``.
    params
        TF-IDF settings (default :data:`LSA_PARAMS`).

    Examples
    --------
    >>> proj = LsaProjector(texts, Y)  # doctest: +SKIP
    >>> proj.transform(["Gene tumor protein p53 is a protein-coding gene."])  # doctest: +SKIP
    """

    def __init__(self, texts: list[str], scores: np.ndarray, params: dict | None = None):
        self.vectorizer = _vectorizer(params or LSA_PARAMS)
        X = self.vectorizer.fit_transform(texts)  # (n, vocab) sparse
        Y = np.asarray(scores, dtype=np.float64)
        sigma2 = (Y * Y).sum(axis=0)
        sigma2[sigma2 == 0] = 1.0
        # components (dim, vocab): V.T = diag(S**-2) Y.T X
        self.components = (np.asarray(X.T @ Y).T / sigma2[:, None]).astype(np.float32)

    def transform(self, texts: list[str]) -> np.ndarray:
        """Unit-length LSA vectors of ``texts`` (float32)."""
        X = self.vectorizer.transform(texts)
        return unit_rows(np.asarray(X @ self.components.T))


def lsa_encoder(table=None):
    """A :class:`~genept.encoders.TextEncoder` projecting texts into the space of the shipped LSA table (the fallback for genes missing from it; cached under the table's hash).

    The projector is built on first use from the table and the ``card_nosym`` texts of its
    genes (about a minute on one core: the TF-IDF vectoriser is refitted).
    """
    from ..encoders import TextEncoder
    from ._default_table import default_table

    table = default_table() if table is None else table

    class LsaEncoder(TextEncoder):
        cache_id = f"genept-lsa:{table.meta.get('sha256', '')[:16]}"
        dim = table.dim
        max_tokens = None
        batch_size = 4096
        model_name = "lsa"

        def __init__(self):
            self._proj = None

        def _encode(self, texts: list[str]) -> np.ndarray:
            if self._proj is None:
                self._proj = _projector(table)
            return self._proj.transform(texts)

    return LsaEncoder()


def _projector(table) -> LsaProjector:
    import hashlib

    from .._gene_sources import _cards
    from ._card_variants import card_nosym_text

    texts = card_nosym_text(_cards(), list(table.genes))
    if texts.isna().any():
        raise ValueError(
            f"{int(texts.isna().sum())} genes of the default table have no gene card; the table "
            "does not belong to these gene cards: rebuild it with "
            "`python scripts/build_default_embeddings.py`"
        )
    texts = [t.replace("\n", " ") for t in texts]
    sha = hashlib.sha256(("\n".join(texts) + "\n").encode("utf-8")).hexdigest()
    if table.meta.get("text_sha256") not in (None, sha):
        import warnings

        warnings.warn(
            "the gene cards changed since the default table was built; genes missing from it are "
            "projected with a vectoriser refitted on today's texts (rebuild the table with "
            "`python scripts/build_default_embeddings.py`)",
            UserWarning,
            stacklevel=3,
        )
    Y = np.asarray(table.codes, dtype=np.float32) * table.scale[:, None]
    return LsaProjector(texts, Y, table.meta.get("lsa"))
