"""Robustness evaluation (Section 3.2, Appendix F): accuracy under corruption, minimal fooling
distances, gradient-masking checks, and the ``python -m jacviz robustness`` command.

Everything is measured in [0, 1] pixel space, before the model's internal normalization:
noise sigma and FGSM/PGD eps in pixel units (L_inf for eps), fooling distances as L2 norms of
x' - x. Functions take plain arguments (model, tensors, budgets) and return tensors, arrays or
dicts; they run on the model's device (CUDA when the model is there) and keep no state.

Honest evaluation (DESIGN principle 6): samples an attack never fools within its budget get
``inf`` and are counted (``summarize``), never dropped; the worst case over attacks per sample
is reported; gradient masking is flagged (``masking_flags``, after AutoAttack's checks.py), and so
is a CW attack that stops short of samples FGSM or PGD fool (``attack_failure_flags``).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Union

import numpy as np
import torch
from torch import nn

from . import attacks as A
from .machine import cpu_model

ATTACKS = ("noise", "fgsm", "pgd", "cw")
STRENGTH_NAMES = {"noise": "sigma", "fgsm": "eps", "pgd": "iterations"}


# ----------------------------------------------------------------------------- helpers
def _device_of(model: nn.Module, fallback: torch.device | str = "cpu") -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device(fallback)


def _batches(n: int, batch_size: int) -> Iterable[slice]:
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


ProgressArg = Union[bool, Callable[[str, int, int], None]]


def _progress(iterable, enabled: ProgressArg, total=None, desc=None):
    """``iterable`` with progress: a tqdm bar when ``enabled`` is True; when it is a callable (the app's
    progress bar), ``enabled(desc, done, total)`` before the first item and after each; else as it is."""
    if callable(enabled):
        return _reporting(list(iterable), enabled, desc)
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, leave=False)


def _reporting(items: list, report: Callable[[str, int, int], None], desc: str):
    report(desc, 0, len(items))
    for i, item in enumerate(items):
        yield item
        report(desc, i + 1, len(items))


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).argmax(1)


def _l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).norm(dim=1)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; anything else is passed to torch.device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.no_grad()
def clean_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    """Fraction of (x, y) classified correctly. x (N, ...) pixels in [0, 1]."""
    dev = _device_of(model, x.device)
    correct = 0
    for sl in _batches(len(x), batch_size):
        correct += int((_predict(model, x[sl].to(dev)) == y[sl].to(dev)).sum())
    return correct / max(1, len(x))


# ----------------------------------------------------------------------------- accuracy curves
def accuracy_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str,
                   strengths: Sequence[float], *, n_draws: int = 3, step_size: float = A.PGD_STEP,
                   eps: float = A.PGD_EPS["mnist"], random_start: bool = False, seed: int = 0,
                   batch_size: int = 500, progress: ProgressArg = False) -> dict:
    """Test accuracy under corruption as a function of its strength (Figure 3a/b, S3, S4).

    attack 'noise': strengths are sigma of eq. 9 (pixel units); the accuracy is averaged over
      ``n_draws`` noise draws (their standard deviation is returned as ``accuracy_std``).
    attack 'fgsm': strengths are eps of eq. 10 (L_inf, pixel units). The clean gradient does not
      depend on eps, so one backward pass serves every eps (each point equals ``fgsm(.., eps)``).
    attack 'pgd': strengths are iteration counts k (step ``step_size`` = 1/255, radius ``eps``,
      32/255 MNIST / 16/255 CIFAR-10); one trajectory of max(k) steps gives every k, so k = 0..K
      costs K steps, not K^2/2.
    x: (N, ...) pixels in [0, 1]; y: (N,). Returns {'attack', 'strength_name', 'strengths',
    'accuracies', 'accuracy_std' (noise only), 'n', 'settings'}; accuracies are fractions.
    """
    if attack not in STRENGTH_NAMES:
        raise ValueError(f"attack must be one of {sorted(STRENGTH_NAMES)}, got {attack!r}")
    dev = _device_of(model, x.device)
    strengths = [float(s) for s in strengths]
    if attack == "pgd":
        if any(s < 0 or s != int(s) for s in strengths):
            raise ValueError("PGD strengths are non-negative iteration counts")
        strengths = [int(s) for s in strengths]
    N = len(x)
    S = len(strengths)
    draws = n_draws if attack == "noise" else 1
    correct = np.zeros((draws, S))
    gen = torch.Generator(device=dev).manual_seed(seed)
    for sl in _progress(list(_batches(N, batch_size)), progress, desc=f"{attack} curve"):
        xb, yb = x[sl].to(dev), y[sl].to(dev)
        if attack == "noise":
            with torch.no_grad():
                for d in range(draws):
                    for j, s in enumerate(strengths):
                        xn = A.white_noise(xb, s, generator=gen) if s > 0 else xb
                        correct[d, j] += int((_predict(model, xn) == yb).sum())
        elif attack == "fgsm":
            grad, logits = A.input_gradient(model, xb, yb)
            direction = grad.sign()
            with torch.no_grad():
                for j, s in enumerate(strengths):
                    # == fgsm(model, xb, yb, s): one PGD step with step = radius = s from xb
                    xa = (xb + s * direction).clamp(0, 1) if s > 0 else xb
                    correct[0, j] += int((_predict(model, xa) == yb).sum())
        else:
            want = {k: [j for j, s in enumerate(strengths) if s == k] for k in set(strengths)}
            K = max(strengths) if strengths else 0
            xk = A.pgd_start(xb, eps, random_start, gen)
            for k in range(K + 1):
                if k < K:
                    xnext, logits = A.pgd_step(model, xk, xb, yb, step_size, eps)
                else:
                    with torch.no_grad():
                        logits = model(xk)
                hits = int((logits.argmax(1) == yb).sum())
                for j in want.get(k, ()):
                    correct[0, j] += hits
                if k < K:
                    xk = xnext
    acc = correct / max(1, N)
    mean_acc = correct.sum(0) / max(1, N * draws)  # exact ratio of counts (no float re-averaging)
    settings: dict = {"attack": attack, "space": "pixel [0,1]"}
    if attack == "noise":
        settings.update(sigma="per-pixel std of eq. 9", n_draws=draws, clip=[0, 1], seed=seed)
    elif attack == "fgsm":
        settings.update(eps="L_inf step of eq. 10 along the clean cross-entropy gradient sign", clip=[0, 1])
    else:
        settings.update(step_size=step_size, eps=eps, norm="Linf", random_start=random_start,
                        loss="cross-entropy", clip=[0, 1])
    out = {"attack": attack, "strength_name": STRENGTH_NAMES[attack], "strengths": strengths,
           "accuracies": mean_acc.tolist(), "n": N, "settings": settings}
    if attack == "noise":
        out["accuracy_std"] = acc.std(0).tolist()
    return out


# ----------------------------------------------------------------------------- fooling distances
@torch.no_grad()
def _ray_search(model: nn.Module, x: torch.Tensor, y: torch.Tensor, direction: torch.Tensor,
                t_max: float, n_grid: int = 14, refine: int = 10) -> torch.Tensor:
    """Smallest t (per sample) with clip(x + t d) misclassified; L2 distance of that point.

    A geometric grid t_max * 2^-j (j = n_grid-1 .. 0) finds the first fooling magnitude, then
    ``refine`` bisection steps between the last unfooled and the first fooled grid value. The
    reported distance is ||clip(x + t d) - x||_2, which grows with t. inf where t_max never fools.
    """
    B = x.shape[0]
    view = (-1,) + (1,) * (x.ndim - 1)
    grid = [t_max * 2.0 ** (-j) for j in range(n_grid - 1, -1, -1)]
    lo = torch.zeros(B, device=x.device, dtype=x.dtype)
    hi = torch.full((B,), math.inf, device=x.device, dtype=x.dtype)
    for t in grid:
        open_ = torch.isinf(hi)
        if not open_.any():
            break
        xt = (x + t * direction).clamp(0, 1)
        fooled = (_predict(model, xt) != y) & open_
        hi = torch.where(fooled, torch.full_like(hi, t), hi)
        lo = torch.where(open_ & ~fooled, torch.full_like(lo, t), lo)
    found = torch.isfinite(hi)
    hi_f = torch.where(found, hi, lo)
    for _ in range(refine):
        mid = (lo + hi_f) / 2
        fooled = _predict(model, (x + mid.view(view) * direction).clamp(0, 1)) != y
        hi_f = torch.where(found & fooled, mid, hi_f)
        lo = torch.where(found & ~fooled, mid, lo)
    dist = _l2((x + hi_f.view(view) * direction).clamp(0, 1), x)
    return torch.where(found, dist, torch.full_like(dist, math.inf))


def _pgd_fooling(model, x, y, step_size, eps, max_steps):
    """PGD iterated until fooled (Appendix F iii): L2 distance of the first fooling iterate."""
    B = x.shape[0]
    dist = torch.full((B,), math.inf, device=x.device, dtype=x.dtype)
    active = torch.arange(B, device=x.device)
    x0, ya, xk = x, y, x.clone()
    for k in range(max_steps + 1):
        if k < max_steps:
            xnext, logits = A.pgd_step(model, xk, x0, ya, step_size, eps)
        else:
            with torch.no_grad():
                logits = model(xk)
        fooled = logits.argmax(1) != ya
        if fooled.any():
            dist[active[fooled]] = _l2(xk[fooled], x0[fooled])
            keep = ~fooled  # fooled samples leave the batch: later steps only cost what is left
            active, x0, ya = active[keep], x0[keep], ya[keep]
            if k < max_steps:
                xnext = xnext[keep]
        if active.numel() == 0 or k == max_steps:
            break
        xk = xnext
    return dist


def fooling_distances(model: nn.Module, x: torch.Tensor, y: torch.Tensor, method: str, *,
                      batch_size: int = 500, seed: int = 0, noise_t_max: float | None = None,
                      fgsm_eps_max: float = 1.0, pgd_step: float = A.PGD_STEP,
                      pgd_eps: float = A.PGD_EPS["mnist"], pgd_max_steps: int = 100,
                      cw_kwargs: dict | None = None, progress: ProgressArg = False) -> torch.Tensor:
    """Per-sample minimal fooling distance, L2 in [0, 1] pixel space (Appendix F, Figure S5).

    method 'noise': one random Gaussian direction u per sample (unit L2); the magnitude t in
      clip(x + t u) is increased on a doubling grid up to ``noise_t_max`` (default 4 sqrt(D),
      where nearly every pixel is saturated) until the prediction changes, then bisected.
    method 'fgsm': the sign of the clean cross-entropy gradient; eps increased up to
      ``fgsm_eps_max`` (1 saturates every pixel) until fooled, then bisected.
    method 'pgd': 1/255 steps of eq. 10 within |x' - x|_inf <= pgd_eps (32/255 MNIST, 16/255
      CIFAR-10) iterated until fooled, at most ``pgd_max_steps`` steps.
    method 'cw': :func:`jacviz.attacks.cw_l2` (``cw_kwargs`` passed on).
    x: (N, ...) pixels, y: (N,). Returns a CPU float tensor (N,): the L2 distance of the fooling
    point found; 0 for samples the model already misclassifies; ``inf`` for samples never fooled
    within the budget (count them, do not drop them).
    """
    if method not in ATTACKS:
        raise ValueError(f"method must be one of {ATTACKS}, got {method!r}")
    dev = _device_of(model, x.device)
    gen = torch.Generator(device=dev).manual_seed(seed)
    D = x[0].numel()
    t_max = noise_t_max if noise_t_max is not None else 4 * math.sqrt(D)
    out = []
    for sl in _progress(list(_batches(len(x), batch_size)), progress, desc=f"{method} distances"):
        xb, yb = x[sl].to(dev), y[sl].to(dev)
        clean_wrong = _predict(model, xb) != yb
        if method == "noise":
            u = torch.randn(xb.shape, device=dev, dtype=xb.dtype, generator=gen)
            u = u / u.flatten(1).norm(dim=1).view(-1, *([1] * (xb.ndim - 1)))
            d = _ray_search(model, xb, yb, u, t_max)
        elif method == "fgsm":
            grad, _ = A.input_gradient(model, xb, yb)
            d = _ray_search(model, xb, yb, grad.sign(), fgsm_eps_max)
        elif method == "pgd":
            d = _pgd_fooling(model, xb, yb, pgd_step, pgd_eps, pgd_max_steps)
        else:
            _, d = A.cw_l2(model, xb, yb, **(cw_kwargs or {}))
        d = torch.where(clean_wrong, torch.zeros_like(d), d)
        out.append(d.detach().float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def error_cdf(distances, grid) -> np.ndarray:
    """Test error as a function of L2 distance (Figure 3c, S5): for each grid value r, the fraction
    of samples with fooling distance <= r (misclassified samples count from r = 0; never-fooled
    samples, ``inf``, never count). distances: (N,); grid: (G,). Returns (G,) fractions in [0, 1].
    """
    d = np.sort(np.asarray(distances, dtype=float).ravel())
    g = np.asarray(grid, dtype=float)
    if d.size == 0:
        return np.zeros_like(g)
    return np.searchsorted(d, g, side="right") / d.size


def budget_text(fooling_settings: dict) -> str:
    """Each attack's budget, the bound of 'never fooled', from a results record's ``fooling_settings``:
    e.g. 'white noise: one Gaussian direction a sample, doubling grid to 4 sqrt(D), then 10 bisections; FGSM: ε up
    to 1; PGD: up to 100 steps of 1/255 within L∞ 32/255; CW-L2: no distance bound, 6 binary-search rounds × ...'."""
    parts = []
    for attack, fs in fooling_settings.items():
        if attack == "noise":
            magnitude = fs.get("magnitude", "magnitude not recorded")
            parts.append(f"white noise: one Gaussian direction a sample, {magnitude}")
        elif attack == "fgsm":
            parts.append(f"FGSM: ε up to {fs['eps_max']:g}")
        elif attack == "pgd":
            parts.append(f"PGD: up to {fs['max_steps']} steps of {fs['step_size'] * 255:g}/255 within "
                         f"L∞ {fs['eps'] * 255:g}/255")
        elif attack == "cw":
            parts.append(f"CW-L2: no distance bound, {A.cw_text(fs)}")
    return "; ".join(parts)


