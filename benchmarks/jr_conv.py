"""Does taking convolutions' input gradient as a transposed convolution (jacviz.jr_conv) make a JR step faster?

    python benchmarks/jr_conv.py [--models lenet,ddnet,resnet18] [--batch 100,300] [--steps 5] [--rounds 3]
                                 [--threads N] [--device cpu] [--formats contiguous,channels_last]

Times one eager JR training step as jacviz.train takes it (forward, cross-entropy, the n_proj = 1
penalty and its double backward, backward, SGD with momentum) with PyTorch's own convolution
backward ('torch') and inside jacviz.jr_conv.transposed_input_grads ('transposed'), each with the
weights and batch in contiguous and in channels_last memory, and a plain step (no JR) in both
formats. Prints the median seconds and, from the same run, torch/transposed per format and each JR
step over the faster plain step. The variants alternate for --rounds rounds so that a change in the
machine's load hits all of them; each entry is the median over --steps steps after 3 warm-up steps
(and one untimed round first, which pays for oneDNN's kernel set-up of a new shape), random [0, 1]
batches (time does not depend on pixel values). Results: benchmarks/results/jr_conv_*.txt.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import header  # noqa: E402
from memory_format import step_time  # noqa: E402

FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def timed(name: str, batch: int, kind: str, fmt: str, transposed: bool, steps: int, dev: torch.device) -> float:
    """Median seconds of a ``kind`` step ('plain' or '1' = JR n_proj 1) of a fresh seed-0 model."""
    return step_time(name, batch, kind, FORMATS[fmt], steps, dev, transposed)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="lenet,ddnet,resnet18")
    p.add_argument("--batch", default="100,300")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--formats", default="contiguous,channels_last", help="memory layouts to time")
    a = p.parse_args(argv)
    formats = a.formats.split(",")
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    print(header(dev, a.steps, a.rounds))
    print("model     batch format         plain s   JR torch s  JR transposed s  torch/transposed  "
          "JR torch/plain  JR transposed/plain")
    variants = [(kind, fmt, tr) for fmt in formats for kind, tr in (("plain", False), ("1", False), ("1", True))]
    for name in a.models.split(","):
        for batch in map(int, a.batch.split(",")):
            t = {v: [] for v in variants}
            for v in variants:
                timed(name, batch, *v, 1, dev)
            for _ in range(a.rounds):
                for v in variants:
                    t[v].append(timed(name, batch, *v, a.steps, dev))
            med = {v: statistics.median(ts) for v, ts in t.items()}
            plain = min(med[("plain", f, False)] for f in formats)
            for f in formats:
                p_, jt, jf = med[("plain", f, False)], med[("1", f, False)], med[("1", f, True)]
                print(f"{name:9s} {batch:5d} {f:13s} {p_:9.4f} {jt:11.4f} {jf:16.4f} {jt / jf:17.2f} "
                      f"{jt / plain:15.2f} {jf / plain:20.2f}", flush=True)


if __name__ == "__main__":
    main()
