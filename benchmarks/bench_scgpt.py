"""Throughput of ``gpt.tl.embed_scgpt`` against scGPT's own embedding path, same run.

A random-weight scGPT checkpoint (default: d_model 128, 4 layers, 8 heads, 2,000-gene
vocabulary; pass ``--tiny`` for the test checkpoint) embeds a synthetic count matrix whose
cells express 50-800 genes. The baseline is, in order of preference:

* ``scgpt``: scGPT 0.2.4's own ``get_batch_cell_embeddings`` (its ``Dataset``,
  ``DataCollator`` with binning, ``DataLoader`` with its worker count and its
  ``TransformerModel``), loaded from the scgpt sources of a throwaway venv
  (``--scgpt-src``, default ``/tmp/scgpt_venv/lib/python*/site-packages/scgpt``; see
  ``scripts/make_scgpt_fixture.py`` for how to make it) with the same weights;
* ``naive``: genept's encoder, one cell per forward pass (when no scgpt sources exist).

Both run on CPU, and on CUDA when available (fp16 autocast for both). The agreement
line is the cosine between the two embeddings of each cell: they differ only by the
random tie-breaking of binning (both draw, from different generators).

Run: ``python benchmarks/bench_scgpt.py [--cells 400] [--device cpu|cuda|all]``.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch
from scipy import sparse

import genept  # noqa: F401
from genept.models import load_scgpt
from genept.models._scgpt import ScGPTConfig, ScGPTEncoder
from genept.tl._embed_scgpt import embed_scgpt, embed_scgpt_tokens, tokenize_scgpt

REPO = Path(__file__).resolve().parents[1]


def make_checkpoint(folder: Path, *, n_genes: int, d_model: int, nlayers: int, nhead: int) -> None:
    genes = [f"GENE{i:05d}" for i in range(n_genes)]
    vocab = {g: i for i, g in enumerate(genes)}
    for tok in ("<pad>", "<cls>", "<eoc>"):
        vocab[tok] = len(vocab)
    args = {
        "embsize": d_model,
        "nheads": nhead,
        "d_hid": 2 * d_model,
        "nlayers": nlayers,
        "n_layers_cls": 3,
        "dropout": 0.2,
        "pad_token": "<pad>",
        "pad_value": -2,
        "input_emb_style": "continuous",
        "n_bins": 51,
    }
    torch.manual_seed(0)
    cfg = ScGPTConfig.from_args(args, ntoken=len(vocab))
    model = ScGPTEncoder(cfg, pad_token_id=vocab["<pad>"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "args.json").write_text(json.dumps(args))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    torch.save(model.state_dict(), folder / "best_model.pt")


def make_adata(
    vocab_genes: list[str], n_cells: int, seed: int = 0, max_genes: int = 800
) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    n_genes = len(vocab_genes)
    rows, cols, vals = [], [], []
    for i in range(n_cells):
        k = int(rng.integers(50, min(max_genes, n_genes)))
        c = rng.choice(n_genes, size=k, replace=False)
        rows.append(np.full(k, i))
        cols.append(c)
        vals.append(rng.negative_binomial(2, 0.3, size=k) + 1)
    X = sparse.csr_matrix(
        (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_cells, n_genes),
    )
    return ad.AnnData(X, var=pd.DataFrame(index=vocab_genes))


def find_scgpt_src(arg: str | None) -> Path | None:
    if arg:
        return Path(arg)
    hits = sorted(glob.glob("/tmp/scgpt_venv/lib/python*/site-packages/scgpt"))
    return Path(hits[0]) if hits else None


def scgpt_baseline(src: Path, ckpt_dir: Path, adata: ad.AnnData, *, device: str, batch_size: int):
    """scGPT's own ``get_batch_cell_embeddings`` on the same weights: (emb, seconds)."""
    spec = importlib.util.spec_from_file_location(
        "make_scgpt_fixture", REPO / "scripts" / "make_scgpt_fixture.py"
    )
    fixture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixture)
    model_mod, _, cell_emb = fixture.load_scgpt_sources(src)
    cell_emb.os = os  # the real worker count, as scGPT runs it
    args = json.loads((ckpt_dir / "args.json").read_text())
    vocab = json.loads((ckpt_dir / "vocab.json").read_text())
    model = model_mod.TransformerModel(
        ntoken=len(vocab),
        d_model=args["embsize"],
        nhead=args["nheads"],
        d_hid=args["d_hid"],
        nlayers=args["nlayers"],
        nlayers_cls=args["n_layers_cls"],
        n_cls=1,
        vocab=vocab,
        dropout=args["dropout"],
        pad_token=args["pad_token"],
        pad_value=args["pad_value"],
        do_mvc=True,
        use_fast_transformer=False,
        pre_norm=False,
    )
    state = torch.load(ckpt_dir / "best_model.pt", weights_only=True)
    missing, _ = model.load_state_dict(state, strict=False)
    assert not [
        k for k in missing if k.startswith(("encoder.", "value_encoder.", "transformer_encoder."))
    ]
    model.to(device).eval()
    gene_ids = np.array([vocab[g] for g in adata.var_names])
    np.random.seed(0)  # noqa: NPY002
    t0 = time.perf_counter()
    emb = cell_emb.get_batch_cell_embeddings(
        adata,
        cell_embedding_mode="cls",
        model=model,
        vocab=vocab,
        max_length=1200,
        batch_size=batch_size,
        model_configs=args,
        gene_ids=gene_ids,
    )
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return emb, time.perf_counter() - t0


