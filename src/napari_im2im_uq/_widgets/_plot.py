"""Plots in the dock widgets: matplotlib figures drawn off the main thread, shown as images.

A figure is drawn with matplotlib's Agg backend (no pyplot, no Qt) in the worker thread that
ran the job, so the viewer never waits for matplotlib; the main thread only shows the pixels.
"""

from __future__ import annotations

import math

import numpy as np

from .. import api

WIDTH_IN = 4.6
DPI = 100


def render(draw, *args, height: float = 3.0, **kwargs):
    """Draw ``draw(figure, *args, **kwargs)`` on a new Agg figure; return ``(rgba, figure)``.

    Safe in any thread: the figure is not attached to a GUI.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH_IN, height), dpi=DPI, layout="constrained")
    canvas = FigureCanvasAgg(figure)
    draw(figure, *args, **kwargs)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy(), figure


class PlotArea:
    """A label in a magicgui container's layout that shows rendered figures."""

    def __init__(self, container, *, height: float = 3.0):
        from qtpy.QtWidgets import QLabel

        self.height = height
        self.figure = None
        from qtpy.QtWidgets import QSizePolicy

        self.label = QLabel()
        # the whole figure, never squeezed into a strip: a dock too short scrolls instead
        self.label.setMinimumSize(int(WIDTH_IN * DPI), int(height * DPI))
        self.label.setSizePolicy(QSizePolicy.Policy.Minimum, QSizePolicy.Policy.Fixed)
        container.native.layout().addWidget(self.label)

    def show(self, rgba, figure) -> None:
        """Show pixels rendered by :func:`render` (main thread; a few milliseconds)."""
        from qtpy.QtGui import QImage, QPixmap

        self.figure = figure
        rgba = np.ascontiguousarray(rgba)
        h, w = rgba.shape[:2]
        image = QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()
        self.label.setMinimumSize(w, h)
        self.label.setPixmap(QPixmap.fromImage(image))

    def draw(self, draw, *args, **kwargs) -> None:
        """Render and show at once (on the calling thread)."""
        self.show(*render(draw, *args, height=self.height, **kwargs))


def plot_curve(figure, result) -> object:
    """Plot empirical risk and the controlled bound against lam, with alpha and lam_hat.

    Returns the axes.
    """
    figure.clear()
    ax = figure.add_subplot(1, 1, 1)
    curve = result.curve or {}
    lam = [float(v) for v in curve.get("lam", [])]
    entry = api.method(result.method)
    level = entry.level(result)
    if lam:
        ax.plot(lam, curve["risk"], color="tab:blue", label="empirical risk")
        if curve.get("bound"):
            label = {"rcps": f"upper confidence bound ({result.bound})",
                     "crc": "CRC-corrected risk"}.get(result.rule, "controlled quantity")
            ax.plot(lam, curve["bound"], color="tab:orange", label=label)
    ax.axhline(level, color="tab:red", linestyle="--", label=f"target {level:g}")
    if math.isfinite(result.lam):
        ax.axvline(result.lam, color="black", linestyle=":", label=f"lam_hat = {result.lam:.4g}")
    ax.set_xlabel(entry.x_label)
    ax.set_ylabel("risk")
    ax.set_title(f"{result.method}, rule {result.rule}, n = {result.n} tiles", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    return ax
