"""The Train dock widget: train or fine-tune a model on the user's own pairs, with a live loss plot.

The widget collects the arguments of :func:`napari_im2im_uq.api.train` and runs it in a thread
worker. Its events update a progress bar, a status line and the loss plot; the plot is drawn
with matplotlib's Agg backend in the worker thread, at most a few times a second, so the
viewer's main thread only shows pixels. When the model is saved it becomes the session's model
(the Model dock shows it) and the held-back regions, kept apart from training, are added as a
Shapes layer for the Calibrate dock's "labeled regions".
"""

from __future__ import annotations

import html
import textwrap
import time
from pathlib import Path

from magicgui.widgets import CheckBox, ComboBox, FileEdit, LineEdit, PushButton

from .. import api
from .._jobs import relay
from ._common import JobRunner, Panel, is_output, kind, layer_picker, meta, prefer, session, text
from ._loss_plot import LossFigure, LossHistory, plot_losses
from ._plot import PlotArea

MASK_TARGET = "(none: mask network)"
REGRESSION_HEADS = ("quantile", "residual", "gaussian", "softmax")
FROM_SCRATCH = "(none: train from scratch)"
ON_DISK = "(bundle folder on disk)"
#: Seconds from the start of one render of the loss plot to the next at least (4 a second).
PLOT_INTERVAL_S = 0.25
#: Seconds between two updates of the status line during training.
STATUS_INTERVAL_S = 0.25

HEAD_TIPS = {
    "quantile": "three outputs: prediction, lower and upper quantile (pinball loss)",
    "residual": "prediction and a predicted absolute error",
    "gaussian": "prediction and a standard deviation (Gaussian negative log-likelihood)",
    "softmax": "a distribution over intensity bins",
    "segmentation": "class probabilities (Labels target: 0 = not annotated, k + 1 = class k)",
    "mask": "the base model's error network: where its prediction is likely wrong",
}


def _is_input(layer) -> bool:
    return kind(layer) == "image" and not is_output(layer)


def _is_target(layer) -> bool:
    return kind(layer) in ("image", "labels") and meta(layer).get("role") not in (
        "output", "calibrated")


def parse_steps(value) -> int | None:
    """Return the number of steps a "steps" field asks for (None for "auto").

    Examples
    --------
    >>> parse_steps("auto"), parse_steps(" 120 ")
    (None, 120)
    >>> parse_steps("ten")
    Traceback (most recent call last):
    ...
    ValueError: steps must be 'auto' or a whole number >= 1; got 'ten'
    """
    text_ = str(value).strip().lower()
    if text_ in ("", "auto"):
        return None
    if not text_.isdigit() or int(text_) < 1:
        raise ValueError(f"steps must be 'auto' or a whole number >= 1; got {str(value)!r}")
    return int(text_)


def check_output_folder(value, *, overwrite: bool) -> str | None:
    """Return why ``value`` cannot receive a new bundle, or None when it can.

    A new folder or an empty one is fine; an existing non-empty folder only with ``overwrite``
    (the training job then replaces a bundle there, and still never touches other files).

    Examples
    --------
    >>> check_output_folder("", overwrite=False)
    'choose an output folder for the new model (a new or empty folder)'
    >>> check_output_folder("/nonexistent/new-model", overwrite=False) is None
    True
    """
    if value is None or str(value) in ("", "."):
        return "choose an output folder for the new model (a new or empty folder)"
    path = Path(str(value))
    if path.exists() and not path.is_dir():
        return f"output {path} is a file; choose a folder for the new model"
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        if (path / "model.json").is_file():
            return (f"output folder {path} holds a model: to train again, choose a new folder "
                    "or tick 'overwrite' to replace it")
        return (f"output folder {path} exists and is not empty: choose a new or empty folder "
                "(or tick 'overwrite' if it holds a model to replace)")
    return None


