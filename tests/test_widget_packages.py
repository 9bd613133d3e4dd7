"""bioimage.io packages through the API's trust_code and the widgets (issue 10, parts 2 and 5).

A small point-only U-Net is exported as a ``pytorch_state_dict`` package whose architecture
file writes a marker when it runs (the helper of ``test_bioimageio``). ``api.predict`` refuses
it without ``trust_code`` and no code from it runs; its card is read without running it. In
the widgets: the Model widget shows the trust checkbox for that package only, Predict refuses
while it is unticked (and the job, forced, fails with the package's own message), runs once it
is ticked; choosing another model withdraws the trust; a package's .zip opens and predicts.
Set ``IM2IM_UQ_SCREENSHOT_DIR`` to keep the Model widget's screenshot.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

pytest.importorskip("bioimageio.spec", reason="the optional extra [bioimageio] is not installed")
pytest.importorskip("onnxruntime", reason="the optional extra [bioimageio] is not installed")
torch = pytest.importorskip("torch")

from napari_im2im_uq import api  # noqa: E402
from napari_im2im_uq.models import BundleError, build_network  # noqa: E402
from test_bioimageio import (  # noqa: E402 - the packages are built as there, offline
    _reference,
    _with_marker_architecture,
    no_network,  # noqa: F401 - autouse: any connection fails the test
)

TIMEOUT_MS = 180_000


def _clear_cache():
    from napari_im2im_uq.models import _cache

    _cache.clear_cache()


@pytest.fixture(scope="module")
def point_net():
    torch.manual_seed(0)
    return build_network("point", depth=2, base_channels=4).eval()


@pytest.fixture(scope="module")
def exported(point_net, tmp_path_factory):
    root = tmp_path_factory.mktemp("packages")
    return {"pytorch_state_dict": api.export_bioimageio(
                point_net, root / "point-sd", weight_format="pytorch_state_dict"),
            "zip": api.export_bioimageio(point_net, root / "point.zip")}


@pytest.fixture
def untrusted(exported, tmp_path):
    """(folder, marker): a state-dict package whose architecture writes ``marker`` when run."""
    _clear_cache()
    return _with_marker_architecture(exported["pytorch_state_dict"], tmp_path)


def test_api_predict_runs_a_state_dict_package_only_with_trust_code(untrusted, point_net):
    folder, marker = untrusted
    x = np.random.default_rng(7).random((45, 61)).astype(np.float32)
    for call in (lambda: api.predict(folder, x, device="cpu"),
                 lambda: api.predict(str(folder), x, device="cpu", trust_code=False),
                 lambda: next(api.predict_job(folder, x, device="cpu"))):
        with pytest.raises(BundleError, match="architecture's Python source") as err:
            call()
        assert "trust_code=True" in str(err.value) and "Nothing from it was run" in str(err.value)
        assert not marker.exists()
    with pytest.raises(ValueError, match="trust_code must be True or False; got 'yes'"):
        api.predict(folder, x, device="cpu", trust_code="yes")
    card, io = api.model_card(folder), api.model_io(folder)  # read without running its code
    assert card["weights"].startswith("pytorch_state_dict (bioimage.io package)")
    assert io["weight_format"] == "pytorch_state_dict" and io["needs_trust"] is True
    assert not marker.exists()

    (pred, kwargs, _), = api.predict(folder, x, device="cpu", trust_code=True)
    assert marker.read_text() == "ran"  # trusted: the author's code ran, once asked for
    assert kwargs["metadata"]["im2im_uq"]["output"] == "prediction"
    np.testing.assert_allclose(np.asarray(pred), _reference(point_net, x), atol=1e-5)


def test_model_io_says_which_weights_need_trust(exported):
    assert api.model_io("tem-sr4x-quantile")["needs_trust"] is False
    assert api.model_io("tem-sr4x-quantile")["weight_format"] == "safetensors"
    zipped = api.model_io(exported["zip"])
    assert zipped["weight_format"] == "torchscript" and zipped["needs_trust"] is False


# -- the widgets (Qt under Xvfb) ------------------------------------------------------------

def _viewer(make_napari_viewer):
    pytest.importorskip("napari")
    pytest.importorskip("pytestqt")
    from _display import HAS_DISPLAY, REASON

    if not HAS_DISPLAY:
        pytest.skip(REASON)
    viewer = make_napari_viewer(show=True)
    image = np.random.default_rng(1).random((48, 56)).astype(np.float32)
    viewer.add_image(image, name="raw")
    return viewer


def _docks(viewer):
    from napari_im2im_uq._widgets import ModelWidget, PredictWidget

    model_w, predict_w = ModelWidget(viewer), PredictWidget(viewer)
    viewer.window.add_dock_widget(model_w, name="Model")
    viewer.window.add_dock_widget(predict_w, name="Predict")
    predict_w.image.value = viewer.layers["raw"]
    return model_w, predict_w


def _shown(widget) -> bool:
    """Whether the widget shows a field (``visible`` is False while its dock is in the back)."""
    return not widget.native.isHidden()


def _outputs(viewer):
    from napari_im2im_uq._widgets._common import is_output

    return [ly.name for ly in viewer.layers if is_output(ly)]


def test_model_widget_trust_checkbox_gates_a_state_dict_package(
        make_napari_viewer, qtbot, untrusted, monkeypatch, tmp_path):
    from napari_im2im_uq._widgets import _common
    from napari_im2im_uq._widgets._model import ON_DISK, TRUST

    folder, marker = untrusted
    viewer = _viewer(make_napari_viewer)
    shown = []
    monkeypatch.setattr(_common, "show_error", lambda msg: shown.append(msg))
    model_w, predict_w = _docks(viewer)
    session = _common.session(viewer)
    assert not _shown(model_w.trust)  # a zoo model: nothing to trust
    model_w.model.value = ON_DISK
    model_w.folder.value = folder
    assert model_w.status.value == "" and "pytorch_state_dict" in model_w.card.value
    assert _shown(model_w.trust) and model_w.trust.text == TRUST and not model_w.trust.value
    assert session.model == str(folder) and session.trust_code is False

    # unticked: Predict says why and does not run; the job forced anyway fails with the
    # package's own message; nothing of the package ran, nothing was added
    assert not predict_w.run_button.enabled
    assert "tick \"trust this package's code\" in the Model widget" in predict_w.status.value
    assert predict_w.start() is None
    predict_w.runner.run(predict_w.job, predict_w._done, "predicting")
    qtbot.waitUntil(lambda: not predict_w.runner.running, timeout=TIMEOUT_MS)
    assert predict_w.message.value.startswith("error:")
    assert "trust_code=True" in predict_w.message.value
    assert shown and "Nothing from it was run" in shown[0]
    assert not marker.exists() and _outputs(viewer) == []

    # ticked: the session carries the trust, Predict runs, the author's code ran
    model_w.trust.value = True
    assert session.trust_code is True and predict_w.run_button.enabled, predict_w.status.value
    assert "(its code trusted)" in predict_w.model_label.value
    where = os.environ.get("IM2IM_UQ_SCREENSHOT_DIR")
    shot = tmp_path / "model-widget-trust.png"
    viewer.window.resize(1280, 1000)  # room for the whole card
    _common.bring_to_front(model_w)
    qtbot.waitUntil(lambda: model_w.native.isVisible(), timeout=10_000)
    assert model_w.native.grab().save(str(shot))
    if where:
        shutil.copy(shot, os.path.join(where, shot.name))
    predict_w.uncertainty.value = "none (the prediction only)"
    predict_w.start()
    qtbot.waitUntil(lambda: not predict_w.runner.running, timeout=TIMEOUT_MS)
    assert marker.read_text() == "ran"
    assert _outputs(viewer) == ["prediction (point-unet)"], predict_w.message.value
    assert viewer.layers["prediction (point-unet)"].data.shape == (48, 56)

    # another model withdraws the trust; coming back, the box is unticked again
    model_w.model.value = "tem-sr4x-quantile"
    assert not _shown(model_w.trust) and session.trust_code is False
    model_w.model.value = ON_DISK
    assert _shown(model_w.trust) and not model_w.trust.value and session.trust_code is False
    assert not predict_w.run_button.enabled


def test_model_widget_opens_a_package_zip_and_predicts(make_napari_viewer, qtbot, exported,
                                                       tmp_path):
    from napari_im2im_uq._widgets._common import session
    from napari_im2im_uq._widgets._model import ZIP

    viewer = _viewer(make_napari_viewer)
    model_w, predict_w = _docks(viewer)
    model_w.model.value = ZIP
    assert _shown(model_w.zip) and not _shown(model_w.folder)
    assert model_w.status.value.startswith("cannot run: package .zip must be an existing .zip")
    not_zip = tmp_path / "notes.txt"
    not_zip.write_text("not a package")
    model_w.zip.value = not_zip
    assert f"got {str(not_zip)!r}" in model_w.status.value
    model_w.zip.value = exported["zip"]
    assert model_w.status.value == "", model_w.status.value
    assert "torchscript (bioimage.io package)" in model_w.card.value
    assert not _shown(model_w.trust) and session(viewer).model == str(exported["zip"])
    assert _shown(predict_w.uncertainty)  # a point-only model offers uncertainty
    predict_w.uncertainty.value = "constant width (baseline)"
    assert predict_w.run_button.enabled, predict_w.status.value
    predict_w.start()
    qtbot.waitUntil(lambda: not predict_w.runner.running, timeout=TIMEOUT_MS)
    names = _outputs(viewer)
    assert "prediction (point-unet, constant)" in names, predict_w.message.value
    assert {"lower (point-unet, constant)", "upper (point-unet, constant)"} <= set(names)

    # a second Model dock of the same viewer shows the session's zip, not the first zoo model
    from napari_im2im_uq._widgets import ModelWidget

    again = ModelWidget(viewer)
    assert again.model.value == ZIP and str(again.zip.value) == str(exported["zip"])
    assert session(viewer).model == str(exported["zip"])
