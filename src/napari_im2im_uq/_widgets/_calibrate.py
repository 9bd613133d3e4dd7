"""The Calibrate dock widget: calibrate the outputs of a prediction on ground truth the user chose."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, PushButton, SpinBox
from napari.utils.notifications import show_info, show_warning

from .. import api
from .._warnings import Im2ImUQWarning
from ..layers import legend
from ._common import (
    NONE,
    WHOLE,
    JobRunner,
    Panel,
    has_record,
    is_output,
    is_truth,
    kind,
    layer_picker,
    meta,
    prefer,
    text,
)
from ._plot import PlotArea, plot_curve, render

REGION_NOTE = (
    "The labeled tiles stand for the population: if they come from one contiguous region, that "
    "the rest of the image behaves like it is an assumption, not a guarantee. A random tile plan "
    "makes it hold by design."
)

#: The box that lets calibration use tiles of the model's training regions.
LEAKAGE_BOX = "calibrate on tiles the model was trained on (report the leakage bound)"


class CalibrateWidget(Panel):
    """Calibrate a prediction run; shows the risk curve, the guarantee and the result layers."""

    def __init__(self, napari_viewer):
        viewer = napari_viewer
        super().__init__(viewer, labels=True)
        self.prediction = layer_picker(viewer, "prediction", is_output,
                                       tooltip="any output layer of one Predict run")
        self.truth = layer_picker(viewer, "ground truth", is_truth,
                                  tooltip="Image (regression) or Labels (segmentation: 0 = not "
                                          "annotated, label k + 1 = class k), on the output grid")
        self.regions = layer_picker(viewer, "labeled regions", lambda ly: kind(ly) == "shapes",
                                    optional=WHOLE,
                                    tooltip="rectangles where ground truth exists")
        self.tile_rows = SpinBox(label="tile rows", value=64, min=4, max=4096,
                                 tooltip="calibration tile (output pixels): the unit the "
                                         "guarantee speaks about")
        self.tile_cols = SpinBox(label="tile columns", value=64, min=4, max=4096)
        first = api.method_names()[0]
        self.method = ComboBox(label="method", value=first,
                               choices=[(api.method(m).title, m) for m in api.method_names()])
        self.rule = ComboBox(label="rule", choices=list(api.method(first).rules))
        self.bound = ComboBox(label="bound", choices=list(api.BOUNDS))
        self.alpha = FloatSpinBox(label="alpha", value=0.1, min=0.0, max=1.0, step=0.001)
        self.delta = FloatSpinBox(label="delta", value=0.1, min=0.0, max=1.0, step=0.001)
        self.beta = FloatSpinBox(label="beta", value=0.9, min=0.0, max=1.0, step=0.001,
                                 visible=False)
        self.sigma = ComboBox(label="trust score", choices=["auto", "width", "std", "residual",
                                                            "mask"], visible=False)
        self.bounds_box = CheckBox(label="also add calibrated lower/upper", value=False)
        self.allow_leakage = CheckBox(
            label=LEAKAGE_BOX, value=False,
            tooltip="off: tiles inside the regions the model was trained or validated on are "
                    "refused; on: they are used and the record states how many leaked and the "
                    "bound of Adame et al., Prop. 3.2")
        self.calibrate_button = PushButton(text="Calibrate")
        self.check_button = PushButton(text="Self-check (half / half)")
        self.cancel = PushButton(text="Cancel")
        self.n_plan = SpinBox(label="tiles to plan", value=20, min=1, max=100000)
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1)
        self.plan_button = PushButton(text="Plan calibration tiles")
        self.saved = layer_picker(viewer, "saved record", has_record, optional=NONE,
                                  tooltip="a calibrated layer or an opened record (.json)")
        self.apply_button = PushButton(text="Apply the record to this prediction")
        self.guarantee = text()
        self.message = text()
        self.legend = text()  # one sentence per calibrated layer: what its colours mean
        self._legends = {}
        self.extend([self.prediction, self.truth, self.regions, self.tile_rows, self.tile_cols,
                     self.method, self.rule, self.bound, self.alpha, self.delta, self.beta,
                     self.sigma, self.bounds_box, self.allow_leakage, self.calibrate_button,
                     self.check_button,
                     self.cancel, self.n_plan, self.seed, self.plan_button, self.saved,
                     self.apply_button, self.status,
                     self.message, self.legend, self.guarantee])
        self.plot = PlotArea(self)
        prefer(self.truth, lambda ly: meta(ly).get("role") == "truth")
        self.runner = JobRunner(self.message, [self.calibrate_button, self.check_button],
                                self.cancel)
        self.runner.after_finish = self.refresh
        self.calibrate_button.changed.connect(self.start)
        self.check_button.changed.connect(self.start_self_check)
        self.plan_button.changed.connect(self.plan)
        self.apply_button.changed.connect(self.apply_saved)
        self.method.changed.connect(self._method_changed)
        self.watch(self.prediction, self.truth, self.regions, self.tile_rows, self.tile_cols,
                   self.method, self.rule, self.alpha, self.delta, self.beta, self.sigma)
        self.connect_layers()
        self.last = None
        self._method_changed()

    def run_buttons(self):
        return [self.calibrate_button, self.check_button]

    def _method_changed(self, *_):
        entry = api.method(self.method.value)
        self.rule.choices = list(entry.rules)
        self.rule.value = entry.rules[0]
        self.beta.visible = "beta" in entry.options
        self.sigma.visible = "sigma" in entry.options
        self.bounds_box.visible = "show_bounds" in entry.options
        self.refresh()

    def outputs(self):
        """Return the outputs of the chosen prediction's run, by name."""
        if self.prediction.value is None:
            return {}
        return api.model_outputs(self.viewer.layers, self.prediction.value)

    def problems(self):
        rule = self.rule.value
        self.bound.visible = rule == "rcps"
        self.delta.visible = rule == "rcps"
        method = self.method.value
        entry = api.method(method)
        if self.prediction.value is None:
            return "choose an output layer of a Predict run"
        outputs = self.outputs()
        missing = [k for k in entry.needs if k not in outputs]
        if missing:
            return (f"method {method} needs the outputs {list(entry.needs)}; this run has "
                    f"{sorted(outputs)}")
        truth = self.truth.value
        if truth is None:
            return "choose a ground-truth layer"
        if entry.truth == "labels" and kind(truth) != "labels":
            return f"{method} needs a Labels layer as ground truth (0 = not annotated)"
        if entry.truth == "image" and kind(truth) != "image":
            return f"{method} needs an Image layer as ground truth; got a {kind(truth)} layer"
        ref = outputs[entry.needs[0]].data
        grid = ref.shape[1:] if entry.class_axis else ref.shape
        if tuple(truth.data.shape) != tuple(grid):
            return (f"ground truth must be on the outputs' grid {tuple(grid)}; got "
                    f"{tuple(truth.data.shape)}")
        if self.tile_rows.value > grid[-2] or self.tile_cols.value > grid[-1]:
            return f"tile must fit in the image {tuple(grid[-2:])}"
        for w in (self.alpha, self.delta, self.beta):
            if w.visible and not 0.0 < w.value < 1.0:
                return f"{w.label} must be in (0, 1); got {w.value}"
        if ("sigma" in entry.options and self.sigma.value not in ("auto", "width")
                and self.sigma.value not in outputs):
            return f"the trust score {self.sigma.value!r} is not an output of this run"
        return None

    def options(self) -> dict:
        """Return the keyword arguments of api.calibrate for the current fields."""
        opts = {
            "method": self.method.value,
            "alpha": float(self.alpha.value),
            "rule": self.rule.value,
            "tile_shape": (int(self.tile_rows.value), int(self.tile_cols.value)),
            "regions": self.regions.value,
            "leakage": "report" if self.allow_leakage.value else "refuse",
        }
        if self.rule.value == "rcps":
            opts.update(delta=float(self.delta.value), bound=self.bound.value)
        entry = api.method(self.method.value)
        if "beta" in entry.options:
            opts["beta"] = float(self.beta.value)
        if "sigma" in entry.options and self.sigma.value != "auto":
            opts["sigma"] = self.sigma.value
        return opts

    def start(self, *_):
        """Calibrate in a worker thread."""
        if self.problems() is not None:
            return None
        outputs, truth, opts = self.outputs(), self.truth.value, self.options()
        if "show_bounds" in api.method(opts["method"]).options:
            opts["show_bounds"] = bool(self.bounds_box.value)
        height = self.plot.height

        def job():
            try:
                cal = yield from api.calibrate_job(outputs, truth, **opts)
            except ValueError as err:  # said with this widget's field
                raise ValueError(in_widget(err)) from None
            return cal, render(plot_curve, cal.result, height=height)  # drawn off the main thread

        return self.runner.run(job, self._done, "calibrating")

    def _done(self, value):
        cal, plot = value
        self.runner.show(self.viewer, cal.layers)
        self.show_result(cal, plot)

    def show_result(self, cal, plot=None):
        """Show a calibration's guarantee, numbers and risk curve in the widget."""
        self.last = cal
        res = cal.result
        self.guarantee.value = guarantee_text(cal.record)
        self.message.value = (f"lam_hat = {res.lam:.6g} from {res.n} tiles; calibration risk "
                              f"{res.empirical_risk:.4g}; layers: "
                              + ", ".join(kw["name"] for _, kw, _ in cal.layers))
        self.explain(cal.layers)
        if plot is None:
            self.plot.draw(plot_curve, res)
        else:
            self.plot.show(*plot)

    def explain(self, layer_tuples) -> None:
        """Say in the legend, one sentence per calibrated layer, what its colours mean."""
        for data, kwargs, _ in layer_tuples:
            stand_in = SimpleNamespace(data=data, name=kwargs.get("name", ""),
                                       metadata=kwargs.get("metadata", {}), scale=())
            sentence = legend(stand_in)
            if sentence is not None:
                self._legends[stand_in.name] = sentence
        names = {ly.name for ly in self.viewer.layers} | {kw.get("name") for _, kw, _ in layer_tuples}
        self.legend.value = "\n".join(v for k, v in self._legends.items() if k in names)

    def start_self_check(self, *_):
        """Calibrate on half of the labeled tiles and test on the other half (worker thread)."""
        if self.problems() is not None:
            return None
        outputs, truth, opts = self.outputs(), self.truth.value, self.options()
        seed = int(self.seed.value)

        def job():
            yield 0, 1
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Im2ImUQWarning)
                try:
                    report = api.self_check(outputs, truth, seed=seed, **opts)
                except ValueError as err:
                    raise ValueError(in_widget(err)) from None
            yield 1, 1
            return report

        return self.runner.run(job, self._checked, "self-check")

    def _checked(self, report):
        self.last_check = report
        leak = report.get("leakage") or {}
        self.message.value = report["message"] + (
            f" {leak['n_leaked']} of the labeled tiles lie in the model's training regions."
            if leak.get("n_leaked") else "")
        if report["passed"]:
            show_info(f"napari-im2im-uq self-check: {report['message']}")
        else:
            show_warning(f"napari-im2im-uq self-check: {report['message']}")

    def plan(self, *_):
        """Add a Shapes layer with a random, non-overlapping plan of calibration tiles."""
        target = self.truth.value or self.prediction.value
        if target is None:
            self.message.value = "choose a prediction or ground-truth layer to plan tiles on"
            return None
        try:
            layer = api.plan_tiles(target, tile_shape=(self.tile_rows.value, self.tile_cols.value),
                                   n_tiles=int(self.n_plan.value), seed=int(self.seed.value))
        except ValueError as err:
            self.message.value = f"error: {err}"
            show_warning(f"napari-im2im-uq: {err}")
            return None
        shown = api.show(self.viewer, [layer])[0]
        self.message.value = (f"{shown.name}: acquire ground truth in these {len(layer[0])} tiles, "
                              "then choose this layer as the labeled regions")
        return shown

    def apply_saved(self, *_):
        """Apply the chosen saved record to the chosen prediction (no ground truth needed)."""
        if self.saved.value is None or self.prediction.value is None:
            self.message.value = "choose a saved record and a prediction to apply it to"
            return None
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", Im2ImUQWarning)
                layers = api.apply_record(self.saved.value, self.outputs(),
                                          show_bounds=bool(self.bounds_box.value),
                                          drift_layer=True)
        except (ValueError, KeyError) as err:
            self.message.value = f"error: {err}"
            show_warning(f"napari-im2im-uq: {err}")
            return None
        for w in caught:
            show_warning(f"napari-im2im-uq: {w.message}")
        record = meta(self.saved.value)["record"]
        self.message.value = (f"applied lam = {record['calibration']['lam']:.6g} "
                              f"({record['calibration']['method']}) from "
                              f"{self.saved.value.name}")
        self.guarantee.value = guarantee_text(record)
        drift = meta_of_tuple(layers[0]).get("drift")
        if drift is not None:  # the drift check ran on what was applied: say it by the guarantee
            self.guarantee.value += f"\n\nDrift check: {drift['message']}"
            if drift["drifted"]:
                show_warning(f"napari-im2im-uq: {drift['message']}")
        self.explain(layers)
        self.runner.show(self.viewer, layers)
        return layers


def in_widget(err) -> str:
    """Say an error of calibrate with this widget's fields instead of its arguments."""
    return str(err).replace("pass leakage='report'", f"tick '{LEAKAGE_BOX}'")


def guarantee_text(record) -> str:
    """Return the guarantee as the widget states it: with the leakage line when there is one."""
    leak = record.get("leakage") or {}
    return "\n\n".join([record["guarantee"], *([leak["message"]] if leak.get("message") else []),
                        REGION_NOTE])


def meta_of_tuple(layer_tuple) -> dict:
    """Return the plugin's metadata of a layer-data tuple."""
    return layer_tuple[1].get("metadata", {}).get(api.META_KEY, {})