def next_free_folder(path) -> Path:
    """Return ``path`` numbered on (``model-2``, ``model-3``, ...) to the first name not taken.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     (Path(tmp) / "model").mkdir()
    ...     (Path(tmp) / "model-2").mkdir()
    ...     [next_free_folder(Path(tmp) / n).name for n in ("model", "model-2", "new")]
    ['model-3', 'model-3', 'new-2']
    """
    path = Path(path)
    stem, _, number = path.name.rpartition("-")
    if not (stem and number.isdigit()):
        stem, number = path.name, "1"
    i = int(number) + 1
    while path.with_name(f"{stem}-{i}").exists():
        i += 1
    return path.with_name(f"{stem}-{i}")


class _Plotter:
    """Render the loss plot in a thread of its own, one render at a time, a few a second.

    The training thread never waits for matplotlib: it asks for a render of a snapshot
    (ignored while one is under way or too soon) and takes the finished picture, if any, with
    its next event. A render starts at least :data:`PLOT_INTERVAL_S` after the previous one
    started, and at least its own duration after it ended (the plot thread works at most half
    the time); the first render, which also imports matplotlib, does not count. One
    :class:`LossFigure` is updated in place throughout.
    """

    def __init__(self, height: float):
        self.height = height
        self.plot = None
        self._pool = None
        self._future = None
        self._next = 0.0
        self._first = True

    def request(self, history: LossHistory) -> None:
        """Start a render of ``history`` now, unless one runs or the last one was too recent."""
        if self._future is not None or time.perf_counter() < self._next:
            return
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(1, thread_name_prefix="im2im-uq loss plot")
        self._future = self._pool.submit(self._render, history.snapshot())

    def _render(self, snapshot: dict):
        start = time.perf_counter()
        picture = self.render(snapshot)
        cost = 0.0 if self._first else time.perf_counter() - start
        self._first = False
        self._next = start + max(PLOT_INTERVAL_S, 2.0 * cost)
        return picture

    def render(self, snapshot: dict):
        """Return ``(rgba, figure, number of steps shown)`` for ``snapshot`` (blocking)."""
        if self.plot is None:
            self.plot = LossFigure(height=self.height)
        return self.plot.render(snapshot), self.plot.figure, len(snapshot["steps"])

    def take(self):
        """Return the finished render, or None when there is none (yet)."""
        future = self._future
        if future is None or not future.done():
            return None
        self._future = None
        return future.result()

    def close(self, *, wait: bool = False) -> None:
        """End the plot thread (``wait``: after the render under way; else its picture is lost)."""
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool = None
        self._future = None


class _TrainRunner(JobRunner):
    """The job runner, with ``(event, rendered plot or None, status line)`` for ``(done, total)``."""

    def __init__(self, status, buttons, cancel, *, on_event, on_stop):
        super().__init__(status, buttons, cancel)
        self.on_event = on_event
        self.on_stop = on_stop

    def _on_step(self, item):
        event, picture, line = item
        bar = self._bar
        if bar is not None and event.get("phase") == "train":
            total, done = int(event["total"]), int(event["step"])
            if bar.total != total:
                bar.total = total
            if done > bar.n:
                bar.update(done - bar.n)
        self.on_event(event, picture, line)

    def _on_error(self, err):
        super()._on_error(err)
        self.on_stop("failed", err)

    def _on_abort(self):
        super()._on_abort()
        self.on_stop("cancelled", None)


