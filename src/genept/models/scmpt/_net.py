"""The scMPT network: one dense ReLU stack per representation, concatenated, linear head.

With one input this is an MLP probe; with two it is scMPT's figure 1 (section 3.2).
The softmax of the output layer lives in the loss (training) and in :func:`predict`
(inference).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["FusionNet", "make_net", "predict", "val_loss"]


class FusionNet(nn.Module):
    """Branches ``in_dims[i] -> hidden[0] -> ... -> hidden[-1]`` (ReLU), concatenated, then a linear layer to ``n_classes`` logits."""

    def __init__(self, in_dims: Sequence[int], hidden: Sequence[int], n_classes: int):
        super().__init__()
        self.branches = nn.ModuleList()
        width = 0
        for d in in_dims:
            layers: list[nn.Module] = []
            prev = int(d)
            for h in hidden:
                layers += [nn.Linear(prev, int(h)), nn.ReLU()]
                prev = int(h)
            self.branches.append(nn.Sequential(*layers))
            width += prev
        self.head = nn.Linear(width, int(n_classes))

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.head(torch.cat([b(x) for b, x in zip(self.branches, xs, strict=True)], 1))


def make_net(
    in_dims: Sequence[int], hidden: Sequence[int], n_classes: int, seed: int | None = None
) -> FusionNet:
    """A :class:`FusionNet` initialised on CPU from ``seed`` without touching torch's global RNG."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return FusionNet(in_dims, hidden, n_classes)


def predict(model: nn.Module, xs, device: str, batch_size: int = 4096) -> np.ndarray:
    """Softmax probabilities of ``model`` on tensors ``xs`` (batched), float64."""
    model.eval()
    out = []
    n = xs[0].shape[0]
    with torch.no_grad():
        for s in range(0, n, batch_size):
            batch = [x[s : s + batch_size].to(device) for x in xs]
            out.append(torch.softmax(model(batch).float(), dim=1).cpu())
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros((0, 0))


def val_loss(model: nn.Module, xs, y, loss_fn, device: str, batch_size: int = 4096) -> float:
    """Mean loss of ``model`` on ``(xs, y)`` (batched, no gradients)."""
    model.eval()
    total, n = 0.0, y.shape[0]
    with torch.no_grad():
        for s in range(0, n, batch_size):
            batch = [x[s : s + batch_size].to(device) for x in xs]
            total += float(loss_fn(model(batch), y[s : s + batch_size].to(device))) * min(
                batch_size, n - s
            )
    return total / max(n, 1)
