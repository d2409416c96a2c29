"""How good is the random-projection estimate of ||J||_F^2 (Section 2.3, Appendix B)?

The paper's estimator (eqs. 7-8, Algorithm 1) draws n_proj unit vectors v ~ U(S^{C-1}) per sample
and uses  C/n_proj * sum_mu |v_mu . J(x)|^2 , an unbiased estimate of ||J(x)||_F^2 whose relative
variance for one projection is (eq. 15)

    var / ||J||_F^4 = 2C/(C+2) * Tr(JJ^T JJ^T)/||J||_F^4 - 2/(C+2)  <=  2 (C-1)/(C+2)   (eq. 16),

divided by n_proj for n_proj independent projections.

:func:`projection_study` measures this on real samples. It computes each sample's exact Jacobian
once (C batched vector-Jacobian products, :func:`jacviz.jacobian.jacobian_matrix`) and then forms
the projections v . J by matrix products, which is the same number autograd's VJP with v returns
(the test suite checks this against :func:`jacviz.jacobian.jacobian_penalty`), so hundreds of
repeated draws cost milliseconds. :func:`cost_ratio` times the real autograd implementation, stepped as
:func:`jacviz.train.fit` steps the model when asked.

Spaces: 'normalized' is the paper's convention (Jacobian w.r.t. the model's preprocessed input,
= pixel-space Jacobian x std); 'pixel' is w.r.t. the [0, 1] input.
"""
from __future__ import annotations

import copy
import statistics
import time
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .jacobian import jacobian_matrix, jacobian_penalty
from .jr_conv import transposed_input_grads
from .machine import cpu_model


def relative_variance_bound(C: int, n_proj: int = 1) -> float:
    """Eq. 16 divided by n_proj: upper bound on var/mean^2 of the n_proj-projection estimate of
    ||J(x)||_F^2 for one sample, independent of J. C: number of classes (outputs)."""
    return 2.0 * (C - 1) / ((C + 2) * n_proj)


def _input_std(model: nn.Module) -> float:
    norm = getattr(model, "normalize", None)
    return float(norm.std) if norm is not None else 1.0


def unit_vectors(shape: tuple[int, ...], generator: torch.Generator | None = None,
                 dtype=torch.float32, device="cpu") -> torch.Tensor:
    """Rows uniform on S^{C-1} (last dim C): normalized Gaussian draws, as in Algorithm 1."""
    v = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    return v / v.norm(dim=-1, keepdim=True)


