"""The dock widgets in a real napari viewer (Qt under Xvfb): predict -> calibrate -> diagnose."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
from _display import HAS_DISPLAY, REASON  # noqa: E402

if not HAS_DISPLAY:
    pytest.skip(REASON, allow_module_level=True)

from napari_im2im_uq import api  # noqa: E402
from napari_im2im_uq._sample_data import sample_tem  # noqa: E402

MODEL = "tem-sr4x-quantile"
TIMEOUT_MS = 180_000


@pytest.fixture
def tem_viewer(make_napari_viewer):
    viewer = make_napari_viewer(show=True)  # the canvas renders only when shown
    for data, kwargs, kind in sample_tem():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    return viewer


def _user_layers(viewer):
    return {ly.name: (np.array(ly.data, copy=True), json.dumps(ly.metadata, default=str),
                      tuple(ly.scale)) for ly in viewer.layers}


def _wait(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=TIMEOUT_MS)


def _predict(qtbot, viewer):
    from napari_im2im_uq._widgets import ModelWidget, PredictWidget

    model_w, predict_w = ModelWidget(viewer), PredictWidget(viewer)
    viewer.window.add_dock_widget(model_w, name="Model")
    viewer.window.add_dock_widget(predict_w, name="Predict", tabify=True)
    assert model_w.model.value == MODEL
    assert "4x super-resolution" in model_w.card.value and "licence" in model_w.card.value
    predict_w.image.value = viewer.layers["tem input (low-res)"]
    assert predict_w.run_button.enabled, predict_w.status.value
    predict_w.start()
    _wait(qtbot, predict_w)
    return model_w, predict_w


def _calibrate(qtbot, viewer, widget, method, alpha):
    widget.reset_choices()
    widget.prediction.value = viewer.layers[f"prediction ({MODEL})"]
    widget.truth.value = viewer.layers["tem truth (high-res)"]
    widget.method.value = method
    widget.alpha.value = alpha
    assert widget.calibrate_button.enabled, widget.status.value
    widget.start()
    _wait(qtbot, widget)
    assert widget.last is not None and widget.last.result.method == method, widget.message.value
    return widget.last


def test_full_path_predict_calibrate_diagnose(tem_viewer, qtbot):
    from napari_im2im_uq._widgets import CalibrateWidget, DiagnosticsWidget

    viewer = tem_viewer
    before = _user_layers(viewer)
    _predict(qtbot, viewer)
    for out in ("prediction", "lower", "upper"):
        layer = viewer.layers[f"{out} ({MODEL})"]
        assert layer.data.shape == viewer.layers["tem truth (high-res)"].data.shape == (3, 384, 384)
        assert tuple(layer.scale) == (1.0, 1.0, 1.0)  # input (1, 4, 4) / scale factor 4
        m = layer.metadata["im2im_uq"]
        assert m["model"]["name"] == MODEL and len(m["model"]["sha256"]) == 64
        assert m["input_layer"] == "tem input (low-res)" and m["output"] == out

    cal_w = CalibrateWidget(viewer)
    viewer.window.add_dock_widget(cal_w, name="Calibrate", tabify=True)
    # a random plan of 40 tiles is where ground truth is taken for the intervals
    cal_w.n_plan.value = 40
    cal_w.truth.value = viewer.layers["tem truth (high-res)"]
    plan = cal_w.plan()
    assert len(plan.data) == 40 and plan.metadata["im2im_uq"]["role"] == "tile plan"
    cal_w.reset_choices()
    cal_w.regions.value = plan
    cal = _calibrate(qtbot, viewer, cal_w, "intervals", 0.1)
    width = viewer.layers[f"interval width ({MODEL})"]
    rec = width.metadata["im2im_uq"]["record"]
    assert rec["calibration"]["lam"] == cal.result.lam and rec["model"]["name"] == MODEL
    assert rec["calibration"]["n"] == 40 and rec["tile_shape"] == [64, 64]
    assert width.colormap.name == "inferno" and width.data.shape == (3, 384, 384)
    assert width.colorbar.visible  # shown a turn after the layer (JobRunner.show)
    assert "probability at least 90%" in cal_w.guarantee.value
    assert "assumption" in cal_w.guarantee.value
    ax = cal_w.plot.figure.axes[0]
    assert len(ax.lines) >= 3  # risk, bound, alpha (and lam_hat)

    _calibrate(qtbot, viewer, cal_w, "trust_mask", 0.25)
    untrusted = viewer.layers[f"untrusted ({MODEL})"]
    frac = float(np.mean(untrusted.data))
    assert 0.02 < frac < 0.98, frac  # marks some but not all pixels
    assert untrusted.metadata["im2im_uq"]["record"]["calibration"]["method"] == "trust_mask"

    # the overlay's colour is in the rendered canvas, where the mask says
    for ly in viewer.layers:
        ly.visible = ly.name in ("tem truth (high-res)", untrusted.name)
    viewer.dims.set_current_step(0, 0)
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    tinted = (shot[..., 0] - shot[..., 1] > 60) & (shot[..., 2] - shot[..., 1] > 60)
    untrusted.visible = False
    plain = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    plain_tinted = (plain[..., 0] - plain[..., 1] > 60) & (plain[..., 2] - plain[..., 1] > 60)
    inside = tinted.sum() / max(1, (shot.sum(-1) > 0).sum())
    assert plain_tinted.mean() < 0.001
    assert 0.3 * np.mean(untrusted.data[0]) < inside < 1.0, (inside, np.mean(untrusted.data[0]))

    # self-check on the planned tiles: 20 calibrate, 20 test
    cal_w.method.value = "intervals"
    cal_w.rule.value = "crc"  # 20 tiles are too few for RCPS at alpha = delta = 0.1
    cal_w.alpha.value = 0.1
    cal_w.start_self_check()
    _wait(qtbot, cal_w)
    assert cal_w.last_check["n_calibration"] == 20 and "tested on 20" in cal_w.message.value

    # diagnostics on the intervals record
    diag = DiagnosticsWidget(viewer)
    viewer.window.add_dock_widget(diag, name="Diagnostics", tabify=True)
    diag.reset_choices()
    diag.record.value = width
    diag.prediction.value = viewer.layers[f"prediction ({MODEL})"]
    diag.truth.value = viewer.layers["tem truth (high-res)"]
    diag.n_splits.value = 20
    assert diag.run_button.enabled, diag.status.value
    diag.start()
    _wait(qtbot, diag)
    assert diag.report is not None, diag.message.value
    assert diag.report["splits"]["n_splits"] == 20
    assert diag.report["calibration_tiles_left_out"] == 40  # measured on the other 68 tiles
    assert len(diag.report["tiles"]) == 68 and "held out" in diag.message.value
    assert "held-out" in diag.summary.value
    assert len(diag.plot.figure.axes) >= 3

    # the user's own layers are untouched
    after = _user_layers(viewer)
    for name, (data, metadata, scale) in before.items():
        np.testing.assert_array_equal(after[name][0], data)
        assert after[name][1:] == (metadata, scale), name


def test_fields_validate_live(tem_viewer):
    from napari_im2im_uq._widgets import CalibrateWidget, PredictWidget

    viewer = tem_viewer
    predict_w = PredictWidget(viewer)
    assert predict_w.image.value is viewer.layers["tem input (low-res)"]  # role "input" first
    from napari_im2im_uq import api

    side = api.model_io("tem-sr4x-quantile")["tile_side"]["cpu"]
    assert side >= 256  # halo under 15% of the tile's area (issue 14)
    assert f"tiles of up to {side} x {side} input pixels" in predict_w.defaults.value
    predict_w.tile_rows.value = 64
    assert not predict_w.run_button.enabled
    assert "tile rows and columns" in predict_w.status.value
    predict_w.tile_cols.value = 64
    assert predict_w.run_button.enabled
    predict_w.output.value = "zarr store"
    assert not predict_w.run_button.enabled and "zarr store" in predict_w.status.value

    cal_w = CalibrateWidget(viewer)
    assert not cal_w.calibrate_button.enabled
    assert "Predict run" in cal_w.status.value


def test_model_widget_takes_a_bundle_folder(tem_viewer, tmp_path):
    from napari_im2im_uq._widgets import ModelWidget
    from napari_im2im_uq._widgets._model import ON_DISK
    from napari_im2im_uq.models import read_spec

    model_w = ModelWidget(tem_viewer)
    model_w.model.value = ON_DISK
    model_w.folder.value = tmp_path
    assert "bundle folder must contain model.json" in model_w.status.value
    folder = read_spec("tem-sr4x-residual")["path"]
    model_w.folder.value = folder
    assert model_w.status.value == ""
    assert "tem-sr4x-residual" in model_w.card.value
    from napari_im2im_uq._widgets._common import session

    assert session(tem_viewer).model == folder
    model_w.device.value = "cpu"
    assert session(tem_viewer).device == "cpu"


def test_heartbeat_and_cancel(tem_viewer, qtbot):
    """The main thread keeps ticking during predict and calibrate; cancel stops a prediction."""
    from qtpy.QtCore import QTimer

    from napari_im2im_uq._widgets import CalibrateWidget, PredictWidget

    viewer = tem_viewer
    switch_interval = sys.getswitchinterval()
    ticks = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    start = time.perf_counter()
    try:
        _predict(qtbot, viewer)
        cal_w = CalibrateWidget(viewer)
        _calibrate(qtbot, viewer, cal_w, "intervals", 0.1)
    finally:
        timer.stop()
    seconds = time.perf_counter() - start
    gaps = np.diff(ticks) * 1000
    longest = float(gaps.max())
    report = os.environ.get("IM2IM_UQ_HEARTBEAT_FILE")
    if report:
        with open(report, "w") as fh:
            json.dump({"ticks": len(ticks), "longest_gap_ms": longest,
                       "p99_gap_ms": float(np.percentile(gaps, 99))}, fh)
    print(f"heartbeat: {len(ticks)} ticks, longest gap {longest:.0f} ms")
    # the timer ticked all along: at least 20% of its 100 ticks a second over the whole job
    # (a tick count alone depends on how fast the model is: 46 in 0.5 s with srnet2d)
    assert len(ticks) > 10 and len(ticks) > 0.2 * seconds / 0.010, (len(ticks), seconds)
    assert longest < 1500, longest  # goal 100 ms; loose so a shared CI machine does not flake
    # the jobs ran with a short thread switch interval (_widgets._warm), given back after them
    assert sys.getswitchinterval() == switch_interval

    # cancel: small tiles make many blocks; stop after the first
    predict_w = PredictWidget(viewer)
    predict_w.image.value = viewer.layers["tem input (low-res)"]
    predict_w.tile_rows.value = predict_w.tile_cols.value = 8
    names = [ly.name for ly in viewer.layers]
    worker = predict_w.start()
    worker.yielded.connect(lambda *_: predict_w.runner.cancel())
    _wait(qtbot, predict_w)
    assert predict_w.message.value == "cancelled"
    assert [ly.name for ly in viewer.layers] == names  # nothing added
    assert predict_w.run_button.enabled


def test_error_becomes_notification(tem_viewer, qtbot, monkeypatch):
    from napari_im2im_uq._widgets import CalibrateWidget, _common

    shown = []
    monkeypatch.setattr(_common, "show_error", lambda msg: shown.append(msg))
    viewer = tem_viewer
    _predict(qtbot, viewer)
    cal_w = CalibrateWidget(viewer)
    cal_w.reset_choices()
    cal_w.prediction.value = viewer.layers[f"prediction ({MODEL})"]
    cal_w.truth.value = viewer.layers["tem truth (high-res)"]
    cal_w.alpha.value = 0.001  # infeasible with 108 tiles at delta 0.1
    cal_w.start()
    _wait(qtbot, cal_w)
    assert shown and "alpha" in shown[0]
    assert cal_w.message.value.startswith("error:")
    assert cal_w.calibrate_button.enabled and not cal_w.cancel.enabled


def test_a_runtime_error_ends_the_job_and_frees_the_dock(tem_viewer, qtbot, monkeypatch):
    """torch raises RuntimeError; superqt's worker takes one for a deleted Qt object and would
    end silently, leaving the dock busy forever: the runner re-raises it as JobFailed."""
    from napari_im2im_uq._widgets import CalibrateWidget, _common

    shown = []
    monkeypatch.setattr(_common, "show_error", lambda msg: shown.append(msg))
    viewer = tem_viewer
    _predict(qtbot, viewer)
    cal_w = CalibrateWidget(viewer)
    cal_w.reset_choices()
    cal_w.prediction.value = viewer.layers[f"prediction ({MODEL})"]
    cal_w.truth.value = viewer.layers["tem truth (high-res)"]

    def broken(*args, **kwargs):
        yield 0, 3
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(api, "calibrate_job", broken)
    cal_w.start()
    _wait(qtbot, cal_w)
    assert shown and "CUDA out of memory (simulated)" in shown[0]
    assert cal_w.message.value.startswith("error:")
    assert cal_w.calibrate_button.enabled and not cal_w.cancel.enabled


def test_record_writer_and_reader(tem_viewer, qtbot, tmp_path):
    from napari_im2im_uq._widgets import CalibrateWidget

    viewer = tem_viewer
    _predict(qtbot, viewer)
    cal_w = CalibrateWidget(viewer)
    cal = _calibrate(qtbot, viewer, cal_w, "intervals", 0.1)
    width = viewer.layers[f"interval width ({MODEL})"]
    viewer.layers.selection = {width}
    path = str(tmp_path / "record.json")
    written = viewer.layers.save(path, selected=True, plugin="napari-im2im-uq")
    assert written == [path]
    saved = json.loads(Path(path).read_text())
    assert saved["calibration"]["lam"] == cal.result.lam
    assert saved["model"]["sha256"] == width.metadata["im2im_uq"]["record"]["model"]["sha256"]
    (layer,) = viewer.open(path, plugin="napari-im2im-uq")
    assert layer.metadata["im2im_uq"]["record"]["calibration"] == saved["calibration"]
    assert len(layer.data) == 108  # one rectangle per calibration tile
    # applying the loaded record to the same outputs gives the same width
    outputs = api.model_outputs(viewer.layers, f"prediction ({MODEL})")
    (again, _, _), = api.apply_record(layer, outputs)
    np.testing.assert_array_equal(again, width.data)
    # and so does the widget's button, on a new prediction without ground truth
    before = np.array(width.data)
    viewer.layers.remove(width)
    cal_w.reset_choices()
    cal_w.saved.value = layer
    cal_w.prediction.value = viewer.layers[f"prediction ({MODEL})"]
    cal_w.apply_saved()
    qtbot.waitUntil(lambda: f"interval width ({MODEL})" in viewer.layers, timeout=30_000)
    np.testing.assert_array_equal(viewer.layers[f"interval width ({MODEL})"].data, before)
    assert "applied lam" in cal_w.message.value


def test_opening_widgets_does_not_import_torch(tmp_path):
    code = (
        "import sys, napari\n"
        "from napari_im2im_uq._sample_data import sample_tem\n"
        "v = napari.Viewer(show=False)\n"
        "for d, kw, k in sample_tem(): getattr(v, 'add_' + k)(d, **kw)\n"
        "for cmd in ('model', 'predict', 'calibrate', 'diagnostics'):\n"
        "    v.window.add_plugin_dock_widget('napari-im2im-uq', cmd.capitalize())\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "v.close()\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


def test_predict_dock_warms_torch_in_the_background():
    """Opening the Predict dock does not import torch; it is imported in a thread soon after,
    so the first prediction does not hold the GIL for the import (0.3-0.5 s measured)."""
    code = (
        "import sys, time, napari\n"
        "from qtpy.QtWidgets import QApplication\n"
        "v = napari.Viewer(show=False)\n"
        "v.window.add_plugin_dock_widget('napari-im2im-uq', 'Predict')\n"
        "assert 'torch' not in sys.modules, 'torch was imported on the main thread'\n"
        "end = time.time() + 120\n"
        "while 'torch' not in sys.modules:\n"
        "    QApplication.processEvents(); time.sleep(0.01)\n"
        "    assert time.time() < end, 'torch was not warmed'\n"
        "v.close()\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


def test_headless_demo_writes_screenshot_and_record(tmp_path):
    import imageio.v3 as iio

    shot, record = tmp_path / "demo.png", tmp_path / "demo.json"
    proc = subprocess.run(
        [sys.executable, "-m", "napari_im2im_uq.cli", "demo", "--headless", "--screenshot",
         str(shot), "--record", str(record)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = json.loads(record.read_text())
    assert set(records) == {"intervals", "trust_mask"}
    assert records["intervals"]["model"]["name"] == MODEL
    img = iio.imread(shot)[..., :3].astype(int)
    # magenta at the overlay's opacity 0.3: red and blue at least 45 above green (a fully
    # untrusted grey pixel shows 0.3 x 255 = 76 above)
    magenta = (img[..., 0] - img[..., 1] > 45) & (img[..., 2] - img[..., 1] > 45)
    # the untrusted overlay is on the canvas (0.028 of the window with the spread smoothed and
    # the width at opacity 0.3; 0.006 at 0.35, where the orange width under it turned it pink):
    # 0.018 of the window with the binned-input model before the smoothing,
    # which trusts about two thirds of the sample's pixels (the nearest-sampled one trusted one
    # pixel in 16 and painted most of the canvas)
    assert magenta.mean() > 0.01


def test_demo_is_readable_at_a_glance(make_napari_viewer, tmp_path):
    """The demo's screenshot: width not saturated, truth visible under the overlays, docks found."""
    import imageio.v3 as iio
    from scipy import ndimage

    from napari_im2im_uq import _demo
    from napari_im2im_uq._widgets._common import dock_of

    viewer = make_napari_viewer(show=True)
    _cals, widgets = _demo.open_demo(viewer, progress=lambda m: None)
    width = viewer.layers[f"interval width ({MODEL})"]
    untrusted = viewer.layers[f"untrusted ({MODEL})"]
    truth = viewer.layers["tem truth (high-res)"]
    # contrast limits from the data: under 5% of the pixels at or above the top limit
    lo, hi = width.contrast_limits
    data = np.asarray(width.data)
    assert np.mean(data >= hi) < 0.05 and np.mean(data <= lo) < 0.05, (lo, hi)
    # translucent overlays that leave the truth visible, units stated by a colour bar
    for layer in (width, untrusted):
        assert layer.blending == "translucent" and layer.opacity <= 0.6, layer.name
    assert width.colorbar.visible
    assert viewer.dims.axis_labels[0] == "plane"
    # all four docks are findable: tabified together, Model in front
    docks = {name: dock_of(w) for name, w in widgets.items()}
    window = docks["Model"].parentWidget()
    together = set(window.tabifiedDockWidgets(docks["Model"]))
    assert {docks[n] for n in ("Predict", "Calibrate", "Diagnostics")} <= together
    assert widgets["Model"].native.isVisible()
    # the Calibrate dock says in one sentence per overlay what it means; the plot is readable
    cal_w = widgets["Calibrate"]
    assert ("magenta: pixels where the largest error in a 64 x 64 tile may exceed 0.25"
            in cal_w.legend.value)
    assert "interval width" in cal_w.legend.value and "outside their interval" in cal_w.legend.value
    assert cal_w.plot.label.minimumHeight() >= 250 and not cal_w.plot.label.pixmap().isNull()

    # the truth's structure is still visible on the canvas under both overlays
    viewer.dims.set_current_step(0, 1)
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
    iio.imwrite(tmp_path / "demo-canvas.png", shot.astype(np.uint8))
    shown = {ly.name: ly.visible for ly in viewer.layers}
    assert shown[width.name] and shown[untrusted.name] and shown[truth.name]
    for ly in viewer.layers:
        ly.visible = ly is truth
    alone = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
    inside = alone.sum(-1) > 0
    # smoothed over 1.5 screen pixels, so the overlay's own fine lattice does not count
    a, b = (ndimage.gaussian_filter(x.mean(-1), 1.5)[inside] for x in (alone, shot))
    corr = float(np.corrcoef(a, b)[0, 1])
    gain = float(np.cov(a, b)[0, 1] / np.var(a))  # how much of the truth's contrast survives
    # measured 0.89 and 0.42 with the nearest-sampled model; with the binned one 0.80 and 0.50
    # at overlay opacity 0.35 (its untrusted pixels are a speckle, not a sheet), so the overlay
    # went to 0.3; the additive width at opacity 0.7 with the overlay at 0.5 gave 0.74
    # and 0.29. With the spread smoothed (untrusted pixels in blobs where the width is high, both
    # overlays on the same places): 0.78 and 0.49 with the width at opacity 0.35, 0.84 and 0.56
    # at 0.3 (the width's opacity now)
    assert corr > 0.8 and gain > 0.35, (corr, gain)


