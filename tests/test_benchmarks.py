"""The benchmark scripts' measuring helpers, checked for what they count (not for speed)."""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import stack_module_state

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import jr_conv  # noqa: E402
import jr_overhead  # noqa: E402
import memory_format  # noqa: E402
import models  # noqa: E402
import stacking  # noqa: E402
from jacviz.jacobian import _unit_vectors, jacobian_penalty  # noqa: E402


def test_profile_step_counts_the_double_backward_ops():
    """A JR step (n_proj = 1) dispatches the plain step's ops plus a second backward pass, so
    LeNet' must count well over the plain step's aten ops, and a plain step must count at least
    one op per layer (forward + backward). Counted by name, the JR step runs more convolutions
    than the plain step (the double backward differentiates through LeNet's 2 conv layers again)."""
    torch.manual_seed(0)
    dev = torch.device("cpu")
    model = models.build("lenet").train()
    x = torch.rand(4, *model.input_shape)
    y = torch.randint(0, 10, (4,))
    c_plain = jr_overhead.profile_step(model, x, y, "plain", dev)
    c_jr = jr_overhead.profile_step(model, x, y, 1, dev)
    n_plain, n_jr = sum(c_plain.values()), sum(c_jr.values())
    assert n_plain > 2 * len(list(model.modules()))
    assert n_jr > 1.5 * n_plain
    assert all(name.startswith("aten::") for name in c_jr)
    conv = lambda c: sum(v for k, v in c.items() if "conv" in k)  # noqa: E731
    assert conv(c_plain) >= 2 and conv(c_jr) > conv(c_plain)


