"""jacviz.fewshot_pack: the few-shot CIFAR-10 package rebuilds the exact images the runs read, and
nothing trains on the zeros that stand in for the images it leaves out."""
from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pytest
import torch

import models
from jacviz import data, fewshot_pack, grid
from jacviz.train import fit


def _original(name: str):
    with open(data.data_root() / "cifar-10-batches-py" / name, "rb") as f:
        d = pickle.load(f, encoding="latin1")
    return np.asarray(d["data"], np.uint8), list(d["labels"])


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    dest = tmp_path_factory.mktemp("pack")
    info = fewshot_pack.pack(dest, ks=(1, 3), seeds=(0, 1), preset=1)
    root = tmp_path_factory.mktemp("root")
    fewshot_pack.unpack(dest, root)
    return dest, root, info


def test_unpacked_folder_holds_the_exact_subsets_labels_and_test_split(package, monkeypatch):
    dest, root, info = package
    y_all = np.concatenate([_original(f"data_batch_{i}")[1] for i in range(1, 6)])
    import torch
    wanted = sorted({i for k in (1, 3) for s in (0, 1)
                     for i in data.few_shot_indices(torch.as_tensor(y_all), k, s).tolist()})
    assert info["images"] == len(wanted) and 10 <= len(wanted) <= 80
    batch1, _ = _original("data_batch_1")
    out = root / "cifar-10-batches-py"
    with open(out / "data_batch_1", "rb") as f:
        rebuilt = pickle.load(f, encoding="latin1")
    assert rebuilt["labels"] == _original("data_batch_1")[1]  # every label, in order
    in1 = [i for i in wanted if i < 10000]
    assert np.array_equal(rebuilt["data"][in1], batch1[in1])  # the selected images, exact
    others = np.setdiff1d(np.arange(10000), in1)
    assert not rebuilt["data"][others].any()  # the rest are zeros, never read by a few-shot run
    with open(out / "test_batch", "rb") as f:
        assert np.array_equal(pickle.load(f, encoding="latin1")["data"], _original("test_batch")[0])
    monkeypatch.setenv("JACVIZ_DATA", str(root))
    monkeypatch.setenv("JACVIZ_CACHE", "off")
    assert fewshot_pack.verify(dest) == 4 and fewshot_pack.is_subset_only(root)


def test_verify_catches_a_subset_that_differs(package, monkeypatch, tmp_path):
    dest, root, _ = package
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in dest.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    h = json.loads((bad / "hashes.json").read_text())
    h["fewshot"]["3:1"] = "0" * 64
    (bad / "hashes.json").write_text(json.dumps(h))
    monkeypatch.setenv("JACVIZ_DATA", str(root))
    monkeypatch.setenv("JACVIZ_CACHE", "off")
    with pytest.raises(ValueError, match="k=3 seed 1"):
        fewshot_pack.verify(bad)


def test_all_data_training_refuses_the_subset_folder_and_few_shot_trains(package, monkeypatch):
    _, root, _ = package
    monkeypatch.setenv("JACVIZ_DATA", str(root))
    monkeypatch.setenv("JACVIZ_CACHE", "off")
    full = grid.variant_config("none", 0, "short", dataset="cifar10", device="cpu")
    with pytest.raises(data.DatasetMissingError, match="few-shot subsets"):
        fit(full, stop_after=1, show_progress=False)
    few = grid.fewshot_config("none", 1, 0, dataset="cifar10")
    batches = []  # what the steps train on: the draw's real images, none of the zeros standing in for the rest
    real_build = models.build

    def build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model.register_forward_pre_hook(
            lambda mod, a: batches.append(a[0].detach().clone()) if mod.training else None)
        return model
    monkeypatch.setattr(models, "build", build)
    res = fit(dataclasses.replace(few, device="cpu"), stop_after=2, show_progress=False)
    assert not res.finished and res.model is not None
    monkeypatch.undo()  # the real folder again
    x_real, y_real = data.load("cifar10", "train")
    drawn = x_real[data.few_shot_indices(y_real, 1, 0)]
    assert len(batches) == 2 and all(len(b) == 10 for b in batches)
    for b in batches:
        assert all(img.abs().sum() > 0 and any(torch.equal(img, d) for d in drawn) for img in b)
