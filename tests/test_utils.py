"""AnnData plumbing: all-or-nothing writes."""

from __future__ import annotations

import numpy as np
import pytest
from anndata import AnnData

from genept._utils import write_results


def test_write_results_is_all_or_nothing():
    adata = AnnData(np.ones((3, 2), dtype=np.float32))
    adata.uns["old"] = {"a": 1}
    with pytest.raises(ValueError):
        write_results(
            adata,
            [
                ("obsm", "X_new", np.zeros((3, 4))),
                ("uns", "old", {"b": 2}),
                ("obs", "flag", [True, False, True]),
                ("obsm", "X_bad", np.zeros((5, 4))),  # wrong number of rows: rejected
            ],
        )
    assert "X_new" not in adata.obsm and "flag" not in adata.obs
    assert dict(adata.uns["old"]) == {"a": 1}


def test_write_results_copy():
    adata = AnnData(np.ones((3, 2), dtype=np.float32))
    out = write_results(adata, [("obsm", "X_new", np.zeros((3, 1)))], copy=True)
    assert "X_new" in out.obsm and "X_new" not in adata.obsm
