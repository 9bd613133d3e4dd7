"""A matplotlib figure inside a dock widget (the Qt canvas is created on first use)."""

from __future__ import annotations

import math


class PlotArea:
    """A Figure on a Qt canvas, added to a magicgui container's layout."""

    def __init__(self, container, *, height: float = 3.0):
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4.0, height), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(int(height * 70))
        container.native.layout().addWidget(self.canvas)

    def draw(self):
        """Redraw the canvas."""
        self.canvas.draw_idle()


def plot_curve(figure, result) -> object:
    """Plot empirical risk and the controlled bound against lam, with alpha and lam_hat.

    Returns the axes.
    """
    figure.clear()
    ax = figure.add_subplot(1, 1, 1)
    curve = result.curve or {}
    lam = [float(v) for v in curve.get("lam", [])]
    level = float(1 - result.beta) if result.rule in ("conformal", "paper") else result.alpha
    if lam:
        ax.plot(lam, curve["risk"], color="tab:blue", label="empirical risk")
        if curve.get("bound"):
            label = {"rcps": f"upper confidence bound ({result.bound})",
                     "crc": "CRC-corrected risk"}.get(result.rule, "controlled quantity")
            ax.plot(lam, curve["bound"], color="tab:orange", label=label)
    ax.axhline(level, color="tab:red", linestyle="--", label=f"target {level:g}")
    if math.isfinite(result.lam):
        ax.axvline(result.lam, color="black", linestyle=":", label=f"lam_hat = {result.lam:.4g}")
    x_name = "threshold t" if result.method == "trust_mask" else "lam"
    ax.set_xlabel(x_name)
    ax.set_ylabel("risk")
    ax.set_title(f"{result.method}, rule {result.rule}, n = {result.n} tiles", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    return ax