def summarize(distances) -> dict:
    """Median L2 fooling distance (inf when over half were never fooled), mean over fooled samples,
    fraction never fooled (inf), fraction already misclassified (0), and n."""
    d = np.asarray(distances, dtype=float).ravel()
    n = int(d.size)
    if n == 0:
        return {"n": 0, "median": math.nan, "mean_finite": math.nan, "fraction_never_fooled": math.nan,
                "fraction_misclassified": math.nan}
    finite = d[np.isfinite(d)]
    return {"n": n, "median": float(np.median(d)),
            "mean_finite": float(finite.mean()) if finite.size else math.nan,
            "fraction_never_fooled": float(np.mean(~np.isfinite(d))),
            "fraction_misclassified": float(np.mean(d == 0))}


def worst_case(distances: dict) -> torch.Tensor:
    """Per-sample minimum over attacks of the fooling distance (principle 6): (N,)."""
    stacked = torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in distances.values()])
    return stacked.min(0).values


# ----------------------------------------------------------------------------- masking checks
def _non_monotone(budgets: Sequence[float], success: Sequence[float], tol: float) -> tuple[float, float, float] | None:
    """(budget_before, budget_after, drop) for the largest drop of success below its running max."""
    worst = None
    best_so_far, best_at = -math.inf, None
    for b, s in zip(budgets, success):
        if best_so_far - s > tol and (worst is None or best_so_far - s > worst[2]):
            worst = (best_at, b, best_so_far - s)
        if s > best_so_far:
            best_so_far, best_at = s, b
    return worst


