"""The Train dock in a real napari viewer (Qt under Xvfb), running the real api.train briefly.

Each test trains a small network for a few dozen steps on small images: the synthetic QPI
sample (two oblique images -> phase), or real VNC slices (a noisy copy -> the slice).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
from _display import HAS_DISPLAY, REASON  # noqa: E402

if not HAS_DISPLAY:
    pytest.skip(REASON, allow_module_level=True)

from napari_im2im_uq import api  # noqa: E402
from napari_im2im_uq._sample_data import sample_qpi  # noqa: E402
from napari_im2im_uq._widgets._train import PLOT_INTERVAL_S  # noqa: E402
from napari_im2im_uq.layers import kind as layer_kind  # noqa: E402

TIMEOUT_MS = 600_000
STEPS = 60
#: Longest main-thread gap allowed while the dock trains (ms), from the first training step to
#: the evaluation. The plot is rendered in a thread of its own and the main thread only shows
#: its pixels and sets a label, so what remains are GIL hand-overs between the training, plot
#: and main threads: 83 ms at most, p99 34 ms, measured on a 2-core machine shared with three
#: other test runs. 200 ms leaves that noise room and still fails a redraw on the main thread
#: of every event, training on the main thread, or a figure per redraw (its garbage triggered
#: full collections of napari's and torch's heap: 300-350 ms stalls). The project's goal is
#: 100 ms (benchmarks/bench_heartbeat.py).
MAX_GAP_MS = 200


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def qpi_viewer(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    for data, kwargs, kind in sample_qpi():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    return viewer


def _wait(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=TIMEOUT_MS)


def _dock(viewer):
    from napari_im2im_uq._widgets import TrainWidget

    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    return widget


def _train(qtbot, widget, output, *, steps=STEPS):
    widget.reset_choices()
    widget.output.value = str(output)
    widget.steps.value = str(steps)
    assert widget.run_button.enabled, widget.status.value
    widget.start()
    _wait(qtbot, widget)
    assert widget.result is not None, widget.message.value
    return widget.result


def _predict_and_calibrate(viewer, widget, image, truth, *, tile):
    """Predict with the trained model, calibrate on its held-back regions; return the record."""
    from napari_im2im_uq._widgets import CalibrateWidget

    name = api.model_card(str(widget.result.path))["name"]
    api.show(viewer, api.predict(str(widget.result.path), image))
    cal_w = CalibrateWidget(viewer)
    cal_w.reset_choices()
    cal_w.prediction.value = viewer.layers[f"prediction ({name})"]
    cal_w.truth.value = truth
    cal_w.regions.value = widget.held_back  # the layer the Train dock added is a choice there
    cal_w.tile_rows.value = cal_w.tile_cols.value = tile
    cal_w.rule.value = "crc"
    cal_w.alpha.value = 0.2
    assert cal_w.calibrate_button.enabled, cal_w.status.value
    return cal_w, api.model_outputs(viewer.layers, f"prediction ({name})")


def _check_done(viewer, widget, model_w=None):
    """The model is the session's (an open Model dock follows), the held-back Shapes layer is
    there and visible."""
    from napari_im2im_uq._widgets import ModelWidget, PredictWidget
    from napari_im2im_uq._widgets._common import session

    path = str(widget.result.path)
    assert session(viewer).model == path
    assert ModelWidget(viewer).choice() == path  # a Model dock opened now shows the new model
    name = api.model_card(path)["name"]
    if model_w is not None:  # and one open before training follows the session
        assert model_w.choice() == path and name in model_w.card.value
        assert session(viewer).model == path and model_w.status.value == ""
    assert PredictWidget(viewer).model_label.value.startswith(name)
    layer = viewer.layers[f"held back ({name})"]
    assert layer is widget.held_back and layer_kind(layer) == "shapes"
    n_boxes = sum(len(im["held_back"]) for im in widget.result.split["images"])
    assert len(layer.data) == n_boxes > 0
    assert np.all(layer.edge_color[:, 3] > 0) and np.all(layer.face_color[:, 3] == 0)
    assert f"'held back ({name})' as the labeled regions in Calibrate" in widget.message.value
    # ready for another run: a fresh output folder, no "cannot run" above the success message
    assert str(widget.output.value) == f"{path}-2" and widget.status.value == ""


def test_qpi_trained_in_the_dock_beats_its_baseline_and_calibrates_on_held_back(
        qpi_viewer, qtbot, tmp_path):
    from napari_im2im_uq._widgets import ModelWidget

    viewer = qpi_viewer
    model_w = ModelWidget(viewer)
    viewer.window.add_dock_widget(model_w, name="Model")
    widget = _dock(viewer)
    assert widget.input.value.name == "qpi oblique images"
    assert widget.target.value.name == "qpi phase truth"
    widget.licence.value, widget.citation.value = "CC-BY-4.0", "Our lab, 2026 "
    result = _train(qtbot, widget, tmp_path / "qpi-model")
    spec = json.loads((result.path / "model.json").read_text())
    assert (spec["licence"], spec["citation"]) == ("CC-BY-4.0", "Our lab, 2026")
    quality = result.quality
    assert quality["model"]["rmse"] < quality["baseline"]["rmse"], quality
    assert "held-back quality" in widget.quality.value
    _check_done(viewer, widget, model_w)

    truth = viewer.layers["qpi phase truth"]
    cal_w, outputs = _predict_and_calibrate(viewer, widget, viewer.layers["qpi oblique images"],
                                            truth, tile=16)
    cal_w.start()
    _wait(qtbot, cal_w)
    assert cal_w.last is not None, cal_w.message.value
    assert cal_w.last.result.n >= 4
    # the whole image overlaps the training regions: refused, with the way out in the message
    with pytest.raises(ValueError, match="leak"):
        api.calibrate(outputs, truth, method="intervals", alpha=0.2, rule="crc",
                      tile_shape=(16, 16))


@pytest.mark.realdata
def test_vnc_slices_trained_in_the_dock_beat_the_baseline_and_calibrate(
        make_napari_viewer, qtbot, tmp_path):
    from napari_im2im_uq import data

    if data.shared_data_root() is None:
        pytest.skip("../shared/data not found")
    raw = data.load_em_drosophila(slices=[3, 11])["raw"][:, 256:512, 384:640]
    noisy = data.degrade_tem(raw, factor=1, noise_std=0.25, seed=0).astype(np.float32)
    viewer = make_napari_viewer(show=True)
    viewer.add_image(noisy, name="vnc noisy")
    viewer.add_image(raw, name="vnc slices")
    widget = _dock(viewer)
    widget.input.value = viewer.layers["vnc noisy"]
    widget.target.value = viewer.layers["vnc slices"]
    result = _train(qtbot, widget, tmp_path / "vnc-denoise")
    assert result.quality["model"]["rmse"] < result.quality["baseline"]["rmse"], result.quality
    assert widget.held_back.data[0].shape == (4, 3)  # (plane, row, column) corners on the stack
    _check_done(viewer, widget)
    truth = viewer.layers["vnc slices"]
    cal_w, outputs = _predict_and_calibrate(viewer, widget, viewer.layers["vnc noisy"], truth,
                                            tile=16)
    cal_w.start()
    _wait(qtbot, cal_w)
    assert cal_w.last is not None, cal_w.message.value
    with pytest.raises(ValueError, match="leak"):
        api.calibrate(outputs, truth, method="intervals", alpha=0.2, rule="crc",
                      tile_shape=(16, 16))


def test_cancel_then_resume_finishes_from_the_checkpoint(qpi_viewer, qtbot, tmp_path):
    viewer = qpi_viewer
    widget = _dock(viewer)
    widget.output.value = str(tmp_path / "model")
    widget.steps.value = str(STEPS)
    assert not widget.resume_button.enabled
    events, cancelled = [], []  # every event the main thread received, in order
    on_event = widget.runner.on_event

    def record(event, picture, line):
        events.append(event)
        if event["phase"] == "validate" and not cancelled:
            cancelled.append(event["step"])
            widget.runner.cancel()  # cancel after the first checkpoint
        on_event(event, picture, line)

    widget.runner.on_event = record
    widget.start()
    _wait(qtbot, widget)
    assert widget.result is None
    last = max(e["step"] for e in events if e["phase"] == "train")
    assert cancelled[0] <= last < STEPS
    assert widget.resume_button.enabled and widget.run_button.enabled
    assert f"cancelled at step {last}. Resume continues from step {last}." in widget.message.value
    assert not any(ly.name.startswith("held back") for ly in viewer.layers)

    events.clear()
    widget.resume()
    assert not widget.resume_button.enabled and not widget.run_button.enabled
    _wait(qtbot, widget)
    assert widget.result is not None, widget.message.value
    steps = [e["step"] for e in events if e["phase"] == "train"]
    assert steps[0] == last + 1 and steps[-1] <= STEPS  # continued, not started over
    assert not widget.resume_button.enabled
    assert widget.history.steps == list(range(1, steps[-1] + 1))  # one curve, no repeats
    _check_done(viewer, widget)


def test_plot_updates_while_training_and_the_viewer_keeps_ticking(qpi_viewer, qtbot, tmp_path):
    import torch  # noqa: F401 - imported before the measurement, as the heartbeat benchmark does
    from qtpy.QtCore import QTimer

    viewer = qpi_viewer
    widget = _dock(viewer)
    phases = {}  # when the main thread received the first event of each phase
    on_event = widget.runner.on_event

    def record(event, picture, line):
        phases.setdefault(event["phase"], time.perf_counter())
        on_event(event, picture, line)

    widget.runner.on_event = record
    ticks = []
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    for _ in range(20):
        qtbot.wait(10)
    timer.start()
    try:
        t0 = time.perf_counter()
        _train(qtbot, widget, tmp_path / "model", steps=2 * STEPS)
        t1 = time.perf_counter()
    finally:
        timer.stop()
    during = widget.plotted[:-1]  # the last plot is the final one, shown when done
    assert len(during) >= 3, widget.plotted
    assert during == sorted(during) and during[-1] > during[0]  # the curve grows as it trains
    assert widget.plotted[-1] == len(widget.history.steps) == 2 * STEPS
    assert len(widget.plotted) <= (t1 - t0) / PLOT_INTERVAL_S + 2  # at most 4 a second
    ticks = np.array(ticks)
    gaps = np.diff(ticks) * 1000
    training = (ticks[1:] > phases["train"]) & (ticks[:-1] < phases["evaluate"])
    longest = float(gaps[training].max())
    print(f"train dock heartbeat: {len(ticks)} ticks in {t1 - t0:.1f} s; while training "
          f"longest gap {longest:.0f} ms, p99 {np.percentile(gaps[training], 99):.0f} ms; "
          f"whole run longest {gaps.max():.0f} ms; {len(widget.plotted)} plots")
    assert training.sum() > 50
    assert longest < MAX_GAP_MS, longest


def test_fields_validate_live(qpi_viewer, tmp_path):
    viewer = qpi_viewer
    widget = _dock(viewer)
    assert not widget.run_button.enabled
    assert "output folder" in widget.status.value
    widget.output.value = str(tmp_path / "new")
    assert widget.run_button.enabled, widget.status.value
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    widget.output.value = str(full)
    assert not widget.run_button.enabled and str(full) in widget.status.value
    widget.overwrite.value = True
    assert widget.run_button.enabled, widget.status.value
    widget.steps.value = "many"
    assert "steps must be 'auto' or a whole number" in widget.status.value
    widget.steps.value = "auto"
    assert list(widget.head.choices) == ["quantile", "residual", "gaussian", "softmax"]
    labels = viewer.add_labels((viewer.layers["qpi phase truth"].data > 1).astype(np.uint8) + 1,
                               name="cells")
    widget.target.value = labels
    assert list(widget.head.choices) == ["segmentation"]
    widget.target.value = None
    assert list(widget.head.choices) == ["mask"]
    assert "base model" in widget.status.value
    widget.base.value = "tem-sr4x-quantile"
    widget.target.value = viewer.layers["qpi phase truth"]
    assert widget.head.value == "quantile"
    widget.head.value = "gaussian"
    assert "keeps the base model's head" in widget.status.value
    small = viewer.add_image(np.zeros((100, 90), np.float32), name="odd")
    widget.target.value = small
    assert "whole factor" in widget.status.value


def test_train_dock_opens_from_the_manifest_without_importing_torch():
    import subprocess
    import sys

    code = (
        "import sys, napari\n"
        "v = napari.Viewer(show=False)\n"
        "dock, widget = v.window.add_plugin_dock_widget('napari-im2im-uq', 'Train')\n"
        "assert type(widget).__name__ == 'TrainWidget', type(widget)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "v.close()\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


def test_fine_tune_a_zoo_model_and_train_its_mask_network_in_the_dock(
        make_napari_viewer, qtbot, tmp_path):
    """A base model: its head is chosen; with no target the dock trains its mask network."""
    from napari_im2im_uq._sample_data import sample_tem

    viewer = make_napari_viewer(show=True)
    for data, kwargs, kind in sample_tem():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = _dock(viewer)
    widget.input.value = viewer.layers["tem input (low-res)"]
    widget.target.value = viewer.layers["tem truth (high-res)"]
    widget.head.value = "gaussian"
    widget.base.value = "tem-sr4x-quantile"
    assert widget.head.value == "quantile"  # fine-tuning keeps the base model's head
    result = _train(qtbot, widget, tmp_path / "tuned", steps=10)
    spec = result.model.spec
    assert spec["heuristic"] == "quantile" and spec["scale_factor"] == 4
    _check_done(viewer, widget)
    assert widget.held_back.data[0].shape == (4, 3)  # (plane, row, column) on the truth stack

    widget.target.value = None  # the mask network of the base model, from the truth alone
    widget.input.value = viewer.layers["tem truth (high-res)"]
    assert widget.input.label == "truth (high-res)" and list(widget.head.choices) == ["mask"]
    result = _train(qtbot, widget, tmp_path / "mask", steps=10)
    assert result.model.spec["heuristic"] == "mask"
    _check_done(viewer, widget)
    truth = viewer.layers["tem truth (high-res)"]
    corners = np.concatenate(widget.held_back.data)
    assert corners[:, 1:].max() <= truth.data.shape[-1] - 0.5  # on the truth's grid
