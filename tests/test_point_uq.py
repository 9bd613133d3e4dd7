"""Calibrated uncertainty for a point-prediction model: TTA, MC dropout, ensembles, constant.

The tiled outputs are compared with a slow untiled reference written here with numpy and
scipy: pad the image as ``Im2ImModel.__call__`` does (mirror ``halo``, then to a multiple of
the divisor at the bottom and right), transform the padded image, run, transform back, crop.
"""

from __future__ import annotations

import dask
import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from napari_im2im_uq import api
from napari_im2im_uq.inference import make_plan, predict
from napari_im2im_uq.models import Im2ImModel, build_network


def _point_model(seed=0, scale_factor=1, dropout=0.0, depth=2, name="point"):
    torch.manual_seed(seed)
    net = build_network("point", depth=depth, base_channels=4, scale_factor=scale_factor)
    if dropout:
        for module in list(net.modules()):
            if isinstance(module, nn.Sequential) and len(module) == 6:  # a double conv
                module.append(nn.Dropout2d(dropout))
    return Im2ImModel(net, {"heuristic": "point", "name": name})


def _apply(a, k, inverse=False):
    if not inverse:
        a = np.fliplr(a) if k >= 4 else a
        return np.rot90(a, k % 4)
    a = np.rot90(a, -(k % 4))
    return np.fliplr(a) if k >= 4 else a


def _reference_samples(models, image, halo):
    """Untiled samples of each (model, transform), on the image padded by ``halo``."""
    rows, cols = image.shape
    out = []
    for model, k in models:
        div, s = model.divisor, model.scale_factor
        er, ec = -(rows + 2 * halo) % div, -(cols + 2 * halo) % div
        xp = np.pad(image.astype(np.float32), ((halo, halo + er), (halo, halo + ec)),
                    mode="symmetric")
        x = torch.from_numpy(np.ascontiguousarray(_apply(xp, k)))[None, None]
        y = model.predict_tensor(x)["prediction"][0, 0].numpy()
        out.append(_apply(y, k, inverse=True).astype(np.float64))
    return np.stack(out), (slice(halo * s, (halo + rows) * s), slice(halo * s, (halo + cols) * s))


def _reference_stats(samples, crop, kernel=3, blur=1.0):
    mean, var = samples.mean(0), samples.var(0)
    box = ndimage.uniform_filter(samples**2, size=(1, kernel, kernel), mode="constant").mean(0)
    smoothed = box - ndimage.uniform_filter(mean, size=kernel, mode="constant") ** 2
    smoothed = ndimage.gaussian_filter(smoothed, blur, mode="constant", truncate=3.0)
    return {"prediction": mean[crop], "std": np.sqrt(var)[crop],
            "std_smoothed": np.sqrt(np.clip(smoothed, 0, None))[crop]}


def _computed(outputs):
    return dask.compute(outputs)[0]


@pytest.mark.parametrize("scale_factor", [1, 2])
def test_tta_tiled_equals_untiled_padded_reference_on_an_awkward_shape(scale_factor):
    model = _point_model(scale_factor=scale_factor)
    image = np.random.default_rng(1).random((2, 37, 53)).astype(np.float32)
    kw = dict(axes="ZYX", device="cpu", uncertainty="tta")
    tiled = _computed(predict(model, image, tile_shape=(16, 24), **kw))
    assert sorted(tiled) == ["lower", "prediction", "std", "std_smoothed", "upper"]
    halo = make_plan(model, image, **kw).halo
    assert halo >= model.halo + 1  # the smoothing kernel's reach, on the pooling grid
    assert (halo - model.halo) % model.divisor == 0
    for z in range(2):
        samples, crop = _reference_samples([(model, k) for k in range(8)], image[z], halo)
        ref = _reference_stats(samples, crop)
        scale = float(ref["std"].max())
        assert scale > 1e-4  # a random network is far from equivariant
        for name in ("prediction", "std", "std_smoothed"):
            np.testing.assert_allclose(tiled[name][z], ref[name], atol=1e-5 * (1 + scale))
        np.testing.assert_allclose(tiled["lower"][z], ref["prediction"] - ref["std"], atol=1e-5)
        np.testing.assert_allclose(tiled["upper"][z], ref["prediction"] + ref["std"], atol=1e-5)
    # One tile per plane gives the same result: the tiling does not show.
    whole = _computed(predict(model, image, tile_shape=(64, 64), **kw))
    for name in tiled:
        np.testing.assert_allclose(whole[name], tiled[name], atol=1e-5)


