"""bioimage.io model packages in and out (issue 10, parts 2 and 4), without internet.

A small point-only restoration U-Net is exported as TorchScript, ONNX and pytorch_state_dict,
validated by bioimageio.spec (and run by bioimageio.core's own test), loaded back and run
tiled on an awkward shape; the state-dict package is refused without ``trust_code`` before any
of its code runs (a marker file proves it); every zoo model round-trips with the same
predictions; the calibration record travels in the RDF's config.
"""

from __future__ import annotations

import hashlib
import json
import socket
import types

import numpy as np
import pytest

pytest.importorskip("bioimageio.spec", reason="the optional extra [bioimageio] is not installed")
pytest.importorskip("onnxruntime", reason="the optional extra [bioimageio] is not installed")
torch = pytest.importorskip("torch")

from napari_im2im_uq import api, cli  # noqa: E402
from napari_im2im_uq.inference import predict as tiled_predict  # noqa: E402
from napari_im2im_uq.models import (  # noqa: E402
    BundleError,
    build_network,
    list_models,
    load_model,
    read_spec,
)

FORMATS = ("torchscript", "onnx", "pytorch_state_dict")
#: Largest difference between a package's prediction and the original's (float32 rounding;
#: ONNX runs its own kernels).
TOL = {"torchscript": 1e-5, "onnx": 1e-4, "pytorch_state_dict": 1e-5}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test: nothing may be downloaded."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a network connection was attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def clear_cache_():
    from napari_im2im_uq.models import _cache

    _cache.clear_cache()


@pytest.fixture(scope="module")
def point_net():
    torch.manual_seed(0)
    net = build_network("point", depth=2, base_channels=4)  # one output: the prediction
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture(scope="module")
def packages(point_net, tmp_path_factory):
    root = tmp_path_factory.mktemp("packages")
    out = {}
    for fmt in FORMATS:
        out[fmt] = api.export_bioimageio(point_net, root / f"point-{fmt}",
                                         weight_format=fmt)
    out["zip"] = api.export_bioimageio(point_net, root / "point.zip")
    return out


def _reference(net, x):
    """The network on the whole image, mirrored by its halo (what Im2ImModel does)."""
    halo, div = net.halo, net.divisor
    rows, cols = x.shape
    pad = ((halo, halo + (-(rows + 2 * halo) % div)), (halo, halo + (-(cols + 2 * halo) % div)))
    xp = np.pad(x, pad, mode="symmetric")
    with torch.no_grad():
        y = net(torch.from_numpy(xp)[None, None]).numpy()[0, 0]
    return y[halo: halo + rows, halo: halo + cols]


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_is_accepted_by_the_fields_validator(packages, fmt):
    from bioimageio.spec import InvalidDescr, load_description

    descr = load_description(packages[fmt] + "/rdf.yaml", perform_io_checks=True)
    assert not isinstance(descr, InvalidDescr), descr.validation_summary.format()
    assert descr.type == "model" and getattr(descr.weights, fmt) is not None
    assert [str(t.id) for t in descr.outputs] == ["prediction"]
    assert all(t.test_tensor is not None for t in [*descr.inputs, *descr.outputs])
    assert descr.license is None or str(descr.license)  # a point U-Net states none
    assert descr.cite and descr.documentation is not None


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_bioimageio_core_runs_the_package_and_reproduces_its_test_tensors(packages, fmt):
    from bioimageio.core import test_model

    summary = test_model(packages[fmt], weight_format=fmt)
    assert summary.status == "passed", summary.format()


@pytest.mark.parametrize("fmt", [*FORMATS, "zip"])
def test_package_predicts_tiled_equal_to_untiled_and_to_the_network(packages, point_net, fmt):
    clear_cache_()
    trust = fmt == "pytorch_state_dict"
    model = api.load_model(packages[fmt], trust_code=trust)
    assert model.output_names == ("prediction",) and model.heuristic == "point"
    assert model.halo == point_net.halo and model.divisor == point_net.divisor
    x = np.random.default_rng(3).random((83, 101)).astype(np.float32)  # awkward shape
    untiled = model(x)["prediction"]
    tiled = tiled_predict(model, x, axes="YX", tile_shape=(20, 36), device="cpu")
    tiled = np.asarray(tiled["prediction"].compute())
    assert tiled.shape == (83, 101)
    np.testing.assert_allclose(tiled, untiled, atol=1e-5)
    np.testing.assert_allclose(untiled, _reference(point_net, x), atol=TOL.get(fmt, 1e-5))


