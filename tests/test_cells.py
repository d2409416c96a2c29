"""Decision-cell planes, grids, in-plane radius and figures (jacviz.cells, jacviz.plots).

Real MNIST samples and the small trained LeNet' fixtures of conftest; every check is a property
(orthonormality, agreement with an independent computation, an analytic answer), not a snapshot.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from jacviz import cells


def _pred(model, x0):
    with torch.no_grad():
        return int(model(x0[None]).argmax(1)[0])


def _assert_orthonormal(plane, atol=1e-5):
    u, v = plane.u.reshape(-1).astype(np.float64), plane.v.reshape(-1).astype(np.float64)
    assert abs(np.linalg.norm(u) - 1) < atol and abs(np.linalg.norm(v) - 1) < atol
    assert abs(u @ v) < atol


class _Linear(nn.Module):
    """nn.Linear(784, 10) taking (B, 1, 28, 28) pixels: its decision regions are polyhedra."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


# --------------------------------------------------------------------------------------- planes
def test_random_plane_orthonormal_and_reproducible(mnist_test):
    x, _ = mnist_test
    p1, p2, p3 = cells.random_plane(x[0], 3), cells.random_plane(x[0], 3), cells.random_plane(x[0], 4)
    _assert_orthonormal(p1)
    assert p1.shape == tuple(x[0].shape)
    np.testing.assert_array_equal(p1.u, p2.u)
    np.testing.assert_array_equal(p1.v, p2.v)
    assert p1.key() == p2.key() != p3.key()
    assert abs(float(p1.u.ravel() @ p3.u.ravel())) < 0.2  # independent directions in R^784


def test_sample_plane_contains_the_samples(mnist_test):
    x, _ = mnist_test
    plane = cells.sample_plane(x[0], x[1], x[2])
    _assert_orthonormal(plane)
    for name, xi in (("x1", x[1]), ("x2", x[2])):
        a, b = plane.points[name]
        np.testing.assert_allclose(plane.point(x[0], a, b).numpy(), xi.numpy(), atol=2e-5)
    with pytest.raises(ValueError):
        cells.sample_plane(x[0], x[1], x[0] + 2 * (x[1] - x[0]))  # collinear


def test_adversarial_points_lie_on_plane(mnist_test, lenet_plain, lenet_jr):
    from jacviz.attacks import fgsm

    x, y = mnist_test
    x0, y0 = x[3], y[3]
    plane = cells.adversarial_plane(lenet_plain, lenet_jr, x0, int(y0), eps=0.1, names=("plain", "JR"))
    _assert_orthonormal(plane)
    for name, model in (("FGSM plain", lenet_plain), ("FGSM JR", lenet_jr)):
        x_adv = fgsm(model, x0[None], y0[None], 0.1)[0]
        a, b = plane.points[name]
        assert np.hypot(a, b) > 0.5  # a real perturbation, eps=0.1 on many pixels
        np.testing.assert_allclose(plane.point(x0, a, b).numpy(), x_adv.numpy(), atol=2e-5)
        assert plane.coords(x_adv, x0) == pytest.approx((a, b), abs=1e-5)
    # the plane's first axis is model A's FGSM direction
    assert plane.points["FGSM plain"][1] == pytest.approx(0.0, abs=1e-6)
    # degenerate case: the same model twice gives parallel directions; v falls back to random
    same = cells.adversarial_plane(lenet_plain, lenet_plain, x0, int(y0), eps=0.1)
    _assert_orthonormal(same)
    assert "parallel" in same.description
    # both perturbations vanish (a constant model has no input gradient): a seeded random plane, said so
    import copy
    flat = copy.deepcopy(lenet_plain)
    with torch.no_grad():
        for p in flat.parameters():
            p.zero_()
    dead = cells.adversarial_plane(flat, flat, x0, int(y0), eps=0.1, seed=7)
    _assert_orthonormal(dead)
    assert dead.description.endswith("both perturbations vanish, so the plane is random (seed 7)")
    assert np.array_equal(dead.u, cells.random_plane(x0, 7).u)


