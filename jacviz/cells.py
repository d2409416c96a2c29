"""Cross sections of decision cells (Figure 1, Figures S1 and S2 of the paper).

A *plane* is a 2-D affine slice ``x(a, b) = x0 + a u + b v`` of the input space through a sample
``x0``, with ``u, v`` orthonormal in [0, 1] pixel space, so in-plane coordinates ``(a, b)`` are L2
distances in pixel space (for MNIST, R^784). The paper slices R^784 without clipping, so grid
points may leave [0, 1]; ``clip=True`` clips them before the model sees them.

* Plane bases: :func:`random_plane` (Fig. 1, S1), :func:`adversarial_plane` (Fig. S2, spanned by
  the FGSM perturbations of two models), :func:`sample_plane` (through three samples, as dbViz),
  :func:`jacobian_plane` (top two right-singular vectors of the input-output Jacobian).
* :func:`decision_plane` evaluates several models on one shared grid, densely or by adaptive
  quadtree refinement (same labels on >= 99.9% of points for trained LeNet', typically 10-20x
  fewer model evaluations at 201 x 201).
* :func:`in_plane_radius` is the radius of the circle of Fig. 1: distance from x0 to the closest
  decision boundary *within the plane*, by ray marching plus bisection.
* :func:`cell_measures` summarizes a label map: area fraction and fragments of x0's class.
* :func:`cli` is ``python -m jacviz plane``.

Conventions. Label maps are indexed ``[i, j]`` with row ``i`` along ``b`` (the figure's y axis)
and column ``j`` along ``a`` (x axis), the layout of a Plotly heatmap ``z``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Points evaluated per forward pass when batch_size is None. On CPU, LeNet' runs ~1.8x faster per
# point with batches of 512-1024 than with 4096 (activations stay in cache; measured here:
# 43 vs 78 us/point on 2 threads); a GPU wants larger batches to fill it.
DEFAULT_BATCH = {"cpu": 1024, "cuda": 4096}
# Adaptive refinement: cells at most this many grid steps wide are settled by their corner labels
# alone. Such a cell hides at most 5 unevaluated points, and skipping the margin test there saves
# ~25% of the evaluations at no measured loss (0 differing labels over 18 trained-LeNet' planes).
_CORNER_ONLY = 2


# ----------------------------------------------------------------------------------------------
# Planes
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Plane:
    """An orthonormal basis (u, v) of a 2-D slice through a sample x0, in [0, 1] pixel space.

    u, v: numpy float32 arrays with the sample's shape (C, H, W) (no batch axis), unit L2 norm,
      mutually orthogonal (to float32 precision); device-neutral so a plane can be cached and used
      with models on any device.
    kind: 'random' | 'adversarial' | 'samples' | 'jacobian'.
    description: one human-readable line saying how the plane was made.
    points: name -> (a, b), marked points in plane coordinates (L2 pixel distances along u, v
      from x0); x0 itself is (0, 0) and is not listed.
    Equality is identity (arrays inside); use :meth:`key` for a content hash.
    """

    u: np.ndarray
    v: np.ndarray
    kind: str
    description: str
    points: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.u.shape)

    def basis(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """(2, D) tensor whose rows are the flattened u and v."""
        uv = np.stack([self.u.reshape(-1), self.v.reshape(-1)])
        return torch.as_tensor(uv, dtype=dtype, device=device)

    def coords(self, x: torch.Tensor, x0: torch.Tensor) -> tuple[float, float]:
        """In-plane coordinates (a, b) of the orthogonal projection of x (same shape as x0)."""
        d = (x - x0).reshape(-1).double().cpu().numpy()
        return float(d @ self.u.reshape(-1).astype(np.float64)), float(d @ self.v.reshape(-1).astype(np.float64))

    def point(self, x0: torch.Tensor, a: float, b: float) -> torch.Tensor:
        """The input x0 + a u + b v (shape of x0, unclipped)."""
        uv = self.basis(x0.device, x0.dtype)
        return x0 + (a * uv[0] + b * uv[1]).reshape(x0.shape)

    def key(self) -> str:
        """Short content hash (basis and kind), e.g. for caching grids computed on this plane."""
        import hashlib

        h = hashlib.sha1(self.kind.encode())
        h.update(np.ascontiguousarray(self.u, dtype=np.float32).tobytes())
        h.update(np.ascontiguousarray(self.v, dtype=np.float32).tobytes())
        return h.hexdigest()[:16]


def _sample(x: torch.Tensor) -> torch.Tensor:
    """One sample without batch axis: accepts (C, H, W) or (1, C, H, W)."""
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    return x.detach()


def _orthonormalize(d1: torch.Tensor, d2: torch.Tensor, rel_tol: float = 1e-6):
    """Gram-Schmidt on two flattened float64 directions.

    Returns (u, v, status); status is 'ok', 'first-zero' (d1 ~ 0: u undefined) or 'parallel'
    (d2 has no component orthogonal to d1 above ``rel_tol`` of its norm: v undefined). Re-
    orthogonalizes once (classical GS twice is as accurate as modified GS for two vectors).
    """
    n1 = d1.norm()
    if not torch.isfinite(n1) or n1 == 0:
        return None, None, "first-zero"
    u = d1 / n1
    n2 = d2.norm()
    w = d2 - (d2 @ u) * u
    w = w - (w @ u) * u
    if n2 == 0 or w.norm() <= rel_tol * n2:
        return u, None, "parallel"
    return u, w / w.norm(), "ok"


def _random_unit_orthogonal(u: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(int(seed))
    r = torch.randn(u.shape, generator=g, dtype=torch.float64)
    r = r - (r @ u) * u
    r = r - (r @ u) * u
    return r / r.norm()


def _make_plane(u: torch.Tensor, v: torch.Tensor, shape, kind, description, points) -> Plane:
    return Plane(u.reshape(shape).to(torch.float32).cpu().numpy(),
                 v.reshape(shape).to(torch.float32).cpu().numpy(),
                 kind, description, dict(points))


def random_plane(x0: torch.Tensor, seed: int = 0) -> Plane:
    """Plane through x0 spanned by two random orthonormal directions (Fig. 1 and S1).

    x0: (C, H, W) or (1, C, H, W) sample in [0, 1] pixel space (only its shape is used).
    The directions are i.i.d. Gaussian vectors, Gram-Schmidt orthonormalized in float64, drawn
    from a CPU generator seeded with ``seed``, so the same seed gives the same plane on any
    machine and device (isotropic: the plane is uniform on the Grassmannian).
    """
    x0 = _sample(x0)
    d = x0.numel()
    g = torch.Generator().manual_seed(int(seed))
    r = torch.randn(2, d, generator=g, dtype=torch.float64)
    u, v, status = _orthonormalize(r[0], r[1])
    assert status == "ok"  # two Gaussian vectors in d >= 2 dimensions are independent a.s.
    return _make_plane(u, v, x0.shape, "random", f"random plane, seed {seed}", {})


def _fgsm_perturbation(model: nn.Module, x0: torch.Tensor, y0: int, eps: float) -> torch.Tensor:
    """FGSM example minus x0: clip(x0 + eps sign(d CE/dx), 0, 1) - x0, pixel space (eq. 10)."""
    dev = _model_device(model)
    xb = x0[None].to(dev, _model_dtype(model))
    yb = torch.tensor([int(y0)], device=dev)
    try:
        from .attacks import fgsm
    except ImportError:  # attacks module not available: same formula, computed here
        fgsm = None
    if fgsm is not None:
        adv = fgsm(model, xb, yb, float(eps))
    else:
        xg = xb.clone().requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(xg), yb, reduction="sum")
            (grad,) = torch.autograd.grad(loss, xg)
        adv = (xb + eps * grad.sign()).clamp(0, 1)
    return (adv - xb)[0].detach().cpu()


def adversarial_plane(model_a: nn.Module, model_b: nn.Module, x0: torch.Tensor, y0: int,
                      eps: float = 0.1, names: tuple[str, str] = ("A", "B"), seed: int = 0) -> Plane:
    """Plane through x0 spanned by the FGSM perturbations of two models (Fig. S2).

    x0: (C, H, W) or (1, C, H, W) in [0, 1]; y0: its true label; eps: FGSM L_inf step in pixel
    units. The spanning vectors are the actual perturbations delta_k = FGSM_k(x0) - x0, clipped to
    [0, 1] as the attack is, so both adversarial examples lie exactly on the plane; in the paper
    model_a is unprotected (L2 + dropout) and model_b has JR + adversarial training.
    u = delta_a/|delta_a|, v = Gram-Schmidt of delta_b. Degenerate cases: if delta_b is parallel
    to delta_a (e.g. the same model twice), v is a seeded random direction orthogonal to u; if
    delta_a is zero (vanishing gradient), u is delta_b's direction, or random if both vanish.
    The description says which happened. Marked points: 'FGSM <name_a>', 'FGSM <name_b>'.
    """
    x0 = _sample(x0).cpu()
    da = _fgsm_perturbation(model_a, x0, y0, eps).reshape(-1).double()
    db = _fgsm_perturbation(model_b, x0, y0, eps).reshape(-1).double()
    desc = f"FGSM directions (eps={eps:g}, L_inf, pixel space) of {names[0]} and {names[1]}"
    u, v, status = _orthonormalize(da, db)
    if status == "first-zero":
        u, v, status = _orthonormalize(db, da)
        if status == "first-zero":
            r = random_plane(x0, seed)
            u = torch.as_tensor(r.u, dtype=torch.float64).reshape(-1)
            v = torch.as_tensor(r.v, dtype=torch.float64).reshape(-1)
            desc += f"; both perturbations vanish, so the plane is random (seed {seed})"
        else:
            desc += f"; {names[0]}'s perturbation vanishes, u is {names[1]}'s direction"
    if status == "parallel":
        v = _random_unit_orthogonal(u, seed)
        desc += f"; the two directions are parallel, v is random (seed {seed})"
    pts = {}
    for name, d in ((names[0], da), (names[1], db)):
        pts[f"FGSM {name}"] = (float(d @ u), float(d @ v))
    return _make_plane(u, v, x0.shape, "adversarial", desc, pts)


def sample_plane(x0: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor,
                 names: tuple[str, str] = ("x1", "x2")) -> Plane:
    """Plane through three samples x0, x1, x2 (as in dbViz), pixel space.

    u = (x1 - x0)/|x1 - x0|, v = Gram-Schmidt of x2 - x0; x1 and x2 are marked at their exact
    plane coordinates (x1 at (|x1 - x0|, 0)). Raises ValueError if the three are collinear.
    """
    x0, x1, x2 = (_sample(t).cpu() for t in (x0, x1, x2))
    d1 = (x1 - x0).reshape(-1).double()
    d2 = (x2 - x0).reshape(-1).double()
    u, v, status = _orthonormalize(d1, d2)
    if status != "ok":
        raise ValueError(f"sample_plane: the three samples are degenerate ({status})")
    pts = {names[0]: (float(d1 @ u), float(d1 @ v)), names[1]: (float(d2 @ u), float(d2 @ v))}
    return _make_plane(u, v, x0.shape, "samples", f"plane through x0, {names[0]} and {names[1]}", pts)


def jacobian_plane(model: nn.Module, x0: torch.Tensor, name: str = "model") -> Plane:
    """Plane of the two most sensitive input directions of ``model`` at x0.

    u, v are the top two right-singular vectors of the pixel-space input-output Jacobian
    J = dz/dx (C x D, logits z) at x0, from :func:`jacviz.jacobian.jacobian_matrix` and
    ``torch.linalg.svd`` in float64: moving a distance t along u changes the logits by s1 t in
    L2 (s1 = top singular value). Sign convention (singular vectors are defined up to sign): the
    entry of largest magnitude is made positive. The description gives s1 and s2.
    """
    from .jacobian import jacobian_matrix

    x0 = _sample(x0)
    J = jacobian_matrix(model, x0[None].to(_model_device(model), _model_dtype(model)))[0]  # (C, *shape)
    J = J.reshape(J.shape[0], -1).double().cpu()
    _, S, Vh = torch.linalg.svd(J, full_matrices=False)
    dirs = []
    for k in range(2):
        d = Vh[k]
        if d[d.abs().argmax()] < 0:
            d = -d
        dirs.append(d)
    desc = (f"top-2 right-singular vectors of {name}'s input-output Jacobian at x0 "
            f"(s1={S[0]:.3g}, s2={S[1]:.3g} logit per unit L2, pixel space)")
    return _make_plane(dirs[0], dirs[1], x0.shape, "jacobian", desc, {})


# ----------------------------------------------------------------------------------------------
# Evaluating models on a plane
# ----------------------------------------------------------------------------------------------

def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _model_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


class _PlaneEvaluator:
    """Evaluates one model at in-plane coordinates; counts the points it evaluated."""

    def __init__(self, model: nn.Module, x0: torch.Tensor, plane: Plane, clip: bool,
                 batch_size: int | None = None):
        self.model = model
        self.device = _model_device(model)
        self.dtype = _model_dtype(model)
        x0 = _sample(x0)
        if tuple(x0.shape) != plane.shape:
            raise ValueError(f"x0 has shape {tuple(x0.shape)} but the plane has {plane.shape}")
        self.shape = tuple(x0.shape)
        self.x0 = x0.reshape(1, -1).to(self.device, self.dtype)
        self.uv = plane.basis(self.device, self.dtype)
        self.clip = clip
        self.batch_size = int(batch_size or DEFAULT_BATCH.get(self.device.type, 1024))
        self.n_evals = 0
        self.after_batch: Callable[[int], None] | None = None  # called with the points evaluated so far

    @torch.inference_mode()
    def logits(self, ab: torch.Tensor) -> torch.Tensor:
        """Logits (N, K) at coordinates ab (N, 2) given on self.device."""
        outs = []
        for s in range(0, len(ab), self.batch_size):
            pts = torch.addmm(self.x0, ab[s:s + self.batch_size], self.uv)  # x0 + a u + b v
            if self.clip:
                pts.clamp_(0, 1)
            outs.append(self.model(pts.view(-1, *self.shape)))
            if self.after_batch:
                self.after_batch(self.n_evals + s + len(pts))
        self.n_evals += len(ab)
        return torch.cat(outs) if outs else torch.empty(0, device=self.device)

    @torch.inference_mode()
    def summary(self, a: np.ndarray, b: np.ndarray):
        """(label int64, max softmax float32, top1-top2 logit margin float32) numpy arrays."""
        ab = torch.as_tensor(np.stack([a, b], 1), dtype=self.dtype, device=self.device)
        if len(ab) == 0:
            e = np.empty(0, np.float32)
            return np.empty(0, np.int64), e, e
        z = self.logits(ab).float()
        top = z.topk(2, dim=1).values
        # max softmax = 1 / sum_k exp(z_k - z_max), without forming the full softmax
        conf = 1.0 / torch.exp(z - top[:, :1]).sum(1)
        # argmax (not topk's index) so that ties break as in labels() and everywhere else
        return (z.argmax(1).cpu().numpy().astype(np.int64), conf.cpu().numpy(),
                (top[:, 0] - top[:, 1]).cpu().numpy())

    @torch.inference_mode()
    def labels(self, ab: torch.Tensor) -> torch.Tensor:
        return self.logits(ab).argmax(1)


@dataclass(frozen=True, eq=False)
class CellMap:
    """One model's predictions on a plane grid.

    labels: (R, R) int64 predicted class; confidence: (R, R) float32 max softmax in [1/K, 1];
    margin: (R, R) float32 top-1 minus top-2 logit (>= 0; 0 on a decision boundary).
    Indexing [i, j] = (b = coords[i], a = coords[j]). coords: (R,) float64 in-plane L2 distances
    (pixel space), symmetric, containing 0 exactly when R is odd. n_evals: model evaluations
    (forward samples) spent. center_class: the model's prediction at x0. In ``mode='adaptive'``
    points of uniform cells are filled (see :func:`decision_plane`); ``evaluated`` marks the
    points that were actually evaluated.
    """

    labels: np.ndarray
    confidence: np.ndarray
    margin: np.ndarray
    coords: np.ndarray
    n_evals: int
    center_class: int
    mode: str
    evaluated: np.ndarray
    clip: bool = False

    @property
    def extent(self) -> float:
        return float(self.coords[-1])


def grid_coords(extent: float, resolution: int) -> np.ndarray:
    """(R,) symmetric coordinates in [-extent, extent]; exactly 0 at the centre when R is odd."""
    if resolution < 2:
        raise ValueError("resolution must be >= 2")
    half = (resolution - 1) / 2
    return extent * (np.arange(resolution) - half) / half


def _dense(ev: _PlaneEvaluator, coords: np.ndarray):
    R = len(coords)
    bb, aa = np.meshgrid(coords, coords, indexing="ij")
    lab, conf, marg = ev.summary(aa.ravel(), bb.ravel())
    return lab.reshape(R, R), conf.reshape(R, R), marg.reshape(R, R), np.ones((R, R), bool)


def _breakpoints(R: int, step: int) -> np.ndarray:
    bp = np.arange(0, R, step)
    return bp if bp[-1] == R - 1 else np.append(bp, R - 1)


def _adaptive(ev: _PlaneEvaluator, coords: np.ndarray, coarse: int, safety: float,
              progress: Callable[[float], None] | None = None):
    """Quadtree refinement on the index grid; every level is one batched evaluation.

    Cells are index rectangles [i0, i1] x [j0, j1] whose four corners are evaluated. A cell is
    *settled* when its corners share one label and every point of the cell is provably inside
    that class under a Lipschitz bound on the margin: min corner margin > safety * slope * h,
    where h is the cell's half-diagonal (L2 units; the farthest any point is from its nearest
    corner) and slope a robust estimate of |d margin / d(a, b)| (see below). Why the margin test:
    corner labels alone miss islands and thin slivers of other classes inside a cell whose
    corners agree; the margin (top1 - top2, continuous, 0 on every boundary) must drop to 0 to
    cross a boundary, which it cannot do within m / slope of a corner with margin m. The slope is
    estimated, not bounded, so this is a well-founded heuristic rather than a proof; cells at most
    _CORNER_ONLY steps wide skip the margin test. Unsettled cells are split in two along each axis
    longer than one grid step; cells of one grid step are fully evaluated. Points inside settled
    cells that were never evaluated are filled at the end (corner label, bilinear values).
    progress: called after each level with the share of the window's area in cells already finished
    (settled, or one grid step wide and so fully evaluated); 1.0 at the end.
    Returns (labels, confidence, margin, evaluated) arrays of shape (R, R).
    """
    R = len(coords)
    step = float(coords[1] - coords[0])
    finished_area = 0
    lab = np.full((R, R), -1, np.int64)
    conf = np.zeros((R, R), np.float32)
    marg = np.zeros((R, R), np.float32)
    done = np.zeros((R, R), bool)

    def evaluate(ii: np.ndarray, jj: np.ndarray):
        flat = np.unique(ii * R + jj)
        flat = flat[~done.ravel()[flat]]
        if len(flat) == 0:
            return
        i, j = np.divmod(flat, R)
        l, c, m = ev.summary(coords[j], coords[i])
        lab[i, j], conf[i, j], marg[i, j] = l, c, m
        done[i, j] = True

    bp = _breakpoints(R, coarse)
    I, J = np.meshgrid(bp, bp, indexing="ij")
    evaluate(I.ravel(), J.ravel())

    # Slope of the margin per unit L2 distance, from differences between neighbouring coarse
    # points. The margin |z1 - z2| is Lipschitz; coarse differences underestimate the local maximum
    # slope, hence the safety factor and the use of a high quantile, not the median.
    Mc = marg[np.ix_(bp, bp)]
    dist = np.diff(bp) * step
    g = np.concatenate([(np.abs(np.diff(Mc, axis=0)) / dist[:, None]).ravel(),
                        (np.abs(np.diff(Mc, axis=1)) / dist[None, :]).ravel()])
    slope = float(np.quantile(g, 0.9)) if len(g) else 0.0

    i0, j0 = np.meshgrid(bp[:-1], bp[:-1], indexing="ij")
    i1, j1 = np.meshgrid(bp[1:], bp[1:], indexing="ij")
    i0, i1, j0, j1 = i0.ravel(), i1.ravel(), j0.ravel(), j1.ravel()
    settled = []
    while len(i0):
        l00, l01, l10, l11 = lab[i0, j0], lab[i0, j1], lab[i1, j0], lab[i1, j1]
        same = (l00 == l01) & (l00 == l10) & (l00 == l11)
        mmin = np.minimum(np.minimum(marg[i0, j0], marg[i0, j1]), np.minimum(marg[i1, j0], marg[i1, j1]))
        h = 0.5 * step * np.hypot(i1 - i0, j1 - j0)
        small = np.maximum(i1 - i0, j1 - j0) <= _CORNER_ONLY
        ok = same & (small | (mmin > safety * slope * h))
        leaf = ((i1 - i0) <= 1) & ((j1 - j0) <= 1)
        if ok.any():
            settled.append((i0[ok], i1[ok], j0[ok], j1[ok]))
        split = ~ok & ~leaf
        if progress:
            finished_area += int(((i1 - i0) * (j1 - j0))[~split].sum())
            progress(finished_area / (R - 1) ** 2)
        i0, i1, j0, j1 = i0[split], i1[split], j0[split], j1[split]
        if not len(i0):
            break
        im = np.where(i1 - i0 >= 2, (i0 + i1) // 2, i0)
        jm = np.where(j1 - j0 >= 2, (j0 + j1) // 2, j0)
        evaluate(np.concatenate([im, im, i0, i1, im]), np.concatenate([j0, j1, jm, jm, jm]))
        # children: split rows at im (when long enough) and columns at jm
        ri = i1 - i0 >= 2
        rj = j1 - j0 >= 2
        rows = [(i0, np.where(ri, im, i1), np.ones_like(ri)), (im, i1, ri)]
        cols = [(j0, np.where(rj, jm, j1), np.ones_like(rj)), (jm, j1, rj)]
        parts = [(a0[mr & mc], a1[mr & mc], b0[mr & mc], b1[mr & mc])
                 for a0, a1, mr in rows for b0, b1, mc in cols]
        i0, i1, j0, j1 = (np.concatenate([p[k] for p in parts]) for k in range(4))

    for ci0, ci1, cj0, cj1 in settled:
        _fill(lab, conf, marg, done, ci0, ci1, cj0, cj1)
    return lab, conf, marg, done


def _fill(lab, conf, marg, done, i0, i1, j0, j1):
    """Fill never-evaluated points of settled cells: corner label, bilinear confidence/margin.

    Vectorized per distinct cell size (a handful of sizes), so no Python loop over cells.
    Evaluated points (``done``) are never overwritten.
    """
    di, dj = i1 - i0, j1 - j0
    for sdi, sdj in set(zip(di.tolist(), dj.tolist())):
        sel = (di == sdi) & (dj == sdj)
        a0, b0 = i0[sel], j0[sel]
        I = a0[:, None, None] + np.arange(sdi + 1)[None, :, None]
        J = b0[:, None, None] + np.arange(sdj + 1)[None, None, :]
        I, J = np.broadcast_arrays(I, J)
        todo = ~done[I, J]
        I, J = I[todo], J[todo]
        cell = np.broadcast_to(np.arange(len(a0))[:, None, None], todo.shape)[todo]
        wi = (I - a0[cell]) / sdi
        wj = (J - b0[cell]) / sdj
        for arr in (conf, marg):
            c00, c01 = arr[a0, b0][cell], arr[a0, b0 + sdj][cell]
            c10, c11 = arr[a0 + sdi, b0][cell], arr[a0 + sdi, b0 + sdj][cell]
            arr[I, J] = (1 - wi) * ((1 - wj) * c00 + wj * c01) + wi * ((1 - wj) * c10 + wj * c11)
        lab[I, J] = lab[a0, b0][cell]


def decision_plane(models, x0: torch.Tensor, plane: Plane, extent: float = 10.0,
                   resolution: int = 201, clip: bool = False, mode: str = "adaptive",
                   batch_size: int | None = None, coarse: int = 8, safety: float = 1.0,
                   progress: Callable[[int, float, int], None] | None = None):
    """Predictions of several models on one shared (R, R) grid of the plane x0 + a u + b v.

    models: an nn.Module or a sequence of them (eval mode; each evaluated on its own device, the
      grid points built there). x0: (C, H, W) or (1, C, H, W) sample in [0, 1] pixel space.
    extent: half-width of the window; a, b in [-extent, extent] are L2 distances in pixel space
      (u, v are unit vectors). resolution R: points per axis (odd R puts x0 exactly at the centre).
    clip: clip every grid point to [0, 1] before evaluating. Default False, as the paper, which
      slices R^784 itself; far from x0 the points are then not images.
    mode: 'dense' evaluates all R^2 points. 'adaptive' evaluates a coarse grid (every ``coarse``
      points) and refines, quadtree level by level (each level one batched evaluation), only the
      cells whose corner labels disagree or whose corner margins are too small to rule out a
      boundary inside (see ``_adaptive``); points inside settled cells are *filled*, not
      evaluated: their label is the corners' common label and their confidence and margin are
      bilinear interpolations of the corners' values. On trained LeNet' it agrees with dense
      labels on >= 99.9% of points at a fraction of the evaluations; ``safety`` scales the margin
      test (larger: more evaluations, fewer misses).
    batch_size: points per forward pass (default: DEFAULT_BATCH for the model's device type).
    progress: called as ``progress(model index, fraction done, points evaluated)``; the fraction is the
      share of the R^2 points evaluated (dense, after each forward pass) or of the window's area settled
      (adaptive, after each level). A DDNet took ~130 s for a dense 201 x 201 grid and ~12 s adaptive
      on one thread of the project's 2-core CPU VM, beside two trainings.
    Returns a list of :class:`CellMap`, one per model, in order.
    """
    if mode not in ("adaptive", "dense"):
        raise ValueError("mode must be 'adaptive' or 'dense'")
    if isinstance(models, nn.Module):
        models = [models]
    coords = grid_coords(extent, resolution)
    out = []
    for model in models:
        ev = _PlaneEvaluator(model, x0, plane, clip, batch_size)
        center = int(ev.labels(torch.zeros(1, 2, dtype=ev.dtype, device=ev.device))[0])
        ev.n_evals = 0  # the centre query is bookkeeping; the grid has its own count
        k = len(out)
        if mode == "dense":
            if progress:
                ev.after_batch = lambda n, k=k: progress(k, n / len(coords) ** 2, n)
            lab, conf, marg, evaluated = _dense(ev, coords)
        else:
            lab, conf, marg, evaluated = _adaptive(
                ev, coords, max(1, int(coarse)), float(safety),
                (lambda f, k=k, ev=ev: progress(k, f, ev.n_evals)) if progress else None)
        out.append(CellMap(lab, conf, marg, coords, ev.n_evals, center, mode, evaluated, clip))
    return out


# ----------------------------------------------------------------------------------------------
# Distance to the closest decision boundary within the plane
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Boundary:
    """Closest decision boundary to x0 within a plane (pixel-space L2 units).

    radius: distance from x0 to the boundary point found, or ``math.inf`` when no ray left x0's
      class within ``max_radius`` (the window is then entirely one cell along the rays tried).
    angle: direction of that point, radians from +u towards +v (nan when radius is inf).
    point: its (a, b) plane coordinates (nan when inf). center_class: x0's predicted class;
    other_class: the class just beyond the boundary (-1 when inf). n_evals: model evaluations.
    bracket: the final bisection bracket width (the boundary lies within radius +- bracket/2).
    """

    radius: float
    angle: float
    point: tuple[float, float]
    center_class: int
    other_class: int
    n_evals: int
    bracket: float

    @property
    def found(self) -> bool:
        return math.isfinite(self.radius)


def boundary_is_an_image(x0: torch.Tensor, plane: Plane, boundary: Boundary, clip: bool, tol: float = 1e-6) -> bool:
    """Whether the boundary point the plane found is an image in [0, 1] (as every point is when the plane
    is clipped), i.e. a point a box-constrained attack such as CW-L2 could reach: then it witnesses a
    misclassified image within ``boundary.radius`` of x0. Unclipped planes (the paper's) leave the box
    far from x0, and a boundary point out there says nothing about images."""
    if not boundary.found:
        return False
    if clip:
        return True  # the model saw clip(x0 + a u + b v), an image no farther from x0 than the plane point
    p = plane.point(x0.double(), *boundary.point)
    return bool(p.min() >= -tol and p.max() <= 1 + tol)


def _ray_ab(angles: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """(N, 2) plane coordinates of points at ``radii`` along rays at ``angles`` (both (N,))."""
    return torch.stack([radii * torch.cos(angles), radii * torch.sin(angles)], 1)


def _bisect(ev: _PlaneEvaluator, c0: int, angles, lo, hi, tol: float):
    """Shrink brackets [lo, hi] (lo inside c0, hi outside) along rays until hi - lo <= tol.

    All rays are bisected together, one batched evaluation per halving. Returns (lo, hi, label
    at hi). Float64 on the host keeps the radii exact; only the points are cast for the model.
    """
    lo, hi = lo.clone(), hi.clone()
    while len(lo) and float((hi - lo).max()) > tol:
        mid = 0.5 * (lo + hi)
        lab = ev.labels(_ray_ab(angles, mid).to(ev.device, ev.dtype)).cpu()
        inside = lab == c0
        lo = torch.where(inside, mid, lo)
        hi = torch.where(inside, hi, mid)
    lab_hi = ev.labels(_ray_ab(angles, hi).to(ev.device, ev.dtype)).cpu() if len(hi) else hi.long()
    return lo, hi, lab_hi


def _march(ev: _PlaneEvaluator, c0: int, angles: torch.Tensor, r_start: float, r_stop: float,
           step: float, chunk: int = 4, progress: Callable[[float, int], None] | None = None):
    """First exit of x0's class along each ray, sampled every ``step`` from r_start to r_stop.

    All rays advance in lockstep, ``chunk`` radii per batched evaluation, and the march stops at
    the first chunk in which any ray leaves the class: rays that leave later cannot hold a closer
    boundary. Returns (k_first, radii) with k_first the index into ``radii`` of the earliest exit
    (or None) and the rays (boolean mask) whose first exit is at that index.
    """
    n = int(math.ceil((r_stop - r_start) / step - 1e-9))
    radii = r_start + step * torch.arange(1, max(n, 0) + 1, dtype=torch.float64)
    if n <= 0:
        return None, radii, None
    radii[-1] = min(float(radii[-1]), r_stop)
    for k0 in range(0, n, chunk):
        rr = radii[k0:k0 + chunk]
        A = angles[:, None].expand(-1, len(rr)).reshape(-1)
        Rr = rr[None, :].expand(len(angles), -1).reshape(-1)
        out = (ev.labels(_ray_ab(A, Rr).to(ev.device, ev.dtype)).cpu() != c0).view(len(angles), len(rr))
        if progress:
            progress(float(rr[-1]), ev.n_evals)
        if out.any():
            k = int(out.any(0).nonzero()[0])
            return k0 + k, radii, out[:, k]
    return None, radii, None


def in_plane_boundary(model: nn.Module, x0: torch.Tensor, plane: Plane, max_radius: float = 10.0,
                      n_rays: int = 180, tol: float = 1e-3, step: float | None = None,
                      clip: bool = False, refine: int = 2, fan: int = 16,
                      batch_size: int | None = None,
                      progress: Callable[[float, int], None] | None = None) -> Boundary:
    """Closest point to x0 in the plane where ``model``'s prediction changes (Fig. 1's circle).

    Method: ``n_rays`` rays at uniform angles march outward from x0 in lockstep with radial
    ``step`` (default max_radius / 48) until some ray first leaves x0's predicted class; the rays
    that leave in that step are bisected to ``tol`` (L2, pixel space), and the best one is kept.
    Then ``refine`` times a fan of ``fan`` rays around the best angle (spanning the neighbouring
    rays' angles, shrinking each time) is marched near the current radius and bisected, which
    removes the angular discretization error (a boundary met obliquely between two rays).
    Resolution limits: a sliver of another class thinner than ``step`` along every ray, or a thin
    wedge pointing at x0 between rays, can be missed, as by any sampling method.
    Cost: about n_rays * radius / step model evaluations plus a few hundred for the bisections and
    fans (at most n_rays * 48 + ..., reached when no boundary lies within max_radius).
    x0: (C, H, W) or (1, C, H, W) in [0, 1]; max_radius, step, tol: L2 distances in pixel space.
    progress: called as ``progress(radius, points evaluated)`` as the first march reaches each radius (its
    last call has the radius where a ray first left the class, or max_radius); the bisections and fans after
    it take a few hundred more points. A DDNet took ~37 s (7,700 points) on one thread of the project's
    2-core CPU VM, beside two trainings.
    Returns a :class:`Boundary`; radius is ``math.inf`` (not max_radius) when no boundary is met
    within max_radius.
    """
    step = float(step) if step else max_radius / 48
    ev = _PlaneEvaluator(model, x0, plane, clip, batch_size)
    c0 = int(ev.labels(torch.zeros(1, 2, dtype=ev.dtype, device=ev.device))[0])
    angles = torch.arange(n_rays, dtype=torch.float64) * (2 * math.pi / n_rays)
    best = _first_crossing(ev, c0, angles, 0.0, max_radius, step, tol, progress=progress)
    if best is None:
        return Boundary(math.inf, math.nan, (math.nan, math.nan), c0, -1, ev.n_evals, math.nan)
    half_width = 2 * math.pi / n_rays  # the first fan spans the two neighbouring rays
    for _ in range(max(0, refine)):
        r_best, a_best = best[0], best[1]
        fan_ang = a_best + torch.linspace(-half_width, half_width, fan + 2, dtype=torch.float64)[1:-1]
        # The coarse rays were inside up to about r_best - step: march the fan finely near r_best
        cand = _first_crossing(ev, c0, fan_ang, max(0.0, r_best - 2 * step), min(r_best + step, max_radius),
                               step / 4, tol, chunk=12)
        if cand is not None and cand[0] < r_best:
            best = cand
        half_width = half_width / (fan / 2)
    r_hi, a_best, l_best, w_best = best
    r = r_hi - w_best / 2  # the bracket midpoint: the boundary is within +- w/2 of it
    return Boundary(r, a_best, (r * math.cos(a_best), r * math.sin(a_best)), c0, l_best, ev.n_evals, w_best)


def _first_crossing(ev: _PlaneEvaluator, c0: int, angles: torch.Tensor, r_start: float, r_stop: float,
                    step: float, tol: float, chunk: int = 4, progress: Callable[[float, int], None] | None = None):
    """Nearest exit of class c0 over rays: lockstep march from r_start, then bisection.

    Returns (r_outside, angle, label beyond, bracket width) of the closest crossing, or None.
    Points at r_start are assumed inside c0; rays already outside at their first sample past a
    positive r_start are re-marched from x0 (r = 0, 4x coarser step), so a closer crossing is
    not skipped.
    """
    k, radii, hit = _march(ev, c0, angles, r_start, r_stop, step, chunk, progress)
    if k is None:
        return None
    ang = angles[hit]
    if k == 0 and r_start > 0:
        return _first_crossing(ev, c0, ang, 0.0, float(radii[0]), step * 4, tol, chunk)
    lo = torch.full((len(ang),), float(radii[k - 1]) if k > 0 else r_start, dtype=torch.float64)
    hi = torch.full((len(ang),), float(radii[k]), dtype=torch.float64)
    lo, hi, lab = _bisect(ev, c0, ang, lo, hi, tol)
    j = int(hi.argmin())
    return float(hi[j]), float(ang[j]), int(lab[j]), float(hi[j] - lo[j])


def in_plane_radius(model: nn.Module, x0: torch.Tensor, plane: Plane, max_radius: float = 10.0,
                    n_rays: int = 180, tol: float = 1e-3, **kw) -> float:
    """Radius of the largest circle around x0 in the plane holding only x0's predicted class.

    L2 distance in pixel space, accurate to ``tol`` (see :func:`in_plane_boundary` for the method
    and its resolution limits); ``math.inf`` when no boundary lies within ``max_radius``.
    """
    return in_plane_boundary(model, x0, plane, max_radius, n_rays, tol, **kw).radius


@dataclass(frozen=True)
class CellMeasures:
    """area_fraction: share of grid points of x0's class in the window; n_fragments: connected
    pieces (4-connectivity) of that class; center_fraction: share of the window taken by the
    piece that contains the centre point (0 if the centre is another class, or R is even)."""

    area_fraction: float
    n_fragments: int
    center_fraction: float


def cell_measures(labels: np.ndarray, center_class: int) -> CellMeasures:
    """Area fraction and connected fragments of ``center_class`` in an (R, R) label map."""
    from scipy import ndimage

    labels = np.asarray(labels)
    mask = labels == int(center_class)
    comp, n = ndimage.label(mask)  # default structure: 4-connectivity
    R0, R1 = labels.shape
    cc = comp[R0 // 2, R1 // 2] if (R0 % 2 and R1 % 2) else 0
    center_fraction = float((comp == cc).mean()) if cc else 0.0
    return CellMeasures(float(mask.mean()), int(n), center_fraction)


# ----------------------------------------------------------------------------------------------
# Command line: python -m jacviz plane
# ----------------------------------------------------------------------------------------------

def _parser():
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m jacviz plane",
        description="Cross sections of decision cells (paper Fig. 1, S1, S2): several checkpoints on one plane "
                    "through a test sample, written as an interactive HTML figure (or PNG).",
        epilog="Coordinates are L2 distances in [0, 1] pixel space. The adversarial plane is spanned by the FGSM "
               "perturbations of the first two checkpoints (paper: unprotected model first, JR+AT second); the "
               "Jacobian plane uses the first checkpoint.")
    p.add_argument("--checkpoints", nargs="+", required=True, metavar="PATH")
    p.add_argument("--sample", type=int, default=0, help="test-set index of x0")
    p.add_argument("--plane", choices=["random", "adversarial", "samples", "jacobian"], default="random")
    p.add_argument("--seed", type=int, default=0, help="random plane seed (fallback directions otherwise)")
    p.add_argument("--eps", type=float, default=0.1, help="FGSM L_inf step for --plane adversarial (pixel units)")
    p.add_argument("--others", type=int, nargs=2, default=None, metavar=("I1", "I2"),
                   help="test indices of the two other samples for --plane samples (default: sample+1, sample+2)")
    p.add_argument("--extent", type=float, default=10.0, help="half-width of the window, L2 pixel units")
    p.add_argument("--resolution", type=int, default=201, help="grid points per axis")
    p.add_argument("--mode", choices=["adaptive", "dense"], default="adaptive")
    p.add_argument("--clip", action="store_true", help="clip grid points to [0, 1] (the paper does not)")
    p.add_argument("--dataset", default=None, help="test set of x0 (default: the first checkpoint's dataset)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--out", default="plane.html", help="output .html or .png")
    p.add_argument("--png", action="store_true", help="also write a PNG next to the HTML (needs kaleido)")
    return p


def cli(argv: list[str]) -> int:
    """``python -m jacviz plane ...``: compute the planes, print a per-model summary, write the figure.

    Returns 0 on success, 1 when the static (PNG) export fails (the HTML, if requested, is still
    written and the reason is printed), 2 on bad arguments.
    """
    import sys
    import time
    from pathlib import Path

    from . import checkpoints, data
    from .plots import decision_cells_figure

    a = _parser().parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    try:
        cks = [checkpoints.load(p, device=device) for p in a.checkpoints]
    except checkpoints.CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    dataset = a.dataset or cks[0].config.dataset
    x, y = data.load(dataset, "test")
    if not 0 <= a.sample < len(x):
        print(f"error: --sample must be in [0, {len(x) - 1}]", file=sys.stderr)
        return 2
    x0, y0 = x[a.sample], int(y[a.sample])
    names = [c.config.label() for c in cks]
    mods = [c.model for c in cks]
    if a.plane == "random":
        plane = random_plane(x0, a.seed)
    elif a.plane == "adversarial":
        if len(cks) < 2:
            print("note: one checkpoint given, so the adversarial plane uses its FGSM direction twice "
                  "(the second direction is random)", file=sys.stderr)
        i_b = 1 if len(cks) > 1 else 0
        plane = adversarial_plane(mods[0], mods[i_b], x0, y0, a.eps, names=(names[0], names[i_b]), seed=a.seed)
    elif a.plane == "samples":
        i1, i2 = a.others or ((a.sample + 1) % len(x), (a.sample + 2) % len(x))
        try:
            plane = sample_plane(x0, x[i1], x[i2], names=(f"#{i1}", f"#{i2}"))
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    else:
        plane = jacobian_plane(mods[0], x0, name=names[0])

    t = time.perf_counter()
    maps = decision_plane(mods, x0, plane, a.extent, a.resolution, clip=a.clip, mode=a.mode)
    t_grid = time.perf_counter() - t
    max_r = math.hypot(a.extent, a.extent)
    bounds = [in_plane_boundary(m, x0, plane, max_radius=max_r, clip=a.clip) for m in mods]
    class_names = data.CLASS_NAMES.get(dataset, [str(k) for k in range(10)])
    print(f"sample #{a.sample} of {dataset} test (true class {class_names[y0]}); plane: {plane.description}")
    print(f"grid {a.resolution}x{a.resolution} over [-{a.extent:g}, {a.extent:g}]^2 (L2, pixel space), "
          f"{a.mode}, {'clipped' if a.clip else 'unclipped'}: {t_grid:.2f} s on {device}")
    for name, m, b in zip(names, maps, bounds):
        cm = cell_measures(m.labels, m.center_class)
        rad = "inf (none within %.3g)" % max_r if not b.found else f"{b.radius:.4f}"
        print(f"  {name:24s} x0 -> {class_names[m.center_class]:>10s}  in-plane radius {rad}  "
              f"class share {cm.area_fraction:.3f}  fragments {cm.n_fragments}  evals {m.n_evals}")
    for pname, (pa, pb) in plane.points.items():
        print(f"  point {pname}: (a, b) = ({pa:.4f}, {pb:.4f})")

    fig = decision_cells_figure(maps, plane, names, class_names=class_names,
                                radii=[b.radius for b in bounds], true_class=y0)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rc = 0
    if out.suffix.lower() == ".png":
        targets_png, html = [out], None
    else:
        html = out if out.suffix.lower() in (".html", ".htm") else out.with_suffix(".html")
        targets_png = [html.with_suffix(".png")] if a.png else []
    if html is not None:
        fig.write_html(str(html), include_plotlyjs=True)  # self-contained: works offline
        print(f"wrote {html}")
    for png in targets_png:
        try:
            fig.write_image(str(png), width=460 * min(len(maps), 3) + 80, scale=2)
            print(f"wrote {png}")
        except Exception as err:  # kaleido missing, or no Chromium it can start
            print(f"error: static PNG export failed ({type(err).__name__}: {str(err).splitlines()[0][:300]}). "
                  "It needs the 'kaleido' package and a Chromium/Chrome it can start; write --out fig.html "
                  "for the interactive figure instead.", file=sys.stderr)
            rc = 1
    return rc
