"""genept.bm: gene tasks, pair sampling, cell metrics, loaders, probes."""

from __future__ import annotations

import functools
import hashlib
import http.server
import pickle
import threading
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from genept import GeneEmbeddings
from genept.bm import (
    ablation_embeddings,
    as_embedding_frame,
    batch_metrics,
    cluster_metrics,
    dosage_sensitive_tfs,
    gene2vec_ggi,
    gene_function_accuracy,
    gene_property_auc,
    huri,
    knn_metrics,
    marker_similarity,
    pair_auc,
    pair_features,
    panglao_markers,
    random_like,
    sample_negative_pairs,
    summarize,
)
from genept.encoders import TextEncoder


def _genes(n):
    return [f"G{i}" for i in range(n)]


def _planted_embedding(n=200, dim=16, seed=0):
    """Gene i has label y_i, and its embedding carries it in dimension 0."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    E = rng.standard_normal((n, dim)).astype(np.float32)
    E[:, 0] += 3.0 * (2 * y - 1)
    return pd.DataFrame(E, index=_genes(n)), pd.Series(y, index=_genes(n))


# ----------------------------------------------------------------------------- gene tasks


def test_gene_property_auc_planted_vs_random():
    emb, y = _planted_embedding(n=120)
    res = gene_property_auc(emb, y, n_splits=3)
    assert set(res.columns) >= {"embedding", "model", "fold", "auc"}
    assert len(res) == 2 * 2 * 3
    s = summarize(res).set_index(["embedding", "model"])
    assert s.loc[("genept", "lr"), "mean"] > 0.9 and s.loc[("genept", "rf"), "mean"] > 0.9
    for m in ("lr", "rf"):
        assert 0.3 < s.loc[("random", m), "mean"] < 0.7
    # accepts GeneEmbeddings and AnnData varm
    ge = GeneEmbeddings(emb.index.to_numpy(), emb.to_numpy())
    r2 = gene_property_auc(ge, y, models=("lr",), n_splits=3, include_random=False)
    pd.testing.assert_frame_equal(
        r2, res[(res.embedding == "genept") & (res.model == "lr")].reset_index(drop=True)
    )
    a = ad.AnnData(np.zeros((2, len(emb)), np.float32))
    a.var_names = emb.index
    a.varm["X_genept"] = emb.to_numpy()
    assert as_embedding_frame(a).equals(emb.astype(np.float32))
    # one varm key name everywhere (gene_key, as embed_cells); key= still works
    a.varm["X_mine"] = emb.to_numpy()
    assert as_embedding_frame(a, gene_key="X_mine").equals(emb.astype(np.float32))
    with pytest.warns(FutureWarning, match="gene_key"):
        assert as_embedding_frame(a, key="X_mine").equals(emb.astype(np.float32))
    with pytest.raises(KeyError, match=r"available: \['X_genept', 'X_mine'\]"):
        as_embedding_frame(a, gene_key="X_other")


def test_gene_function_accuracy():
    rng = np.random.default_rng(0)
    n, k = 240, 4
    cls = rng.integers(0, k, n)
    E = rng.standard_normal((n, 8)).astype(np.float32)
    E[np.arange(n), cls] += 4
    labels = pd.Series([f"c{c}" for c in cls], index=_genes(n))
    res = gene_function_accuracy(pd.DataFrame(E, index=_genes(n)), labels, n_splits=3)
    s = summarize(res, "accuracy").set_index("embedding")["mean"]
    assert s["genept"] > 0.9 and s["random"] < 0.5
    # unlabelled genes (NaN) are left out, not made a class "nan"
    holes = labels.astype(object)
    holes.iloc[:60] = np.nan
    res2 = gene_function_accuracy(pd.DataFrame(E, index=_genes(n)), holes, n_splits=3)
    assert set(res2["n_classes"]) == {k} and set(res2["n_genes"]) == {n - 60}


def test_random_control_is_seeded_unit():
    emb, _ = _planted_embedding()
    r1, r2 = random_like(emb, 3), random_like(emb, 3)
    assert r1.equals(r2) and r1.shape == emb.shape
    np.testing.assert_allclose(np.linalg.norm(r1.to_numpy(), axis=1), 1, rtol=1e-5)


# ----------------------------------------------------------------------------- pairs


def _hub_positives(n_genes=400, n_pos=600, seed=0):
    """Positives with a skewed degree distribution (a few hubs)."""
    rng = np.random.default_rng(seed)
    w = 1.0 / np.arange(1, n_genes + 1) ** 1.1
    w /= w.sum()
    pairs = set()
    while len(pairs) < n_pos:
        a, b = rng.choice(n_genes, 2, p=w)
        if a != b:
            pairs.add((min(a, b), max(a, b)))
    pairs = sorted(pairs)
    return pd.DataFrame(
        {"gene1": [f"G{a}" for a, _ in pairs], "gene2": [f"G{b}" for _, b in pairs]}
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_degree_matched_negatives_keep_degrees(seed):
    pos = _hub_positives(seed=seed)
    deg_pos = pd.concat([pos.gene1, pos.gene2]).value_counts()
    key = set(map(frozenset, zip(pos.gene1, pos.gene2, strict=True)))
    dm = sample_negative_pairs(pos, mode="degree_matched", random_state=seed)
    un = sample_negative_pairs(pos, mode="uniform", random_state=seed)
    for neg in (dm, un):
        assert len(neg) == len(pos) and (neg.label == 0).all()
        pairs = list(map(frozenset, zip(neg.gene1, neg.gene2, strict=True)))
        assert all(len(p) == 2 for p in pairs)  # no self-pairs
        assert len(set(pairs)) == len(pairs)  # unique
        assert not (set(pairs) & key)  # never a positive
    deg_dm = pd.concat([dm.gene1, dm.gene2]).value_counts().reindex(deg_pos.index, fill_value=0)
    deg_un = pd.concat([un.gene1, un.gene2]).value_counts().reindex(deg_pos.index, fill_value=0)
    r_dm = np.corrcoef(deg_pos, deg_dm)[0, 1]
    r_un = np.corrcoef(deg_pos, deg_un)[0, 1]
    assert r_dm > 0.9 > r_un
    # total degree of the top hubs within a third (hub partners are mostly positives)
    top = deg_pos.index[:5]
    assert abs(deg_dm[top].sum() - deg_pos[top].sum()) < 0.35 * deg_pos[top].sum()


def test_pair_auc_equals_sklearn_labelled():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    emb, _ = _planted_embedding(n=80)

    def pairs(m, seed):
        r = np.random.default_rng(seed)
        a, b = r.integers(0, 80, m), r.integers(0, 80, m)
        df = pd.DataFrame({"gene1": [f"G{i}" for i in a], "gene2": [f"G{i}" for i in b]})
        s = emb.to_numpy()[a, 0] + emb.to_numpy()[b, 0]
        df["label"] = (s + rng.normal(0, 2, m) > 0).astype(int)
        return df

    tr, te = pairs(400, 1), pairs(200, 2)
    res = pair_auc(emb, tr, te, include_random=False)
    clf = LogisticRegression(max_iter=2000).fit(pair_features(emb, tr), tr.label)
    ref = roc_auc_score(te.label, clf.predict_proba(pair_features(emb, te))[:, 1])
    assert res.loc[0, "auc"] == pytest.approx(ref, abs=1e-12)
    assert res.loc[0, "negatives"] == "given" and res.loc[0, "auc"] > 0.8


def test_pair_auc_positive_only_both_negative_modes():
    pos = _hub_positives(n_genes=500, n_pos=2000)
    rng = np.random.default_rng(0)
    emb = pd.DataFrame(rng.standard_normal((500, 64)).astype(np.float32), index=_genes(500))
    res = pair_auc(emb, pos, include_random=True)
    assert set(res.negatives) == {"uniform", "degree_matched"}
    auc = res.set_index(["embedding", "negatives"])["auc"]
    # random vectors identify hub genes: uniform negatives are easy, degree-matched are not
    assert auc[("random", "uniform")] > 0.6
    assert abs(auc[("random", "degree_matched")] - 0.5) < 0.1, auc


# ----------------------------------------------------------------------------- cell metrics


def _cells(seed=0):
    rng = np.random.default_rng(seed)
    lab = np.repeat(["a", "b", "c"], 40)
    Z = rng.standard_normal((120, 10)).astype(np.float32)
    Z[:, :3] += 3 * (lab[:, None] == np.array(["a", "b", "c"]))
    a = ad.AnnData(
        rng.random((120, 5)).astype(np.float32),
        obs=pd.DataFrame(
            {"cell_type": lab, "batch": rng.choice(["x", "y"], 120)},
            index=[f"c{i}" for i in range(120)],
        ),
    )
    a.obsm["X_emb"] = Z
    return a


def test_knn_and_cluster_metrics_equal_sklearn():
    from sklearn.cluster import KMeans
    from sklearn.metrics import accuracy_score, adjusted_rand_score, f1_score, silhouette_score
    from sklearn.model_selection import train_test_split
    from sklearn.neighbors import KNeighborsClassifier

    a = _cells()
    X, y = a.obsm["X_emb"], a.obs.cell_type.to_numpy()
    k = knn_metrics(a, "X_emb", "cell_type").set_index("metric")["value"]
    tr, te = train_test_split(np.arange(120), test_size=0.2, random_state=0, stratify=y)
    pred = KNeighborsClassifier(10, metric="cosine").fit(X[tr], y[tr]).predict(X[te])
    assert k["accuracy"] == pytest.approx(accuracy_score(y[te], pred))
    assert k["f1"] == pytest.approx(f1_score(y[te], pred, average="macro"))
    c = cluster_metrics(a, "X_emb", "cell_type").set_index("metric")["value"]
    km = KMeans(3, n_init=10, random_state=0).fit_predict(X)
    assert c["ari"] == pytest.approx(adjusted_rand_score(y, km))
    assert c["silhouette"] == pytest.approx(silhouette_score(X, y))
    assert c["ari"] > 0.7
    b = batch_metrics(a, "X_emb", "batch", n_pcs=5)
    assert b.metric.tolist() == ["batch_ari", "batch_mixing"] and abs(b.value[0]) < 0.1
    with pytest.raises(KeyError, match="obsm"):
        knn_metrics(a, "X_nope", "cell_type")


def _mixing_by_hand(X, batch, group, k):
    """Brute force: cosine distances, each cell's k nearest others, other-batch share."""
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    obs = exp = 0.0
    for g in np.unique(group):
        idx = np.flatnonzero(group == g)
        m, bg = len(idx), batch[idx]
        if len(np.unique(bg)) < 2 or m <= k + 1:
            continue
        D = 1 - Xn[idx] @ Xn[idx].T
        np.fill_diagonal(D, np.inf)
        for i in range(m):
            nb = np.argsort(D[i])[: min(k, m - 1)]
            obs += np.mean(bg[nb] != bg[i])
            exp += (m - np.sum(bg == bg[i])) / (m - 1)
    return obs / exp


