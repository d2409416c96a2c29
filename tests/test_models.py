import pytest
import torch

import models


@pytest.mark.parametrize("name,shape", [("lenet", (1, 28, 28)), ("ddnet", (3, 32, 32)), ("resnet18", (3, 32, 32))])
def test_output_shape_and_normalization_inside(name, shape):
    torch.manual_seed(0)
    m = models.build(name).eval()
    x = torch.rand(2, *shape)
    assert m(x).shape == (2, 10)
    # normalization is a layer of the model, with buffers (not parameters)
    buffers = dict(m.named_buffers())
    assert "normalize.mean" in buffers and "normalize.std" in buffers
    assert not any(n.startswith("normalize") for n, _ in m.named_parameters())
    # the first layer sees normalized pixels
    seen = {}
    first = m.features[0] if hasattr(m, "features") else m.conv1
    first.register_forward_pre_hook(lambda mod, inp: seen.update(inp=inp[0]))
    m(x)
    expected = (x - buffers["normalize.mean"]) / buffers["normalize.std"]
    assert torch.allclose(seen["inp"], expected)


def test_lenet_architecture_per_appendix_d():
    m = models.build("lenet", dropout=0.5)
    convs = [l for l in m.modules() if isinstance(l, torch.nn.Conv2d)]
    fcs = [l for l in m.modules() if isinstance(l, torch.nn.Linear)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [(1, 6, (5, 5), (2, 2)), (6, 16, (5, 5), (0, 0))]
    assert [(f.in_features, f.out_features) for f in fcs] == [(400, 120), (120, 84), (84, 10)]
    assert sum(isinstance(l, torch.nn.Tanh) for l in m.modules()) == 4
    assert [l.p for l in m.modules() if isinstance(l, torch.nn.Dropout)] == [0.5, 0.5]
    assert models.input_std(m) == pytest.approx(0.3081)


def test_ddnet_architecture_per_appendix_d():
    m = models.build("ddnet", dropout=0.5)
    fcs = [(f.in_features, f.out_features) for f in m.modules() if isinstance(f, torch.nn.Linear)]
    assert fcs == [(3200, 256), (256, 256), (256, 10)]
    assert models.input_std(m) == 0.5


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model"):
        models.build("vgg")


def _built(name, init, seed=0):
    torch.manual_seed(seed)
    m = models.build(name)
    models.apply_init(m, init)
    return dict(m.named_parameters())


@pytest.mark.parametrize("name", ["lenet", "ddnet"])
def test_init_ablations_change_only_what_they_name(name):
    """'default_bias' keeps the paper's weight draw and gives PyTorch-default biases; 'caffe_xavier' rescales
    that draw to U(±√(3/fan_in)); 'xavier_normal' is a fresh draw of the same variance; all but one keep zero biases."""
    paper, bias, caffe, normal = (_built(name, i) for i in ("paper", "default_bias", "caffe_xavier", "xavier_normal"))
    layers = [n[:-len(".weight")] for n in paper if n.endswith(".weight")]
    for layer in layers:
        w = paper[layer + ".weight"]
        fan_in = w[0].numel()
        fan_out = w.shape[0] * w[0, 0].numel()
        assert (fan_in, fan_out) == torch.nn.init._calculate_fan_in_and_fan_out(w)  # PyTorch's own count
        assert torch.equal(paper[layer + ".bias"], torch.zeros_like(paper[layer + ".bias"]))
        # paper: Glorot's uniform bound sqrt(6 / (fan_in + fan_out))
        assert w.abs().max() <= (6 / (fan_in + fan_out)) ** 0.5
        assert torch.equal(bias[layer + ".weight"], w)
        b = bias[layer + ".bias"]
        assert b.abs().max() <= fan_in ** -0.5 and b.abs().max() > 0.5 * fan_in ** -0.5
        assert torch.allclose(caffe[layer + ".weight"], w * ((fan_in + fan_out) / (2 * fan_in)) ** 0.5)
        assert torch.equal(caffe[layer + ".bias"], paper[layer + ".bias"])
        assert not torch.equal(normal[layer + ".weight"], w)
        if w.numel() > 1000:  # same variance 2 / (fan_in + fan_out) as the uniform draw
            assert normal[layer + ".weight"].var().item() == pytest.approx(2 / (fan_in + fan_out), rel=0.1)
    # the paper's init is untouched by apply_init, so its checkpoints' names (keys) stay what they were
    torch.manual_seed(0)
    plain = dict(models.build(name).named_parameters())
    assert all(torch.equal(plain[n], paper[n]) for n in plain)


def test_init_field_keeps_old_keys_and_labels_ablations():
    import dataclasses
    import json
    from pathlib import Path

    from jacviz.config import TrainConfig
    # every run recorded before the field existed keeps the key (the checkpoint name) it was saved under
    runs = json.loads((Path(__file__).parent.parent / "reproduction" / "mnist_runs.json").read_text())["runs"]
    old = [r for r in runs if "init" not in r["config"]]
    assert len(old) > 200 and all(TrainConfig.from_dict(r["config"]).key() == r["key"] for r in old)
    c = TrainConfig(few_shot_k=1, iterations=10_000, lr=0.01)
    a = dataclasses.replace(c, init="default_bias")
    assert a.key() != c.key() and a.label() == "none (1/class) [init default_bias]" and "init default_bias" in a.describe()
    f = dataclasses.replace(c, few_shot_draw="first")  # the few-shot subsample read as one fixed subset
    assert f.key() not in (c.key(), a.key()) and f.label() == "none (1/class) [first k per class]"
    assert "1/class (the first of each class)" in f.describe()
    assert TrainConfig.from_dict(f.to_dict()) == f and TrainConfig.from_dict(c.to_dict()).key() == c.key()
    with pytest.raises(ValueError, match="unknown few_shot_draw"):
        TrainConfig(few_shot_k=1, few_shot_draw="last")
    with pytest.raises(ValueError, match="all-data runs"):
        TrainConfig(few_shot_draw="first")
    with pytest.raises(ValueError, match="unknown init"):
        TrainConfig(init="he")
    with pytest.raises(ValueError, match="ResNet-18"):
        TrainConfig(model="resnet18", dataset="cifar10", init="caffe_xavier")
