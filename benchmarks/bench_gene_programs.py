"""Benchmark: gene programs on all genes of an atlas-sized dataset (30k genes).

Synthetic case: times :func:`genept.tl.gene_programs` on a gene-embedding matrix of
``--genes`` x ``--dim`` with planted programs (the similarity graph is built in row
blocks, never as a dense genes x genes matrix), and reports the peak extra memory next to
what a dense similarity matrix would need.

    python benchmarks/bench_gene_programs.py --genes 30000 --dim 384

Real case (``--real``): celltypist's shipped sample (559 cells x 32,786 genes; the file
``celltypist/data/samples/sample_cell_by_gene.csv`` of the ``celltypist`` wheel, or an
``.h5ad`` of it), normalised (``normalize_total`` + ``log1p``), the genes embedded with the
default :func:`genept.tl.embed_genes`, then ``gene_programs`` with its defaults, timed by
phase. Each program is tested for enrichment of a Gene Ontology biological process of the
gene cards (hypergeometric; terms of 5-500 genes, Bonferroni over all of them, p < 0.05),
against random gene sets of the same sizes from the same genes. (GO is what the default
LSA embedding reads, so enrichment is expected; the random sets give the floor.)

    python benchmarks/bench_gene_programs.py --real _work/ct/sample_cell_by_gene.csv
"""

from __future__ import annotations

import argparse
import resource
import time

import anndata as ad
import numpy as np
from sklearn.metrics import adjusted_rand_score


def go_enrichment(
    programs: list[np.ndarray], universe: np.ndarray, *, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """Share of ``programs`` (arrays of symbols) enriched for a GO biological process of the
    gene cards, and the same share for random same-size sets drawn from ``universe``."""
    import pandas as pd
    from scipy.stats import hypergeom

    from genept.datasets import gene_cards

    cards = gene_cards("human")
    cards = cards[~cards.index.duplicated()]
    bp = cards["go_bp"].reindex(pd.Index(universe)).fillna("")
    pairs = bp.str.split("|").explode()
    pairs = pairs[pairs != ""]
    term_size = pairs.value_counts()
    # terms of 5..500 genes of the universe; Bonferroni over all of them (testing only the
    # terms a set happens to hit would flag most random sets through tiny terms)
    term_size = term_size[(term_size >= 5) & (term_size <= 500)]
    pairs = pairs[pairs.isin(term_size.index)]
    n_terms = len(term_size)
    n_univ = len(universe)
    gene_terms = pairs.groupby(level=0).agg(list).to_dict()

    def enriched(genes) -> bool:
        counts: dict[str, int] = {}
        for g in genes:
            for t in gene_terms.get(g, ()):
                counts[t] = counts.get(t, 0) + 1
        tested = {t: k for t, k in counts.items() if k >= 2}
        if not tested:
            return False
        k = np.array(list(tested.values()))
        K = term_size.reindex(list(tested)).to_numpy()
        p = hypergeom.sf(k - 1, n_univ, K, len(genes))
        return bool(p.min() * n_terms < alpha)

    rng = np.random.default_rng(seed)
    real = np.mean([enriched(p) for p in programs]) if programs else float("nan")
    rand = np.mean([enriched(rng.choice(universe, size=len(p), replace=False)) for p in programs])
    return float(real), float(rand)


def real_case(path: str, seed: int = 0) -> None:
    import anndata as ad
    import pandas as pd
    import scanpy as sc
    from scipy import sparse

    import genept as gpt

    gpt.settings.progress = False
    t = time.perf_counter()
    if path.endswith(".h5ad"):
        a = ad.read_h5ad(path)
    else:
        df = pd.read_csv(path, index_col=0)
        a = ad.AnnData(
            sparse.csr_matrix(df.to_numpy(np.float32)),
            obs=pd.DataFrame(index=df.index.astype(str)),
            var=pd.DataFrame(index=df.columns.astype(str)),
        )
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    print(f"{a.n_obs} cells x {a.n_vars} genes, read in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    gpt.tl.embed_genes(a)
    p = a.uns["genept"]["params"]
    print(
        f"embed_genes (default: {p['model']}, {p['text_level']}): {time.perf_counter() - t:.2f} s, "
        f"{p['n_genes_matched']} genes matched"
    )
    t = time.perf_counter()
    gpt.tl.gene_programs(a, random_state=seed)
    dt = time.perf_counter() - t
    info = a.uns["genept_programs"]
    gp = info["params"]
    programs = [np.asarray(m) for m in info["members"].values()]
    universe = a.var_names[a.var["genept_has_embedding"].to_numpy(bool)].to_numpy(dtype=object)
    real, rand = go_enrichment(programs, universe, seed=seed)
    in_prog = sum(len(m) for m in programs)
    print(
        f"gene_programs: {dt:.1f} s; threshold {gp['threshold']:.3f} ({gp['threshold_source']}), "
        f"{gp['n_edges']} edges, resolution {gp['resolution']:.1f}: {gp['n_programs']} programs, "
        f"{in_prog} of {gp['n_genes']} genes in a program; GO-BP enriched: {100 * real:.0f}% of "
        f"programs vs {100 * rand:.0f}% of random same-size sets"
    )


def main(argv=None) -> None:
    import genept as gpt

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--genes", type=int, default=30_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--programs", type=int, default=300)
    ap.add_argument("--cells", type=int, default=2_000)
    ap.add_argument("--real", default=None, help="celltypist sample (.csv or .h5ad): the real case")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.real:
        real_case(args.real, seed=args.seed)
        return
    gpt.settings.progress = False
    rng = np.random.default_rng(0)
    truth = rng.integers(0, args.programs, args.genes)
    centres = rng.standard_normal((args.programs, args.dim)).astype(np.float32)
    E = centres[truth] + 0.35 * rng.standard_normal((args.genes, args.dim)).astype(np.float32)
    from scipy import sparse

    X = sparse.random(
        args.cells, args.genes, density=0.05, format="csr", random_state=0, dtype=np.float32
    )
    a = ad.AnnData(X)
    a.varm["X_genept"] = E
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    t = time.perf_counter()
    gpt.tl.gene_programs(a)
    dt = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    p = a.uns["genept_programs"]["params"]
    lab = a.var["genept_program"].astype(str).to_numpy()
    kept = lab != "nan"
    ari = adjusted_rand_score(truth[kept], lab[kept])
    print(
        f"{args.genes} genes x {args.dim}: {dt:.1f} s, threshold {p['threshold']:.3f} "
        f"({p['threshold_source']}), {len(a.uns['genept_programs']['members'])} programs, "
        f"ARI vs planted {ari:.3f} on {kept.sum()} genes in programs"
    )
    dense_gb = args.genes**2 * 4 / 2**30
    print(
        f"peak RSS {rss:.2f} GiB (before: {rss0:.2f} GiB); a dense similarity matrix alone "
        f"would take {dense_gb:.1f} GiB"
    )


if __name__ == "__main__":
    main()