def jacobians(model: nn.Module, x: torch.Tensor, space: str = "normalized", chunk: int = 100,
              progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Exact per-sample Jacobians flattened over the input, shape (B, C, I), float64 on CPU.

    space 'normalized' multiplies the pixel-space Jacobian by the model's input std.
    progress: called as ``progress(done, total)`` after each ``chunk`` images (C backward passes an image;
    DDNet: ~40 ms an image on one thread of the project's 2-core CPU VM)."""
    if space not in ("normalized", "pixel"):
        raise ValueError("space must be 'normalized' or 'pixel'")
    dev = next(model.parameters()).device
    parts = []
    for start in range(0, len(x), chunk):
        parts.append(jacobian_matrix(model, x[start:start + chunk].to(dev), chunk).flatten(2).double().cpu())
        if progress:
            progress(min(start + chunk, len(x)), len(x))
    J = torch.cat(parts)
    if space == "normalized":
        J = J * _input_std(model)
    return J


VECTOR_BUDGET = 4_000_000  # float64 projection vectors held at once by projection_study (32 MB)


def projection_estimates(JJt: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Eq. 8 per sample: C * mean over projections of |v . J|^2, formed as v^T (J J^T) v.

    JJt: (B, C, C), each sample's J J^T; v: (..., n_proj, B, C) unit vectors. Returns (..., B).
    The C x C Gram matrix stands in for J (C x input size), so each draw costs C^2, not C times the input."""
    C = JJt.shape[-1]
    v = v.to(JJt.dtype)
    return C * torch.einsum("...nbc,bcd,...nbd->...nb", v, JJt, v).mean(-2)


def projection_study(model: nn.Module, x: torch.Tensor, n_projs: Sequence[int] = (1, 2, 3, 5, 10),
                     repeats: int = 200, seed: int = 0, space: str = "normalized",
                     progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Exact ||J||_F^2 against its random-projection estimates, for a batch of samples.

    model: eval mode, pixels in / logits out. x: (B, ...) pixels in [0, 1].
    n_projs: projection counts to study; repeats: independent draws of the n_proj vectors (per
    sample, per repeat), with generator ``seed``.
    progress: called as ``progress('jacobians', images done, B)`` while the exact Jacobians are computed,
    then ``progress('draws', draws done, repeats * len(n_projs))`` (the whole study for 1,000 CIFAR-10
    test images, 2,000 draws of n_proj up to 50: ~35 s of Jacobians and ~75 s of draws on one thread of
    the project's 2-core CPU VM, beside two trainings).

    Returns a dict (numpy arrays / floats):
      'C', 'B', 'space', 'repeats', 'n_projs';
      'exact' (B,): ||J(x_b)||_F^2; 'exact_batch_mean': their mean (what eq. 5 penalizes / lambda);
      'rel_var_theory_1' (B,): eq. 15 / ||J||^4 for one projection, exact from J;
      'bound_1': eq. 16, 2(C-1)/(C+2);
      'rows': one dict per n_proj with
         'n_proj', 'bound' (eq. 16 / n_proj),
         'batch_mean' / 'batch_std': mean and std over repeats of the batch-mean estimate,
         'batch_rel_std': batch_std / exact_batch_mean,
         'batch_rel_std_theory': sqrt(sum_b var_b) / (B * exact_batch_mean) from eq. 15,
         'sample_rel_var_measured' (B,): var over repeats of estimate_b / exact_b,
         'sample_rel_var_theory' (B,): eq. 15 / n_proj,
         'sample_rel_var_measured_mean', 'sample_rel_var_theory_mean', 'sample_rel_var_measured_max',
         'batch_estimates' (repeats,), 'sample_estimates_first' (repeats,): draws for sample 0.
    """
    J = jacobians(model, x, space, progress=(lambda d, t: progress("jacobians", d, t)) if progress else None)
    B, C, _ = J.shape
    exact = J.pow(2).sum((1, 2))                               # (B,)
    JJt = J @ J.transpose(1, 2)                                # (B, C, C)
    tr4 = (JJt @ JJt).diagonal(dim1=1, dim2=2).sum(-1)         # Tr(JJ^T JJ^T)
    var1 = 2 * C / (C + 2) * tr4 - 2 / (C + 2) * exact ** 2    # eq. 15, one projection
    rel1 = var1 / exact ** 2
    g = torch.Generator().manual_seed(int(seed))
    rows = []
    for i, n in enumerate(n_projs):
        n = int(n)
        if n < 1:
            raise ValueError("n_proj must be >= 1")
        # C * v^T JJ^T v per projection, averaged over the n projections: (repeats, B); drawn in chunks of
        # repeats so the vectors never take more than VECTOR_BUDGET numbers (the app allows 2000 x 50 x 1000 x 10)
        chunk, parts = max(1, VECTOR_BUDGET // (n * B * C)), []
        for r in range(0, repeats, chunk):
            v = unit_vectors((min(chunk, repeats - r), n, B, C), generator=g, dtype=torch.float64)
            parts.append(projection_estimates(JJt, v))
            if progress:
                progress("draws", i * repeats + min(r + chunk, repeats), repeats * len(n_projs))
        est = torch.cat(parts)
        batch = est.mean(1)                                    # (repeats,)
        ratio = est / exact
        rows.append({
            "n_proj": n,
            "bound": relative_variance_bound(C, n),
            "batch_mean": float(batch.mean()),
            "batch_std": float(batch.std(unbiased=True)) if repeats > 1 else float("nan"),
            "batch_rel_std": float(batch.std(unbiased=True) / exact.mean()) if repeats > 1 else float("nan"),
            "batch_rel_std_theory": float((var1 / n).sum().sqrt() / (B * exact.mean())),
            "sample_rel_var_measured": ratio.var(0, unbiased=True).numpy(),
            "sample_rel_var_theory": (rel1 / n).numpy(),
            "sample_rel_var_measured_mean": float(ratio.var(0, unbiased=True).mean()),
            "sample_rel_var_measured_max": float(ratio.var(0, unbiased=True).max()),
            "sample_rel_var_theory_mean": float((rel1 / n).mean()),
            "batch_estimates": batch.numpy(),
            "sample_estimates_first": est[:, 0].numpy(),
        })
    return {"C": C, "B": B, "space": space, "repeats": int(repeats), "n_projs": [int(n) for n in n_projs],
            "exact": exact.numpy(), "exact_batch_mean": float(exact.mean()),
            "rel_var_theory_1": rel1.numpy(), "bound_1": relative_variance_bound(C, 1), "rows": rows}


def machine_name(device: torch.device | str = "cpu") -> str:
    """Human name of the device timings were taken on (GPU name, or CPU model and thread count)."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    n = torch.get_num_threads()
    return f"{cpu_model()}, {n} torch thread{'s' if n != 1 else ''}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cost_ratio(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None,
               n_projs: Sequence[int] = (1, 2, 3), repeats: int = 5, lam: float = 0.01,
               seed: int = 0, step_setup: dict | None = None) -> dict:
    """Measured cost of the JR term, with the real autograd implementation, now, on the model's device.

    For each variant one timed call is a full training-step computation on the batch x:
    forward, cross-entropy, (penalty with ``create_graph``), backward to the weights. Variants:
    'plain' (no JR), n_proj = 1, 2, ... and 'exact' (C backward passes, eq. 6).
    The median of ``repeats`` calls (after one warm-up) is reported. The model is put in eval
    mode (dropout off) for comparability and its parameter ``.grad`` are cleared afterwards.
    step_setup: how to take the steps, as :func:`jacviz.train.step_setup` says a JR run of this model
      on this device is trained ({'memory_format': 'contiguous' | 'channels_last', 'conv_input_grad':
      'torch' | 'transposed', 'bn_double_backward': ...}); a copy of the model is timed then, so the
      model passed in is never changed. None: PyTorch's own double backward in the default layout.
      'bn_double_backward' does not apply: the model is timed in eval mode, where BatchNorm uses its
      running statistics (an affine map), not the batch's.

    Returns {'device', 'machine', 'batch', 'step_setup', 'seconds': {name: s}, 'ratio_to_exact':
             {name: r}, 'ratio_to_plain': {name: r}}.
    """
    setup = dict(step_setup or {"memory_format": "contiguous", "conv_input_grad": "torch"})
    if step_setup is not None:
        fmt = torch.channels_last if setup["memory_format"] == "channels_last" else torch.contiguous_format
        model = copy.deepcopy(model).to(memory_format=fmt)
        x = x.contiguous(memory_format=fmt)
    dev = next(model.parameters()).device
    x = x.to(dev)
    if y is None:
        with torch.no_grad():
            y = model(x).argmax(1)
    y = y.to(dev)
    std = _input_std(model)
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)

    def step(n_proj):
        xr = x.detach().clone().requires_grad_(n_proj != "plain")
        logits = model(xr)
        loss = F.cross_entropy(logits, y)
        if n_proj != "plain":
            pen = jacobian_penalty(xr, logits, None if n_proj == "exact" else n_proj) * std ** 2
            loss = loss + lam / 2 * pen
        model.zero_grad(set_to_none=True)
        loss.backward()

    variants: list = ["plain", *[int(n) for n in n_projs], "exact"]
    seconds = {}
    try:
        with transposed_input_grads(model, enabled=setup["conv_input_grad"] == "transposed"):
            for var in variants:
                step(var)  # warm-up
                _sync(dev)
                ts = []
                for _ in range(max(1, repeats)):
                    t0 = time.perf_counter()
                    step(var)
                    _sync(dev)
                    ts.append(time.perf_counter() - t0)
                seconds[str(var)] = statistics.median(ts)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    exact = seconds["exact"]
    plain = seconds["plain"]
    return {"device": str(dev), "machine": machine_name(dev), "batch": int(len(x)), "repeats": int(repeats),
            "step_setup": setup, "seconds": seconds,
            "ratio_to_exact": {k: v / exact for k, v in seconds.items()},
            "ratio_to_plain": {k: v / plain for k, v in seconds.items()}}
