"""The Train dock's loss plot: the losses gathered from a training job's events, and their figure.

:class:`LossHistory` keeps plain lists (no Qt, no matplotlib) and :class:`LossFigure` draws
snapshots of them on one matplotlib Agg figure, updated in place; the Train dock renders it in
a thread of its own, so the viewer's main thread only shows pixels.
"""

from __future__ import annotations

import math

__all__ = ["LossFigure", "LossHistory", "plot_losses"]


class LossHistory:
    """The training and validation losses of one training run, gathered from its events.

    The training loss is also kept smoothed: an exponential moving average of weight
    ``smoothing`` with the start-up bias removed (the first smoothed value is the first loss).
    A resumed run restarts from its checkpoint's step: the points at and after that step are
    replaced by the resumed run's.

    Parameters
    ----------
    smoothing : float
        Weight of the past in the moving average, in [0, 1).

    Examples
    --------
    >>> h = LossHistory(smoothing=0.5)
    >>> for step, loss in enumerate([4.0, 2.0, 1.0], start=1):
    ...     _ = h.add({"phase": "train", "step": step, "total": 10, "loss": loss})
    >>> h.add({"phase": "validate", "step": 3, "val_loss": 1.5, "best_step": 3})
    True
    >>> s = h.snapshot()
    >>> s["steps"], [round(v, 3) for v in s["smooth"]], s["val_steps"], s["best_step"]
    ([1, 2, 3], [4.0, 2.667, 1.714], [3], 3)
    """

    def __init__(self, *, smoothing: float = 0.9):
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1); got {smoothing!r}")
        self.smoothing = float(smoothing)
        self.steps: list[int] = []
        self.loss: list[float] = []
        self.smooth: list[float] = []
        self._ema: list[float] = []  # the biased average, kept to restart after a truncation
        self.val_steps: list[int] = []
        self.val_loss: list[float] = []
        self.best_step: int | None = None
        self.stopped_step: int | None = None
        self.total: int | None = None

    def _truncate(self, step: int) -> None:
        """Forget the points at and after ``step`` (a resumed run starts there again)."""
        keep = sum(s < step for s in self.steps)
        del self.steps[keep:], self.loss[keep:], self.smooth[keep:], self._ema[keep:]
        keep = sum(s < step for s in self.val_steps)
        del self.val_steps[keep:], self.val_loss[keep:]
        if self.best_step is not None and self.best_step >= step:
            self.best_step = self.val_steps[-1] if self.val_steps else None
        self.stopped_step = None

    def add(self, event: dict) -> bool:
        """Take one event of the training job; return whether the plot changed."""
        phase = event.get("phase")
        if phase == "train":
            step, loss = int(event["step"]), float(event["loss"])
            if self.steps and step <= self.steps[-1]:
                self._truncate(step)
            w = self.smoothing
            ema = (w * self._ema[-1] if self._ema else 0.0) + (1.0 - w) * loss
            n = len(self._ema) + 1
            self._ema.append(ema)
            self.steps.append(step)
            self.loss.append(loss)
            self.smooth.append(ema / (1.0 - w**n) if w > 0 else loss)
            self.total = int(event.get("total") or step)
            return True
        if phase == "validate":
            step = int(event["step"])
            if self.val_steps and step <= self.val_steps[-1]:
                keep = sum(s < step for s in self.val_steps)
                del self.val_steps[keep:], self.val_loss[keep:]
            self.val_steps.append(step)
            self.val_loss.append(float(event["val_loss"]))
            if event.get("best_step") is not None:
                self.best_step = int(event["best_step"])
            return True
        if phase == "stopped_early":
            self.stopped_step = int(event["step"])
            if event.get("best_step") is not None:
                self.best_step = int(event["best_step"])
            return True
        return False

    def snapshot(self) -> dict:
        """Return copies of the lists and marks (safe to draw while more events arrive)."""
        return {"steps": list(self.steps), "loss": list(self.loss), "smooth": list(self.smooth),
                "val_steps": list(self.val_steps), "val_loss": list(self.val_loss),
                "best_step": self.best_step, "stopped_step": self.stopped_step,
                "total": self.total}