def _with_marker_architecture(pkg, tmp_path):
    """The state-dict package with an architecture file that writes a marker when imported."""
    import shutil

    from bioimageio.spec.utils import read_yaml, write_yaml

    folder = tmp_path / "untrusted"
    shutil.copytree(pkg, folder)
    marker = tmp_path / "architecture-ran"
    source = (f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
              "from napari_im2im_uq.models._bioimageio_model import ExportedNetwork\n")
    (folder / "architecture.py").write_text(source)
    rdf = read_yaml(folder / "rdf.yaml")
    entry = rdf["weights"]["pytorch_state_dict"]
    arch = entry["architecture"]
    entry["architecture"] = {"source": "architecture.py", "callable": arch["callable"],
                             "kwargs": arch["kwargs"],
                             "sha256": hashlib.sha256(source.encode()).hexdigest()}
    write_yaml(rdf, folder / "rdf.yaml")
    return folder, marker


def test_state_dict_is_refused_without_trust_code_and_none_of_its_code_runs(
        packages, point_net, tmp_path):
    clear_cache_()
    folder, marker = _with_marker_architecture(packages["pytorch_state_dict"], tmp_path)
    for load in (lambda: api.load_model(folder), lambda: load_model(folder),
                 lambda: tiled_predict(str(folder), np.zeros((40, 40), np.float32), axes="YX")):
        with pytest.raises(BundleError, match="architecture's Python source") as err:
            load()
        assert "trust_code=True" in str(err.value) and "Nothing from it was run" in str(err.value)
        assert not marker.exists()
    card = read_spec(folder)  # the card is read without running anything
    assert card["weight_format"] == "pytorch_state_dict" and not marker.exists()
    np.save(tmp_path / "in.npy", np.zeros((40, 40), np.float32))
    rc = cli.main(["predict", str(tmp_path / "in.npy"), "--model", str(folder), "--output",
                   str(tmp_path / "o.zarr")])
    assert rc == 1 and not marker.exists() and not (tmp_path / "o.zarr").exists()
    model = api.load_model(folder, trust_code=True)
    assert marker.read_text() == "ran"  # trusted: now it runs
    x = np.random.default_rng(5).random((37, 50)).astype(np.float32)
    np.testing.assert_allclose(model(x)["prediction"], _reference(point_net, x), atol=1e-5)


def test_a_tampered_weights_file_is_refused(packages, tmp_path):
    import shutil

    clear_cache_()
    folder = tmp_path / "tampered"
    shutil.copytree(packages["torchscript"], folder)
    weights = folder / "weights.pt"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not match the SHA-256"):
        api.load_model(folder)


def test_export_refuses_an_existing_path_and_bad_arguments(point_net, packages, tmp_path):
    (tmp_path / "there").mkdir()
    (tmp_path / "there" / "mine.txt").write_text("keep")
    with pytest.raises(ValueError, match="path must not exist"):
        api.export_bioimageio(point_net, tmp_path / "there")
    assert (tmp_path / "there" / "mine.txt").read_text() == "keep"
    with pytest.raises(ValueError, match="weight_format must be one of"):
        api.export_bioimageio(point_net, tmp_path / "x", weight_format="keras")
    with pytest.raises(ValueError, match="point-only U-Net"):
        api.export_bioimageio(build_network("residual", depth=1, base_channels=2), tmp_path / "y")
    with pytest.raises(ValueError, match="already a bioimage.io package"):
        api.export_bioimageio(api.load_model(packages["onnx"]), tmp_path / "z")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["there"]  # nothing left behind


