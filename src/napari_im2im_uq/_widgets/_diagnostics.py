"""The Diagnostics dock widget: the papers' metrics and plots on held-out ground truth."""

from __future__ import annotations

import html

from magicgui.widgets import CheckBox, PushButton, SpinBox
from napari.utils.notifications import show_warning

from .. import api
from ._common import (
    WHOLE,
    JobRunner,
    Panel,
    has_record,
    is_output,
    is_truth,
    kind,
    layer_picker,
    meta,
    text,
)
from ._plot import PlotArea, render


class DiagnosticsWidget(Panel):
    """Measure a calibration on held-out ground truth: risk over splits, sizes, maps."""

    def __init__(self, napari_viewer):
        viewer = napari_viewer
        super().__init__(viewer, labels=True)
        self.record = layer_picker(viewer, "calibration", has_record,
                                   tooltip="a layer made by Calibrate, or a loaded record")
        self.prediction = layer_picker(viewer, "prediction", is_output,
                                       tooltip="outputs of the same model on held-out data")
        self.truth = layer_picker(viewer, "held-out truth", is_truth)
        self.regions = layer_picker(viewer, "held-out regions", lambda ly: kind(ly) == "shapes",
                                    optional=WHOLE)
        self.n_splits = SpinBox(label="random splits", value=100, min=1, max=10000)
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1)
        self.leave_out = CheckBox(label="leave out the calibration tiles", value=True,
                                  tooltip="measure only on tiles the calibration did not see")
        self.run_button = PushButton(text="Run diagnostics")
        self.cancel = PushButton(text="Cancel")
        self.message = text()
        self.summary = text(rich=True)
        self._build_drift()
        self.extend([self.record, self.prediction, self.truth, self.regions, self.n_splits,
                     self.seed, self.leave_out, self.run_button, self.cancel, self.status, self.message,
                     self.summary, *self.drift_widgets])
        self.plot = PlotArea(self, height=7.5)
        self.runner = JobRunner(self.message, [self.run_button], self.cancel)
        self.runner.after_finish = self.refresh
        self.run_button.changed.connect(self.start)
        self.watch(self.record, self.prediction, self.truth, self.regions)
        self.connect_layers()
        self.report = None
        self.drift_verdict = None
        self.refresh()

    def run_buttons(self):
        return [self.run_button]

    def problems(self):
        if self.record.value is None:
            return "choose a calibrated layer (run Calibrate first, or open a saved record)"
        rec = meta(self.record.value)["record"]
        method = rec["calibration"]["method"]
        if self.prediction.value is None:
            return "choose an output layer of a Predict run on the held-out data"
        outputs = api.model_outputs(self.viewer.layers, self.prediction.value)
        entry = api.method(method)
        missing = [k for k in entry.needs if k not in outputs]
        if missing:
            return f"the record's method {method} needs the outputs {list(entry.needs)}"
        if self.truth.value is None:
            return "choose the held-out ground truth"
        ref = outputs[entry.needs[0]].data
        grid = ref.shape[1:] if entry.class_axis else ref.shape
        if tuple(self.truth.value.data.shape) != tuple(grid):
            return (f"held-out truth must be on the outputs' grid {tuple(grid)}; got "
                    f"{tuple(self.truth.value.data.shape)}")
        return None

    def start(self, *_):
        """Run the diagnostics in a worker thread."""
        if self.problems() is not None:
            return None
        rec = meta(self.record.value)["record"]
        outputs = api.model_outputs(self.viewer.layers, self.prediction.value)
        truth, regions = self.truth.value, self.regions.value
        n_splits, seed = int(self.n_splits.value), int(self.seed.value)
        leave_out = bool(self.leave_out.value)
        height = self.plot.height

        def job():
            report = yield from api.diagnose_job(rec, outputs, truth, regions=regions,
                                                 n_splits=n_splits, seed=seed,
                                                 leave_out_calibration=leave_out)
            return report, render(lambda fig: api.plot_diagnostics(report, fig), height=height)

        return self.runner.run(job, self._done, "diagnostics")

    def _done(self, value):
        report, plot = value
        self.report = report
        rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
                       for k, v in report.get("summary", []))
        self.summary.value = f"<table>{rows}</table>"
        used = report.get("tiles_used_to_calibrate", 0)
        left = report.get("calibration_tiles_left_out", 0)
        self.message.value = f"diagnostics on {len(report['tiles'])} tiles" + (
            f"; {used} of them were used to calibrate: NOT held out" if used else
            f", held out ({left} calibration tiles left out)")
        if used:
            show_warning(f"napari-im2im-uq diagnostics: {used} of the tiles were used to "
                         "calibrate; choose held-out regions for an honest measurement")
        self.plot.show(*plot)

    # ------------------------------------------------------------------ Drift section
    def _build_drift(self):
        """Build the Drift section: does the calibration carry over to the chosen prediction."""
        self.drift_title = text(rich=True)
        self.drift_title.value = ("<b>Drift</b>: do the chosen outputs look like the calibration "
                                  "tiles? (no ground truth needed)")
        self.drift_button = PushButton(text="Check drift (no ground truth needed)")
        self.drift_cancel = PushButton(text="Cancel drift check")
        self.drift_message = text()
        self.drift_widgets = [self.drift_title, self.drift_button, self.drift_cancel,
                              self.drift_message]
        self.drift_runner = JobRunner(self.drift_message, [self.drift_button], self.drift_cancel)
        self.drift_runner.after_finish = self.refresh
        self.drift_button.changed.connect(self.start_drift)

    def drift_problems(self):
        """Why the drift check cannot run now (None when it can)."""
        if self.record.value is None:
            return "choose a calibrated layer (run Calibrate first, or open a saved record)"
        if "drift_summary" not in meta(self.record.value)["record"]:
            return "the record holds no drift summary: calibrate again with this version"
        if self.prediction.value is None:
            return "choose an output layer of a Predict run on the data to check"
        return None

    def refresh(self, *_):
        """Validate the diagnostics fields, then the drift check's."""
        super().refresh()
        runner = getattr(self, "drift_runner", None)
        if runner is None or runner.running:
            return
        try:
            reason = self.drift_problems()
        except Exception as err:  # noqa: BLE001 - a field we cannot read is a problem to show
            reason = str(err)
        self.drift_button.enabled = reason is None
        self.drift_button.tooltip = reason or "test the outputs against the calibration tiles"

    def start_drift(self, *_):
        """Run the drift check in a worker thread; show its verdict and map."""
        if self.drift_problems() is not None:
            return None
        rec = meta(self.record.value)["record"]
        outputs = api.model_outputs(self.viewer.layers, self.prediction.value)
        return self.drift_runner.run(lambda: api.check_drift_job(rec, outputs),
                                     self._drift_done, "drift check")

    def _drift_done(self, value):
        verdict, layer = value
        self.drift_verdict = verdict
        self.drift_message.value = verdict["message"]
        if verdict["drifted"]:
            show_warning(f"napari-im2im-uq drift check: {verdict['message']}")
        self.drift_runner.show(self.viewer, [layer])
