"""Page: cross sections of decision cells around a test sample (Figure 1, S1, S2 of the paper)."""
import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, wait

import numpy as np
import pandas as pd
import streamlit as st

from jacviz import attacks, cells, data, gallery, plots
from jacviz.jacobian import jacobian_frobenius
from jacviz.ui import common

PAGE = "cells"
DATASETS = ["mnist", "usps", "cifar10"]
PLANES = {
    "random": "Random (Fig. 1, S1)",
    "adversarial": "Adversarial: FGSM directions of two models (Fig. S2)",
    "samples": "Through two other test samples",
    "jacobian": "Jacobian: a model's two most sensitive directions",
}
RESOLUTIONS = [51, 101, 201, 301]
# Default half-width of the window per plane (L2, pixel units): random directions meet boundaries
# far out (tens of pixel-L2 units on MNIST), FGSM and Jacobian directions within a few units,
# other test samples lie ~10 away.
DEFAULT_EXTENT = {"random": 25.0, "adversarial": 6.0, "samples": 15.0, "jacobian": 6.0}
# In-plane radius search: rays from x0 and radial steps per ray up to the window's half-width (then
# bisection to 1e-3 and angular refinement around the closest hit); coarser than cells' defaults
# (180 x 64) to keep a sample change interactive on a CPU (~2k instead of ~11.5k model evaluations
# per model when no boundary is near), and still as fine as the 101-point grid the figure shows.
N_RAYS, RAY_STEPS = 64, 32
KEYS = ["cells_dataset", "cells_sample", "cells_plane", "cells_seed", "cells_models", "cells_extent",
        "cells_res", "cells_clip", "cells_mode", "cells_eps", "cells_a", "cells_b", "cells_x1", "cells_x2",
        "cells_jmodel"]


def token(e: common.ModelEntry) -> str:
    """Cache key of a model: config hash, file and modification time."""
    return f"{e.id}:{e.ckpt.path}:{e.ckpt.path.stat().st_mtime_ns}"


# ------------------------------------------------------------------------------- cached compute
@st.cache_data(show_spinner=False, max_entries=64)
def _plane(kind, dataset, index, seed, eps, x1, x2, tokens, names, _models) -> cells.Plane:
    x, y = data.load(dataset, "test")
    x0 = x[index]
    if kind == "random":
        return cells.random_plane(x0, seed)
    if kind == "adversarial":
        return cells.adversarial_plane(_models[0], _models[1], x0, int(y[index]), eps, names=tuple(names), seed=seed)
    if kind == "samples":
        return cells.sample_plane(x0, x[x1], x[x2], names=(f"#{x1}", f"#{x2}"))
    return cells.jacobian_plane(_models[0], x0, name=names[0])


@st.cache_data(show_spinner=False, max_entries=128)
def _map(tok, dataset, index, plane_key, extent, resolution, clip, mode, _model, _plane, _progress=None) -> cells.CellMap:
    x, _ = data.load(dataset, "test")
    return cells.decision_plane([_model], x[index], _plane, extent=extent, resolution=resolution,
                                clip=clip, mode=mode,
                                progress=(lambda _k, f, n: _progress(f, n)) if _progress else None)[0]


@st.cache_data(show_spinner=False, max_entries=256)
def _at_x0(tok, dataset, index, _model) -> dict:
    """Prediction, max softmax and exact ||J(x0)||_F (normalized and pixel input) of one model."""
    x, _ = data.load(dataset, "test")
    x0 = x[index:index + 1]
    pred, conf = gallery.predict(_model, x0)
    jn = float(jacobian_frobenius(_model, x0.to(common.device()), "normalized")[0])
    std = float(_model.normalize.std)
    return {"pred": int(pred[0]), "conf": float(conf[0]), "jac_normalized": jn, "jac_pixel": jn / std}


