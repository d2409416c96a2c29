"""Datasets as in-memory tensors in [0, 1] pixel space (no Normalize: models normalize inside).

Root folder: the ``JACVIZ_DATA`` environment variable (default ``./data``), in torchvision's own
layout. Files missing there are downloaded with torchvision where the network allows; otherwise a
:class:`DatasetMissingError` names the folder and the files expected.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision import datasets

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


class _OfflineCIFAR10(datasets.CIFAR10):
    # Offline copies of the standard cifar-10-batches-py pickles may lack the `filenames` entry,
    # so their md5s differ from torchvision's list although pixels, labels and order are exact.
    # We accept any folder holding the standard pickles; a broken pickle still fails on load.
    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        names = [n for n, _ in self.train_list + self.test_list]
        return all((folder / n).is_file() for n in names)


def _open(name: str, train: bool, root: Path):
    cls = {"mnist": datasets.MNIST, "usps": datasets.USPS, "cifar10": _OfflineCIFAR10}[name]
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
    ds = _open(name, train, Path(root))
    if name == "mnist":
        x = ds.data.float().div_(255).unsqueeze(1)
        y = ds.targets.clone().long()
    elif name == "usps":
        # torchvision's USPS stores 16x16 uint8; the paper upsamples bilinearly to 28x28 (Sec. 3.1)
        x = torch.as_tensor(ds.data).float().div_(255).unsqueeze(1)
        x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False).clamp_(0, 1)
        y = torch.as_tensor(ds.targets).long()
    else:
        x = torch.as_tensor(ds.data).permute(0, 3, 1, 2).float().div_(255).contiguous()
        y = torch.as_tensor(ds.targets).long()
    return x, y


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


def few_shot_indices(y: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Indices of ``k`` samples per class drawn without replacement with ``seed`` (Table 1)."""
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        if len(idx) < k:
            raise ValueError(f"class {c} has only {len(idx)} samples, fewer than k={k}")
        picks.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    return torch.cat(picks).sort().values
