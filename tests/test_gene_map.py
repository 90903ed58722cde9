"""embed_cells(query, reference=ref): a query read through its reference's gene map, the
recorded map identifiers, and the warnings of the annotators when two maps differ."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData, read_h5ad
from scipy import sparse

import genept as gpt
from genept.encoders import TextEncoder

N_VARS = 40


class BagEncoder(TextEncoder):
    """Fake encoder: a bag-of-words count vector over a fixed vocabulary."""

    cache_id = "bag:gene-map"

    def __init__(self, vocab):
        self.vocab = {w: i for i, w in enumerate(vocab)}
        self.dim = len(vocab) + 1

    def _encode(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for r, t in enumerate(texts):
            for w in t.split():
                out[r, self.vocab.get(w, self.dim - 1)] += 1
        return out


def cells(n_obs=60, seed=0):
    """Log-normalised-looking cells over N_VARS genes with 8-d gene vectors and labels."""
    rng = np.random.default_rng(seed)
    X = sparse.random(
        n_obs, N_VARS, density=0.5, random_state=seed, data_rvs=lambda k: rng.uniform(0.1, 3, k)
    )
    a = AnnData(
        X.tocsr().astype(np.float32), var=pd.DataFrame(index=[f"G{i}" for i in range(N_VARS)])
    )
    a.obs_names = [f"c{i}" for i in range(n_obs)]
    E = np.random.default_rng(99).standard_normal((N_VARS, 8)).astype(np.float32)
    E[5] = 0  # a gene without a vector
    a.varm["X_genept"] = E
    a.uns["genept"] = {"params": {"source": "test", "model": "none"}}
    a.obs["cell_type"] = np.where(np.arange(n_obs) % 2 == 0, "A", "B")
    return a


def mask(genes):
    m = np.zeros(N_VARS, bool)
    m[list(genes)] = True
    return m


HV_REF, HV_QUERY = mask(range(0, 24)), mask(range(12, 36))


@pytest.fixture
def ref_query():
    a = cells()
    ref, query = a[:40].copy(), a[40:].copy()
    ref.var["highly_variable"] = HV_REF
    query.var["highly_variable"] = HV_QUERY  # selected on its own: other genes
    gpt.tl.embed_cells(ref)
    return a, ref, query


def test_w_query_through_the_reference_map_equals_a_joint_embedding(ref_query):
    a, ref, query = ref_query
    # whitening depends on the genes and their vectors only, so embedding every cell
    # with the reference's genes gives the rows the query must get
    joint = a.copy()
    joint.var["highly_variable"] = HV_REF
    gpt.tl.embed_cells(joint)
    np.testing.assert_allclose(ref.obsm["X_genept_w"], joint.obsm["X_genept_w"][:40], atol=1e-6)
    alone = gpt.tl.embed_cells(query, copy=True)
    gpt.tl.embed_cells(query, reference=ref)
    np.testing.assert_allclose(query.obsm["X_genept_w"], joint.obsm["X_genept_w"][40:], atol=1e-6)
    assert not np.allclose(alone.obsm["X_genept_w"], query.obsm["X_genept_w"], atol=1e-3)
    p, pr = query.uns["genept_w"]["params"], ref.uns["genept_w"]["params"]
    assert p["gene_map"] == pr["gene_map"] != alone.uns["genept_w"]["params"]["gene_map"]
    assert p["mask_var"] == "reference (highly_variable)"


def test_w_query_with_other_genes_in_other_order(ref_query):
    a, ref, _ = ref_query
    keep = np.random.default_rng(1).permutation(N_VARS)[:30]  # 10 genes missing, shuffled
    query = a[40:, keep].copy()
    gpt.tl.embed_cells(query, reference=ref)
    # the reference's map read on the query's genes: missing genes are unexpressed
    joint = a.copy()
    joint.var["highly_variable"] = HV_REF
    X = joint.X.toarray()
    X[:, np.setdiff1d(np.arange(N_VARS), keep)] = 0
    joint.X = sparse.csr_matrix(X)
    gpt.tl.embed_cells(joint)
    np.testing.assert_allclose(query.obsm["X_genept_w"], joint.obsm["X_genept_w"][40:], atol=1e-6)


def test_gene_map_ids():
    a = cells()
    b = a[:, 3:].copy()  # another data set: fewer genes
    # every gene, no whitening: the papers' GenePT-w, the same map in every data set
    for x in (a, b):
        gpt.tl.embed_cells(x, mask_var=False, whiten=False, key_added="X_paper")
        gpt.tl.embed_cells(x, mask_var=False, key_added="X_white")
    ids = [x.uns["paper"]["params"]["gene_map"] for x in (a, b)]
    assert ids[0] == ids[1] and len(ids[0]) == 16
    # whitened over other genes: another map
    assert a.uns["white"]["params"]["gene_map"] != b.uns["white"]["params"]["gene_map"]
    # other gene vectors: another map
    c = a.copy()
    c.varm["X_genept"] = c.varm["X_genept"] * 2
    gpt.tl.embed_cells(c, mask_var=False, key_added="X_white")
    assert c.uns["white"]["params"]["gene_map"] != a.uns["white"]["params"]["gene_map"]


def test_reference_read_back_from_h5ad(ref_query, tmp_path):
    _, ref, query = ref_query
    ref.write_h5ad(tmp_path / "ref.h5ad")
    back = read_h5ad(tmp_path / "ref.h5ad")
    direct = gpt.tl.embed_cells(query, reference=ref, copy=True)
    gpt.tl.embed_cells(query, reference=back)
    np.testing.assert_array_equal(query.obsm["X_genept_w"], direct.obsm["X_genept_w"])


def test_annotators_warn_when_maps_differ(ref_query):
    _, ref, query = ref_query
    gpt.tl.embed_cells(query)  # on its own genes
    with pytest.warns(UserWarning, match="different gene maps"):
        gpt.tl.annotate_knn(query, ref, use_rep="X_genept_w", label_key="cell_type")
    gpt.tl.embed_cells(query, reference=ref)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gpt.tl.annotate_knn(query, ref, use_rep="X_genept_w", label_key="cell_type")
        # no map recorded (e.g. a PCA): nothing to compare
        ref.obsm["X_other"] = ref.obsm["X_genept_w"]
        query.obsm["X_other"] = query.obsm["X_genept_w"]
        gpt.tl.annotate_knn(query, ref, use_rep="X_other", label_key="cell_type")


def test_model_records_maps_and_warns_at_prediction(ref_query, tmp_path):
    _, ref, query = ref_query
    gpt.tl.embed_cells(query, reference=ref)
    model = gpt.models.ScMPTModel.fit(
        ref,
        label_key="cell_type",
        reps=["X_genept_w"],
        hidden=8,
        epochs_grid=(3,),
        lr_grid=(1e-2,),
        n_seeds=1,
        device="cpu",
    )
    assert model.gene_maps == {"X_genept_w": ref.uns["genept_w"]["params"]["gene_map"]}
    back = gpt.models.ScMPTModel.load(model.save(tmp_path / "m"))
    assert back.gene_maps == model.gene_maps
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back.predict_proba(query)
    gpt.tl.embed_cells(query)  # on its own genes
    with pytest.warns(UserWarning, match="model's reference"):
        back.predict_proba(query)
    with pytest.warns(UserWarning, match="different gene maps") as rec:
        gpt.tl.annotate_mlp(query, ref, use_rep="X_genept_w", label_key="cell_type", epochs=3)
    assert sum("different gene maps" in str(w.message) for w in rec) == 1  # once, not twice


def test_s_query_through_the_reference_genes(ref_query):
    _, ref, query = ref_query
    enc = BagEncoder([f"G{i}" for i in range(N_VARS)])
    kw = dict(method="s", model=enc, prefix="", n_genes=5)
    gpt.tl.embed_cells(ref, **kw)
    gpt.tl.embed_cells(query, reference=ref, **kw)
    expected = gpt.tl.embed_cells(query, mask_var=HV_REF, copy=True, **kw)
    np.testing.assert_allclose(query.obsm["X_genept_s"], expected.obsm["X_genept_s"])
    assert query.uns["genept_s"]["params"]["gene_map"] == ref.uns["genept_s"]["params"]["gene_map"]
    # sentences from other genes are not another space: no warning for GenePT-s
    alone = gpt.tl.embed_cells(query, copy=True, **kw)
    assert alone.uns["genept_s"]["params"]["gene_map"] != ref.uns["genept_s"]["params"]["gene_map"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gpt.tl.annotate_knn(alone, ref, use_rep="X_genept_s", label_key="cell_type")
    with pytest.raises(
        ValueError, match=r"n_genes=6\.0 \(reference: 5\)|n_genes=6 \(reference: 5\)"
    ):
        gpt.tl.embed_cells(query, reference=ref, **{**kw, "n_genes": 6})


def test_reference_errors(ref_query):
    a, ref, query = ref_query
    with pytest.raises(KeyError, match=r"run gpt.tl.embed_cells\(reference"):
        gpt.tl.embed_cells(query, reference=ref, key_added="X_missing")
    with pytest.raises(ValueError, match="GenePT-w, not GenePT-s"):
        gpt.tl.embed_cells(query, method="s", reference=ref, key_added="X_genept_w")
    with pytest.raises(ValueError, match=r"whiten=0.0 \(reference: 0.1\)"):
        gpt.tl.embed_cells(query, reference=ref, whiten=False)
    with pytest.raises(ValueError, match="mask_var or reference, not both"):
        gpt.tl.embed_cells(query, reference=ref, mask_var=False)
    with pytest.raises(TypeError, match="reference must be an AnnData"):
        gpt.tl.embed_cells(query, reference="ref.h5ad")
    # the reference lost its gene vectors: named as the reference's, with its recorded key
    bare = ref.copy()
    del bare.varm["X_genept"]
    with pytest.raises(
        KeyError,
        match=r"^\"reference.varm has no 'X_genept'.*Run gpt.tl.embed_"
        r"genes\(reference, key_added='X_genept'\) and re-embed the reference",
    ):
        gpt.tl.embed_cells(query, reference=bare)
    bare.varm["X_genept"] = np.full_like(ref.varm["X_genept"], np.nan)
    with pytest.raises(
        ValueError,
        match=r"reference.varm\['X_genept'\].*embed_genes\(reference, key_added='X_genept'\) and re-embed the reference",
    ):
        gpt.tl.embed_cells(query, reference=bare)
    # the reference's genes changed after its embedding: refused, nothing written
    moved = ref.copy()
    moved.var["highly_variable"] = HV_QUERY
    with pytest.raises(ValueError, match="changed since"):
        gpt.tl.embed_cells(query, reference=moved)
    assert "X_genept_w" not in query.obsm and "genept_w" not in query.uns  # nothing written
    del moved.var["highly_variable"]
    with pytest.raises(KeyError, match="no column 'highly_variable' any more"):
        gpt.tl.embed_cells(query, reference=moved)
    # a query of a reference is not a reference itself
    gpt.tl.embed_cells(query, reference=ref)
    with pytest.raises(ValueError, match="itself embedded through another reference"):
        gpt.tl.embed_cells(ref.copy(), reference=query)
    # an array mask is not recorded
    arr = a[:40].copy()
    gpt.tl.embed_cells(arr, mask_var=HV_REF)
    with pytest.raises(ValueError, match="array mask_var"):
        gpt.tl.embed_cells(query, reference=arr)
    # no shared gene / few shared genes
    other = query.copy()
    other.var_names = [f"X{i}" for i in range(N_VARS)]
    with pytest.raises(ValueError, match="none of the reference's"):
        gpt.tl.embed_cells(other, reference=ref)
    few = query[:, 18:].copy()  # 6 of the reference's 23 embedded genes
    with pytest.warns(UserWarning, match="only 6 of the reference's 23 genes"):
        gpt.tl.embed_cells(few, reference=ref)


def test_notebook_scale_follows_the_reference():
    """normalize="notebook" divides by the gene count: the reference's, for its query."""
    a = cells()
    a.var["highly_variable"] = HV_REF
    joint = gpt.tl.embed_cells(a, normalize="notebook", copy=True)
    ref = a[:40].copy()
    gpt.tl.embed_cells(ref, normalize="notebook")
    query = a[40:, :30].copy()  # 10 genes fewer
    del query.var["highly_variable"]
    gpt.tl.embed_cells(query, reference=ref, normalize="notebook")
    full = joint.X[40:].toarray()
    full[:, 30:] = 0  # what the query lacks is unexpressed
    expected = full @ _whitened(a, HV_REF) / N_VARS
    np.testing.assert_allclose(query.obsm["X_genept_w"], expected, rtol=1e-5, atol=1e-6)