def _pair(name, rng):
    spec = read_spec(name)
    n = len([c for c in spec["input_channels"] if c not in spec.get("derived_channels", {})])
    x = rng.random((n, 40, 52)).astype(np.float32)
    return x if n > 1 else x[0]


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("name", list_models())
def test_every_zoo_model_round_trips_with_the_same_predictions(name, fmt, tmp_path):
    """Within 1e-5: the package runs the network as exported (TorchScript) or its own kernels
    (ONNX, measured 2.4e-6); the plugin runs a folded copy of the network (batch norm inside the
    convolutions), equal to float rounding (measured 1.4e-6 on the QPI U-Net)."""
    clear_cache_()
    original = api.load_model(name)
    pkg = api.export_bioimageio(name, tmp_path / f"{name}.zip", weight_format=fmt)
    model = api.load_model(pkg)
    assert model.output_names == original.output_names
    assert model.sha256 == original.sha256  # the weights written at export: the same model
    assert model.in_channels == original.in_channels
    assert (model.scale_factor, model.halo) == (original.scale_factor, original.halo)
    rng = np.random.default_rng(7)
    x = _pair(name, rng)
    kwargs = {}
    if original.heuristic == "mask":
        s = original.scale_factor
        kwargs["prediction"] = rng.random((40 * s, 52 * s)).astype(np.float32)
    axes = "CYX" if x.ndim == 3 else "YX"
    from napari_im2im_uq.models import add_derived_channels

    full, _ = add_derived_channels(original.spec, x, axes)
    full = np.asarray(full)
    want, got = original(full, **kwargs), model(full, **kwargs)
    for key in original.output_names:
        np.testing.assert_allclose(got[key], want[key], atol=1e-5, err_msg=key)
    tiled = tiled_predict(model, x, axes=axes, tile_shape=(24, 24), device="cpu",
                          **({"prediction": kwargs["prediction"]} if kwargs else {}))
    for key in original.output_names:
        np.testing.assert_allclose(np.squeeze(np.asarray(tiled[key].compute())),
                                   np.squeeze(want[key]), atol=1e-5, err_msg=key)


def _layers(tuples):
    return [types.SimpleNamespace(data=d, scale=k.get("scale", (1.0, 1.0)),
                                  translate=k.get("translate", (0.0, 0.0)),
                                  metadata=k.get("metadata", {}), name=k["name"])
            for d, k, _ in tuples]


def test_the_calibration_record_travels_in_the_package(tmp_path):
    clear_cache_()
    rng = np.random.default_rng(11)
    image = rng.random((48, 48)).astype(np.float32)
    layers = _layers(api.predict("tem-sr4x-quantile", image, device="cpu"))
    outputs = api.model_outputs(layers, layers[0].name)
    truth = np.clip(np.asarray(outputs["prediction"].data)
                    + 0.03 * rng.standard_normal((192, 192)), 0, 1).astype(np.float32)
    cal = api.calibrate(outputs, truth, method="intervals", alpha=0.2, rule="crc",
                        tile_shape=(32, 32))
    rec_path = tmp_path / "rec.json"
    api.save_record(cal, rec_path)
    pkg = tmp_path / "sr4x"
    assert cli.main(["export", "tem-sr4x-quantile", str(pkg), "--record", str(rec_path)]) == 0
    assert api.record_of(pkg) == json.loads(json.dumps(cal.record))
    model = api.load_model(pkg)
    assert api.record_of(model) == json.loads(json.dumps(cal.record))
    assert api.record_of("tem-sr4x-quantile") is None
    again = _layers(api.predict(model, image, device="cpu"))
    mine = api.model_outputs(again, again[0].name)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "another model" warning: the guarantee carries over
        (width, _, _), = api.apply_record(api.record_of(model), mine)
    (want, _, _), = api.apply_record(cal.record, outputs)
    np.testing.assert_allclose(np.asarray(width), np.asarray(want), atol=1e-5)


def test_a_record_of_another_model_is_refused(tmp_path):
    rng = np.random.default_rng(2)
    truth = rng.random((64, 64)).astype(np.float32)
    f = truth + 0.05 * rng.standard_normal(truth.shape).astype(np.float32)
    cal = api.calibrate({"prediction": f, "lower": f - 0.1, "upper": f + 0.1}, truth,
                        method="intervals", alpha=0.2, rule="crc", tile_shape=(16, 16))
    rec = json.loads(json.dumps(cal.record))
    rec["model"] = {"name": "other", "sha256": "0" * 64}
    from napari_im2im_uq.workflows.records import seal

    rec = seal(rec)
    with pytest.raises(ValueError, match="record must be a calibration of this model"):
        api.export_bioimageio("tem-sr4x-quantile", tmp_path / "p", record=rec)
    assert not (tmp_path / "p").exists()


