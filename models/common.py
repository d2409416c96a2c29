"""Pieces shared by every architecture: normalization inside the model and Xavier init."""
from __future__ import annotations

import torch
from torch import nn


class Normalize(nn.Module):
    """First layer of every jacviz model: (x - mean) / std with *scalar* buffers.

    Models take pixels in [0, 1]; attacks, noise, planes and the Jacobian all live in that
    pixel space. Because mean and std are scalars, the input-output Jacobian w.r.t. the
    normalized input (the paper's convention, Table 1) is the pixel-space Jacobian times ``std``.
    """

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def xavier_init(module: nn.Module) -> None:
    """Xavier (Glorot) uniform weights and zero biases for conv and linear layers (Section 3)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
