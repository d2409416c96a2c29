"""Time per training step: plain SGD vs JR (n_proj = 1, 3, exact), as ratios to plain, one run.

    python benchmarks/jr_overhead.py [--models lenet,ddnet,resnet18] [--devices cpu,cuda] [--steps 30]
                                     [--nproj 1,3,exact]

Each step is the full training step of jacviz.train (forward, CE, penalty, backward, SGD update)
on random [0,1] batches of 100 (timing does not depend on pixel values). Median over --steps
after warm-up. The paper reports ~1.3x for n_proj = 1 (LeNet', GP100) and ~2x (ResNet-18).
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import models  # noqa: E402
from jacviz.jacobian import jacobian_penalty  # noqa: E402


def step_time(model, x, y, n_proj, steps, device) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    std = models.input_std(model)
    times = []
    for i in range(steps + 3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        xr = x.clone().requires_grad_(n_proj != "plain")
        logits = model(xr)
        loss = F.cross_entropy(logits, y)
        if n_proj != "plain":
            loss = loss + 0.005 * std ** 2 * jacobian_penalty(xr, logits, None if n_proj == "exact" else n_proj)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="lenet,ddnet")
    p.add_argument("--devices", default="cpu,cuda")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--nproj", default="1,3,exact", help="penalties to time, e.g. 1 for ResNet-18 on a CPU")
    a = p.parse_args()
    print(f"machine: {platform.node()} {platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}")
    for dev_name in a.devices.split(","):
        if dev_name == "cuda" and not torch.cuda.is_available():
            print("cuda: not available, skipped")
            continue
        device = torch.device(dev_name)
        label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or 'x86_64'})"
        for name in a.models.split(","):
            torch.manual_seed(0)
            model = models.build(name).to(device).train()
            shape = model.input_shape
            x = torch.rand(a.batch, *shape, device=device)
            y = torch.randint(0, 10, (a.batch,), device=device)
            base = step_time(model, x, y, "plain", a.steps, device)
            row = [f"{name:8s} {label}: plain {base * 1e3:7.1f} ms"]
            for n in [v if v == "exact" else int(v) for v in a.nproj.split(",")]:
                t = step_time(model, x, y, n, a.steps if n != "exact" else max(5, a.steps // 3), device)
                row.append(f"n_proj={n}: {t / base:5.2f}x")
            print(" | ".join(row), flush=True)


if __name__ == "__main__":
    main()