def test_without_batchnorm_strips_every_batchnorm_of_a_copy_only():
    """The --profile diagnostic: ResNet-18's copy has no BatchNorm left, keeps every conv weight,
    and the model it came from is untouched; a model without BatchNorm (DDNet) gets None."""
    model = models.build("resnet18")
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    bare = jr_overhead.without_batchnorm(model)
    assert n_bn == 20  # 1 after the stem, 2 in each of 8 blocks, 3 in projection shortcuts
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in bare.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == n_bn
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    bare_convs = [m.weight for m in bare.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == len(bare_convs) and all(torch.equal(a, b) for a, b in zip(convs, bare_convs))
    assert jr_overhead.without_batchnorm(models.build("ddnet")) is None


def test_stacked_step_gives_each_model_its_own_jr_gradient():
    """benchmarks/stacking.py times one vmapped step for S models against S steps; it is only a fair
    comparison if the stacked step computes what jacviz.train does: for each model, the gradient of
    CE + lambda/2 * ||J||^2 (one projection, normalized input) on its own batch and its own draw."""
    torch.manual_seed(0)
    S, B = 3, 4
    ms = [models.build("lenet").train() for _ in range(S)]
    params, _ = stack_module_state(ms)
    x = torch.rand(S, B, 1, 28, 28)
    y = torch.randint(0, 10, (S, B))
    v = torch.stack([_unit_vectors((B, 10), x, torch.Generator().manual_seed(i)) for i in range(S)])
    g = stacking.stacked_grad_fn(ms[0])({k: p.detach() for k, p in params.items()}, x, y, v)
    for i, m in enumerate(ms):
        xi = x[i].clone().requires_grad_(True)
        logits = m(xi)
        jr = jacobian_penalty(xi, logits, 1, generator=torch.Generator().manual_seed(i)) * models.input_std(m) ** 2
        loss = F.cross_entropy(logits, y[i]) + stacking.LAMBDA_JR / 2 * jr
        ref = dict(zip([n for n, _ in m.named_parameters()], torch.autograd.grad(loss, list(m.parameters()))))
        for name, r in ref.items():
            torch.testing.assert_close(g[name][i], r, rtol=1e-4, atol=1e-6)
    # the penalty term matters: without it the gradients differ
    g0 = stacking.stacked_grad_fn(ms[0], lam=0.0)({k: p.detach() for k, p in params.items()}, x, y, v)
    assert not torch.allclose(g0["features.0.weight"], g["features.0.weight"], rtol=1e-3)


def test_flop_count_is_exact_for_a_linear_layer_and_linear_in_the_batch():
    """--flops: the counter gives a known product its textbook count (2 * B * in * out for a
    Linear layer's addmm), a LeNet' step's count doubles with the batch, and JR's double backward
    costs about twice the plain step's arithmetic, more with more projections (exact = C = 10)."""
    lin = torch.nn.Linear(784, 10)
    counter = jr_overhead._FlopCount()
    with counter:
        lin(torch.rand(6, 784))
    assert counter.flops == 2 * 6 * 784 * 10 and counter.ops >= 1

    torch.manual_seed(0)
    model = models.build("lenet").train()
    x, y = torch.rand(4, *model.input_shape), torch.randint(0, 10, (4,))
    plain2, _ = jr_overhead.flop_step(model, x[:2], y[:2], "plain")
    plain4, ops_plain = jr_overhead.flop_step(model, x, y, "plain")
    assert plain4 == 2 * plain2 > 0
    counts = {n: jr_overhead.flop_step(model, x, y, n) for n in (1, 3, "exact")}
    r = {n: flops / plain4 for n, (flops, _) in counts.items()}
    assert 1.8 < r[1] < 2.6 and r[1] < r[3] < r["exact"]
    assert counts[1][1] > ops_plain


def test_memory_format_benchmark_times_the_same_step_in_both_layouts():
    """memory_format.py's ratio is only meaningful if both layouts take the same step: from the same
    weights and batch, one plain, FGSM-AT and JR step of LeNet' and DDNet lands on the same weights
    to float32 rounding, and the weights stay in the layout the step was timed in."""
    for name in ("lenet", "ddnet"):
        for kind in ("plain", "at", "1"):
            out = {}
            for fmt in (torch.contiguous_format, torch.channels_last):
                torch.manual_seed(0)
                model = models.build(name).to(memory_format=fmt).train()
                x = torch.rand(6, *model.input_shape).contiguous(memory_format=fmt)
                y = torch.arange(6) % 10
                opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
                before = model.features[0].weight.detach().clone()
                torch.manual_seed(1)  # the same FGSM amplitudes and JR projection in both layouts
                memory_format.train_step(model, opt, x, y, kind, models.input_std(model))
                w = model.features[0].weight
                assert w.is_contiguous(memory_format=fmt) and not torch.equal(w, before)
                out[fmt] = (before, w.detach())
            (b0, w0), (b1, w1) = out.values()
            assert torch.equal(b0, b1)
            torch.testing.assert_close(w1, w0, rtol=1e-4, atol=1e-6)


def test_jr_conv_benchmark_switches_the_model_it_times_and_only_that(monkeypatch):
    """jr_conv.py's torch/transposed ratio is only meaningful if 'transposed' timings run inside
    jacviz.jr_conv.transposed_input_grads and 'torch' ones do not: count the switched convolutions
    each timed DDNet step sees."""
    seen = []
    real = memory_format.train_step

    def spy(model, *a):
        seen.append(sum("_conv_forward" in m.__dict__ for m in model.modules()))
        return real(model, *a)
    monkeypatch.setattr(memory_format, "train_step", spy)
    for transposed, want in ((False, 0), (True, 4)):
        seen.clear()
        assert jr_conv.timed("ddnet", 2, "1", "channels_last", transposed, 1, torch.device("cpu")) > 0
        assert seen and set(seen) == {want}


def test_jr_batchnorm_benchmark_switches_the_layers_it_times_and_counts_fewer_ops(monkeypatch):
    """jr_batchnorm.py's torch/analytic ratio is only meaningful if 'analytic' timings run inside
    jacviz.jr_batchnorm.analytic_double_backward and 'torch' ones do not (count the switched
    BatchNorm layers each timed ResNet-18 step sees); its op count must show the closed form's
    purpose, fewer ops in a JR step than PyTorch's double backward of BatchNorm."""
    import jr_batchnorm

    seen = []
    real = jr_batchnorm._train_step

    def spy(model, *a):
        seen.append((sum("forward" in m.__dict__ for m in model.modules()),
                     sum("_conv_forward" in m.__dict__ for m in model.modules())))
        return real(model, *a)
    monkeypatch.setattr(jr_batchnorm, "_train_step", spy)
    cpu = torch.device("cpu")
    for analytic, transposed, want in ((False, True, (0, 20)), (True, False, (20, 0))):
        seen.clear()
        assert jr_batchnorm.step_time(2, "1", analytic, transposed, 1, cpu) > 0
        assert seen and set(seen) == {want}
    monkeypatch.undo()
    ops = {analytic: jr_batchnorm.op_count(2, "1", analytic, False, cpu) for analytic in (False, True)}
    plain = jr_batchnorm.op_count(2, "plain", False, False, cpu)
    assert plain < ops[True] < 0.8 * ops[False]
