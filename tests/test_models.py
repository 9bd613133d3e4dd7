"""Tests of napari_im2im_uq.models: heads, halo, bundles and their refusals."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_im2im_uq.models import (  # noqa: E402
    HEURISTICS,
    BundleError,
    Im2ImModel,
    UNet2d,
    build_network,
    decode_head,
    list_models,
    load_model,
    receptive_field_radius,
    save_model,
    unet_receptive_extent,
)

SMALL = {"depth": 2, "base_channels": 4}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _randomize_bn(net, seed=0):
    """Give BatchNorm layers non-trivial running statistics (as after training)."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.num_batches_tracked.fill_(7)
    return net


def _model(heuristic, *, scale=1, seed=0, in_names=("input",), spec=None, **kwargs):
    torch.manual_seed(seed)
    n_in = len(in_names) + (1 if heuristic == "mask" else 0)
    options = {**SMALL, **kwargs}
    if heuristic != "mask":
        options["scale_factor"] = scale
    net = build_network(
        heuristic,
        in_channels=n_in,
        bins=8 if heuristic == "softmax" else None,
        n_classes=3 if heuristic == "segmentation" else None,
        **options,
    )
    _randomize_bn(net, seed)
    full = {
        "heuristic": heuristic,
        "name": f"test-{heuristic}",
        "input_channels": list(in_names),
        "scale_factor": scale,
    }
    if heuristic == "softmax":
        full["output_range"] = [-1.0, 3.0]
    full.update(spec or {})
    return Im2ImModel(net, full)


# -- import hygiene ------------------------------------------------------------------------


