"""gpt.bm.lexical_leakage: known answers on tiny tables and a brute-force reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import genept as gpt


def _cards(go: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({"go_mf": pd.Series(go), "go_bp": None, "go_cc": None})


def test_known_example_all_leak():
    cards = _cards({"ABC1": "a", "ABC2": "b", "XYZ1": "a", "XYZ2": "b"})
    # ABC1 ~ ABC2 and XYZ1 ~ XYZ2: neighbours share the prefix, not the GO term
    emb = pd.DataFrame(np.eye(4)[[0, 0, 1, 1]] + 0.01 * np.eye(4), index=cards.index)
    res = gpt.bm.lexical_leakage(emb, cards, k=1, min_go_terms=1, include_random=False)
    row = res.iloc[0]
    assert row["embedding"] == "genept"
    assert row["leakage"] == 1.0 and row["same_prefix"] == 1.0 and row["shared_go"] == 0.0
    assert row["n_genes"] == 4 and row["n_pairs"] == 4 and row["k"] == 1


def test_known_example_biology_no_leak():
    cards = _cards({"ABC1": "a", "ABC2": "b", "XYZ1": "a", "XYZ2": "b"})
    # ABC1 ~ XYZ1 (share GO a), ABC2 ~ XYZ2 (share GO b): biology, no shared prefix
    emb = pd.DataFrame(np.eye(4)[[0, 1, 0, 1]] + 0.01 * np.eye(4), index=cards.index)
    row = gpt.bm.lexical_leakage(emb, cards, k=1, min_go_terms=1, include_random=False).iloc[0]
    assert row["leakage"] == 0.0 and row["same_prefix"] == 0.0 and row["shared_go"] == 1.0


def test_same_prefix_with_shared_go_is_no_leak():
    # same prefix AND a shared term (PSMB1/PSMB2, both proteasome) is biology, not leakage
    cards = _cards({"PSMB1": "proteasome|x", "PSMB2": "proteasome|y", "CD3E": "tcr", "TRAC": "tcr"})
    emb = pd.DataFrame(np.eye(4)[[0, 0, 1, 1]] + 0.01 * np.eye(4), index=cards.index)
    row = gpt.bm.lexical_leakage(emb, cards, k=1, min_go_terms=1, include_random=False).iloc[0]
    assert row["leakage"] == 0.0
    assert row["same_prefix"] == 0.5  # PSMB1<->PSMB2 yes, CD3E<->TRAC no
    assert row["shared_go"] == 1.0


def _reference(M: np.ndarray, genes, go_sets, k, prefix):
    """Brute force: full cosine matrix, stable sort, explicit loops."""
    U = M / np.linalg.norm(M, axis=1, keepdims=True)
    S = U @ U.T
    leak = same = shared = 0
    for i in range(len(genes)):
        order = [j for j in np.argsort(-S[i], kind="stable") if j != i][:k]
        for j in order:
            sp = (
                len(genes[i]) >= prefix
                and len(genes[j]) >= prefix
                and genes[i][:prefix].upper() == genes[j][:prefix].upper()
            )
            sg = bool(go_sets[i] & go_sets[j])
            same += sp
            shared += sg
            leak += sp and not sg
    n = len(genes) * k
    return leak / n, same / n, shared / n


def test_matches_brute_force_reference():
    rng = np.random.default_rng(3)
    prefixes = ["ABC", "ABD", "XYZ", "KLM"]
    genes = [f"{prefixes[i % 4]}{i}" for i in range(60)] + ["AB", "ab9"]
    terms = [f"t{j}" for j in range(8)]
    go = {g: "|".join(rng.choice(terms, size=rng.integers(1, 4), replace=False)) for g in genes}
    cards = _cards(go)
    M = rng.standard_normal((len(genes), 5)).astype(np.float32)
    M[: len(genes) // 2] += 2 * rng.standard_normal(5)  # some structure
    emb = pd.DataFrame(M, index=genes)
    k, prefix = 4, 3
    res = gpt.bm.lexical_leakage(
        emb, cards, k=k, prefix=prefix, min_go_terms=1, include_random=False
    )
    go_sets = [set(go[g].split("|")) for g in genes]
    ref = _reference(M.astype(np.float64), genes, go_sets, k, prefix)
    row = res.iloc[0]
    assert row["leakage"] == pytest.approx(ref[0])
    assert row["same_prefix"] == pytest.approx(ref[1])
    assert row["shared_go"] == pytest.approx(ref[2])
    assert row["n_pairs"] == len(genes) * k


def test_well_annotated_filter_and_genes_subset():
    cards = _cards({"ABC1": "a|b", "ABC2": "c|d", "ABC3": "e", "XYZ1": "a|c", "XYZ2": "b|d"})
    emb = pd.DataFrame(
        np.random.default_rng(0).standard_normal((6, 3)),
        index=["ABC1", "ABC2", "ABC3", "XYZ1", "XYZ2", "NOCARD"],
    )
    res = gpt.bm.lexical_leakage(emb, cards, k=1, min_go_terms=2, include_random=False)
    assert res.iloc[0]["n_genes"] == 4  # ABC3 (1 term) and NOCARD (no card) left out
    res = gpt.bm.lexical_leakage(
        emb, cards, k=1, min_go_terms=2, genes=["ABC1", "ABC2", "XYZ1"], include_random=False
    )
    assert res.iloc[0]["n_genes"] == 3
    with pytest.raises(ValueError, match="min_go_terms"):
        gpt.bm.lexical_leakage(emb, cards, k=4, min_go_terms=2)


def test_random_control_and_bad_arguments():
    cards = _cards({f"G{i:03d}": f"t{i % 5}" for i in range(40)})
    emb = pd.DataFrame(np.random.default_rng(1).standard_normal((40, 8)), index=cards.index)
    a = gpt.bm.lexical_leakage(emb, cards, k=3, min_go_terms=1, name="mine")
    b = gpt.bm.lexical_leakage(emb, cards, k=3, min_go_terms=1, name="mine")
    assert list(a["embedding"]) == ["mine", "random"]
    pd.testing.assert_frame_equal(a, b)  # seeded control
    with pytest.raises(ValueError, match="k must be"):
        gpt.bm.lexical_leakage(emb, cards, k=0)
    with pytest.raises(ValueError, match="prefix must be"):
        gpt.bm.lexical_leakage(emb, cards, prefix=0)
    with pytest.raises(ValueError, match="GO columns"):
        gpt.bm.lexical_leakage(emb, pd.DataFrame({"name": ["x"]}, index=["G000"]), min_go_terms=1)


def test_max_terms_compares_the_terms_a_card_names():
    # ABC1 and ABC2 share only their second term: a leak when cards name one term each
    cards = _cards({"ABC1": "a|shared", "ABC2": "b|shared", "XYZ1": "c|d", "XYZ2": "e|f"})
    emb = pd.DataFrame(np.eye(4)[[0, 0, 1, 1]] + 0.01 * np.eye(4), index=cards.index)
    kw = dict(k=1, min_go_terms=2, include_random=False)
    assert gpt.bm.lexical_leakage(emb, cards, max_terms=None, **kw).iloc[0]["leakage"] == 0.5
    assert gpt.bm.lexical_leakage(emb, cards, max_terms=1, **kw).iloc[0]["leakage"] == 1.0
