"""jacviz.jr_conv: transposed-convolution input gradients give JR the same gradients, only faster."""
import pytest
import torch
import torch.nn.functional as F

import models
from jacviz import data, jr_conv
from jacviz.jacobian import jacobian_frobenius, jacobian_penalty


def _jr_loss_grads(model, x, y, switched: bool) -> list[torch.Tensor]:
    """Weight gradients of one JR training loss (eq. 5, n_proj = 1, the same projection both times)."""
    with jr_conv.transposed_input_grads(model, enabled=switched):
        xr = x.clone().requires_grad_(True)
        logits = model(xr)
        jr = jacobian_penalty(xr, logits, 1, generator=torch.Generator().manual_seed(3))
        loss = F.cross_entropy(logits, y) + 0.01 / 2 * jr
        model.zero_grad(set_to_none=True)
        loss.backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("name,dataset", [("lenet", "mnist"), ("ddnet", "cifar10"), ("resnet18", "cifar10")])
def test_jr_gradients_equal_pytorchs_on_real_images(name, dataset):
    """float64, so that only summation order can part the two: LeNet' (padding 2), DDNet (no padding)
    and ResNet-18 (stride 2, padding 1, 1x1 shortcuts, BatchNorm in train mode)."""
    x, y = data.load(dataset, "test")
    x, y = x[:6].double(), y[:6]
    torch.manual_seed(0)
    model = models.build(name).double().train()
    n = sum(jr_conv.switchable(m) for m in model.modules())
    assert n == {"lenet": 2, "ddnet": 4, "resnet18": 20}[name]
    ref = _jr_loss_grads(model, x, y, False)
    new = _jr_loss_grads(model, x, y, True)
    assert all(g.abs().max() > 0 for g in ref)
    for a, b in zip(ref, new):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12 * ref[0].abs().max().item())


def test_double_backward_passes_gradgradcheck_with_stride_and_output_padding():
    """A stride-2 convolution of a 7x7 input leaves a row and a column that output_padding restores."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 7, dtype=torch.double, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.double, requires_grad=True)
    b = torch.randn(4, dtype=torch.double, requires_grad=True)
    f = lambda x, w, b: jr_conv._Conv2dTransposedGrad.apply(x, w, b, (2, 2), (1, 1))  # noqa: E731
    assert torch.allclose(f(x, w, b), F.conv2d(x, w, b, 2, 1))
    assert torch.autograd.gradcheck(f, (x, w, b))
    assert torch.autograd.gradgradcheck(f, (x, w, b))


def test_input_gradient_alone_skips_the_weight_gradient(monkeypatch):
    """JR's autograd.grad(logits, x) asks the engine for the input gradient only: the weight and bias
    gradients are then not computed; loss.backward() computes all of them (the engine's own answer)."""
    asked = []
    real = jr_conv._used_by_this_backward
    monkeypatch.setattr(jr_conv, "_used_by_this_backward", lambda ctx, i: asked.append(real(ctx, i)) or asked[-1])
    torch.manual_seed(0)
    model = models.build("ddnet")
    x = torch.rand(4, 3, 32, 32, requires_grad=True)
    with jr_conv.transposed_input_grads(model):
        logits = model(x)
        (jv,) = torch.autograd.grad(logits, x, torch.randn_like(logits), create_graph=True)
        assert asked == [False] * 8  # 4 convolutions x (weight, bias)
        asked.clear()
        (logits.sum() + jv.pow(2).sum()).backward()
    assert asked == [True] * 8
    assert all(p.grad is not None for p in model.parameters())


def test_context_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = models.build("resnet18").eval()
    x = torch.rand(3, 3, 32, 32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = model(x)
    jn = jacobian_frobenius(model, x)  # batched VJPs (vmap over the backward) work inside too
    with jr_conv.transposed_input_grads(model) as n:
        assert n == 20
        assert torch.equal(model(x), out)
        assert torch.allclose(jacobian_frobenius(model, x), jn, rtol=1e-5)
    with jr_conv.transposed_input_grads(model, enabled=False) as n:
        assert n == 0
    assert not any("_conv_forward" in m.__dict__ for m in model.modules())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(RuntimeError):
        with jr_conv.transposed_input_grads(model):
            raise RuntimeError("an error inside the block")
    assert not any("_conv_forward" in m.__dict__ for m in model.modules())
