"""Benchmark: GenePT-s encoding throughput (cells/s) of a sentence-transformers encoder.

Cell sentences of ``sc.datasets.pbmc68k_reduced()`` (its log-normalised ``raw``), cut to
the encoder's token budget as :func:`genept.tl.embed_cells` does, encoded without the
cache. Reports cells/s, tokens/s and the achieved model FLOP rate
(2 x non-embedding parameters x tokens, the usual transformer estimate; attention's
quadratic term added), and on CUDA the model-FLOP utilisation against the GPU's dense
fp16/bf16 peak given by ``--peak-tflops`` (H100 SXM: 989).

    python benchmarks/bench_genept_s.py                       # CPU, packaged MiniLM
    python benchmarks/bench_genept_s.py --device cuda --repeat 20 --peak-tflops 989
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv=None) -> None:
    import scanpy as sc
    import torch

    import genept as gpt
    from genept.encoders import SentenceTransformerEncoder
    from genept.pp import build_sentences, sentence_words, token_budget

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="all-MiniLM-L6-v2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=1, help="times the 700 cells are encoded")
    ap.add_argument("--peak-tflops", type=float, default=None)
    args = ap.parse_args(argv)
    gpt.settings.progress = False

    adata = sc.datasets.pbmc68k_reduced()
    enc = SentenceTransformerEncoder(args.model, device=args.device, batch_size=args.batch_size)
    names = adata.raw.var_names
    counts, budget = token_budget(enc, sentence_words(names))
    sents = build_sentences(adata.raw.X, names, token_counts=counts, budget=budget)
    sents = sents * args.repeat
    n_tok = enc.count_tokens(sents)
    model = enc.model
    n_params = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
    cfg = model[0].auto_model.config
    L, d = cfg.num_hidden_layers, cfg.hidden_size
    flops = float((2 * n_params * n_tok + 4 * L * d * n_tok.astype(np.float64) ** 2).sum())
    enc._encode(sents[: args.batch_size])  # warm-up
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    # the batches TextEncoder.encode makes (longest first), without de-duplication or cache,
    # so that --repeat really repeats the work
    order = sorted(range(len(sents)), key=lambda i: len(sents[i]), reverse=True)
    batches = [[sents[i] for i in order[b : b + args.batch_size]]
               for b in range(0, len(order), args.batch_size)]
    t = time.perf_counter()
    for batch in batches:
        enc._encode(batch)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    print(f"model {enc.model_name}, device {args.device}, {torch.get_num_threads()} CPU threads, "
          f"max {enc.max_tokens} tokens, budget {budget} tokens for genes")
    print(f"{len(sents)} sentences, mean {n_tok.mean():.0f} tokens "
          f"({np.mean([s.count(' ') + 1 for s in sents]):.0f} genes)")
    print("| device | cells/s | tokens/s | achieved TFLOP/s | MFU |")
    print("|---|---:|---:|---:|---:|")
    tf = flops / dt / 1e12
    mfu = f"{tf / args.peak_tflops:.1%}" if args.peak_tflops else "n/a"
    print(f"| {args.device} | {len(sents) / dt:,.0f} | {n_tok.sum() / dt:,.0f} | {tf:.3f} | {mfu} |")


if __name__ == "__main__":
    main()
