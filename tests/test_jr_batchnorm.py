"""jacviz.jr_batchnorm: BatchNorm's closed-form double backward gives JR the same gradients, only faster."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import models
from jacviz import data, jr_batchnorm, jr_conv
from jacviz.jacobian import jacobian_frobenius, jacobian_penalty


def _jr_step(model, x, y, analytic: bool, transposed: bool = False):
    """Weight gradients and buffers after one JR training loss (eq. 5, n_proj = 1, the same projection)."""
    with (jr_conv.transposed_input_grads(model, enabled=transposed),
          jr_batchnorm.analytic_double_backward(model, enabled=analytic)):
        xr = x.clone().requires_grad_(True)
        logits = model(xr)
        jr = jacobian_penalty(xr, logits, 1, generator=torch.Generator().manual_seed(3))
        loss = F.cross_entropy(logits, y) + 0.01 / 2 * jr
        model.zero_grad(set_to_none=True)
        loss.backward()
    return [p.grad.clone() for p in model.parameters()], {k: b.clone() for k, b in model.named_buffers()}


@pytest.mark.parametrize("transposed", [False, True])
def test_resnet18_jr_gradients_and_running_stats_equal_pytorchs_on_real_images(transposed):
    """float64 on CIFAR-10 test images, so that only summation order can part the two; alone and with
    jacviz.jr_conv's transposed convolutions, as a CPU trains ResNet-18."""
    x, y = data.load("cifar10", "test")
    x, y = x[:6].double(), y[:6]
    grads, bufs = [], []
    for analytic in (False, True):
        torch.manual_seed(0)
        model = models.build("resnet18").double().train()
        g, b = _jr_step(model, x, y, analytic, transposed)
        grads.append(g)
        bufs.append(b)
    ref, new = grads
    assert all(g.abs().max() > 0 for g in ref)
    for a, b in zip(ref, new):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12 * ref[0].abs().max().item())
    assert bufs[0].keys() == bufs[1].keys() and len(bufs[0]) == 62  # 20 x (mean, var, batches tracked), normalize
    for k, v in bufs[0].items():
        assert torch.allclose(v, bufs[1][k], rtol=1e-12, atol=0), k
    assert int(bufs[1]["bn1.num_batches_tracked"]) == 1


def test_closed_form_double_backward_passes_gradcheck():
    """gradcheck of the first backward (gx, gw, gb) as a function of (g, x, w) checks the closed form
    against finite differences, with the batch statistics recomputed from the perturbed x."""
    torch.manual_seed(0)
    g = torch.randn(4, 3, 3, 5, dtype=torch.double, requires_grad=True)
    x = (torch.randn(4, 3, 3, 5, dtype=torch.double) * 2 + 1).requires_grad_(True)
    w = torch.randn(3, dtype=torch.double, requires_grad=True)
    eps = 1e-5

    def first_backward(g, x, w):
        mean = x.detach().mean((0, 2, 3))
        invstd = (x.detach().var((0, 2, 3), unbiased=False) + eps).rsqrt()
        return jr_batchnorm._BatchNormBackward.apply(g, x, w, mean, invstd, eps)

    # the forward is PyTorch's own first backward
    xr, wr, b = x.detach().requires_grad_(True), w.detach().requires_grad_(True), torch.zeros(3, dtype=torch.double)
    b.requires_grad_(True)
    out = F.batch_norm(xr, None, None, wr, b, training=True, eps=eps)
    ref = torch.autograd.grad(out, (xr, wr, b), g.detach())
    for a, r in zip(first_backward(g, x, w), ref):
        assert torch.allclose(a, r)
    assert torch.autograd.gradcheck(first_backward, (g, x, w))


@pytest.mark.parametrize("momentum,track", [(0.1, True), (None, True), (0.1, False)])
def test_forward_and_buffers_match_batchnorm2d(momentum, track):
    """Momentum, a cumulative average (momentum None) and no tracking (jacviz.train.batch_stats_frozen's
    FGSM forward) update the buffers as nn.BatchNorm2d does, over three steps."""
    torch.manual_seed(0)
    ref = nn.BatchNorm2d(4, momentum=momentum, track_running_stats=track).double()
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.uniform_(-1, 1)
    new = nn.BatchNorm2d(4, momentum=momentum, track_running_stats=track).double()
    new.load_state_dict(ref.state_dict())
    with jr_batchnorm.analytic_double_backward(new) as n:
        assert n == 1
        for _ in range(3):
            x = torch.randn(5, 4, 6, 6, dtype=torch.double) * 3 + 2
            assert torch.allclose(new(x), ref(x))
    for k, v in ref.state_dict().items():
        assert torch.allclose(v, new.state_dict()[k]), k


def test_jr_step_takes_the_closed_form_and_the_context_leaves_the_model_as_it_was():
    """Inside the block JR's double backward goes through _BatchNormBackward (20 layers) and not
    PyTorch's NativeBatchNormBackwardBackward0; eval mode is PyTorch's BatchNorm; on exit (an error
    included) every layer is as before."""
    torch.manual_seed(0)
    model = models.build("resnet18")
    x = torch.rand(3, 3, 32, 32)
    with jr_batchnorm.analytic_double_backward(model) as n:
        assert n == 20
        xr = x.clone().requires_grad_(True)
        logits = model.train()(xr)
        (jv,) = torch.autograd.grad(logits, xr, torch.randn_like(logits), create_graph=True)
        names, todo = set(), [jv.grad_fn]
        while todo:
            node = todo.pop()
            if node is not None and node.name() not in names:
                names.add(node.name())
                todo += [nxt for nxt, _ in node.next_functions]
        assert "_BatchNormBackwardBackward" in names
        assert not any("NativeBatchNorm" in nm for nm in names)
        model.eval()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        out, jn = model(x), jacobian_frobenius(model, x)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # eval: no buffer update
    assert torch.equal(model(x), out)
    assert torch.allclose(jacobian_frobenius(model, x), jn, rtol=1e-5)
    with jr_batchnorm.analytic_double_backward(model, enabled=False) as n:
        assert n == 0
    assert not any("forward" in m.__dict__ for m in model.modules())
    with pytest.raises(RuntimeError):
        with jr_batchnorm.analytic_double_backward(model):
            raise RuntimeError("an error inside the block")
    assert not any("forward" in m.__dict__ for m in model.modules())