def test_import_models_does_not_import_torch():
    code = (
        "import sys, napari_im2im_uq.models as m; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert issubclass(m.BundleError, ValueError); print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_public_all_resolves():
    import napari_im2im_uq.models as m

    for name in m.__all__:
        assert getattr(m, name) is not None


# -- heads: names, shapes, ranges ------------------------------------------------------------

EXPECTED_NAMES = {
    "quantile": ("prediction", "lower", "upper"),
    "residual": ("prediction", "lower", "upper", "residual"),
    "gaussian": ("prediction", "lower", "upper", "std"),
    "softmax": ("prediction", "lower", "upper"),
    "segmentation": ("probabilities",),
    "mask": ("mask",),
    "point": ("prediction",),
}


def _check_ranges(heuristic, out):
    if "lower" in out:
        assert np.all(out["lower"] <= out["prediction"])
        assert np.all(out["prediction"] <= out["upper"])
    if heuristic == "gaussian":
        assert np.all(out["std"] > 0)
    if heuristic == "residual":
        assert np.all(out["residual"] >= 0)
    if heuristic == "softmax":
        assert np.all(out["lower"] >= -1.0 - 1e-6)
        assert np.all(out["upper"] <= 3.0 + 1e-6)
    if heuristic == "segmentation":
        p = out["probabilities"]
        assert np.all(p >= 0)
        np.testing.assert_allclose(p.sum(axis=-3), 1.0, atol=1e-5)
    if heuristic == "mask":
        assert np.all((out["mask"] >= 0) & (out["mask"] <= 1))
    for value in out.values():
        assert value.dtype == np.float32
        assert np.all(np.isfinite(value))


@pytest.mark.parametrize("heuristic", HEURISTICS)
@pytest.mark.parametrize("scale", [1, 2])
def test_call_names_shapes_ranges(heuristic, scale):
    model = _model(heuristic, scale=scale)
    assert model.output_names == EXPECTED_NAMES[heuristic]
    assert model.divisor == 4
    assert model.scale_factor == scale
    rng = np.random.default_rng(0)
    rows, cols = 13, 7  # odd, not multiples of the divisor
    k = 3 if heuristic == "segmentation" else 1
    for shape, lead in (((rows, cols), ()), ((1, rows, cols), None), ((2, 1, rows, cols), None)):
        x = rng.normal(size=shape).astype(np.float32)
        kwargs = {}
        if heuristic == "mask":
            pshape = (*shape[:-2], rows * scale, cols * scale)
            kwargs["prediction"] = rng.normal(size=pshape).astype(np.float32)
        out = model(x, **kwargs)
        assert tuple(out) == EXPECTED_NAMES[heuristic]
        if lead == ():
            expected = (rows * scale, cols * scale)
        else:
            expected = (*shape[:-3], 1, rows * scale, cols * scale)
        for key, value in out.items():
            want = expected
            if key == "probabilities":
                want = (k, *expected[-2:]) if len(shape) < 4 else (shape[0], k, *expected[-2:])
            assert value.shape == want, (key, shape)
        _check_ranges(heuristic, out)


@pytest.mark.parametrize("heuristic", ["quantile", "gaussian", "softmax", "mask"])
def test_predict_tensor_shapes(heuristic):
    model = _model(heuristic, scale=2)
    x = torch.randn(2, 1, 8, 12)
    kwargs = {"prediction": torch.randn(2, 1, 16, 24)} if heuristic == "mask" else {}
    out = model.predict_tensor(x, **kwargs)
    assert tuple(out) == model.output_names
    for value in out.values():
        assert value.shape == (2, 1, 16, 24)
        assert value.dtype == torch.float32


def test_multichannel_input_and_batch_size():
    model = _model("quantile", in_names=("left", "right"))
    x = np.random.default_rng(1).normal(size=(3, 2, 9, 10))
    whole = model(x)
    parts = model(x, batch_size=2)
    for key in whole:
        np.testing.assert_allclose(parts[key], whole[key], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="2 channels"):
        model(x[:, :1])
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        model(x[0, 0])


def test_quantile_head_never_crosses_even_for_extreme_raw_values():
    raw = torch.randn(4, 3, 5, 5) * 50
    out = decode_head(raw, "quantile")
    assert bool((out["lower"] <= out["prediction"]).all())
    assert bool((out["prediction"] <= out["upper"]).all())


def test_softmax_readout_matches_appendix_b_reference():
    rng = np.random.default_rng(3)
    k, q = 10, (0.05, 0.95)
    logits = rng.normal(size=(2, k, 4, 5)).astype(np.float32) * 3
    out = decode_head(torch.from_numpy(logits), "softmax", quantiles=q)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    values = np.arange(k) / (k - 1)
    for b, r, c in np.ndindex(2, 4, 5):
        pix = p[b, :, r, c]
        cdf = np.cumsum(pix)
        mean = float(pix @ values)
        lo = values[min(k - 1, next(i for i in range(k) if cdf[i] >= q[0] - 1e-6))]
        hi = values[min(k - 1, next(i for i in range(k) if cdf[i] >= q[1] - 1e-6))]
        assert out["prediction"][b, 0, r, c].item() == pytest.approx(mean, abs=1e-5)
        assert out["lower"][b, 0, r, c].item() == pytest.approx(min(lo, mean), abs=1e-5)
        assert out["upper"][b, 0, r, c].item() == pytest.approx(max(hi, mean), abs=1e-5)


def test_units_normalization_and_output_range():
    torch.manual_seed(0)
    net = _randomize_bn(build_network("gaussian", **SMALL))
    plain = Im2ImModel(net, {"heuristic": "gaussian"})
    scaled = Im2ImModel(
        net,
        {
            "heuristic": "gaussian",
            "normalization": {"kind": "minmax", "min": 10.0, "max": 20.0},
            "output_range": [100.0, 300.0],
        },
    )
    x = np.random.default_rng(0).random((12, 12)).astype(np.float32)
    a = plain(x)
    b = scaled(10.0 + 10.0 * x)
    np.testing.assert_allclose(b["prediction"], 100 + 200 * a["prediction"], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(b["std"], 200 * a["std"], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(b["upper"] - b["prediction"], b["std"], rtol=1e-3, atol=1e-3)


def test_model_is_read_only_and_errors_name_the_argument():
    model = _model("quantile")
    with pytest.raises(AttributeError):
        model.halo = 3
    spec = model.spec
    spec["name"] = "changed"
    assert model.name == "test-quantile"
    with pytest.raises(ValueError, match="divisor=4.*got 10 x 8"):
        model.predict_tensor(torch.zeros(1, 1, 10, 8))
    with pytest.raises(ValueError, match="prediction is only accepted by mask models"):
        model.predict_tensor(torch.zeros(1, 1, 8, 8), prediction=torch.zeros(1, 1, 8, 8))
    mask = _model("mask", scale=2)
    with pytest.raises(ValueError, match="prediction is required"):
        mask(np.zeros((8, 8)))
    with pytest.raises(ValueError, match=r"prediction must have shape \(16, 16\); got \(8, 8\)"):
        mask(np.zeros((8, 8)), prediction=np.zeros((8, 8)))
    with pytest.raises(ValueError, match="norm must be one of"):
        UNet2d(norm="layer")
    with pytest.raises(ValueError, match="scale_factor must be an integer >= 1; got 0"):
        UNet2d(scale_factor=0)


@pytest.mark.parametrize("norm", ["group", "instance", "none"])
@pytest.mark.parametrize("upsampling", ["transpose", "bilinear"])
def test_architecture_options_run(norm, upsampling):
    model = _model("residual", scale=3, norm=norm, upsampling=upsampling, depth=1)
    out = model(np.random.default_rng(0).random((5, 6)))
    assert out["prediction"].shape == (15, 18)
    assert model.local == (norm == "none")


# -- halo ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scale", "upsampling"), [(1, "transpose"), (2, "bilinear"), (3, "transpose")]
)
def test_halo_bounds_the_measured_influence(scale, upsampling):
    model = _model("quantile", scale=scale, upsampling=upsampling)
    halo = model.halo
    assert halo == receptive_field_radius(model.network)
    assert halo == max(unet_receptive_extent(depth=2, upsampling=upsampling, scale_factor=scale))
    n = 2 * halo + 4 * model.divisor + 2
    n += -n % model.divisor
    x = torch.randn(1, 1, n, n, generator=torch.Generator().manual_seed(1))
    base = model.predict_tensor(x)
    measured = 0
    for offset in range(model.divisor):  # every alignment with the pooling grid
        c = n // 2 + offset
        x2 = x.clone()
        x2[0, 0, c, c] += 5.0
        out = model.predict_tensor(x2)
        changed = torch.zeros(n * scale, n * scale, dtype=torch.bool)
        for key in out:
            changed |= (out[key] != base[key])[0, 0]
        rows, cols = torch.nonzero(changed, as_tuple=True)
        assert rows.numel() > 0
        # output pixel o lies over input pixel o // scale
        dist = torch.maximum((rows // scale - c).abs(), (cols // scale - c).abs())
        measured = max(measured, int(dist.max()))
    assert measured <= halo
    assert measured >= halo / 2
    assert measured == halo  # the extent is exact for a random net without normalisation dead zones


def test_mask_model_halo_bounds_influence():
    model = _model("mask", scale=2)
    halo, s = model.halo, 2
    n = 2 * halo + 8
    n += -n % model.divisor
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 1, n, n, generator=g)
    pred = torch.randn(1, 1, n * s, n * s, generator=g)
    base = model.predict_tensor(x, prediction=pred)["mask"]
    c = n // 2
    x2 = x.clone()
    x2[0, 0, c, c] += 5.0
    changed = model.predict_tensor(x2, prediction=pred)["mask"] != base
    rows, cols = torch.nonzero(changed[0, 0], as_tuple=True)
    dist = torch.maximum((rows // s - c).abs(), (cols // s - c).abs())
    assert 0 < int(dist.max()) <= halo
    assert int(dist.max()) >= halo / 2


def test_tiles_extended_by_halo_equal_the_whole_image():
    """The contract tiled inference relies on: block origins on multiples of divisor."""
    model = _model("quantile", scale=2, depth=1)
    halo, div, s = model.halo, model.divisor, 2
    x = np.random.default_rng(5).normal(size=(40, 23)).astype(np.float32)
    whole = model(x)
    padded = np.pad(x, ((halo, halo), (halo, halo)), mode="symmetric")
    start, stop = 12, 30  # a block of rows; start is a multiple of divisor
    assert start % div == 0
    block = padded[start : stop + 2 * halo]
    block = np.pad(block, ((0, -block.shape[0] % div), (0, -block.shape[1] % div)))
    out = model.predict_tensor(torch.from_numpy(block)[None, None])
    r0 = halo * s
    for key in whole:
        tile = out[key][0, 0, r0 : r0 + (stop - start) * s, r0 : r0 + 23 * s].numpy()
        np.testing.assert_allclose(tile, whole[key][start * s : stop * s], rtol=1e-5, atol=1e-5)


# -- bundles -------------------------------------------------------------------------------


def _save(tmp_path, heuristic="quantile", name="m", **kwargs):
    model = _model(heuristic, **kwargs)
    folder = save_model(
        model,
        tmp_path / name,
        spec={"training_data": "synthetic", "licence": "CC0-1.0", "card": {"psnr": 1.5}},
    )
    return model, folder


@pytest.mark.parametrize("heuristic", ["quantile", "softmax", "segmentation", "mask"])
def test_round_trip_float32_is_bit_exact(tmp_path, heuristic):
    model, folder = _save(tmp_path, heuristic, scale=2)
    loaded = load_model(folder)
    data = (folder / "weights.safetensors").read_bytes()
    assert loaded.sha256 == hashlib.sha256(data).hexdigest()
    assert loaded.spec == {
        **model.spec,
        "training_data": "synthetic",
        "licence": "CC0-1.0",
        "card": {"psnr": 1.5},
        "sha256": loaded.sha256,
    }
    for (k1, v1), (k2, v2) in zip(
        model.network.state_dict().items(), loaded.network.state_dict().items(), strict=True
    ):
        assert k1 == k2
        assert v1.dtype == v2.dtype
        assert torch.equal(v1, v2), k1
    x = np.random.default_rng(0).normal(size=(9, 11)).astype(np.float32)
    kwargs = {"prediction": np.ones((18, 22), np.float32)} if heuristic == "mask" else {}
    a, b = model(x, **kwargs), loaded(x, **kwargs)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not loaded.network.training


def test_round_trip_half_within_float16_precision(tmp_path):
    model = _model("gaussian")
    folder = save_model(model, tmp_path / "half", half=True)
    full = save_model(model, tmp_path / "full")
    size_half = (folder / "weights.safetensors").stat().st_size
    size_full = (full / "weights.safetensors").stat().st_size
    assert size_half < 0.6 * size_full
    loaded = load_model(folder)
    for key, ref in model.network.state_dict().items():
        got = loaded.network.state_dict()[key]
        if ref.is_floating_point():
            assert got.dtype == torch.float32
            np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-3, atol=1e-7)
        else:
            assert torch.equal(got, ref)


def test_never_overwrites_without_overwrite(tmp_path):
    model, folder = _save(tmp_path)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_model(_model("quantile", seed=1), folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    save_model(_model("quantile", seed=1), folder, overwrite=True)
    assert (folder / "weights.safetensors").read_bytes() != before["weights.safetensors"]
    load_model(folder)


def test_list_models_and_load_by_name(tmp_path):
    assert isinstance(list_models(), list)
    _save(tmp_path, name="alpha")
    _save(tmp_path, "residual", name="beta")
    (tmp_path / "not-a-bundle").mkdir()
    names = list_models(search_paths=[tmp_path])
    assert [n for n in names if n in ("alpha", "beta", "not-a-bundle")] == ["alpha", "beta"]
    assert load_model("beta", search_paths=[tmp_path]).heuristic == "residual"
    with pytest.raises(ValueError, match="one of the known models"):
        load_model("gamma", search_paths=[tmp_path])


def _edit_json(folder, **changes):
    spec = json.loads((folder / "model.json").read_text())
    for key, value in changes.items():
        if value is _DROP:
            del spec[key]
        else:
            spec[key] = value
    (folder / "model.json").write_text(json.dumps(spec))
    return spec


_DROP = object()


def test_refuses_wrong_sha256(tmp_path):
    _, folder = _save(tmp_path)
    weights = folder / "weights.safetensors"
    good = hashlib.sha256(weights.read_bytes()).hexdigest()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # flip one bit of the last weight
    weights.write_bytes(bytes(data))
    bad = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(BundleError, match=f"expected {good}; got {bad}"):
        load_model(folder)


def test_refuses_unknown_architecture(tmp_path):
    _, folder = _save(tmp_path)
    _edit_json(folder, architecture="resnet_evil")
    known = r"\['srnet2d', 'unet2d'\]"
    with pytest.raises(BundleError, match=r"unknown architecture 'resnet_evil'.*" + known):
        load_model(folder)


@pytest.mark.parametrize(
    "field",
    ["format_version", "architecture", "kwargs", "heuristic", "halo", "sha256", "quantiles"],
)
def test_refuses_missing_field(tmp_path, field):
    _, folder = _save(tmp_path)
    _edit_json(folder, **{field: _DROP})
    with pytest.raises(BundleError, match=f"missing the field '{field}'"):
        load_model(folder)


def test_refuses_unsupported_format_version(tmp_path):
    _, folder = _save(tmp_path)
    _edit_json(folder, format_version=99)
    with pytest.raises(
        BundleError, match=r"unsupported format_version: expected one of \[1\]; got 99"
    ):
        load_model(folder)


def test_refuses_mismatching_tensor_shapes(tmp_path):
    _, folder = _save(tmp_path)
    spec = _edit_json(folder)
    spec["kwargs"]["base_channels"] = 8
    _edit_json(folder, kwargs=spec["kwargs"])
    with pytest.raises(
        BundleError,
        match=r"tensor 'encoders\.0\.0\.weight' has the wrong shape: expected \(8, 1, 3, 3\); "
        r"got \(4, 1, 3, 3\)",
    ):
        load_model(folder)


def test_refuses_missing_and_unexpected_tensors(tmp_path):
    _, folder = _save(tmp_path)
    _, other = _save(tmp_path, name="deeper", depth=3)
    data = (other / "weights.safetensors").read_bytes()
    (folder / "weights.safetensors").write_bytes(data)
    _edit_json(folder, sha256=hashlib.sha256(data).hexdigest())
    with pytest.raises(BundleError, match=r"tensor 'bottleneck\.0\.weight' has the wrong shape"):
        load_model(folder)
    spec = _edit_json(folder)
    spec["kwargs"]["depth"] = 3
    _edit_json(folder, kwargs=spec["kwargs"], halo=100)
    load_model(folder)  # consistent again
    spec["kwargs"]["depth"] = 4
    _edit_json(folder, kwargs=spec["kwargs"], halo=200)
    with pytest.raises(BundleError, match=r"missing tensor 'encoders\.3\.0\.weight'"):
        load_model(folder)


def test_refuses_halo_smaller_than_receptive_field_and_bad_heads(tmp_path):
    model, folder = _save(tmp_path)
    _edit_json(folder, halo=model.halo - 1)
    with pytest.raises(BundleError, match=f"expected at least {model.halo}; got {model.halo - 1}"):
        load_model(folder)
    _edit_json(folder, halo=model.halo, heuristic="residual")
    with pytest.raises(BundleError, match="out_channels'] must be 2 for the residual head; got 3"):
        load_model(folder)
    _edit_json(folder, heuristic="quantile", input_channels=["a", "b"])
    with pytest.raises(BundleError, match="in_channels'] must be 2"):
        load_model(folder)
    _edit_json(folder, input_channels=["a"], scale_factor=2)
    with pytest.raises(BundleError, match="scale_factor must equal"):
        load_model(folder)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_refuses_pickle_and_never_unpickles(tmp_path):
    _, folder = _save(tmp_path)
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"encoders.0.0.weight": _Payload(str(marker))})
    (folder / "weights.safetensors").write_bytes(payload)
    _edit_json(folder, sha256=hashlib.sha256(payload).hexdigest())
    with pytest.raises(BundleError, match="not a safetensors file"):
        load_model(folder)
    assert not marker.exists()
    # sanity: the payload is real (unpickling it would create the marker)
    pickle.loads(payload)["encoders.0.0.weight"].close()
    assert marker.exists()


def test_library_never_uses_pickle_or_torch_load():
    from pathlib import Path

    import napari_im2im_uq.models as m

    for path in Path(m.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text, path
        if path.name == "_bioimageio_model.py":
            # Issue 10: a bioimage.io package's pytorch_state_dict is torch.save's format; it is
            # read once, restricted to tensors, and only after the user passed trust_code=True
            # (tests/test_bioimageio.py: refused before anything of the package runs).
            assert text.count("torch.load(") == 1, path
            assert "torch.load(io.BytesIO(data), map_location=\"cpu\", weights_only=True)" in text
            continue
        assert "torch.load(" not in text, path


def test_refuses_bad_json_and_missing_files(tmp_path):
    _, folder = _save(tmp_path)
    (folder / "model.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_model(folder)
    (folder / "model.json").unlink()
    with pytest.raises(BundleError, match="has no model.json"):
        load_model(folder)


def test_save_model_validates_spec(tmp_path):
    net = build_network("softmax", bins=8, **SMALL)
    with pytest.raises(BundleError, match="output_range must be"):
        save_model(net, tmp_path / "sm", spec={"heuristic": "softmax"})
    with pytest.raises(BundleError, match="heuristic"):
        save_model(net, tmp_path / "sm")
    with pytest.raises(ValueError, match="model_or_network must be"):
        save_model("not a model", tmp_path / "x")
    assert not (tmp_path / "sm").exists()


def test_refuses_bad_kwargs_without_allocating_them(tmp_path):
    _, folder = _save(tmp_path)
    spec = _edit_json(folder)
    _edit_json(folder, kwargs={**spec["kwargs"], "base_channels": 10**6})  # ~10^13 parameters
    with pytest.raises(  # refused by the kwargs' bounds, before anything is read or built
        BundleError, match=r"kwargs\['base_channels'\] must be an integer in \[1, 512\]; got 1000000"
    ):
        load_model(folder)
    _edit_json(folder, kwargs={**spec["kwargs"], "activation": "gelu"})
    with pytest.raises(BundleError, match="kwargs .* are invalid for architecture 'unet2d'"):
        load_model(folder)
