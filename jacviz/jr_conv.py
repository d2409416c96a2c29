"""Convolutions whose input gradient is a transposed convolution, for a cheaper JR double backward.

Why. JR (Algorithm 1) differentiates the vector-Jacobian product v . dz/dx w.r.t. the weights, a
double backward. Through ``nn.Conv2d`` PyTorch takes it with ``ConvolutionBackwardBackward0``,
which gets the weight gradient of the input-gradient as a convolution with batch and channels
swapped: on a CPU, oneDNN runs those slowly and channels_last memory must copy every operand into
the swapped layout. In torch.profiler (DDNet JR step, batch 300, channels_last, 1 thread, this
project's 2-core Intel Xeon VM with two trainings beside it, 2026-12-07) those convolutions took
0.58-0.74 s a step and the copies into their layout 0.30-0.44 s, of a step of about 4.5 s.

What changes. Inside :func:`transposed_input_grads` a convolution's backward returns its input
gradient as ``F.conv_transpose2d(grad_out, weight)``: the same numbers (the transposed convolution
*is* that gradient), but an ordinary differentiable op, whose own backward reaches the weight
through the regular convolution-backward kernel. The weight and bias gradients of the first
backward are computed only when the running backward will use them: JR's
``autograd.grad(logits, x)`` needs the input gradient alone, the final ``loss.backward()`` all three.
Gradients agree with ``nn.Conv2d``'s to float rounding (tests/test_jr_conv.py, float64: 1e-12);
the speed is measured in benchmarks/jr_conv.py.

Only plain convolutions are switched (groups 1, dilation 1, zero padding given as numbers); others
keep PyTorch's path. Not for ``torch.func`` transforms (vmap of a model inside the context).
"""
from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn


def _used_by_this_backward(ctx, i: int) -> bool:
    """Will the running backward pass consume the gradient of the Function's input ``i``?

    ``torch._C._will_engine_execute_node`` (private; torch.autograd.graph.register_multi_grad_hook
    uses it) answers from the engine's own plan. Where it is missing or refuses, the gradient is
    computed: slower, never wrong."""
    node = ctx.next_functions[i][0]
    if node is None:
        return False
    try:
        return bool(torch._C._will_engine_execute_node(node))
    except (AttributeError, RuntimeError):
        return True


class _Conv2dTransposedGrad(torch.autograd.Function):
    """y = conv2d(x, w, b) with dL/dx = conv_transpose2d(dL/dy, w) as a differentiable op."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        s, p = ctx.stride, ctx.padding
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            # output_padding (0 <= . < stride) restores the rows/columns a strided conv did not reach
            out_pad = tuple(x.shape[2 + i] - ((g.shape[2 + i] - 1) * s[i] - 2 * p[i] + weight.shape[2 + i])
                            for i in range(2))
            gx = F.conv_transpose2d(g, weight, None, s, p, out_pad)
        if ctx.needs_input_grad[1] and _used_by_this_backward(ctx, 1):
            gw = torch.ops.aten.convolution_backward(g, x, weight, None, s, p, (1, 1), False, (0, 0), 1,
                                                     (False, True, False))[1]
        if ctx.needs_input_grad[2] and _used_by_this_backward(ctx, 2):
            gb = g.sum((0, 2, 3))
        return gx, gw, gb, None, None


def switchable(conv: nn.Module) -> bool:
    """True for the convolutions :func:`transposed_input_grads` switches (plain 2-D ones)."""
    return (type(conv) is nn.Conv2d and conv.groups == 1 and tuple(conv.dilation) == (1, 1)
            and conv.padding_mode == "zeros" and not isinstance(conv.padding, str))


def _forward(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return _Conv2dTransposedGrad.apply(x, weight, bias, tuple(conv.stride), tuple(conv.padding))


@contextmanager
def method_shadowed(modules: list[nn.Module], name: str, method) -> Iterator[int]:
    """Within the block each module's ``name`` is ``partial(method, module)``, an instance attribute
    that shadows the class's method; on exit (an error included) the class's again. Yields len(modules)."""
    for m in modules:
        setattr(m, name, partial(method, m))
    try:
        yield len(modules)
    finally:
        for m in modules:
            delattr(m, name)


@contextmanager
def transposed_input_grads(model: nn.Module, enabled: bool = True) -> Iterator[int]:
    """Within the block, ``model``'s plain convolutions take their input gradient as a transposed
    convolution (see the module docstring); yields how many were switched, 0 when not ``enabled``.

    Weights, state_dict and outputs are unchanged; on exit the modules are as before."""
    switched = [m for m in model.modules() if switchable(m)] if enabled else []
    with method_shadowed(switched, "_conv_forward", _forward) as n:  # nn.Conv2d._conv_forward
        yield n
