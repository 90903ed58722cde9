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


def test_split_cells_by_position_works_with_arrow_obs_names(split_cells):
    """The shared split indexes by position, so pandas 3's Arrow-string obs_names work."""
    import pandas as pd

    labels = np.repeat(["a", "b"], 10)
    names = pd.Index([f"cell{i}" for i in range(20)], dtype="string[pyarrow]")
    adata = AnnData(
        np.arange(40, dtype=np.float32).reshape(20, 2), obs=pd.DataFrame({"y": labels}, index=names)
    )
    ref, query = split_cells(adata, "y", test_size=0.25)
    assert ref.n_obs == 15 and query.n_obs == 5
    assert set(ref.obs_names).isdisjoint(query.obs_names)
    assert set(ref.obs_names) | set(query.obs_names) == set(map(str, names))
    assert sorted(query.obs["y"].value_counts().to_list()) == [2, 3]  # stratified
    np.testing.assert_array_equal(query.X[:, 0] // 2, [int(n[4:]) for n in query.obs_names])
