"""Attacks (jacviz.attacks): budgets, [0,1] range, statelessness, and Foolbox 3.3.4 as reference."""
from __future__ import annotations

import math

import pytest
import torch

from jacviz import attacks as A

N = 200  # test samples for the fixed-budget attacks


@pytest.fixture(scope="module")
def batch(mnist_test):
    x, y = mnist_test
    return x[:N], y[:N]


def _acc(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def _linf(a, b):
    return (a - b).flatten(1).abs().amax(1)


def test_white_noise_statistics_and_range():
    g = torch.Generator().manual_seed(0)
    x = torch.full((64, 1, 28, 28), 0.5)
    out = A.white_noise(x, 0.1, generator=g)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    # interior pixels are essentially never clipped at sigma = 0.1: the std is sigma (eq. 9)
    assert abs((out - x).std().item() - 0.1) < 0.003
    big = A.white_noise(x, 5.0, generator=g)
    assert big.min() >= 0 and big.max() <= 1 and ((big == 0) | (big == 1)).float().mean() > 0.8
    sig = torch.tensor([0.0, 0.2] * 32)
    per = A.white_noise(x, sig, generator=g)
    assert torch.equal(per[0::2], x[0::2]) and (per[1::2] != x[1::2]).any()


def test_fgsm_budget_range_and_statelessness(lenet_plain, batch):
    x, y = batch
    for p in lenet_plain.parameters():
        p.grad = None
    eps = 0.1
    xa = A.fgsm(lenet_plain, x, y, eps)
    assert not xa.requires_grad
    assert xa.min() >= 0 and xa.max() <= 1
    assert _linf(xa, x).max() <= eps + 1e-6
    assert _acc(lenet_plain, xa, y) <= _acc(lenet_plain, x, y) - 0.2  # eps 0.1 hurts a plain LeNet'
    assert all(p.grad is None for p in lenet_plain.parameters())
    assert not lenet_plain.training
    assert torch.equal(A.fgsm(lenet_plain, x, y, 0.0), x)


def test_fgsm_per_sample_eps_keeps_train_mode(batch):
    from models import build

    x, y = batch
    torch.manual_seed(0)
    model = build("lenet", dropout=0.5).train()  # as the trainer calls it: train mode, dropout on
    eps = torch.rand(len(x)) * 0.01  # adversarial training: eps ~ U[0, 0.01] per sample
    xa = A.fgsm(model, x, y, eps)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    d = _linf(xa, x)
    assert torch.all(d <= eps + 1e-6)
    # pixels off the [0,1] walls move by exactly eps_i unless their gradient is exactly 0
    assert torch.allclose(d, eps, atol=1e-6)
    with pytest.raises(ValueError):
        A.fgsm(model, x, y, torch.zeros(3))


def test_fgsm_is_one_step_of_pgd(lenet_plain, batch):
    x, y = batch
    for eps in (0.02, 0.15):
        assert torch.equal(A.fgsm(lenet_plain, x, y, eps), A.pgd(lenet_plain, x, y, 1, step_size=eps, eps=eps))


def test_pgd_budget_range_and_strength(lenet_plain, batch):
    x, y = batch
    eps = 8 / 255
    xa = A.pgd(lenet_plain, x, y, steps=12, eps=eps)
    assert xa.min() >= 0 and xa.max() <= 1 and _linf(xa, x).max() <= eps + 1e-6
    # more iterations inside the same radius are at least as strong as one 1/255 step
    one = A.pgd(lenet_plain, x, y, steps=1, eps=eps)
    assert _acc(lenet_plain, xa, y) <= _acc(lenet_plain, one, y) <= _acc(lenet_plain, x, y)
    g = torch.Generator().manual_seed(0)
    xr = A.pgd(lenet_plain, x, y, steps=0, eps=eps, random_start=True, generator=g)
    assert xr.min() >= 0 and xr.max() <= 1 and _linf(xr, x).max() <= eps + 1e-6 and not torch.equal(xr, x)
    assert torch.equal(A.pgd(lenet_plain, x, y, steps=0, eps=eps), x)


def test_cw_outputs_are_minimal_adversarials(lenet_plain, mnist_test):
    x, y = mnist_test
    # include samples the model gets wrong: they must come back at distance 0, unchanged
    with torch.no_grad():
        wrong = (lenet_plain(x[:2000]).argmax(1) != y[:2000]).nonzero().squeeze(1)[:3]
    idx = torch.cat([wrong, torch.arange(12)])
    xb, yb = x[idx], y[idx]
    for p in lenet_plain.parameters():
        p.grad = None
    xa, d = A.cw_l2(lenet_plain, xb, yb, steps=40, lr=0.1, binary_steps=4)
    assert xa.shape == xb.shape and d.shape == (len(xb),)
    assert xa.min() >= 0 and xa.max() <= 1
    assert torch.all(d[: len(wrong)] == 0) and torch.equal(xa[: len(wrong)], xb[: len(wrong)])
    found = torch.isfinite(d)
    assert found[len(wrong):].float().mean() >= 0.75
    with torch.no_grad():
        assert torch.all(lenet_plain(xa[found]).argmax(1) != yb[found])
    assert torch.allclose(d[found], (xa - xb)[found].flatten(1).norm(dim=1), atol=1e-4)
    assert all(p.grad is None for p in lenet_plain.parameters())


# ---------------------------------------------------------------- Foolbox 3.3.4 as the reference
@pytest.fixture(scope="module")
def fb():
    """Foolbox, for its three tests only (a module-level importorskip would skip this whole file)."""
    return pytest.importorskip("foolbox")


def _fmodel(fb, model, x):
    return fb.PyTorchModel(model, bounds=(0, 1), device=x.device)


def test_fgsm_matches_foolbox(fb, lenet_plain, batch):
    x, y = batch
    eps = 0.1
    _, _, ok_fb = fb.attacks.FGSM()(_fmodel(fb, lenet_plain, x), x, y, epsilons=eps)
    ours = 1 - _acc(lenet_plain, A.fgsm(lenet_plain, x, y, eps), y)
    assert ours >= ok_fb.float().mean().item() - 0.01


def test_pgd_matches_foolbox(fb, lenet_plain, batch):
    x, y = batch
    eps, steps = 16 / 255, 20
    attack = fb.attacks.LinfBasicIterativeAttack(abs_stepsize=1 / 255, steps=steps, random_start=False)
    _, _, ok_fb = attack(_fmodel(fb, lenet_plain, x), x, y, epsilons=eps)
    ours = 1 - _acc(lenet_plain, A.pgd(lenet_plain, x, y, steps, step_size=1 / 255, eps=eps), y)
    assert ours >= ok_fb.float().mean().item() - 0.02


def test_cw_matches_foolbox(fb, lenet_plain, mnist_test):
    x, y = mnist_test
    x, y = x[:20], y[:20]
    steps, lr, rounds = 60, 0.05, 5
    attack = fb.attacks.L2CarliniWagnerAttack(binary_search_steps=rounds, steps=steps, stepsize=lr,
                                              initial_const=0.01, confidence=0, abort_early=True)
    _, adv_fb, ok_fb = attack(_fmodel(fb, lenet_plain, x), x, y, epsilons=None)
    # Foolbox returns its zero-initialized best (the black image) where it found nothing, and flags it a
    # success when the model misclassifies black: that is not a point CW found
    found = ok_fb & (adv_fb.flatten(1).abs().amax(1) > 0)
    d_fb = torch.where(found, (adv_fb - x).flatten(1).norm(dim=1), torch.tensor(math.inf))
    _, d = A.cw_l2(lenet_plain, x, y, steps=steps, lr=lr, c0=0.01, binary_steps=rounds)
    assert torch.isfinite(d).float().mean() >= torch.isfinite(d_fb).float().mean() - 0.05
    both = torch.isfinite(d) & torch.isfinite(d_fb) & (d > 0)
    assert both.sum() >= 10
    assert d[both].mean() <= d_fb[both].mean() * 1.05


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_attacks_run_on_the_input_device(lenet_plain, batch):
    import copy

    model = copy.deepcopy(lenet_plain).to("cuda")
    x, y = batch[0][:32].to("cuda"), batch[1][:32].to("cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    for out in (A.white_noise(x, 0.1, generator=g), A.fgsm(model, x, y, 0.1),
                A.pgd(model, x, y, 3, random_start=True, generator=g),
                A.cw_l2(model, x, y, steps=5, binary_steps=2)[0]):
        assert out.device == x.device and out.min() >= 0 and out.max() <= 1