def masking_flags(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                  distances: dict | None = None, pgd_eps_grid: Sequence[float] | None = None,
                  pgd_step: float = A.PGD_STEP, pgd_eps: float = A.PGD_EPS["mnist"],
                  zero_grad_tol: float = 0.01, tol: float = 0.05, batch_size: int = 500,
                  seed: int = 0) -> list[str]:
    """Human-readable warnings that gradient attacks may be masked (AutoAttack's checks.py idea).

    Checks, on (x (N, ...) pixels, y (N,)):
    1. input gradients exactly zero for more than ``zero_grad_tol`` of the samples (cross-entropy
       gradient: what FGSM/PGD follow; logit-margin gradient: zero too means the gradient carries
       no information at all, e.g. a quantizing input layer; nonzero means softmax saturation);
    2. a gradient attack (best of FGSM / PGD / CW per sample, from ``distances`` or computed)
       fools fewer samples than random noise at the same L2 distance, by more than ``tol`` at some
       radius (compared up to the largest finite noise distance);
    3. PGD success non-monotone in its L_inf budget eps (``pgd_eps_grid``, each run for
       ceil(1.25 eps / step) steps): success falls by more than ``tol`` as eps grows.
    Returns a list of strings, empty when nothing looks wrong.
    """
    dev = _device_of(model, x.device)
    N = len(x)
    flags: list[str] = []
    if N == 0:
        return flags
    # 1. zero gradients
    zero_ce = zero_margin = 0
    for sl in _batches(N, batch_size):
        xb, yb = x[sl].to(dev), y[sl].to(dev)
        g, _ = A.input_gradient(model, xb, yb)
        zero_ce += int((g.flatten(1).abs().amax(1) == 0).sum())
        with torch.enable_grad():
            xr = xb.detach().clone().requires_grad_(True)
            logits = model(xr)
            top2 = logits.topk(2, dim=1).values
            margin = (top2[:, 0] - top2[:, 1]).sum()
            gm = torch.autograd.grad(margin, xr, allow_unused=True)[0] if margin.requires_grad else None
        gm = torch.zeros_like(xb) if gm is None else gm
        zero_margin += int((gm.flatten(1).abs().amax(1) == 0).sum())
    if zero_ce / N > zero_grad_tol:
        why = ("the logit-margin gradient is zero too: the gradient carries no information "
               "(quantized/non-differentiable input processing?)" if zero_margin / N > zero_grad_tol else
               "the logit-margin gradient is not: softmax saturation (logit-loss attacks such as CW see it)")
        flags.append(f"input gradient of the cross-entropy is exactly zero for {zero_ce}/{N} samples "
                     f"({100 * zero_ce / N:.0f}%); FGSM/PGD cannot move them; {why}.")
    # 2. gradient attacks vs noise at equal L2 distance
    distances = dict(distances or {})
    for m in ("noise", "fgsm", "pgd"):
        if m not in distances:
            distances[m] = fooling_distances(model, x, y, m, batch_size=batch_size, seed=seed,
                                             pgd_step=pgd_step, pgd_eps=pgd_eps)
    grad_methods = [m for m in ("fgsm", "pgd", "cw") if m in distances]
    d_noise = np.asarray(distances["noise"], dtype=float)
    d_grad = np.min(np.stack([np.asarray(distances[m], dtype=float) for m in grad_methods]), axis=0)
    finite = d_noise[np.isfinite(d_noise)]
    if finite.size:
        grid = np.unique(finite)
        gap = error_cdf(d_noise, grid) - error_cdf(d_grad, grid)
        j = int(np.argmax(gap))
        if gap[j] > tol:
            flags.append(f"random noise beats the gradient attacks: at L2 distance {grid[j]:.3g} (pixel space) "
                         f"noise fools {100 * error_cdf(d_noise, grid[j:j + 1])[0]:.0f}% of samples, "
                         f"the best of {'/'.join(m.upper() for m in grad_methods)} only "
                         f"{100 * error_cdf(d_grad, grid[j:j + 1])[0]:.0f}%.")
    # 3. PGD success vs budget
    grid_eps = list(pgd_eps_grid) if pgd_eps_grid is not None else [e / 255 for e in (2, 4, 8, 16, 32, 64)]
    success = []
    for e in grid_eps:
        steps = math.ceil(1.25 * e / pgd_step)
        fooled = 0
        for sl in _batches(N, batch_size):
            xb, yb = x[sl].to(dev), y[sl].to(dev)
            xa = A.pgd(model, xb, yb, steps, pgd_step, e)
            fooled += int((_predict(model, xa) != yb).sum())
        success.append(fooled / N)
    bad = _non_monotone(grid_eps, success, tol)
    if bad is not None:
        flags.append(f"PGD success is not monotone in its budget: {100 * max(success[:grid_eps.index(bad[1])]):.0f}% "
                     f"at eps = {bad[0] * 255:.3g}/255 but {100 * success[grid_eps.index(bad[1])]:.0f}% at "
                     f"eps = {bad[1] * 255:.3g}/255 (L_inf, pixel space).")
    return flags


