"""ResNet-18 for 32x32 inputs (the kuangliu/pytorch-cifar variant cited in Appendix D)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import Normalize


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 with a 3x3 stem and no initial max-pool, for (B, 3, 32, 32) pixels in [0, 1].

    Normalized inside as (x - 0.5) * 2 like DDNet (Appendix E); PyTorch default init; no dropout
    in the architecture (``dropout`` is accepted for a uniform registry and must be 0).
    """

    input_shape = (3, 32, 32)
    num_classes = 10

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        if dropout:
            raise ValueError("ResNet-18 has no dropout layers in the paper (Appendix D); use dropout=0")
        self.normalize = Normalize(0.5, 0.5)
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, in_planes = [], 64
        for planes, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            layers += [BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)]
            in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(512, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(self.normalize(x))))
        out = self.layers(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)
