"""Benchmark: cell-type annotation and cell-level metrics on real labelled datasets.

For any h5ad + label column (raw counts or log-normalised), or the datasets of
``benchmarks/real_datasets.py``, this script prepares the data as a user would
(``normalize_total`` + ``log1p`` for counts, 2,000 highly variable genes, PCA of the
log-normalised highly variable genes), makes a stratified 80/20 split (``random_state=0``)
or a reference/query split by a condition column (``--shift``), and prints one table:

* PCA and the expression itself (``X_expr``: log-normalised values of the 2,000 highly
  variable genes, every gene of a panel of at most 2,000): 10-NN cosine, logistic
  regression, MLP probe;
* celltypist: its logistic regression (``train(use_SGD=False)``, with the
  ``multi_class`` argument that current scikit-learn removed dropped) and its SGD path;
* GenePT-w (defaults, i.e. highly variable genes; and the paper's all-gene average) and
  GenePT-s: 10-NN and MLP, each with the text vectors and with the control (GenePT-w:
  Gaussian random gene vectors of the same size; GenePT-s: gene names replaced by hashes);
* scMPT on each representation alone (the branches a fusion must not fall below), and
  scMPT fusions of an expression branch (PCA or ``X_expr``) with GenePT-w and/or
  GenePT-s, and the same fusions with the controls, each with the candidate the model
  selection kept (the fusion, a branch alone or the linear fusion);

each with its time, then Leiden/k-means ARI, AMI and silhouette of every representation
and, where the data has a batch column (``--batch``, or ``batch_key`` of a dataset in
``real_datasets.py``), :func:`genept.bm.batch_metrics` (k-means batch ARI and k-NN batch
mixing within labels). A dataset with a condition column (``pbmc_cross``: its source) is
split by it instead of at random: each value in turn is the reference, the rest the query.

::

    python benchmarks/real_datasets.py --fetch          # once: pbmc3k, bassez_tumor_immune
    python benchmarks/annotation_real.py                # every dataset of real_datasets.py
    python benchmarks/annotation_real.py --datasets pbmc68k_reduced --no-s
    python benchmarks/annotation_real.py --h5ad my.h5ad --label cell_type
    python benchmarks/annotation_real.py --datasets pbmc_cross     # across sources
    python benchmarks/annotation_real.py --h5ad my.h5ad --label cell_type --shift donor --batch donor
    python benchmarks/annotation_real.py --no-s --gene-vectors ada-002   # the papers' vectors

``--gene-vectors`` swaps the gene vectors behind GenePT-w (and the shape of its random
control) for GenePT's precomputed ones or its NCBI summaries, read from GenePT's Zenodo
archive (``--zenodo-archive``: a copy downloaded on another machine).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split

import genept as gpt

sys.path.insert(0, str(Path(__file__).parent))
import real_datasets

LABEL = "label"


def prepare(a: ad.AnnData, x_kind: str, batch_key: str | None = None) -> ad.AnnData:
    """Log-normalised expression in X (counts kept in a layer), HVGs, PCA."""
    a = a.copy()
    if x_kind == "counts":
        a.layers["counts"] = a.X.copy()
        sc.pp.filter_genes(a, min_cells=3)
        sc.pp.normalize_total(a, target_sum=1e4)
        sc.pp.log1p(a)
    a.obs[LABEL] = a.obs[LABEL].astype(str)
    # 2,000 genes, or half of a panel that was already selected (pbmc68k_reduced: 765)
    sc.pp.highly_variable_genes(a, n_top_genes=min(2000, a.n_vars // 2), batch_key=batch_key)
    sc.pp.pca(a, n_comps=50, random_state=0)
    # the expression itself as an scMPT branch: log-normalised values of the 2,000 most
    # variable genes, or of every gene of a smaller, already selected panel (pbmc68k: 765)
    genes = a.var_names if a.n_vars <= 2000 else a.var_names[a.var["highly_variable"]]
    X = a[:, genes].X
    a.obsm["X_expr"] = (X.toarray() if sparse.issparse(X) else np.asarray(X)).astype(np.float32)
    return a


def split(a: ad.AnnData, shift: str | None, seed: int = 0) -> tuple[ad.AnnData, ad.AnnData, str]:
    if shift:
        col, ref_value = shift.split("=", 1)
        is_ref = a.obs[col].astype(str) == ref_value
        return a[is_ref].copy(), a[~is_ref].copy(), f"reference {col}={ref_value}, query the rest"
    tr, te = train_test_split(a.obs_names, test_size=0.2, stratify=a.obs[LABEL], random_state=seed)
    return a[tr].copy(), a[te].copy(), f"stratified 80/20, random_state={seed}"


@contextlib.contextmanager
def celltypist_without_multi_class():
    """celltypist passes ``multi_class='ovr'``, removed from scikit-learn: drop it."""
    import importlib

    ct_train = importlib.import_module("celltypist.train")  # the package's `train` is the function
    orig = ct_train.LogisticRegression

    def without_multi_class(*args, multi_class=None, **kw):
        return LogisticRegression(*args, **kw)

    ct_train.LogisticRegression = without_multi_class
    try:
        yield
    finally:
        ct_train.LogisticRegression = orig


def celltypist_predict(ref: ad.AnnData, query: ad.AnnData, *, sgd: bool) -> np.ndarray:
    import celltypist

    with celltypist_without_multi_class(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = celltypist.train(
            ref,
            labels=LABEL,
            use_SGD=sgd,
            check_expression=False,
            n_jobs=1,
            max_iter=200 if not sgd else 1000,
            random_state=0,  # to the classifier: SGD's shuffling is otherwise unseeded
        )
        pred = celltypist.annotate(query, model=model, majority_voting=False)
    return pred.predicted_labels["predicted_labels"].astype(str).to_numpy()


#: ``--gene-vectors``: the shipped default, GenePT's precomputed vectors, or GenePT's NCBI
#: summaries encoded by the default text encoder
GENE_VECTORS = ("default", "ada-002", "3-large", "ncbi")


def gene_source(kind: str = "default", archive: str | None = None):
    """``gpt.tl.embed_genes``'s ``source`` for ``--gene-vectors kind``.

    ``"ada-002"`` / ``"3-large"``: :func:`genept.datasets.genept_embeddings` (the papers'
    vectors); ``"ncbi"``: :func:`genept.datasets.ncbi_summaries`, the texts behind
    ``"ada-002"``, encoded by genept's default encoder (MiniLM). Both read GenePT's Zenodo
    archive: downloaded once, or ``archive``, the path of a copy downloaded elsewhere.
    """
    if kind not in GENE_VECTORS:
        raise SystemExit(f"--gene-vectors must be one of {', '.join(GENE_VECTORS)}, got {kind!r}")
    if kind == "default":
        if archive:
            raise SystemExit("--zenodo-archive is for --gene-vectors ada-002, 3-large or ncbi")
        return "cards"
    if kind == "ncbi":
        return gpt.datasets.ncbi_summaries(url=archive)
    return gpt.datasets.genept_embeddings(kind, url=archive)


def add_gene_vector_args(p: argparse.ArgumentParser) -> None:
    """``--gene-vectors`` and ``--zenodo-archive`` (this script and ``random_control_seeds.py``)."""
    p.add_argument(
        "--gene-vectors", default="default", choices=GENE_VECTORS,
        help="gene vectors of GenePT-w and its random control (same shape): 'default' "
        "(genept's shipped table), 'ada-002' / '3-large' (GenePT's precomputed vectors, "
        "the papers'), 'ncbi' (GenePT's NCBI summaries encoded by MiniLM); the last three "
        "read GenePT's Zenodo archive (575 MB, downloaded once)",
    )  # fmt: skip
    p.add_argument(
        "--zenodo-archive", metavar="PATH",
        help="GenePT_emebdding_v2.zip downloaded elsewhere (Zenodo record 10833191), "
        "for a machine without network",
    )  # fmt: skip


def add_genept(a: ad.AnnData, with_s: bool, source="cards") -> list[str]:
    """GenePT-w / -s (text and controls) in obsm; returns the keys added.

    ``source``: the gene vectors' (:func:`gene_source`); GenePT-s does not use them.
    """
    gpt.tl.embed_genes(a, source=source, show_progress=False)
    keys = []
    gpt.tl.embed_cells(a, method="w", key_added="X_genept_w", show_progress=False)
    gpt.tl.embed_cells(
        a, method="w", mask_var=False, key_added="X_genept_w_allgenes", show_progress=False
    )
    E = np.asarray(a.varm["X_genept"])
    has = np.abs(E).sum(1) > 0
    R = np.random.default_rng(0).standard_normal(E.shape).astype(np.float32)
    R[~has] = 0
    a.varm["X_random"] = R
    gpt.tl.embed_cells(
        a, method="w", gene_key="X_random", key_added="X_genept_w_random", show_progress=False
    )
    keys += ["X_genept_w", "X_genept_w_allgenes", "X_genept_w_random"]
    if with_s:
        gpt.tl.embed_cells(a, method="s", key_added="X_genept_s", show_progress=True)
        gpt.tl.embed_cells(
            a, method="s", hash_names=True, key_added="X_genept_s_hashed", show_progress=True
        )
        # GenePT's sentences: every gene, as many as the encoder reads, no prefix
        gpt.tl.embed_cells(
            a,
            method="s",
            mask_var=False,
            n_genes=None,
            prefix="",
            key_added="X_genept_s_paper",
            show_progress=True,
        )
        keys += ["X_genept_s", "X_genept_s_hashed", "X_genept_s_paper"]
    return keys


def scores(y_true, y_pred) -> tuple[float, float]:
    y_true = np.asarray(y_true, dtype=str)
    y_pred = np.asarray(y_pred, dtype=object)
    y_pred = np.where(pd.isna(y_pred), "<none>", y_pred).astype(str)
    return accuracy_score(y_true, y_pred), f1_score(y_true, y_pred, average="macro")


def run(
    name: str,
    a: ad.AnnData,
    x_kind: str,
    *,
    with_s: bool,
    shifts: list[str | None],
    seeds: tuple[int, ...] = (0,),
    scmpt_options: dict | None = None,
    batch_key: str | None = None,
    gene_source="cards",
) -> list[dict]:
    """Embed once; annotate on each split (stratified ``seeds``, or each ``shifts``
    reference/query split); then cluster (and batch) metrics of every representation."""
    t0 = time.perf_counter()
    a = prepare(a, x_kind, batch_key)
    keys = add_genept(a, with_s, gene_source)
    t_embed = time.perf_counter() - t0
    rows: list[dict] = []
    for shift in shifts:
        for seed in seeds if not shift else (0,):
            rows += run_split(
                name if not shift else f"{name} ({shift} -> rest)", a, keys, with_s=with_s,
                shift=shift, seed=seed, t_embed=t_embed, scmpt_options=scmpt_options or {},
            )  # fmt: skip
    print(f"\n  cell-level metrics of {name} (all {a.n_obs} cells; ARI / AMI vs labels)")
    for rep in ["X_pca", *keys]:
        for method in ("leiden", "kmeans"):
            m = gpt.bm.cluster_metrics(a, rep, LABEL, method=method).set_index("metric")["value"]
            rows.append(
                dict(
                    dataset=name,
                    method=f"{method} clusters",
                    rep=rep,
                    ari=m["ari"],
                    ami=m["ami"],
                    silhouette=m["silhouette"],
                    n_clusters=int(m["n_clusters"]),
                )
            )
            print(
                f"  {method:8s} {rep:24s} ARI {m['ari']:.3f} AMI {m['ami']:.3f} "
                f"silhouette {m['silhouette']:.3f} clusters {int(m['n_clusters'])}",
                flush=True,
            )
    if batch_key:
        print(f"\n  batch effect of {name} ({batch_key!r}; mixing within labels)")
        for rep in ["X_pca", "X_expr", *keys]:
            m = gpt.bm.batch_metrics(a, rep, batch_key, label_key=LABEL)
            m = m.set_index("metric")["value"]
            rows.append(
                dict(
                    dataset=name,
                    method="batch",
                    rep=rep,
                    batch_ari=m["batch_ari"],
                    batch_mixing=m["batch_mixing"],
                )
            )
            print(
                f"  {rep:24s} batch ARI {m['batch_ari']:.3f} mixing {m['batch_mixing']:.3f}",
                flush=True,
            )
    return rows


def run_split(
    name: str,
    a: ad.AnnData,
    keys: list[str],
    *,
    with_s: bool,
    shift: str | None,
    seed: int,
    t_embed: float,
    scmpt_options: dict,
) -> list[dict]:
    """Every annotator on one reference/query split of the prepared ``a``."""
    ref, query, how = split(a, shift, seed)
    y = query.obs[LABEL].to_numpy()
    rows: list[dict] = []

    def add(method: str, rep: str, pred, seconds: float, **extra):
        acc, f1 = scores(y, pred)
        rows.append(
            dict(
                dataset=name,
                split=seed,
                method=method,
                rep=rep,
                accuracy=acc,
                f1_macro=f1,
                seconds=seconds,
                **extra,
            )
        )
        print(
            f"  {method:26s} {rep:34s} {acc:.3f} {f1:.3f} {seconds:7.1f}s "
            + " ".join(f"{k}={v}" for k, v in extra.items()),
            flush=True,
        )

    def timed(fn, *args, **kw):
        t = time.perf_counter()
        out = fn(*args, **kw)
        return out, time.perf_counter() - t

    print(
        f"\n## {name}: {ref.n_obs} reference / {query.n_obs} query cells ({how}); "
        f"embeddings {t_embed:.0f} s",
        flush=True,
    )
    for rep in ["X_pca", "X_expr", *keys]:
        _, s = timed(gpt.tl.annotate_knn, query, ref, use_rep=rep, label_key=LABEL, key_added="knn")
        add("10-NN cosine", rep, query.obs["knn"].to_numpy(), s)
        _, s = timed(gpt.tl.annotate_mlp, query, ref, use_rep=rep, label_key=LABEL, key_added="mlp")
        add("MLP probe", rep, query.obs["mlp"].to_numpy(), s)
    for rep in ("X_pca", "X_expr"):
        lr = LogisticRegression(max_iter=1000)
        _, s = timed(lr.fit, ref.obsm[rep], ref.obs[LABEL].to_numpy())
        add("logistic regression", rep, lr.predict(query.obsm[rep]), s)
    for sgd in (False, True):
        pred, s = timed(celltypist_predict, ref, query, sgd=sgd)
        add(f"celltypist {'SGD' if sgd else 'LR'}", "log-normalised X (all genes)", pred, s)
    # scMPT on each representation alone: the branches the fusions must not fall below
    fusions = [["X_pca"], ["X_expr"], ["X_genept_w"]] + ([["X_genept_s"]] if with_s else [])
    fusions += [["X_pca", "X_genept_w"], ["X_expr", "X_genept_w"], ["X_expr", "X_genept_w_random"]]
    if with_s:
        fusions += [
            ["X_pca", "X_genept_s"],
            ["X_expr", "X_genept_s"],
            ["X_expr", "X_genept_s_hashed"],
            ["X_expr", "X_genept_w", "X_genept_s"],
        ]
    for reps in fusions:
        _, s = timed(
            gpt.tl.annotate_scmpt, query, ref, reps=reps, label_key=LABEL, key_added="fusion",
            **scmpt_options,
        )  # fmt: skip
        sel = query.uns["fusion"].get("selection", {})
        add(
            "scMPT",
            " + ".join(reps),
            query.obs["fusion"].to_numpy(),
            s,
            selected=sel.get("chosen", sel.get("selected", "?")) if isinstance(sel, dict) else sel,
            **({"weights": sel["weights"]} if isinstance(sel, dict) and "weights" in sel else {}),
        )
    return rows


def markdown(rows: list[dict]) -> str:
    """One table: a row per (method, representation), a column per dataset (acc. / F1)."""
    sets = list(dict.fromkeys(r["dataset"] for r in rows if "accuracy" in r))
    out = [
        "| method | representation | " + " | ".join(sets) + " |",
        "|---|---|" + "---:|" * len(sets),
    ]
    seen: dict[tuple, dict] = {}
    for r in rows:
        if "accuracy" in r:
            seen.setdefault((r["method"], r["rep"]), {}).setdefault(r["dataset"], []).append(r)
    for (method, rep), by in seen.items():
        cells = []
        for d in sets:
            rs = by.get(d)
            if not rs:
                cells.append("")
                continue
            acc = np.mean([r["accuracy"] for r in rs])
            f1 = np.mean([r["f1_macro"] for r in rs])
            sel = [str(r["selected"]) for r in rs if r.get("selected")]
            sel = (
                f" ({', '.join(f'{k} {v}' if v > 1 else k for k, v in pd.Series(sel).value_counts().items())})"
                if sel
                else ""
            )
            if all(r.get("weights") for r in rs):  # the stack: its mean weights
                w = pd.DataFrame([r["weights"] for r in rs]).fillna(0).mean()
                sel = (
                    " ("
                    + ", ".join(
                        f"{k} {v:.2f}" for k, v in w.sort_values()[::-1].items() if v >= 0.1
                    )
                    + ")"
                )
            cells.append(f"{acc:.3f} / {f1:.3f}{sel}")
        out.append(f"| {method} | `{rep}` | " + " | ".join(cells) + " |")
    return "\n".join(out)


def shifts_of(a: ad.AnnData, shift: str | None) -> list[str | None]:
    """``None`` (stratified splits), ``COLUMN=VALUE`` (one), ``COLUMN`` (each value)."""
    if not shift:
        return [None]
    if "=" in shift:
        return [shift]
    col = a.obs[shift]
    return [f"{shift}={v}" for v in sorted(col[col.notna()].astype(str).unique())]


def check_columns(name: str, a: ad.AnnData, shift: str | None, batch_key: str | None) -> None:
    """Refuse a missing, single-valued or incomplete shift / batch column before any work."""
    for what, col in (
        ("--shift", shift.split("=", 1)[0] if shift else None),
        ("--batch", batch_key),
    ):
        if col is None:
            continue
        if col not in a.obs:
            raise SystemExit(f"{name}: {what} column {col!r} is not in obs ({list(a.obs.columns)})")
        values = a.obs[col]
        if values.isna().any():
            raise SystemExit(
                f"{name}: obs[{col!r}] ({what}) has {int(values.isna().sum())} missing value(s); "
                "fill or drop those cells first"
            )
        if values.astype(str).nunique() < 2:
            raise SystemExit(f"{name}: obs[{col!r}] ({what}) has a single value; need two")
    if shift and "=" in shift:
        col, value = shift.split("=", 1)
        if not (a.obs[col].astype(str) == value).any():
            raise SystemExit(f"{name}: no cell has obs[{col!r}] == {value!r} (--shift)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", help="names in real_datasets.DATASETS (default all)")
    p.add_argument("--h5ad", help="any h5ad instead of --datasets")
    p.add_argument("--label", default="cell_type", help="label column of --h5ad")
    p.add_argument("--x-kind", choices=["counts", "lognorm"], help="--h5ad X (default: guessed)")
    p.add_argument(
        "--shift",
        help="COLUMN=VALUE: reference = cells with that value, query = rest; COLUMN: each "
        "value in turn (default for a dataset with a condition column, e.g. pbmc_cross)",
    )
    p.add_argument("--batch", help="batch column of --h5ad: batch ARI and mixing")
    p.add_argument("--no-s", action="store_true", help="skip GenePT-s (slow on CPU)")
    p.add_argument(
        "--splits", type=int, default=1,
        help="stratified splits (random_state 0..N-1); the table shows their mean",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: genept's)")
    p.add_argument(
        "--scmpt-options", default="{}", type=json.loads,
        help='annotate_scmpt options as JSON, e.g. \'{"select": "best"}\' (default: its defaults)',
    )  # fmt: skip
    add_gene_vector_args(p)
    p.add_argument("--json", help="also write every row as JSON here")
    p.add_argument("--from-json", help="only print the markdown table of a --json file")
    args = p.parse_args()
    if args.from_json:
        print(markdown(json.loads(Path(args.from_json).read_text())))
        return
    source = gene_source(args.gene_vectors, args.zenodo_archive)
    print(f"gene vectors of GenePT-w and its control: {args.gene_vectors}")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    gpt.settings.progress = False
    if args.threads:
        gpt.settings.n_jobs = args.threads
    jobs = []
    if args.h5ad:
        a = ad.read_h5ad(args.h5ad)
        a.obs[LABEL] = a.obs[args.label]
        a = a[a.obs[LABEL].notna()].copy()
        X = a.X[:200]
        data = X.data if sparse.issparse(X) else np.asarray(X).ravel()
        kind = args.x_kind or ("counts" if np.all(np.mod(data, 1) == 0) else "lognorm")
        jobs.append((Path(args.h5ad).stem, a, kind, args.shift, args.batch))
    elif args.batch:
        raise SystemExit("--batch is for --h5ad; a dataset of real_datasets.py names its own")
    else:
        for name in args.datasets or list(real_datasets.DATASETS):
            info = real_datasets.DATASETS[name]
            a = real_datasets.load(name)
            a.obs[LABEL] = a.obs[info["label_key"]]
            print(
                f"{name}: {a.n_obs} cells, {a.obs[LABEL].nunique()} types; X {info['x_kind']}; "
                f"labels from {info['labels_from']}; source {info['source']}"
            )
            shift = args.shift or info.get("condition_key")
            jobs.append((name, a, info["x_kind"], shift, info.get("batch_key")))
    for name, a, _, shift, batch_key in jobs:
        check_columns(name, a, shift, batch_key)
    rows = []
    for name, a, kind, shift, batch_key in jobs:
        rows += run(
            name,
            a,
            kind,
            with_s=not args.no_s,
            shifts=shifts_of(a, shift),
            seeds=tuple(range(args.splits)),
            scmpt_options=args.scmpt_options,
            batch_key=batch_key,
            gene_source=source,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
    print("\n" + markdown(rows))
    print(
        f"\n(threads: torch {os.environ.get('OMP_NUM_THREADS', 'auto')}; "
        f"{os.cpu_count()} cores; load {os.getloadavg()[0]:.1f})"
    )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