def _whitened(a, hv):
    from genept.tl._embed_cells import whiten_gene_embeddings

    return whiten_gene_embeddings(np.where(hv[:, None], a.varm["X_genept"], 0), 0.1)


def test_reference_through_itself_stays_a_reference(ref_query):
    _, ref, query = ref_query
    before = ref.obsm["X_genept_w"].copy()
    gpt.tl.embed_cells(ref, reference=ref)
    np.testing.assert_allclose(ref.obsm["X_genept_w"], before, atol=1e-6)
    assert ref.uns["genept_w"]["params"]["mask_var"] == "highly_variable"
    gpt.tl.embed_cells(query, reference=ref)  # still a reference


def test_a_column_named_like_the_markers_is_a_column(ref_query):
    a, _, query = ref_query
    ref = a[:40].copy()
    ref.var["mask"] = HV_REF
    gpt.tl.embed_cells(ref, mask_var="mask")
    gpt.tl.embed_cells(query, reference=ref)
    assert query.uns["genept_w"]["params"]["gene_map"] == ref.uns["genept_w"]["params"]["gene_map"]


def test_changed_vectors_are_found_in_every_mode(ref_query):
    a, _, query = ref_query
    ref = a[:40].copy()
    gpt.tl.embed_cells(ref, mask_var=False, whiten=False)  # the papers' map: no genes hashed
    ref.varm["X_genept"] = ref.varm["X_genept"][::-1].copy()
    with pytest.raises(ValueError, match="changed since"):
        gpt.tl.embed_cells(query, reference=ref, whiten=False)


