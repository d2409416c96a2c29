"""LeNet' for MNIST (paper Appendix D)."""
from __future__ import annotations

import torch
from torch import nn

from .common import Normalize, xavier_init

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


class LeNet(nn.Module):
    """LeNet' : [5,1->6,1,2;2] conv, [5,6->16,1,0;2] conv, fc 400->120->84->10, tanh.

    Input: (B, 1, 28, 28) pixels in [0, 1]; output: (B, 10) logits.
    Appendix D writes 2100 inputs for the first fully connected layer, but a 28x28 input through
    these two conv/pool stages gives 16*5*5 = 400 features, so 400 is used here (2100 is not a multiple
    of the 16 stated channels; see the README's MNIST few-shot paragraph).
    Dropout (rate ``dropout``) follows the two hidden fully connected layers. Xavier init.
    """

    input_shape = (1, 28, 28)
    num_classes = 10

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.normalize = Normalize(MNIST_MEAN, MNIST_STD)
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.Tanh(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(400, 120), nn.Tanh(), nn.Dropout(dropout),
            nn.Linear(120, 84), nn.Tanh(), nn.Dropout(dropout),
            nn.Linear(84, 10),
        )
        xavier_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(x)))