@st.cache_data(show_spinner=False, max_entries=256)
def _boundary(tok, dataset, index, plane_key, clip, max_radius, _model, _plane, _progress=None) -> cells.Boundary:
    """Closest point of the plane where the model's prediction changes (the circle of Fig. 1)."""
    x, _ = data.load(dataset, "test")
    return cells.in_plane_boundary(_model, x[index], _plane, max_radius=max_radius, clip=clip,
                                   n_rays=N_RAYS, step=max_radius / RAY_STEPS, progress=_progress)


CW_SETTINGS = {"fast": attacks.CW_FAST, "paper": attacks.CW_PAPER}


@st.cache_data(show_spinner=False, max_entries=512)
def _cw(tok, dataset, index, protocol, _model) -> float:
    """CW-L2 minimal fooling distance of x0 (pixel space; 0 if already misclassified, inf if not found)."""
    x, y = data.load(dataset, "test")
    dev = common.device()
    _, dist = attacks.cw_l2(_model, x[index:index + 1].to(dev), y[index:index + 1].to(dev), **CW_SETTINGS[protocol])
    return float(dist[0])


@st.cache_data(show_spinner=False, max_entries=32)
def _predictions(tok, dataset, _model):
    x, _ = data.load(dataset, "test")
    return gallery.predict(_model, x)


# ------------------------------------------------------------------------------------ URL state
def apply_url(url: dict, entries_all) -> None:
    """Validate URL parameters into widget state; bad values fall back with a warning."""
    if not url:
        return
    ds = url.get("dataset")
    if ds is not None:
        if ds in DATASETS:
            st.session_state["cells_dataset"] = ds
        else:
            common.warn(f"URL parameter `dataset={ds}` is not one of {', '.join(DATASETS)}; using mnist.")
    plane = url.get("plane")
    if plane is not None:
        if plane in PLANES:
            st.session_state["cells_plane"] = plane
            st.session_state["cells_extent"] = DEFAULT_EXTENT[plane]
        else:
            common.warn(f"URL parameter `plane={plane}` is not one of {', '.join(PLANES)}; using random.")
    if url.get("seed") is not None:
        st.session_state["cells_seed"] = common.parse_int(url["seed"], 0, 2**31 - 1, "seed", 0)
    if url.get("models") is not None:
        st.session_state["_url_models"] = [t for t in url["models"].split(",") if t]
    if url.get("sample") is not None:
        st.session_state["_url_sample"] = url["sample"]


def resolve_url_models(tokens, entries) -> list[str]:
    """Model ids (or unique labels) from the URL, keeping the valid ones."""
    ids, bad = [], []
    for t in tokens:
        hit = [e.id for e in entries if e.id == t] or [e.id for e in entries if e.config.label() == t]
        if len(hit) >= 1:
            ids.append(hit[0])
        else:
            bad.append(t)
    if bad:
        common.warn(f"URL parameter `models`: {', '.join(bad)} not among the usable models for this dataset; "
                    "ignored." + ("" if ids else " Using the default selection."))
    return list(dict.fromkeys(ids))


# ------------------------------------------------------------------------------------------ page
st.title("Decision cells")
st.caption(
    "Cross sections of decision cells in input space (the paper's Figure 1): a test sample x0 (black "
    "dot) and a 2-D plane through it. Colours are the classes each model predicts on the plane, their "
    "opacity and contours follow the maximum softmax probability, and the circle is the distance from x0 "
    "to the closest decision boundary within the plane. Axes are L2 distances in [0, 1] pixel space.")

entries_all, _ = common.scan_models()
common.restore(PAGE)
apply_url(common.url_params_once(PAGE), entries_all)

sb = st.sidebar
sb.header("Decision-cell settings")
st.session_state.setdefault("cells_dataset", "mnist")
dataset = sb.selectbox("Dataset (test split)", DATASETS, key="cells_dataset",
                       format_func=lambda d: common.DATASET_NAMES[d])
x_all, y_all = common.load_dataset(dataset, "test")
N = len(x_all)
class_names = data.CLASS_NAMES[dataset]

compatible = common.models_for(dataset, entries_all)
by_id = {e.id: e for e in compatible}