class LossFigure:
    """The loss plot on one matplotlib figure, updated in place.

    Every update moves the data of the same artists (lines, marks, title) instead of drawing
    new ones: a figure per update would leave thousands of matplotlib objects per redraw to
    Python's cyclic garbage collector, whose full passes over napari's and torch's heap stall
    every thread, the viewer's included, for a few hundred milliseconds.

    The training loss is shown raw (faint) and smoothed (solid), the validation loss as
    points; the loss axis is logarithmic when every loss shown is positive (a Gaussian head's
    negative log-likelihood can be negative: then it is linear). The best validation step and
    an early stop are marked.

    Parameters
    ----------
    figure : matplotlib.figure.Figure, optional
        The figure to draw on (cleared); default a new Agg figure of ``width`` x ``height``
        inches, not attached to a GUI (safe to draw in any thread).

    Examples
    --------
    >>> h = LossHistory()
    >>> _ = h.add({"phase": "train", "step": 1, "total": 5, "loss": 1.0})
    >>> plot = LossFigure(height=2.0)
    >>> rgba = plot.render(h.snapshot())
    >>> rgba.shape, plot.ax.get_yscale(), plot.ax.get_xlabel()
    ((200, 460, 4), 'log', 'step')
    """

    def __init__(self, figure=None, *, width: float = 4.6, height: float = 2.8, dpi: int = 100):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        if figure is None:
            figure = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
            FigureCanvasAgg(figure)
        figure.clear()
        self.figure = figure
        ax = self.ax = figure.add_subplot(1, 1, 1)
        (self.raw,) = ax.plot([], [], color="tab:blue", alpha=0.25, linewidth=0.8,
                              label="training loss")
        (self.smooth,) = ax.plot([], [], color="tab:blue", linewidth=1.6,
                                 label="training loss (smoothed)")
        (self.val,) = ax.plot([], [], color="tab:orange", marker="o", markersize=4,
                              linewidth=1.0, label="validation loss")
        self.best = ax.axvline(0, color="tab:green", linestyle=":", linewidth=1.2,
                               visible=False, label="best validation step")
        self.stop = ax.axvline(0, color="tab:red", linestyle="--", linewidth=1.0,
                               visible=False, label="stopped early")
        self.title = ax.set_title("training loss: waiting for the first step", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(True, which="major", alpha=0.3)
        self._shown: tuple = ()  # the artists in the legend

    def update(self, history: dict) -> None:
        """Show a :meth:`LossHistory.snapshot`."""
        ax = self.ax
        steps, val_steps = history["steps"], history["val_steps"]
        self.raw.set_data(steps, history["loss"])
        self.smooth.set_data(steps, history["smooth"])
        self.val.set_data(val_steps, history["val_loss"])
        for line, step in ((self.best, history.get("best_step") if val_steps else None),
                           (self.stop, history.get("stopped_step"))):
            line.set_visible(step is not None)
            if step is not None:
                line.set_xdata([step, step])
        values = history["loss"] + history["val_loss"]
        log = bool(values) and all(v > 0 and math.isfinite(v) for v in values)
        if ax.get_yscale() != ("log" if log else "linear"):
            ax.set_yscale("log" if log else "linear")
            ax.set_ylabel("loss (log scale)" if log else "loss")
        ax.relim(visible_only=True)
        ax.autoscale_view()
        total = history.get("total")
        if total:
            ax.set_xlim(0, max(total, *(steps or [1]), *(val_steps or [1])))
        if steps:
            val = f", validation {history['val_loss'][-1]:.3g}" if val_steps else ""
            self.title.set_text(f"step {steps[-1]}" + (f" of {total}" if total else "")
                                + f": loss {history['smooth'][-1]:.3g}{val}")
        self.best.set_label(f"best validation (step {history.get('best_step')})")
        self.stop.set_label(f"stopped early (step {history.get('stopped_step')})")
        shown = tuple(a for a, on in ((self.raw, steps), (self.smooth, steps),
                                      (self.val, val_steps), (self.best, self.best.get_visible()),
                                      (self.stop, self.stop.get_visible())) if on)
        legend = ax.get_legend()
        if shown != self._shown:  # a new legend only when an entry comes or goes
            self._shown = shown
            ax.legend(handles=list(shown), fontsize=7, loc="upper right")
        elif legend is not None:  # else only its texts change (the best step moves)
            for text, artist in zip(legend.get_texts(), shown, strict=True):
                text.set_text(artist.get_label())

    def render(self, history: dict):
        """Update and draw; return the pixels, (rows, columns, 4) uint8 RGBA (a copy)."""
        import numpy as np

        self.update(history)
        self.figure.canvas.draw()
        return np.asarray(self.figure.canvas.buffer_rgba()).copy()


def plot_losses(figure, history: dict) -> object:
    """Draw a :meth:`LossHistory.snapshot` on ``figure`` (see :class:`LossFigure`); return the axes.

    Examples
    --------
    >>> from matplotlib.figure import Figure
    >>> h = LossHistory()
    >>> _ = h.add({"phase": "train", "step": 1, "total": 5, "loss": 1.0})
    >>> ax = plot_losses(Figure(), h.snapshot())
    >>> ax.get_yscale(), ax.get_xlabel()
    ('log', 'step')
    """
    plot = LossFigure(figure)
    plot.update(history)
    return plot.ax
