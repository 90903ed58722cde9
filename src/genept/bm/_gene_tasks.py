"""Gene-level evaluations of GenePT: gene properties, gene functions, gene/protein pairs.

* :func:`gene_property_auc` — binary gene labels (e.g. dosage-sensitive TFs), k-fold
  cross-validated ROC-AUC of an l2 logistic regression and a random forest with
  scikit-learn defaults (GenePT section 4.2, table 1).
* :func:`gene_function_accuracy` — multi-class gene labels (functional class), accuracy
  of an l2 logistic regression (section 4.1, appendix B.1).
* :func:`pair_auc` — gene-gene / protein-protein interactions: the sum of the two gene
  embeddings + l2 logistic regression, test ROC-AUC (section 4.1). Positive-only pair
  lists (HuRI) get sampled negatives, uniform and degree-matched.

Every function adds the papers' negative control, random vectors of the same width.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg

from .._core._keys import recorded_params
from .._utils import renamed_arg
from ._common import as_embedding_frame, random_like

__all__ = [
    "NEGATIVE_MODES",
    "gene_function_accuracy",
    "gene_property_auc",
    "pair_auc",
    "pair_features",
    "sample_negative_pairs",
]

NEGATIVE_MODES = ("uniform", "degree_matched")


def _classifier(name: str, random_state: int):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    if name == "lr":
        return LogisticRegression(max_iter=2000)  # l2 penalty, C=1 (scikit-learn default)
    if name == "rf":
        return RandomForestClassifier(random_state=random_state)  # scikit-learn defaults
    raise ValueError(f"unknown model {name!r}; choose 'lr' or 'rf'")


def _embeddings(
    emb: Any, include_random: bool, random_state: int, name: str | None, gene_key: str = "X_genept"
):
    frame = as_embedding_frame(emb, gene_key=gene_key)
    if name is None and isinstance(emb, AnnData):
        # a tissue-context embedding (embed_genes(context=...)) is named by its context
        ctx = recorded_params(emb, gene_key).get("context")
        name = f"genept ({ctx})" if ctx else None
    embs = {name or "genept": frame}
    if include_random:
        embs["random"] = random_like(frame, random_state=random_state)
    return embs


def _align(frame: pd.DataFrame, labels: pd.Series, what: str) -> pd.Series:
    labels = labels[~labels.index.duplicated()].dropna()
    labels.index = labels.index.astype(str)
    keep = labels.index.isin(frame.index)
    if not keep.any():
        raise ValueError(
            f"no gene of the {what} has an embedding (labels: {', '.join(labels.index[:5])}, ...; "
            f"embeddings: {', '.join(frame.index[:5])}, ...)"
        )
    if (~keep).any():
        logg.info(
            f"    {int((~keep).sum())} of {len(labels)} labelled genes have no embedding; left out"
        )
    return labels[keep]


@renamed_arg("seed", "random_state")
def gene_property_auc(
    emb: Any,
    labels: pd.Series,
    *,
    models: Sequence[str] = ("lr", "rf"),
    n_splits: int = 5,
    random_state: int = 0,
    include_random: bool = True,
    name: str | None = None,
) -> pd.DataFrame:
    """Cross-validated ROC-AUC of predicting a binary gene property from gene embeddings.

    GenePT section 4.2: five-fold cross-validated ROC-AUC of an l2-penalised logistic
    regression (``"lr"``) and a random forest (``"rf"``), scikit-learn defaults.

    Parameters
    ----------
    emb
        Gene embeddings: :class:`~genept.GeneEmbeddings`, DataFrame indexed by gene, dict,
        or AnnData with ``varm['X_genept']``.
    labels
        Gene -> 0/1 (or bool). Genes without an embedding are left out.
    models
        Classifiers, ``"lr"`` and/or ``"rf"``.
    n_splits
        Folds of the stratified, shuffled (``random_state``) cross-validation.
    random_state
        Fold split, random forest and random control.
    include_random
        Also evaluate random vectors of the same width (the papers' negative control).
    name
        Name of ``emb`` in the ``embedding`` column (default ``"genept"``).

    Returns
    -------
    Tidy DataFrame: ``embedding``, ``model``, ``fold``, ``auc``, ``n_genes``. Summarise
    with :func:`genept.bm.summarize`.

    Examples
    --------
    >>> res = gpt.bm.gene_property_auc(adata, labels)  # doctest: +SKIP
    >>> gpt.bm.summarize(res)  # doctest: +SKIP
    """
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    embs = _embeddings(emb, include_random, random_state, name)
    first = next(iter(embs.values()))
    y_all = _align(first, pd.Series(labels), "labels")
    y = y_all.astype(int).to_numpy()
    if set(np.unique(y)) != {0, 1}:
        raise ValueError(f"labels must be binary 0/1, got values {sorted(set(np.unique(y)))[:5]}")
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    rows = []
    for ename, frame in embs.items():
        X = frame.loc[y_all.index].to_numpy(dtype=np.float32)
        for m in models:
            for fold, (tr, te) in enumerate(cv.split(X, y)):
                clf = _classifier(m, random_state).fit(X[tr], y[tr])
                auc = roc_auc_score(y[te], clf.predict_proba(X[te])[:, 1])
                rows.append(
                    {
                        "embedding": ename,
                        "model": m,
                        "fold": fold,
                        "auc": float(auc),
                        "n_genes": len(y),
                    }
                )
    return pd.DataFrame(rows)


@renamed_arg("seed", "random_state")
def gene_function_accuracy(
    emb: Any,
    labels: pd.Series,
    *,
    n_splits: int = 5,
    min_class_size: int | None = None,
    random_state: int = 0,
    include_random: bool = True,
    name: str | None = None,
) -> pd.DataFrame:
    """Cross-validated accuracy of predicting a gene's class (multi-class) from embeddings.

    GenePT section 4.1 / appendix B.1: an l2 logistic regression on the 15 most common
    functional gene classes (accuracy 0.96; 0.95 vs Gene2vec's 0.86 in 5-fold CV).

    Parameters
    ----------
    emb
        Gene embeddings (as in :func:`gene_property_auc`).
    labels
        Gene -> class label.
    n_splits
        Stratified folds.
    min_class_size
        Drop classes with fewer genes (default: ``n_splits``, the least stratification needs).
    random_state, include_random, name
        As in :func:`gene_property_auc`.

    Returns
    -------
    Tidy DataFrame: ``embedding``, ``model``, ``fold``, ``accuracy``, ``macro_f1``,
    ``n_genes``, ``n_classes``.

    Examples
    --------
    >>> import numpy as np, pandas as pd, genept as gpt
    >>> rng = np.random.default_rng(0)
    >>> genes = [f"G{i}" for i in range(60)]
    >>> labels = pd.Series(np.repeat(["a", "b", "c"], 20), index=genes)
    >>> centres = {"a": 0, "b": 1, "c": 2}
    >>> emb = {g: np.eye(3)[centres[c]] + 0.1 * rng.standard_normal(3)
    ...        for g, c in labels.items()}
    >>> res = gpt.bm.gene_function_accuracy(emb, labels, include_random=False)
    >>> bool(res["accuracy"].min() > 0.9)
    True
    """
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold

    embs = _embeddings(emb, include_random, random_state, name)
    first = next(iter(embs.values()))
    # missing labels are dropped before the text conversion (NaN would become a class "nan")
    y_all = _align(first, pd.Series(labels), "labels").astype(str)
    counts = y_all.value_counts()
    min_class_size = n_splits if min_class_size is None else min_class_size
    y_all = y_all[y_all.map(counts) >= min_class_size]
    if y_all.nunique() < 2:
        raise ValueError(f"need at least 2 classes with >= {min_class_size} genes")
    y = y_all.to_numpy()
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    rows = []
    for ename, frame in embs.items():
        X = frame.loc[y_all.index].to_numpy(dtype=np.float32)
        for fold, (tr, te) in enumerate(cv.split(X, y)):
            pred = _classifier("lr", random_state).fit(X[tr], y[tr]).predict(X[te])
            rows.append(
                {
                    "embedding": ename,
                    "model": "lr",
                    "fold": fold,
                    "accuracy": float(accuracy_score(y[te], pred)),
                    "macro_f1": float(f1_score(y[te], pred, average="macro")),
                    "n_genes": len(y),
                    "n_classes": int(y_all.nunique()),
                }
            )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------
# pairs
# --------------------------------------------------------------------------------------


def _as_pairs(pairs: Any, what: str) -> pd.DataFrame:
    if isinstance(pairs, pd.DataFrame):
        df = pairs.copy()
        if not {"gene1", "gene2"} <= set(df.columns):
            if df.shape[1] < 2:
                raise ValueError(f"{what} needs columns gene1, gene2 (and optionally label)")
            cols = list(df.columns)
            ren = {cols[0]: "gene1", cols[1]: "gene2"}
            if df.shape[1] >= 3 and "label" not in df.columns:
                ren[cols[2]] = "label"
            df = df.rename(columns=ren)
    else:
        arr = list(pairs)
        width = len(arr[0]) if arr else 2
        df = pd.DataFrame(arr, columns=["gene1", "gene2", "label"][:width])
    df["gene1"] = df["gene1"].astype(str)
    df["gene2"] = df["gene2"].astype(str)
    cols = ["gene1", "gene2"] + (["label"] if "label" in df.columns else [])
    df = df[cols]
    if "label" in df.columns:
        df["label"] = df["label"].astype(int)
    return df.reset_index(drop=True)


def _pair_keys(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return lo.astype(np.int64) * n + hi


@renamed_arg("seed", "random_state")
def sample_negative_pairs(
    positives: pd.DataFrame,
    n: int | None = None,
    *,
    mode: str = "uniform",
    universe: Sequence[str] | None = None,
    exclude: pd.DataFrame | None = None,
    calibrate: int = 5,
    random_state: int = 0,
) -> pd.DataFrame:
    """Sample gene pairs that are not known positives.

    Parameters
    ----------
    positives
        Known interacting pairs (columns ``gene1``, ``gene2``).
    n
        Number of negatives (default: as many as positives).
    mode
        ``"uniform"``: both genes uniform over ``universe``. ``"degree_matched"``: each
        gene drawn with probability proportional to its degree among the positives, so
        every gene appears about as often among negatives as among positives and the
        degree of a gene cannot tell a positive from a negative. (With uniform negatives
        even random vectors reach ROC-AUC ~0.66, by recognising hub genes.)
    universe
        Genes to draw from (default: the genes of ``positives``). Degree-matched
        sampling draws from the genes of ``positives`` only.
    exclude
        More pairs that must not be drawn (e.g. positives of another split).
    calibrate
        Degree-matched only: rounds of re-weighting the genes so that each gene's count
        among the negatives matches its degree among the positives (rejecting known
        positives otherwise under-samples hubs, whose partners are mostly positives).
        ``0``: plain degree-proportional draws.
    random_state
        Seed of the negative sampling.

    Returns
    -------
    DataFrame ``gene1``, ``gene2``, ``label`` (0): unique unordered pairs, no self-pairs,
    none of them in ``positives`` or ``exclude``.

    Examples
    --------
    >>> import pandas as pd, genept as gpt
    >>> pos = pd.DataFrame({"gene1": ["A", "B", "C"], "gene2": ["B", "C", "D"]})
    >>> neg = gpt.bm.sample_negative_pairs(pos, 2, universe=list("ABCDEF"))
    >>> len(neg), neg["label"].tolist()
    (2, [0, 0])
    """
    if mode not in NEGATIVE_MODES:
        raise ValueError(f"negatives must be one of {NEGATIVE_MODES}, got {mode!r}")
    pos = _as_pairs(positives, "positives")
    n = len(pos) if n is None else int(n)
    rng = np.random.default_rng(random_state)
    pos_genes = pd.Index(
        pd.unique(np.concatenate([pos["gene1"].to_numpy(), pos["gene2"].to_numpy()]))
    )
    if universe is None or mode == "degree_matched":
        genes = pos_genes
    else:
        genes = pd.Index(pd.unique(np.asarray(universe, dtype=object).astype(str)))
    G = len(genes)
    if G < 2:
        raise ValueError("need at least 2 genes to sample pairs")
    code = {g: i for i, g in enumerate(genes)}
    known = []
    for df in (pos, _as_pairs(exclude, "exclude") if exclude is not None else None):
        if df is None:
            continue
        a = df["gene1"].map(code)
        b = df["gene2"].map(code)
        ok = a.notna() & b.notna()
        known.append(_pair_keys(a[ok].to_numpy(np.int64), b[ok].to_numpy(np.int64), G))
    known_keys = np.unique(np.concatenate(known)) if known else np.zeros(0, np.int64)
    if mode == "degree_matched":
        deg = pd.concat([pos["gene1"], pos["gene2"]]).value_counts().reindex(genes).to_numpy(float)
        p = deg / deg.sum()
    else:
        p = None
    max_pairs = G * (G - 1) // 2 - len(known_keys)
    if n > max_pairs:
        raise ValueError(f"cannot sample {n} negatives: only {max_pairs} non-positive pairs exist")

    def draw(p, rng):
        chosen = np.zeros(0, np.int64)
        for _ in range(100):
            need = n - len(chosen)
            if need <= 0:
                break
            m = max(2 * need, 4096)
            a = rng.choice(G, size=m, p=p)
            b = rng.choice(G, size=m, p=p)
            ok = a != b
            keys = _pair_keys(a[ok], b[ok], G)
            keys = keys[~np.isin(keys, known_keys)]
            keys = keys[~np.isin(keys, chosen)]
            _, first = np.unique(keys, return_index=True)
            keys = keys[np.sort(first)]  # unique, in draw order
            chosen = np.concatenate([chosen, keys[:need]])
        if len(chosen) < n:
            raise RuntimeError(
                f"sampled only {len(chosen)} of {n} negatives; the pair space is too dense"
            )
        return chosen

    if mode == "degree_matched":
        # Hubs' partners are mostly positives already, so rejection under-samples hubs.
        # Calibrate the gene weights until the negatives' degrees match the positives'.
        target = deg * (n / len(pos))
        last = p
        for r in range(calibrate):
            try:
                keys = draw(p, np.random.default_rng([random_state, r + 1]))
            except RuntimeError:  # too dense to push further: keep the last weights
                p = last
                break
            got = np.bincount(np.concatenate([keys // G, keys % G]), minlength=G).astype(float)
            last = p
            p = p * np.clip(np.sqrt((target + 1.0) / (got + 1.0)), 0.5, 2.0)
            p /= p.sum()
    chosen = draw(p, rng)
    lo, hi = chosen // G, chosen % G
    # random orientation, so gene1/gene2 carry no signal
    flip = rng.random(len(lo)) < 0.5
    g1 = np.where(flip, hi, lo)
    g2 = np.where(flip, lo, hi)
    return pd.DataFrame(
        {
            "gene1": genes[g1].astype(str),
            "gene2": genes[g2].astype(str),
            "label": np.zeros(len(lo), dtype=int),
        }
    )


def pair_features(frame: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
    """Sum of the two genes' embeddings per pair (order-free, as in GenePT).

    Parameters
    ----------
    frame
        Embeddings indexed by gene (:func:`as_embedding_frame`).
    pairs
        Columns ``gene1`` and ``gene2``; every gene must have an embedding.

    Examples
    --------
    >>> import numpy as np, pandas as pd, genept as gpt
    >>> frame = pd.DataFrame(np.eye(3), index=["A", "B", "C"])
    >>> gpt.bm.pair_features(frame, pd.DataFrame({"gene1": ["A"], "gene2": ["C"]}))
    array([[1., 0., 1.]], dtype=float32)
    """
    a = frame.index.get_indexer(pairs["gene1"])
    b = frame.index.get_indexer(pairs["gene2"])
    if (a < 0).any() or (b < 0).any():
        raise KeyError("pairs contain genes without an embedding; filter them first")
    M = frame.to_numpy(dtype=np.float32)
    return M[a] + M[b]


def _filter_pairs(df: pd.DataFrame, genes: pd.Index, what: str) -> pd.DataFrame:
    keep = df["gene1"].isin(genes) & df["gene2"].isin(genes)
    if not keep.any():
        raise ValueError(f"no pair of {what} has both genes embedded")
    if (~keep).any():
        logg.info(
            f"    {int((~keep).sum())} of {len(df)} {what} pairs have a gene without embedding; left out"
        )
    return df[keep].reset_index(drop=True)


@renamed_arg("seed", "random_state")
def pair_auc(
    emb: Any,
    pairs_train: Any,
    pairs_test: Any = None,
    *,
    negatives: str | Sequence[str] | None = None,
    universe: Sequence[str] | None = None,
    test_size: float = 0.2,
    random_state: int = 0,
    include_random: bool = True,
    name: str | None = None,
    gene_key: str = "X_genept",
) -> pd.DataFrame:
    """Test ROC-AUC of predicting gene-pair interactions from summed gene embeddings.

    GenePT section 4.1: features are the sum of the two genes' embeddings, the classifier
    an l2-regularised logistic regression.

    Parameters
    ----------
    emb
        Gene embeddings (as in :func:`gene_property_auc`).
    pairs_train
        DataFrame ``gene1``, ``gene2`` and optionally ``label`` (0/1), or a list of tuples.
        Without ``label`` all pairs are positives and negatives are sampled.
    pairs_test
        Test pairs, same format. ``None``: a random ``test_size`` split of ``pairs_train``
        (for positive-only pairs each split then gets its own sampled negatives).
    negatives
        For positive-only pairs: ``"uniform"``, ``"degree_matched"`` or both (default
        ``None`` = both, one result each); see :func:`sample_negative_pairs`. Negatives
        never coincide with a known positive (train or test).
    universe
        Genes uniform negatives are drawn from (default: genes of the positives).
    test_size
        Fraction held out when ``pairs_test`` is ``None``.
    random_state
        Split, negative sampling and random control.
    include_random
        Also evaluate random vectors of the same width.
    name
        Name of ``emb`` in the ``embedding`` column (default ``"genept"``, or
        ``"genept (<context>)"`` for a tissue-context embedding of an AnnData).
    gene_key
        ``varm`` key when ``emb`` is an AnnData, e.g. the tissue-context embedding of
        ``gpt.tl.embed_genes(adata, context="heart", key_added="X_genept_heart")`` (GenePT
        appendix B.5: context-specific embeddings for tissue-specific interaction tasks).

    Returns
    -------
    Tidy DataFrame: ``embedding``, ``negatives`` (``"given"`` for labelled pairs),
    ``auc``, ``n_train``, ``n_test``.

    Examples
    --------
    >>> import numpy as np, pandas as pd, genept as gpt
    >>> rng = np.random.default_rng(0)
    >>> emb = {f"G{i}": rng.standard_normal(8) for i in range(40)}
    >>> pos = pd.DataFrame({"gene1": [f"G{i}" for i in range(0, 40, 2)],
    ...                     "gene2": [f"G{i}" for i in range(1, 40, 2)]})
    >>> res = gpt.bm.pair_auc(emb, pos, negatives="uniform", include_random=False)
    >>> res[["negatives", "auc"]].shape
    (1, 2)
    """
    from sklearn.metrics import roc_auc_score

    embs = _embeddings(emb, include_random, random_state, name, gene_key)
    genes = next(iter(embs.values())).index
    train = _filter_pairs(_as_pairs(pairs_train, "train"), genes, "train")
    test = (
        None if pairs_test is None else _filter_pairs(_as_pairs(pairs_test, "test"), genes, "test")
    )
    labelled = "label" in train.columns
    if test is not None and (("label" in test.columns) != labelled):
        raise ValueError("pairs_train and pairs_test must both have a label column, or neither")
    rng = np.random.default_rng(random_state)

    def split(df):
        is_test = rng.random(len(df)) < test_size
        return df[~is_test].reset_index(drop=True), df[is_test].reset_index(drop=True)

    if labelled:
        if test is None:
            train, test = split(train)
        if negatives is not None:
            raise ValueError("negatives= is for positive-only pairs; the pairs have labels")
        designs = {"given": (train, test)}
    else:
        modes = (
            NEGATIVE_MODES
            if negatives is None
            else ([negatives] if isinstance(negatives, str) else list(negatives))
        )
        uni = (
            None
            if universe is None
            else pd.Index(np.asarray(universe, dtype=object).astype(str)).intersection(genes)
        )
        designs = {}
        train_pos, test_pos = split(train) if test is None else (train, test)
        for k, mode in enumerate(modes):
            # each split gets its own negatives, matched to its own positives: matching the
            # degrees of all positives at once would tie a gene's excess of positives in the
            # train split to a deficit in the test split (AUC below 0.5 for any embedding)
            neg_tr = sample_negative_pairs(
                train_pos,
                mode=mode,
                universe=uni,
                exclude=test_pos,
                random_state=random_state + 2 * k,
            )
            neg_te = sample_negative_pairs(
                test_pos,
                mode=mode,
                universe=uni,
                exclude=pd.concat([train_pos, neg_tr[["gene1", "gene2"]]]),
                random_state=random_state + 2 * k + 1,
            )
            designs[mode] = (
                pd.concat([train_pos.assign(label=1), neg_tr], ignore_index=True),
                pd.concat([test_pos.assign(label=1), neg_te], ignore_index=True),
            )
    rows = []
    for neg_name, (tr, te) in designs.items():
        for ename, frame in embs.items():
            clf = _classifier("lr", random_state).fit(
                pair_features(frame, tr), tr["label"].to_numpy()
            )
            score = clf.predict_proba(pair_features(frame, te))[:, 1]
            rows.append(
                {
                    "embedding": ename,
                    "negatives": neg_name,
                    "auc": float(roc_auc_score(te["label"].to_numpy(), score)),
                    "n_train": len(tr),
                    "n_test": len(te),
                }
            )
    return pd.DataFrame(rows)
