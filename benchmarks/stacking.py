"""Train S small models at once by stacking them (torch.func.vmap), or one after another? A ratio, one run.

    python benchmarks/stacking.py [--models lenet,ddnet] [--devices cpu,cuda] [--stack 5,15] [--batch 10,30,100]

Few-shot runs (Table 1 / S3: k images per class, full batch of 10k, 10,000 iterations, 15 draws a
cell) are small enough that one run uses little of a GPU: `grid --workers N` runs N processes at once,
and on an NVIDIA H200 14 of them made only ~2x the progress of one (2026-12-04). Stacking the S draws'
weights and running one vmapped JR training step for all of them is the other way to fill the device.
This times a full JR step (forward, CE, the n_proj = 1 penalty w.r.t. the normalized input, backward,
SGD with momentum) for S models: S sequential steps of jacviz's own kind against one stacked step,
and prints the ratio stacked / sequential (below 1: stacking is faster). Median over --steps after
warm-up, random [0, 1] batches (timing does not depend on pixel values), no dropout.

Measured here (2-core Intel Xeon VM, torch 2.15.0, 1 thread, nothing else running, 2026-12-06;
benchmarks/results/stacking_cpu_2026-12-06.txt): stacked / sequential 0.74-0.93 for LeNet' at batch 10
(S = 15, 5), 1.12-1.20 at batch 30, and 1.32-1.60 for DDNet at batch 10-30, whose steps are bound by
arithmetic on a CPU. So no stacked trainer for the CPU; whether one pays on a GPU is what
`reproduction/gpu_call.sh` measures (DDNet, batches 30-300).
"""
from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, stack_module_state, vjp, vmap

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import models  # noqa: E402
from _common import sync  # noqa: E402
from jacviz.jacobian import _unit_vectors  # noqa: E402
from jr_overhead import _optimizer, _train_step  # noqa: E402

LAMBDA_JR, LR, MOMENTUM = 0.01, 1e-3, 0.9  # as jr_overhead's step (its 0.005 * ||J||^2 is LAMBDA_JR / 2)


def stacked_grad_fn(template: torch.nn.Module, lam: float = LAMBDA_JR):
    """(params, x, y, v) -> grads for S stacked models in one call: vmap over the leading axis of all four.

    params: {name: (S, *shape)} (``stack_module_state``); x: (S, B, *input_shape) pixels in [0, 1];
    y: (S, B) labels; v: (S, B, C) unit projection vectors. Per model, the loss is jacviz.train's:
    CE + lam/2 * C * mean_b |v_b . J_b|^2 * std^2 (eqs. 5, 7-8, Jacobian w.r.t. the normalized input)."""
    std2 = float(models.input_std(template)) ** 2
    buffers = dict(template.named_buffers())

    def loss(p, x, y, v):
        logits, pull = vjp(lambda xi: functional_call(template, (p, buffers), (xi,)), x)
        (jv,) = pull(v)
        jr = v.shape[-1] * jv.pow(2).flatten(1).sum(1).mean() * std2
        return F.cross_entropy(logits, y) + lam / 2 * jr

    return vmap(grad(loss))


def time_it(fn, dev, steps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    sync(dev)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        sync(dev)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench(name: str, dev: torch.device, S: int, B: int, steps: int) -> dict:
    torch.manual_seed(0)
    ms = [models.build(name).to(dev).train() for _ in range(S)]
    params, _ = stack_module_state(ms)
    params = {k: p.detach() for k, p in params.items()}
    bufs = {k: torch.zeros_like(p) for k, p in params.items()}
    template = copy.deepcopy(ms[0])
    x = torch.rand(S, B, *ms[0].input_shape, device=dev)
    y = torch.randint(0, 10, (S, B), device=dev)
    v = _unit_vectors((S, B, 10), x)
    step_grads = stacked_grad_fn(template)
    opts = [_optimizer(m) for m in ms]
    std = models.input_std(ms[0])

    def stacked():
        g = step_grads(params, x, y, v)
        for k in params:  # SGD with momentum, as torch.optim.SGD (dampening 0, no weight decay)
            bufs[k].mul_(MOMENTUM).add_(g[k])
            params[k].sub_(LR * bufs[k])

    def sequential():  # benchmarks/jr_overhead.py's step, one model after another
        for i, (m, o) in enumerate(zip(ms, opts)):
            o.zero_grad(set_to_none=True)
            _train_step(m, o, x[i], y[i], 1, std)

    t_seq, t_stk = time_it(sequential, dev, steps), time_it(stacked, dev, steps)
    return {"model": name, "device": str(dev), "S": S, "B": B, "sequential_ms": 1e3 * t_seq,
            "stacked_ms": 1e3 * t_stk, "ratio": t_stk / t_seq}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="lenet,ddnet")
    p.add_argument("--devices", default="cpu,cuda")
    p.add_argument("--stack", default="5,15", help="models trained at once, comma-separated")
    p.add_argument("--batch", default="10,30,100", help="full-batch sizes (10 k: k = 1, 3, 10)")
    p.add_argument("--steps", type=int, default=10)
    a = p.parse_args(argv)
    devs = [torch.device(d) for d in a.devices.split(",") if d != "cuda" or torch.cuda.is_available()]
    print(f"torch {torch.__version__}, {platform.machine()}, threads {torch.get_num_threads()}, "
          + ", ".join(torch.cuda.get_device_name(d) if d.type == "cuda" else "cpu" for d in devs))
    print(f"{'model':6s} {'device':6s} {'S':>3s} {'B':>4s} {'sequential ms':>14s} {'stacked ms':>11s} {'stacked/seq':>11s}")
    for name in a.models.split(","):
        for dev in devs:
            for S in map(int, a.stack.split(",")):
                for B in map(int, a.batch.split(",")):
                    r = bench(name, dev, S, B, a.steps)
                    print(f"{name:6s} {dev.type:6s} {S:3d} {B:4d} {r['sequential_ms']:14.1f} {r['stacked_ms']:11.1f} "
                          f"{r['ratio']:11.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
