"""Jacobian regularization (Hoffman, Roberts & Yaida 2019, Section 2) and exact Jacobian norms.

Spaces. Models take pixels in [0, 1] and normalize inside with a scalar std, so for an input
``x`` in pixel space J_pixel = dz/dx and the paper's J (w.r.t. the *preprocessed* input, the one
Table 1 reports: 32.9 unregularized, 1.1 with JR) is J_normalized = J_pixel * std.
``jacobian_penalty`` differentiates w.r.t. whatever tensor it is given; the trainer multiplies it
by std**2 so that lambda_JR = 0.01 means what it means in the paper (normalized space).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def _unit_vectors(shape: tuple[int, ...], like: torch.Tensor, generator=None) -> torch.Tensor:
    """Rows uniform on the unit sphere S^{C-1}: Gaussian draws, normalized (Algorithm 1)."""
    v = torch.randn(shape, device=like.device, dtype=like.dtype, generator=generator)
    return v / v.norm(dim=-1, keepdim=True)


def jacobian_penalty(x: torch.Tensor, logits: torch.Tensor, n_proj: int | None = 1,
                     create_graph: bool = True, generator=None, reduction: str = "mean") -> torch.Tensor:
    """Batch mean of ||J(x)||_F^2, estimated by random projections (eqs. 7-8, Algorithm 1).

    x: (B, ...) input with ``requires_grad=True`` that ``logits`` (B, C) were computed from.
    n_proj: number of random unit vectors per sample (each flattened over the batch for one
      backward pass); ``None`` gives the exact value, the sum over the C basis vectors (eq. 6),
      computed as one batched vector-Jacobian product rather than C separate backward passes.
    reduction: 'mean' (batch mean, eq. 5) or 'none' (per-sample estimates, shape (B,)).
    Returns a scalar, differentiable w.r.t. the model parameters when ``create_graph`` is True
    (the gradient of the penalty must reach the weights, or JR trains nothing).
    Estimator: C * |v . J|^2 with v uniform on S^{C-1} is unbiased for ||J||_F^2 (eq. 7) with
    relative variance <= 2 (C-1)/(C+2) (eq. 16).
    """
    B, C = logits.shape
    if n_proj is None:
        # One VJP per basis vector e_c, all on the same graph. (A single vmapped VJP with
        # is_grads_batched is fast without create_graph, but its double-backward falls back to a
        # per-sample loop in PyTorch and was ~50x slower for training; see benchmarks/jr_overhead.py.)
        per_sample = logits.new_zeros(B)
        for c in range(C):
            (jv,) = torch.autograd.grad(logits[:, c].sum(), x, create_graph=create_graph, retain_graph=True)
            per_sample = per_sample + jv.pow(2).flatten(1).sum(1)
        return per_sample.mean() if reduction == "mean" else per_sample
    per_sample = logits.new_zeros(B)
    for _ in range(n_proj):
        v = _unit_vectors((B, C), logits, generator)
        (jv,) = torch.autograd.grad(logits, x, v, create_graph=create_graph, retain_graph=True)
        per_sample = per_sample + C * jv.pow(2).flatten(1).sum(1) / n_proj
    return per_sample.mean() if reduction == "mean" else per_sample


def jacobian_l1_penalty(x: torch.Tensor, logits: torch.Tensor, create_graph: bool = True) -> torch.Tensor:
    """Batch mean of the entrywise L1 norm sum_{c,i} |J_{c;i}(x)| (exact, C batched VJPs).

    Why: for an l_inf perturbation ||delta||_inf <= eps the first-order logit change obeys
    ||J delta||_1 <= eps * sum_{c,i} |J_{c;i}|, so this norm bounds l_inf sensitivity the way
    ||J||_F bounds l_2 sensitivity (footnote 2 of the paper; seed 002 relates l1 Jacobian
    regularization to l_inf attacks). There is no unbiased random-projection estimate of it,
    so it is always exact. Differentiable w.r.t. the parameters.
    """
    B, C = logits.shape
    eye = torch.eye(C, device=logits.device, dtype=logits.dtype)
    (jv,) = torch.autograd.grad(logits, x, eye[:, None, :].expand(C, B, C),
                                create_graph=create_graph, is_grads_batched=True)
    return jv.abs().sum() / B


@torch.no_grad()
def jacobian_matrix(model: nn.Module, x: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Exact per-sample input-output Jacobian in pixel space, shape (B, C, *input_shape).

    Uses batched VJPs over the C basis vectors; the model is evaluated as it is (call
    ``model.eval()`` first for deterministic dropout).
    """
    outs = []
    for start in range(0, len(x), chunk):
        xb = x[start:start + chunk].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xb)
            B, C = logits.shape
            eye = torch.eye(C, device=logits.device, dtype=logits.dtype)
            (jv,) = torch.autograd.grad(logits, xb, eye[:, None, :].expand(C, B, C),
                                        is_grads_batched=True)
        outs.append(jv.transpose(0, 1))
    return torch.cat(outs)


def jacobian_frobenius(model: nn.Module, x: torch.Tensor, space: str = "normalized",
                       chunk: int = 256, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Exact ||J(x)||_F per sample, shape (B,), no graph kept.

    space: 'normalized' (w.r.t. the model's preprocessed input, the paper's Table 1 convention)
    or 'pixel' (w.r.t. the [0, 1] input; normalized = pixel * std).
    chunk: images per batched VJP; only each chunk's (chunk, C, *input_shape) Jacobian is held at a
    time (all 10,000 CIFAR-10 test images at once are 1.2 GB of float32).
    progress: called as ``progress(done, total)`` after each chunk (C backward passes an image: DDNet
    took ~41 ms an image on one thread of the project's 2-core CPU VM, ~7 min for the 10,000 test images).
    """
    if space not in ("normalized", "pixel"):
        raise ValueError("space must be 'normalized' or 'pixel'")
    parts = []
    for start in range(0, len(x), chunk):
        parts.append(jacobian_matrix(model, x[start:start + chunk], chunk).flatten(1).norm(dim=1))
        if progress:
            progress(min(start + chunk, len(x)), len(x))
    norms = torch.cat(parts) if parts else x.new_zeros(0)
    if space == "normalized":
        norms = norms * float(model.normalize.std)
    return norms
