"""Shared fixtures: real data from JACVIZ_DATA and small models trained on real MNIST."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from jacviz import data
from models import build

os.environ.setdefault("JACVIZ_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


@pytest.fixture(scope="session")
def mnist_test():
    return data.load("mnist", "test")


@pytest.fixture(scope="session")
def mnist_train():
    return data.load("mnist", "train")


def _quick_train(jr: float, steps: int = 400, seed: int = 0):
    """LeNet' trained for ``steps`` SGD steps (batch 100, lr 0.05) on real MNIST, eval mode."""
    from jacviz.jacobian import jacobian_penalty

    x_all, y_all = data.load("mnist", "train")
    torch.manual_seed(seed)
    model = build("lenet")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    std = float(model.normalize.std)
    for _ in range(steps):
        idx = torch.randint(0, len(x_all), (100,), generator=g)
        x, y = x_all[idx].clone().requires_grad_(jr > 0), y_all[idx]
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        if jr > 0:
            loss = loss + jr / 2 * std**2 * jacobian_penalty(x, logits)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def lenet_plain():
    """LeNet' without regularization, ~400 steps on MNIST (about 97% test accuracy)."""
    return _quick_train(0.0)


@pytest.fixture(scope="session")
def lenet_jr():
    """LeNet' with Jacobian regularization lambda_JR = 0.1 (strong, so effects show in few steps)."""
    return _quick_train(0.1)
