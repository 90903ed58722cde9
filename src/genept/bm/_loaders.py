"""Loaders of the gene-level benchmark data of GenePT, through ``pooch`` or local files.

* :func:`dosage_sensitive_tfs` — Geneformer's dosage-sensitive (1) vs -insensitive (0)
  transcription factors (Theodoris et al. 2023, Genecorpus-30M example files).
* :func:`gene2vec_ggi` — Gene2vec's gene-gene interaction pairs (Du et al. 2019),
  ``train``/``valid``/``test`` split, labels 0/1.
* :func:`huri` — HuRI binary protein interactions (Luck et al. 2020), positives only.
* :func:`panglao_markers` — PanglaoDB marker genes (cell type -> genes).

Each takes ``path=`` (a local copy) or downloads once into ``genept.settings.cache_dir``.
The hashes below are SHA-256 of the copies used to develop genept; if a server's file
changed, pass ``known_hash=None`` (no check, a warning is logged) or the new hash.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "DOSAGE_CSV_URL",
    "DOSAGE_PICKLE_URL",
    "GENE2VEC_URL",
    "HURI_URL",
    "dosage_sensitive_tfs",
    "gene2vec_ggi",
    "huri",
    "panglao_markers",
]

_GC = "https://huggingface.co/datasets/ctheodoris/Genecorpus-30M/resolve/main/example_input_files/gene_classification/dosage_sensitive_tfs/"
#: Geneformer's labels as CSV (``ensembl_id,gene_name,dosage_insensitive,dosage_sensitive``)
DOSAGE_CSV_URL = _GC + "dosage_sens_tf_labels.csv"
#: the same labels as a pickled dict ``{"Dosage-sensitive TFs": [...], "Dosage-insensitive TFs": [...]}``
DOSAGE_PICKLE_URL = _GC + "dosage_sensitivity_TFs.pickle"
#: folder of Gene2vec's ``{split}_text.txt`` / ``{split}_label.txt``
GENE2VEC_URL = "https://raw.githubusercontent.com/jingcheng-du/Gene2vec/master/predictionData/"
#: HuRI, pairs of Ensembl gene ids
HURI_URL = "http://www.interactome-atlas.org/data/HuRI.tsv"
#: PanglaoDB markers
PANGLAO_URL = "https://panglaodb.se/markers/PanglaoDB_markers_27_Mar_2020.tsv.gz"

_HASHES = {
    "dosage_sens_tf_labels.csv": "sha256:81fd31256fb349c64fdab8706028f61e23f9d35f2b52dae57921bebd0e32963d",
    "train_text.txt": "sha256:5d7808130c0b337c15b927545cbff9552b754610a29c89dfe2a6c54c91299e96",
    "train_label.txt": "sha256:d8f5631b3e4ac8eb60bca80ef5f73a9d521c017d2bafee3a6fc65659789b3434",
    "valid_text.txt": "sha256:aa34b4e3894d5339100b9d255fbc6325f96327f4e2a61f634d11ce2154614c51",
    "valid_label.txt": "sha256:df038f9ca8937ec0c501058c4a6ec4624bbcc73824c79003058652c844acbb6d",
    "test_text.txt": "sha256:c03f4b276bb9ddbb60b3e82eba32391578c95b4c353479a369e16066a04d5360",
    "test_label.txt": "sha256:1e9ffeba8c927e3b12565c37ff5bc8fd9300d6500f67152687eeee198c7ccdb1",
    "HuRI.tsv": "sha256:4cdf94366ff6e23e71ef9ec81922e85b2b3a1fb08e938f7b00d86c027cf1ecd6",
}
_DEFAULT = object()


def _fetch(url: str, fname: str, known_hash: Any) -> Path:
    """Download ``url`` once into the cache (hash-checked unless ``known_hash=None``)."""
    import pooch

    from .._settings import settings

    if known_hash is _DEFAULT:
        known_hash = _HASHES.get(fname)
    if known_hash is None:
        warnings.warn(
            f"downloading {url} without a hash check (known_hash=None); the file is not verified",
            stacklevel=3,
        )
    folder = Path(settings.cache_dir) / "bm"
    return Path(
        pooch.retrieve(url, known_hash=known_hash, fname=fname, path=folder, progressbar=False)
    )


def _ensembl_to_symbol() -> pd.Series:
    from .._gene_matching import ensembl_symbols
    from ..datasets import gene_cards

    # an id of several genes goes to the named gene; true ties are left out
    resolved = {e: s for e, s in ensembl_symbols(gene_cards("human")).items() if isinstance(s, str)}
    return pd.Series(resolved, dtype=object)


def dosage_sensitive_tfs(
    path: str | os.PathLike | None = None,
    *,
    url: str = DOSAGE_CSV_URL,
    known_hash: Any = _DEFAULT,
    allow_pickle: bool = False,
) -> pd.Series:
    """Dosage-sensitive (1) vs dosage-insensitive (0) transcription factors.

    Geneformer's gene-classification example (122 sensitive, 368 insensitive TFs; GenePT
    table 1: ada-002 + LR AUC 0.89, + RF 0.92).

    Parameters
    ----------
    path
        Local copy: the CSV (``ensembl_id,gene_name,dosage_insensitive,dosage_sensitive``)
        or Geneformer's pickle (needs ``allow_pickle=True``). ``None``: download ``url``.
    url
        Where to download from (default the CSV on the Genecorpus-30M hub;
        :data:`DOSAGE_PICKLE_URL` is the pickle).
    known_hash
        Expected hash (``"sha256:..."``); default the known hash of the file,
        ``None``: no check (with a warning).
    allow_pickle
        Allow reading a pickle (it can run code; only for files you trust).

    Returns
    -------
    Series gene symbol -> 0/1 (Ensembl ids are mapped to symbols with the gene cards;
    ids without a symbol keep the id).

    Examples
    --------
    >>> import genept as gpt
    >>> labels = gpt.bm.dosage_sensitive_tfs()  # doctest: +SKIP
    >>> labels.value_counts().sort_index().tolist()  # doctest: +SKIP
    [368, 122]
    """
    downloaded = path is None
    if downloaded:
        fname = url.rsplit("/", 1)[-1].split("?")[0]
        if fname.endswith((".pickle", ".pkl")):
            resolved = _HASHES.get(fname) if known_hash is _DEFAULT else known_hash
            if resolved is None:
                # a downloaded pickle is unpickled only after a hash check
                raise ValueError(
                    f"{url} is a pickle, which can run code when read; genept unpickles a "
                    "download only after a hash check: pass known_hash='sha256:...', or "
                    "download it yourself and pass path=... with allow_pickle=True"
                )
        path = _fetch(url, fname, known_hash)
    path = Path(path)
    if path.suffix in {".pickle", ".pkl"}:
        if not allow_pickle:
            raise ValueError(
                f"{path} is a pickle, which can run code when read; pass allow_pickle=True if "
                "you trust it, or use the CSV"
            )
        with open(path, "rb") as fh:
            d = pickle.load(fh)
        sens = [str(g) for g in d["Dosage-sensitive TFs"] if isinstance(g, str)]
        insens = [str(g) for g in d["Dosage-insensitive TFs"] if isinstance(g, str)]
        ids = pd.Series([1] * len(sens) + [0] * len(insens), index=sens + insens)
        sym = _ensembl_to_symbol()
        mapped = [sym.get(g, g) for g in ids.index]
        out = pd.Series(ids.to_numpy(), index=pd.Index(mapped, dtype=object))
    else:
        df = pd.read_csv(path)
        need = {"gene_name", "dosage_sensitive", "dosage_insensitive"}
        if not need <= set(df.columns):
            raise ValueError(f"{path} lacks the columns {sorted(need - set(df.columns))}")
        sens = df["dosage_sensitive"].notna() & (df["dosage_sensitive"].astype(str) != "")
        out = pd.Series(sens.astype(int).to_numpy(), index=pd.Index(df["gene_name"].astype(str)))
    out = out[~out.index.duplicated(keep="first")]
    out.name = "dosage_sensitive"
    return out


def gene2vec_ggi(
    split: str = "train",
    path: str | os.PathLike | None = None,
    *,
    url: str = GENE2VEC_URL,
    known_hash: Any = _DEFAULT,
) -> pd.DataFrame:
    """Gene2vec gene-gene interaction pairs (shared GO annotations; Du et al. 2019).

    GenePT section 4.1: summed GenePT embeddings + LR reach test AUC 0.82, random
    vectors 0.51.

    Parameters
    ----------
    split
        ``"train"``, ``"valid"`` or ``"test"``.
    path
        Local folder holding ``{split}_text.txt`` (two symbols a line) and
        ``{split}_label.txt`` (0/1 a line). ``None``: download from ``url``.
    url
        Base URL of the two files.
    known_hash
        ``None``: skip the hash check (with a warning); default the known hashes.

    Returns
    -------
    DataFrame ``gene1``, ``gene2``, ``label``.

    Examples
    --------
    >>> import genept as gpt
    >>> train = gpt.bm.gene2vec_ggi("train")  # doctest: +SKIP
    >>> list(train.columns)  # doctest: +SKIP
    ['gene1', 'gene2', 'label']
    """
    if split not in {"train", "valid", "test"}:
        raise ValueError(f"split must be 'train', 'valid' or 'test', got {split!r}")
    files = {}
    for part in ("text", "label"):
        fname = f"{split}_{part}.txt"
        if path is not None:
            files[part] = Path(path) / fname
            if not files[part].exists():
                raise FileNotFoundError(
                    f"{files[part]} not found (expected Gene2vec's predictionData files)"
                )
        else:
            files[part] = _fetch(url.rstrip("/") + "/" + fname, fname, known_hash)
    text = pd.read_csv(
        files["text"],
        sep=r"\s+",
        header=None,
        dtype=str,
        keep_default_na=False,
        names=["gene1", "gene2"],
    )
    label = pd.read_csv(files["label"], header=None, names=["label"])["label"].astype(int)
    if len(text) != len(label):
        raise ValueError(
            f"{files['text']} has {len(text)} pairs but {files['label']} {len(label)} labels"
        )
    text["label"] = label.to_numpy()
    return text


def huri(
    path: str | os.PathLike | None = None,
    *,
    url: str = HURI_URL,
    known_hash: Any = _DEFAULT,
    symbols: bool = True,
) -> pd.DataFrame:
    """HuRI binary protein-protein interactions (positives only; Luck et al. 2020).

    Parameters
    ----------
    path
        Local ``HuRI.tsv`` (two Ensembl gene ids a line) or a two-column file of symbols.
        ``None``: download ``url``.
    url, known_hash
        Download source and expected hash (``None``: no check, with a warning).
    symbols
        Map Ensembl ids to gene symbols with the gene cards (pairs with an unmapped id
        or a self-interaction are dropped).

    Returns
    -------
    DataFrame ``gene1``, ``gene2``: unique unordered pairs.

    Examples
    --------
    >>> import genept as gpt
    >>> pairs = gpt.bm.huri()  # doctest: +SKIP
    >>> list(pairs.columns)  # doctest: +SKIP
    ['gene1', 'gene2']
    """
    if path is None:
        path = _fetch(url, url.rsplit("/", 1)[-1], known_hash)
    df = pd.read_csv(
        path,
        sep="\t",
        header=None,
        dtype=str,
        keep_default_na=False,
        usecols=[0, 1],
        names=["gene1", "gene2"],
    )
    if symbols and df["gene1"].str.startswith("ENSG").mean() > 0.5:
        sym = _ensembl_to_symbol()
        df = pd.DataFrame({"gene1": df["gene1"].map(sym), "gene2": df["gene2"].map(sym)}).dropna()
    df = df[df["gene1"] != df["gene2"]]
    swap = (df["gene1"] > df["gene2"]).to_numpy()
    g1, g2 = df["gene1"].to_numpy(dtype=object), df["gene2"].to_numpy(dtype=object)
    out = pd.DataFrame({"gene1": np.where(swap, g2, g1), "gene2": np.where(swap, g1, g2)})
    out = out.drop_duplicates(ignore_index=True)
    return out


def panglao_markers(
    path: str | os.PathLike | None = None,
    *,
    species: str | None = "Hs",
    url: str = PANGLAO_URL,
    known_hash: Any = None,
) -> pd.DataFrame:
    """PanglaoDB marker genes as ``cell_type``, ``gene`` (plus PanglaoDB's columns).

    Parameters
    ----------
    path
        Local ``PanglaoDB_markers_27_Mar_2020.tsv`` (or ``.tsv.gz``); ``None``: download.
    species
        Keep markers of this species (``"Hs"`` human, ``"Mm"`` mouse; ``None``: all).
    url, known_hash
        Download source and expected hash (``None``: no check, with a warning).

    Examples
    --------
    >>> import genept as gpt
    >>> markers = gpt.bm.panglao_markers()  # doctest: +SKIP
    >>> gpt.bm.marker_similarity(table, markers)  # doctest: +SKIP
    """
    if path is None:
        path = _fetch(url, url.rsplit("/", 1)[-1], known_hash)
    df = pd.read_csv(path, sep="\t")
    need = {"official gene symbol", "cell type"}
    if not need <= set(df.columns):
        raise ValueError(f"{path} is not a PanglaoDB table (columns {list(df.columns)[:6]}...)")
    if species is not None and "species" in df.columns:
        sp = df["species"].fillna("").astype(str).str.split()
        df = df[sp.map(lambda s: species in s).astype(bool)]
    return df.rename(
        columns={"cell type": "cell_type", "official gene symbol": "gene"}
    ).reset_index(drop=True)
