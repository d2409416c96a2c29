"""What machine a result came from: the CPU model, recorded beside every run and robustness result.

CPU training is bit-identical only on the same kind of CPU at the same torch thread count (oneDNN
and BLAS pick kernels by instruction set, and threads change the order of float sums), so the
results files name the CPU model, not only the architecture ``platform.machine()`` gives."""
from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (e.g. 'Intel(R) Xeon(R) Processor'), else
    ``platform.processor()`` or ``platform.machine()`` (e.g. 'x86_64') where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
