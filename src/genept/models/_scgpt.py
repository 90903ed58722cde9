"""scGPT's cell encoder, ported without the ``scgpt`` package.

``scgpt`` 0.2.4 cannot be imported next to current torch (its tokenizer needs a
torchtext build matching torch's ABI), so the part of its ``TransformerModel`` that
``scgpt.tasks.embed_data`` uses — gene-token embedding, continuous value encoder,
``nn.TransformerEncoder`` and the ``<cls>`` output — is copied here, module for module,
so that a pretrained checkpoint folder (``args.json``, ``vocab.json``,
``best_model.pt``) loads with the same parameter names:

* ``encoder.embedding.weight``, ``encoder.enc_norm.*`` (:class:`GeneEncoder`),
* ``value_encoder.linear1.*``, ``value_encoder.linear2.*``, ``value_encoder.norm.*``
  (:class:`ContinuousValueEncoder`),
* ``transformer_encoder.layers.{i}.*`` (:class:`torch.nn.TransformerEncoderLayer`,
  post-norm, ReLU, ``batch_first``). Checkpoints trained with flash-attention name the
  fused input projection ``self_attn.Wqkv.*``; it is the same ``[q; k; v]`` matrix as
  ``self_attn.in_proj_*`` and is renamed on load, as ``scgpt.utils.load_pretrained`` does.

Decoder heads (``decoder``, ``mvc_decoder``, ``cls_decoder``, …) are not needed for cell
embeddings and are ignored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "SCGPT_FILES",
    "SCGPT_SPECIAL_TOKENS",
    "ContinuousValueEncoder",
    "GeneEncoder",
    "ScGPTCheckpoint",
    "ScGPTConfig",
    "ScGPTEncoder",
    "convert_scgpt_state_dict",
    "load_scgpt",
    "read_scgpt_vocab",
]

#: files a scGPT model folder must hold
SCGPT_FILES = ("args.json", "vocab.json", "best_model.pt")
#: special tokens ``embed_data`` appends to the vocabulary when missing (in this order)
SCGPT_SPECIAL_TOKENS = ("<pad>", "<cls>", "<eoc>")
#: state-dict prefixes of the encoder path
_ENCODER_PREFIXES = ("encoder.", "value_encoder.", "transformer_encoder.")


@dataclass(frozen=True)
class ScGPTConfig:
    """The hyper-parameters of a scGPT checkpoint that shape its encoder (``args.json``)."""

    ntoken: int
    d_model: int
    nhead: int
    d_hid: int
    nlayers: int
    dropout: float = 0.2
    pad_token: str = "<pad>"
    pad_value: float = -2.0
    input_emb_style: str = "continuous"
    n_bins: int = 51
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_args(cls, args: Mapping[str, Any], *, ntoken: int) -> ScGPTConfig:
        """Read scGPT's ``args.json`` (``embsize`` or ``d_model``, ``nheads``, ``d_hid``, …)."""
        d_model = args.get("embsize", args.get("d_model"))
        missing = [
            k
            for k, v in {
                "embsize (or d_model)": d_model,
                "nheads": args.get("nheads"),
                "d_hid": args.get("d_hid"),
                "nlayers": args.get("nlayers"),
            }.items()
            if v is None
        ]
        if missing:
            raise ValueError(f"scGPT args.json lacks {missing} (keys present: {sorted(args)})")
        style = args.get("input_emb_style", "continuous")
        if style != "continuous":
            raise NotImplementedError(
                f"input_emb_style={style!r}: only scGPT's 'continuous' value encoder (the one "
                "of the released pretrained checkpoints) is supported"
            )
        return cls(
            ntoken=int(ntoken),
            d_model=int(d_model),
            nhead=int(args["nheads"]),
            d_hid=int(args["d_hid"]),
            nlayers=int(args["nlayers"]),
            dropout=float(args.get("dropout", 0.2)),
            pad_token=str(args.get("pad_token", "<pad>")),
            pad_value=float(args.get("pad_value", -2)),
            input_emb_style=style,
            n_bins=int(args.get("n_bins", 51)),
            extra=dict(args),
        )