def attack_failure_flags(distances: dict, tol: float = 0.05) -> list[str]:
    """Warnings that the CW attack stopped short: samples it never fooled although FGSM or PGD did.

    CW-L2 minimizes the L2 distance with no budget, so a sample another attack fools is one CW should
    fool too, closer. When it returns ``inf`` on samples FGSM or PGD fool, and those are more than ``tol`` of
    all N evaluated samples, its median and never-fooled fraction measure its settings (Adam steps,
    binary-search rounds over c), not the model; the 'worst' case (per-sample minimum over the attacks)
    still does. Pure function of
    one model's per-sample distances: ``distances`` maps attack -> (N,) L2 distances (arrays, tensors or
    JSON lists with None for never fooled), as in :func:`evaluate_model`. Returns [] without 'cw'.
    """
    if "cw" not in distances:
        return []
    d = {k: distances_from_json(v) for k, v in distances.items() if k in ("cw", "fgsm", "pgd")}
    others = [k for k in ("fgsm", "pgd") if k in d and len(d[k]) == len(d["cw"])]
    if not others or not len(d["cw"]):
        return []
    best_other = np.min(np.stack([d[k] for k in others]), axis=0)
    missed = ~np.isfinite(d["cw"]) & np.isfinite(best_other)
    n, N = int(missed.sum()), len(missed)
    if n / N <= tol:
        return []
    return [f"CW found no adversarial example for {n}/{N} samples ({100 * n / N:.0f}% of all evaluated), each one "
            f"that {'/'.join(k.upper() for k in others)} fool (their median L2 there "
            f"{np.median(best_other[missed]):.3g}, "
            f"pixel space): CW's median and never-fooled fraction are limits of its settings (Adam steps, "
            f"rounds over c), not robustness; the 'worst' case still counts those samples."]


# ----------------------------------------------------------------------------- one model, all attacks
DEFAULT_SIGMAS = {"mnist": [round(0.1 * i, 2) for i in range(11)],
                  "cifar10": [round(0.05 * i, 2) for i in range(11)]}
DEFAULT_FGSM_EPS = {"mnist": [round(0.025 * i, 3) for i in range(13)],
                    "cifar10": [2 * i / 255 for i in range(17)]}