# sample
if "_url_sample" in st.session_state:
    st.session_state["cells_sample"] = common.parse_int(st.session_state.pop("_url_sample"), 0, N - 1, "sample", 0)
st.session_state.setdefault("cells_sample", 0)
if not 0 <= int(st.session_state["cells_sample"]) < N:
    st.session_state["cells_sample"] = min(max(0, int(st.session_state["cells_sample"])), N - 1)


def _random_sample():
    st.session_state["cells_sample"] = int(np.random.default_rng().integers(N))


c_idx, c_rand = sb.columns([3, 2], vertical_alignment="bottom")
index = int(c_idx.number_input(f"Test sample index (0-{N - 1})", min_value=0, max_value=N - 1, step=1,
                               key="cells_sample"))
c_rand.button("Random", on_click=_random_sample, help="Pick a random test sample")

# models
if "_url_models" in st.session_state:
    st.session_state["cells_models"] = resolve_url_models(st.session_state.pop("_url_models"), compatible)
cur = [m for m in st.session_state.get("cells_models", []) if m in by_id]
if not cur:
    cur = common.default_model_ids(compatible)
st.session_state["cells_models"] = cur
selected = sb.multiselect("Models", list(by_id), key="cells_models", format_func=lambda i: by_id[i].name,
                          help="Default: the five Table-1 variants none, L2, dropout, JR, L2+dropout+JR")

# plane
def _plane_changed():
    st.session_state["cells_extent"] = DEFAULT_EXTENT[st.session_state["cells_plane"]]


st.session_state.setdefault("cells_plane", "random")
plane_kind = sb.selectbox("Plane", list(PLANES), key="cells_plane", format_func=PLANES.get,
                          on_change=_plane_changed, help="Changing the plane resets the window to its default size")
st.session_state.setdefault("cells_seed", 0)
seed = int(sb.number_input("Plane seed", min_value=0, max_value=2**31 - 1, step=1, key="cells_seed",
                           help="Seed of the random directions (random plane; fallback directions otherwise)"))
plane_models, plane_names, eps, x1, x2 = [], [], 0.0, 0, 0
if plane_kind == "adversarial":
    undefended = [e.id for e in compatible if not e.config.jr and not e.config.adv_train]
    pref_a = [e.id for e in compatible if e.config.label() == "L2+dropout"] + undefended + list(by_id)
    defended = [e.id for e in compatible if e.config.jr and e.config.adv_train]
    pref_b = ([e.id for e in compatible if e.config.label() == "L2+dropout+JR+AT"] + defended
              + [e.id for e in compatible if e.config.jr] + list(by_id)[::-1])
    if by_id:
        if st.session_state.get("cells_a") not in by_id:
            st.session_state["cells_a"] = pref_a[0]
        if st.session_state.get("cells_b") not in by_id:
            st.session_state["cells_b"] = pref_b[0]
        a_id = sb.selectbox("Model A (dark-grey FGSM point)", list(by_id), key="cells_a",
                            format_func=lambda i: by_id[i].name)
        b_id = sb.selectbox("Model B (light-grey FGSM point)", list(by_id), key="cells_b",
                            format_func=lambda i: by_id[i].name)
        plane_models, plane_names = [by_id[a_id], by_id[b_id]], [by_id[a_id].name, by_id[b_id].name]
    st.session_state.setdefault("cells_eps", 0.1)
    eps = float(sb.number_input("FGSM ε (L∞, pixel units)", min_value=0.001, max_value=1.0, step=0.01,
                                format="%.3f", key="cells_eps"))
elif plane_kind == "samples":
    st.session_state.setdefault("cells_x1", (index + 1) % N)
    st.session_state.setdefault("cells_x2", (index + 2) % N)
    for k in ("cells_x1", "cells_x2"):
        st.session_state[k] = min(max(0, int(st.session_state[k])), N - 1)
    x1 = int(sb.number_input("Second sample index", min_value=0, max_value=N - 1, key="cells_x1"))
    x2 = int(sb.number_input("Third sample index", min_value=0, max_value=N - 1, key="cells_x2"))