def test_tta_of_the_unpadded_image_equals_it_where_the_pooling_grids_agree():
    """The naive TTA, g^-1(model(g(image))), pads g(image) to the divisor at its own bottom
    and right; the tiled TTA transforms the padded image. They agree exactly when that padding
    is a multiple of the divisor (here 38 x 54, halo 23 + 4, divisor 4) and differ otherwise
    by the network's lack of shift invariance. Measured on this random depth-2 U-Net,
    37 x 53: mean differs by up to 1.3e-3 (median 3.6e-4) against a mean std of 8.8e-4;
    200 x 300: up to 7e-7; with scale factor 2, 37 x 53: up to 2.0e-4 (mean std 9.6e-3).
    """
    model = _point_model()
    for shape, aligned in (((38, 54), True), ((37, 53), False)):
        image = np.random.default_rng(2).random(shape).astype(np.float32)
        tiled = _computed(predict(model, image, axes="YX", device="cpu", uncertainty="tta",
                                  tile_shape=(16, 24)))
        naive = np.stack([_apply(model(np.ascontiguousarray(_apply(image, k)))["prediction"],
                                 k, inverse=True) for k in range(8)])
        diff = np.abs(naive.mean(0) - tiled["prediction"]).max()
        spread = np.abs(naive.std(0) - tiled["std"]).max()
        if aligned:
            assert diff < 1e-6 and spread < 1e-6
        else:
            assert 1e-6 < diff < np.ptp(tiled["prediction"])


def _symmetrise(model):
    """Make every kernel invariant under D4: the network becomes rotation/flip-equivariant."""
    with torch.no_grad():
        for module in model.network.modules():
            if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
                w = module.weight
                group = [torch.rot90(v, k, dims=(-2, -1)) for v in (w, w.flip(-1))
                         for k in range(4)]
                w.copy_(torch.stack(group).mean(0))
    return model


def test_tta_spread_is_zero_for_an_equivariant_model_and_a_constant_one():
    image = np.random.default_rng(3).random((41, 30)).astype(np.float32)
    model = _symmetrise(_point_model(seed=4))
    out = _computed(predict(model, image, axes="YX", device="cpu", uncertainty="tta",
                            tile_shape=(16, 16)))
    plain = model(image)["prediction"]
    assert np.ptp(plain) > 1e-3  # not a constant model
    assert out["std"].max() < 1e-5 * (1 + np.abs(plain).max())
    # The kernel-smoothed variance E[mu^2 * K] - (E[mu] * K)^2 is then the local variance of
    # the prediction within the box (blurred): the paper's score, not zero.
    halo = make_plan(model, image, axes="YX", device="cpu", uncertainty="tta").halo
    samples, crop = _reference_samples([(model, 0)], image, halo)
    local = _reference_stats(samples, crop)["std_smoothed"]
    assert local.max() > 1e-4
    np.testing.assert_allclose(out["std_smoothed"], local, atol=1e-5)
    np.testing.assert_allclose(out["prediction"], plain, atol=1e-5)
    constant = _point_model(seed=5)
    with torch.no_grad():
        for p in constant.network.parameters():
            p.zero_()
        list(constant.network.modules())[-1].bias.fill_(0.25)  # the output convolution
    out = _computed(predict(constant, image, axes="YX", device="cpu", uncertainty="tta"))
    np.testing.assert_array_equal(out["std"], 0)
    np.testing.assert_allclose(out["prediction"], 0.25)


