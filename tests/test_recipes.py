"""Tests of the zoo recipes' validation: one code path, held-back data, learning curves."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_im2im_uq._jobs import run_to_end  # noqa: E402
from napari_im2im_uq.training import _recipes  # noqa: E402
from napari_im2im_uq.training._card import _LearningCurve, model_card_markdown  # noqa: E402
from napari_im2im_uq.training._recipes import RECIPES, _sampler, _validation_batches  # noqa: E402
from napari_im2im_uq.training._recipes_tem import TEM_DEGRADATION  # noqa: E402
from test_inference import one_torch_thread  # noqa: E402, F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _reference_corners(shape, side, count):
    """Every grid position of step ``side``; every other one when there are enough."""
    corners = []
    for r in range(0, shape[0] - side + 1, side):
        for c in range(0, shape[1] - side + 1, side):
            corners.append((r, c))
    if len(corners) >= 2 * count:
        corners = [corners[i] for i in range(0, len(corners), 2)]
    return corners[:count]


def test_validation_batches_are_the_crops_of_a_slow_reference_on_random_cases():
    rng = np.random.default_rng(0)
    for case in range(40):
        side = int(rng.integers(2, 9))
        shape = (int(rng.integers(2 * side, 7 * side)), int(rng.integers(side, 7 * side)))
        count = int(rng.integers(2, 9))
        labels = case % 2 == 1
        y = rng.integers(0, 3, shape) if labels else rng.random(shape).astype(np.float32)
        x = rng.random((2, *shape)).astype(np.float32)
        corners = _reference_corners(shape, side, count)
        batches = _validation_batches(y, x=x, side=side, count=count)
        assert len(batches) == 2
        xs = np.concatenate([b[0] for b in batches])
        ys = np.concatenate([b[1] for b in batches])
        assert len(xs) == len(corners) == len(ys)
        assert len(batches[0][0]) == len(corners) // 2
        for (r, c), xi, yi in zip(corners, xs, ys, strict=True):
            np.testing.assert_array_equal(xi, x[:, r : r + side, c : c + side])
            if labels:
                assert yi.dtype == np.int64 and yi.shape == (side, side)
                np.testing.assert_array_equal(yi, y[r : r + side, c : c + side])
            else:
                assert yi.dtype == np.float32 and yi.shape == (1, side, side)
                np.testing.assert_array_equal(yi[0], y[r : r + side, c : c + side])


def test_validation_batches_keep_the_super_resolution_crops():
    y = np.random.default_rng(1).random((1024, 1024)).astype(np.float32)
    batches = _validation_batches(y, TEM_DEGRADATION)
    targets = np.concatenate([t for _, t in batches])[:, 0]
    expected = _reference_corners(y.shape, 256, 8)
    assert len(targets) == 8
    for (r, c), t in zip(expected, targets, strict=True):
        np.testing.assert_array_equal(t, y[r : r + 256, c : c + 256])


@pytest.mark.parametrize(("kwargs", "match"), [
    ({}, "exactly one of degradation"),
    ({"degradation": TEM_DEGRADATION, "x": np.zeros((1, 64, 64))}, "exactly one of degradation"),
    ({"x": np.zeros((1, 64, 32))}, r"x must have shape \(C, 64, 64\)"),
    ({"x": np.zeros((1, 64, 64)), "side": 48}, "at least two 48 x 48 crops"),
])
def test_validation_batches_name_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _validation_batches(np.zeros((64, 64), np.float32), **kwargs)


def test_real_data_recipes_validate_except_the_mask_network():
    for name, recipe in RECIPES.items():
        expected = recipe.real_data and recipe.task != "tem-mask" and (
            recipe.task != "tem-sr" or recipe.degradation is not None
        )
        assert bool(recipe.validate_every) == expected, name


def _fake_qpi(rows=384):
    """QPI data whose phase holds its column index (so a patch tells where it came from)."""
    rng = np.random.default_rng(0)
    cols = np.arange(2000, dtype=np.float32)
    phase = np.broadcast_to(cols / 2000 * 4.0 - 1.0, (rows, 2000)).copy()
    return {"r1": rng.random((rows, 2000)).astype(np.float32),
            "r2": rng.random((rows, 2000)).astype(np.float32), "phase": phase}


def _column_of(y):
    return np.rint((y * 5.0 - 1.5 + 1.0) / 4.0 * 2000).astype(int)


def test_qpi_trains_on_columns_0_799_and_validates_on_800_999(monkeypatch):
    monkeypatch.setattr(_recipes, "_qpi", lambda root: _fake_qpi())
    recipe = dataclasses.replace(RECIPES["qpi-dpc-quantile"], validate_every=100)
    sampler, fitted = _sampler(recipe, root=None)
    seen = np.concatenate([
        _column_of(sampler.sample(np.random.default_rng([3, i]), 8)[1]).ravel()
        for i in range(40)
    ])
    assert seen.min() >= 0 and seen.max() <= 799
    assert seen.max() > 700  # the whole of 0-799 is drawn from
    targets = np.concatenate([t for _, t in fitted["validation"]])
    cols = _column_of(targets)
    assert cols.min() == 800 and cols.max() == 991
    assert {"normalization", "baseline_gain", "baseline_offset"} <= set(fitted)


def _fake_em(slices, root, what=("raw",)):
    """VNC-like slices whose raw value is the slice number / 20 (membranes: a stripe)."""
    n = len(slices)
    out = {"raw": np.stack([np.full((512, 512), s / 20, np.float32) for s in slices])}
    if "membranes" in what:
        stripe = (np.arange(512) % 16 < 3)[None, :].repeat(512, 0)
        out["membranes"] = np.stack([stripe] * n)
        out["raw"] = out["raw"] - 0.02 * out["membranes"]
    return out


def test_segmentation_trains_on_slices_0_12_and_validates_on_13(monkeypatch):
    monkeypatch.setattr(_recipes, "_em", _fake_em)
    recipe = dataclasses.replace(RECIPES["tem-membrane-seg"], validate_every=100)
    sampler, fitted = _sampler(recipe, root=None)
    x = np.concatenate([sampler.sample(np.random.default_rng([1, i]), 8)[0] for i in range(40)])
    slices = np.unique(np.rint(x.max(axis=(1, 2, 3)) * 20).astype(int))
    assert set(slices.tolist()) <= set(range(13)) and len(slices) > 6
    (x0, y0), (x1, y1) = fitted["validation"]
    assert x0.shape == (2, 1, 256, 256) and y0.shape == (2, 256, 256) and y0.dtype == np.int64
    assert np.allclose(np.concatenate([x0, x1]).max(axis=(1, 2, 3)), 13 / 20)
    assert "baseline_threshold" in fitted


def test_learning_curve_joins_a_resumed_run(tmp_path):
    curve = _LearningCurve(tmp_path, resume=False)
    for step in range(1, 7):
        curve.see({"phase": "train", "step": step, "loss": float(step), "seconds": step / 10})
        if step % 2 == 0:
            curve.see({"phase": "validate", "step": step, "val_loss": 10.0 - step})
    # interrupted after step 5: the resumed run starts from the step 4 checkpoint
    again = _LearningCurve(tmp_path, resume=True)
    assert again.seconds_before == pytest.approx(0.6)
    again.see({"phase": "train", "step": 5, "loss": 50.0, "seconds": 0.1, "resumed_from": 4})
    again.see({"phase": "train", "step": 6, "loss": 70.0, "seconds": 0.2})
    again.see({"phase": "validate", "step": 6, "val_loss": 1.0})
    summary = again.summary()
    assert summary["curve"] == [[2, 8.0], [4, 6.0], [6, 1.0]]
    assert summary["train_curve"] == [[2, 1.5], [4, 3.5], [6, 60.0]]
    assert summary["best_step"] == 6 and "resumed" in summary["note"]
    fresh = _LearningCurve(tmp_path, resume=False)  # without resume the saved curve is ignored
    assert fresh.validation == [] and fresh.seconds_before == 0.0


def test_qpi_recipe_card_shows_both_curves_after_a_resume(monkeypatch, tmp_path):
    monkeypatch.setattr(_recipes, "_qpi", lambda root: _fake_qpi())
    tiny = dataclasses.replace(
        RECIPES["qpi-dpc-quantile"], network={**RECIPES["qpi-dpc-quantile"].network,
                                              "depth": 1, "base_channels": 2},
        patch=32, batch_size=2, validate_every=2,
    )
    monkeypatch.setitem(RECIPES, "qpi-dpc-quantile", tiny)
    out, ckpt = tmp_path / "qpi", tmp_path / "ckpt"
    job = _recipes.run_recipe("qpi-dpc-quantile", output=out, steps=6, checkpoint_dir=ckpt,
                              evaluate=False)
    for event in job:  # cancel after the first validation
        if event.get("phase") == "validate":
            break
    job.close()
    path = run_to_end(_recipes.run_recipe("qpi-dpc-quantile", output=out, steps=6,
                                          checkpoint_dir=ckpt, resume=True, evaluate=False))
    spec = json.loads((path / "model.json").read_text())
    validation = spec["card"]["training"]["validation"]
    assert [s for s, _ in validation["curve"]] == [2, 4, 6]
    assert [s for s, _ in validation["train_curve"]] == [2, 4, 6]
    assert validation["columns"] == [800, 1000]
    assert validation["best_step"] in (2, 4, 6)
    assert spec["training_data"]["patches_from"]["columns"] == [0, 800]
    assert "columns 800-999" in spec["training_data"]["validation"]
    readme = model_card_markdown(spec)
    assert "| step | training loss | validation loss |" in readme
    assert "validation on columns [800, 1000]" in readme


def test_a_recipe_with_spread_sigma_ships_it_on_the_trained_weights(monkeypatch, tmp_path):
    """Training runs without the smoothing; the saved bundle carries it (kwargs and halo),
    the card's training network is what was trained, and the weights are the trained ones."""
    from napari_im2im_uq.models import load_model

    tiny = dataclasses.replace(
        RECIPES["synthetic-sr4x-quantile"],
        network={"architecture": "srnet2d", "channels": 4, "n_blocks": 1, "scale_factor": 4},
        spread_sigma=1.5,
    )
    monkeypatch.setitem(RECIPES, "synthetic-sr4x-quantile", tiny)
    path = run_to_end(_recipes.run_recipe("synthetic-sr4x-quantile", output=tmp_path / "m",
                                          steps=3, checkpoint_dir=tmp_path / "c",
                                          evaluate=False))
    model = load_model(path)
    spec = json.loads((path / "model.json").read_text())
    assert spec["kwargs"]["spread_sigma"] == 1.5 and model.network.config["spread_sigma"] == 1.5
    assert spec["halo"] == model.network.halo == 5 + 2
    assert "spread_sigma" not in spec["card"]["training"]["network"]
    plain = dataclasses.replace(tiny, spread_sigma=0.0)
    monkeypatch.setitem(RECIPES, "synthetic-sr4x-quantile", plain)
    path0 = run_to_end(_recipes.run_recipe("synthetic-sr4x-quantile", output=tmp_path / "p",
                                           steps=3, checkpoint_dir=tmp_path / "c0",
                                           evaluate=False))
    same = load_model(path0).network.state_dict()
    for key, value in model.network.state_dict().items():
        assert torch.equal(value, same[key]), key