DEFAULT_PGD_ITERATIONS = 50


def evaluate_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attacks: Sequence[str] = ATTACKS, *,
                   dataset: str = "mnist", sigmas: Sequence[float] | None = None,
                   fgsm_eps: Sequence[float] | None = None, pgd_iterations: int = DEFAULT_PGD_ITERATIONS,
                   pgd_eps: float | None = None, noise_draws: int = 3, cw_kwargs: dict | None = None,
                   masking: bool = True, masking_n: int = 500, batch_size: int = 500, seed: int = 0,
                   progress: ProgressArg = False) -> dict:
    """Every robustness measure of one model on (x (N, ...) pixels, y (N,)), as plain data.

    For noise/FGSM/PGD: the accuracy curve (``accuracy_curve``) and the per-sample fooling
    distances; for CW: the fooling distances. Also the per-sample worst case over the attacks run,
    summaries, and masking flags on the first ``masking_n`` samples. Distances are CPU tensors with
    inf for never fooled. Every number carries its settings.
    """
    unknown = set(attacks) - set(ATTACKS)
    if unknown:
        raise ValueError(f"unknown attacks {sorted(unknown)}; choose from {ATTACKS}")
    pgd_eps = pgd_eps if pgd_eps is not None else A.PGD_EPS.get(dataset, A.PGD_EPS["mnist"])
    cw_kwargs = dict(A.CW_PAPER if cw_kwargs is None else cw_kwargs)
    common = dict(batch_size=batch_size, progress=progress)
    out: dict = {"n": len(x), "clean_accuracy": clean_accuracy(model, x, y, batch_size),
                 "curves": {}, "distances": {}, "fooling_settings": {}}
    for attack in attacks:
        if attack == "noise":
            out["curves"]["noise"] = accuracy_curve(model, x, y, "noise", sigmas or DEFAULT_SIGMAS.get(dataset, DEFAULT_SIGMAS["mnist"]),
                                                    n_draws=noise_draws, seed=seed, **common)
            fs = {"direction": "one Gaussian direction per sample, unit L2", "magnitude": "doubling grid to 4 sqrt(D), then 10 bisections",
                  "clip": [0, 1], "seed": seed}
        elif attack == "fgsm":
            out["curves"]["fgsm"] = accuracy_curve(model, x, y, "fgsm", fgsm_eps or DEFAULT_FGSM_EPS.get(dataset, DEFAULT_FGSM_EPS["mnist"]), **common)
            fs = {"direction": "sign of the clean cross-entropy gradient", "eps_max": 1.0,
                  "magnitude": "doubling grid to eps_max, then 10 bisections", "clip": [0, 1]}
        elif attack == "pgd":
            out["curves"]["pgd"] = accuracy_curve(model, x, y, "pgd", list(range(pgd_iterations + 1)),
                                                  step_size=A.PGD_STEP, eps=pgd_eps, **common)
            fs = {"step_size": A.PGD_STEP, "eps": pgd_eps, "norm": "Linf", "max_steps": 100,
                  "rule": "iterate until fooled"}
        else:
            fs = {"method": "Carlini-Wagner L2, f6 logit loss, tanh box, Adam", **cw_kwargs}
        d = fooling_distances(model, x, y, attack, seed=seed, pgd_eps=pgd_eps, cw_kwargs=cw_kwargs, **common)
        out["distances"][attack] = d
        out["fooling_settings"][attack] = {"distance": "L2, [0,1] pixel space", **fs}
    if out["distances"]:
        out["distances"]["worst"] = worst_case(out["distances"])
        out["fooling_settings"]["worst"] = {"rule": "per-sample minimum over " + ", ".join(out["distances"].keys() - {"worst"})}
    out["summaries"] = {k: summarize(v) for k, v in out["distances"].items()}
    out["attack_flags"] = attack_failure_flags(out["distances"])
    if masking:
        m = min(masking_n, len(x))
        given = {k: v[:m] for k, v in out["distances"].items() if k in ("noise", "fgsm", "pgd", "cw")}
        out["masking_flags"] = masking_flags(model, x[:m], y[:m], distances=given, pgd_eps=pgd_eps,
                                             batch_size=batch_size, seed=seed)
        out["masking_settings"] = {"n": m, "tol": 0.05, "zero_grad_tol": 0.01,
                                   "pgd_eps_grid": [e / 255 for e in (2, 4, 8, 16, 32, 64)]}
    return out


# ----------------------------------------------------------------------------- seeds -> bands
def group_key(config) -> str:
    """Key of a configuration with its seed left out: runs differing only in seed share it."""
    if dataclasses.is_dataclass(config) and any(f.name == "seed" for f in dataclasses.fields(config)):
        config = dataclasses.replace(config, seed=0)
    key = getattr(config, "key", None)
    return key() if callable(key) else str(config)


def distance_grid(distance_lists: Iterable, n_points: int = 201) -> np.ndarray:
    """Common L2 grid from 0 to 1.05 x the largest finite distance over all given arrays."""
    top = 0.0
    for d in distance_lists:
        d = np.asarray(d, dtype=float)
        if np.isfinite(d).any():
            top = max(top, float(d[np.isfinite(d)].max()))
    return np.linspace(0.0, 1.05 * top if top > 0 else 1.0, n_points)


DATASET_TITLES = {"mnist": "MNIST", "cifar10": "CIFAR-10", "usps": "USPS"}  # figure titles


def group_attack_flags(records: Sequence[dict]) -> list[str]:
    """:func:`attack_failure_flags` of a seed group's records, seed-prefixed when there are several; computed
    from the stored distances, so records evaluated before the check get it too."""
    return sorted({(f"seed {r.get('seed')}: " if len(records) > 1 else "") + f
                   for r in records for f in attack_failure_flags(r["distances"])})