def test_jacobian_plane_top_singular_vectors(mnist_test, lenet_plain):
    x, _ = mnist_test
    x0 = x[5]
    plane = cells.jacobian_plane(lenet_plain, x0)
    _assert_orthonormal(plane)
    J = torch.func.jacrev(lambda t: lenet_plain(t[None])[0])(x0.clone()).detach().reshape(10, -1).double()
    _, S, Vh = torch.linalg.svd(J, full_matrices=False)
    assert S[0] > S[1] * 1.0001 and S[1] > S[2] * 1.0001  # distinct, so the vectors are defined
    assert abs(float(Vh[0].numpy() @ plane.u.ravel())) == pytest.approx(1.0, abs=1e-4)
    assert abs(float(Vh[1].numpy() @ plane.v.ravel())) == pytest.approx(1.0, abs=1e-4)


# ------------------------------------------------------------------------------------ the grid
def test_grid_centre_is_x0_prediction_and_clip(mnist_test, lenet_plain):
    x, _ = mnist_test
    for i in (0, 1):
        plane = cells.random_plane(x[i], i)
        for mode in ("dense", "adaptive"):
            for clip in (False, True):
                m = cells.decision_plane([lenet_plain], x[i], plane, extent=8.0, resolution=41,
                                         clip=clip, mode=mode)[0]
                assert m.coords[20] == 0.0 and m.labels.shape == (41, 41)
                assert m.labels[20, 20] == m.center_class == _pred(lenet_plain, x[i])
                assert m.margin.min() >= 0 and ((m.confidence >= 0.1 - 1e-6) & (m.confidence <= 1 + 1e-6)).all()

    seen = []

    class Recorder(_Linear):
        def forward(self, x):
            seen.append((float(x.min()), float(x.max())))
            return super().forward(x)

    cells.decision_plane(Recorder(), x[0], cells.random_plane(x[0]), extent=20.0, resolution=21, clip=True)
    assert min(s[0] for s in seen) >= 0.0 and max(s[1] for s in seen) <= 1.0
    seen.clear()
    cells.decision_plane(Recorder(), x[0], cells.random_plane(x[0]), extent=20.0, resolution=21, clip=False)
    assert min(s[0] for s in seen) < 0.0  # unclipped slices leave [0, 1], as in the paper


@pytest.mark.parametrize("which", ["lenet_plain", "lenet_jr"])
def test_adaptive_agrees_with_dense(which, request, mnist_test):
    model = request.getfixturevalue(which)
    x, _ = mnist_test
    for i, seed in ((2, 0), (7, 1)):
        plane = cells.random_plane(x[i], seed)
        dense, adaptive = (cells.decision_plane(model, x[i], plane, extent=25.0, resolution=201, mode=mode)[0]
                           for mode in ("dense", "adaptive"))
        assert len(np.unique(dense.labels)) >= 2  # the window holds boundaries, so the test means something
        agree = (dense.labels == adaptive.labels).mean()
        assert agree >= 0.999, (which, i, agree)
        assert dense.n_evals == 201 * 201
        assert adaptive.n_evals < dense.n_evals / 3
        ev = adaptive.evaluated
        np.testing.assert_array_equal(adaptive.labels[ev], dense.labels[ev])  # same model, same points
        np.testing.assert_allclose(adaptive.confidence[ev], dense.confidence[ev], atol=1e-4)
        # filled confidences are interpolations of neighbours, close to the true values
        assert np.abs(adaptive.confidence - dense.confidence).mean() < 0.02


