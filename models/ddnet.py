"""DDNet for CIFAR-10 (the defensive-distillation network, paper Appendix D)."""
from __future__ import annotations

import torch
from torch import nn

from .common import Normalize, xavier_init


class DDNet(nn.Module):
    """Conv [3,3->64], [3,64->64;2], [3,64->128], [3,128->128;2] (no padding), ReLU,
    fc 3200->256->256->10 with dropout after the two hidden fc layers. Xavier init.

    Input: (B, 3, 32, 32) pixels in [0, 1], normalized inside as (x - 0.5) * 2 (Appendix E);
    output: (B, 10) logits.
    """

    input_shape = (3, 32, 32)
    num_classes = 10

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.normalize = Normalize(0.5, 0.5)
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 3), nn.ReLU(),
            nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3), nn.ReLU(),
            nn.Conv2d(128, 128, 3), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(3200, 256), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(256, 256), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(256, 10),
        )
        xavier_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(x)))
