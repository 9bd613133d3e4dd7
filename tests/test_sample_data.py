"""Sample data: layer tuples, opened in a real napari viewer, and no torch at import.

The viewer tests need a display: run them with ``xvfb-run -a python -m pytest ...``.
"""

import subprocess
import sys

import numpy as np
import pytest

from _display import needs_display
from napari_im2im_uq import _sample_data as sd

PLUGIN = "napari-im2im-uq"


def _by_name(tuples):
    return {kwargs["name"]: (data, kwargs, kind) for data, kwargs, kind in tuples}


def test_sample_functions_do_not_import_torch_or_napari():
    code = (
        "import sys\n"
        "import napari_im2im_uq._sample_data as s\n"
        "for f in (s.sample_tem, s.sample_qpi, s.sample_cells_phase):\n"
        "    f()\n"
        "bad = [m for m in ('torch', 'napari', 'qtpy', 'magicgui') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_sample_tem_tuples():
    layers = _by_name(sd.sample_tem())
    assert list(layers) == ["tem truth (high-res)", "tem input (low-res)",
                            "tem membrane annotation", "tem labels"]
    truth, tkw, tkind = layers["tem truth (high-res)"]
    low, lkw, lkind = layers["tem input (low-res)"]
    labels, bkw, bkind = layers["tem labels"]
    assert (tkind, lkind, bkind) == ("image", "image", "labels")
    assert truth.shape == (3, 384, 384)
    assert truth.dtype == np.float32
    assert low.shape == (3, 96, 96)
    assert labels.shape == truth.shape
    from napari_im2im_uq.data import degrade_tem  # binning + short-exposure noise

    np.testing.assert_array_equal(
        low, degrade_tem(truth, factor=4, photons=200.0, read_noise=2.0, seed=0))
    assert 0.02 < float(np.std(low - degrade_tem(truth, factor=4))) < 0.08
    assert lkw["metadata"]["im2im_uq"]["degradation"]["mode"] == "area"
    assert lkw["scale"] == (1.0, 4.0, 4.0)
    assert set(np.unique(labels)) == {0, 1, 2}
    roles = [kw["metadata"]["im2im_uq"]["role"] for kw in (tkw, lkw, bkw)]
    assert roles == ["truth", "input", "labels"]
    for kw in (tkw, lkw, bkw):
        meta = kw["metadata"]["im2im_uq"]
        assert meta["scale_factor"] == 4
        assert meta["source"] == "synthetic"
    ann, akw, akind = layers["tem membrane annotation"]
    assert akind == "labels" and ann.shape == truth.shape
    annotated = ann > 0
    assert annotated.sum() == 24 * 64 * 64  # the random plan of 24 tiles
    np.testing.assert_array_equal(ann[annotated] == 2, labels[annotated] == 1)


def test_sample_qpi_tuples():
    layers = _by_name(sd.sample_qpi())
    images, ikw, _ = layers["qpi oblique images"]
    phase, pkw, _ = layers["qpi phase truth"]
    assert images.shape == (2, 256, 256)
    assert images.dtype == np.float32
    assert phase.shape == (256, 256)
    assert phase.dtype == np.float32
    assert "channel_axis" not in ikw  # one layer, channels first
    meta = ikw["metadata"]["im2im_uq"]
    assert meta["role"] == "input"
    assert meta["channels"] == ("top", "bottom")
    assert pkw["metadata"]["im2im_uq"]["role"] == "truth"
    assert 1.5 < phase.max() <= 3.0 + 1e-6
    # the two oblique images differ where there is phase, not on the empty background
    dpc = (images[0] - images[1]) / (images[0] + images[1])
    assert np.abs(dpc[phase > 0.5]).mean() > 3 * np.abs(dpc[phase < 1e-3]).mean()


def test_sample_cells_phase_is_real_scikit_image_data():
    (data, kwargs, kind), = sd.sample_cells_phase()
    assert kind == "image"
    assert data.shape == (660, 550)
    assert data.dtype == np.float32
    assert data.min() >= 0.0
    assert data.max() <= 1.0
    assert kwargs["metadata"]["im2im_uq"]["pixel_size_um"] == pytest.approx(0.107)


@needs_display
def test_open_sample_tem_in_viewer(make_napari_viewer):
    import napari

    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "synthetic_tem")
    names = [layer.name for layer in viewer.layers]
    assert names == ["tem truth (high-res)", "tem input (low-res)", "tem membrane annotation",
                     "tem labels"]
    truth = viewer.layers["tem truth (high-res)"]
    low = viewer.layers["tem input (low-res)"]
    labels = viewer.layers["tem labels"]
    assert isinstance(labels, napari.layers.Labels)
    assert isinstance(low, napari.layers.Image)
    np.testing.assert_allclose(low.scale, (1, 4, 4))
    np.testing.assert_allclose(truth.scale, (1, 1, 1))
    # each low-res pixel is drawn over the centre of the 4 x 4 block it bins (noise std about
    # 0.05: within 4 of them)
    np.testing.assert_allclose(low.data_to_world((1, 2, 3)), truth.data_to_world((1, 9.5, 13.5)))
    np.testing.assert_allclose(low.data[1, 2, 3], truth.data[1, 8:12, 12:16].mean(), atol=0.2)
    assert low.metadata["im2im_uq"]["role"] == "input"
    assert viewer.dims.ndim == 3


@needs_display
def test_open_sample_qpi_in_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "synthetic_qpi")
    assert [layer.name for layer in viewer.layers] == ["qpi oblique images", "qpi phase truth"]
    assert viewer.layers["qpi oblique images"].data.shape == (2, 256, 256)
    assert viewer.layers["qpi phase truth"].metadata["im2im_uq"]["role"] == "truth"
