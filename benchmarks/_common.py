"""Pieces shared by the benchmark scripts (run as `python benchmarks/<name>.py`)."""
from __future__ import annotations

import platform
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

import models
from jacviz import data
from jacviz.machine import cpu_model


def quick_lenet(steps: int = 400, seed: int = 0) -> torch.nn.Module:
    """LeNet' trained like tests/conftest.py::_quick_train(0.0): plain SGD on real MNIST."""
    x, y = data.load("mnist", "train")
    torch.manual_seed(seed)
    model = models.build("lenet")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (100,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def sync(dev: torch.device) -> None:
    """Wait for queued CUDA work so wall-clock timings are real."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def median_step_seconds(step: Callable[[], None], steps: int, dev: torch.device, warmup: int = 3) -> float:
    """Median wall seconds of ``step()`` over ``steps`` calls after ``warmup`` untimed ones (CUDA synced)."""
    times = []
    for i in range(steps + warmup):
        sync(dev)
        t = time.perf_counter()
        step()
        sync(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def header(dev: torch.device, steps: int, rounds: int) -> str:
    """'# <machine>, torch <version>, <n> thread(s), <date time>; median of <steps> steps, <rounds> alternating
    rounds': the first line of a results file of the alternating-rounds benchmarks."""
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{cpu_model()} ({platform.machine()})"
    return (f"# {where}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
            f"{time.strftime('%Y-%m-%d %H:%M')}; median of {steps} steps, {rounds} alternating rounds")
