"""What the dock widgets share: the per-viewer session, layer pickers and the job runner.

No maths here: the widgets collect arguments, run a generator of :mod:`napari_im2im_uq.api`
in a napari thread worker (progress bar, cancel, errors as notifications) and show its layers.
"""

from __future__ import annotations

import weakref

from magicgui.widgets import ComboBox, Container, Label, PushButton
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from psygnal import Signal
from qtpy.QtCore import QTimer

from .. import layers
from . import _warm

NONE = "(none)"
WHOLE = "(whole image: everything is ground truth)"


class Session:
    """The model, device and trust chosen in the Model widget, shared by one viewer's widgets.

    ``trust_code`` (let a bioimage.io package's ``pytorch_state_dict`` architecture, its
    author's Python, run) belongs to the model it was given for: choosing another model
    withdraws it.
    """

    changed = Signal()

    def __init__(self):
        self.model = "tem-sr4x-quantile"
        self.device = "auto"
        self.trust_code = False

    def set(self, *, model=None, device=None, trust_code=None):
        """Change the model, the device and/or the trust, and tell the other widgets."""
        model = self.model if model is None else model
        if trust_code is None:  # kept for the same model, withdrawn for another
            trust_code = self.trust_code and model == self.model
        new = (model, self.device if device is None else device, bool(trust_code))
        if new != (self.model, self.device, self.trust_code):
            self.model, self.device, self.trust_code = new
            self.changed.emit()


_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def session(viewer) -> Session:
    """Return the session of ``viewer`` (created on first use)."""
    if viewer not in _SESSIONS:
        _SESSIONS[viewer] = Session()
    return _SESSIONS[viewer]


#: The plugin's metadata of a layer (empty for other layers and for None).
meta = layers.meta


#: The napari type of a layer: "image", "labels", "shapes", ...
kind = layers.kind


