"""Datasets as in-memory tensors in [0, 1] pixel space (no Normalize: models normalize inside).

Root folder: the ``JACVIZ_DATA`` environment variable (default ``./data``), in torchvision's own
layout. Files missing there are downloaded with torchvision where the network allows; otherwise a
:class:`DatasetMissingError` names the folder and the files expected.

Decoded arrays are cached in ``$JACVIZ_CACHE`` (default ``~/.cache/jacviz``), keyed by the source
files' paths, sizes and modification times: importing torchvision pulls in ``torch._dynamo``
(1.5-2.5 s here), so with the cache a restarted app never imports it. Set ``JACVIZ_CACHE=off``
to disable; an unreadable or stale cache entry is ignored and rewritten.
"""
from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

DATASETS = ("mnist", "usps", "cifar10")
CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "usps": [str(i) for i in range(10)],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck"],
}
EXPECTED_FILES = {
    "mnist": "MNIST/raw/train-images-idx3-ubyte, MNIST/raw/train-labels-idx1-ubyte, "
             "MNIST/raw/t10k-images-idx3-ubyte, MNIST/raw/t10k-labels-idx1-ubyte",
    "usps": "usps.t.bz2 (test split; usps.bz2 for train)",
    "cifar10": "cifar-10-batches-py/data_batch_1 ... data_batch_5, cifar-10-batches-py/test_batch, "
               "cifar-10-batches-py/batches.meta",
}


class DatasetMissingError(FileNotFoundError):
    """A dataset is neither in the data root nor downloadable."""


def data_root() -> Path:
    """The data folder: ``$JACVIZ_DATA`` or ``./data``."""
    return Path(os.environ.get("JACVIZ_DATA", "./data")).expanduser()


def _offline_cifar10():
    from torchvision import datasets

    class _OfflineCIFAR10(datasets.CIFAR10):
        # Offline copies of the standard cifar-10-batches-py pickles may lack the `filenames` entry,
        # so their md5s differ from torchvision's list although pixels, labels and order are exact.
        # We accept any folder holding the standard pickles; a broken pickle still fails on load.
        def _check_integrity(self) -> bool:
            folder = Path(self.root) / self.base_folder
            names = [n for n, _ in self.train_list + self.test_list]
            return all((folder / n).is_file() for n in names)

    return _OfflineCIFAR10


def source_files(name: str, train: bool, root: Path) -> list[Path]:
    """The files torchvision reads for a split (what the cache key fingerprints)."""
    if name == "mnist":
        pre = "train" if train else "t10k"
        return [root / "MNIST" / "raw" / f"{pre}-images-idx3-ubyte", root / "MNIST" / "raw" / f"{pre}-labels-idx1-ubyte"]
    if name == "usps":
        return [root / ("usps.bz2" if train else "usps.t.bz2")]
    folder = root / "cifar-10-batches-py"
    return [folder / f"data_batch_{i}" for i in range(1, 6)] if train else [folder / "test_batch"]


def _cache_path(name: str, train: bool, root: Path) -> Path | None:
    setting = os.environ.get("JACVIZ_CACHE", "")
    if setting.lower() in ("off", "0", "none"):
        return None
    files = source_files(name, train, root)
    if not all(f.is_file() for f in files):
        return None
    h = hashlib.sha1()
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    folder = Path(setting).expanduser() if setting else Path.home() / ".cache" / "jacviz"
    return folder / f"{name}-{'train' if train else 'test'}-{h.hexdigest()[:16]}.pt"


def _read_cache(path: Path | None):
    if path is None or not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        return obj["data"], obj["targets"]
    except Exception:  # truncated or foreign file: decode again and overwrite it
        return None


def _write_cache(path: Path | None, data, targets) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        torch.save({"data": data, "targets": targets}, tmp)
        os.replace(tmp, path)
    except OSError:  # read-only home: run without the cache
        pass


def _decode(name: str, train: bool, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images as torchvision stores them, int64 labels), from the cache or torchvision."""
    cache = _cache_path(name, train, root)
    hit = _read_cache(cache)
    if hit is not None:
        return hit
    ds = _open(name, train, root)
    data_, targets = torch.as_tensor(ds.data), torch.as_tensor(ds.targets).long()
    _write_cache(cache or _cache_path(name, train, root), data_, targets)  # after a download the files exist
    return data_, targets


def _open(name: str, train: bool, root: Path):
    from torchvision import datasets  # here, not at module level: it imports torch._dynamo (seconds)

    cls = {"mnist": datasets.MNIST, "usps": datasets.USPS, "cifar10": _offline_cifar10()}[name]
    try:
        return cls(str(root), train=train, download=False)
    except (RuntimeError, FileNotFoundError, OSError):
        pass
    try:
        return cls(str(root), train=train, download=True)
    except Exception as err:  # no network, or a broken mirror
        raise DatasetMissingError(
            f"{name} ({'train' if train else 'test'}) is not in {root.resolve()} and could not be "
            f"downloaded ({type(err).__name__}). Put {EXPECTED_FILES[name]} under that folder, "
            f"or set JACVIZ_DATA to a folder that has them (see README, 'Data')."
        ) from err


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, train: bool, root: str) -> tuple[torch.Tensor, torch.Tensor]:
    raw, y = _decode(name, train, Path(root))
    if name == "mnist":
        x = raw.float().div_(255).unsqueeze(1)
    elif name == "usps":
        # torchvision's USPS stores 16x16 uint8; the paper upsamples bilinearly to 28x28 (Sec. 3.1)
        x = raw.float().div_(255).unsqueeze(1)
        x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False).clamp_(0, 1)
    else:
        x = raw.permute(0, 3, 1, 2).float().div_(255).contiguous()
    return x, y.clone()


def load(name: str, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(x, y)``: x float32 (N, C, H, W) in [0, 1], y int64 (N,).

    name: 'mnist' (60k/10k, 1x28x28), 'usps' (test 2,007, upsampled to 1x28x28), 'cifar10'
    (50k/10k, 3x32x32). split: 'train' or 'test'. Tensors are cached; do not modify them in place.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    if split not in ("train", "test"):
        raise ValueError("split must be 'train' or 'test'")
    return _load_cached(name, split == "train", str(data_root()))


def few_shot_indices(y: torch.Tensor, k: int, seed: int, draw: str = "random") -> torch.Tensor:
    """Indices (sorted) of ``k`` samples per class of labels ``y`` (N,) (Table 1): drawn without replacement
    with ``seed`` (draw='random'), or the first k of each class in the order of ``y`` whatever the seed
    (draw='first', an ablation: ``TrainConfig.few_shot_draw``)."""
    from .config import FEW_SHOT_DRAWS
    if draw not in FEW_SHOT_DRAWS:
        raise ValueError(f"draw must be one of {FEW_SHOT_DRAWS}, not {draw!r}")
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        if len(idx) < k:
            raise ValueError(f"class {c} has only {len(idx)} samples, fewer than k={k}")
        picks.append(idx[:k] if draw == "first" else idx[torch.randperm(len(idx), generator=g)[:k]])
    return torch.cat(picks).sort().values