class TrainWidget(Panel):
    """Train a model on layers of the viewer; it becomes the session's model when saved.

    The target is an Image layer (regression with one of the heads; its shape may be the
    input's times an integer super-resolution factor), a Labels layer (segmentation, 0 = not
    annotated), or none with a base model (the base model's mask network). A base model
    fine-tunes: training starts from its weights and keeps its units and head.
    """

    def __init__(self, napari_viewer):
        viewer = napari_viewer
        super().__init__(viewer, labels=True)
        self.session = session(viewer)
        self.input = layer_picker(viewer, "input", _is_input,
                                  tooltip="the raw images: 2-D, a stack (Z, Y, X), or channels "
                                          "first (C, Y, X) for a several-input model")
        self.target = layer_picker(
            viewer, "target", _is_target, optional=MASK_TARGET,
            tooltip="Image: the truth to predict (same planes; a multiple of the input's size "
                    "for super-resolution). Labels: segmentation (0 = not annotated). None: a "
                    "mask network of the base model")
        self.head = ComboBox(label="head", choices=list(REGRESSION_HEADS),
                             tooltip="what the network predicts besides the prediction")
        zoo = api.list_models()
        self.base = ComboBox(label="base model", choices=[FROM_SCRATCH, *zoo, ON_DISK],
                             value=FROM_SCRATCH,
                             tooltip="fine-tune: start from this model's weights, units and "
                                     "head; for a mask network, the model whose errors it learns")
        self.base_folder = FileEdit(label="base folder", mode="d", visible=False,
                                    tooltip="a bundle folder (model.json, weights.safetensors)")
        self.output = FileEdit(label="output folder", mode="d",
                               tooltip="where the new model bundle is written: a new or empty "
                                       "folder (checkpoints go beside it, in <folder>.checkpoint)")
        self.overwrite = CheckBox(text="overwrite the model in that folder", value=False)
        self.steps = LineEdit(label="steps", value="auto",
                              tooltip="'auto': from the data size and the device (training "
                                      "stops early when the validation loss stops improving); "
                                      "or a number of optimisation steps")
        self.licence = LineEdit(label="licence", value="",
                                tooltip="the licence of the new model, written into its card "
                                        "(e.g. CC-BY-4.0; a model inherits the licence terms of "
                                        "its training data); empty: 'not stated'")
        self.citation = LineEdit(label="citation", value="",
                                 tooltip="how to cite the data or the work the model comes from, "
                                         "written into its card; empty: 'not stated'")
        self.run_button = PushButton(text="Train")
        self.cancel = PushButton(text="Cancel")
        self.resume_button = PushButton(text="Resume", enabled=False,
                                        tooltip="continue the cancelled or failed run from its "
                                                "last checkpoint (same layers, same output)")
        self.message = text()
        self.quality = text(rich=True)
        # no word wrap: a wrapped rich-text table under the plot overlapped it (Qt's height for
        # width of such labels); quality_html breaks its lines itself
        self.quality.native.setWordWrap(False)
        self.extend([self.input, self.target, self.head, self.base, self.base_folder,
                     self.output, self.overwrite, self.steps, self.licence, self.citation,
                     self.run_button, self.cancel,
                     self.resume_button, self.status, self.message])
        self.plot = PlotArea(self, height=2.5)  # the plot under the progress line
        self.native.layout().addWidget(self.quality.native)  # then the quality, when done
        self.history = LossHistory()
        self.plotted: list[int] = []  # the training steps each plot shown held, in order
        self.result = None
        self.held_back = None  # the Shapes layer of the last run's held-back regions
        self._last_run = None  # the arguments of the last run (what Resume continues)
        self._resumable = False
        self._live = False  # a job runs whose events are shown
        self._shown_status = 0.0
        prefer(self.input, lambda ly: meta(ly).get("role") == "input")
        prefer(self.target, lambda ly: meta(ly).get("role") == "truth")
        self.runner = _TrainRunner(self.message, [self.run_button], self.cancel,
                                   on_event=self._on_event, on_stop=self._on_stop)
        self.runner.after_finish = self.refresh
        self.run_button.changed.connect(self.start)
        self.resume_button.changed.connect(self.resume)
        self.base.changed.connect(self._base_changed)
        self.watch(self.input, self.target, self.head, self.base, self.base_folder, self.output,
                   self.overwrite, self.steps)
        # magicgui emits no `changed` for the None entry of a non-nullable box: ask Qt instead
        self.target.native.currentIndexChanged.connect(self.refresh)
        self.connect_layers()
        self.plot.draw(plot_losses, self.history.snapshot())
        self.refresh()

    # -- fields -------------------------------------------------------------------------------

    def run_buttons(self):
        return [self.run_button]

    def base_model(self) -> str | None:
        """Return the chosen base model (a zoo name or a folder), or None."""
        if self.base.value == FROM_SCRATCH:
            return None
        if self.base.value == ON_DISK:
            return str(self.base_folder.value)
        return self.base.value

    def _heads(self) -> list[str]:
        target = self.target.value
        if target is None:
            return ["mask"]
        if kind(target) == "labels":
            return ["segmentation"]
        return list(REGRESSION_HEADS)

    def _base_head(self) -> str | None:
        base = self.base_model()
        if base is None:
            return None
        return api.model_card(base).get("heuristic")

    def _base_changed(self, *_):
        """Fine-tuning keeps the base model's head: select it."""
        try:
            head = self._base_head()
        except ValueError:
            return
        if head in self.head.choices and self.target.value is not None:
            self.head.value = head

    def problems(self):
        self.base_folder.visible = self.base.value == ON_DISK
        heads = self._heads()
        if list(self.head.choices) != heads:
            with self.head.changed.blocked():
                self.head.choices = heads
                self.head.value = heads[0]
        self.head.tooltip = HEAD_TIPS.get(self.head.value, "")
        # a mask network learns from the truth alone: the base model's input is cut from it
        self.input.label = "input" if self.target.value is not None else "truth (high-res)"
        image, target = self.input.value, self.target.value
        if image is None:
            return "choose an input image layer"
        if getattr(image, "rgb", False):
            return "input must be grey levels (or channels first), not an RGB layer"
        if target is not None and target is image:
            return "target must be another layer than the input"
        base = self.base_model()
        if self.base.value == ON_DISK and (not base or base in ("", ".")
                                           or not (Path(base) / "model.json").is_file()):
            return f"base folder must be a model bundle (with model.json); got {base!r}"
        if target is None and base is None:
            return ("a mask network learns a base model's errors: choose a base model, or a "
                    "target layer")
        if target is not None:
            reason = _shape_problem(image.data.shape, target.data.shape)
            if reason is not None:
                return reason
        if base is not None and target is not None:
            head = self._base_head()
            if head is not None and head != self.head.value and head in heads:
                return (f"fine-tuning keeps the base model's head: {base} has head {head!r}; "
                        f"got {self.head.value!r}")
        parse_steps(self.steps.value)
        return check_output_folder(self.output.value, overwrite=bool(self.overwrite.value))

    def refresh(self, *_):
        super().refresh()
        running = self.runner.running
        self.resume_button.enabled = self._resumable and not running

    def arguments(self) -> dict:
        """Return the keyword arguments of api.train for the current fields."""
        target = self.target.value
        task = ("mask" if target is None else
                "segmentation" if kind(target) == "labels" else "regression")
        return {"input": self.input.value, "target": target, "head": self.head.value,
                "task": task, "base_model": self.base_model(), "output": str(self.output.value),
                "steps": parse_steps(self.steps.value), "device": self.session.device,
                "overwrite": bool(self.overwrite.value),
                "licence": self.licence.value.strip() or None,
                "citation": self.citation.value.strip() or None}

    # -- running ------------------------------------------------------------------------------

    def start(self, *_):
        """Train with the current fields in a worker thread."""
        if self.problems() is not None:
            return None
        self.history = LossHistory()
        return self._run(self.arguments(), "training")

    def resume(self, *_):
        """Continue the last cancelled or failed run from its checkpoint (same arguments)."""
        if not self._resumable or self._last_run is None or self.runner.running:
            return None
        return self._run({**self._last_run, "resume": True}, "resuming training")

    def _run(self, kwargs: dict, description: str):
        self._last_run = {k: v for k, v in kwargs.items() if k != "resume"}
        self._resumable = False
        self._live = True
        self.resume_button.enabled = False
        self.result = None
        self.quality.value = ""
        history, height = self.history, self.plot.height

        def job():
            gen = api.train(**kwargs)
            plots = _Plotter(height)

            def see(event):
                if history.add(event):
                    plots.request(history)
                return event, plots.take(), _describe(event, history)

            try:
                result = yield from relay(gen, see)
                plots.close(wait=True)  # then the final plot, on the same figure
                final = plots.render(history.snapshot())
            finally:  # a cancel closes this generator and relay closes the training job:
                plots.close()  # training stops, its checkpoint stays
            region_layer = kwargs["target"] if kwargs["target"] is not None else kwargs["input"]
            rects = held_back_rectangles(result.split, region_layer)  # off the main thread too
            return result, final, rects

        return self.runner.run(job, self._done, description)

    def _on_event(self, event: dict, picture, line: str) -> None:
        """Show one event of the running job, its plot and status line (main thread)."""
        if not self._live:  # queued before a cancel, delivered after it
            return
        if picture is not None:
            self._show_plot(picture)
        phase = event.get("phase")
        now = time.perf_counter()
        if phase == "train" and now - self._shown_status < STATUS_INTERVAL_S:
            return
        self._shown_status = now
        if line:
            self.message.value = line

    def _show_plot(self, picture) -> None:
        rgba, figure, n_steps = picture
        self.plot.show(rgba, figure)
        self.plotted.append(n_steps)

    def _on_stop(self, how: str, err) -> None:
        """Offer to resume a cancelled or failed run from its checkpoint."""
        self._live = False
        self._resumable = self._last_run is not None
        last = self.history.steps[-1] if self.history.steps else 0
        if how == "cancelled":  # the job saves the steps done when it is closed
            where = f"from step {last}" if last else "from the start"
        elif self.history.val_steps:  # a crash keeps the checkpoint of the last validation
            where = f"from the checkpoint of step {self.history.val_steps[-1]}"
        else:
            where = "from the start (no checkpoint was written before the first validation)"
        self.message.value = (f"{how} at step {last}" + (f": {err}" if err is not None else "")
                              + f". Resume continues {where}.")

    def _done(self, value) -> None:
        """Select the saved model, add the held-back regions, say what to do next."""
        result, picture, rects = value
        self._live = False
        self.result = result
        self._show_plot(picture)
        path = str(result.path)
        self.session.set(model=path)
        name = api.model_card(path)["name"]
        region_layer = self._last_run["target"]
        if region_layer is None:
            region_layer = self._last_run["input"]
        self.held_back = self._add_held_back(rects, name, region_layer)
        self.quality.value = quality_html(result.quality)
        stopped = " (stopped early)" if result.stopped_early else ""
        self.message.value = (
            f"saved {name} to {path}{stopped}; it is now the model of the Model and Predict "
            f"docks. Next: predict with it, then calibrate on the held-back regions: pick "
            f"'{self.held_back.name}' as the labeled regions in Calibrate.")
        self.output.value = str(next_free_folder(path))  # ready for another run, nothing lost

    def _add_held_back(self, rects: list, name: str, target):
        """Add the held-back regions as a Shapes layer on the target's grid; return it."""
        layer_name = f"held back ({name})"
        kwargs = {
            "name": layer_name, "shape_type": "rectangle", "edge_color": "cyan",
            "face_color": [0.0, 0.0, 0.0, 0.0],
            "edge_width": max(1.0, 2.0 * float(tuple(target.scale)[-1])),
            "metadata": {api.META_KEY: {"role": "held back", "model": name,
                                        "n_regions": len(rects)}},
        }
        if layer_name in self.viewer.layers:  # a second run of the same model replaces it
            self.viewer.layers.remove(layer_name)
        return api.show(self.viewer, [(rects, kwargs, "shapes")])[0]


