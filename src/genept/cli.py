"""The ``genept`` command line: ``genept demo``, ``genept embed-genes`` …

The parser and every check of paths and options run before anything heavy is imported,
so ``genept --help`` answers at once and a wrong path fails in a second, not after the
work. Errors the user can fix end in one line on stderr and exit status 2; outputs are
written through a temporary file beside the target and renamed, so the input (even when
it is also the output) is never destroyed by an interrupted write.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class CLIError(Exception):
    """A problem the user can fix: printed as one line, exit status 2."""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument(
        "--cache-dir", help="cache folder (default $GENEPT_CACHE_DIR or ~/.cache/genept)"
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more log output (and the traceback of an unexpected error)",
    )


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="genept",
        description="GenePT / scMPT gene and cell embeddings for AnnData (.h5ad) files.",
    )
    sub = ap.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run the whole flow offline on pbmc68k_reduced")
    d.add_argument("--out", default="genept_demo", help="output folder (default: genept_demo)")
    d.add_argument(
        "--model", default=None, help="text encoder (default: packaged all-MiniLM-L6-v2)"
    )
    _add_common(d)

    g = sub.add_parser("embed-genes", help="gene embeddings into varm (gpt.tl.embed_genes)")
    g.add_argument("input", help="input .h5ad")
    g.add_argument("output", help="output .h5ad (may be the input: it is replaced atomically)")
    g.add_argument(
        "--source",
        default="cards",
        help="cards | ncbi | ncbi_uniprot | name | genept | a .npz/.parquet/.csv/.pickle file",
    )
    g.add_argument(
        "--model", default=None, help="text encoder, or ada-002 / 3-large for --source genept"
    )
    g.add_argument(
        "--text-level",
        default=None,
        help="gene text for text sources, e.g. name | summary | card "
        "(default: gpt.tl.embed_genes' default)",
    )
    g.add_argument("--gene-symbols", default=None, help="var column holding gene symbols")
    g.add_argument("--key-added", default="X_genept")
    g.add_argument("--batch-size", type=int, default=None)
    g.add_argument("--no-cache", action="store_true", help="do not use the text-embedding cache")
    g.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow reading a pickle --source (only for files you trust)",
    )
    _add_common(g)

    c = sub.add_parser("embed-cells", help="GenePT-w / GenePT-s cell embeddings into obsm")
    c.add_argument("input", help="input .h5ad (normalised, log1p)")
    c.add_argument("output", help="output .h5ad (may be the input: it is replaced atomically)")
    c.add_argument("--method", choices=["w", "s"], default="w")
    c.add_argument("--layer", default=None)
    c.add_argument("--use-raw", action="store_true", help="use adata.raw.X")
    c.add_argument("--key-added", default=None)
    c.add_argument(
        "--embed-genes", action="store_true", help="(w) run embed-genes first with --gene-source"
    )
    c.add_argument("--gene-source", default="cards", help="(w) source for --embed-genes")
    genes = c.add_mutually_exclusive_group()
    genes.add_argument(
        "--mask-var",
        default=None,
        metavar="COLUMN",
        help="(w, s) boolean var column of the genes to use (default: highly_variable when "
        "present, else every gene)",
    )
    genes.add_argument(
        "--all-genes",
        action="store_true",
        help="(w, s) every gene, even when var has highly_variable (the papers)",
    )
    c.add_argument(
        "--gene-key",
        default="X_genept",
        help="(w) varm key of the gene embeddings (default: X_genept; --embed-genes writes it)",
    )
    c.add_argument(
        "--whiten",
        type=float,
        default=None,
        metavar="SHRINK",
        help="(w) whitening shrinkage of the gene vectors (default, as gpt.tl.embed_cells: "
        "0.1); 0: the vectors as they are (the paper)",
    )
    c.add_argument("--normalize", choices=["l2", "notebook"], default="l2")
    c.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    c.add_argument("--precision", choices=["fp32", "tf32", "bf16"], default="fp32")
    c.add_argument(
        "--backed",
        action="store_true",
        help="(w) read the input backed (out of core); the result is still written",
    )
    c.add_argument("--model", default=None, help="(s) text encoder")
    c.add_argument(
        "--n-genes",
        type=_n_genes_arg,
        default="auto",
        help="(s) top genes per sentence: a number, 'auto' (default, as gpt.tl.embed_cells: "
        "25) or 'all' (every gene that fits, GenePT's sentences)",
    )
    c.add_argument(
        "--prefix",
        default=None,
        help="(s) text before the genes (default, as gpt.tl.embed_cells: scMPT's "
        "'A cell with genes ranked by expression: '; '' for none, GenePT's sentences)",
    )
    c.add_argument("--gene-symbols", default=None, help="(s) var column with symbols")
    c.add_argument(
        "--windows",
        type=int,
        default=1,
        help="(s) sentences per cell: the ranked genes cut into up to this many sentences, "
        "pooled with weights --window-decay ** rank (default: 1)",
    )
    c.add_argument(
        "--window-decay",
        type=float,
        default=0.5,
        help="(s) weight ratio of consecutive windows, in (0, 1] (default: 0.5)",
    )
    c.add_argument("--hash-names", action="store_true", help="(s) ablation: hashed gene names")
    c.add_argument("--shuffle", action="store_true", help="(s) ablation: shuffled order")
    c.add_argument("--batch-size", type=int, default=None)
    c.add_argument("--allow-counts", action="store_true")
    c.add_argument(
        "--reference",
        default=None,
        help="embed through this embedded reference .h5ad's genes (and whitening): a query "
        "comparable to it (see gpt.tl.embed_cells(reference=))",
    )
    _add_common(c)

    a = sub.add_parser("annotate", help="annotate a query from a labelled reference")
    a.add_argument("query", help="query .h5ad with the representations in obsm")
    a.add_argument("output", help="output .h5ad (may be the query: it is replaced atomically)")
    a.add_argument("--reference", help="labelled reference .h5ad (not needed with --load-model)")
    a.add_argument("--method", choices=["knn", "knn-ensemble", "mlp", "scmpt"], default="scmpt")
    a.add_argument("--label-key", default="cell_type")
    a.add_argument(
        "--use-rep",
        nargs="+",
        action="extend",
        default=None,
        metavar="KEY",
        help="obsm key(s), e.g. `--use-rep X_pca X_genept_s`: one for knn/mlp, "
        "several for knn-ensemble/scmpt. Default: the keys query and reference "
        "share among X_scGPT, X_pca, X_genept_s, X_genept_w (scmpt: an "
        "expression and a text representation when both exist)",
    )
    a.add_argument("--key-added", default=None)
    a.add_argument("--save-model", default=None, help="(scmpt) folder to save the model to")
    a.add_argument("--load-model", default=None, help="(scmpt) annotate with a saved model")
    a.add_argument("--n-seeds", type=int, default=3)
    a.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    _add_common(a)
    return ap


# ---------------------------------------------------------------- checks before the work
def _check_h5ad(path: str, what: str) -> None:
    p = Path(path)
    if not p.exists():
        raise CLIError(f"{what} {path} does not exist")
    if p.is_dir():
        raise CLIError(f"{what} {path} is a folder, not an .h5ad file")
    size = p.stat().st_size
    if size == 0:
        raise CLIError(f"{what} {path} is empty (0 bytes), not an .h5ad file")
    try:
        with open(p, "rb") as f:  # HDF5 puts its signature at 0, 512, 1024, 2048 …
            offsets = [0] + [512 << k for k in range(12) if (512 << k) < size]
            ok = False
            for off in offsets:
                f.seek(off)
                if f.read(8) == _HDF5_SIGNATURE:
                    ok = True
                    break
    except OSError as e:
        raise CLIError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if not ok:
        raise CLIError(
            f"{what} {path} is not an .h5ad (HDF5) file; write one with "
            "adata.write_h5ad(...) or convert it with scanpy's readers"
        )


def _check_output(path: str) -> None:
    p = Path(path)
    if p.is_dir():
        raise CLIError(f"output {path} is a folder; give a file name such as {p / 'out.h5ad'}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise CLIError(
            f"the output folder {parent} does not exist; create it first (mkdir -p {parent})"
        )
    if not parent.is_dir():
        raise CLIError(f"the output folder {parent} is a file")
    if not os.access(parent, os.W_OK):
        raise CLIError(f"the output folder {parent} is not writable")


def _check_args(args) -> None:
    """Every path and option that can be checked cheaply, before any computation."""
    if args.cache_dir and Path(args.cache_dir).exists() and not Path(args.cache_dir).is_dir():
        raise CLIError(f"--cache-dir {args.cache_dir} is a file, not a folder")
    if args.command == "demo":
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise CLIError(f"--out {args.out} is a file; give a folder (it is created if missing)")
        return
    if args.command == "annotate":
        _check_h5ad(args.query, "query")
        if args.reference:
            _check_h5ad(args.reference, "--reference")
        elif not args.load_model:
            raise CLIError("--reference is needed unless --load-model is given")
        if args.load_model and not Path(args.load_model).is_dir():
            raise CLIError(f"--load-model {args.load_model} is not a folder saved by --save-model")
    else:
        _check_h5ad(args.input, "input")
        if getattr(args, "reference", None):
            _check_h5ad(args.reference, "--reference")
            if getattr(args, "mask_var", None) is not None or getattr(args, "all_genes", False):
                raise CLIError(
                    "--mask-var/--all-genes and --reference exclude each other: with "
                    "--reference the query is read through the reference's genes"
                )
    _check_output(args.output)
    for n in ("batch_size", "n_genes", "n_seeds", "windows"):
        v = getattr(args, n, None)
        if isinstance(v, int) and v <= 0:
            raise CLIError(f"--{n.replace('_', '-')} must be a positive number, got {v}")
    whiten = getattr(args, "whiten", None)
    if whiten is not None and not (math.isfinite(whiten) and whiten >= 0):  # before any work
        raise CLIError(f"--whiten must be a shrinkage >= 0 (0: no whitening), got {whiten}")
    decay = getattr(args, "window_decay", None)
    if decay is not None and not 0 < decay <= 1:
        raise CLIError(f"--window-decay must be in (0, 1], got {decay}")
    device = getattr(args, "device", "auto")
    if device not in ("auto", "cpu"):
        from ._core._device import resolve_device

        resolve_device(device)  # DeviceError (one line) when it is not available


def _read(path: str, what: str, **kwargs):
    import anndata as ad

    try:
        return ad.read_h5ad(path, **kwargs)
    except Exception as e:  # h5py/anndata errors on a damaged or foreign HDF5 file
        raise CLIError(
            f"cannot read {what} {path} as AnnData (an HDF5 file, but not one written by "
            f"anndata, or damaged): {_one_line(e)}"
        ) from None


def _write(adata, path: str) -> None:
    from ._utils import atomic_write_h5ad

    atomic_write_h5ad(adata, path)


def _one_line(e: BaseException, limit: int = 400) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str):
        text = e.args[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
    user_errors: tuple[type[BaseException], ...] = (
        CLIError,
        ValueError,
        KeyError,
        TypeError,
        OSError,
        ImportError,
    )
    try:
        _check_args(args)
        _setup(args)
        if args.command == "demo":
            from ._demo import run_demo

            run_demo(args.out, model=args.model)
        elif args.command == "embed-genes":
            _embed_genes(args)
        elif args.command == "embed-cells":
            _embed_cells(args)
        elif args.command == "annotate":
            _annotate(args)
    except KeyboardInterrupt:
        print(f"genept {args.command}: interrupted; no output was written", file=sys.stderr)
        return 130
    except user_errors as e:  # OSError covers failed downloads (offline) and full disks
        if args.verbose > 1:
            raise
        print(f"genept {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:
        if args.verbose:
            raise
        print(
            f"genept {args.command}: error: {type(e).__name__}: {_one_line(e)} "
            "(run with -v to see the traceback)",
            file=sys.stderr,
        )
        return 1
    return 0


# ---------------------------------------------------------------- the commands
#: command-line options passed under the same name to the function a command runs
EMBED_GENES_OPTIONS = (
    "source", "model", "gene_symbols", "key_added", "batch_size", "allow_pickle",
)  # fmt: skip
EMBED_CELLS_OPTIONS = (
    "method", "layer", "key_added", "normalize", "device", "precision", "model", "n_genes",
    "prefix", "gene_symbols", "hash_names", "shuffle", "batch_size", "allow_counts",
    "gene_key", "windows", "window_decay", "whiten",
)  # fmt: skip


def _n_genes_arg(value: str):
    """``--n-genes``: an integer, ``auto`` or ``all`` (``None``: every gene that fits)."""
    if value in ("auto", "all"):
        return None if value == "all" else value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer, 'auto' or 'all', got {value!r}"
        ) from None


def _options(args, names: Sequence[str]) -> dict:
    """``{name: args.name}``: the options a command passes on unchanged."""
    return {name: getattr(args, name) for name in names}


def _embed_genes(args) -> None:
    from ._core._keys import uns_key
    from .tl import embed_genes

    adata = _read(args.input, "input")
    options = {} if args.text_level is None else {"text_level": args.text_level}
    embed_genes(adata, cache=not args.no_cache, **options, **_options(args, EMBED_GENES_OPTIONS))
    _write(adata, args.output)
    p = adata.uns[uns_key(args.key_added)]["params"]
    print(
        f"{p['n_genes_matched']}/{p['n_genes_total']} genes embedded "
        f"({p['dim']}-d, {p['model']}) -> {args.output}"
    )


def _embed_cells(args) -> None:
    from .tl import embed_cells, embed_genes

    adata = src = _read(args.input, "input", backed="r" if args.backed else None)
    # the reference's genes, vectors and parameters, not its expression: read backed
    ref = _read(args.reference, "--reference", backed="r") if args.reference else None
    try:
        # with a reference the gene vectors are the reference's: none needed here
        need_genes = args.method == "w" and ref is None and args.gene_key not in adata.varm
        if args.method == "w" and ref is None and (args.embed_genes or need_genes):
            if not args.embed_genes:
                from ._cli_messages import embed_genes_command

                raise CLIError(
                    f"{args.input} has no varm[{args.gene_key!r}]: run "
                    f"{embed_genes_command(args.input, args.gene_key)} first or add --embed-genes"
                )
            embed_genes(adata, source=args.gene_source, key_added=args.gene_key)
        options = _options(args, EMBED_CELLS_OPTIONS)
        for name in ("prefix", "whiten"):  # not given: the function's default
            if options[name] is None:
                del options[name]
        if args.mask_var is not None or args.all_genes:
            options["mask_var"] = False if args.all_genes else args.mask_var
        try:
            embed_cells(adata, use_raw=args.use_raw or None, reference=ref, **options)
        except (ValueError, KeyError) as e:  # in the command's words
            raise CLIError(_in_flags(_one_line(e), args, ref)) from e
        key = args.key_added or f"X_genept_{args.method}"
        if adata.isbacked:
            adata = adata.to_memory()  # the backed file stays untouched
    finally:
        for f in (src, ref):
            if f is not None and f.isbacked:
                f.file.close()
    _write(adata, args.output)
    print(
        f"{adata.n_obs} cells embedded with GenePT-{args.method} "
        f"({adata.obsm[key].shape[1]}-d) -> {args.output} obsm[{key!r}]"
    )


def _in_flags(message: str, args, ref) -> str:
    """An ``embed_cells`` error in ``embed-cells``' words.

    The line that embeds the reference gets this command's settings (and
    ``--embed-genes`` where the reference has no gene vectors).
    """
    from ._cli_messages import as_flags, given_flags

    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    skip = ("method", "key_added", "reference", "embed_genes")  # in the message or moot
    skip += ("verbose", "no_progress", "cache_dir", "backed", "device", "batch_size")
    ref_flags = given_flags(sub.choices["embed-cells"], args, skip)
    if args.method == "w" and ref is not None and args.gene_key not in ref.varm:
        ref_flags += " --embed-genes"
    return as_flags(
        message,
        input=args.input,
        reference=args.reference or "REFERENCE.h5ad",
        ref_flags=ref_flags,
        gene_key=args.gene_key,
    )


#: default representations, in order of preference
_EXPR_REPS = ("X_scGPT", "X_pca")
_TEXT_REPS = ("X_genept_s", "X_genept_w")


def _default_reps(method: str, query, ref) -> list[str]:
    shared = [k for k in (*_EXPR_REPS, *_TEXT_REPS) if k in query.obsm and k in ref.obsm]
    if not shared:
        raise CLIError(
            "query and reference share none of "
            + ", ".join((*_EXPR_REPS, *_TEXT_REPS))
            + f" in obsm (query: {list(query.obsm)}, reference: {list(ref.obsm)}); run "
            "`genept embed-cells` on both or pass --use-rep"
        )
    if method in ("knn", "mlp"):
        return shared[:1]
    if method == "scmpt":
        expr = [k for k in shared if k in _EXPR_REPS][:1]
        text = [k for k in shared if k in _TEXT_REPS][:1]
        return (expr + text) if expr and text else shared[:2]
    return shared


def _annotate(args) -> None:
    from . import tl

    query = _read(args.query, "query")
    key = args.key_added or f"genept_{args.method.replace('-', '_')}"
    if args.method == "scmpt" and args.load_model:
        tl.annotate_scmpt(
            query,
            label_key=args.label_key,
            model=args.load_model,
            key_added=key,
            device=args.device,
        )
    else:
        ref = _read(args.reference, "--reference")
        reps = args.use_rep or _default_reps(args.method, query, ref)
        if args.method == "scmpt":
            tl.annotate_scmpt(
                query,
                ref,
                label_key=args.label_key,
                key_added=key,
                reps=reps,
                n_seeds=args.n_seeds,
                save=args.save_model,
                device=args.device,
            )
        elif args.method == "knn-ensemble":
            tl.annotate_knn_ensemble(
                query, ref, use_rep=reps, label_key=args.label_key, key_added=key
            )
        else:
            if len(reps) != 1:
                raise CLIError(f"--method {args.method} takes one --use-rep, got {reps}")
            fn = tl.annotate_knn if args.method == "knn" else tl.annotate_mlp
            fn(query, ref, use_rep=reps[0], label_key=args.label_key, key_added=key)
    _write(query, args.output)
    m = query.uns[key].get("metrics")
    msg = f"{query.n_obs} cells annotated ({args.method}) -> {args.output} obs[{key!r}]"
    if m:
        msg += f"; accuracy {m['accuracy']:.3f}, macro-F1 {m['f1_macro']:.3f}"
    print(msg)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