def test_batch_mixing_known_answers_and_reference():
    rng = np.random.default_rng(0)
    n = 300
    cell_type = np.repeat(["a", "b", "c"], n // 3)
    centres = rng.normal(0, 4, (3, 20))
    X = centres[np.repeat(np.arange(3), n // 3)] + rng.normal(size=(n, 20))
    batch = rng.choice(["b1", "b2"], n, p=[0.7, 0.3])
    a = ad.AnnData(np.zeros((n, 1), np.float32))
    a.obs["cell_type"], a.obs["batch"] = cell_type, batch
    # batches assigned at random: mixing about 1, with or without the labels
    a.obsm["mixed"] = X.astype(np.float32)
    # the same cells, batch b2 moved far away: no neighbour from the other batch
    shifted = X.copy()
    shifted[batch == "b2"] += 30
    a.obsm["split"] = shifted.astype(np.float32)
    for rep, lo, hi in (("mixed", 0.85, 1.15), ("split", -0.001, 0.001)):
        for label_key in (None, "cell_type"):
            m = batch_metrics(a, rep, "batch", label_key=label_key, n_neighbors=10)
            v = m.set_index("metric")["value"]["batch_mixing"]
            assert lo <= v <= hi, (rep, label_key, v)
            group = cell_type if label_key else np.zeros(n)
            assert v == pytest.approx(_mixing_by_hand(a.obsm[rep], batch, group, 10), abs=1e-9)
    # a batch effect confounded with cell type: a type present in one batch only is left
    # out when mixing is measured within types (not counted as a batch effect)
    conf = batch.copy()
    conf[cell_type == "c"] = "b1"
    a.obs["conf"] = conf
    within = batch_metrics(a, "mixed", "conf", label_key="cell_type")
    ref = _mixing_by_hand(a.obsm["mixed"], conf, cell_type, 15)
    assert within.set_index("metric")["value"]["batch_mixing"] == pytest.approx(ref, abs=1e-9)
    a.obs["one_per_type"] = np.where(cell_type == "a", "b1", "b2")
    with pytest.raises(ValueError, match="undefined"):
        batch_metrics(a, "mixed", "one_per_type", label_key="cell_type")
    with pytest.raises(ValueError, match="n_neighbors"):
        batch_metrics(a, "mixed", "batch", n_neighbors=0)
    with pytest.raises(TypeError, match="integer"):
        batch_metrics(a, "mixed", "batch", n_neighbors=None)


def test_batch_mixing_edge_cases():
    rng = np.random.default_rng(1)
    # a small type (k + 1 cells or fewer) would be 'mixed' whatever the data: left out
    big = np.repeat(["big"], 60)
    small = np.repeat(["small"], 8)
    lab = np.concatenate([big, small])
    batch = np.array(["b1", "b2"] * 30 + ["b1"] * 4 + ["b2"] * 4)
    X = rng.normal(size=(68, 6))
    X[60:64] += 50  # the small type's two batches fully separated
    X[64:] -= 50
    a = ad.AnnData(np.zeros((68, 1), np.float32))
    a.obs["lab"], a.obs["batch"] = lab, batch
    a.obsm["r"] = X.astype(np.float32)
    both = batch_metrics(a, "r", "batch", label_key="lab", n_neighbors=10)
    only_big = batch_metrics(a[:60].copy(), "r", "batch", label_key="lab", n_neighbors=10)
    v = both.set_index("metric")["value"]["batch_mixing"]
    assert v == pytest.approx(only_big.set_index("metric")["value"]["batch_mixing"])
    # with k = 2 the small type is measured, and its separated batches pull mixing down
    k2 = batch_metrics(a, "r", "batch", label_key="lab", n_neighbors=2)
    assert k2.set_index("metric")["value"]["batch_mixing"] == pytest.approx(
        _mixing_by_hand(X, batch, lab, 2), abs=1e-9
    )
    # exact duplicates across batches (b2 = a copy of b1): each cell's nearest other cell is
    # its copy (distance 0, tied with itself), so all neighbours are from the other batch:
    # observed share 1 against 30/59 expected -> 59/30
    pts = rng.normal(size=(30, 6))
    d = ad.AnnData(np.zeros((60, 1), np.float32))
    d.obs["batch"] = np.where(np.arange(60) < 30, "b1", "b2")
    d.obsm["r"] = np.concatenate([pts, pts]).astype(np.float32)
    m = batch_metrics(d, "r", "batch", n_neighbors=1).set_index("metric")["value"]
    assert m["batch_mixing"] == pytest.approx(59 / 30)
    # a cell with an all-zero representation has no cosine neighbours: refused
    a.obsm["r"][3] = 0
    with pytest.raises(ValueError, match=r"1 cell\(s\) have an all-zero 'r'"):
        batch_metrics(a, "r", "batch")


@pytest.mark.parametrize("metrics", [knn_metrics, cluster_metrics])
def test_cell_metrics_refuse_missing_labels(metrics):
    # a missing label is neither a class named "nan" (pandas 2) nor a float (pandas 3)
    a = _cells()
    a.obs["cell_type"] = a.obs["cell_type"].astype(object)
    a.obs.iloc[[3, 7], a.obs.columns.get_loc("cell_type")] = np.nan
    with pytest.raises(ValueError, match=r"2 missing value\(s\).*notna"):
        metrics(a, "X_emb", "cell_type")
    ok = metrics(a[a.obs["cell_type"].notna()].copy(), "X_emb", "cell_type")
    assert np.isfinite(ok["value"]).all()


def test_leiden_cluster_metrics_recover_planted_types():
    """Leiden on well-separated planted types finds them (ARI = AMI = 1, 3 clusters);
    on a representation of pure noise it agrees with the labels no better than chance."""
    from sklearn.metrics import adjusted_mutual_info_score

    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b", "c"], 60)
    centers = rng.normal(size=(3, 20)) * 10
    a = ad.AnnData(np.zeros((180, 1), np.float32), obs=pd.DataFrame({"t": y}))
    a.obs_names = [f"c{i}" for i in range(180)]
    a.obsm["X_sep"] = (centers[np.repeat(np.arange(3), 60)] + rng.normal(size=(180, 20))).astype(
        np.float32
    )
    a.obsm["X_noise"] = rng.normal(size=(180, 20)).astype(np.float32)
    c = cluster_metrics(a, "X_sep", "t", method="leiden", resolution=0.3).set_index("metric")
    assert c.loc["ari", "value"] == pytest.approx(1.0)
    assert c.loc["ami", "value"] == pytest.approx(adjusted_mutual_info_score(y, y))
    assert c.loc["n_clusters", "value"] == 3 and set(c["method"]) == {"leiden"}
    noise = cluster_metrics(a, "X_noise", "t", method="leiden").set_index("metric")["value"]
    assert abs(noise["ari"]) < 0.1 and noise["n_clusters"] >= 2
    with pytest.raises(ValueError, match="kmeans' or 'leiden"):
        cluster_metrics(a, "X_sep", "t", method="louvain")


# ----------------------------------------------------------------------------- loaders

DOSAGE_CSV = "ensembl_id,gene_name,dosage_insensitive,dosage_sensitive\nENSG1,TFA,Yes,\nENSG2,TFB,,Yes\nENSG3,TFC,Yes,\n"


def _write_fixtures(folder):
    (folder / "dosage_sens_tf_labels.csv").write_text(DOSAGE_CSV)
    for split, n in (("train", 4), ("test", 2)):
        (folder / f"{split}_text.txt").write_text("".join(f"A{i} B{i}\n" for i in range(n)))
        (folder / f"{split}_label.txt").write_text("".join(f"{i % 2}\n" for i in range(n)))
    (folder / "HuRI.tsv").write_text(
        "ENSG00000141510\tENSG00000135679\nENSG00000135679\tENSG00000141510\nENSG00000141510\tENSG00000141510\n"
    )
    (folder / "huri_symbols.tsv").write_text("TP53\tMDM2\nNA\tTP53\n")
    (folder / "panglao.tsv").write_text(
        "species\tofficial gene symbol\tcell type\tsensitivity_human\nMm Hs\tCD3E\tT cells\t0.5\n"
        "Hs\tCD3D\tT cells\t0.9\nMm\tCd19\tB cells\t1\nMm Hs\tCD19\tB cells\t0.7\n"
    )


def test_loaders_local_files(tmp_path):
    _write_fixtures(tmp_path)
    d = dosage_sensitive_tfs(tmp_path / "dosage_sens_tf_labels.csv")
    assert d.to_dict() == {"TFA": 0, "TFB": 1, "TFC": 0}
    with open(tmp_path / "d.pickle", "wb") as fh:
        pickle.dump(
            {"Dosage-sensitive TFs": ["ENSG00000141510"], "Dosage-insensitive TFs": ["ENSGX"]}, fh
        )
    with pytest.raises(ValueError, match="allow_pickle"):
        dosage_sensitive_tfs(tmp_path / "d.pickle")
    assert dosage_sensitive_tfs(tmp_path / "d.pickle", allow_pickle=True).to_dict() == {
        "TP53": 1,
        "ENSGX": 0,
    }
    g = gene2vec_ggi("train", tmp_path)
    assert g.columns.tolist() == ["gene1", "gene2", "label"] and g.label.tolist() == [0, 1, 0, 1]
    h = huri(tmp_path / "HuRI.tsv")
    assert h.values.tolist() == [["MDM2", "TP53"]]  # mapped, deduplicated, no self-pair
    assert huri(tmp_path / "huri_symbols.tsv").values.tolist() == [["MDM2", "TP53"], ["NA", "TP53"]]
    m = panglao_markers(tmp_path / "panglao.tsv")
    assert m[["cell_type", "gene"]].values.tolist() == [
        ["T cells", "CD3E"],
        ["T cells", "CD3D"],
        ["B cells", "CD19"],
    ]


@pytest.fixture
def loopback(tmp_path):
    _write_fixtures(tmp_path)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/", tmp_path
    srv.shutdown()


def test_loaders_loopback_server(loopback):
    url, folder = loopback
    sha = (
        "sha256:" + hashlib.sha256((folder / "dosage_sens_tf_labels.csv").read_bytes()).hexdigest()
    )
    d = dosage_sensitive_tfs(url=url + "dosage_sens_tf_labels.csv", known_hash=sha)
    assert d.sum() == 1 and len(d) == 3
    with pytest.raises(ValueError, match=r"(?i)sha256|hash"):  # pooch rejects a wrong hash
        huri(url=url + "HuRI.tsv", known_hash="sha256:" + "0" * 64)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        g = gene2vec_ggi("test", url=url, known_hash=None)
    assert any("without a hash check" in str(x.message) for x in w)
    assert len(g) == 2


# ----------------------------------------------------------------------------- probes


class WordEncoder(TextEncoder):
    """Deterministic bag-of-words vectors (one hashed direction per word)."""

    cache_id = "test-word-encoder"
    dim = 32
    max_tokens = 12

    def _encode(self, texts):
        out = np.zeros((len(texts), self.dim), np.float32)
        for r, t in enumerate(texts):
            for pos, w in enumerate(t.split()):
                h = int(hashlib.md5(w.encode()).hexdigest(), 16)
                out[r, h % self.dim] += 1.0 / (1 + pos)
        return out + 1e-3

    def count_tokens(self, texts):
        return np.array([len(t.split()) + 2 for t in texts])


def test_ablation_embeddings():
    rng = np.random.default_rng(0)
    X = rng.poisson(2, (6, 15)).astype(np.float32) + 1
    a = ad.AnnData(X)
    a.var_names = [f"GENE{i}" for i in range(15)]
    enc = WordEncoder()
    out = ablation_embeddings(a, enc, cache=False)
    assert set(out) == {"original", "hashed", "shuffled", "hashed_shuffled"}
    assert all(v.shape == (6, 32) for v in out.values())
    assert not np.allclose(out["original"], out["hashed"])
    assert not np.allclose(out["original"], out["shuffled"])
    # shuffling keeps the same genes: bag of words over a position-free encoder equal
    again = ablation_embeddings(a, enc, modes=("shuffled",), cache=False)
    np.testing.assert_array_equal(again["shuffled"], out["shuffled"])  # seeded
    with pytest.raises(ValueError, match="unknown ablation"):
        ablation_embeddings(a, enc, modes=("nope",))


def test_marker_similarity():
    rng = np.random.default_rng(0)
    markers = pd.DataFrame(
        {
            "cell type": ["T"] * 4 + ["B"] * 4 + ["NK"] * 3,
            "official gene symbol": [
                "T1",
                "T2",
                "T3",
                "T4",
                "B1",
                "B2",
                "B3",
                "B4",
                "N1",
                "N2",
                "N3",
            ],
        }
    )
    centres = {
        "T": rng.standard_normal(16),
        "B": rng.standard_normal(16),
        "NK": rng.standard_normal(16),
    }
    emb = pd.DataFrame(
        {
            g: centres[c] + 0.3 * rng.standard_normal(16)
            for c, g in zip(markers["cell type"], markers["official gene symbol"], strict=True)
        }
    ).T
    res = marker_similarity(emb, markers)
    assert list(res.index) == ["T", "B", "NK"] and res.loc["T", "top_marker"] == "T1"
    M = emb.to_numpy() / np.linalg.norm(emb.to_numpy(), axis=1, keepdims=True)
    M = pd.DataFrame(M, index=emb.index)
    intra = M.loc[["T2", "T3", "T4"]].to_numpy() @ M.loc["T1"].to_numpy()
    inter = M.loc[["B1", "B2", "B3", "B4", "N1", "N2", "N3"]].to_numpy() @ M.loc["T1"].to_numpy()
    assert res.loc["T", "intra"] == pytest.approx(intra.mean())
    assert res.loc["T", "inter"] == pytest.approx(inter.mean())
    assert res.attrs["summary"]["gap"] > 0.3
    # text encoder embeds the names; dict input
    r2 = marker_similarity(WordEncoder(), {"T": ["T1", "T2"], "B": ["B1", "B2"]})
    assert r2.shape[0] == 2
    # missing cell types or genes are not markers (not a cell type or gene called "nan")
    holes = pd.concat(
        [markers, pd.DataFrame({"cell type": [np.nan, "T"], "official gene symbol": ["B1", None]})]
    )
    pd.testing.assert_frame_equal(marker_similarity(emb, holes), res)
    r3 = marker_similarity(
        WordEncoder(),
        {"T": ["T1", np.nan, "T2"], "B": ["B1", None, pd.NA, np.float32("nan"), "B2"]},
    )
    pd.testing.assert_frame_equal(r3, r2)
