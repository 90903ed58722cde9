"""Shared fixtures: an isolated cache folder, offline hub, quiet progress bars."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

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