def test_segmentation_path_on_partial_labels(tem_viewer, qtbot):
    """Membrane model -> sets calibrated on a Labels layer where 0 = not annotated."""
    from napari_im2im_uq._widgets import CalibrateWidget, ModelWidget, PredictWidget

    viewer = tem_viewer
    model_w = ModelWidget(viewer)
    model_w.model.value = "tem-membrane-seg"
    assert "segmentation" in model_w.card.value
    predict_w = PredictWidget(viewer)
    predict_w.image.value = viewer.layers["tem truth (high-res)"]
    predict_w.start()
    _wait(qtbot, predict_w)
    probs = viewer.layers["probabilities (tem-membrane-seg)"]
    assert probs.data.shape == (2, 3, 384, 384)
    cal_w = CalibrateWidget(viewer)
    cal_w.reset_choices()
    cal_w.prediction.value = probs
    cal_w.truth.value = viewer.layers["tem labels"]  # an Image is refused, a Labels accepted
    cal_w.method.value = "segmentation"
    cal_w.alpha.value = 0.1
    assert cal_w.calibrate_button.enabled  # shape and kind are right; content is checked later
    cal_w.truth.value = viewer.layers["tem truth (high-res)"]
    assert not cal_w.calibrate_button.enabled and "Labels layer" in cal_w.status.value
    cal_w.truth.value = viewer.layers["tem membrane annotation"]
    assert cal_w.calibrate_button.enabled, cal_w.status.value
    cal_w.start()
    _wait(qtbot, cal_w)
    assert cal_w.last is not None, cal_w.message.value
    assert cal_w.last.result.n == 24  # only the annotated tiles count
    for name in ("segmentation", "prediction set size", "varisco"):
        layer = viewer.layers[f"{name} (tem-membrane-seg)"]
        assert layer.data.shape == (3, 384, 384)
        assert layer.metadata["im2im_uq"]["record"]["calibration"]["method"] == "segmentation"
    size = viewer.layers["prediction set size (tem-membrane-seg)"].data
    assert size.min() >= 1 and size.max() <= 2