def test_cli_export_says_what_is_wrong_in_flag_names(tmp_path, capsys):
    assert cli.main(["export", "tem-sr4x-quantile", str(tmp_path), "--format", "onnx"]) == 1
    assert "PATH must not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["export", "tem-sr4x-quantile", str(tmp_path / "p"), "--format", "keras"])


def test_a_point_package_gets_tta_intervals_calibrated_and_a_trust_mask(point_net, packages):
    """Done means: TTA intervals on a package, calibrated by RCPS-HB, a trust mask, applied."""
    from napari_im2im_uq.models import Im2ImModel

    clear_cache_()
    wrapped = Im2ImModel(point_net, {"heuristic": "point", "name": "point"})
    model = api.load_model(packages["onnx"])
    rng = np.random.default_rng(21)
    image = rng.random((96, 96)).astype(np.float32)
    layers = _layers(api.predict(model, image, device="cpu", uncertainty="tta"))
    outputs = api.model_outputs(layers, layers[0].name)
    assert {"prediction", "lower", "upper"} <= set(outputs)
    direct = wrapped(image)["prediction"]
    spread = float(direct.std())  # an untrained network: small outputs; truth near them
    truth = (direct + spread * rng.standard_normal(direct.shape)).astype(np.float32)
    cal = api.calibrate(outputs, truth, method="intervals", alpha=0.2, delta=0.2, rule="rcps",
                        bound="hoeffding_bentkus", tile_shape=(16, 16))
    assert np.isfinite(cal.result.lam) and cal.record["model"]["sha256"] == model.sha256
    mask = api.calibrate(outputs, truth, method="trust_mask", alpha=0.5, sigma="std_smoothed",
                         data_range=(-1.0, 2.0), tile_shape=(16, 16))
    assert mask.result.valid and mask.result.lam > 0  # inf: small errors, every pixel trusted
    (trusted, _, _), = api.apply_record(mask.record, outputs)
    assert np.asarray(trusted).shape == (96, 96)
    (width, _, _), = api.apply_record(cal.record, outputs)
    assert np.all(np.asarray(width) >= 0)


def test_model_widget_opens_a_package_and_shows_its_weight_format(make_napari_viewer, packages):
    from napari_im2im_uq._widgets import ModelWidget
    from napari_im2im_uq._widgets._model import ON_DISK

    widget = ModelWidget(make_napari_viewer())
    widget.model.value = ON_DISK
    widget.folder.value = packages["onnx"]
    assert widget.status.value == ""
    assert "onnx (bioimage.io package)" in widget.card.value and "point-unet" in widget.card.value
    widget.folder.value = packages["pytorch_state_dict"]
    assert "only with trust_code=True" in widget.card.value


