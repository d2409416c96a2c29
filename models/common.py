"""Pieces shared by every architecture: normalization inside the model and Xavier init."""
from __future__ import annotations

import math

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


# Initializations other than the paper's, for ablations (``TrainConfig.init``). Section 3 says only "the Xavier
# method (Glorot and Bengio, 2010)" for LeNet' and DDNet; these are the readings of it a reimplementation could make.
INITS = {
    "paper": "Xavier uniform weights, zero biases (what jacviz uses: models.common.xavier_init)",
    "xavier_normal": "Xavier normal weights (same variance as uniform, a fresh draw), zero biases",
    # the authors' own example (github.com/facebookresearch/jacobian_regularizer, examples/mnist.py, an MLP) calls
    # nn.init.xavier_uniform_ on the weights only, so its biases keep PyTorch's default
    "default_bias": "the 'paper' init's Xavier uniform weights, biases left at PyTorch's default U(±1/√fan_in), "
                    "as in the authors' example script (facebookresearch/jacobian_regularizer, examples/mnist.py)",
    "caffe_xavier": "Caffe's 'xavier' filler: the 'paper' init's uniform draw rescaled to U(±√(3/fan_in)), zero biases",
}


def apply_init(module: nn.Module, scheme: str) -> None:
    """Re-initialize a model built with :func:`xavier_init` by another reading of 'Xavier' (see ``INITS``).

    Called right after the model is built, under the run's seed. 'default_bias' and 'caffe_xavier' keep the
    paper init's weight draw (the first draws biases afterwards, the second rescales each layer's weights by
    √(3/fan_in) / √(6/(fan_in+fan_out))), so a run pairs with the paper-init run of its seed weight for weight."""
    if scheme not in INITS:
        raise ValueError(f"unknown init {scheme!r}; choose one of {sorted(INITS)}")
    if scheme == "paper":
        return
    for m in module.modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        w = m.weight  # (out, in) or (out, in, kh, kw): Glorot's fans count the receptive field
        fan_in, fan_out = w[0].numel(), w.shape[0] * w[0, 0].numel()
        with torch.no_grad():
            if scheme == "xavier_normal":
                nn.init.xavier_normal_(m.weight)
            elif scheme == "caffe_xavier":
                m.weight.mul_(math.sqrt(3 / fan_in) / math.sqrt(6 / (fan_in + fan_out)))
            elif scheme == "default_bias" and m.bias is not None:
                bound = 1 / math.sqrt(fan_in)
                nn.init.uniform_(m.bias, -bound, bound)


# Readings of the MNIST preprocessing, for ablations (``TrainConfig.input_norm``). Section 3: "We preprocess the
# data by subtracting the mean (0.1307) and dividing by the variance (0.3081) of the training data"; 0.3081 is
# MNIST's standard deviation (its variance is 0.0949), so the sentence can be read two ways.
INPUT_NORMS = {
    "paper": "(x − 0.1307) / 0.3081, the training pixels' standard deviation (what jacviz uses)",
    "variance": "(x − 0.1307) / 0.3081², the sentence's word 'variance' taken literally: the normalized input is "
                "3.25× larger",
}


def apply_input_norm(module: nn.Module, scheme: str) -> None:
    """Set a freshly built LeNet's internal normalization to a reading of the paper's preprocessing
    (``INPUT_NORMS``). 'variance' divides by std² instead of std; it adds no parameters and leaves the weights as
    drawn, so a run pairs with the 'paper' run of its seed weight for weight. The std buffer is saved in the
    state dict, so a checkpoint reloads with the normalization it was trained with."""
    if scheme not in INPUT_NORMS:
        raise ValueError(f"unknown input_norm {scheme!r}; choose one of {sorted(INPUT_NORMS)}")
    if scheme == "paper":
        return
    from .lenet import MNIST_STD, LeNet
    if not isinstance(module, LeNet):
        raise ValueError("input_norm readings are for LeNet' on MNIST; CIFAR-10's (x − 0.5)·2 is unambiguous")
    with torch.no_grad():
        module.normalize.std.fill_(MNIST_STD ** 2)


def xavier_init(module: nn.Module) -> None:
    """Xavier (Glorot) uniform weights and zero biases for conv and linear layers (Section 3)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