def all_flags(g: dict) -> list[str]:
    """A group's gradient-masking flags, then its attack flags (:func:`attack_failure_flags`)."""
    return [*g.get("masking_flags", []), *g.get("attack_flags", [])]


def aggregate_seeds(records: Sequence[dict], n_points: int = 201) -> list[dict]:
    """Group per-model records by ``group_key`` (same config but seed) into mean ± std.

    records: dicts with 'group_key', 'label', 'dataset', 'seed', 'curves', 'distances'. For each
    group: curves -> strengths, mean, std (over seeds, ddof=1; 0 for one seed) and per-seed rows;
    fooling -> a common L2 grid per dataset, error_cdf per seed, mean and std, and the median
    distance's mean and std. Returned in first-seen order.
    """
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r["group_key"], []).append(r)
    grids: dict[tuple[str, str], np.ndarray] = {}
    for r in records:
        for meth, d in r["distances"].items():
            grids.setdefault((r["dataset"], meth), None)
    for (ds, meth) in list(grids):
        grids[(ds, meth)] = distance_grid([r["distances"][meth] for r in records
                                           if r["dataset"] == ds and meth in r["distances"]], n_points)
    # records of several architectures (CIFAR-10: DDNet and ResNet-18) are named by it, as in the app's
    # model lists: "ddnet none", "resnet18 none"
    arch = {gk: rs[0].get("config", {}).get("model") for gk, rs in groups.items()}
    multi_arch = len(set(arch.values()) - {None}) > 1
    names = {gk: f"{arch[gk]} {rs[0]['label']}" if multi_arch and arch[gk] else rs[0]["label"]
             for gk, rs in groups.items()}
    labels = list(names.values())
    out = []
    for gk, rs in groups.items():
        label = names[gk]
        if labels.count(label) > 1:  # the same mix twice (e.g. two schedules): told apart by its key
            label = f"{label} [{gk[:6]}]"
        g = {"group_key": gk, "label": label, "dataset": rs[0]["dataset"], "seeds": [r.get("seed") for r in rs],
             "n_seeds": len(rs), "curves": {}, "fooling": {}}
        for attack in rs[0]["curves"]:
            cs = [r["curves"][attack] for r in rs if attack in r["curves"]]
            if any(c["strengths"] != cs[0]["strengths"] for c in cs):
                warnings.warn(f"{label}: seeds evaluated at different {attack} strengths; using the first seed only")
                cs = cs[:1]
            a = np.array([c["accuracies"] for c in cs])
            g["curves"][attack] = {"strength_name": cs[0]["strength_name"], "strengths": cs[0]["strengths"],
                                   "accuracies": a.tolist(), "mean": a.mean(0).tolist(),
                                   "std": (a.std(0, ddof=1) if len(a) > 1 else np.zeros(a.shape[1])).tolist(),
                                   "settings": cs[0]["settings"]}
        for meth in rs[0]["distances"]:
            ds = [np.asarray(r["distances"][meth], dtype=float) for r in rs if meth in r["distances"]]
            grid = grids[(g["dataset"], meth)]
            e = np.array([error_cdf(d, grid) for d in ds])
            med = np.array([summarize(d)["median"] for d in ds])
            never = np.array([summarize(d)["fraction_never_fooled"] for d in ds])
            g["fooling"][meth] = {"grid": grid.tolist(), "errors": e.tolist(), "error_mean": e.mean(0).tolist(),
                                  "error_std": (e.std(0, ddof=1) if len(e) > 1 else np.zeros(len(grid))).tolist(),
                                  "median_mean": float(med.mean()),
                                  # a seed with median inf (over half never fooled) leaves the std undefined
                                  "median_std": (float(med.std(ddof=1)) if np.isfinite(med).all() else math.nan)
                                  if len(med) > 1 else 0.0,
                                  "never_fooled_mean": float(never.mean())}
        g["masking_flags"] = sorted({f for r in rs for f in r.get("masking_flags", [])})
        g["attack_flags"] = group_attack_flags(rs)
        out.append(g)
    return out


# ----------------------------------------------------------------------------- figures
def figures_from_results(results: dict) -> dict:
    """Plotly figures of a results dict (``run_robustness``/``load_results``), by file stem.

    Per dataset: 'accuracy_<attack>_<dataset>' (models on shared axes, seed bands) and
    'fooling_<method>_<dataset>' (test error vs L2 distance); per group 'attacks_<key>' comparing
    the attacks on one model (Figure S5). Masking flags are added as annotations.
    """
    from . import plots_robustness as P

    figs = {}
    groups = results.get("groups", [])
    for ds in sorted({g["dataset"] for g in groups}):
        gs = [g for g in groups if g["dataset"] == ds]
        ds_name = DATASET_TITLES.get(ds, ds.upper())
        flags = {g["label"]: all_flags(g) for g in gs if all_flags(g)}
        for attack in ("noise", "fgsm", "pgd"):
            curves = {g["label"]: (g["curves"][attack]["strengths"], g["curves"][attack]["accuracies"])
                      for g in gs if attack in g["curves"]}
            if curves:
                eps = next(g["curves"][attack]["settings"].get("eps") for g in gs if attack in g["curves"])
                fig = P.accuracy_figure(curves, attack, pgd_eps=eps if attack == "pgd" else None,
                                        title=f"{ds_name}: accuracy under {attack.upper() if attack != 'noise' else 'white noise'}")
                figs[f"accuracy_{attack}_{ds}"] = P.add_flag_annotations(fig, flags)
        for meth in ("noise", "fgsm", "pgd", "cw", "worst"):
            cdfs = {g["label"]: (g["fooling"][meth]["grid"], g["fooling"][meth]["errors"])
                    for g in gs if meth in g["fooling"]}
            if cdfs:
                name = "worst case over attacks" if meth == "worst" else meth.upper() if meth != "noise" else "white noise"
                fig = P.fooling_cdf_figure(cdfs, title=f"{ds_name}: test error vs {name} fooling distance")
                figs[f"fooling_{meth}_{ds}"] = P.add_flag_annotations(fig, flags)
        for g in gs:
            cdfs = {("white noise" if m == "noise" else m.upper()): (f["grid"], f["errors"])
                    for m, f in g["fooling"].items() if m != "worst"}
            if cdfs:
                fig = P.fooling_cdf_figure(cdfs, title=f"{g['label']} ({ds_name}): attacks compared (Figure S5)")
                figs[f"attacks_{g['group_key']}"] = P.add_flag_annotations(fig, {g["label"]: all_flags(g)})
    return figs


