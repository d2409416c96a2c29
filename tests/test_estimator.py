"""Properties of the estimator study (jacviz.estimator) and of the gallery helpers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from jacviz import estimator, gallery
from jacviz.jacobian import jacobian_frobenius, jacobian_penalty
from models import build


def _model(seed=0):
    torch.manual_seed(seed)
    return build("lenet").eval()


def test_exact_matches_jacobian_frobenius():
    m = _model()
    x = torch.rand(4, 1, 28, 28)
    study = estimator.projection_study(m, x, n_projs=(1,), repeats=4)
    ref = jacobian_frobenius(m, x, "normalized").double().pow(2).numpy()
    np.testing.assert_allclose(study["exact"], ref, rtol=1e-4)
    pix = estimator.projection_study(m, x, n_projs=(1,), repeats=4, space="pixel")["exact"]
    np.testing.assert_allclose(pix * float(m.normalize.std) ** 2, study["exact"], rtol=1e-6)


def test_study_reports_progress_and_chunks_change_nothing(monkeypatch):
    """The Jacobians are computed in chunks with a report after each, then the draws; the stages arrive in
    order, each count rises to its total, and chunking gives the same Jacobians as one batch."""
    m = _model()
    x = torch.rand(7, 1, 28, 28)
    whole = estimator.jacobians(m, x, chunk=100)  # float32 sums in another batch order: equal to ~1e-6
    np.testing.assert_allclose(estimator.jacobians(m, x, chunk=3), whole, rtol=1e-4, atol=1e-6 * float(whole.abs().max()))
    monkeypatch.setattr(estimator, "VECTOR_BUDGET", 7 * 10 * 2 * 5)  # 5 draws a chunk at n_proj = 2
    reports = []
    study = estimator.projection_study(m, x, n_projs=(1, 2), repeats=12,
                                       progress=lambda *r: reports.append(r))
    jac = [r for r in reports if r[0] == "jacobians"]
    draws = [r for r in reports if r[0] == "draws"]
    assert reports == jac + draws and jac[-1] == ("jacobians", 7, 7) and draws[-1] == ("draws", 24, 24)
    assert [d for _, d, _ in draws] == sorted({d for _, d, _ in draws}) and len(draws) >= 2 + 3
    assert {t for _, _, t in draws} == {24} and study["repeats"] == 12


def test_projection_equals_autograd_vjp():
    """C |v.J|^2 as projection_study forms it (v^T J J^T v) equals jacobian_penalty's autograd VJP with the
    same v."""
    m = _model()
    x = torch.rand(5, 1, 28, 28)
    J = estimator.jacobians(m, x, space="pixel")
    g1 = torch.Generator().manual_seed(3)
    xr = x.clone().requires_grad_(True)
    ref = jacobian_penalty(xr, m(xr), n_proj=1, create_graph=False, generator=g1)
    g2 = torch.Generator().manual_seed(3)
    v = estimator.unit_vectors((1, 5, 10), generator=g2)
    ours = estimator.projection_estimates(J @ J.transpose(1, 2), v).mean()
    assert math.isclose(float(ours), float(ref), rel_tol=1e-4)


@pytest.mark.parametrize("budget", [None, 1000])
def test_unbiased_and_variance_within_eq16_bound(budget, monkeypatch):
    """Also with the draws made in many small chunks (a budget of 1,000 numbers: 16 or 4 repeats a chunk),
    as the app's largest settings are."""
    if budget:
        monkeypatch.setattr(estimator, "VECTOR_BUDGET", budget)
    m = _model(1)
    x = torch.rand(6, 1, 28, 28)
    study = estimator.projection_study(m, x, n_projs=(1, 4), repeats=4000, seed=1)
    C = study["C"]
    assert study["bound_1"] == 2 * (C - 1) / (C + 2)
    # eq. 15 evaluated exactly never exceeds the eq. 16 bound
    assert np.all(study["rel_var_theory_1"] <= study["bound_1"] + 1e-9)
    for row in study["rows"]:
        n = row["n_proj"]
        # unbiased: batch mean over 4000 draws within 5 standard errors of the exact value
        se = row["batch_std"] / math.sqrt(study["repeats"])
        assert abs(row["batch_mean"] - study["exact_batch_mean"]) < 5 * se
        # measured per-sample relative variance matches eq. 15 / n (4000 draws: ~10% accuracy)
        np.testing.assert_allclose(row["sample_rel_var_measured"], row["sample_rel_var_theory"], rtol=0.2)
        assert row["sample_rel_var_measured_max"] <= 1.2 * row["bound"]
        assert math.isclose(row["bound"], study["bound_1"] / n)
        # the batch-mean std predicted from eq. 15 matches the measured one
        assert math.isclose(row["batch_rel_std"], row["batch_rel_std_theory"], rel_tol=0.2)


