"""Loaders on the real datasets (JACVIZ_DATA; a missing dataset fails, it is not skipped)."""
import pytest
import torch

from jacviz import data


@pytest.mark.parametrize("name,split,n,shape", [
    ("mnist", "train", 60000, (1, 28, 28)), ("mnist", "test", 10000, (1, 28, 28)),
    ("usps", "test", 2007, (1, 28, 28)),
    ("cifar10", "train", 50000, (3, 32, 32)), ("cifar10", "test", 10000, (3, 32, 32)),
])
def test_shapes_ranges_counts(name, split, n, shape):
    x, y = data.load(name, split)
    assert x.shape == (n, *shape) and x.dtype == torch.float32
    assert y.shape == (n,) and y.dtype == torch.int64
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.9
    assert sorted(torch.unique(y).tolist()) == list(range(10))


def test_known_statistics():
    x, y = data.load("mnist", "train")
    assert x.mean().item() == pytest.approx(0.1307, abs=5e-4)
    assert x.std().item() == pytest.approx(0.3081, abs=5e-4)
    assert y[:5].tolist() == [5, 0, 4, 1, 9]
    xc, yc = data.load("cifar10", "train")
    assert xc.mean(dim=(0, 2, 3)).tolist() == pytest.approx([0.4914, 0.4822, 0.4465], abs=5e-4)
    assert torch.bincount(yc).tolist() == [5000] * 10


def test_few_shot_k_per_class():
    _, y = data.load("mnist", "train")
    for k in (1, 3, 10, 30):
        idx = data.few_shot_indices(y, k, seed=3)
        assert torch.bincount(y[idx], minlength=10).tolist() == [k] * 10
    assert torch.equal(data.few_shot_indices(y, 3, 0), data.few_shot_indices(y, 3, 0))
    assert not torch.equal(data.few_shot_indices(y, 3, 0), data.few_shot_indices(y, 3, 1))
    # the 'first' ablation: the first k of each class in the training set's order, whatever the seed
    first = data.few_shot_indices(y, 3, 0, draw="first")
    assert torch.equal(first, data.few_shot_indices(y, 3, 7, draw="first"))
    assert torch.bincount(y[first], minlength=10).tolist() == [3] * 10
    for c in range(10):
        assert first[y[first] == c].tolist() == torch.nonzero(y == c).flatten()[:3].tolist()
    assert first[:4].tolist() == [0, 1, 2, 3]  # MNIST's first labels 5, 0, 4, 1 are each a class's first sample
    with pytest.raises(ValueError, match="draw"):
        data.few_shot_indices(y, 3, 0, draw="last")


def test_missing_dataset_names_folder_and_files(tmp_path, monkeypatch):
    monkeypatch.setenv("JACVIZ_DATA", str(tmp_path))
    with pytest.raises(data.DatasetMissingError) as err:
        data.load("mnist", "test")
    msg = str(err.value)
    assert str(tmp_path) in msg and "MNIST/raw" in msg and "idx3-ubyte" in msg


@pytest.mark.parametrize("name", ["mnist", "usps", "cifar10"])
def test_decoded_cache_gives_the_same_tensors(name, tmp_path, monkeypatch):
    """The decoded-array cache (so the app need not import torchvision) returns torchvision's exact data."""
    root = data.data_root()
    monkeypatch.setenv("JACVIZ_CACHE", str(tmp_path))
    monkeypatch.setattr(data, "_open", lambda *a: pytest.fail("torchvision read although cached"))
    path = data._cache_path(name, False, root)
    assert path is not None and path.parent == tmp_path and not path.exists()
    monkeypatch.undo()
    monkeypatch.setenv("JACVIZ_CACHE", str(tmp_path))
    direct = data._open(name, False, root)
    raw, y = data._decode(name, False, root)  # miss: decodes with torchvision, writes the file
    assert path.exists()
    assert torch.equal(raw, torch.as_tensor(direct.data)) and torch.equal(y, torch.as_tensor(direct.targets).long())
    monkeypatch.setattr(data, "_open", lambda *a: pytest.fail("torchvision read although cached"))
    raw2, y2 = data._decode(name, False, root)  # hit
    assert torch.equal(raw, raw2) and torch.equal(y, y2)
    # a truncated cache file is ignored, decoded again and rewritten
    path.write_bytes(path.read_bytes()[:100])
    monkeypatch.undo()
    monkeypatch.setenv("JACVIZ_CACHE", str(tmp_path))
    raw3, _ = data._decode(name, False, root)
    assert torch.equal(raw, raw3) and data._read_cache(path) is not None


def test_cache_off_and_app_modules_do_not_import_torchvision(monkeypatch):
    monkeypatch.setenv("JACVIZ_CACHE", "off")
    assert data._cache_path("mnist", False, data.data_root()) is None
    import subprocess
    import sys
    code = ("import sys, jacviz.data, jacviz.cells, jacviz.plots, jacviz.checkpoints, jacviz.train, models; "
            "print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_says_where_to_put_a_missing_dataset_without_a_traceback(tmp_path, monkeypatch, capsys):
    from jacviz.__main__ import main
    monkeypatch.setenv("JACVIZ_DATA", str(tmp_path))
    monkeypatch.setenv("JACVIZ_CACHE", "off")
    assert main(["train", "--model", "lenet", "--iterations", "1", "--out", str(tmp_path / "ck")]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and str(tmp_path) in err and "MNIST/raw" in err and "Traceback" not in err
    assert not (tmp_path / "ck").exists()
