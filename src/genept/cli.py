"""The ``genept`` command line: ``genept demo``, ``genept embed-genes`` …"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--cache-dir", help="cache folder (default $GENEPT_CACHE_DIR or ~/.cache/genept)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="genept",
        description="GenePT / scMPT gene and cell embeddings for AnnData (.h5ad) files.",
    )
    sub = ap.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run the whole flow offline on pbmc68k_reduced")
    d.add_argument("--out", default="genept_demo", help="output folder (default: genept_demo)")
    d.add_argument("--model", default=None, help="text encoder (default: packaged all-MiniLM-L6-v2)")
    _add_common(d)

    g = sub.add_parser("embed-genes", help="gene embeddings into varm (gpt.tl.embed_genes)")
    g.add_argument("input", help="input .h5ad")
    g.add_argument("output", help="output .h5ad")
    g.add_argument("--source", default="cards",
                   help="cards | ncbi | ncbi_uniprot | name | genept | a .npz/.parquet/.csv/.pickle file")
    g.add_argument("--model", default=None, help="text encoder, or ada-002 / 3-large for --source genept")
    g.add_argument("--text-level", default="card", choices=["name", "summary", "card"])
    g.add_argument("--gene-symbols", default=None, help="var column holding gene symbols")
    g.add_argument("--key-added", default="X_genept")
    g.add_argument("--batch-size", type=int, default=None)
    g.add_argument("--no-cache", action="store_true", help="do not use the text-embedding cache")
    g.add_argument("--allow-pickle", action="store_true",
                   help="allow reading a pickle --source (only for files you trust)")
    _add_common(g)

    c = sub.add_parser("embed-cells", help="GenePT-w / GenePT-s cell embeddings into obsm")
    c.add_argument("input", help="input .h5ad (normalised, log1p)")
    c.add_argument("output", help="output .h5ad")
    c.add_argument("--method", choices=["w", "s"], default="w")
    c.add_argument("--layer", default=None)
    c.add_argument("--use-raw", action="store_true", help="use adata.raw.X")
    c.add_argument("--key-added", default=None)
    c.add_argument("--embed-genes", action="store_true",
                   help="(w) run embed-genes first with --gene-source")
    c.add_argument("--gene-source", default="cards", help="(w) source for --embed-genes")
    c.add_argument("--normalize", choices=["l2", "notebook"], default="l2")
    c.add_argument("--device", default="auto", help="auto | cpu | cuda")
    c.add_argument("--precision", choices=["fp32", "tf32", "bf16"], default="fp32")
    c.add_argument("--backed", action="store_true",
                   help="(w) read the input backed (out of core); the result is still written")
    c.add_argument("--model", default=None, help="(s) text encoder")
    c.add_argument("--n-genes", type=int, default=None, help="(s) top genes per sentence")
    c.add_argument("--prefix", default="", help="(s) text before the genes")
    c.add_argument("--gene-symbols", default=None, help="(s) var column with symbols")
    c.add_argument("--hash-names", action="store_true", help="(s) ablation: hashed gene names")
    c.add_argument("--shuffle", action="store_true", help="(s) ablation: shuffled order")
    c.add_argument("--batch-size", type=int, default=None)
    c.add_argument("--allow-counts", action="store_true")
    _add_common(c)

    a = sub.add_parser("annotate", help="annotate a query from a labelled reference")
    a.add_argument("query", help="query .h5ad with the representations in obsm")
    a.add_argument("output", help="output .h5ad")
    a.add_argument("--reference", help="labelled reference .h5ad (not needed with --load-model)")
    a.add_argument("--method", choices=["knn", "knn-ensemble", "mlp", "scmpt"], default="scmpt")
    a.add_argument("--label-key", default="cell_type")
    a.add_argument("--use-rep", action="append", default=None,
                   help="obsm key(s): one for knn/mlp, several for knn-ensemble/scmpt "
                        "(scmpt default: X_scGPT and X_genept_s)")
    a.add_argument("--key-added", default=None)
    a.add_argument("--save-model", default=None, help="(scmpt) folder to save the model to")
    a.add_argument("--load-model", default=None, help="(scmpt) annotate with a saved model")
    a.add_argument("--n-seeds", type=int, default=3)
    a.add_argument("--device", default="auto")
    _add_common(a)
    return ap


def _setup(args) -> None:
    import scanpy as sc

    from ._settings import settings

    if args.cache_dir:
        settings.cache_dir = args.cache_dir
    if args.no_progress:
        settings.progress = False
    sc.settings.verbosity = min(1 + args.verbose, 4)  # warnings + info with -v


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``genept`` command."""
    args = _parser().parse_args(argv)
    if args.command == "demo":  # the demo runs offline, on what the packages ship
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _setup(args)
    try:
        if args.command == "demo":
            from ._demo import run_demo

            run_demo(args.out, model=args.model)
        elif args.command == "embed-genes":
            import anndata as ad

            from .tl import embed_genes

            adata = ad.read_h5ad(args.input)
            embed_genes(
                adata,
                source=args.source,
                model=args.model,
                text_level=args.text_level,
                gene_symbols=args.gene_symbols,
                key_added=args.key_added,
                batch_size=args.batch_size,
                cache=not args.no_cache,
                allow_pickle=args.allow_pickle,
            )
            adata.write_h5ad(args.output)
            p = adata.uns[args.key_added.removeprefix("X_")]["params"]
            print(f"{p['n_genes_matched']}/{p['n_genes_total']} genes embedded "
                  f"({p['dim']}-d, {p['model']}) -> {args.output}")
        elif args.command == "embed-cells":
            _embed_cells(args)
        elif args.command == "annotate":
            _annotate(args)
    except (ValueError, KeyError, FileNotFoundError, TypeError) as e:
        print(f"genept {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


def _embed_cells(args) -> None:
    import anndata as ad

    from .tl import embed_cells, embed_genes

    adata = ad.read_h5ad(args.input, backed="r" if args.backed else None)
    if args.method == "w" and (args.embed_genes or "X_genept" not in adata.varm):
        if not args.embed_genes:
            raise KeyError(
                f"{args.input} has no varm['X_genept']: run `genept embed-genes` first or add "
                "--embed-genes"
            )
        embed_genes(adata, source=args.gene_source)
    embed_cells(
        adata,
        method=args.method,
        layer=args.layer,
        use_raw=args.use_raw or None,
        key_added=args.key_added,
        normalize=args.normalize,
        device=args.device,
        precision=args.precision,
        model=args.model,
        n_genes=args.n_genes,
        prefix=args.prefix,
        gene_symbols=args.gene_symbols,
        hash_names=args.hash_names,
        shuffle=args.shuffle,
        batch_size=args.batch_size,
        allow_counts=args.allow_counts,
    )
    key = args.key_added or f"X_genept_{args.method}"
    if adata.isbacked:
        adata = adata.to_memory()
    adata.write_h5ad(args.output)
    print(f"{adata.n_obs} cells embedded with GenePT-{args.method} "
          f"({adata.obsm[key].shape[1]}-d) -> {args.output} obsm[{key!r}]")


def _annotate(args) -> None:
    import anndata as ad

    from . import tl

    query = ad.read_h5ad(args.query)
    reps = args.use_rep
    key = args.key_added or f"genept_{args.method.replace('-', '_')}"
    if args.method == "scmpt":
        if args.load_model:
            tl.annotate_scmpt(query, label_key=args.label_key, model=args.load_model,
                              key_added=key, device=args.device)
        else:
            if not args.reference:
                raise ValueError("--reference is needed unless --load-model is given")
            ref = ad.read_h5ad(args.reference)
            kw = {"reps": reps} if reps and len(reps) != 2 else {}
            if reps and len(reps) == 2:
                kw = {"expr_rep": reps[0], "text_rep": reps[1]}
            tl.annotate_scmpt(query, ref, label_key=args.label_key, key_added=key,
                              n_seeds=args.n_seeds, save=args.save_model, device=args.device,
                              **kw)
    else:
        if not args.reference:
            raise ValueError(f"--reference is needed for --method {args.method}")
        ref = ad.read_h5ad(args.reference)
        if args.method == "knn-ensemble":
            tl.annotate_knn_ensemble(query, ref, use_rep=reps or ["X_genept_w", "X_genept_s"],
                                     label_key=args.label_key, key_added=key)
        else:
            rep = (reps or ["X_genept_w"])[0]
            fn = tl.annotate_knn if args.method == "knn" else tl.annotate_mlp
            fn(query, ref, use_rep=rep, label_key=args.label_key, key_added=key)
    query.write_h5ad(args.output)
    m = query.uns[key].get("metrics")
    msg = f"{query.n_obs} cells annotated ({args.method}) -> {args.output} obs[{key!r}]"
    if m:
        msg += f"; accuracy {m['accuracy']:.3f}, macro-F1 {m['f1_macro']:.3f}"
    print(msg)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