def held_back_rectangles(split: dict, target) -> list:
    """Return the held-back regions of ``split`` as rectangles in ``target``'s world coordinates.

    ``target`` is the layer the regions were cut from (2-D, or a stack whose planes are matched
    to the split's entries by their fingerprints).
    """
    from .._fingerprints import plane_fingerprints

    ndim = 3 if target.data.ndim == 3 else 2
    plane_of = None
    if ndim == 3:
        plane_of = {fp: i for i, fp in reversed(list(enumerate(plane_fingerprints(target.data))))}
    return api.held_back_shapes(split, scale=tuple(target.scale)[-ndim:],
                                translate=tuple(target.translate)[-ndim:], ndim=ndim,
                                plane_of=plane_of)


def _shape_problem(input_shape, target_shape) -> str | None:
    """Return why the target's shape cannot be the input's times an integer factor, or None."""
    (ih, iw), (th, tw) = input_shape[-2:], target_shape[-2:]
    if th % ih or tw % iw or th // ih != tw // iw:
        return (f"target rows and columns must be the input's times one whole factor (1 for the "
                f"same grid); got input {tuple(input_shape)} and target {tuple(target_shape)}")
    return None


def _describe(event: dict, history: LossHistory) -> str:
    """Return the status line for one event of the training job."""
    phase = event.get("phase")
    if phase == "data":
        return "reading the pairs and cutting the train / validation / held-back regions..."
    if phase == "train":
        line = (f"step {event['step']} of {event['total']}: loss {history.smooth[-1]:.4g} "
                f"(smoothed), {float(event.get('seconds', 0.0)):.0f} s")
        if history.val_loss:
            line += f"; validation {history.val_loss[-1]:.4g}"
            if history.best_step is not None:
                line += f" (best at step {history.best_step})"
        return line
    if phase == "validate":
        return (f"step {event['step']} of {event['total']}: validation loss "
                f"{float(event['val_loss']):.4g} (best {float(event['best_val_loss']):.4g} at "
                f"step {event['best_step']})")
    if phase == "stopped_early":
        return (f"stopped early at step {event['step']}: the validation loss has not improved "
                f"since step {event['best_step']} (its weights are kept)")
    if phase == "evaluate":
        return "measuring the held-back quality, next to the baseline..."
    if phase == "saved":
        return f"saved to {event['path']}"
    return ""