def test_grid_and_boundary_report_progress_to_the_end(mnist_test, lenet_plain, lenet_jr):
    """Dense grids report after each forward pass (points evaluated / R^2), adaptive ones after each level (the
    window's area settled); both rise to 1.0 with the map's own point count, per model. The boundary search
    reports the radius its rays reached, which ends at the first crossing's step."""
    x, _ = mnist_test
    plane = cells.random_plane(x[2], 0)
    for mode in ("dense", "adaptive"):
        seen = []
        maps = cells.decision_plane([lenet_plain, lenet_jr], x[2], plane, extent=25.0, resolution=101, mode=mode,
                                    batch_size=1000, progress=lambda *r: seen.append(r))
        for k, m in enumerate(maps):
            mine = [(f, n) for kk, f, n in seen if kk == k]
            assert mine[-1] == (1.0, m.n_evals) and len(mine) >= (11 if mode == "dense" else 3), (mode, mine)
            assert [f for f, _ in mine] == sorted(f for f, _ in mine) and 0 < mine[0][0] < 1
        assert [k for k, _, _ in seen] == sorted(k for k, _, _ in seen)  # model by model
    rays = []
    b = cells.in_plane_boundary(lenet_plain, x[2], plane, max_radius=25.0, progress=lambda *r: rays.append(r))
    assert b.found and len(rays) >= 2 and [r for r, _ in rays] == sorted(r for r, _ in rays)
    step = 25.0 / 48
    assert b.radius - step <= rays[-1][0] <= b.radius + 4 * step  # the march stops in the chunk that crossed
    assert rays[-1][1] < b.n_evals  # bisections and fans come after the march


def test_several_models_share_one_grid(mnist_test, lenet_plain, lenet_jr):
    x, _ = mnist_test
    plane = cells.random_plane(x[0], 0)
    both = cells.decision_plane([lenet_plain, lenet_jr], x[0], plane, extent=5.0, resolution=31, mode="dense")
    one = cells.decision_plane(lenet_jr, x[0], plane, extent=5.0, resolution=31, mode="dense")[0]
    plain = cells.decision_plane(lenet_plain, x[0], plane, extent=5.0, resolution=31, mode="dense")[0]
    assert len(both) == 2
    np.testing.assert_array_equal(both[1].labels, one.labels)
    np.testing.assert_array_equal(both[0].labels, plain.labels)  # each model its own labels, in order
    np.testing.assert_array_equal(both[0].confidence, plain.confidence)
    assert not np.array_equal(plain.confidence, one.confidence)  # two different models: the check has teeth
    np.testing.assert_array_equal(both[0].coords, one.coords)


# ---------------------------------------------------------------------------- in-plane radius
def _independent_ray_distances(model, x0, plane, angles, c0, r_max, step=0.05, tol=1e-4):
    """First exit of class c0 along each ray: fine march, then bisection (own implementation,
    float64 directions, all rays together). inf where a ray stays in c0 up to r_max."""
    u = torch.as_tensor(plane.u, dtype=torch.float64)
    v = torch.as_tensor(plane.v, dtype=torch.float64)
    th = torch.as_tensor(angles, dtype=torch.float64)
    d = torch.cos(th)[:, None, None, None] * u + torch.sin(th)[:, None, None, None] * v  # (n, C, H, W)

    def labels(r):  # r: (n,) or (n, m) radii -> labels of x0 + r d
        rr = r if r.ndim == 2 else r[:, None]
        pts = (x0.double()[None, None] + rr[..., None, None, None] * d[:, None]).float().reshape(-1, *x0.shape)
        with torch.no_grad():
            out = torch.cat([model(c).argmax(1) for c in pts.split(2048)]).reshape(rr.shape)
        return out if r.ndim == 2 else out[:, 0]

    radii = torch.arange(1, int(r_max / step) + 2, dtype=torch.float64) * step
    outside = labels(radii.expand(len(th), -1)) != c0
    hit = outside.any(1)
    k = outside.float().argmax(1)  # first exit index
    hi = radii[k]
    lo = torch.where(k > 0, radii[(k - 1).clamp(min=0)], torch.zeros_like(hi))
    while float((hi - lo).max()) > tol:
        mid = 0.5 * (lo + hi)
        inside = labels(mid) == c0
        lo, hi = torch.where(inside, mid, lo), torch.where(inside, hi, mid)
    return torch.where(hit, 0.5 * (lo + hi), torch.full_like(hi, math.inf)).numpy()


