"""Architectures of the paper, by name. Every model takes [0,1] pixels and returns logits."""
from __future__ import annotations

from torch import nn

from .common import INITS, INPUT_NORMS, apply_init, apply_input_norm
from .ddnet import DDNet
from .lenet import LeNet
from .resnet import ResNet18

MODELS: dict[str, type[nn.Module]] = {"lenet": LeNet, "ddnet": DDNet, "resnet18": ResNet18}
DATASET_OF = {"lenet": "mnist", "ddnet": "cifar10", "resnet18": "cifar10"}


def build(name: str, dropout: float = 0.0) -> nn.Module:
    """Build an architecture by registry name ('lenet', 'ddnet', 'resnet18')."""
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None
    return cls(dropout=dropout)


def input_std(model: nn.Module) -> float:
    """The scalar std of the model's internal normalization: d(normalized)/d(pixel) = 1/std."""
    return float(model.normalize.std)


__all__ = ["INITS", "INPUT_NORMS", "apply_init", "apply_input_norm", "MODELS", "DATASET_OF", "build", "input_std", "LeNet", "DDNet", "ResNet18"]
