"""How saturated a LeNet' is: the fraction of tanh units with |activation| > 0.99 in each tanh layer, on the
first n MNIST test images, with the median top-2 logit margin. Explains where CW-L2 stalls (README, attack
check): the 150k-iteration dropout LeNet' sits at 91-96% in every layer.

  JACVIZ_DATA=../shared/data PYTHONPATH=. python reproduction/tanh_saturation.py runs/mnist/<key>.pt ...

Checkpoints of the 150k-iteration runs stay under the gitignored runs/ of the machine that trained them
(``reproduction/mnist_runs.json`` names them by key); the shipped 6k ones are in checkpoints/.
"""
from __future__ import annotations

import argparse
import sys

import torch

from jacviz import checkpoints, data


def saturation(model: torch.nn.Module, x: torch.Tensor, threshold: float = 0.99) -> list[float]:
    """Per tanh layer (in forward order): fraction of its outputs on x (N, 1, 28, 28) pixels with |a| > threshold."""
    acts: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: acts.append(o.detach()))
             for m in model.modules() if isinstance(m, torch.nn.Tanh)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return [float((a.abs() > threshold).float().mean()) for a in acts]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--n", type=int, default=500)
    a = p.parse_args(argv)
    x, _ = data.load("mnist", "test")
    x = x[:a.n]
    for path in a.checkpoints:
        ck = checkpoints.load(path, device="cpu")
        model = ck.model.eval()
        with torch.no_grad():
            top2 = model(x).topk(2, 1).values
        sat = ", ".join(f"{100 * s:.0f}%" for s in saturation(model, x))
        print(f"{ck.config.label()}, {ck.config.iterations:,} it. ({path}): tanh units |a| > 0.99 per layer: {sat}; "
              f"median logit margin {float((top2[:, 0] - top2[:, 1]).median()):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