def test_tta_subset_and_invalid_options():
    model = _point_model()
    image = np.random.default_rng(6).random((24, 24)).astype(np.float32)
    subset = ["identity", "flip"]
    out = _computed(predict(model, image, axes="YX", device="cpu",
                            uncertainty={"kind": "tta", "transforms": subset}))
    halo = make_plan(model, image, axes="YX", device="cpu", uncertainty="tta").halo
    samples, crop = _reference_samples([(model, 0), (model, 4)], image, halo)
    np.testing.assert_allclose(out["std"], _reference_stats(samples, crop)["std"], atol=1e-6)
    bad = [("rot45", "uncertainty must be one of"), ({"kind": "tta", "transforms": ["rot90"]},
           "at least 2 different"), ({"kind": "tta", "transforms": [0, 9]}, "indices 0-7"),
           ({"kind": "tta", "samples": 3}, "takes the options"),
           ({"kind": "tta", "kernel": 2}, "odd integer"), (3, "uncertainty must be None")]
    for value, message in bad:
        with pytest.raises(ValueError, match=message):
            predict(model, image, axes="YX", device="cpu", uncertainty=value)
    mask = Im2ImModel(build_network("mask", in_channels=2, depth=1, base_channels=2),
                      {"heuristic": "mask"})
    with pytest.raises(ValueError, match="needs a model with a 'prediction' output"):
        predict(mask, image, axes="YX", device="cpu", uncertainty="tta",
                prediction=np.zeros_like(image))


def test_mc_dropout_refuses_a_network_without_dropout_and_spreads_with_it():
    image = np.random.default_rng(7).random((30, 45)).astype(np.float32)
    with pytest.raises(ValueError, match="needs a network with dropout layers; model 'point'"):
        predict(_point_model(), image, axes="YX", device="cpu", uncertainty="mc_dropout")
    model = _point_model(dropout=0.3)
    uq = {"kind": "mc_dropout", "samples": 6, "seed": 1}
    out = _computed(predict(model, image, axes="YX", device="cpu", uncertainty=uq,
                            tile_shape=(16, 16)))
    assert (out["std"] > 0).mean() > 0.9 and out["std_smoothed"].min() > 0
    assert np.all(out["lower"] <= out["prediction"]) and np.all(out["prediction"] <= out["upper"])
    again = _computed(predict(model, image, axes="YX", device="cpu", uncertainty=uq,
                              tile_shape=(16, 16)))
    np.testing.assert_array_equal(again["std"], out["std"])  # masks seeded by the tile
    other = _computed(predict(model, image, axes="YX", device="cpu", tile_shape=(16, 16),
                              uncertainty={**uq, "seed": 2}))
    assert not np.array_equal(other["std"], out["std"])
    plain = model(image)["prediction"]  # the caller's model stays deterministic (eval)
    np.testing.assert_array_equal(model(image)["prediction"], plain)


def test_ensemble_is_the_mean_and_spread_of_its_members_and_checks_them():
    image = np.random.default_rng(8).random((2, 33, 29)).astype(np.float32)
    first, second = _point_model(seed=1), _point_model(seed=2, depth=1, name="shallow")
    uq = {"kind": "ensemble", "models": [second]}
    out = _computed(predict(first, image, axes="ZYX", device="cpu", uncertainty=uq,
                            tile_shape=(16, 16)))
    a, b = first(image[:, None])["prediction"][:, 0], second(image[:, None])["prediction"][:, 0]
    np.testing.assert_allclose(out["prediction"], (a + b) / 2, atol=1e-5)
    np.testing.assert_allclose(out["std"], np.abs(a - b) / 2, atol=1e-5)
    halo = make_plan(first, image, axes="ZYX", device="cpu", uncertainty=uq).halo
    for z in range(2):
        samples, crop = _reference_samples([(first, 0)], image[z], halo)
        other, _ = _reference_samples([(second, 0)], image[z], halo)
        ref = _reference_stats(np.concatenate([samples, other]), crop)
        np.testing.assert_allclose(out["std_smoothed"][z], ref["std_smoothed"], atol=1e-5)
    sr = _point_model(seed=3, scale_factor=2, name="sr")
    with pytest.raises(ValueError, match=r"models\[0\] \('sr'\) must have the scale factor"):
        predict(first, image, axes="ZYX", device="cpu",
                uncertainty={"kind": "ensemble", "models": [sr]})
    quantile = Im2ImModel(build_network("quantile", depth=1, base_channels=2),
                          {"heuristic": "quantile", "name": "q"})
    with pytest.raises(ValueError, match="must have the output names"):
        predict(first, image, axes="ZYX", device="cpu",
                uncertainty={"kind": "ensemble", "models": [quantile]})
    with pytest.raises(ValueError, match="needs 'models'"):
        predict(first, image, axes="ZYX", device="cpu", uncertainty="ensemble")


