"""Build the tiny scGPT checkpoint and reference embeddings used by ``tests/test_scgpt.py``.

The reference numbers come from scGPT's *own* code (``scgpt`` 0.2.4): its
``TransformerModel`` builds and initialises the checkpoint, and its
``tasks.cell_emb.get_batch_cell_embeddings`` (with its ``DataCollator`` and
``preprocess.binning``) embeds a small count matrix. ``import scgpt`` fails on current
torch (torchtext ABI), so the needed source files are loaded one by one with stubs for
the imports they do not use (scanpy, anndata, torchtext vocabulary, utils).

Rerun (outside the repo's environment; never let pip pull CUDA wheels)::

    python -m venv /tmp/scgpt_venv
    /tmp/scgpt_venv/bin/pip install torch==2.13.0      # first: the CPU build
    /tmp/scgpt_venv/bin/pip install scgpt==0.2.4 --no-deps
    /tmp/scgpt_venv/bin/pip install numpy tqdm
    /tmp/scgpt_venv/bin/python scripts/make_scgpt_fixture.py

It writes ``tests/data/scgpt_tiny/`` (``args.json``, ``vocab.json``, ``best_model.pt``,
``expected.npz``; ~0.2 MB). ``expected.npz`` holds:

``X`` (20 cells x 60 genes, float32 counts), ``var_names``, ``gene_ids`` (vocab ids of
the columns); for the run without sampling (``max_length=1200``, ``np.random.seed(0)``,
``torch.manual_seed(0)``, batch size 8): ``full_genes``/``full_values`` (the padded token
ids and binned values scGPT fed to ``_encode``, re-padded to one width), ``full_cls``
(raw ``<cls>`` outputs) and ``full_emb`` (L2-normalised, what ``embed_data`` stores);
the same ``sampled_*`` for ``max_length=16`` (seed 1), where scGPT samples genes.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import sys
import types
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "scgpt_tiny"

# fmt: off
GENES = [
    "CD3E", "CD3D", "CD2", "IL7R", "CCR7", "LEF1", "TCF7", "CD8A", "CD8B", "GZMK",
    "GZMB", "PRF1", "NKG7", "GNLY", "KLRD1", "MS4A1", "CD79A", "CD79B", "CD19", "IGHM",
    "CD14", "LYZ", "S100A8", "S100A9", "FCGR3A", "MS4A7", "CST3", "FCER1A", "CLEC10A", "ITGAX",
    "PPBP", "PF4", "HBB", "HBA1", "MKI67", "TOP2A", "ACTB", "GAPDH", "B2M", "MALAT1",
    "RPL13", "RPS27", "TMSB4X", "FTL", "FTH1", "HLA-DRA", "HLA-DRB1", "CD74", "IL2RA", "FOXP3",
    "CTLA4", "PDCD1", "TIGIT", "LAG3", "HAVCR2", "CXCL8", "IL1B", "TNF", "IFNG", "JUN",
]
# fmt: on
ARGS = {
    "embsize": 32,
    "nheads": 4,
    "d_hid": 64,
    "nlayers": 2,
    "n_layers_cls": 3,
    "dropout": 0.2,
    "pad_token": "<pad>",
    "pad_value": -2,
    "mask_value": -1,
    "input_style": "binned",
    "input_emb_style": "continuous",
    "n_bins": 51,
    "max_seq_len": 1200,
    "fast_transformer": True,
    "MVC": True,
    "note": "random-weight test checkpoint made by genept/scripts/make_scgpt_fixture.py",
}


def _stub(name: str, path: Path | None = None, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    if path is not None:
        mod.__path__ = [str(path)]
    for k, v in attrs.items():
        setattr(mod, k, v)
    sys.modules[name] = mod
    return mod


def load_scgpt_sources(root: Path | None = None):
    """scgpt.model.model, scgpt.data_collator and scgpt.tasks.cell_emb, without ``import scgpt``.

    ``root`` is the ``scgpt`` package folder (default: the installed one, found without
    running its ``__init__``). Also used by ``benchmarks/bench_scgpt.py``.
    """
    if root is None:
        spec = importlib.util.find_spec("scgpt")  # locates the package without running it
        if spec is None or spec.origin is None:
            raise SystemExit(
                "scgpt is not installed in this interpreter (see the module docstring)"
            )
        root = Path(spec.origin).parent
    _stub("scgpt", root, logger=logging.getLogger("scGPT"), __version__="0.2.4")
    for opt in ("scanpy", "anndata", "scipy"):  # only needed by code paths not used here
        try:
            importlib.import_module(opt)
        except ImportError:
            if opt == "scanpy":
                _stub("scanpy", Path("/nonexistent"))
                _stub("scanpy.get", _get_obs_rep=None, _set_obs_rep=None)
            elif opt == "anndata":
                _stub("anndata", AnnData=object)
            else:
                _stub("scipy", Path("/nonexistent"))
                _stub("scipy.sparse", issparse=lambda x: False)
    model_pkg = _stub("scgpt.model", root / "model")
    model_mod = importlib.import_module("scgpt.model.model")
    model_pkg.TransformerModel = model_mod.TransformerModel
    collator_mod = importlib.import_module("scgpt.data_collator")
    _stub("scgpt.tokenizer", GeneVocab=None)
    _stub("scgpt.utils", load_pretrained=None)
    _stub("scgpt.tasks", root / "tasks")
    cell_emb = importlib.import_module("scgpt.tasks.cell_emb")
    # run the DataLoader in-process (num_workers=0) so numpy's global seed drives binning
    cell_emb.os = types.SimpleNamespace(sched_getaffinity=lambda pid: ())
    return model_mod, collator_mod, cell_emb


def make_counts(rng: np.random.Generator, n_cells: int = 20) -> np.ndarray:
    n_genes = len(GENES)
    X = np.zeros((n_cells, n_genes), dtype=np.float32)
    for i in range(n_cells):
        k = rng.integers(3, 40)
        cols = rng.choice(n_genes, size=k, replace=False)
        X[i, cols] = rng.negative_binomial(2, 0.3, size=k) + 1  # many ties
    X[0, :] = 0
    X[0, 5] = 7.0  # one gene only
    X[1, :] = 0
    X[1, [2, 9, 31, 44]] = 3.0  # all values equal
    X[2, :] = rng.negative_binomial(3, 0.2, size=n_genes) + 1  # every gene
    X[3, :] = 0
    cols = rng.choice(n_genes, size=25, replace=False)
    X[3, cols] = np.log1p(rng.gamma(1.0, 3.0, size=25)).astype(np.float32)  # continuous
    return X


def run_scgpt(cell_emb, model, vocab, X, gene_ids, *, max_length, seed, batch_size=8):
    fed_genes, fed_values, cls_out = [], [], []
    original = model._encode

    def recording_encode(src, values, src_key_padding_mask, batch_labels=None):
        out = original(src, values, src_key_padding_mask, batch_labels)
        fed_genes.append(src.clone())
        fed_values.append(values.clone())
        cls_out.append(out[:, 0, :].detach().clone())
        return out

    model._encode = recording_encode
    np.random.seed(seed)  # noqa: NPY002  (scGPT binning draws from the global state)
    torch.manual_seed(seed)
    try:
        emb = cell_emb.get_batch_cell_embeddings(
            types.SimpleNamespace(X=X),
            cell_embedding_mode="cls",
            model=model,
            vocab=vocab,
            max_length=max_length,
            batch_size=batch_size,
            model_configs=ARGS,
            gene_ids=gene_ids,
        )
    finally:
        model._encode = original
    width = max(g.shape[1] for g in fed_genes)
    pad_id = vocab[ARGS["pad_token"]]
    genes = np.concatenate(
        [
            np.pad(g.numpy(), ((0, 0), (0, width - g.shape[1])), constant_values=pad_id)
            for g in fed_genes
        ]
    )
    values = np.concatenate(
        [
            np.pad(v.numpy(), ((0, 0), (0, width - v.shape[1])), constant_values=ARGS["pad_value"])
            for v in fed_values
        ]
    )
    return genes.astype(np.int64), values.astype(np.float32), torch.cat(cls_out).numpy(), emb


def main() -> None:
    model_mod, _, cell_emb = load_scgpt_sources()
    vocab = {g: i for i, g in enumerate(GENES)}
    for tok in ("<pad>", "<cls>", "<eoc>"):
        vocab[tok] = len(vocab)

    torch.manual_seed(1234)
    model = model_mod.TransformerModel(
        ntoken=len(vocab),
        d_model=ARGS["embsize"],
        nhead=ARGS["nheads"],
        d_hid=ARGS["d_hid"],
        nlayers=ARGS["nlayers"],
        nlayers_cls=ARGS["n_layers_cls"],
        n_cls=1,
        vocab=vocab,
        dropout=ARGS["dropout"],
        pad_token=ARGS["pad_token"],
        pad_value=ARGS["pad_value"],
        do_mvc=True,
        do_dab=False,
        use_batch_labels=False,
        domain_spec_batchnorm=False,
        explicit_zero_prob=False,
        use_fast_transformer=False,  # no flash-attn here; flash keys are made by the test
        fast_transformer_backend="flash",
        pre_norm=False,
    )
    with torch.no_grad():  # move every weight off its default so a mis-mapped one shows
        for name, p in model.named_parameters():
            if name.endswith("encoder.embedding.weight"):
                continue
            p.add_(0.15 * torch.randn_like(p))
    model.eval()

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "args.json").write_text(json.dumps(ARGS, indent=2) + "\n")
    (OUT / "vocab.json").write_text(json.dumps(vocab, indent=1) + "\n")
    torch.save(model.state_dict(), OUT / "best_model.pt")

    X = make_counts(np.random.default_rng(7))
    gene_ids = np.array([vocab[g] for g in GENES], dtype=np.int64)
    full = run_scgpt(cell_emb, model, vocab, X, gene_ids, max_length=1200, seed=0)
    sampled = run_scgpt(cell_emb, model, vocab, X, gene_ids, max_length=16, seed=1)
    np.savez_compressed(
        OUT / "expected.npz",
        X=X,
        var_names=np.array(GENES),
        gene_ids=gene_ids,
        full_genes=full[0],
        full_values=full[1],
        full_cls=full[2],
        full_emb=full[3],
        full_seed=0,
        full_max_length=1200,
        sampled_genes=sampled[0],
        sampled_values=sampled[1],
        sampled_cls=sampled[2],
        sampled_emb=sampled[3],
        sampled_seed=1,
        sampled_max_length=16,
    )
    size = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {OUT} ({size / 1e3:.0f} kB); full {full[0].shape}, sampled {sampled[0].shape}")


if __name__ == "__main__":
    main()