def naive_baseline(ckpt_dir: Path, adata: ad.AnnData, *, device: str):
    ckpt = load_scgpt(ckpt_dir, device=device)
    ids = np.array([ckpt.vocab[g] for g in adata.var_names])
    t0 = time.perf_counter()
    cells = tokenize_scgpt(
        adata.X,
        ids,
        cls_id=ckpt.cls_token_id,
        pad_value=ckpt.config.pad_value,
        rng=np.random.default_rng(1),
    )
    emb = np.concatenate(
        [
            embed_scgpt_tokens(
                ckpt.model, [c], pad_value=ckpt.config.pad_value, batch_size=1, device=device
            )
            for c in cells
        ]
    )
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return emb, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=400)
    p.add_argument("--genes", type=int, default=2000)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-genes", type=int, default=800, help="cells express 50 to this many")
    p.add_argument(
        "--whole-human",
        action="store_true",
        help="the published whole-human checkpoint's shape: 12 layers, d_model 512, 8 heads, "
        "60,697-gene vocabulary (random weights), cells of up to 1,200 genes",
    )
    p.add_argument("--tiny", action="store_true", help="use tests/data/scgpt_tiny")
    p.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    p.add_argument("--scgpt-src", default=None)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.whole_human:
        a.layers, a.d_model, a.heads, a.genes, a.max_genes = 12, 512, 8, 60697, 1200
    if a.threads:
        torch.set_num_threads(a.threads)
    devices = ["cpu", "cuda"] if a.device == "all" else [a.device]
    if "cuda" in devices and not torch.cuda.is_available():
        print("CUDA not available: GPU part skipped")
        devices = [d for d in devices if d != "cuda"]

    with tempfile.TemporaryDirectory() as tmp:
        if a.tiny:
            ckpt_dir = REPO / "tests" / "data" / "scgpt_tiny"
        else:
            ckpt_dir = Path(tmp) / "ckpt"
            make_checkpoint(
                ckpt_dir, n_genes=a.genes, d_model=a.d_model, nlayers=a.layers, nhead=a.heads
            )
        vocab = json.loads((ckpt_dir / "vocab.json").read_text())
        genes = [g for g in vocab if not g.startswith("<")]
        adata = make_adata(genes, a.cells, max_genes=a.max_genes)
        nnz = np.diff(adata.X.indptr)
        src = find_scgpt_src(a.scgpt_src)
        base_name = "scgpt" if src is not None and src.is_dir() else "naive"
        print(
            f"torch {torch.__version__}, threads {torch.get_num_threads()}; checkpoint {ckpt_dir.name}; "
            f"{a.cells} cells x {len(genes)} genes, genes/cell {nnz.min()}-{nnz.max()} "
            f"(mean {nnz.mean():.0f}); d_model {a.d_model}, {a.layers} layers, batch "
            f"{a.batch_size}; baseline: {base_name}"
        )
        cuda_peak = {}
        for dev in devices:
            if dev == "cuda":  # peak memory counts the weights too, for both
                torch.cuda.reset_peak_memory_stats()
                base_mem = torch.cuda.memory_allocated()
            ckpt = load_scgpt(ckpt_dir, device=dev)
            embed_scgpt(adata[:8].copy(), ckpt, device=dev, show_progress=False)  # warm-up
            if dev == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            embed_scgpt(adata, ckpt, device=dev, batch_size=a.batch_size, show_progress=False)
            if dev == "cuda":
                torch.cuda.synchronize()
                cuda_peak["genept"] = (torch.cuda.max_memory_allocated() - base_mem) / 2**30
            t_gpt = time.perf_counter() - t0
            del ckpt
            if dev == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                base_mem = torch.cuda.memory_allocated()
            try:
                if base_name == "scgpt":
                    base, t_base = scgpt_baseline(
                        src, ckpt_dir, adata, device=dev, batch_size=a.batch_size
                    )
                else:
                    base, t_base = naive_baseline(ckpt_dir, adata, device=dev)
            except torch.OutOfMemoryError as e:  # what users of scGPT report at batch 64
                print(f"[{dev}] {base_name} baseline ran out of GPU memory: {e}")
                print(
                    f"[{dev}] genept embed_scgpt: {a.cells / t_gpt:8.1f} cells/s, "
                    f"peak {cuda_peak.get('genept', float('nan')):.2f} GiB"
                )
                continue
            if dev == "cuda":
                cuda_peak[base_name] = (torch.cuda.max_memory_allocated() - base_mem) / 2**30
            cos = (adata.obsm["X_scGPT"] * base).sum(1)
            print(
                f"[{dev}] genept embed_scgpt: {a.cells / t_gpt:8.1f} cells/s ({t_gpt:.2f} s) | "
                f"{base_name}: {a.cells / t_base:8.1f} cells/s ({t_base:.2f} s) | "
                f"speed-up x{t_base / t_gpt:.2f} | cosine genept vs {base_name}: "
                f"min {cos.min():.4f}, median {np.median(cos):.4f}"
            )
            if dev == "cuda":
                print(
                    "[cuda] peak GPU memory (weights included): "
                    + ", ".join(f"{k} {v:.2f} GiB" for k, v in cuda_peak.items())
                )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
