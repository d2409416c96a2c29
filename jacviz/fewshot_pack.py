"""Carry CIFAR-10's few-shot data to a machine that lacks the dataset, losslessly and small.

Why: the GPU machines lent to this project cannot see ``../shared/data`` and take at most 64 MiB
of upload a call (the working tree included), while CIFAR-10 is 184 MB of pixels. Few-shot runs
(Table S3, k = 1, 3, 10, 30 images per class) read only the images their seed selects plus the test
split, which pack to ~31 MB: the test split (10,000 images) and the union of the selected training
images (4,311 for k = 1..30, seeds 0-14), as uint8 with a per-row horizontal delta and xz.

    python -m jacviz.fewshot_pack pack DEST [--k 1,3,10,30] [--seeds 0-14]   # here (JACVIZ_DATA set)
    python -m jacviz.fewshot_pack unpack DEST ROOT                           # there; then JACVIZ_DATA=ROOT

``unpack`` rebuilds ``ROOT/cifar-10-batches-py`` in the standard pickle format: all labels and the
test split exact, the selected training images exact, every other training image all zeros. It then
checks through :mod:`jacviz.data` that each packed (k, seed) subset and the test split are
byte-identical to the originals (sha256 taken at packing), and writes a ``FEWSHOT_SUBSET_ONLY`` marker
that makes :func:`jacviz.train.fit` refuse all-data training on that folder.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import pickle
import shutil
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

MARKER = "FEWSHOT_SUBSET_ONLY"


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="latin1")
    return np.asarray(d["data"], dtype=np.uint8), np.asarray(d["labels"], dtype=np.uint8)


def _delta(a: np.ndarray) -> bytes:
    """(N, 3072) uint8 -> bytes of the horizontal differences of each 32-pixel row (mod 256)."""
    x = a.reshape(-1, 3, 32, 32).astype(np.int16)
    return np.diff(x, axis=3, prepend=0).astype(np.uint8).tobytes()


def _undelta(b: bytes) -> np.ndarray:
    d = np.frombuffer(b, dtype=np.uint8).reshape(-1, 3, 32, 32)
    return np.cumsum(d, axis=3, dtype=np.uint8).reshape(len(d), 3072)  # uint8 wrap-around undoes the delta


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def pack(dest: str | Path, ks: Sequence[int] = (1, 3, 10, 30), seeds: Sequence[int] = range(15),
         preset: int = 9 | lzma.PRESET_EXTREME) -> dict:
    """Write the few-shot package for ``ks`` x ``seeds`` to ``dest``; returns its summary
    (images carried, bytes written). Reads CIFAR-10 from ``$JACVIZ_DATA``."""
    import torch
    from . import data
    src = data.data_root() / "cifar-10-batches-py"
    parts = [_read_batch(src / f"data_batch_{i}") for i in range(1, 6)]
    xtr = np.concatenate([p[0] for p in parts])
    ytr = np.concatenate([p[1] for p in parts])
    xte, yte = _read_batch(src / "test_batch")
    y = torch.as_tensor(ytr.astype(np.int64))
    sel, hashes = set(), {}
    for k in ks:
        for s in seeds:
            idx = data.few_shot_indices(y, k, s).numpy()
            sel.update(idx.tolist())
            hashes[f"{k}:{s}"] = _sha(xtr[idx])
    idx = np.array(sorted(sel), dtype=np.int64)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    np.savez(dest / "labels.npz", idx=idx, ytr=ytr, yte=yte)
    (dest / "train_selected.xz").write_bytes(lzma.compress(_delta(xtr[idx]), preset=preset))
    (dest / "test.xz").write_bytes(lzma.compress(_delta(xte), preset=preset))
    (dest / "hashes.json").write_text(json.dumps({"fewshot": hashes, "test": _sha(xte), "n_selected": len(idx)}))
    shutil.copy(src / "batches.meta", dest / "batches.meta")
    return {"images": len(idx), "bytes": sum(f.stat().st_size for f in dest.iterdir())}


def unpack(src: str | Path, root: str | Path) -> Path:
    """Rebuild ``root/cifar-10-batches-py`` from a package (see the module docstring); returns that folder."""
    src, out = Path(src), Path(root) / "cifar-10-batches-py"
    out.mkdir(parents=True, exist_ok=True)
    lab = np.load(src / "labels.npz")
    xtr = np.zeros((len(lab["ytr"]), 3072), np.uint8)
    xtr[lab["idx"]] = _undelta(lzma.decompress((src / "train_selected.xz").read_bytes()))
    xte = _undelta(lzma.decompress((src / "test.xz").read_bytes()))
    ytr, yte = lab["ytr"].astype(int).tolist(), lab["yte"].astype(int).tolist()
    n = len(ytr) // 5
    for i in range(5):
        with open(out / f"data_batch_{i + 1}", "wb") as f:
            pickle.dump({"batch_label": f"training batch {i + 1} of 5", "labels": ytr[i * n:(i + 1) * n],
                         "data": xtr[i * n:(i + 1) * n]}, f)
    with open(out / "test_batch", "wb") as f:
        pickle.dump({"batch_label": "testing batch 1 of 1", "labels": yte, "data": xte}, f)
    shutil.copy(src / "batches.meta", out / "batches.meta")
    (out / MARKER).write_text("Training images outside the packed few-shot subsets are zeros: few-shot runs only.\n")
    return out


def verify(src: str | Path) -> int:
    """Check through jacviz.data (``$JACVIZ_DATA``) that every packed few-shot subset and the test split
    are byte-identical to what was packed; returns the number of subsets checked, raises on a mismatch."""
    import torch
    from . import data
    h = json.loads((Path(src) / "hashes.json").read_text())
    to_u8 = lambda x: (x * 255).round().to(torch.uint8).reshape(len(x), 3072).numpy()  # noqa: E731 (C,H,W order)
    if _sha(to_u8(data.load("cifar10", "test")[0])) != h["test"]:
        raise ValueError("the rebuilt test split differs from the packed one")
    x, y = data.load("cifar10", "train")
    for key, want in h["fewshot"].items():
        k, s = map(int, key.split(":"))
        if _sha(to_u8(x[data.few_shot_indices(y, k, s)])) != want:
            raise ValueError(f"few-shot subset k={k} seed {s} differs from the packed one")
    return len(h["fewshot"])


def is_subset_only(root: str | Path) -> bool:
    """Whether ``root`` holds a CIFAR-10 rebuilt by :func:`unpack` (few-shot subsets only)."""
    return (Path(root) / "cifar-10-batches-py" / MARKER).exists()


def main(argv: Sequence[str] | None = None) -> int:
    from .grid import _ints
    p = argparse.ArgumentParser(prog="python -m jacviz.fewshot_pack", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack", help="write the package (reads $JACVIZ_DATA)")
    a.add_argument("dest")
    a.add_argument("--k", type=_ints, default=[1, 3, 10, 30])
    a.add_argument("--seeds", type=_ints, default=list(range(15)))
    b = sub.add_parser("unpack", help="rebuild ROOT/cifar-10-batches-py and verify it")
    b.add_argument("src")
    b.add_argument("root")
    args = p.parse_args(argv)
    if args.cmd == "pack":
        info = pack(args.dest, args.k, args.seeds)
        print(f"packed {info['images']} training images + the test split into {args.dest} ({info['bytes'] / 2**20:.1f} MiB)")
        return 0
    import os
    out = unpack(args.src, args.root)
    os.environ["JACVIZ_DATA"] = str(args.root)
    n = verify(args.src)
    print(f"rebuilt {out}; verified the test split and {n} few-shot subsets byte-identical to the originals")
    return 0


if __name__ == "__main__":
    sys.exit(main())