def test_contrast_limits_come_from_the_data_and_follow_a_replacement(make_napari_viewer):
    """Robust limits of a lattice (the issue's 92% saturated width), recomputed on replace."""
    from napari_im2im_uq import layers

    rng = np.random.default_rng(0)
    # a nearest-upsampled width: one pixel in 16 small, the rest large (a [::4, ::4] sample
    # sees only the small ones and saturated 92% of the pixels)
    width = rng.uniform(0.2, 0.4, (3, 96, 96)).astype(np.float32)
    width[:, ::4, ::4] = 0.05
    style = layers.product_style("width", width, limits=(0.0, 0.05))
    lo, hi = style["contrast_limits"]
    assert np.mean(width >= hi) < 0.05 and np.mean(width <= lo) < 0.1, (lo, hi)
    assert style["blending"] == "translucent"

    viewer = make_napari_viewer(show=False)
    meta = {layers.META_KEY: {"role": "output", "output": "lower"}}
    (layer,) = layers.show(viewer, [(width, {"name": "lower (m)", "metadata": meta}, "image")])
    assert viewer.dims.axis_labels == ("plane", "row", "column")
    bigger = width * 10
    (again,) = layers.show(viewer, [(bigger, {"name": "lower (m)", "metadata": meta}, "image")])
    assert again is layer  # replaced, not added
    lo, hi = layer.contrast_limits
    assert np.mean(bigger >= hi) < 0.05 and hi > 1.0, (lo, hi)  # the new data's limits