#: The figures of the held-back quality, in the order shown, with their (short) labels.
QUALITY_LABELS = {"psnr_db": "PSNR dB", "ssim": "SSIM", "rmse": "RMSE", "mae": "MAE", "f1": "F1",
                  "accuracy": "accuracy", "spearman_error": "Spearman",
                  "raw_interval_coverage": "coverage", "mean_interval_width": "width"}


def quality_html(quality: dict) -> str:
    """Return a training's held-back quality (``TrainResult.quality``) as a small rich-text table.

    One column per figure, a row for the model and one for the baseline (the raw interval's
    coverage and width are the model's only).

    Examples
    --------
    >>> text = quality_html({"model": {"rmse": 0.1}, "baseline": {"rmse": 0.2},
    ...                      "baseline_name": "cubic", "n_regions": 3, "n_pixels": 300})
    >>> "<tr><td><b>model</b></td><td>0.1</td></tr>" in text, text.endswith("baseline: cubic")
    (True, True)
    """
    model, base = quality.get("model", {}), quality.get("baseline", {})
    keys = [k for k in QUALITY_LABELS if isinstance(model.get(k), int | float)]
    keys += [k for k, v in model.items() if k not in QUALITY_LABELS and isinstance(v, int | float)]

    def row(name, figures):
        cells = "".join(f"<td>{figures[k]:.4g}</td>" if isinstance(figures.get(k), int | float)
                        else "<td></td>" for k in keys)
        return f"<tr><td><b>{name}</b></td>{cells}</tr>"

    head = "<tr><td></td>" + "".join(f"<td><b>{html.escape(QUALITY_LABELS.get(k, k))}</b></td>"
                                     for k in keys) + "</tr>"
    where = (f" ({quality['n_regions']} regions, {quality['n_pixels']} pixels never trained on)"
             if "n_regions" in quality and "n_pixels" in quality else "")
    table = (f'<table cellspacing="0" cellpadding="2">{head}{row("model", model)}'
             f'{row("baseline", base)}</table>')
    baseline = "<br>".join(html.escape(line) for line in textwrap.wrap(
        f"baseline: {quality.get('baseline_name', '?')}", 60))
    return f"<b>held-back quality</b>{html.escape(where)}{table}{baseline}"

