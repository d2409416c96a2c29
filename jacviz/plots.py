"""Plotly figures of decision cells (arrays in, figures out; no streamlit, no torch).

:func:`decision_cells_figure` draws the paper's Figure 1 / S1 / S2 style cross sections from the
:class:`jacviz.cells.CellMap` results of :func:`jacviz.cells.decision_plane`.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

# One fixed colour per class, the same in every figure: Plotly's default qualitative set, which
# (unlike Tableau-10) has no grey, so the grey marked points of Fig. S2 stay visible on any class.
CLASS_COLORS = ["#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A",
                "#19D3F3", "#FF6692", "#B6E880", "#FF97FF", "#FECB52"]
# Marked plane points: Fig. S2 draws model A's FGSM point dark grey and model B's light grey.
POINT_STYLES = [("#404040", "diamond"), ("#d9d9d9", "diamond"), ("#000000", "x"), ("#ffffff", "star")]
AXIS_U = "a: L2 distance along u (pixel space)"
AXIS_V = "b: L2 distance along v (pixel space)"


def _class_colorscale(n: int) -> list:
    """Stepped colorscale mapping integer z = k (with zmin=-0.5, zmax=n-0.5) to CLASS_COLORS[k]."""
    scale = []
    for k in range(n):
        c = CLASS_COLORS[k % len(CLASS_COLORS)]
        scale += [[k / n, c], [(k + 1) / n, c]]
    return scale


def _fmt_radius(r) -> str:
    if r is None or (isinstance(r, float) and math.isnan(r)):
        return ""
    return "r = ∞" if math.isinf(r) else f"r = {r:.3g}"


def decision_cells_figure(results: Sequence, plane, titles: Sequence[str] | None = None,
                          class_names: Sequence[str] | None = None, radii: Sequence[float] | None = None,
                          true_class: int | None = None, contour_levels: Sequence[float] = (0.5, 0.7, 0.9),
                          max_cols: int = 3, panel_height: int = 380, fade: float = 0.85) -> go.Figure:
    """Side-by-side cross sections of several models' decision cells on one plane (Fig. 1, S1, S2).

    results: CellMaps from :func:`jacviz.cells.decision_plane` on one shared grid (labels,
      confidence = max softmax, coords in L2 pixel units; rows along b, columns along a).
    plane: the :class:`jacviz.cells.Plane` (its marked points are drawn in every panel).
      For convenience ``(results, titles, plane)`` is accepted too (detected by type).
    titles: one per model. class_names: default '0'...'K-1'. radii: in-plane distance from x0 to
      the closest boundary per model (the circle; None or inf draws none). true_class: x0's label,
      named in the panel subtitle.
    Encoding: each class has one fixed colour (CLASS_COLORS); a white veil whose opacity grows as
    the max softmax falls (``fade`` at chance 1/K, 0 at 1) sets the transparency by confidence as in
    Fig. 1, with contour lines of the max softmax at ``contour_levels``. x0 is a black dot.
    Heatmaps (not shapes) keep the figure cheap to build for 201x201 grids; axes are shared and
    equal-aspect. Hover shows (a, b), class and max softmax.
    """
    if not isinstance(titles, (str, type(None))) and hasattr(titles, "u") and not hasattr(plane, "u"):
        plane, titles = titles, plane  # called as (results, titles, plane)
    results = list(results)
    n = len(results)
    if n == 0:
        raise ValueError("no results to plot")
    titles = list(titles) if titles is not None else [f"model {k + 1}" for k in range(n)]
    K = max(10, int(max(int(r.labels.max()) for r in results)) + 1)
    if class_names is None:
        class_names = [str(k) for k in range(K)]
    class_names = list(class_names)
    K = max(K, len(class_names))
    names_arr = np.asarray(class_names + [str(k) for k in range(len(class_names), K)], dtype=object)
    radii = list(radii) if radii is not None else [None] * n
    plain_names = all(str(nm) == str(k) for k, nm in enumerate(names_arr))

    cols = min(n, max(1, int(max_cols)))
    rows = -(-n // cols)
    subtitles = []
    for k, res in enumerate(results):
        parts = [f"x0 → {names_arr[res.center_class]}"]
        if true_class is not None:
            parts.append("correct" if res.center_class == true_class else f"true {names_arr[true_class]}")
        if _fmt_radius(radii[k]):
            parts.append(_fmt_radius(radii[k]))
        subtitles.append(f"{titles[k]}<br><sub>{', '.join(parts)}</sub>")
    fig = make_subplots(rows=rows, cols=cols, shared_xaxes="all", shared_yaxes="all",
                        subplot_titles=subtitles, horizontal_spacing=0.03, vertical_spacing=0.12 / rows)
    colorscale = _class_colorscale(K)
    veil = [[0.0, f"rgba(255,255,255,{fade})"], [1.0, "rgba(255,255,255,0)"]]
    theta = np.linspace(0, 2 * np.pi, 181)
    for k, res in enumerate(results):
        r, c = k // cols + 1, k % cols + 1
        xs = ys = res.coords
        conf = np.asarray(res.confidence, dtype=np.float32)
        # class names as per-cell hover text only when they are not the indices themselves: an
        # object array of 40k strings is most of the build time (Plotly deep-copies it)
        fig.add_trace(go.Heatmap(
            z=res.labels, x=xs, y=ys, zmin=-0.5, zmax=K - 0.5, colorscale=colorscale, showscale=False,
            text=None if plain_names else names_arr[res.labels], customdata=conf,
            hovertemplate="a = %{x:.3f}<br>b = %{y:.3f}<br>class " + ("%{z}" if plain_names else "%{text}")
                          + f"<br>max softmax %{{customdata:.3f}}<extra>{titles[k]}</extra>"), row=r, col=c)
        fig.add_trace(go.Heatmap(z=conf, x=xs, y=ys, zmin=1.0 / K, zmax=1.0, colorscale=veil,
                                 showscale=False, hoverinfo="skip"), row=r, col=c)
        if contour_levels:
            lv = sorted(contour_levels)
            step = (lv[-1] - lv[0]) / (len(lv) - 1) if len(lv) > 1 else 1.0
            fig.add_trace(go.Contour(z=conf, x=xs, y=ys, showscale=False, hoverinfo="skip",
                                     contours=dict(coloring="lines", start=lv[0], end=lv[-1], size=step),
                                     colorscale=[[0, "rgba(0,0,0,0.5)"], [1, "rgba(0,0,0,0.5)"]],
                                     line=dict(width=0.8)), row=r, col=c)
        rad = radii[k]
        if rad is not None and math.isfinite(rad):
            fig.add_trace(go.Scatter(x=rad * np.cos(theta), y=rad * np.sin(theta), mode="lines",
                                     line=dict(color="black", width=1.5), name="closest boundary in the plane",
                                     legendgroup="radius", showlegend=False,
                                     hovertemplate=f"in-plane radius {rad:.4g}<extra>{titles[k]}</extra>"),
                          row=r, col=c)
        for p, (pname, (pa, pb)) in enumerate(plane.points.items()):
            color, symbol = POINT_STYLES[p % len(POINT_STYLES)]
            fig.add_trace(go.Scatter(x=[pa], y=[pb], mode="markers", name=pname, legendgroup=f"pt{p}",
                                     showlegend=(k == 0),
                                     marker=dict(color=color, symbol=symbol, size=11,
                                                 line=dict(color="black", width=1)),
                                     hovertemplate=f"{pname}<br>a = {pa:.3f}<br>b = {pb:.3f}<extra></extra>"),
                          row=r, col=c)
        fig.add_trace(go.Scatter(x=[0.0], y=[0.0], mode="markers", name="x0 (test sample)", legendgroup="x0",
                                 showlegend=(k == 0), marker=dict(color="black", size=9),
                                 hovertemplate="x0<extra></extra>"), row=r, col=c)
    if any(rd is not None and math.isfinite(rd) for rd in radii):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line=dict(color="black", width=1.5),
                                 name="closest boundary in the plane", legendgroup="radius"), row=1, col=1)
    # shared class legend: one dummy marker per class present in any panel
    present = sorted(set(np.unique(np.concatenate([np.unique(res.labels) for res in results])).tolist()))
    for cls in present:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"class {names_arr[cls]}",
                                 legendgroup="classes", marker=dict(color=CLASS_COLORS[cls % len(CLASS_COLORS)],
                                                                    symbol="square", size=12)), row=1, col=1)
    ext = float(results[0].coords[-1])
    for k in range(rows * cols):
        axn = "" if k == 0 else str(k + 1)
        fig.layout[f"xaxis{axn}"].update(range=[-ext, ext], constrain="domain")
        fig.layout[f"yaxis{axn}"].update(range=[-ext, ext], scaleanchor=f"x{axn}", scaleratio=1,
                                         constrain="domain")
    for c in range(1, cols + 1):
        fig.update_xaxes(title_text=AXIS_U, row=rows, col=c)
    for r in range(1, rows + 1):
        fig.update_yaxes(title_text=AXIS_V, row=r, col=1)
    fig.update_layout(height=panel_height * rows + 110, margin=dict(t=100, b=10, l=10, r=10),
                      plot_bgcolor="white", hovermode="closest",
                      legend=dict(orientation="v", yanchor="top", y=1, x=1.01, tracegroupgap=4),
                      title=dict(text=f"<sub>{plane.description}; max-softmax contours at "
                                      f"{', '.join(f'{v:g}' for v in contour_levels)}</sub>",
                                 x=0.01, y=0.99, yanchor="top"))
    return fig
