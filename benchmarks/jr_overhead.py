"""Time per training step: plain SGD vs JR (n_proj = 1, 3, exact), as ratios to plain, one run.

    python benchmarks/jr_overhead.py [--models lenet,ddnet,resnet18] [--devices cpu,cuda] [--steps 30]
                                     [--nproj 1,3,exact] [--batch 100,400] [--profile] [--cuda-graph]
                                     [--flops]

Each step is the full training step of jacviz.train (forward, CE, penalty, backward, SGD update)
on random [0,1] batches of 100 (timing does not depend on pixel values). Median over --steps
after warm-up. The paper reports ~1.3x for n_proj = 1 (LeNet', GP100) and ~2x (ResNet-18).

Why the GPU ratio can differ from the FLOP ratio: at batch 100 a step of these small networks
may be bound by launching kernels (CPU time per op), not by GPU arithmetic, and JR's double
backward launches several times as many ops. Three switches test that on a GPU in one call:
  --batch 100,400   the ratio at several batch sizes (launch-bound ratios fall as batches grow);
  --profile         ops dispatched per step (CPU: aten ops; CUDA: kernels launched), plain vs
                    n_proj = 1, and the ops taking the most time in the JR step (torch.profiler);
                    for a model with BatchNorm (ResNet-18) it also counts them with every
                    BatchNorm replaced by the identity, to show how many ops BN's double
                    backward adds (a diagnostic copy, not a model anyone trains);
  --cuda-graph      also time each step captured once into a CUDA graph and replayed (PyTorch's
                    whole-network capture), which removes per-kernel launch cost (CUDA only).
And one switch bounds the ratio from below on any machine, timing nothing:
  --flops           the convolution and matrix-multiply FLOPs of each step (forward, backward,
                    and JR's double backward), as ratios to plain: where a step's time is set by
                    arithmetic, the JR step cannot cost less than this ratio.
"""
from __future__ import annotations

import argparse
import collections
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import flop_registry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import models  # noqa: E402
from _common import median_step_seconds, sync  # noqa: E402
from jacviz.jacobian import jacobian_penalty  # noqa: E402


def _optimizer(model) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)


def _train_step(model, opt, x, y, n_proj, std) -> None:
    """One training step as jacviz.train takes it (lambda_JR = 0.01, i.e. 0.005 * ||J||^2)."""
    xr = x.clone().requires_grad_(n_proj != "plain")
    logits = model(xr)
    loss = F.cross_entropy(logits, y)
    if n_proj != "plain":
        loss = loss + 0.005 * std ** 2 * jacobian_penalty(xr, logits, None if n_proj == "exact" else n_proj)
    loss.backward()
    opt.step()


def step_time(model, x, y, n_proj, steps, device) -> float:
    """Median seconds per eager training step over ``steps`` steps after 3 warm-up steps."""
    opt, std = _optimizer(model), models.input_std(model)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        _train_step(model, opt, x, y, n_proj, std)
    return median_step_seconds(step, steps, device)


def graph_step_time(model, x, y, n_proj, steps, device) -> float:
    """Median seconds per training step captured once into a CUDA graph and replayed.

    PyTorch's documented whole-network capture: warm-up on a side stream, then capture
    forward, penalty, backward and SGD step; gradients stay allocated (zeroed in the graph).
    Random projections are drawn inside the graph, fresh on each replay.
    """
    opt, std = _optimizer(model), models.input_std(model)
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            opt.zero_grad(set_to_none=False)
            _train_step(model, opt, x, y, n_proj, std)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=False)
    with torch.cuda.graph(graph):
        opt.zero_grad(set_to_none=False)
        _train_step(model, opt, x, y, n_proj, std)
    times = []
    for i in range(steps + 3):
        sync(device)
        t = time.perf_counter()
        graph.replay()
        sync(device)
        if i >= 3:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def profile_step(model, x, y, n_proj, device, top: int = 0) -> collections.Counter:
    """Ops dispatched in one eager training step, counted by name: CUDA kernels on a GPU, aten ops
    on a CPU (``sum(counter.values())`` is the total).

    top > 0 also prints the ``top`` ops with the most self time in that step."""
    from torch.profiler import ProfilerActivity, profile

    opt, std = _optimizer(model), models.input_std(model)
    for _ in range(2):  # warm-up outside the profile (cuDNN autotuning, allocator)
        opt.zero_grad(set_to_none=True)
        _train_step(model, opt, x, y, n_proj, std)
    sync(device)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        opt.zero_grad(set_to_none=True)
        _train_step(model, opt, x, y, n_proj, std)
        sync(device)
    events = prof.events()
    if device.type == "cuda":
        n = collections.Counter(e.name for e in events if str(e.device_type).endswith("CUDA"))
    else:
        n = collections.Counter(e.name for e in events if e.name.startswith("aten::"))
    if top:
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=top))
    return n


class _FlopCount(TorchDispatchMode):
    """Counts every aten op dispatched inside it and the FLOPs of those PyTorch has a formula for
    (convolutions and their backward, mm/addmm/bmm, attention; elementwise ops, BatchNorm and
    reductions count 0). FlopCounterMode itself cannot be used: its module tracker registers
    backward hooks that fail inside torch.autograd.grad ("A leaf node was passed to
    _will_engine_execute_node"), which JR calls."""

    def __init__(self):
        super().__init__()
        self.flops, self.ops = 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.ops += 1
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            shape = lambda t: t.shape if isinstance(t, torch.Tensor) else t  # noqa: E731
            self.flops += formula(*tree_map(shape, args), **tree_map(shape, kwargs), out_val=tree_map(shape, out))
        return out