def write_figures(figs: dict, out_dir, png: bool = True) -> list[Path]:
    """Write each figure as HTML, and as PNG via kaleido when static export works.

    A failing static export (no kaleido/Chromium) is warned about once and the HTML is kept.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, fig in figs.items():
        p = out_dir / f"{stem}.html"
        fig.write_html(p, include_plotlyjs="cdn")
        written.append(p)
        if png:
            try:
                q = out_dir / f"{stem}.png"
                fig.write_image(q, width=900, height=600)
                written.append(q)
            except Exception as err:  # kaleido or its browser missing: HTML is enough
                warnings.warn(f"static PNG export failed ({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}); "
                              "keeping the HTML figures only")
                png = False
    return written


# ----------------------------------------------------------------------------- JSON
def _jsonable(obj):
    """Tensors/arrays -> lists; inf/nan -> None (JSON has neither; None = never fooled)."""
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def distances_from_json(d) -> np.ndarray:
    """One attack's fooling distances as written by ``_jsonable`` (a list with None for never fooled), or
    an array or tensor already restored: (N,) float array, L2 in pixel space, inf for never fooled."""
    if isinstance(d, torch.Tensor):
        return d.detach().cpu().double().numpy()
    return np.array([math.inf if v is None else v for v in d], dtype=float)


def load_results(path) -> dict:
    """Read a robustness JSON; per-model distances come back as float arrays with inf restored."""
    results = json.loads(Path(path).read_text())
    by_group: dict = {}
    for r in results.get("models", []):
        r["distances"] = {k: distances_from_json(d) for k, d in r.get("distances", {}).items()}
        r["attack_flags"] = attack_failure_flags(r["distances"])
        by_group.setdefault(r.get("group_key"), []).append(r)
    for g in results.get("groups", []):
        # a pure function of the distances: recomputed, so files written before the check, or with older
        # wording, read as the current code says it
        g["attack_flags"] = group_attack_flags(by_group.get(g.get("group_key"), []))
    return results


def environment(device: torch.device) -> dict:
    """Where and when a result was computed."""
    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine())
    return {"torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "device": str(dev), "device_name": name, "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


# ----------------------------------------------------------------------------- runner + CLI
def _expand_paths(paths: Sequence) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(q for q in sorted(p.glob("*.pt")) if not q.name.endswith(".resume.pt"))
        else:
            out.append(p)
    return out


def model_record(ckpt, path, x: torch.Tensor, y: torch.Tensor, attacks: Sequence[str] = ATTACKS,
                 device: str | torch.device = "cpu", **kwargs) -> dict:
    """``evaluate_model`` of one loaded checkpoint, tagged with what identifies it (path, label,
    key, group_key, seed, dataset, config, training metrics): one entry of ``results['models']``."""
    cfg = ckpt.config
    dataset = getattr(cfg, "dataset", "mnist")
    model = ckpt.model.to(device).eval()
    rec = evaluate_model(model, x, y, attacks, dataset=dataset, **kwargs)
    rec.update({"path": str(path), "label": cfg.label() if hasattr(cfg, "label") else Path(path).stem,
                "key": cfg.key() if hasattr(cfg, "key") else Path(path).stem,
                "group_key": group_key(cfg), "seed": getattr(cfg, "seed", None), "dataset": dataset,
                "config": cfg.to_dict() if hasattr(cfg, "to_dict") else str(cfg),
                "training_metrics": getattr(ckpt, "metrics", {})})
    return rec


def run_robustness(checkpoint_paths: Sequence, attacks: Sequence[str] = ATTACKS, n: int = 1000,
                   out_dir="results", device: str | torch.device = "auto", progress: ProgressArg = True, *,
                   cw_kwargs: dict | None = None, sigmas: Sequence[float] | None = None,
                   fgsm_eps: Sequence[float] | None = None, pgd_iterations: int = DEFAULT_PGD_ITERATIONS,
                   batch_size: int = 500, seed: int = 0, masking: bool = True, png: bool = True,
                   loader: Callable | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Evaluate checkpoints on the first ``n`` test samples of their dataset; write JSON + figures.

    checkpoint_paths: files or folders of ``*.pt`` (resume files skipped). Unreadable files are
    reported (``results['skipped']``) and the rest evaluated. ``device='auto'`` picks CUDA when
    present. ``loader`` (default ``jacviz.checkpoints.load``) maps (path, device) to an object
    with ``.model``, ``.config`` (``.label()``, ``.key()``, ``.dataset``, ``.seed``) and
    ``.metrics``. Writes ``out_dir/robustness.json`` (every number with its settings, n, model
    label/key, torch version, device, date; inf distances as null) and the figures of
    :func:`figures_from_results` as HTML (+ PNG when kaleido works). Returns the results dict
    (distances as tensors). ``progress``: tqdm bars (True), none (False), or a callable
    ``progress(stage, batches done, batches)`` for each stage ('checkpoints', 'noise curve', 'cw distances', ...).
    """
    from . import data

    log = log or (lambda msg: print(msg, file=sys.stderr))
    if loader is None:
        from .checkpoints import load as loader  # lazy: keeps this module importable on its own
    dev = resolve_device(device)
    cw_kwargs = dict(A.CW_PAPER if cw_kwargs is None else cw_kwargs)
    paths = _expand_paths(checkpoint_paths)
    records, skipped = [], []
    test_sets: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for path in _progress(paths, progress, desc="checkpoints"):
        try:
            ckpt = loader(path, device=dev)
        except Exception as err:
            skipped.append({"path": str(path), "reason": f"{type(err).__name__}: {err}"})
            log(f"skipping {path}: {err}")
            continue
        cfg = ckpt.config
        dataset = getattr(cfg, "dataset", "mnist")
        if dataset not in test_sets:
            xt, yt = data.load(dataset, "test")
            test_sets[dataset] = (xt[:n], yt[:n])
        x, y = test_sets[dataset]
        log(f"{Path(path).name}: {cfg.label() if hasattr(cfg, 'label') else Path(path).stem} on {dataset}, "
            f"n={len(x)}, device {dev}")
        rec = model_record(ckpt, path, x, y, attacks, dev, sigmas=sigmas, fgsm_eps=fgsm_eps,
                           pgd_iterations=pgd_iterations, cw_kwargs=cw_kwargs, masking=masking,
                           batch_size=batch_size, seed=seed, progress=progress)
        for flag in rec.get("masking_flags", []):
            log(f"  masking flag: {flag}")
        for flag in rec.get("attack_flags", []):
            log(f"  attack flag: {flag}")
        records.append(rec)
    results = {"meta": {**environment(dev), "n_requested": n, "attacks": list(attacks),
                        "samples": "first n samples of the test split", "space": "[0,1] pixel space",
                        "distances": "L2 in pixel space; null = never fooled within the budget",
                        "cw": cw_kwargs},
               "models": records, "groups": aggregate_seeds(records) if records else [], "skipped": skipped}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "robustness.json").write_text(json.dumps(_jsonable(results), indent=1, allow_nan=False) + "\n")
    if records:
        write_figures(figures_from_results(results), out, png=png)
    return results