def test_calibrate_refuses_the_training_regions_unless_the_box_is_ticked(tem_viewer, qtbot,
                                                                          monkeypatch):
    from napari_im2im_uq._fingerprints import plane_fingerprints
    from napari_im2im_uq._widgets import CalibrateWidget, _common

    shown = []
    monkeypatch.setattr(_common, "show_error", lambda msg: shown.append(msg))
    viewer = tem_viewer
    _predict(qtbot, viewer)
    truth = viewer.layers["tem truth (high-res)"]
    split = {"region_shape": [128, 128], "images": [{
        "fingerprint": plane_fingerprints(np.asarray(truth.data))[0],
        "shape": list(truth.data.shape), "train": [[0, 0, 128, 128]], "validation": [],
        "held_back": [[128, 0, truth.data.shape[0], truth.data.shape[1]]]}]}
    for layer in viewer.layers:  # the run's outputs, as a model trained by train names them
        mine = dict(layer.metadata.get("im2im_uq", {}))
        if mine.get("role") == "output":
            mine["model"] = dict(mine["model"], training_regions=split)
            layer.metadata = {**layer.metadata, "im2im_uq": mine}
    cal_w = CalibrateWidget(viewer)
    assert cal_w.allow_leakage.value is False
    cal_w.reset_choices()
    cal_w.prediction.value = viewer.layers[f"prediction ({MODEL})"]
    cal_w.truth.value = truth
    cal_w.rule.value = "crc"
    cal_w.start()
    _wait(qtbot, cal_w)
    assert shown and shown[0].startswith("napari-im2im-uq: 4 of the 108 calibration tiles lie "
                                         f"in regions model '{MODEL}'"), shown
    assert "tick 'calibrate on tiles the model was trained on" in shown[0]
    assert cal_w.message.value.startswith("error:") and cal_w.last is None
    cal_w.allow_leakage.value = True
    cal = _calibrate(qtbot, viewer, cal_w, "intervals", 0.1)
    assert cal.record["leakage"]["n_leaked"] == 4
    assert cal.record["leakage"]["bound"] == pytest.approx(0.1 * 109 / 105)
    assert "Leakage: 4 of the 108 calibration tiles" in cal_w.guarantee.value
    cal_w.start_self_check()
    _wait(qtbot, cal_w)
    assert "4 of the labeled tiles lie in the model's training regions" in cal_w.message.value
    cal_w.allow_leakage.value = False
    cal_w.start_self_check()
    _wait(qtbot, cal_w)
    assert "tick 'calibrate on tiles the model was trained on" in shown[-1]
