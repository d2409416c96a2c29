"""Attack throughput on LeNet' / MNIST, and the time for CW-L2 fooling distances on N samples.

    python benchmarks/attacks.py [--n 1000] [--batch 500] [--cw-preset paper|fast] [--checkpoint PATH]

Prints the machine (platform, CPU count, torch version and threads, device name) and, per
device (CPU, and CUDA when present), samples/s of: white noise (eq. 9), FGSM (eq. 10),
one PGD step and the paper's 40-step PGD, one CW Adam step; then the wall time of
``fooling_distances(..., "cw")`` on the first N MNIST test samples. Without --checkpoint the
model is a LeNet' trained here for 300 SGD steps (a few seconds), so early aborts in CW behave as
on a trained model. Numbers depend on the load of the machine: compare within one run.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jacviz import attacks as A  # noqa: E402
from jacviz import data  # noqa: E402
from jacviz import robustness as R  # noqa: E402
from _common import quick_lenet, sync  # noqa: E402


def timed(fn, dev, repeat: int = 3) -> float:
    fn()  # warm-up (CUDA kernels, allocator)
    sync(dev)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync(dev)
        best = min(best, time.perf_counter() - t)
    return best


def machine(dev: torch.device) -> str:
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine())
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return (f"{platform.platform()}; {os.cpu_count()} CPUs (load average {load}); torch {torch.__version__} "
            f"({torch.get_num_threads()} threads); device {dev} = {name}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="samples for the CW fooling-distance timing")
    p.add_argument("--batch", type=int, default=500, help="batch size for throughput and CW")
    p.add_argument("--cw-preset", choices=["paper", "fast"], default="fast")
    p.add_argument("--checkpoint", default=None, help="a jacviz checkpoint instead of the quick LeNet'")
    p.add_argument("--cpu-only", action="store_true")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's). On a CPU shared with other jobs, 1 thread "
                        "can be many times faster than oversubscribed OpenMP threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.checkpoint:
        from jacviz.checkpoints import load
        model = load(args.checkpoint).model
        what = f"checkpoint {args.checkpoint}"
    else:
        t = time.perf_counter()
        model = quick_lenet(steps=300)
        what = f"LeNet' trained 300 steps here ({time.perf_counter() - t:.1f} s)"
    xt, yt = data.load("mnist", "test")
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.cpu_only:
        devices.append(torch.device("cuda"))
    cw = A.CW_PAPER if args.cw_preset == "paper" else A.CW_FAST
    print(f"model: {what}")
    for dev in devices:
        m = model.to(dev).eval()
        x, y = xt[: args.batch].to(dev), yt[: args.batch].to(dev)
        B = len(x)
        g = torch.Generator(device=dev).manual_seed(0)
        print(f"\n== {machine(dev)}")
        print(f"throughput, batch {B} (samples/s; best of 3):")
        rows = [
            ("white noise + forward (eq. 9)", lambda: m(A.white_noise(x, 0.3, generator=g)), 1),
            ("FGSM (eq. 10), 1 gradient", lambda: A.fgsm(m, x, y, 0.1), 1),
            ("PGD, 1 step of 1/255", lambda: A.pgd(m, x, y, 1), 1),
            ("PGD, 40 steps (Fig. 3b)", lambda: A.pgd(m, x, y, 40), 1),
            ("CW-L2, 1 round x 20 Adam steps", lambda: A.cw_l2(m, x, y, steps=20, binary_steps=1, abort_early=False), 20),
        ]
        for name, fn, inner in rows:
            with torch.no_grad() if "noise" in name else torch.enable_grad():
                dt = timed(fn, dev)
            extra = f"   ({B * inner / dt:10.0f} sample-steps/s)" if inner > 1 else ""
            print(f"  {name:34s} {B / dt:10.0f}{extra}")
        n = min(args.n, len(xt))
        xs, ys = xt[:n], yt[:n]
        sync(dev)
        t = time.perf_counter()
        d = R.fooling_distances(m, xs, ys, "cw", batch_size=args.batch, cw_kwargs=cw)
        sync(dev)
        dt = time.perf_counter() - t
        s = R.summarize(d)
        print(f"CW-L2 fooling distances ({args.cw_preset}: {cw}) on {n} MNIST test samples: {dt:.1f} s "
              f"({n / dt:.1f} samples/s); median L2 {s['median']:.3f}, never fooled {100 * s['fraction_never_fooled']:.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