def test_estimator_figures_show_every_point_with_readable_ticks():
    """The log-log figure labels the n_proj values studied and 1-2-5 steps spanning every plotted value;
    the box figure has one box per n_proj holding its draws and the exact value as a named line."""
    from jacviz import plots_estimator

    study = estimator.projection_study(_model(), torch.rand(3, 1, 28, 28), n_projs=(1, 3, 10), repeats=20)
    fig = plots_estimator.relative_variance_figure(study)
    assert list(fig.layout.xaxis.tickvals) == [1, 3, 10]
    yt = np.array(fig.layout.yaxis.tickvals)
    ys = np.concatenate([np.asarray(t.y, dtype=float) for t in fig.data])
    assert yt.min() <= ys.min() and ys.max() <= yt.max()
    mant = yt / 10.0 ** np.floor(np.log10(yt) + 1e-9)
    assert set(np.round(mant, 6)) == {1, 2, 5}
    box = plots_estimator.batch_estimates_figure(study)
    boxes = [t for t in box.data if t.type == "box"]
    assert [b.name for b in boxes] == ["n_proj=1", "n_proj=3", "n_proj=10"]
    for b, row in zip(boxes, study["rows"]):
        np.testing.assert_array_equal(b.y, row["batch_estimates"])
    assert box.layout.shapes[0].y0 == study["exact_batch_mean"]
    assert any(t.type == "scatter" and t.name.startswith("exact value") for t in box.data)


def test_cost_ratio_reports_times():
    m = _model()
    x = torch.rand(8, 1, 28, 28)
    out = estimator.cost_ratio(m, x, n_projs=(1,), repeats=1)
    assert set(out["seconds"]) == {"plain", "1", "exact"}
    assert all(t > 0 for t in out["seconds"].values())
    assert out["ratio_to_exact"]["exact"] == 1.0
    assert out["machine"]
    assert all(p.grad is None for p in m.parameters())
    assert out["step_setup"] == {"memory_format": "contiguous", "conv_input_grad": "torch"}


def test_cost_ratio_steps_as_training_does_on_a_copy(monkeypatch):
    """Given jacviz.train's step set-up (DDNet JR on a CPU: channels_last, transposed convolution
    gradients) the timings are of that set-up, on a copy: the model passed in keeps its layout and
    PyTorch's convolutions."""
    import models
    from jacviz import train
    from jacviz.config import TrainConfig

    torch.manual_seed(0)
    m = models.build("ddnet")
    setup = train.step_setup(TrainConfig(model="ddnet", dataset="cifar10", jr=0.01), torch.device("cpu"))
    assert setup == {"memory_format": "channels_last", "conv_input_grad": "transposed", "bn_double_backward": "torch"}
    timed, seen = [], []
    real_ctx, real_pen = estimator.transposed_input_grads, estimator.jacobian_penalty
    monkeypatch.setattr(estimator, "transposed_input_grads",
                        lambda model, enabled: timed.append(model) or real_ctx(model, enabled))

    def penalty(x, logits, n_proj):  # what each timed JR step runs on
        seen.append((x.is_contiguous(memory_format=torch.channels_last),
                     sum("_conv_forward" in c.__dict__ for c in timed[-1].modules())))
        return real_pen(x, logits, n_proj)
    monkeypatch.setattr(estimator, "jacobian_penalty", penalty)
    out = estimator.cost_ratio(m, torch.rand(4, 3, 32, 32), n_projs=(1,), repeats=1, step_setup=setup)
    assert out["step_setup"] == setup and set(out["seconds"]) == {"plain", "1", "exact"}
    assert len(seen) == 4 and set(seen) == {(True, 4)}  # n_proj = 1 and exact, warm-up and timed
    assert timed[0] is not m and not any("_conv_forward" in c.__dict__ for c in m.modules())
    assert all(p.is_contiguous() for p in m.parameters())


def test_gallery_predict_and_select():
    m = _model()
    x = torch.rand(30, 1, 28, 28)
    pred, conf = gallery.predict(m, x, batch=7)
    with torch.no_grad():
        ref = m(x).softmax(1)
    np.testing.assert_array_equal(pred, ref.argmax(1).numpy())
    np.testing.assert_allclose(conf, ref.max(1).values.numpy(), rtol=1e-5)
    y = np.arange(30) % 10
    preds = {"a": pred, "b": y.copy()}
    idx = gallery.select(y, true_class=3, predictions=preds)
    np.testing.assert_array_equal(idx, [3, 13, 23])
    wrong = gallery.select(y, predictions=preds, misclassified_by=["a"])
    np.testing.assert_array_equal(wrong, np.nonzero(pred != y)[0])
    assert len(gallery.select(y, predictions=preds, misclassified_by=["b"])) == 0
    img = gallery.to_image(x[0])
    assert img.shape == (28, 28) and img.dtype == np.uint8