def _floats(s: str) -> list[float]:
    return [float(v) for v in s.split(",") if v.strip()]


def build_parser():
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m jacviz robustness",
        description="Robustness of trained checkpoints (Section 3.2, Appendix F of Hoffman et al. 2019): "
                    "accuracy under white noise / FGSM / PGD, minimal L2 fooling distances (noise, FGSM, PGD, "
                    "CW-L2) in [0,1] pixel space, gradient-masking checks. Writes robustness.json and figures.",
        epilog="Runs differing only in seed are drawn as mean ± std bands. CW: --cw-preset paper is Appendix F "
               "(Adam lr 0.005, c0 0.01, 10 binary-search rounds of 1000 steps; minutes per model on a GPU, "
               "most of an hour for 1000 MNIST samples on a 2-core CPU); --cw-preset fast is 6 rounds of 100 "
               "steps at lr 0.05 (about 17x cheaper, distances up to ~15% larger).")
    p.add_argument("--checkpoints", nargs="+", required=True, metavar="PATH", help="checkpoint files or folders")
    p.add_argument("--attacks", default="noise,fgsm,pgd,cw", help="comma-separated subset of noise,fgsm,pgd,cw")
    p.add_argument("--n", type=int, default=1000, help="first n test samples (paper: 1000)")
    p.add_argument("--out", default="results", help="output folder")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--cw-preset", choices=["paper", "fast"], default="paper")
    p.add_argument("--cw-steps", type=int, default=None, help="Adam steps per binary-search round (overrides preset)")
    p.add_argument("--cw-lr", type=float, default=None)
    p.add_argument("--cw-binary-steps", type=int, default=None)
    p.add_argument("--sigmas", type=_floats, default=None, help="noise sigmas, e.g. 0,0.1,0.2")
    p.add_argument("--fgsm-eps", type=_floats, default=None, help="FGSM eps values (L_inf, pixel space)")
    p.add_argument("--pgd-iterations", type=int, default=DEFAULT_PGD_ITERATIONS, help="PGD curve k = 0..K")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise draws")
    p.add_argument("--no-masking", action="store_true", help="skip the gradient-masking checks")
    p.add_argument("--no-png", action="store_true", help="HTML figures only")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def cli(argv: Sequence[str] | None = None) -> int:
    """``python -m jacviz robustness ...``; returns the exit status (0 ok, 1 nothing evaluated, 2 usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:  # argparse exits on --help (0) and on usage errors (2)
        return int(exc.code or 0)
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    bad = [a for a in attacks if a not in ATTACKS]
    if bad or not attacks:
        print(f"unknown attacks {bad}; choose from {','.join(ATTACKS)}", file=sys.stderr)
        return 2
    cw = dict(A.CW_PAPER if args.cw_preset == "paper" else A.CW_FAST)
    for key, val in (("steps", args.cw_steps), ("lr", args.cw_lr), ("binary_steps", args.cw_binary_steps)):
        if val is not None:
            cw[key] = val
    results = run_robustness(args.checkpoints, attacks, args.n, args.out, args.device, not args.quiet,
                             cw_kwargs=cw, sigmas=args.sigmas, fgsm_eps=args.fgsm_eps,
                             pgd_iterations=args.pgd_iterations, batch_size=args.batch_size, seed=args.seed,
                             masking=not args.no_masking, png=not args.no_png)
    if not results["models"]:
        print("no checkpoint could be evaluated", file=sys.stderr)
        return 1
    for g in results["groups"]:
        med = ", ".join(f"{m} {f['median_mean']:.3g}" for m, f in g["fooling"].items())
        print(f"{g['label']} ({g['dataset']}, {g['n_seeds']} seed(s)): median L2 fooling distance {med}")
    print(f"wrote {Path(args.out) / 'robustness.json'}")
    return 0