def test_radius_against_independent_bisection(mnist_test, lenet_plain):
    x, _ = mnist_test
    x0 = x[2]
    plane = cells.random_plane(x0, 0)
    tol = 1e-3
    b = cells.in_plane_boundary(lenet_plain, x0, plane, max_radius=25.0, tol=tol)
    assert b.found and b.center_class == _pred(lenet_plain, x0) and b.other_class != b.center_class
    assert math.hypot(*b.point) == pytest.approx(b.radius)
    # the boundary really is there: an independent bisection along the returned direction
    d_best = _independent_ray_distances(lenet_plain, x0, plane, [b.angle], b.center_class, b.radius + 1)[0]
    assert d_best == pytest.approx(b.radius, abs=tol)
    # and nothing is closer: random rays never meet a boundary nearer than the radius
    g = torch.Generator().manual_seed(1)
    angles = torch.rand(128, generator=g, dtype=torch.float64) * 2 * math.pi
    dists = _independent_ray_distances(lenet_plain, x0, plane, angles, b.center_class, 1.2 * b.radius + 0.5)
    assert (dists >= b.radius - tol).all(), dists.min()
    assert dists.min() <= 1.05 * b.radius  # the nearest random ray comes close to the radius
    assert cells.in_plane_radius(lenet_plain, x0, plane, max_radius=25.0, tol=tol) == b.radius


def test_radius_of_linear_classifier_is_analytic(mnist_test):
    """For logits W x + c, x0's cell in the plane is the polygon m_k + a alpha_k + b beta_k > 0
    (m_k = z_c0 - z_k at x0, (alpha_k, beta_k) = (w_c0 - w_k) projected on u, v); the largest
    circle around the origin inside it has radius min_k m_k / |(alpha_k, beta_k)|."""
    x, _ = mnist_test
    model = _Linear(0).eval()
    W, c = model.fc.weight.detach().double(), model.fc.bias.detach().double()
    for i in range(3):
        x0 = x[i]
        plane = cells.random_plane(x0, 10 + i)
        U = torch.as_tensor(np.stack([plane.u.ravel(), plane.v.ravel()]), dtype=torch.float64)
        z = W @ x0.reshape(-1).double() + c
        c0 = int(z.argmax())
        dist = min(float(z[c0] - z[k]) / float(((W[c0] - W[k]) @ U.T).norm()) for k in range(10) if k != c0)
        b = cells.in_plane_boundary(model, x0, plane, max_radius=5 * dist, tol=1e-5)
        assert b.radius == pytest.approx(dist, abs=2e-5), (i, b.radius, dist)
        assert cells.in_plane_radius(model, x0, plane, max_radius=0.5 * dist) == math.inf


def test_cell_measures_hand_made():
    lab = np.array([[1, 1, 0, 2, 2],
                    [1, 1, 0, 2, 2],
                    [0, 0, 2, 0, 0],
                    [2, 0, 0, 0, 0],
                    [0, 2, 0, 2, 2]])
    m = cells.cell_measures(lab, 2)
    assert m.area_fraction == pytest.approx(9 / 25)
    assert m.n_fragments == 5  # diagonal neighbours are separate (4-connectivity)
    assert m.center_fraction == pytest.approx(1 / 25)
    m0 = cells.cell_measures(lab, 0)
    assert m0.area_fraction == pytest.approx(12 / 25) and m0.n_fragments == 3 and m0.center_fraction == 0.0


