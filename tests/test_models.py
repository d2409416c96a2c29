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


def test_input_norm_variance_is_the_paper_model_on_inputs_stretched_about_the_mean(mnist_test, tmp_path):
    """'variance' (Section 3's "dividing by the variance (0.3081)" read literally) divides by 0.3081² instead of
    0.3081: the same weights, fed the normalized image times 1/0.3081, on real MNIST test images; a checkpoint
    reloads with it, and only LeNet' takes it."""
    import dataclasses

    from jacviz import checkpoints
    from jacviz.config import TrainConfig
    x = mnist_test[0][:8]
    torch.manual_seed(0)
    paper = models.build("lenet").eval()
    torch.manual_seed(0)
    var = models.build("lenet").eval()
    models.apply_input_norm(var, "variance")
    assert all(torch.equal(a, b) for a, b in zip(paper.parameters(), var.parameters()))  # pairs weight for weight
    assert models.input_std(var) == pytest.approx(0.3081 ** 2) and models.input_std(paper) == pytest.approx(0.3081)
    m, s = 0.1307, 0.3081
    with torch.no_grad():
        assert torch.allclose(var(x), paper(m + (x - m) / s), atol=1e-5)
        assert not torch.allclose(var(x), paper(x), atol=1e-2)
    models.apply_input_norm(var, "variance")  # idempotent: std², not std⁴
    assert models.input_std(var) == pytest.approx(s ** 2)
    cfg = TrainConfig(few_shot_k=1, iterations=10, lr=0.01)
    v = dataclasses.replace(cfg, input_norm="variance")
    assert v.key() != cfg.key() and v.label() == "none (1/class) [input ÷ variance]" and "0.3081²" in v.describe()
    assert TrainConfig.from_dict(v.to_dict()) == v
    # the buffer travels in the state dict; load also rebuilds it from the config (files in float16 included)
    ck = checkpoints.load(checkpoints.save(tmp_path / "v.pt", var, v, {}, [], half=True))
    assert ck.config.input_norm == "variance" and models.input_std(ck.model) == pytest.approx(s ** 2, rel=1e-3)
    with torch.no_grad():
        assert torch.allclose(ck.model(x), var(x), atol=1e-2)
    with pytest.raises(ValueError, match="unknown input_norm"):
        TrainConfig(input_norm="std")
    with pytest.raises(ValueError, match="LeNet"):
        TrainConfig(model="ddnet", dataset="cifar10", input_norm="variance")
    with pytest.raises(ValueError, match="LeNet"):
        models.apply_input_norm(models.build("ddnet"), "variance")