def test_constant_width_baseline():
    model = _point_model(scale_factor=2)
    image = np.random.default_rng(9).random((21, 34)).astype(np.float32)
    out = _computed(predict(model, image, axes="YX", device="cpu", uncertainty="constant",
                            tile_shape=(8, 8)))
    assert sorted(out) == ["lower", "prediction", "upper"]
    plain = model(image)["prediction"]
    np.testing.assert_allclose(out["prediction"], plain, atol=1e-6)
    np.testing.assert_allclose(out["upper"] - out["prediction"], 1.0, atol=1e-6)
    np.testing.assert_allclose(out["prediction"] - out["lower"], 1.0, atol=1e-6)
    plan = make_plan(model, image, axes="YX", device="cpu", uncertainty="constant")
    assert plan.halo == model.halo  # no smoothing: no extra halo


def _truth_for(outputs, seed):
    """Truth with a per-pixel error proportional to the TTA spread (plus a little noise)."""
    rng = np.random.default_rng(seed)
    p, sd = outputs["prediction"], outputs["std"]
    return (p + 1.5 * sd * rng.standard_normal(p.shape)).astype(np.float32)


def test_tta_intervals_and_trust_mask_calibrate_and_apply_through_the_api():
    model = _point_model(seed=11)
    rng = np.random.default_rng(12)
    images = [rng.random((96, 96)).astype(np.float32) for _ in range(2)]
    runs = [api.predict(model, im, device="cpu", uncertainty="tta") for im in images]
    layers = [{kw["metadata"]["im2im_uq"]["output"]: _Layer(d, kw) for d, kw, _ in run}
              for run in runs]
    meta = layers[0]["prediction"].metadata["im2im_uq"]
    assert meta["uncertainty"] == "tta"
    assert meta["model"]["uncertainty"]["transforms"][1] == "rot90"
    assert layers[0]["prediction"].name == "prediction (point, tta)"
    arrays = [{k: np.asarray(v.data) for k, v in run.items()} for run in layers]
    truths = [_truth_for(a, seed) for seed, a in enumerate(arrays)]
    cal = api.calibrate(layers[0], truths[0], method="intervals", alpha=0.2, delta=0.1,
                        rule="rcps", bound="hoeffding_bentkus", tile_shape=(16, 16))
    assert cal.record["model"]["uncertainty"]["kind"] == "tta"
    (width, _, _), = api.apply_record(cal.record, layers[1])
    lam = cal.result.lam
    np.testing.assert_allclose(width, 2 * lam * arrays[1]["std"], rtol=1e-4, atol=1e-6)
    missed = np.abs(truths[1] - arrays[1]["prediction"]) > lam * arrays[1]["std"] + 1e-7
    assert missed.mean() < 0.2 + 0.05  # RCPS on the first image holds on the second
    for sigma in ("std", "std_smoothed"):
        mask = api.calibrate(layers[0], truths[0], method="trust_mask", alpha=0.3, sigma=sigma,
                             tile_shape=(16, 16), data_range=(-1.0, 1.0))
        assert mask.record["sigma"] == sigma
        applied = api.apply_record(mask.record, layers[1])
        assert applied and applied[0][0].shape == (96, 96)


