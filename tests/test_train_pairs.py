"""Tests of training.train: a model trained or fine-tuned on the user's own pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_im2im_uq import api  # noqa: E402
from napari_im2im_uq.models import load_model  # noqa: E402
from napari_im2im_uq.training import run_to_end, train  # noqa: E402

TINY = {"depth": 2, "base_channels": 8, "norm": "batch"}


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _field(seed, shape=(128, 128), sigma=4.0):
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(np.random.default_rng(seed).standard_normal(shape), sigma)
    return (f / f.std()).astype(np.float32)


def _run(x, y, tmp_path, name="m", **kwargs):
    kwargs.setdefault("network", TINY)
    kwargs.setdefault("region_shape", (32, 32))
    kwargs.setdefault("device", "cpu")
    events = []
    result = run_to_end(train(x, y, output=tmp_path / name, **kwargs), callback=events.append)
    return result, events


def _boxes_intersect(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_regression_beats_its_baseline_on_the_held_back_regions(tmp_path):
    # a nonlinear map (the affine baseline cannot fit it); three seeds, each must win on RMSE
    for seed in range(3):
        x = _field(seed, (160, 160))
        y = 10.0 * np.tanh(2 * x) ** 2 + 3.0
        result, events = _run(x, y, tmp_path, f"m{seed}", steps=150, seed=seed, lr=5e-3,
                              head="residual", validate_every=25, patience=10)
        q = result.quality
        assert q["model"]["rmse"] < 0.8 * q["baseline"]["rmse"], (seed, q)
        assert q["n_regions"] == len([b for im in result.split["images"]
                                      for b in im["held_back"]])
    phases = [e["phase"] for e in events]
    assert phases[0] == "data" and phases[-2:] == ["evaluate", "saved"]
    train_events = [e for e in events if e["phase"] == "train"]
    assert set(train_events[0]) >= {"step", "total", "loss", "lr", "seconds"}
    assert [e["step"] for e in train_events] == list(range(1, 151))
    val = [e for e in events if e["phase"] == "validate"]
    assert [e["step"] for e in val] == [25, 50, 75, 100, 125, 150]
    assert set(val[0]) == {"phase", "step", "total", "val_loss", "best_step", "best_val_loss"}
    assert events[-1] == {"phase": "saved", "path": str(result.path)}
    # outputs in the target's units; the bundle records the units, the regions and the card
    spec = json.loads((result.path / "model.json").read_text())
    assert spec["output_range"][0] == pytest.approx(3.0, abs=0.01)
    assert spec["training_regions"] == result.split
    training = spec["card"]["training"]
    assert training["steps"] == 150 and training["device"] == "cpu"
    assert training["best_step"] == val[-1]["best_step"]
    assert len(training["curves"]["val_loss"]) == 6
    assert spec["licence"] == "not stated" and spec["authors"] == "not stated"
    assert spec["card"]["held_out"]["model"] == result.quality["model"]
    readme = (result.path / "README.md").read_text()
    assert "Quality on held-out data" in readme
    pred = result.model(x)["prediction"]
    assert abs(float(np.mean(pred)) - float(np.mean(y))) < 1.0


def test_held_back_regions_are_disjoint_from_training_and_validation(tmp_path):
    x = _field(0, (96, 160))
    result, _ = _run(np.stack([x, x[::-1]]), np.stack([2 * x, -x]), tmp_path, steps=3,
                     validate_every=2)
    regions = json.loads((result.path / "model.json").read_text())["training_regions"]
    assert len(regions["images"]) == 2
    assert regions["images"][1]["source"] == "array, plane 1"
    for im in regions["images"]:
        used = im["train"] + im["validation"]
        assert im["held_back"]
        assert not any(_boxes_intersect(h, u) for h in im["held_back"] for u in used)
    from napari_im2im_uq._fingerprints import plane_fingerprints

    assert [im["fingerprint"] for im in regions["images"]] == plane_fingerprints(
        np.stack([2 * x, -x]))
    shapes = api.held_back_shapes(regions, ndim=3)
    assert len(shapes) == sum(len(im["held_back"]) for im in regions["images"])


def test_integer_images_units_and_super_resolution(tmp_path):
    hr = _field(1, (128, 128))
    target = (1000 + 200 * hr).astype(np.uint16)
    low = np.clip(60 + 40 * hr[::2, ::2], 0, 255).astype(np.uint8)
    result, _ = _run(low, target, tmp_path, steps=4, validate_every=2)
    spec = result.model.spec
    assert result.model.scale_factor == 2
    assert spec["preprocessing"] == [{"id": "scale_dtype_range"}]
    lo, hi = spec["output_range"]
    train = np.concatenate([target[r0:r1, c0:c1].ravel()
                            for r0, c0, r1, c1 in result.split["images"][0]["train"]])
    assert (lo, hi) == (float(train.min()), float(train.max()))  # the target's units (counts)
    assert spec["normalization"]["kind"] == "meanstd"
    assert 0.1 < spec["normalization"]["mean"][0] < 0.5  # of low / 255 in the train regions
    out = result.model(low)
    assert out["prediction"].shape == target.shape


def test_segmentation_with_partial_labels(tmp_path):
    x = _field(2, (128, 128), sigma=3.0)
    labels = np.zeros(x.shape, np.uint8)  # 0 = not annotated
    labels[:, :80] = np.where(x[:, :80] > 0, 2, 1)
    result, events = _run(x, labels, tmp_path, steps=60, lr=1e-2, validate_every=20)
    model = result.model
    assert model.heuristic == "segmentation"
    assert model.spec["classes"] == ["label 1", "label 2"]
    q = result.quality
    assert q["model"]["pixel_accuracy"] > 0.8
    assert q["n_pixels"] == sum(int(np.count_nonzero(labels[r0:r1, c0:c1]))
                                for r0, c0, r1, c1 in result.split["images"][0]["held_back"])
    assert any(e["phase"] == "validate" for e in events)


def test_fine_tuning_starts_from_the_base_weights(tmp_path):
    x = _field(3, (128, 128))
    base, _ = _run(x, 3 * x + 1, tmp_path, "base", steps=20, validate_every=10)
    # a learning rate too small to move anything: the fine-tuned weights are the base's
    tuned, _ = _run(x, 3 * x + 1, tmp_path, "tuned", base_model=base.path, steps=2, lr=1e-20,
                    validate_every=2, network=None)
    a, b = base.model.network, tuned.model.network
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), name
    spec = tuned.model.spec
    assert spec["base_model"] == {"name": "base", "sha256": base.model.sha256}
    assert spec["normalization"] == base.model.spec["normalization"]
    assert spec["output_range"] == base.model.spec["output_range"]
    # the base model's weights are validated too (step 0): a run that only hurts keeps them
    hurt, events = _run(x, 3 * x + 1, tmp_path, "hurt", base_model=base.model, steps=4,
                        lr=0.5, validate_every=1, network=None)
    val = [e for e in events if e["phase"] == "validate"]
    assert [e["step"] for e in val] == [0, 1, 2, 3, 4]
    assert all(e["best_step"] == 0 for e in val) and hurt.model.spec["card"]["training"][
        "best_step"] == 0
    sa, sb = base.model.network.state_dict(), hurt.model.network.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    with pytest.raises(ValueError, match="head must match the base model's"):
        _run(x, x, tmp_path, "bad", base_model=base.model, head="gaussian", network=None)
    with pytest.raises(ValueError, match=r"input must have the 1 channel\(s\) of base_model"):
        _run(np.stack([x, x]), x, tmp_path, "bad2", base_model=base.model, network=None)
    with pytest.raises(ValueError, match=r"target values span .* keeps its units"):
        _run(x, 100 * x, tmp_path, "bad3", base_model=base.model, network=None)
    with pytest.raises(ValueError, match=r"input values span .* far outside"):
        _run(100 * x, 3 * x + 1, tmp_path, "bad4", base_model=base.model, network=None)


def test_mask_network_of_a_base_model(tmp_path):
    hr = _field(4, (128, 128))
    base, _ = _run(hr[::2, ::2], hr, tmp_path, "base", steps=10, validate_every=5)
    # no target: the input is the truth, the base model sees its [::2, ::2] sampling
    result, _ = _run(hr, None, tmp_path, "mask", base_model=base.model, steps=6,
                     validate_every=3)
    model = result.model
    assert model.heuristic == "mask" and model.scale_factor == 2
    assert model.spec["base_model"]["sha256"] == base.model.sha256
    assert {"spearman_error", "mask_loss"} <= set(result.quality["model"])
    pred = base.model(hr[::2, ::2])["prediction"]
    mask = model(hr[::2, ::2], prediction=pred)["mask"]
    assert mask.shape == hr.shape and 0 <= mask.min() <= mask.max() <= 1


def test_mask_pair_is_the_recipe_construction():
    import torch.nn.functional as F

    from napari_im2im_uq.training._pairs_data import mask_pair

    base = load_model("tem-sr4x-quantile")
    y = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    x = y[::4, ::4]
    # the tem-sr4x-mask recipe's construction before it moved into mask_pair
    yhat = base(x)["prediction"]
    xt = base.normalize_input(torch.from_numpy(np.ascontiguousarray(x))[None, None])
    up = F.interpolate(xt, scale_factor=4, mode="bilinear", align_corners=False)[0, 0]
    pn = base.normalize_target(torch.from_numpy(yhat))
    expected = np.stack([up.numpy(), pn.numpy()]).astype(np.float32)
    got, target = mask_pair(base, x, y)
    assert np.array_equal(got, expected)
    assert np.array_equal(target, base.normalize_target(torch.from_numpy(y)).numpy())


def _weights(model):
    return {k: v.clone() for k, v in model.network.state_dict().items()}


def test_resume_after_a_cancel_and_after_a_crash(tmp_path, monkeypatch):
    x = _field(5, (128, 128))
    y = np.tanh(x) * 4
    common = {"steps": 24, "validate_every": 8, "seed": 1, "patience": 50}
    full, _ = _run(x, y, tmp_path, "full", **common)
    # cancel: the consumer closes the generator after step 13
    job = train(x, y, output=tmp_path / "cancelled", network=TINY, region_shape=(32, 32),
                device="cpu", **common)
    for event in job:
        if event["phase"] == "train" and event["step"] == 13:
            job.close()
            break
    assert not (tmp_path / "cancelled" / "model.json").exists()
    ckpt = tmp_path / "cancelled.checkpoint"
    assert json.loads((ckpt / "checkpoint.json").read_text())["step"] == 13
    with pytest.raises(FileExistsError, match="pass resume=True"):
        _run(x, y, tmp_path, "cancelled", **common)
    resumed, events = _run(x, y, tmp_path, "cancelled", resume=True, **common)
    first = next(e for e in events if e["phase"] == "train")
    assert first["step"] == 14
    assert resumed.model.spec["card"]["training"]["resumed_from"] == 13
    a, b = _weights(full.model), _weights(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-identical on the CPU
    assert [e["val_loss"] for e in events if e["phase"] == "validate"] == [
        h["val_loss"] for h in full.model.spec["card"]["training"]["curves"]["val_loss"][1:]]

    # crash: an error at step 20 leaves the checkpoint of the last validation (step 16)
    from napari_im2im_uq.training import _loop

    real = _loop.heuristic_loss
    calls = {"n": 0}

    def crashing(raw, *args, **kwargs):
        if raw.requires_grad:
            calls["n"] += 1
            if calls["n"] == 20:
                raise RuntimeError("simulated crash")
        return real(raw, *args, **kwargs)

    monkeypatch.setattr(_loop, "heuristic_loss", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(x, y, tmp_path, "crashed", **common)
    monkeypatch.setattr(_loop, "heuristic_loss", real)
    ckpt = tmp_path / "crashed.checkpoint"
    assert json.loads((ckpt / "checkpoint.json").read_text())["step"] == 16
    crashed, events = _run(x, y, tmp_path, "crashed", resume=True, **common)
    assert next(e for e in events if e["phase"] == "train")["step"] == 17
    c = _weights(crashed.model)
    assert all(torch.equal(a[k], c[k]) for k in a)
    assert not ckpt.exists()  # removed once the bundle is written
    # a checkpoint of other data or another split is refused
    monkeypatch.setattr(_loop, "heuristic_loss", crashing)
    calls["n"] = 0
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(x, y, tmp_path, "other", **common)
    monkeypatch.setattr(_loop, "heuristic_loss", real)
    with pytest.raises(ValueError, match="made from other data, another split"):
        _run(x, y, tmp_path, "other", resume=True, **{**common, "seed": 2})
    with pytest.raises(ValueError, match="made from other data, another split"):
        _run(x, y + 1, tmp_path, "other", resume=True, **common)


def test_early_stopping_keeps_the_best_weights(tmp_path):
    x = _field(6, (128, 128))
    result, events = _run(x, x ** 2, tmp_path, steps=400, lr=0.05, validate_every=2,
                          patience=2)
    stops = [e for e in events if e["phase"] == "stopped_early"]
    assert result.stopped_early and len(stops) == 1
    val = [e for e in events if e["phase"] == "validate"]
    assert stops[0]["step"] == val[-1]["step"] < 400
    best = min(val, key=lambda e: e["val_loss"])
    assert stops[0]["best_step"] == best["step"]
    assert result.model.spec["card"]["training"]["best_step"] == best["step"]


def test_files_are_read_with_read_pairs(tmp_path):
    x = _field(7, (96, 96))
    np.save(tmp_path / "low.npy", x)
    np.save(tmp_path / "high.npy", 2 * x)
    result, _ = _run(str(tmp_path / "low.npy"), str(tmp_path / "high.npy"), tmp_path, steps=2,
                     validate_every=2)
    assert result.split["images"][0]["source"] == "high.npy"


def test_bad_arguments_name_the_argument(tmp_path):
    x = _field(8, (64, 64))
    with pytest.raises(ValueError, match="same whole multiple"):
        _run(x, np.zeros((96, 100), np.float32), tmp_path)
    with pytest.raises(ValueError, match="head must be one of"):
        _run(x, x, tmp_path, head="median")
    with pytest.raises(ValueError, match="task must be one of"):
        _run(x, x, tmp_path, task="denoise")
    with pytest.raises(ValueError, match="target must be given"):
        _run(x, None, tmp_path)
    with pytest.raises(ValueError, match="scale_factor must match the shapes"):
        _run(x, x, tmp_path, scale_factor=2)
    with pytest.raises(ValueError, match="patch must be a multiple of 4"):
        _run(x, x, tmp_path, patch=6)
    with pytest.raises(ValueError, match="input must be a layer or an array"):
        _run(object(), x, tmp_path)
    with pytest.raises(ValueError, match="steps must be an integer"):
        _run(x, x, tmp_path, steps=0)
    with pytest.raises(ValueError, match="a split needs at least 3"):
        _run(x[:40, :40], x[:40, :40], tmp_path)
    with pytest.raises(ValueError, match="target must vary"):
        _run(x, np.ones_like(x), tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "README.md").write_text("my notes")
    with pytest.raises(FileExistsError, match="never replaced"):
        _run(x, x, tmp_path, "mine")
    assert (tmp_path / "mine" / "README.md").read_text() == "my notes"


class _Layer:
    """A stand-in for a napari layer (what napari_im2im_uq.layers reads)."""

    def __init__(self, data, name):
        self.data, self.name, self.metadata = data, name, {}
        self.scale, self.translate = (1.0, 1.0), (0.0, 0.0)


class Labels(_Layer):
    """A stand-in for a napari Labels layer (its type name makes it one)."""


def test_synthetic_qpi_layers_two_channels_beat_the_baseline(tmp_path):
    from napari_im2im_uq._sample_data import sample_qpi

    (images, kx, _), (phase, ky, _) = sample_qpi(seed=0)
    result, _ = _run(_Layer(images, kx["name"]), _Layer(phase, ky["name"]), tmp_path,
                     steps=150, lr=5e-3, region_shape=None)
    assert result.model.in_channels == ["channel 0", "channel 1"]
    assert result.split["region_shape"] == [48, 48]  # the default for 256 x 256
    assert result.split["images"][0]["source"] == "qpi phase truth"
    q = result.quality
    assert q["model"]["rmse"] < 0.7 * q["baseline"]["rmse"], q
    assert q["model"]["psnr_db"] > q["baseline"]["psnr_db"] + 3


def test_a_labels_layer_is_a_segmentation_target(tmp_path):
    x = _field(9, (96, 96))
    labels = Labels((x > 0).astype(np.int32) + 1, "membranes")
    result, _ = _run(_Layer(x, "raw"), labels, tmp_path, steps=2, validate_every=2)
    assert result.model.heuristic == "segmentation"
    assert result.model.spec["card"]["training"]["task"] == "segmentation"
    with pytest.raises(ValueError, match=r"labels must be 1..K with K <= 32"):
        _run(x, (x > 0).astype(np.uint8) * 255, tmp_path, "binary")
    with pytest.raises(ValueError, match="head must be 'segmentation'"):
        _run(_Layer(x, "raw"), labels, tmp_path, "bad", head="gaussian")


def test_mask_network_from_a_truth_file(tmp_path):
    hr = _field(10, (128, 128))
    base, _ = _run(hr[::2, ::2], hr, tmp_path, "base", steps=4, validate_every=2)
    np.save(tmp_path / "truth.npy", hr)
    result, _ = _run(str(tmp_path / "truth.npy"), None, tmp_path, "mask", base_model=base.path,
                     steps=2, validate_every=2)
    assert result.model.heuristic == "mask"
    assert result.split["images"][0]["source"] == "truth.npy"
