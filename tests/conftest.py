"""Shared fixtures: an isolated cache folder, offline hub, quiet progress bars, and a
stratified reference/query split that works with pandas 3."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _allow_string_arrays() -> None:
    """pandas >= 3 makes strings (``obs_names`` too) pandas string arrays, which anndata
    0.12 writes only when asked: tests that call ``write_h5ad`` themselves ask here (the
    package's own writes go through ``genept._utils.atomic_write_h5ad``, which asks)."""
    import pandas as pd

    if int(pd.__version__.split(".")[0]) >= 3:
        import anndata

        if hasattr(getattr(anndata, "settings", None), "allow_write_nullable_strings"):
            anndata.settings.allow_write_nullable_strings = True


_allow_string_arrays()

#: real benchmark data beside the checkout (absent on a fresh machine: tests skip)
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Each test writes its caches to its own temporary folder, not ~/.cache."""
    import genept as gpt

    cache = tmp_path / "genept_cache"
    monkeypatch.setattr(gpt.settings, "cache_dir", cache)
    monkeypatch.setattr(gpt.settings, "progress", False)
    yield


@pytest.fixture(scope="session")
def minilm():
    """The packaged all-MiniLM-L6-v2 encoder (loaded once)."""
    from genept.encoders import SentenceTransformerEncoder

    return SentenceTransformerEncoder("all-MiniLM-L6-v2", device="cpu")


def stratified_split(adata, label_key: str, *, test_size: float = 0.2, random_state: int = 0):
    """``(reference, query)`` copies of ``adata``, split stratified by ``obs[label_key]``.

    Splits *positions*, not ``obs_names``: under pandas 3, ``obs_names`` are Arrow-backed
    strings, and ``train_test_split(adata.obs_names, ...)`` returns an array that
    scikit-learn and AnnData cannot index with (issue 10).
    """
    import numpy as np
    from sklearn.model_selection import train_test_split

    y = adata.obs[label_key].astype(str).to_numpy()
    tr, te = train_test_split(
        np.arange(adata.n_obs), test_size=test_size, stratify=y, random_state=random_state
    )
    return adata[np.sort(tr)].copy(), adata[np.sort(te)].copy()


@pytest.fixture(scope="session")
def split_cells():
    """:func:`stratified_split` for tests: ``ref, query = split_cells(adata, "cell_type")``."""
    return stratified_split
