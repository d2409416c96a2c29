"""Robustness figures: plain functions, arrays in, ``plotly.graph_objects.Figure`` out.

Figure 3 / S3 / S4 (accuracy vs corruption strength) and Figure 3c / S5 (test error vs L2
fooling distance). Several models share one set of axes; a model given several seeds
(ys of shape (S, G)) is drawn as its mean with a mean ± std band, as the paper's shades over
5 runs. Accuracies and errors come in as fractions in [0, 1] and are drawn in percent.
No streamlit here: the app and the CLI both call these.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")

X_TITLES = {
    "noise": "noise σ per pixel (eq. 9, [0,1] pixel space)",
    "fgsm": "ε_FGSM (L∞, [0,1] pixel space)",
    "pgd": "PGD iterations k (steps of 1/255, L∞ ≤ {eps} in [0,1] pixel space)",
}
DISTANCE_TITLE = "L2 distance in [0,1] pixel space"


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _as_seeds(ys) -> np.ndarray:
    a = np.asarray(ys, dtype=float)
    return a[None, :] if a.ndim == 1 else a


def curve_figure(series: Mapping[str, tuple[Sequence[float], object]], x_title: str, y_title: str,
                 title: str | None = None, percent: bool = True, step: bool = False,
                 legend_bottom: bool = False) -> go.Figure:
    """Lines on shared axes, one per label; a mean ± std band where ys has several rows (seeds).

    series: label -> (x (G,), ys (G,) or (S, G)). ``percent`` scales y by 100; ``step`` draws
    horizontal-then-vertical steps (empirical CDFs) and carries each curve flat to the largest x
    of all series, so curves on different grids end together. ``legend_bottom`` puts the legend in
    the lower right corner (where rising CDFs leave room).
    """
    fig = go.Figure()
    if step and series:
        x_end = max(float(np.max(np.asarray(x, dtype=float))) for x, _ in series.values() if len(x))
        padded = {}
        for label, (x, ys) in series.items():
            x = np.asarray(x, dtype=float)
            a = _as_seeds(ys)
            if len(x) and x[-1] < x_end:
                x = np.append(x, x_end)
                a = np.concatenate([a, a[:, -1:]], axis=1)
            padded[label] = (x, a)
        series = padded
    scale = 100.0 if percent else 1.0
    shape = "hv" if step else "linear"
    for i, (label, (x, ys)) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        x = np.asarray(x, dtype=float)
        a = _as_seeds(ys) * scale
        mean = a.mean(0)
        n_seeds = a.shape[0]
        if n_seeds > 1:
            std = a.std(0, ddof=1)
            lo, hi = mean - std, mean + std
            if percent:
                lo, hi = np.clip(lo, 0, 100), np.clip(hi, 0, 100)
            fig.add_trace(go.Scatter(x=x, y=hi, mode="lines", line=dict(width=0, shape=shape),
                                     hoverinfo="skip", showlegend=False, legendgroup=label))
            fig.add_trace(go.Scatter(x=x, y=lo, mode="lines", line=dict(width=0, shape=shape),
                                     fill="tonexty", fillcolor=_rgba(color, 0.2), hoverinfo="skip",
                                     showlegend=False, legendgroup=label))
        name = f"{label} (mean ± std, {n_seeds} seeds)" if n_seeds > 1 else label
        fig.add_trace(go.Scatter(x=x, y=mean, mode="lines", name=name, legendgroup=label,
                                 line=dict(color=color, width=2, shape=shape)))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, template="plotly_white",
                      legend=dict(yanchor="bottom" if legend_bottom else "top", y=0.01 if legend_bottom else 0.99,
                                  xanchor="right", x=0.99, bgcolor="rgba(255,255,255,0.8)"),
                      hovermode="x unified", showlegend=True)  # plotly hides a one-curve legend: name it anyway
    if percent:
        fig.update_yaxes(range=[0, 100.5])
    return fig


def accuracy_figure(curves: Mapping[str, tuple[Sequence[float], object]], attack: str,
                    pgd_eps: float | None = None, title: str | None = None) -> go.Figure:
    """Test accuracy (%) vs corruption strength for several models (Figure 3a/3b, S3, S4).

    curves: label -> (strengths (G,), accuracies (G,) or (S, G) fractions). attack: 'noise'
    (x = sigma), 'fgsm' (x = eps, L_inf) or 'pgd' (x = iterations; ``pgd_eps`` names the radius).
    """
    if attack not in X_TITLES:
        raise ValueError(f"attack must be one of {sorted(X_TITLES)}")
    eps_txt = f"{pgd_eps * 255:.0f}/255" if pgd_eps is not None else "ε"
    x_title = X_TITLES[attack].format(eps=eps_txt)
    default = {"noise": "Accuracy under white noise", "fgsm": "Accuracy under FGSM",
               "pgd": "Accuracy under PGD"}[attack]
    return curve_figure(curves, x_title, "test accuracy (%)", title or default)


def fooling_cdf_figure(cdfs: Mapping[str, tuple[Sequence[float], object]], title: str | None = None) -> go.Figure:
    """Test error (%) vs L2 fooling distance (Figure 3c, S5): fraction of samples fooled at a
    distance <= r. cdfs: label -> (grid (G,) L2 radii in [0,1] pixel space, errors (G,) or (S, G)
    fractions, e.g. from ``jacviz.robustness.error_cdf``). Labels can be models or attacks."""
    return curve_figure(cdfs, DISTANCE_TITLE, "test error (%)", title or "Test error vs fooling distance",
                        step=True, legend_bottom=True)


def flags_text(flags: Mapping[str, Sequence[str]]) -> str:
    """Masking flags as display text (one line per flag, prefixed with its model's label)."""
    lines = [f"⚠ {label}: {f}" for label, fs in flags.items() for f in fs]
    return "\n".join(lines)


def add_flag_annotations(fig: go.Figure, flags: Mapping[str, Sequence[str]]) -> go.Figure:
    """Add gradient-masking flags (label -> messages) as a note under the plot; returns fig."""
    text = flags_text(flags)
    if not text:
        return fig
    lines = text.split("\n")
    fig.add_annotation(text="<br>".join(lines), xref="paper", yref="paper", x=0, y=-0.18,
                       xanchor="left", yanchor="top", showarrow=False, align="left",
                       font=dict(size=11, color="#b22222"))
    fig.update_layout(margin=dict(b=100 + 16 * len(lines)))
    return fig


__all__ = ["curve_figure", "accuracy_figure", "fooling_cdf_figure", "flags_text", "add_flag_annotations",
           "DISTANCE_TITLE", "X_TITLES"]