class _Layer:
    """A stand-in for a napari layer: data, name, metadata, scale, translate."""

    def __init__(self, data, kwargs):
        self.data, self.name, self.metadata = data, kwargs["name"], kwargs["metadata"]
        self.scale, self.translate = kwargs["scale"], kwargs["translate"]


def test_cli_uncertainty_writes_the_same_outputs_to_zarr(tmp_path, capsys):
    import zarr

    from napari_im2im_uq.cli import main
    from napari_im2im_uq.models import save_model

    model = _point_model(seed=13)
    bundle = save_model(model, tmp_path / "bundle")
    image = np.random.default_rng(14).random((27, 35)).astype(np.float32)
    np.save(tmp_path / "img.npy", image)
    out = tmp_path / "out.zarr"
    argv = ["predict", str(tmp_path / "img.npy"), "--model", str(bundle), "--output", str(out),
            "--tile", "16", "16", "--device", "cpu", "--no-progress", "--uncertainty", "tta",
            "--transforms", "identity", "rot90", "flip"]
    assert main(argv) == 0
    capsys.readouterr()
    ref = _computed(predict(model, image, axes="YX", device="cpu", tile_shape=(32, 48),
                            uncertainty={"kind": "tta", "transforms": [0, 1, 4]}))
    for name in ("prediction", "lower", "upper", "std", "std_smoothed"):
        got = zarr.open_array(str(out / name / "0"), mode="r")[...]
        np.testing.assert_allclose(got, ref[name], atol=1e-5)
    # The store's run description names the source: another one is a different run.
    argv_mc = argv[:-6] + ["--uncertainty", "constant"]
    assert main(argv_mc) != 0
    assert "uncertainty.kind: stored 'tta', now 'constant'" in capsys.readouterr().err
    assert main([*argv[:-6], "--samples", "4"]) != 0
    assert "--samples need(s) --uncertainty" in capsys.readouterr().err
    assert main([*argv[:-6], "--uncertainty", "ensemble", "--overwrite"]) != 0
    assert "needs --member" in capsys.readouterr().err
    got = zarr.open_array(str(out / "std" / "0"), mode="r")[...]  # refused: nothing replaced
    np.testing.assert_allclose(got, ref["std"], atol=1e-5)


def test_predict_widget_offers_uncertainty_for_a_point_model(make_napari_viewer, qtbot, tmp_path):
    pytest.importorskip("napari")
    from napari_im2im_uq._widgets import ModelWidget, PredictWidget
    from napari_im2im_uq._widgets._model import ON_DISK
    from napari_im2im_uq._widgets._predict import UNCERTAINTY
    from napari_im2im_uq.models import save_model

    viewer = make_napari_viewer()
    image = np.random.default_rng(15).random((40, 36)).astype(np.float32)
    viewer.add_image(image, name="raw")
    model_w, predict_w = ModelWidget(viewer), PredictWidget(viewer)
    predict_w.image.value = viewer.layers["raw"]
    predict_w.refresh()
    assert predict_w.uncertainty.native.isHidden()  # the zoo's default model has its own head
    model_w.model.value = ON_DISK
    model_w.folder.value = save_model(_point_model(seed=16), tmp_path / "point")
    model_w.device.value = "cpu"
    predict_w.refresh()
    assert not predict_w.uncertainty.native.isHidden(), (predict_w.status.value, predict_w.session.model,
                                                      model_w.status.value)
    assert UNCERTAINTY[predict_w.uncertainty.value] == "tta"
    predict_w.start()
    qtbot.waitUntil(lambda: not predict_w.runner.running, timeout=180_000)
    names = {ly.name for ly in viewer.layers}
    assert {"prediction (point, tta)", "std (point, tta)", "std_smoothed (point, tta)"} <= names
    layer = viewer.layers["upper (point, tta)"]
    assert layer.metadata["im2im_uq"]["uncertainty"] == "tta"
