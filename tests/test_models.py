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