def test_s_settings_and_duplicates_errors(ref_query):
    a, ref, query = ref_query
    enc = BagEncoder([f"G{i}" for i in range(N_VARS)])
    ref.var["sym"] = ref.var_names
    gpt.tl.embed_cells(ref, method="s", model=enc, prefix="", gene_symbols="sym")
    with pytest.raises(ValueError, match=r"gene_symbols='var_names' \(reference: 'sym'\)"):
        gpt.tl.embed_cells(query, method="s", model=enc, prefix="", reference=ref)
    gpt.tl.embed_cells(ref, method="s", model=enc, prefix="", n_genes=None, key_added="X_all")
    with pytest.raises(ValueError, match=r"n_genes=25 \(reference: None\)"):
        gpt.tl.embed_cells(
            query, method="s", model=enc, prefix="", reference=ref, key_added="X_all"
        )
    dup = a[:40].copy()
    dup.var_names = ["G0", *dup.var_names[1:-1], "G0"]
    gpt.tl.embed_cells(dup, mask_var=False)
    with pytest.raises(ValueError, match="var_names_make_unique"):
        gpt.tl.embed_cells(query, reference=dup)


def test_warnings_point_at_the_callers_line(ref_query):
    _, ref, query = ref_query
    gpt.tl.embed_cells(query)  # on its own genes
    with pytest.warns(UserWarning, match="different gene maps") as rec:
        gpt.tl.annotate_knn(query, ref, use_rep="X_genept_w", label_key="cell_type")
    assert rec[0].filename == __file__
