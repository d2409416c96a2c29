"""Checkpoint files: atomic save, safe (weights_only) load that rebuilds the model from its config.

A checkpoint is a dict saved with ``torch.save``: format tag, the TrainConfig as a plain dict,
the model ``state_dict`` and what training measured (metrics, per-evaluation history, torch
version, device, wall time). File name: ``<config.key()>.pt``.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import models
from .config import TrainConfig

FORMAT = "jacviz-checkpoint-v1"
REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_DIR = REPO_ROOT / "checkpoints"


class CheckpointError(ValueError):
    """A file that is not a usable jacviz checkpoint; the message says why."""


@dataclass
class Checkpoint:
    path: Path
    model: nn.Module
    config: TrainConfig
    metrics: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.config.label()


def user_dir() -> Path:
    """Where the app and CLI put newly trained models: ``$JACVIZ_USER_CHECKPOINTS`` or ./user_checkpoints."""
    return Path(os.environ.get("JACVIZ_USER_CHECKPOINTS", REPO_ROOT / "user_checkpoints"))


def atomic_torch_save(obj, path: Path) -> None:
    """Write to a temporary file in the same folder, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save(path: Path, model: nn.Module, config: TrainConfig, metrics: dict, history: list,
         meta: dict | None = None, half: bool = False) -> Path:
    """Save a final checkpoint (weights on CPU, no optimizer state).

    half: store floating-point weights as float16 (half the size, for shipping large models such
    as DDNet, 4.6 MB in float32); ``load`` casts them back to float32 (``weights_dtype`` in meta).
    """
    state = {k: (v.detach().to("cpu", torch.float16) if half and v.is_floating_point() else v.detach().to("cpu"))
             for k, v in model.state_dict().items()}
    meta = dict(meta or {}, weights_dtype="float16" if half else "float32")
    payload = {"format": FORMAT, "config": config.to_dict(), "state_dict": state,
               "metrics": metrics, "history": history, "meta": meta}
    atomic_torch_save(payload, Path(path))
    return Path(path)


def _read(path: Path, map_location="cpu") -> dict:
    try:
        # TorchVersion (a str subclass) is allowlisted: files written before train.py stored the
        # torch version as a plain str hold one in their metadata.
        with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{Path(path).name}: cannot be read as a safe torch file "
                              f"({type(err).__name__}: {str(err).splitlines()[0][:120]})") from err
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{Path(path).name}: not a jacviz checkpoint (no '{FORMAT}' tag)")
    return obj


def load(path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load with ``weights_only=True`` and rebuild the model from the stored config (eval mode)."""
    path = Path(path)
    obj = _read(path)
    try:
        config = TrainConfig.from_dict(obj["config"])
        model = models.build(config.model, dropout=config.dropout)
        models.apply_input_norm(model, config.input_norm)  # the state dict carries it too; files predating it do not
        # float16 weights (save(half=True)) are cast to the float32 parameters by load_state_dict
        model.load_state_dict(obj["state_dict"])
    except Exception as err:
        raise CheckpointError(f"{path.name}: config or weights do not match "
                              f"({type(err).__name__}: {str(err).splitlines()[0][:160]})") from err
    model.to(device).eval()
    return Checkpoint(path, model, config, obj.get("metrics", {}), obj.get("history", []), obj.get("meta", {}))


def scan(*folders) -> tuple[list[Checkpoint], list[tuple[Path, str]]]:
    """Load every ``*.pt`` in the folders (default: shipped and user folders).

    Returns (usable checkpoints sorted by folder then label, [(path, reason)] for unusable files).
    Resume files (``*.resume.pt``) are skipped.
    """
    folders = folders or (SHIPPED_DIR, user_dir())
    good, bad = [], []
    for folder in folders:
        for p in sorted(Path(folder).glob("*.pt")):
            if p.name.endswith(".resume.pt"):
                continue
            try:
                good.append(load(p))
            except CheckpointError as err:
                bad.append((p, str(err)))
    return good, bad


def ship(path, folder: Path = SHIPPED_DIR, half: bool = False, n_check: int = 1000) -> Path:
    """Copy a finished checkpoint into ``folder`` (the shipped one by default), optionally with
    float16 weights; returns the new path. With ``half``, the float32 model's accuracy on the first
    ``n_check`` test images is stored in ``meta['float32_check']`` so a test can show the float16
    copy predicts the same (tests/test_cifar.py)."""
    from . import data
    ck = load(path)
    meta = dict(ck.meta)
    if half:
        x, y = data.load(ck.config.dataset, "test")
        with torch.no_grad():
            pred = torch.cat([ck.model(x[s:min(s + 500, n_check)]).argmax(1) for s in range(0, n_check, 500)])
        meta["float32_check"] = {"n": n_check, "test_acc": (pred == y[:n_check]).float().mean().item()}
    return save(Path(folder) / Path(path).name, ck.model, ck.config, ck.metrics, ck.history, meta, half=half)


def write_manifest(folder: Path = SHIPPED_DIR) -> Path:
    """Write ``manifest.json``: for each checkpoint, its label, how it was trained and what it measured."""
    good, bad = scan(folder)
    entries = [{"file": c.path.name, "label": c.label, "key": c.config.key(),
                "trained": c.config.describe(), "config": c.config.to_dict(),
                "metrics": c.metrics, "meta": c.meta} for c in good]
    manifest = {"checkpoints": entries, "unusable": [{"file": p.name, "reason": r} for p, r in bad]}
    out = Path(folder) / "manifest.json"
    out.write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")
    return out
