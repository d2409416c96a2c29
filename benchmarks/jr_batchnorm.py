"""Does BatchNorm's closed-form double backward (jacviz.jr_batchnorm) make a ResNet-18 JR step faster?

    python benchmarks/jr_batchnorm.py [--batch 100] [--steps 3] [--rounds 2] [--threads N] [--device cpu]
                                      [--conv torch|transposed|both] [--ops]

Times one eager training step as jacviz.train takes it (forward, cross-entropy, the n_proj = 1
penalty and its double backward, backward, SGD with momentum; jr_overhead's step) of a fresh seed-0
ResNet-18 in train mode: plain, JR with PyTorch's BatchNorm double backward ('torch') and JR inside
jacviz.jr_batchnorm.analytic_double_backward ('analytic'), each with the convolutions' input
gradients as --conv says ('transposed': jacviz.jr_conv, as a CPU trains; 'torch': PyTorch's, as a
GPU trains). Prints the median seconds, torch/analytic and each JR step over the plain step, all
from the same run; the variants alternate for --rounds rounds so that a change in the machine's load
hits all of them, after one untimed round (oneDNN's kernel set-up). Random [0, 1] batches (time does
not depend on pixel values). --ops also counts the ops one step dispatches (aten ops on a CPU, CUDA
kernels on a GPU; benchmarks/jr_overhead.py's count), the cost that bounds a launch-bound GPU step.
Results: benchmarks/results/jr_batchnorm_*.txt.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import models  # noqa: E402
from _common import header, median_step_seconds  # noqa: E402
from jacviz.jr_batchnorm import analytic_double_backward  # noqa: E402
from jacviz.jr_conv import transposed_input_grads  # noqa: E402
from jr_overhead import _optimizer, _train_step, profile_step  # noqa: E402

VARIANTS = (("plain", False), ("1", False), ("1", True))  # (kind, analytic BatchNorm)


def _model_and_batch(batch: int, dev: torch.device):
    torch.manual_seed(0)
    model = models.build("resnet18").to(dev).train()
    x = torch.rand(batch, *model.input_shape, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    return model, x, y


def step_time(batch: int, kind: str, analytic: bool, transposed: bool, steps: int, dev: torch.device) -> float:
    """Median seconds of a ``kind`` step ('plain' or '1' = JR n_proj 1) of a fresh seed-0 ResNet-18."""
    model, x, y = _model_and_batch(batch, dev)
    opt, std = _optimizer(model), models.input_std(model)
    n_proj = "plain" if kind == "plain" else int(kind)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        _train_step(model, opt, x, y, n_proj, std)
    with transposed_input_grads(model, enabled=transposed), analytic_double_backward(model, enabled=analytic):
        return median_step_seconds(step, steps, dev)


def op_count(batch: int, kind: str, analytic: bool, transposed: bool, dev: torch.device) -> int:
    """Ops one step dispatches (aten ops on a CPU, CUDA kernels on a GPU)."""
    model, x, y = _model_and_batch(batch, dev)
    with transposed_input_grads(model, enabled=transposed), analytic_double_backward(model, enabled=analytic):
        return sum(profile_step(model, x, y, "plain" if kind == "plain" else int(kind), dev).values())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", default="100")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--conv", default=None, choices=("torch", "transposed", "both"),
                   help="convolutions' input gradients (default: as jacviz.train takes them on --device)")
    p.add_argument("--ops", action="store_true", help="also count the ops each step dispatches")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    convs = {"torch": [False], "transposed": [True], "both": [True, False]}[a.conv or (
        "transposed" if dev.type == "cpu" else "torch")]
    print(header(dev, a.steps, a.rounds))
    print("batch conv        plain s   JR torch-BN s  JR analytic-BN s  torch/analytic  "
          "JR torch-BN/plain  JR analytic-BN/plain")
    for batch in map(int, a.batch.split(",")):
        for tr in convs:
            t = {v: [] for v in VARIANTS}
            for v in VARIANTS:
                step_time(batch, *v, tr, 1, dev)
            for _ in range(a.rounds):
                for v in VARIANTS:
                    t[v].append(step_time(batch, *v, tr, a.steps, dev))
            p_, jt, ja = (statistics.median(t[v]) for v in VARIANTS)
            conv = "transposed" if tr else "torch"
            print(f"{batch:5d} {conv:10s} {p_:9.4f} {jt:14.4f} {ja:17.4f} {jt / ja:15.2f} "
                  f"{jt / p_:18.2f} {ja / p_:20.2f}", flush=True)
            if a.ops:
                n = {v: op_count(batch, *v, tr, dev) for v in VARIANTS}
                what = "CUDA kernels" if dev.type == "cuda" else "aten ops"
                print(f"      {what} per step: plain {n[VARIANTS[0]]}, JR torch-BN {n[VARIANTS[1]]} "
                      f"({n[VARIANTS[1]] / n[VARIANTS[0]]:.2f}x), JR analytic-BN {n[VARIANTS[2]]} "
                      f"({n[VARIANTS[2]] / n[VARIANTS[0]]:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
