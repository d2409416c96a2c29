"""Does JR on ResNet-18 penalize the Jacobian the report measures?

JR's penalty is computed in train mode, where BatchNorm normalizes each batch of 100 with the batch's
own statistics; the report's ‖J‖_F is measured in eval mode, with the running statistics. This
script measures both on the same images with the training's own estimator (C |v·J|², one v per
sample drawn uniformly on the sphere, Algorithm 1; 10 projections), so it reports what the penalty
actually saw. Per-sample v keeps the cross-sample terms that batch statistics add incoherent
(their expected contribution is O(1/batch)); an exact Jacobian from one batched VJP with the same
basis vector for every sample would add them coherently and is not what training penalizes.

Output, per checkpoint: RMS over the first 1,000 test images of ‖J‖_F w.r.t. the normalized
input, in eval and in train mode (BatchNorm buffers untouched), next to the report's mean exact
eval-mode value.

  JACVIZ_DATA=../shared/data PYTHONPATH=. python reproduction/resnet_batchnorm_jacobian.py \\
      runs/cifar10/72d162de25.pt runs/cifar10/fbff0621d5.pt [--threads 2]
"""
from __future__ import annotations

import argparse

import torch

from jacviz import data
from jacviz.checkpoints import load
from jacviz.jacobian import jacobian_penalty
from jacviz.train import batch_stats_frozen
from models import input_std


def rms_jacobian(model: torch.nn.Module, x: torch.Tensor, train_mode: bool, batch: int = 100,
                 n_proj: int = 10, seed: int = 0) -> float:
    """sqrt(mean over x of the n_proj-projection estimate of ‖J‖_F²), normalized-input space."""
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    model.train(train_mode)
    try:
        with batch_stats_frozen(model):
            for s in range(0, len(x), batch):
                xb = x[s:s + batch].clone().requires_grad_(True)
                est = jacobian_penalty(xb, model(xb), n_proj, create_graph=False, generator=g, reduction="none")
                total += est.sum().item()
    finally:
        model.eval()
    return (total / len(x)) ** 0.5 * input_std(model)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--n", type=int, default=1000, help="first n test images")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    x, _ = data.load("cifar10", "test")
    x = x[:a.n]
    for path in a.checkpoints:
        ck = load(path)
        ev, tr = rms_jacobian(ck.model, x, False), rms_jacobian(ck.model, x, True)
        print(f"{ck.label} ({ck.config.key()}): RMS ‖J‖_F eval {ev:.3f}, train mode {tr:.3f}; "
              f"report's mean exact (eval) {ck.metrics.get('jac_fro_normalized', float('nan')):.3f}", flush=True)


if __name__ == "__main__":
    main()