# ----------------------------------------------------------------------------- figure and CLI
def test_figure_and_cli(mnist_test, lenet_plain, lenet_jr, tmp_path):
    from jacviz import checkpoints, plots
    from jacviz.config import TrainConfig

    x, y = mnist_test
    plane = cells.adversarial_plane(lenet_plain, lenet_jr, x[0], int(y[0]), eps=0.1, names=("plain", "JR"))
    maps = cells.decision_plane([lenet_plain, lenet_jr], x[0], plane, extent=6.0, resolution=51)
    radii = [cells.in_plane_radius(m, x[0], plane, max_radius=8.5) for m in (lenet_plain, lenet_jr)]
    fig = plots.decision_cells_figure(maps, plane, ["plain", "JR"], radii=radii, true_class=int(y[0]))
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert len(heat) == 4 and heat[0].z.shape == (51, 51)
    assert {t.name for t in fig.data if t.name} >= {"FGSM plain", "FGSM JR", "x0 (test sample)"}
    assert "pixel space" in fig.layout.xaxis.title.text and fig.layout.xaxis2.matches == "x"
    # the other argument order used by the app page is accepted too
    assert len(plots.decision_cells_figure(maps, ["plain", "JR"], plane).data) == len(
        plots.decision_cells_figure(maps, plane, ["plain", "JR"]).data)

    paths = []
    for name, model, cfg in (("plain", lenet_plain, TrainConfig()), ("jr", lenet_jr, TrainConfig(jr=0.1))):
        paths.append(str(checkpoints.save(tmp_path / f"{name}.pt", model, cfg, {}, [])))
    out = tmp_path / "fig.html"
    rc = cells.cli(["--checkpoints", *paths, "--sample", "0", "--plane", "adversarial", "--extent", "5",
                    "--resolution", "31", "--out", str(out)])
    assert rc == 0 and out.stat().st_size > 10000


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(mnist_test, lenet_plain):
    import copy

    x, _ = mnist_test
    plane = cells.random_plane(x[0], 0)
    gpu = copy.deepcopy(lenet_plain).to("cuda")
    a = cells.decision_plane(lenet_plain, x[0], plane, extent=20.0, resolution=101, mode="dense")[0]
    b = cells.decision_plane(gpu, x[0], plane, extent=20.0, resolution=101, mode="dense")[0]
    assert (a.labels == b.labels).mean() > 0.999
    r_cpu = cells.in_plane_radius(lenet_plain, x[0], plane, max_radius=20.0)
    r_gpu = cells.in_plane_radius(gpu, x[0], plane, max_radius=20.0)
    assert r_gpu == pytest.approx(r_cpu, abs=2e-3)


def test_a_boundary_point_is_an_image_inside_the_box_or_on_a_clipped_plane(mnist_test):
    """Only a boundary point in [0, 1] (or any point of a clipped plane) witnesses an image CW-L2 could reach."""
    x, _ = mnist_test
    x0 = x[0]

    def at(a, b):
        return cells.Boundary(radius=math.hypot(a, b), angle=math.atan2(b, a), point=(a, b), center_class=7,
                              other_class=3, n_evals=0, bracket=0.0)
    rand = cells.random_plane(x0, 0)
    assert not cells.boundary_is_an_image(x0, rand, at(3.0, 0.0), clip=False)  # MNIST's 0 pixels go below 0
    assert cells.boundary_is_an_image(x0, rand, at(3.0, 0.0), clip=True)
    assert cells.boundary_is_an_image(x0, rand, at(0.0, 0.0), clip=False)  # x0 itself
    none = cells.Boundary(math.inf, math.nan, (math.nan, math.nan), 7, -1, 0, math.nan)
    assert not cells.boundary_is_an_image(x0, rand, none, clip=True)
    through = cells.sample_plane(x0, x[1], x[2])  # the segment from x0 to x1 holds only images
    a1, b1 = through.points["x1"]
    assert cells.boundary_is_an_image(x0, through, at(a1 * 0.6, b1 * 0.6), clip=False)
    assert not cells.boundary_is_an_image(x0, through, at(a1 * 2.5, b1 * 2.5), clip=False)
