"""BatchNorm with a hand-written double backward, for a cheaper JR step of ResNet-18.

Why. JR (Algorithm 1) differentiates the vector-Jacobian product v . dz/dx w.r.t. the weights, a
double backward. Through a BatchNorm layer in train mode PyTorch takes it with
``NativeBatchNormBackwardBackward0``, which composes the second derivative from many small
elementwise ops and reductions: in torch.profiler (ResNet-18 JR step, batch 100, 1 thread, this
project's 2-core Intel Xeon VM beside a 2-thread training, 2026-12-07) its 20 calls took 1.73 s of a
7.75 s step, and BatchNorm made most of the 5.4x more aten ops a JR step dispatches than a plain one
(README, Benchmarks).

What changes. Inside :func:`analytic_double_backward` a train-mode ``nn.BatchNorm2d`` computes its
output and its first backward with PyTorch's own kernels (``native_batch_norm`` and
``native_batch_norm_backward``), but the first backward is a custom Function whose own backward
(the double backward) is the closed form below: five per-channel reductions and a few elementwise
passes over the batch. Per channel, with x̂ = (x - mean) s, s = 1 / sqrt(var + eps) (biased
variance over batch and pixels, N values), <.> the mean over those N values, the first backward is

    gx = w s (g - <g> - x̂ <g x̂>),    gw = sum g x̂,    gb = sum g,

and for the cotangents u (of gx), uw (of gw) and ub (of gb) its vector-Jacobian product is

    d/dg = w s (u - <u> - x̂ <u x̂>) + uw x̂ + ub
    d/dx = w s^2 [(3 A B - (<u g> - <u><g>)) x̂ - B (u - <u>) - A (g - <g>)]
           + uw s (g - <g> - x̂ B)                       with A = <u x̂>, B = <g x̂>
    d/dw = N s (<u g> - <u><g> - A B)

(derived from ds/dx_i = -s^2 x̂_i / N and dx̂_j/dx_i = s (δ_ij - 1/N - x̂_i x̂_j / N)). The running
statistics are updated exactly as ``nn.BatchNorm2d`` updates them. Gradients agree with PyTorch's
to float rounding (tests/test_jr_batchnorm.py: gradcheck of the closed form in float64, and a whole
ResNet-18 JR step against PyTorch's on real CIFAR-10 images); the speed is measured in
benchmarks/jr_batchnorm.py: a ResNet-18 JR step (batch 100, 1 thread, same VM and load) ran 1.21x
faster with jacviz.jr_conv's convolutions (8.39 s -> 6.91 s; JR / plain 2.54 -> 2.09) and 1.14x with
PyTorch's, and dispatched 4,122 aten ops instead of 6,322 (a plain step: 1,380). Third derivatives are
not provided (``once_differentiable``): nothing in jacviz takes them.

Only ``nn.BatchNorm2d`` in train mode is switched; in eval mode (running statistics) it is
PyTorch's own. Not for ``torch.func`` transforms.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .jr_conv import method_shadowed

_DIMS = (0, 2, 3)


def _per_channel(t: torch.Tensor) -> torch.Tensor:
    """(C,) -> (1, C, 1, 1), to broadcast over a (B, C, H, W) batch."""
    return t.view(1, -1, 1, 1)


class _BatchNormBackward(torch.autograd.Function):
    """(gx, gw, gb) of a train-mode BatchNorm from the upstream gradient g, with the closed-form
    vector-Jacobian product of the module docstring as its backward.

    The per-channel sums it needs come from PyTorch's fused kernel where it can: gw = N <g x̂> and
    gb = N <g> of this forward are B and <g>, and ``native_batch_norm_backward`` applied to u gives
    w s (u - <u> - x̂ A) together with N A and N <u>; what is left is <u g> and three
    multiply-adds for d/dx (x̂ folded into x and a per-channel constant)."""

    @staticmethod
    def forward(ctx, g, x, weight, mean, invstd, eps):
        gx, gw, gb = torch.ops.aten.native_batch_norm_backward(
            g, x, weight, None, None, mean, invstd, True, eps, [True, True, True])
        ctx.save_for_backward(g, x, weight, mean, invstd, gw, gb)
        ctx.eps = eps
        ctx.set_materialize_grads(False)  # JR's graph uses gx alone: no passes for zero gw, gb cotangents
        return gx, gw, gb

    @staticmethod
    @once_differentiable
    def backward(ctx, u, uw, ub):
        g, x, weight, mean, invstd, gw, gb = ctx.saved_tensors
        n = x.numel() // x.shape[1]
        b, g_mean = gw / n, gb / n  # B = <g x̂>, <g>
        # d/dx = alpha x̂ + beta u + gamma g + delta with per-channel coefficients (None: 0)
        alpha = beta = gamma = delta = dg = dw = None
        if u is not None:
            dg, sum_ux, sum_u = torch.ops.aten.native_batch_norm_backward(
                u, x, weight, None, None, mean, invstd, True, ctx.eps, [ctx.needs_input_grad[0], True, True])
            a, u_mean = sum_ux / n, sum_u / n  # A = <u x̂>, <u>
            ug = (u * g).sum(_DIMS) / n - u_mean * g_mean  # <u g> - <u><g>
            ws2 = weight * invstd * invstd
            alpha, beta, gamma = ws2 * (3 * a * b - ug), -ws2 * b, -ws2 * a
            delta = ws2 * (b * u_mean + a * g_mean)
            if ctx.needs_input_grad[2]:
                dw = n * invstd * (ug - a * b)
        if uw is not None:  # gw = sum g x̂: d/dg = uw x̂, d/dx = uw s (g - <g> - x̂ B)
            uws = uw * invstd
            alpha = -uws * b if alpha is None else alpha - uws * b
            gamma = uws if gamma is None else gamma + uws
            delta = -uws * g_mean if delta is None else delta - uws * g_mean
            if ctx.needs_input_grad[0]:  # uw x̂ = (uw s) x - uw s mean
                term = torch.addcmul(_per_channel(-uws * mean), x, _per_channel(uws))
                dg = term if dg is None else dg + term
        if ub is not None and ctx.needs_input_grad[0]:
            dg = _per_channel(ub).expand_as(g) if dg is None else dg + _per_channel(ub)
        dx = None
        if ctx.needs_input_grad[1] and alpha is not None:
            # alpha x̂ + delta = (alpha s) x + (delta - alpha s mean)
            dx = torch.addcmul(_per_channel(delta - alpha * invstd * mean), x, _per_channel(alpha * invstd))
            if beta is not None:
                dx.addcmul_(u, _per_channel(beta))
            dx.addcmul_(g, _per_channel(gamma))
        if dw is None and ctx.needs_input_grad[2]:
            dw = torch.zeros_like(weight)
        return (dg if ctx.needs_input_grad[0] else None), dx, dw, None, None, None


class _BatchNormTrain(torch.autograd.Function):
    """y = BatchNorm2d(x) in train mode (batch statistics; running statistics updated in place),
    whose backward is :class:`_BatchNormBackward` when it is itself differentiated (create_graph)
    and PyTorch's kernel otherwise."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps):
        y, mean, invstd = torch.ops.aten.native_batch_norm(x, weight, bias, running_mean, running_var,
                                                           True, momentum, eps)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight, mean, invstd = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: a differentiable first backward
            gx, gw, gb = _BatchNormBackward.apply(g, x, weight, mean, invstd, ctx.eps)
        else:
            gx, gw, gb = torch.ops.aten.native_batch_norm_backward(
                g, x, weight, None, None, mean, invstd, True, ctx.eps, list(ctx.needs_input_grad[:3]))
        return gx, gw, gb, None, None, None, None


def switchable(bn: nn.Module) -> bool:
    """True for the layers :func:`analytic_double_backward` switches (affine ``nn.BatchNorm2d``)."""
    return type(bn) is nn.BatchNorm2d and bn.affine


def _forward(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """nn.BatchNorm2d.forward with the train-mode normalization taken by :class:`_BatchNormTrain`."""
    if not bn.training:
        return nn.BatchNorm2d.forward(bn, x)
    bn._check_input_dim(x)
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    tracked = bn.track_running_stats
    return _BatchNormTrain.apply(x, bn.weight, bn.bias, bn.running_mean if tracked else None,
                                 bn.running_var if tracked else None, momentum, bn.eps)


@contextmanager
def analytic_double_backward(model: nn.Module, enabled: bool = True) -> Iterator[int]:
    """Within the block, ``model``'s affine ``nn.BatchNorm2d`` layers take their double backward in
    closed form (see the module docstring); yields how many were switched, 0 when not ``enabled``.

    Weights, buffers' updates, state_dict and outputs are unchanged; on exit the modules are as before."""
    switched = [m for m in model.modules() if switchable(m)] if enabled else []
    with method_shadowed(switched, "forward", _forward) as n:  # nn.BatchNorm2d.forward
        yield n
