"""Figures of the Jacobian-estimator study (arrays in, Plotly figures out).

Inputs are the dict returned by :func:`jacviz.estimator.projection_study`.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go


def relative_variance_figure(study: dict) -> go.Figure:
    """Per-sample relative variance of the n_proj estimate vs n_proj (log-log): measured (mean and
    max over samples), eq. 15 evaluated exactly from each sample's Jacobian (mean), and the
    J-independent bound of eq. 16, 2(C-1)/((C+2) n_proj)."""
    rows = study["rows"]
    n = np.array([r["n_proj"] for r in rows], dtype=float)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=n, y=[r["sample_rel_var_measured_mean"] for r in rows], mode="lines+markers",
                             name=f"measured, mean over {study['B']} samples ({study['repeats']} draws each)"))
    fig.add_trace(go.Scatter(x=n, y=[r["sample_rel_var_measured_max"] for r in rows], mode="markers",
                             marker_symbol="triangle-up", name="measured, worst sample"))
    fig.add_trace(go.Scatter(x=n, y=[r["sample_rel_var_theory_mean"] for r in rows], mode="lines",
                             line_dash="dot", name="eq. 15 from the exact J, mean over samples"))
    fig.add_trace(go.Scatter(x=n, y=[r["bound"] for r in rows], mode="lines", line_dash="dash",
                             line_color="black", name=f"eq. 16 bound 2(C-1)/((C+2) n_proj), C={study['C']}"))
    # Ticks only at the n_proj values and at 1, 2, 5 per decade: Plotly's default log ticks label every
    # digit of a decade, which crowd a small figure.
    ys = np.concatenate([[r["sample_rel_var_measured_mean"], r["sample_rel_var_measured_max"],
                          r["sample_rel_var_theory_mean"], r["bound"]] for r in rows])
    ys = ys[np.isfinite(ys) & (ys > 0)]
    decades = range(int(np.floor(np.log10(ys.min()))), int(np.ceil(np.log10(ys.max()))) + 1) if ys.size else ()
    yticks = [m * 10.0 ** d for d in decades for m in (1, 2, 5)]
    fig.update_layout(title="Relative variance of one sample's ‖J‖²_F estimate",
                      xaxis=dict(type="log", title="n_proj (random projections per sample)",
                                 tickvals=n.tolist(), ticktext=[str(int(v)) for v in n]),
                      yaxis=dict(type="log", title="var / mean²", tickvals=yticks, ticktext=[f"{t:g}" for t in yticks]),
                      legend=dict(orientation="h", y=-0.25), margin=dict(t=30, b=10), height=420)
    return fig


def batch_estimates_figure(study: dict) -> go.Figure:
    """Distribution over repeated draws of the batch-mean estimate of ||J||_F^2 (what eq. 5
    penalizes) for each n_proj, as box plots, with the exact batch mean as a horizontal line."""
    fig = go.Figure()
    for r in study["rows"]:
        fig.add_trace(go.Box(y=r["batch_estimates"], name=f"n_proj={r['n_proj']}", boxmean="sd", showlegend=False))
    fig.add_hline(y=study["exact_batch_mean"], line_dash="dash", line_color="black")
    # the line's name goes in the legend (an annotation on the plot sat on top of the boxes)
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line=dict(dash="dash", color="black"),
                             name=f"exact value {study['exact_batch_mean']:.4g} (C backward passes)"))
    fig.update_layout(title=f"Batch-mean estimate of ‖J‖²_F over {study['B']} samples, {study['repeats']} draws",
                      yaxis_title=f"‖J‖²_F ({study['space']} input)",
                      legend=dict(orientation="h", y=-0.15), margin=dict(t=30, b=10), height=420)
    return fig
