"""Training-curve figures (arrays in, Plotly figure out): how test accuracy and ||J||_F move with training length.

Used by REPRODUCTION.md's *Training length* sections (CIFAR-10 DDNet, the tables' short schedule next to a
5x longer one; MNIST LeNet', the short schedule next to the paper's 150k iterations). No streamlit here.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .plots_robustness import PALETTE


def training_length_figure(curves: Sequence[Mapping], paper_acc: Mapping[str, float] | None = None,
                           title: str | None = None, per_epoch: int = 500, log_x: bool = False) -> go.Figure:
    """Two panels against SGD iteration: test accuracy (%) left, mean test ||J||_F right.

    curves: one dict per run, {"mix": regularizer label (sets the colour), "schedule": legend text of its
    length, e.g. "1,500 it.", "iteration": (E,), "test_acc": (E,) fractions, "jac": (E,) ||J||_F w.r.t. the
    normalized input, "dash": Plotly dash style (e.g. "dot" for the shorter run)}. paper_acc: mix -> the
    paper's final test accuracy in % (150k iterations), drawn as a thin horizontal line of the mix's colour.
    per_epoch: SGD iterations an epoch (axis title; CIFAR-10 500, MNIST 600). log_x: a logarithmic iteration
    axis, for runs whose lengths differ 25x (MNIST: 6,000 against the paper's 150,000).
    """
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("test accuracy (%), 10,000 test images",
                                        "mean ‖J‖_F (normalized input), first 1,000 test images"))
    colors: dict[str, str] = {}
    for c in curves:
        color = colors.setdefault(c["mix"], PALETTE[len(colors) % len(PALETTE)])
        x = np.asarray(c["iteration"], dtype=float)
        name = f"{c['mix']}, {c['schedule']}"
        fig.add_trace(go.Scatter(x=x, y=100 * np.asarray(c["test_acc"], dtype=float), mode="lines+markers",
                                 name=name, legendgroup=name,
                                 line=dict(color=color, dash=c.get("dash", "solid"))), row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=np.asarray(c["jac"], dtype=float), mode="lines+markers", name=name,
                                 legendgroup=name, showlegend=False,
                                 line=dict(color=color, dash=c.get("dash", "solid"))), row=1, col=2)
    for mix, acc in (paper_acc or {}).items():
        if mix in colors:
            fig.add_hline(y=acc, line=dict(color=colors[mix], width=1, dash="dash"), row=1, col=1,
                          annotation_text=f"paper, {mix}: {acc:g} (150k it.)", annotation_position="top left",
                          annotation_font=dict(size=10, color=colors[mix]))
    fig.update_xaxes(title_text=f"SGD iteration (batch 100; {per_epoch} an epoch)", type="log" if log_x else "linear")
    fig.update_yaxes(title_text="%", row=1, col=1)
    fig.update_yaxes(title_text="‖J‖_F", row=1, col=2, rangemode="tozero")
    fig.update_layout(title=title, template="plotly_white", width=1100, height=480,
                      legend=dict(orientation="h", yanchor="top", y=-0.18, xanchor="left", x=0),
                      margin=dict(t=70, b=120))
    return fig


__all__ = ["training_length_figure"]
