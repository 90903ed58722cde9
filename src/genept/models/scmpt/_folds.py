"""Validation splits and selection folds of scMPT's model selection.

* :func:`stratified_split` -- the validation split of the reference (stratified by label);
* :func:`extra_folds` -- further folds of a stratified cross-validation whose first fold
  is that split (``selection_folds``);
* :func:`group_folds` -- with ``groups`` (a donor or batch per reference cell), folds
  that hold out whole groups, so that validation measures how each candidate transfers
  to groups it has not seen (leave-group-out; scikit-learn's ``StratifiedGroupKFold``);
* :func:`selection_split` / :func:`more_folds` -- the split and folds :func:`._train.train`
  uses, grouped or not.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

__all__ = [
    "check_groups",
    "extra_folds",
    "group_folds",
    "more_folds",
    "selection_split",
    "stratified_split",
]


def stratified_split(
    codes: np.ndarray, val_size: float, seed: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Stratified train/validation indices, or ``None`` when the reference is too small.

    Classes with a single cell stay in training (with a warning). ``None`` when fewer
    than two classes have two cells, or the validation or training part could not hold
    one cell of each such class.
    """
    from sklearn.model_selection import train_test_split

    if not val_size:
        return None
    counts = np.bincount(codes)
    ok_classes = np.flatnonzero(counts >= 2)
    eligible = np.isin(codes, ok_classes)
    idx = np.flatnonzero(eligible)
    n_val = math.ceil(val_size * idx.size) if val_size < 1 else int(val_size)
    if ok_classes.size < 2 or n_val < ok_classes.size or idx.size - n_val < ok_classes.size:
        return None
    try:
        tr, va = train_test_split(idx, test_size=val_size, stratify=codes[idx], random_state=seed)
    except ValueError:
        return None
    single = np.flatnonzero(~eligible)
    if single.size:
        warnings.warn(
            f"{single.size} classes have a single reference cell; those cells are used "
            "for training only (not validated)",
            UserWarning,
            stacklevel=5,
        )
    return np.sort(np.concatenate([tr, single])), np.sort(va)


def extra_folds(
    codes: np.ndarray, split: tuple[np.ndarray, np.ndarray], n_folds: int, max_folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds 2..``n_folds`` of a stratified cross-validation whose first fold is ``split``.

    The training part of ``split`` is cut (stratified) into ``max_folds - 1`` disjoint
    chunks of about the validation split's size; fold ``j`` holds out chunk ``j`` and
    trains on every other cell of the split, so all held-out cells are distinct.
    """
    from sklearn.model_selection import StratifiedKFold

    tr, va = split
    if n_folds <= 1 or max_folds <= 1:
        return []
    everyone = np.sort(np.concatenate([tr, va]))
    if max_folds == 2:
        chunks = [tr]
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # classes with fewer cells than chunks
            try:
                skf = StratifiedKFold(max_folds - 1, shuffle=True, random_state=seed)
                chunks = [tr[c] for _, c in skf.split(tr, codes[tr])]
            except ValueError:  # no class has enough cells to stratify
                return []
    return [(np.setdiff1d(everyone, c), np.sort(c)) for c in chunks[: n_folds - 1]]


def check_groups(groups, n_cells: int, what: str = "groups") -> np.ndarray | None:
    """``groups`` as an integer code per cell (``None`` stays ``None``); clear errors."""
    from ..._core._labels import label_strings  # missing values as labels treat them

    if groups is None:
        return None
    values = label_strings(np.asarray(groups, dtype=object).ravel())
    if values.size != n_cells:
        raise ValueError(f"{what} has {values.size} values for {n_cells} reference cells")
    missing = np.array([v is None for v in values], dtype=bool)
    if missing.any():
        raise ValueError(
            f"{what} has {int(missing.sum())} missing value(s): give every reference cell "
            "its group (donor, batch), or subset the reference first"
        )
    uniques, codes = np.unique(values.astype(str), return_inverse=True)
    if uniques.size < 2:
        raise ValueError(
            f"{what} has a single group ({uniques[0]!r}); leave-group-out validation needs "
            "at least 2 (omit it for a stratified split)"
        )
    return codes.astype(np.int64)


def group_folds(
    codes: np.ndarray, groups: np.ndarray, n_splits: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds that each hold out whole groups, label proportions kept where possible.

    ``min(n_splits, number of groups)`` folds of ``StratifiedGroupKFold`` (shuffled with
    ``seed``); every cell is held out once. A label seen only in held-out groups is
    absent from that fold's training cells, as it would be for a new donor.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    k = int(min(max(n_splits, 2), np.unique(groups).size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes with fewer groups than folds
        cv = StratifiedGroupKFold(k, shuffle=True, random_state=seed)
        folds = [
            (np.sort(tr), np.sort(va)) for tr, va in cv.split(np.zeros(codes.size), codes, groups)
        ]
    # largest validation fold first: the split whose cells choose early stopping
    return sorted(folds, key=lambda f: -f[1].size) if folds else folds


def selection_split(
    codes: np.ndarray, val_size: float, seed: int, groups: np.ndarray | None = None
) -> tuple[tuple[np.ndarray, np.ndarray] | None, list[tuple[np.ndarray, np.ndarray]] | None]:
    """The validation split, and with ``groups`` the other group folds (else ``None``).

    Without ``groups``: :func:`stratified_split`; with them, the first of
    :func:`group_folds` (``1 / val_size`` folds at most), the rest returned for
    :func:`more_folds` so that the folds are made once.
    """
    if groups is None:
        return stratified_split(codes, val_size, seed), None
    if not val_size:
        return None, None
    folds = group_folds(codes, groups, max(2, round(1 / float(val_size))), seed)
    return folds[0], folds[1:]


def more_folds(
    codes: np.ndarray,
    split: tuple[np.ndarray, np.ndarray],
    n_folds: int,
    max_folds: int,
    seed: int,
    group_rest: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds 2..``n_folds`` after ``split``.

    :func:`extra_folds`, or the other group folds (``group_rest`` of :func:`selection_split`).
    """
    if group_rest is None:
        return extra_folds(codes, split, n_folds, max_folds, seed)
    return group_rest[: max(0, n_folds - 1)]
