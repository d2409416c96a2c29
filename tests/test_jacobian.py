"""Properties of the Jacobian regularizer (Section 2, Appendix B)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import models
from jacviz.jacobian import (jacobian_frobenius, jacobian_l1_penalty, jacobian_matrix,
                             jacobian_penalty)


def _jacrev(model, x):
    """Reference Jacobian from torch.func: (B, C, *input_shape), pixel space."""
    return torch.func.vmap(torch.func.jacrev(lambda xi: model(xi[None])[0]))(x)


@pytest.fixture(scope="module")
def lenet_and_x(mnist_test):
    torch.manual_seed(0)
    return models.build("lenet").eval(), mnist_test[0][:16].clone()


def test_exact_penalty_equals_jacrev(lenet_and_x):
    model, x = lenet_and_x
    xr = x.clone().requires_grad_(True)
    exact = jacobian_penalty(xr, model(xr), n_proj=None)
    ref = _jacrev(model, x).pow(2).sum() / len(x)
    assert torch.allclose(exact, ref, rtol=1e-4)
    assert torch.allclose(jacobian_matrix(model, x), _jacrev(model, x), atol=1e-5)


def test_frobenius_spaces(lenet_and_x):
    model, x = lenet_and_x
    pix = jacobian_frobenius(model, x, "pixel")
    assert torch.allclose(pix, _jacrev(model, x).flatten(1).norm(dim=1), rtol=1e-4)
    assert torch.allclose(jacobian_frobenius(model, x, "normalized"), pix * 0.3081, rtol=1e-5)


def test_frobenius_in_chunks_equals_one_batch_and_reports_progress(lenet_and_x):
    """Chunked norms (only a chunk's Jacobian held at a time) equal the one-batch ones, and progress
    hears (images done, total) after each chunk."""
    model, x = lenet_and_x
    calls = []
    chunked = jacobian_frobenius(model, x, "pixel", chunk=5, progress=lambda d, n: calls.append((d, n)))
    assert torch.allclose(chunked, jacobian_frobenius(model, x, "pixel"), rtol=1e-5)
    assert calls == [(5, 16), (10, 16), (15, 16), (16, 16)]


def test_linear_model_norm_is_weight_norm():
    torch.manual_seed(1)
    lin = nn.Linear(20, 7)
    x = torch.randn(5, 20, requires_grad=True)
    pen = jacobian_penalty(x, lin(x), n_proj=None)
    assert torch.allclose(pen, lin.weight.pow(2).sum(), rtol=1e-5)


def test_projection_estimator_unbiased_and_variance_bound(lenet_and_x):
    """Mean of single-projection estimates -> exact (eq. 7); relative variance <= 2(C-1)/(C+2) (eq. 16).

    One test sample replicated N times in a batch: each row draws its own projection vector, so
    the per-sample estimates (reduction='none') are N independent draws of the estimator.
    """
    model, x = lenet_and_x
    C = 10
    for i in range(3):
        xr = x[i:i + 1].expand(4000, -1, -1, -1).clone().requires_grad_(True)
        logits = model(xr)
        x1 = x[i:i + 1].clone().requires_grad_(True)
        exact = jacobian_penalty(x1, model(x1), None).item()
        g = torch.Generator().manual_seed(i)
        draws = jacobian_penalty(xr, logits, 1, create_graph=False, generator=g, reduction="none")
        se = draws.std().item() / len(draws) ** 0.5
        assert abs(draws.mean().item() - exact) < 4 * se
        # eq. 15: var = 2C/(C+2) Tr(JJ^T JJ^T) - 2/(C+2) ||J||_F^4, and eq. 16 bounds it
        J = _jacrev(model, x[i:i + 1])[0].flatten(1).double()
        JJt = J @ J.T
        var15 = (2 * C / (C + 2) * torch.trace(JJt @ JJt) - 2 / (C + 2) * torch.trace(JJt) ** 2).item()
        assert draws.var().item() == pytest.approx(var15, rel=0.2)
        assert var15 / exact ** 2 <= 2 * (C - 1) / (C + 2)
        # averaging n_proj = 3 projections divides the variance by 3
        draws3 = jacobian_penalty(xr, logits, 3, create_graph=False, generator=g, reduction="none")
        assert draws3.var().item() == pytest.approx(draws.var().item() / 3, rel=0.25)


def test_penalty_gradient_reaches_weights(lenet_and_x):
    model, x = lenet_and_x
    xr = x.clone().requires_grad_(True)
    pen = jacobian_penalty(xr, model(xr), n_proj=1)
    grads = torch.autograd.grad(pen, [model.features[0].weight, model.classifier[-1].weight])
    assert all(g.abs().sum() > 0 for g in grads)


def _train_small(penalty_fn, steps=200):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 5))
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    x = torch.randn(64, 10)
    y = torch.randint(0, 5, (64,))

    def fro():
        xr = x.clone().requires_grad_(True)
        return jacobian_penalty(xr, net(xr), None).item()

    before = fro()
    for _ in range(steps):
        xr = x.clone().requires_grad_(True)
        logits = net(xr)
        loss = F.cross_entropy(logits, y) + 0.5 * penalty_fn(xr, logits)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return before, fro()


def test_jr_training_cuts_jacobian_and_detached_penalty_does_not():
    base_before, base_after = _train_small(lambda x, z: torch.zeros(()))
    before, after = _train_small(lambda x, z: jacobian_penalty(x, z, 1))
    _, detached_after = _train_small(lambda x, z: jacobian_penalty(x, z, 1).detach())
    assert after < 0.3 * base_after
    # a detached penalty (the RegDNNs bug) trains exactly the unregularized model
    assert detached_after == pytest.approx(base_after, rel=1e-6)


def test_l1_penalty_is_entrywise_l1(lenet_and_x):
    model, x = lenet_and_x
    xr = x[:4].clone().requires_grad_(True)
    val = jacobian_l1_penalty(xr, model(xr))
    ref = _jacrev(model, x[:4]).abs().sum() / 4
    assert torch.allclose(val, ref, rtol=1e-4)
    assert torch.autograd.grad(val, model.classifier[-1].weight)[0].abs().sum() > 0