elif plane_kind == "jacobian" and by_id:
    if st.session_state.get("cells_jmodel") not in by_id:
        st.session_state["cells_jmodel"] = selected[0] if selected else list(by_id)[0]
    j_id = sb.selectbox("Jacobian of", list(by_id), key="cells_jmodel", format_func=lambda i: by_id[i].name)
    plane_models, plane_names = [by_id[j_id]], [by_id[j_id].name]

st.session_state.setdefault("cells_extent", DEFAULT_EXTENT[plane_kind])
extent = float(sb.slider("Half-width of the window (L2, pixel units)", 0.5, 60.0, step=0.5, key="cells_extent"))
st.session_state.setdefault("cells_res", 101)
resolution = int(sb.select_slider("Grid points per axis", RESOLUTIONS, key="cells_res"))
st.session_state.setdefault("cells_clip", False)
clip = sb.checkbox("Clip grid points to [0, 1]", key="cells_clip",
                   help="The paper slices the input space without clipping; far from x0 points are then not images")
st.session_state.setdefault("cells_mode", "adaptive")
mode = sb.radio("Grid evaluation", ["adaptive", "dense"], key="cells_mode", horizontal=True,
                help="adaptive: coarse grid refined where labels change or margins are small (same labels as "
                     "dense on ≥99.9% of points, several times faster); dense: every grid point")

common.keep(PAGE, KEYS)
common.set_url({"dataset": dataset, "sample": index, "plane": plane_kind, "seed": seed,
                "models": ",".join(selected)})
common.show_warnings()

