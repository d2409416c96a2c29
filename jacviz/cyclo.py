"""Cyclopropagation (paper Appendix C): closed-form gradient of R = 1/2 ||J||_F^2 for an MLP.

Network (eqs. 17-19): z^(0) = x, zhat^(l) = W^(l) z^(l-1) + b^(l), z^(l) = sigma_l(zhat^(l)),
l = 1..L. Layer Jacobians J^(l) = diag(sigma'(zhat^(l))) W^(l) (eq. 20), J = J^(L)...J^(1)
(eq. 21). With Omega^(l) = [J^(l-1)...J^(1) J^T J^(L)...J^(l+1)] (eq. 28), iterating l = L..1:
    Btilde^(l) = (Btilde^(l+1) W^(l+1)) * sigma'(zhat^(l)) + sigma''(zhat^(l)) * sum_k W^(l)_{jk} Omega^(l)_{kj}   (eq. 29)
    Wtilde^(l)_{jk} = Btilde^(l)_j z^(l-1)_k + sigma'(zhat^(l)_j) Omega^(l)_{kj}                                 (eq. 30)
(eq. 29 is eq. 25 with (Btilde/sigma') J^(l+1) = Btilde W^(l+1)). This is an exact alternative
to double backpropagation for MLPs; tests check it against autograd.
"""
from __future__ import annotations

import torch

ACTIVATIONS = {
    # name: (sigma, sigma', sigma'')
    "tanh": (torch.tanh, lambda h: 1 - torch.tanh(h) ** 2,
             lambda h: -2 * torch.tanh(h) * (1 - torch.tanh(h) ** 2)),
    "linear": (lambda h: h, torch.ones_like, torch.zeros_like),
}


def mlp_forward(x: torch.Tensor, weights, biases, activations) -> torch.Tensor:
    """Plain forward pass of the MLP: x (B, n_0) -> z^(L) (B, n_L)."""
    z = x
    for W, b, act in zip(weights, biases, activations):
        z = ACTIVATIONS[act][0](z @ W.T + b)
    return z


def cyclo_gradients(x: torch.Tensor, weights, biases, activations):
    """Gradients of the batch mean of 1/2 ||J(x)||_F^2 w.r.t. every W^(l) and b^(l).

    x: (B, n_0); weights[l]: (n_{l+1}, n_l); biases[l]: (n_{l+1},); activations[l] in
    {'tanh', 'linear'} (use 'linear' for a logits layer). Returns (dWs, dbs) shaped like the
    parameters. Cost: O(L) matrix products per sample, no second-order autograd.
    """
    L = len(weights)
    B = x.shape[0]
    zs, s, t = [x], [], []
    for W, b, act in zip(weights, biases, activations):
        f, d1, d2 = ACTIVATIONS[act]
        h = zs[-1] @ W.T + b
        s.append(d1(h)); t.append(d2(h)); zs.append(f(h))
    layer_J = [s[l][:, :, None] * weights[l] for l in range(L)]        # (B, n_l+1, n_l)
    n0 = x.shape[1]
    prefix = [torch.eye(n0, dtype=x.dtype, device=x.device).expand(B, n0, n0)]
    for l in range(L):
        prefix.append(layer_J[l] @ prefix[-1])                            # J^(l)...J^(1)
    nL = weights[-1].shape[0]
    suffix = [None] * (L + 1)
    suffix[L] = torch.eye(nL, dtype=x.dtype, device=x.device).expand(B, nL, nL)
    for l in range(L - 1, -1, -1):
        suffix[l] = suffix[l + 1] @ layer_J[l]                            # J^(L)...J^(l+1)
    J = prefix[L]                                                          # (B, n_L, n_0)
    dWs, dbs = [None] * L, [None] * L
    B_next = None
    for l in range(L - 1, -1, -1):
        # Omega for layer index l (paper's layer l+1): prefix[l] J^T suffix[l+1]
        omega = prefix[l] @ J.transpose(1, 2) @ suffix[l + 1]               # (B, n_l, n_l+1)
        direct = (weights[l] * omega.transpose(1, 2)).sum(-1)               # sum_k W_jk Omega_kj
        Bt = t[l] * direct
        if B_next is not None:
            Bt = Bt + (B_next @ weights[l + 1]) * s[l]
        dbs[l] = Bt.mean(0)
        dWs[l] = (Bt[:, :, None] * zs[l][:, None, :] + s[l][:, :, None] * omega.transpose(1, 2)).mean(0)
        B_next = Bt
    return dWs, dbs
