"""Choosing test samples to look at: predictions over a test set and filters on them.

Pure functions on tensors / numpy arrays; the app's sample gallery calls these.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class and its softmax probability for every sample.

    model: eval mode, pixels in / logits out; x: (N, ...) pixels in [0, 1] (any device; moved in
    batches to the model's device). Returns (pred int64 (N,), confidence float32 (N,)).
    """
    dev = next(model.parameters()).device
    preds, confs = [], []
    for s in range(0, len(x), batch):
        p = torch.softmax(model(x[s:s + batch].to(dev)).float(), dim=1)
        c, k = p.max(1)
        preds.append(k.cpu())
        confs.append(c.cpu())
    if not preds:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    return torch.cat(preds).numpy().astype(np.int64), torch.cat(confs).numpy().astype(np.float32)


def select(y: np.ndarray | torch.Tensor, true_class: int | None = None,
           predictions: Mapping[str, np.ndarray] | None = None,
           misclassified_by: Sequence[str] = (), correct_by: Sequence[str] = ()) -> np.ndarray:
    """Indices of samples matching every filter, ascending.

    y: (N,) true labels. true_class: keep samples of this class (None: all).
    predictions: {model name: (N,) predicted classes}. misclassified_by: keep samples every named
    model gets wrong; correct_by: keep samples every named model gets right.
    """
    y = np.asarray(y)
    keep = np.ones(len(y), dtype=bool)
    if true_class is not None:
        keep &= y == int(true_class)
    predictions = predictions or {}
    for name in misclassified_by:
        keep &= np.asarray(predictions[name]) != y
    for name in correct_by:
        keep &= np.asarray(predictions[name]) == y
    return np.nonzero(keep)[0]


def to_image(x: torch.Tensor) -> np.ndarray:
    """One sample (C, H, W) in [0, 1] as an image array: (H, W) grey or (H, W, 3), uint8."""
    a = (x.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))
