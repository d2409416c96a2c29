"""Does channels_last memory format make a training step faster? A ratio per model and step kind, one run.

    python benchmarks/memory_format.py [--models ddnet,resnet18] [--batch 100,300] [--kinds plain,at,1]
                                       [--steps 5] [--rounds 3] [--threads N] [--device cpu]

Times one eager training step as jacviz.train takes it (forward, cross-entropy, for JR the n_proj = 1
penalty and its double backward, backward, SGD with momentum; `at` adds the FGSM example of eq. 10
first) with the model's weights and the batch in contiguous (NCHW) and in channels_last (NHWC)
memory, and prints contiguous / channels_last (above 1: channels_last is faster). The two formats
alternate for --rounds rounds so that a change in the machine's load hits both; each entry is the
median over --steps steps after 3 warm-up steps (and one untimed round first, which pays for the
kernel set-up of a new shape), random [0, 1] batches (time does not depend on pixel values).

Measured on this project's 2-core Intel Xeon VM (1 torch thread, two 1-thread trainings running
beside it, torch 2.15.0, 2026-12-07; benchmarks/results/memory_format_cpu_2026-12-07.txt),
contiguous / channels_last: LeNet' 1.12-1.82 (plain, FGSM AT and JR steps, batch 10-300); DDNet
1.16-1.36 without JR (batch 100 and 300) but 0.91-0.96 with it, whose double backward runs the
weight-gradient convolutions on batch-transposed tensors that channels_last must copy (in
torch.profiler, a batch-300 JR step spent 0.12 s of 4.87 s in aten::copy_ contiguous, 0.94 s of
4.62 s channels_last); ResNet-18 1.09-1.11.
So jacviz.train.step_memory_format trains LeNet' and DDNet without JR in channels_last on a CPU, and
DDNet JR runs too since their convolutions' input gradients are transposed convolutions (jacviz.jr_conv,
benchmarks/jr_conv.py), which need no copies. This script times PyTorch's own double backward.
Not measured on a GPU, where training keeps the default format.
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
from jacviz.attacks import fgsm  # noqa: E402
from jacviz.jr_conv import transposed_input_grads  # noqa: E402
from jr_overhead import _train_step  # noqa: E402


def train_step(model, opt, x, y, kind: str, std: float) -> None:
    """One step: kind 'plain', 'at' (FGSM example of eq. 10 at a random eps <= 0.01 first) or '1' (JR,
    n_proj = 1); the step itself is jr_overhead's, the one its ratios time."""
    if kind == "at":
        x = fgsm(model, x, y, torch.rand(len(x), device=x.device) * 0.01)
    opt.zero_grad(set_to_none=True)
    _train_step(model, opt, x, y, "plain" if kind in ("plain", "at") else int(kind), std)


def step_time(name: str, batch: int, kind: str, fmt: torch.memory_format, steps: int, dev: torch.device,
              transposed: bool = False) -> float:
    """Median seconds per step of a fresh model (seed 0) with weights and batch in memory format ``fmt``;
    ``transposed``: inside jacviz.jr_conv.transposed_input_grads (benchmarks/jr_conv.py)."""
    torch.manual_seed(0)
    model = models.build(name).to(dev).to(memory_format=fmt).train()
    x = torch.rand(batch, *model.input_shape, device=dev).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=dev)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    std = models.input_std(model)
    with transposed_input_grads(model, enabled=transposed):
        return median_step_seconds(lambda: train_step(model, opt, x, y, kind, std), steps, dev)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="ddnet,resnet18")
    p.add_argument("--batch", default="100,300")
    p.add_argument("--kinds", default="plain,at,1", help="plain, at (FGSM AT), 1 (JR n_proj=1)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    print(header(dev, a.steps, a.rounds))
    print("model     batch kind   contiguous s  channels_last s  contiguous/channels_last")
    for name in a.models.split(","):
        for batch in map(int, a.batch.split(",")):
            for kind in a.kinds.split(","):
                t = {torch.contiguous_format: [], torch.channels_last: []}
                for fmt in t:  # untimed: the first model of a shape pays for oneDNN's kernel set-up
                    step_time(name, batch, kind, fmt, 1, dev)
                for _ in range(a.rounds):
                    for fmt in t:
                        t[fmt].append(step_time(name, batch, kind, fmt, a.steps, dev))
                c, cl = statistics.median(t[torch.contiguous_format]), statistics.median(t[torch.channels_last])
                print(f"{name:9s} {batch:5d} {kind:6s} {c:12.4f}  {cl:15.4f}  {c / cl:8.2f}", flush=True)


if __name__ == "__main__":
    main()