def flop_step(model, x, y, n_proj) -> tuple[int, int]:
    """(FLOPs, aten ops dispatched) of one training step as _train_step takes it, after one
    warm-up step: FLOPs of convolutions and matrix products only (see _FlopCount), a count that
    depends on shapes alone, so it is the same on every machine and linear in the batch size."""
    opt, std = _optimizer(model), models.input_std(model)
    opt.zero_grad(set_to_none=True)
    _train_step(model, opt, x, y, n_proj, std)
    counter = _FlopCount()
    with counter:
        opt.zero_grad(set_to_none=True)
        _train_step(model, opt, x, y, n_proj, std)
    return counter.flops, counter.ops


def without_batchnorm(model: torch.nn.Module) -> torch.nn.Module | None:
    """A copy of ``model`` with every BatchNorm layer replaced by the identity, or None if it has none."""
    import copy

    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return None
    clone = copy.deepcopy(model)
    for parent in list(clone.modules()):
        for child_name, child in parent.named_children():
            if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
                setattr(parent, child_name, torch.nn.Identity())
    return clone


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="lenet,ddnet")
    p.add_argument("--devices", default="cpu,cuda")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch", default="100", help="batch sizes, comma-separated (default 100, the paper's)")
    p.add_argument("--nproj", default="1,3,exact", help="penalties to time, e.g. 1 for ResNet-18 on a CPU")
    p.add_argument("--profile", action="store_true",
                   help="count ops per step (plain vs n_proj = 1) and list the JR step's 15 costliest ops")
    p.add_argument("--cuda-graph", action="store_true",
                   help="also time steps replayed from a captured CUDA graph (CUDA devices only)")
    p.add_argument("--flops", action="store_true",
                   help="count each step's conv/matmul FLOPs (plain and each --nproj) instead of timing it")
    a = p.parse_args()
    nprojs = [v if v == "exact" else int(v) for v in a.nproj.split(",")]
    print(f"machine: {platform.node()} {platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}")
    for dev_name in a.devices.split(","):
        if dev_name == "cuda" and not torch.cuda.is_available():
            print("cuda: not available, skipped")
            continue
        device = torch.device(dev_name)
        label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or 'x86_64'})"
        for name in a.models.split(","):
            for batch in [int(b) for b in a.batch.split(",")]:
                torch.manual_seed(0)
                model = models.build(name).to(device).train()
                shape = model.input_shape
                x = torch.rand(batch, *shape, device=device)
                y = torch.randint(0, 10, (batch,), device=device)
                if a.flops:
                    f_plain, o_plain = flop_step(model, x, y, "plain")
                    row = [f"{name:8s} batch {batch}: plain {f_plain / 1e9:8.2f} GFLOP ({o_plain} aten ops)"]
                    for n in nprojs:
                        f, o = flop_step(model, x, y, n)
                        row.append(f"n_proj={n}: {f / f_plain:5.2f}x FLOPs ({o / o_plain:5.2f}x ops)")
                    print(" | ".join(row), flush=True)
                    continue
                base = step_time(model, x, y, "plain", a.steps, device)
                row = [f"{name:8s} {label} batch {batch}: plain {base * 1e3:7.1f} ms"]
                for n in nprojs:
                    t = step_time(model, x, y, n, a.steps if n != "exact" else max(5, a.steps // 3), device)
                    row.append(f"n_proj={n}: {t / base:5.2f}x")
                print(" | ".join(row), flush=True)
                if a.cuda_graph and device.type == "cuda":
                    try:
                        gbase = graph_step_time(model, x, y, "plain", a.steps, device)
                        g1 = graph_step_time(model, x, y, 1, a.steps, device)
                    except RuntimeError as exc:  # capture rejects host syncs; say so, keep the other rows
                        print(f"{'':8s} CUDA graph, batch {batch}: capture failed: {exc}", flush=True)
                    else:
                        print(f"{'':8s} CUDA graph, batch {batch}: plain {gbase * 1e3:7.1f} ms "
                              f"({base / gbase:.2f}x faster than eager) | n_proj=1: {g1 / gbase:5.2f}x "
                              f"({g1 * 1e3:.1f} ms)", flush=True)
                elif a.cuda_graph:
                    print(f"{'':8s} CUDA graph: not on {dev_name}, skipped")
                if a.profile:
                    what = "CUDA kernels" if device.type == "cuda" else "aten ops"
                    c_plain = profile_step(model, x, y, "plain", device)
                    print(f"{'':8s} n_proj=1 step, costliest ops by self time:")
                    c_jr = profile_step(model, x, y, 1, device, top=15)
                    n_plain, n_jr = sum(c_plain.values()), sum(c_jr.values())
                    print(f"{'':8s} {what} per step: plain {n_plain}, n_proj=1 {n_jr} "
                          f"({n_jr / max(n_plain, 1):.2f}x)", flush=True)
                    bare = without_batchnorm(model)
                    if bare is not None:
                        cb_plain = profile_step(bare, x, y, "plain", device)
                        cb_jr = profile_step(bare, x, y, 1, device)
                        b_plain, b_jr = sum(cb_plain.values()), sum(cb_jr.values())
                        print(f"{'':8s} {what} per step with BatchNorm replaced by the identity (diagnostic): "
                              f"plain {b_plain}, n_proj=1 {b_jr} ({b_jr / max(b_plain, 1):.2f}x); "
                              f"BatchNorm adds {n_plain - b_plain} to the plain step, {n_jr - b_jr} to the JR step",
                              flush=True)
                        top_added = ", ".join(f"{k.removeprefix('aten::')} {c_jr[k]} (bare {cb_jr[k]})"
                                              for k, _ in (c_jr - cb_jr).most_common(6))
                        print(f"{'':8s} ops BatchNorm adds most to the n_proj=1 step, with BatchNorm (without): "
                              f"{top_added}", flush=True)


if __name__ == "__main__":
    main()