def text(rich: bool = False) -> Label:
    """Return a wrapped, left-aligned text label for messages (rich text if ``rich``)."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QSizePolicy

    label = Label(value="")
    label.native.setWordWrap(True)
    label.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
    label.native.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
    if rich:
        label.native.setTextFormat(Qt.TextFormat.RichText)
    return label


#: Milliseconds after the plugin's first dock opens before the plugin warms up in a background
#: thread: torch (its libraries loaded without the GIL), the modules of a first Predict and
#: Calibrate, matplotlib's fonts (``_warm.warm_up``). None: never warm up; the first jobs then
#: import all of it in their threads (the behaviour before issue 15, a stalled viewer).
WARM_UP_MS: int | None = 1500


def warm_up(delay_ms: int | None = None) -> None:
    """Warm the plugin up in a background thread ``delay_ms`` (default ``WARM_UP_MS``) from now.

    Once per process; opening the widgets stays free of torch (the timer fires only when the
    event loop runs).
    """
    _warm.warm_up(WARM_UP_MS if delay_ms is None else delay_ms)


def dock_of(widget):
    """Return the QDockWidget that holds a widget (magicgui or Qt), or None when not docked."""
    from qtpy.QtWidgets import QDockWidget

    w = getattr(widget, "native", widget)
    while w is not None and not isinstance(w, QDockWidget):
        w = w.parentWidget()
    return w


def bring_to_front(widget) -> None:
    """Show the dock of ``widget`` in front of the docks tabified with it."""
    dock = dock_of(widget)
    if dock is not None:
        dock.show()
        dock.raise_()


def is_output(layer) -> bool:
    """Whether a layer is an output of a Predict run."""
    return meta(layer).get("role") == "output"


def is_truth(layer) -> bool:
    """Whether a layer can be ground truth: an Image or Labels layer the plugin did not make."""
    return kind(layer) in ("image", "labels") and meta(layer).get("role") not in (
        "output", "calibrated")


def has_record(layer) -> bool:
    """Whether a layer carries a calibration record (made by Calibrate, or an opened record)."""
    return meta(layer).get("role") in ("calibrated", "record")


def layer_picker(viewer, label: str, accept, *, optional=None, tooltip=None) -> ComboBox:
    """Return a combo box of the viewer's layers for which ``accept(layer)`` is true.

    ``optional`` adds a first entry with that text, meaning None.
    """

    def choices(_widget=None):
        items = [(optional, None)] if optional else []
        items += [(ly.name, ly) for ly in viewer.layers if accept(ly)]
        return items

    box = ComboBox(label=label, choices=choices, nullable=not optional, tooltip=tooltip)
    return box


def prefer(box: ComboBox, accept) -> None:
    """Select the first choice of ``box`` whose layer satisfies ``accept``, if any."""
    for choice in box.choices:
        if choice is not None and accept(choice):
            box.value = choice
            return


#: Milliseconds between two result layers added by a dock (see ``JobRunner.show``).
LAYER_SPACING_MS = 30


class JobFailed(Exception):
    """A job raised a RuntimeError (torch's errors do): re-raised as this one.

    superqt's thread worker takes a RuntimeError for the sign that its Qt object was deleted
    and ends without emitting ``errored`` or ``finished``: the dock would stay busy forever.
    """


class JobRunner:
    """Run api generators in a napari thread worker, with a progress bar and a cancel button.

    ``run(job_factory, on_done, description)`` starts ``job_factory()`` (a generator yielding
    ``(done, total)``) in a worker thread; its return value goes to ``on_done`` on the main
    thread. Errors become napari error notifications and the status line; cancel closes the
    generator (the api's jobs stop between blocks).
    """

    def __init__(self, status: Label, buttons: list[PushButton], cancel: PushButton):
        self.status = status
        self.buttons = buttons
        self.cancel_button = cancel
        self.worker = None
        self.showing = False
        self._holding = False
        self._job = None
        self._bar = None
        cancel.enabled = False
        cancel.changed.connect(self.cancel)

    @property
    def running(self) -> bool:
        """Whether a job runs or its layers are still being added."""
        return self.worker is not None or self.showing

    def show(self, viewer, tuples, then=None):
        """Add layer tuples one per event-loop turn, then call ``then(shown_layers)``.

        napari needs 0.1-0.3 s of the main thread to create one image layer and its visual on
        a software-rendered display (``benchmarks/bench_heartbeat.py --modes napari``): each
        layer gets a turn of its own, :data:`LAYER_SPACING_MS` apart so the viewer paints and
        answers between them, and the colour bars (their text is drawn on the main thread)
        one more. The first layer comes in the next turn, after what the caller shows now.
        """
        shown = []
        self.showing = True

        def step(i=0):
            if i < len(tuples):
                shown.extend(layers.show(viewer, [tuples[i]], colorbar=False))
                QTimer.singleShot(LAYER_SPACING_MS, lambda: step(i + 1))
                return
            bars = [layers.show_colorbar(ly) for ly in shown]  # every one, not up to the first
            if any(bars):
                QTimer.singleShot(LAYER_SPACING_MS, finish)
            else:
                finish()

        def finish():
            self.showing = False
            if then is not None:
                then(shown)
            self.after_finish()

        QTimer.singleShot(0, step)

    def run(self, job_factory, on_done, description: str):
        """Start a job; returns the worker (already started)."""
        if self.running:
            return None
        job = job_factory()  # argument errors surface here, on the main thread
        self._job = job
        self._bar = progress(total=0, desc=description)

        warm = WARM_UP_MS is not None

        def drive():
            if warm:  # what the job would import anyway, without stalling the viewer
                _warm.ensure_warm()
            try:
                while True:
                    yield next(job)
            except StopIteration as stop:
                return stop.value
            except RuntimeError as err:  # torch's errors are; see JobFailed
                raise JobFailed(str(err)) from err

        worker = create_worker(drive, _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(self._on_step)
        worker.returned.connect(on_done)
        worker.errored.connect(self._on_error)
        worker.aborted.connect(self._on_abort)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        for b in self.buttons:
            b.enabled = False
        self.cancel_button.enabled = True
        self.status.value = f"{description}..."
        _warm.hold()  # the main thread gets the GIL back quickly while the job's threads run
        self._holding = True
        worker.start()
        return worker

    def _on_step(self, step):
        done, total = step
        bar = self._bar
        if bar is None:
            return
        if bar.total != total:
            bar.total = total
        if done > bar.n:
            bar.update(done - bar.n)

    def _on_error(self, err):
        self.status.value = f"error: {err}"
        show_error(f"napari-im2im-uq: {err}")

    def _on_abort(self):
        if self._job is not None:
            self._job.close()
        self.status.value = "cancelled"
        show_info("napari-im2im-uq: cancelled")

    def _on_finished(self):
        if self._holding:
            self._holding = False
            _warm.release()
        if self._bar is not None:
            self._bar.close()
        self._bar = None
        self._job = None
        self.worker = None
        self.cancel_button.enabled = False
        for b in self.buttons:
            b.enabled = True
        self.after_finish()

    def after_finish(self):
        """Run after a job ends (the widget sets it to re-validate its fields)."""

    def cancel(self):
        """Ask the running job to stop at its next step."""
        if self.worker is not None:
            self.status.value = "cancelling..."
            self.worker.quit()


class Panel(Container):
    """Base of the dock widgets: live validation of the fields and a status line."""

    def __init__(self, viewer, **kwargs):
        super().__init__(**kwargs)
        self.viewer = viewer
        self.status = text()
        warm_up()  # in the background, once the viewer is idle

    def watch(self, *widgets):
        """Re-validate whenever one of ``widgets`` changes."""
        for w in widgets:
            w.changed.connect(self.refresh)

    def connect_layers(self):
        """Keep the layer pickers current as layers come and go."""
        events = self.viewer.layers.events
        for ev in (events.inserted, events.removed, events.moved):
            ev.connect(self._layers_changed)

    def _layers_changed(self, *_):
        self.reset_choices()
        self.refresh()

    def problems(self) -> str | None:
        """Return why the run button is disabled, or None when every field is valid."""
        return None

    def run_buttons(self) -> list[PushButton]:
        return []

    def refresh(self, *_):
        """Enable the run buttons only when every field is valid; say why otherwise."""
        runner = getattr(self, "runner", None)
        if runner is not None and runner.running:
            return
        try:
            reason = self.problems()
        except Exception as err:  # noqa: BLE001 - a field we cannot read is a problem to show
            reason = str(err)
        for b in self.run_buttons():
            b.enabled = reason is None
        self.status.value = "" if reason is None else f"cannot run: {reason}"
