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
    except (ValueError, KeyError, FileNotFoundError, TypeError) as e:
        print(f"genept {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
