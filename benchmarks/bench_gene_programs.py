"""Benchmark: gene programs on all genes of an atlas-sized dataset (30k genes).

Times :func:`genept.tl.gene_programs` on a gene-embedding matrix of ``--genes`` x
``--dim`` with planted programs (the similarity graph is built in row blocks, never as
a dense genes x genes matrix), and reports the peak extra memory next to what a dense
similarity matrix would need.

    python benchmarks/bench_gene_programs.py --genes 30000 --dim 384
"""

from __future__ import annotations

import argparse
import resource
import time

import anndata as ad
import numpy as np
from sklearn.metrics import adjusted_rand_score


def main(argv=None) -> None:
    import genept as gpt

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--genes", type=int, default=30_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--programs", type=int, default=300)
    ap.add_argument("--cells", type=int, default=2_000)
    args = ap.parse_args(argv)
    gpt.settings.progress = False
    rng = np.random.default_rng(0)
    truth = rng.integers(0, args.programs, args.genes)
    centres = rng.standard_normal((args.programs, args.dim)).astype(np.float32)
    E = centres[truth] + 0.35 * rng.standard_normal((args.genes, args.dim)).astype(np.float32)
    from scipy import sparse

    X = sparse.random(args.cells, args.genes, density=0.05, format="csr", random_state=0,
                      dtype=np.float32)
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
    print(f"{args.genes} genes x {args.dim}: {dt:.1f} s, threshold {p['threshold']:.3f} "
          f"({p['threshold_source']}), {len(a.uns['genept_programs']['members'])} programs, "
          f"ARI vs planted {ari:.3f} on {kept.sum()} genes in programs")
    dense_gb = args.genes**2 * 4 / 2**30
    print(f"peak RSS {rss:.2f} GiB (before: {rss0:.2f} GiB); a dense similarity matrix alone "
          f"would take {dense_gb:.1f} GiB")


if __name__ == "__main__":
    main()
