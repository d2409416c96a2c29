"""Decision-cell planes: dense vs adaptive grid evaluation, and the in-plane radius, for LeNet'.

    python benchmarks/planes.py [--checkpoint PATH] [--repeats 5] [--resolutions 201,101]
                                [--extents 10,25] [--devices cpu,cuda] [--threads N]

Prints the machine (platform, CPU count, torch version and threads, device name), then per
device, window half-width and resolution: the median wall time of one plane (one model) over
--repeats runs (wall and process-CPU time), dense and adaptive side by side with their model-evaluation counts, the
speed-up, and how many grid labels the adaptive result shares with the dense one. Each run
covers the same four (test sample, random plane) cases; the time reported is the median over
runs of the mean time per plane. Then the time and evaluation count of the in-plane radius.
Without --checkpoint the model is a LeNet' trained here with the test fixtures' recipe (400 SGD
steps, batch 100, lr 0.05, momentum 0.9, seed 0; ~97% test accuracy, a few seconds): a
random-init network has unrealistically simple cells. Numbers depend on the machine's load:
compare within one run.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jacviz import cells, data  # noqa: E402
from _common import quick_lenet, sync  # noqa: E402

CASES = [(0, 0), (1, 1), (2, 2), (3, 3)]  # (test sample index, random plane seed)


def time_modes(model, x, planes, extent, resolution, repeats, dev, modes=("dense", "adaptive")):
    """Per mode: median over runs of the mean wall and process-CPU seconds per plane, and the
    evaluation counts and label maps of run 1. The modes alternate within every run, so load
    from other processes hits both alike; CPU time (all threads of this process) is less
    sensitive than wall time to processes competing for the cores."""
    for mode in modes:  # warm-up
        cells.decision_plane(model, x[CASES[0][0]], planes[0], extent, resolution, mode=mode)
    res = {mode: ([], [], [], []) for mode in modes}
    for r in range(repeats):
        for mode in modes:
            wall, cpu, evals, maps = res[mode]
            sync(dev)
            t, c = time.perf_counter(), time.process_time()
            out = [cells.decision_plane(model, x[i], p, extent, resolution, mode=mode)[0]
                   for (i, _), p in zip(CASES, planes)]
            sync(dev)
            wall.append((time.perf_counter() - t) / len(CASES))
            cpu.append((time.process_time() - c) / len(CASES))
            if r == 0:
                evals += [m.n_evals for m in out]
                maps += [m.labels for m in out]
    return {mode: (statistics.median(w), statistics.median(c), e, m) for mode, (w, c, e, m) in res.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="jacviz LeNet' checkpoint (default: train one here)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--resolutions", default="201,101")
    p.add_argument("--extents", default="10,25", help="window half-widths, L2 pixel units")
    p.add_argument("--devices", default=None, help="default: cpu, plus cuda when available")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    devices = a.devices.split(",") if a.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"machine: {platform.platform()}; {platform.processor() or platform.machine()}; "
          f"os.cpu_count()={os.cpu_count()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    if torch.cuda.is_available():
        print(f"cuda: {torch.cuda.get_device_name(0)}")
    try:
        print(f"load average (1, 5, 15 min): {os.getloadavg()}")
    except OSError:
        pass

    t = time.perf_counter()
    if a.checkpoint:
        from jacviz import checkpoints

        ck = checkpoints.load(a.checkpoint)
        model, what = ck.model, f"checkpoint {a.checkpoint} ({ck.config.label()})"
    else:
        model, what = quick_lenet(), "LeNet' trained here, 400 steps"
    print(f"model: {what} [{time.perf_counter() - t:.1f} s]")
    x, _ = data.load("mnist", "test")
    planes = [cells.random_plane(x[i], s) for i, s in CASES]

    for name in devices:
        dev = torch.device(name)
        m = model.to(dev)
        print(f"\n== device {dev} ==")
        print("seconds per plane (one model): wall / process CPU; evals: model evaluations per plane")
        print(f"{'extent':>6} {'R':>4} | {'dense wall/cpu s':>16} {'evals':>6} | {'adaptive wall/cpu s':>19} "
              f"{'evals':>6} | {'speed-up':>8} {'eval ratio':>10} | labels equal to dense (worst plane)")
        for extent in [float(e) for e in a.extents.split(",")]:
            for R in [int(r) for r in a.resolutions.split(",")]:
                res = time_modes(m, x, planes, extent, R, a.repeats, dev)
                (td, cd, ed, md), (ta, ca, ea, ma) = res["dense"], res["adaptive"]
                agree = min(float((u == v).mean()) for u, v in zip(md, ma))
                print(f"{extent:6g} {R:4d} | {td:7.3f} / {cd:6.3f} {np.mean(ed):6.0f} | {ta:9.3f} / {ca:7.3f} "
                      f"{np.mean(ea):6.0f} | {td / ta:7.2f}x {np.mean(ed) / np.mean(ea):9.2f}x | {100 * agree:.3f}%")
        for extent in [float(e) for e in a.extents.split(",")]:
            max_r = float(np.hypot(extent, extent))
            times, evals, radii = [], [], []
            for r in range(a.repeats):
                sync(dev)
                t = time.perf_counter()
                bs = [cells.in_plane_boundary(m, x[i], p, max_radius=max_r) for (i, _), p in zip(CASES, planes)]
                sync(dev)
                times.append((time.perf_counter() - t) / len(CASES))
                evals, radii = [b.n_evals for b in bs], [b.radius for b in bs]
            print(f"in-plane radius, max_radius {max_r:.3g}: {statistics.median(times):.3f} s per plane, "
                  f"{np.mean(evals):.0f} evals; radii {', '.join(f'{r:.3f}' for r in radii)}")
    model.to("cpu")
    return 0


if __name__ == "__main__":
    sys.exit(main())