# ------------------------------------------------------------------------------------- gallery
@st.fragment
def sample_gallery():
    def use(i):
        st.session_state["cells_sample"] = int(i)
        st.session_state["_cells_jump"] = True

    if st.session_state.pop("_cells_jump", False):
        st.rerun(scope="app")
    g1, g2, g3 = st.columns([1, 2, 1])
    cls = g1.selectbox("True class", ["any"] + list(range(len(class_names))), key="gal_class",
                       format_func=lambda c: c if c == "any" else f"{c} ({class_names[c]})"
                       if class_names[c] != str(c) else str(c))
    wrong_by = g2.multiselect("Misclassified by", list(by_id), key="gal_wrong", format_func=lambda i: by_id[i].name)
    preds = {}
    if wrong_by:
        with st.spinner("Predicting the test set..."):
            preds = {i: _predictions(token(by_id[i]), dataset, by_id[i].model)[0] for i in wrong_by}
    idx = gallery.select(y_all.numpy(), None if cls == "any" else int(cls), preds, misclassified_by=wrong_by)
    per_page = 24
    pages = max(1, -(-len(idx) // per_page))
    page = int(g3.number_input(f"Page (of {pages})", 1, pages, 1, key="gal_page")) - 1 if pages > 1 else 0
    st.caption(f"{len(idx)} test samples match" + (f"; page {page + 1} of {pages}" if pages > 1 else "")
               + ". Click a number to show that sample.")
    shown = idx[page * per_page:(page + 1) * per_page]
    cols = st.columns(12)
    for k, i in enumerate(shown):
        with cols[k % 12]:
            st.image(gallery.to_image(x_all[i]), width=56)
            st.button(f"#{i}", key=f"gal_use_{i}", on_click=use, args=(int(i),),
                      type="primary" if int(i) == index else "secondary")


with st.expander("Pick a test sample from a gallery (filter by class and by mistakes)"):
    sample_gallery()

# ------------------------------------------------------------------------------------ the cells
if not compatible:
    st.info(f"No usable checkpoint trained on {common.DATASET_NAMES[common.TRAINED_ON[dataset]]} yet. "
            "Train one on the *Train* page (or wait for the shipped checkpoints).")
    st.stop()
if not selected:
    st.info("Select at least one model in the sidebar.")
    st.stop()
if plane_kind in ("adversarial", "jacobian") and not plane_models:
    st.stop()

models_sel = [by_id[i] for i in selected]
y0 = int(y_all[index])
try:
    plane = _plane(plane_kind, dataset, index, seed, eps, x1, x2, tuple(token(e) for e in plane_models),
                   tuple(plane_names), tuple(e.model for e in plane_models))
except ValueError as err:  # e.g. a sample plane through identical images
    st.error(f"Cannot build this plane: {err}. Pick other samples.")
    st.stop()

t_start = time.perf_counter()
max_r = extent


status: dict[int, str] = {}  # what each running model is doing (written by the workers, read here)


def per_model(k, e):
    """Everything the page shows for one model (each piece cached on its own); reports into status[k]."""
    tok, key = token(e), plane.key()
    share = "of the window settled" if mode == "adaptive" else "of the points evaluated"

    def on_map(frac, n):
        status[k] = f"{e.name}: grid {frac:.0%} {share} ({n:,} points)"

    def on_ray(r, n):
        status[k] = f"{e.name}: closest boundary, rays out to {r:.3g} of {max_r:g} ({n:,} points)"

    status[k] = f"{e.name}: grid"
    cmap = _map(tok, dataset, index, key, extent, resolution, clip, mode, e.model, plane, _progress=on_map)
    status[k] = f"{e.name}: closest boundary"
    out = (cmap, _at_x0(tok, dataset, index, e.model),
           _boundary(tok, dataset, index, key, clip, max_r, e.model, plane, _progress=on_ray))
    status.pop(k, None)
    return out


# Models run concurrently (torch ops release the GIL; each op is single-threaded on CPU, see
# common.device), so a 2-core machine works on two models at once; the bar counts finished models
# and its text says where each running one is (cached functions must not draw, so this thread does).
bar = st.progress(0.0, text=f"Evaluating {len(models_sel)} models on {resolution}×{resolution} points...")
with common.script_threads(min(len(models_sel), os.cpu_count() or 1)) as pool:
    futures = {pool.submit(per_model, k, e): k for k, e in enumerate(models_sel)}
    results = [None] * len(models_sel)
    pending = set(futures)
    while pending:
        finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
        for fut in finished:
            results[futures[fut]] = fut.result()
        bar.progress((len(models_sel) - len(pending)) / len(models_sel),
                     text=common.cells_text(len(models_sel) - len(pending), len(models_sel), resolution,
                                            time.perf_counter() - t_start, list(status.values())))
bar.empty()
maps, stats, bounds = (list(t) for t in zip(*results))
radii = [b.radius for b in bounds]
t_compute = time.perf_counter() - t_start

head_img, head_txt = st.columns([1, 9])
head_img.image(gallery.to_image(x_all[index]), width=84)
head_txt.markdown(
    f"**Test sample #{index}** of the {common.DATASET_NAMES[dataset]} test set, true class "
    f"**{class_names[y0]}**.  \n**Plane:** {plane.description}.  \n"
    f"Grid: {resolution}×{resolution} points over [−{extent:g}, {extent:g}]² "
    f"({'clipped to [0, 1]' if clip else 'not clipped, as in the paper'}; {mode} evaluation, "
    f"{sum(m.n_evals for m in maps):,} model evaluations for the grids). Grids, radii and ‖J‖ took "
    f"{t_compute:.2f} s on {common.device_text()} (cached results are reused).")

fig = plots.decision_cells_figure(maps, plane, titles=[e.name for e in models_sel], class_names=class_names,
                                  radii=radii, true_class=y0, max_cols=3, panel_height=380)
st.plotly_chart(fig, width="stretch", config={"toImageButtonOptions": {"format": "png", "scale": 2,
                                                                          "filename": f"cells_{dataset}_{index}_{plane_kind}"}})

rows = []
for e, s, r, m in zip(models_sel, stats, radii, maps):
    meas = cells.cell_measures(m.labels, m.center_class)
    rows.append({
        "model": e.name,
        "prediction at x0": class_names[s["pred"]],
        "correct": s["pred"] == y0,
        "confidence (max softmax)": s["conf"],
        "‖J(x0)‖_F normalized input": s["jac_normalized"],
        "‖J(x0)‖_F pixel input": s["jac_pixel"],
        "in-plane radius (L2 px)": r,
        "x0's class: share of window": meas.area_fraction,
        "x0's class: fragments": meas.n_fragments,
        "x0's cell: share of window": meas.center_fraction,
        "test acc. (trainer)": e.ckpt.metrics.get("test_acc"),
        "test images (trainer)": e.ckpt.metrics.get("n_test"),
        **({"USPS acc. (trainer)": e.ckpt.metrics.get("usps_acc")} if dataset == "usps" else {}),
        "how trained": e.config.describe(),
    })
table = pd.DataFrame(rows)
st.subheader("At x0")
shown = table.copy()
shown["in-plane radius (L2 px)"] = [f"{r:.3f}" if np.isfinite(r) else f"> {max_r:g}" for r in radii]
st.dataframe(shown, hide_index=True, width="stretch",
             column_config={"confidence (max softmax)": st.column_config.NumberColumn(format="%.4f"),
                            "‖J(x0)‖_F normalized input": st.column_config.NumberColumn(format="%.3f"),
                            "‖J(x0)‖_F pixel input": st.column_config.NumberColumn(format="%.3f"),
                            "x0's class: share of window": st.column_config.NumberColumn(format="%.3f"),
                            "x0's cell: share of window": st.column_config.NumberColumn(format="%.3f"),
                            "test acc. (trainer)": st.column_config.NumberColumn(format="%.4f"),
                            "USPS acc. (trainer)": st.column_config.NumberColumn(format="%.4f")})
st.caption(
    "Prediction and confidence: the model's argmax class and its softmax probability at x0. "
    "‖J(x0)‖_F: exact Frobenius norm of the input-output Jacobian of the logits at x0 (C backward passes), "
    "w.r.t. the normalized input (the paper's Table-1 convention) and w.r.t. [0, 1] pixels "
    "(normalized = pixel × std of the input normalization). In-plane radius: L2 distance (pixel units) "
    "from x0 to the closest point in this plane where the prediction differs from the prediction at x0, "
    f"found by marching {N_RAYS} rays outward from x0 and bisecting to 0.001 (the circle in the figure); '> r' if "
    f"none within {max_r:.3g} (the window's half-width)"
    + ("; the plane is clipped to [0, 1], so the model saw clip(x0 + a·u + b·v), whose own distance from x0 is "
       "at most this radius. " if clip else ". ")
    + "Share of window: fraction of the grid points "
    "predicted as the model's class at x0, and fraction taken by the connected cell containing x0; "
    "fragments: connected pieces of that class in the window (4-connectivity). Test accuracy: measured by "
    "the trainer at the end of training on the first 'test images' of the test set of the model's own dataset "
    f"({common.DATASET_NAMES[common.TRAINED_ON[dataset]]})"
    + ("; USPS accuracy: on all of the USPS test set, measured by the trainer." if dataset == "usps" else "."))


@st.fragment
def cw_panel():
    """Carlini-Wagner fooling distances of x0 for the selected models, on request."""
    c1, c2 = st.columns([2, 3], vertical_alignment="bottom")
    protocol = c2.radio("CW-L2 protocol", list(CW_SETTINGS), horizontal=True, key="cells_cw_protocol",
                        format_func=lambda p: f"{p}: {attacks.cw_text(CW_SETTINGS[p])}")
    want_key = f"cw_{dataset}_{index}_{protocol}"
    if c1.button("Compute CW-L2 fooling distance of x0 for each model", key="cells_cw_go",
                 help="Carlini-Wagner L2 (Appendix F), constant c binary-searched per sample. On a CPU the fast "
                      "protocol takes seconds per model, the paper protocol up to a minute."):
        st.session_state[want_key] = True
    if not st.session_state.get(want_key):
        return
    out = []
    bar = st.progress(0.0, text="CW-L2...")
    for k, e in enumerate(models_sel):
        bar.progress(k / len(models_sel), text=f"CW-L2 on {e.name} ({k + 1}/{len(models_sel)})...")
        d = _cw(token(e), dataset, index, protocol, e.model)
        out.append({"model": e.name, "CW-L2 fooling distance (L2 px)": d,
                    "in-plane radius (L2 px)": f"{radii[k]:.3f}" if np.isfinite(radii[k]) else f"> {max_r:g}"})
    bar.empty()
    st.dataframe(pd.DataFrame(out), hide_index=True, width="stretch")
    for k, row in enumerate(out):  # where the plane's boundary point is an image, it witnesses a fooling image
        if np.isinf(row["CW-L2 fooling distance (L2 px)"]) and cells.boundary_is_an_image(
                x_all[index], plane, bounds[k], clip):
            st.warning(f"**{row['model']}:** CW-L2 found no misclassified image, yet this plane leaves x0's cell at "
                       f"L2 {radii[k]:.3f} at a point inside the [0, 1] image box: the attack stopped short "
                       f"({protocol} protocol), so its ∞ is not robustness. Try the paper protocol; CW can stall "
                       "where the logit margin is nearly flat along its path (jacviz.attacks.cw_l2).")
    st.caption(f"CW-L2 distance ({protocol} protocol: {attacks.cw_text(CW_SETTINGS[protocol])}; "
               "Carlini-Wagner f6 logit loss in "
               "tanh space, Appendix F): L2 norm (pixel units) of the smallest misclassified perturbation of x0 the "
               "attack found anywhere in the [0, 1] image box, not just this plane, so it is usually well below the "
               "in-plane radius; 0 if x0 is already misclassified, ∞ if the attack found none. An unclipped plane "
               "(the paper's) leaves that box far from x0, so its radius can belong to a point that is no image. "
               "The fast protocol "
               "is less tight: on a 400-iteration LeNet' (40 MNIST test images) its median distances were 8–15% "
               "larger than the paper protocol's (jacviz.attacks.cw_l2).")


cw_panel()

def _json_safe(v):
    if isinstance(v, float) and not np.isfinite(v):
        return None if np.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def export_json() -> str:
    """Plane, per-model numbers at x0 and the label/confidence maps, built only when downloaded."""
    return json.dumps({
        "dataset": dataset, "sample": index, "true_class": y0,
        "plane": {"kind": plane.kind, "description": plane.description, "points": plane.points, "seed": seed},
        "extent": extent, "resolution": resolution, "clip": clip, "mode": mode,
        "units": "in-plane coordinates and radii: L2 distance in [0, 1] pixel space",
        "coords": maps[0].coords.tolist(),
        "models": [{"name": e.name, "id": e.id, "config": e.config.to_dict(),
                    "at_x0": {k: _json_safe(v) for k, v in s.items()}, "in_plane_radius": _json_safe(r),
                    "labels": m.labels.tolist(), "confidence": np.round(m.confidence, 5).tolist()}
                   for e, s, r, m in zip(models_sel, stats, radii, maps)],
    })


d1, d2, _ = st.columns([1, 1, 3])
# the CSV carries how its radii and shares were measured: they depend on the plane and the window
csv = table.assign(dataset=dataset, sample=index, plane=plane.description, plane_seed=seed,
                   window_half_width_L2_px=extent, resolution=resolution, clipped=clip, evaluation=mode)
d1.download_button("Table (CSV)", csv.to_csv(index=False), f"cells_{dataset}_{index}_{plane_kind}.csv", "text/csv",
                   on_click="ignore")
d2.download_button("Label maps (JSON)", export_json, f"cells_{dataset}_{index}_{plane_kind}.json",
                   "application/json", on_click="ignore")
st.caption("PNG of the figure: the camera icon in the figure's toolbar.")
