"""Cyclopropagation (Appendix C) equals autograd's double backpropagation."""
import pytest
import torch

from jacviz.cyclo import cyclo_gradients, mlp_forward
from jacviz.jacobian import jacobian_penalty


@pytest.mark.parametrize("acts", [["tanh", "tanh", "linear"], ["tanh", "tanh", "tanh"], ["linear", "tanh"]])
def test_cyclo_matches_autograd(acts):
    torch.manual_seed(0)
    sizes = [9, 8, 6, 4][: len(acts) + 1]
    Ws = [torch.randn(o, i, dtype=torch.float64, requires_grad=True) / i ** 0.5 for i, o in zip(sizes[:-1], sizes[1:])]
    Ws = [w.detach().requires_grad_(True) for w in Ws]
    bs = [torch.randn(o, dtype=torch.float64, requires_grad=True) for o in sizes[1:]]
    x = torch.randn(5, sizes[0], dtype=torch.float64, requires_grad=True)
    R = 0.5 * jacobian_penalty(x, mlp_forward(x, Ws, bs, acts), None)
    ref = torch.autograd.grad(R, Ws + bs, allow_unused=True, materialize_grads=True)
    dW, db = cyclo_gradients(x.detach(), [w.detach() for w in Ws], [b.detach() for b in bs], acts)
    assert len(dW) == len(Ws) and len(db) == len(bs)  # zip below would stop at a short list
    for a, b in zip(ref, dW + db):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-10, rtol=1e-8)