class GeneEncoder(nn.Module):
    """Gene-token embedding followed by LayerNorm (scGPT's ``GeneEncoder``)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None):
        super().__init__()
        self.embedding = nn.Embedding(num_embeddings, embedding_dim, padding_idx=padding_idx)
        self.enc_norm = nn.LayerNorm(embedding_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.enc_norm(self.embedding(x))


class ContinuousValueEncoder(nn.Module):
    """Value -> vector: clamp at ``max_value``, Linear-ReLU-Linear-LayerNorm-Dropout."""

    def __init__(self, d_model: int, dropout: float = 0.1, max_value: int = 512):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        self.linear1 = nn.Linear(1, d_model)
        self.activation = nn.ReLU()
        self.linear2 = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.max_value = max_value

    def forward(self, x: Tensor) -> Tensor:
        x = torch.clamp(x.unsqueeze(-1), max=self.max_value)
        x = self.activation(self.linear1(x))
        return self.dropout(self.norm(self.linear2(x)))


class ScGPTEncoder(nn.Module):
    """The encoder path of scGPT's ``TransformerModel`` (``_encode`` + ``<cls>`` pooling).

    Parameters
    ----------
    config
        Checkpoint hyper-parameters.
    pad_token_id
        Id of ``config.pad_token`` (the gene embedding's ``padding_idx``).
    """

    def __init__(self, config: ScGPTConfig, *, pad_token_id: int):
        super().__init__()
        self.config = config
        self.pad_token_id = int(pad_token_id)
        self.encoder = GeneEncoder(config.ntoken, config.d_model, padding_idx=self.pad_token_id)
        self.value_encoder = ContinuousValueEncoder(config.d_model, config.dropout)
        layer = nn.TransformerEncoderLayer(
            config.d_model, config.nhead, config.d_hid, config.dropout, batch_first=True
        )
        self.transformer_encoder = nn.TransformerEncoder(
            layer, config.nlayers, enable_nested_tensor=config.nhead % 2 == 0
        )

    @property
    def d_model(self) -> int:
        return self.config.d_model

    def forward(
        self, genes: Tensor, values: Tensor, src_key_padding_mask: Tensor | None = None
    ) -> Tensor:
        """Token outputs ``(batch, seq_len, d_model)`` (scGPT's ``TransformerModel._encode``).

        ``genes``: token ids ``(batch, seq_len)``; ``values``: binned values, same shape;
        ``src_key_padding_mask``: ``True`` at padding (default: ``genes == pad id``).
        """
        if src_key_padding_mask is None:
            src_key_padding_mask = genes.eq(self.pad_token_id)
        total = self.encoder(genes) + self.value_encoder(values)
        return self.transformer_encoder(total, src_key_padding_mask=src_key_padding_mask)

    def cell_embedding(
        self, genes: Tensor, values: Tensor, src_key_padding_mask: Tensor | None = None
    ) -> Tensor:
        """The ``<cls>`` output (position 0), not normalised: ``(batch, d_model)``."""
        return self.forward(genes, values, src_key_padding_mask)[:, 0, :]


@dataclass
class ScGPTCheckpoint:
    """A loaded scGPT model folder: encoder, vocabulary and ``args.json``."""

    model: ScGPTEncoder
    vocab: dict[str, int]
    config: ScGPTConfig
    path: Path
    n_ignored_keys: int = 0

    @property
    def pad_token_id(self) -> int:
        return self.vocab[self.config.pad_token]

    @property
    def cls_token_id(self) -> int:
        return self.vocab["<cls>"]


def read_scgpt_vocab(path: str | os.PathLike) -> dict[str, int]:
    """scGPT's ``vocab.json`` (token -> id), with ``<pad>``, ``<cls>``, ``<eoc>`` appended when missing, as ``embed_data`` does (``GeneVocab.append_token``)."""
    with open(path) as f:
        vocab = json.load(f)
    if not isinstance(vocab, dict):
        raise ValueError(f"{path} must hold a JSON object token -> id, got {type(vocab).__name__}")
    vocab = {str(k): int(v) for k, v in vocab.items()}
    for tok in SCGPT_SPECIAL_TOKENS:
        if tok not in vocab:
            vocab[tok] = len(vocab)
    return vocab


def convert_scgpt_state_dict(
    state_dict: Mapping[str, Tensor],
) -> tuple[dict[str, Tensor], list[str]]:
    """Keep the encoder-path tensors of a scGPT state dict, renaming flash-attention keys.

    Returns ``(encoder_state, ignored_keys)``. ``module.`` prefixes (DDP) are dropped and
    ``self_attn.Wqkv.{weight,bias}`` become ``self_attn.in_proj_{weight,bias}``.
    """
    out: dict[str, Tensor] = {}
    ignored: list[str] = []
    for key, value in state_dict.items():
        k = key[len("module.") :] if key.startswith("module.") else key
        if not k.startswith(_ENCODER_PREFIXES):
            ignored.append(key)
            continue
        out[k.replace("self_attn.Wqkv.", "self_attn.in_proj_")] = value
    return out, ignored


def _check_files(model_dir: Path) -> None:
    if not model_dir.is_dir():
        raise FileNotFoundError(
            f"scGPT model folder {str(model_dir)!r} does not exist; it must hold {', '.join(SCGPT_FILES)} "
            "(e.g. the whole-human checkpoint from the scGPT model zoo)"
        )
    missing = [name for name in SCGPT_FILES if not (model_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"scGPT model folder {str(model_dir)!r} lacks {', '.join(missing)} "
            f"(a scGPT checkpoint folder holds {', '.join(SCGPT_FILES)}; found: "
            f"{', '.join(sorted(p.name for p in model_dir.iterdir())[:10]) or 'nothing'})"
        )


def load_scgpt(
    model_dir: str | os.PathLike, *, device: str | torch.device = "cpu"
) -> ScGPTCheckpoint:
    """Load a scGPT checkpoint folder into :class:`ScGPTEncoder` (eval mode).

    Parameters
    ----------
    model_dir
        Folder with ``args.json``, ``vocab.json`` and ``best_model.pt`` (a state dict,
        plain or flash-attention keys).
    device
        Where to put the model.

    Returns
    -------
    The encoder with its vocabulary and configuration. Raises a clear error when files
    are missing or the encoder weights do not fit ``args.json``.

    Examples
    --------
    >>> import genept as gpt
    >>> ckpt = gpt.models.load_scgpt("scGPT_human")  # doctest: +SKIP
    >>> ckpt.config.d_model, len(ckpt.vocab)  # doctest: +SKIP
    (512, 60697)
    """
    model_dir = Path(model_dir).expanduser()
    _check_files(model_dir)
    with open(model_dir / "args.json") as f:
        args = json.load(f)
    vocab = read_scgpt_vocab(model_dir / "vocab.json")
    config = ScGPTConfig.from_args(args, ntoken=len(vocab))
    for tok in (config.pad_token, "<cls>"):
        if tok not in vocab:
            raise ValueError(f"token {tok!r} is not in {model_dir / 'vocab.json'}")
    model = ScGPTEncoder(config, pad_token_id=vocab[config.pad_token])

    raw = torch.load(model_dir / "best_model.pt", map_location="cpu", weights_only=True)
    if (
        isinstance(raw, Mapping)
        and "model_state_dict" in raw
        and isinstance(raw["model_state_dict"], Mapping)
    ):
        raw = raw["model_state_dict"]
    if not isinstance(raw, Mapping):
        raise ValueError(
            f"{model_dir / 'best_model.pt'} must hold a state dict, got {type(raw).__name__}"
        )
    state, ignored = convert_scgpt_state_dict(raw)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    bad_shape = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs args.json/vocab.json {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or bad_shape:
        parts = []
        if missing:
            parts.append(f"missing {missing[:8]}{' …' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:8]}{' …' if len(unexpected) > 8 else ''}")
        if bad_shape:
            parts.append(f"shape mismatch {bad_shape[:4]}")
        raise ValueError(
            f"{model_dir / 'best_model.pt'} does not hold the scGPT encoder that args.json "
            f"describes ({config.nlayers} layers, d_model {config.d_model}, {config.ntoken} tokens): "
            + "; ".join(parts)
        )
    model.load_state_dict(state, strict=True)
    model.eval()
    model.to(device)
    return ScGPTCheckpoint(
        model=model, vocab=vocab, config=config, path=model_dir, n_ignored_keys=len(ignored)
    )