def test_the_readme_section_your_own_model_runs_as_written(tmp_path):
    """The README's "Your own model" commands, verbatim (the install line left to CI)."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    import tifffile

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Your own model", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"^```bash\n(.*?)^```", section, flags=re.S | re.M)
    lines = [ln for ln in block.splitlines() if ln.startswith("napari-im2im-uq")]
    assert [ln.split()[1] for ln in lines] == ["export", "predict"]
    rng = np.random.default_rng(4)
    image = rng.random((48, 48)).astype(np.float32)
    tifffile.imwrite(tmp_path / "volume.tif", image)
    layers = _layers(api.predict("tem-sr4x-quantile", image, device="cpu"))
    outputs = api.model_outputs(layers, layers[0].name)
    truth = np.clip(np.asarray(outputs["prediction"].data)
                    + 0.03 * rng.standard_normal((192, 192)), 0, 1).astype(np.float32)
    cal = api.calibrate(outputs, truth, method="intervals", alpha=0.2, rule="crc",
                        tile_shape=(32, 32))
    api.save_record(cal, tmp_path / "record.json")
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep
               + os.environ.get("PATH", ""))
    script = "\n".join(ln.split("  #", 1)[0] for ln in lines)
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "sr4x.zip").is_file() and (tmp_path / "out.zarr").is_dir()
    assert api.record_of(tmp_path / "sr4x.zip") == json.loads(json.dumps(cal.record))


def test_a_package_from_elsewhere_takes_its_units_and_tiling_from_the_rdf(
        packages, point_net, tmp_path):
    """No config of this plugin: per-sample scale_range on the whole image, clip per pixel."""
    import shutil

    from bioimageio.spec.utils import read_yaml, write_yaml

    clear_cache_()
    folder = tmp_path / "care-like"
    shutil.copytree(packages["torchscript"], folder)
    rdf = read_yaml(folder / "rdf.yaml")
    rdf.pop("config", None)
    rdf["name"] = "care-like"
    rdf["inputs"][0]["preprocessing"] = [{"id": "scale_range", "kwargs": {
        "axes": ["y", "x"], "min_percentile": 1.0, "max_percentile": 99.0}}]
    rdf["outputs"][0]["postprocessing"] = [{"id": "clip", "kwargs": {"min": 0.0, "max": 0.02}}]
    write_yaml(rdf, folder / "rdf.yaml")
    model = api.load_model(folder)
    assert model.heuristic == "point" and model.output_names == ("prediction",)
    assert model.spec["preprocessing"][0]["id"] == "scale_range"
    assert model.halo == point_net.halo and model.divisor == point_net.divisor
    raw = (1000 + 200 * np.random.default_rng(8).random((70, 90))).astype(np.float32)
    untiled = model(raw)["prediction"]
    tiled = np.asarray(tiled_predict(model, raw, axes="YX", tile_shape=(16, 24),
                                     device="cpu")["prediction"].compute())
    np.testing.assert_allclose(tiled, untiled, atol=1e-5)  # the image's statistics, not a tile's
    lo, hi = np.percentile(raw, [1.0, 99.0])
    scaled = ((raw - lo) / (hi - lo + 1e-6)).astype(np.float32)
    want = np.clip(_reference(point_net, scaled), 0.0, 0.02)
    np.testing.assert_allclose(untiled, want, atol=1e-4)
    assert untiled.max() <= 0.02


@pytest.mark.parametrize("case", ["remote weights", "no weights", "3-D axes"])
def test_a_package_that_cannot_run_here_is_refused_saying_why(packages, tmp_path, case):
    import shutil

    from bioimageio.spec.utils import read_yaml, write_yaml

    clear_cache_()
    folder = tmp_path / "edited"
    shutil.copytree(packages["torchscript"], folder)
    rdf = read_yaml(folder / "rdf.yaml")
    if case == "remote weights":
        rdf["weights"]["torchscript"]["source"] = "https://example.org/weights.pt"
        expected = "remote file .* nothing is downloaded"
    elif case == "no weights":
        rdf["weights"] = {}
        expected = "must be a valid bioimage.io model package"
    else:
        rdf["inputs"][0]["axes"].insert(2, {"type": "space", "id": "z", "size": 8})
        expected = "valid bioimage.io model package|axis 'z'"
    write_yaml(rdf, folder / "rdf.yaml")
    with pytest.raises(BundleError, match=expected):
        api.load_model(folder)  # the autouse fixture fails the test on any connection


def test_a_point_model_with_scale_and_units_round_trips(tmp_path):
    """An Im2ImModel with the point head, 2x scale and an output range; a 2-letter name."""
    from napari_im2im_uq.models import Im2ImModel

    clear_cache_()
    torch.manual_seed(1)
    model = Im2ImModel(build_network("point", depth=2, base_channels=4, scale_factor=2),
                       {"heuristic": "point", "name": "pt", "output_range": [0.0, 2.0]})
    back = api.load_model(api.export_bioimageio(model, tmp_path / "pt", weight_format="onnx"))
    assert back.name == "pt model" and back.scale_factor == 2  # the RDF wants 5 characters
    x = np.random.default_rng(0).random((33, 47)).astype(np.float32)
    np.testing.assert_allclose(back(x)["prediction"], model(x)["prediction"], atol=1e-5)
