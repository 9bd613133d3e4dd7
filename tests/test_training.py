"""Tests of napari_im2im_uq.training: losses, sampler, loop, checkpoints, CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_im2im_uq.models import STD_FLOOR, load_model  # noqa: E402
from napari_im2im_uq.training import (  # noqa: E402
    PatchSampler,
    fit,
    gaussian_nll_loss,
    heuristic_loss,
    init_network,
    learning_rate,
    load_checkpoint,
    mask_loss,
    nearest_downsample,
    pinball_loss,
    quantile_loss,
    residual_loss,
    segmentation_loss,
    softmax_bin_loss,
    softmax_bin_targets,
    ssim,
    train_network,
)

LN2 = math.log(2.0)


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny networks: one thread avoids oversubscribing a shared CPU
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def t(values, shape=(1, 1, 1, -1)):
    return torch.tensor(values, dtype=torch.float32).reshape(shape)


# -- losses, against hand-computed values -------------------------------------------------------
def test_pinball_by_hand():
    q = torch.tensor([0.0, 0.0, 1.0, 2.0])
    y = torch.tensor([1.0, -1.0, 1.0, 0.0])
    # 0.9 * 1, 0.1 * 1, 0, 0.1 * 2
    assert pinball_loss(q, y, 0.9).item() == pytest.approx((0.9 + 0.1 + 0.0 + 0.2) / 4)


def test_pinball_minimiser_is_the_quantile():
    y = torch.linspace(0, 1, 1001)
    grid = torch.linspace(0, 1, 201)
    losses = [pinball_loss(torch.full_like(y, float(g)), y, 0.9).item() for g in grid]
    assert float(grid[int(np.argmin(losses))]) == pytest.approx(0.9, abs=0.006)


def test_quantile_loss_by_hand():
    raw = torch.zeros(1, 3, 1, 1)  # point 0, lower -ln2, upper +ln2
    y = torch.ones(1, 1, 1, 1)
    expected = 0.05 * (1 + LN2) + 0.95 * (1 - LN2) + 1.0  # + l2 point loss
    assert quantile_loss(raw, y).item() == pytest.approx(expected, rel=1e-6)
    expected_l1 = 0.05 * (1 + LN2) + 0.95 * (1 - LN2) + 0.5 * 1.0
    got = quantile_loss(raw, y, point_loss="l1", point_weight=0.5).item()
    assert got == pytest.approx(expected_l1, rel=1e-6)
    # other levels
    expected_q = 0.2 * (1 + LN2) + 0.8 * (1 - LN2)
    got = quantile_loss(raw, y, quantiles=(0.2, 0.8), point_weight=0).item()
    assert got == pytest.approx(expected_q, rel=1e-6)


def test_residual_loss_by_hand_and_detached_target():
    raw = torch.tensor([0.5, 0.0]).view(1, 2, 1, 1).requires_grad_(True)
    y = torch.full((1, 1, 1, 1), 2.0)
    loss = residual_loss(raw, y)
    assert loss.item() == pytest.approx((LN2 - 1.5) ** 2 + 1.5**2, rel=1e-6)
    loss.backward()
    # d/d point of the l2 point loss only: 2 * (0.5 - 2); the residual term is detached
    assert raw.grad[0, 0, 0, 0].item() == pytest.approx(2 * (0.5 - 2.0), rel=1e-6)


def test_gaussian_nll_by_hand_and_floor():
    std_raw = math.log(math.exp(2.0) - 1.0)  # softplus^-1(2)
    raw = torch.tensor([0.0, std_raw]).view(1, 2, 1, 1)
    y = torch.ones(1, 1, 1, 1)
    v = (2.0 + STD_FLOOR) ** 2
    assert gaussian_nll_loss(raw, y).item() == pytest.approx(0.5 * (math.log(v) + 1 / v), rel=1e-5)
    tiny = torch.tensor([0.0, -60.0]).view(1, 2, 1, 1)  # std = STD_FLOOR: var 1e-8 < floor
    got = gaussian_nll_loss(tiny, y, var_floor=1e-6).item()
    assert math.isfinite(got)
    assert got == pytest.approx(0.5 * (math.log(1e-6) + 1 / 1e-6), rel=1e-5)
    with_point = gaussian_nll_loss(raw, y, point_weight=2.0).item()
    assert with_point == pytest.approx(0.5 * (math.log(v) + 1 / v) + 2.0, rel=1e-5)


def test_softmax_bins_and_cross_entropy_by_hand():
    assert softmax_bin_targets(torch.tensor([0.0, 0.49, 0.51, 1.0, 2.0]), 3).tolist() == [
        0, 1, 1, 2, 2,
    ]
    logits = [1.0, 2.0, 0.5]
    raw = torch.tensor(logits).view(1, 3, 1, 1)
    y = torch.full((1, 1, 1, 1), 0.5)  # bin 1
    lse = math.log(sum(math.exp(v) for v in logits))
    assert softmax_bin_loss(raw, y).item() == pytest.approx(lse - 2.0, rel=1e-6)
    assert heuristic_loss(raw, y, "softmax").item() == pytest.approx(lse - 2.0, rel=1e-6)


def test_segmentation_loss_weighted_by_hand():
    raw = torch.tensor([[2.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 2)  # pixel0 (2,0), pixel1 (0,1)
    labels = torch.tensor([[[0, 0]]])
    ce0 = math.log(math.exp(2) + 1) - 2
    ce1 = math.log(1 + math.e) - 0
    assert segmentation_loss(raw, labels).item() == pytest.approx((ce0 + ce1) / 2, rel=1e-6)
    labels = torch.tensor([[[0, 1]]])
    ce1b = math.log(1 + math.e) - 1
    got = segmentation_loss(raw, labels, class_weights=[1.0, 3.0]).item()
    assert got == pytest.approx((1 * ce0 + 3 * ce1b) / 4, rel=1e-6)
    with pytest.raises(ValueError, match="class_weights must be 2"):
        segmentation_loss(raw, labels, class_weights=[1.0])
    with pytest.raises(ValueError, match="labels must be an integer tensor"):
        segmentation_loss(raw, labels.float())


def test_ssim_matches_skimage():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    a = rng.random((33, 40))
    b = np.clip(a + 0.2 * rng.standard_normal(a.shape), 0, 1)
    ref = structural_similarity(
        a, b, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    got = ssim(torch.tensor(a)[None, None], torch.tensor(b)[None, None]).item()
    assert got == pytest.approx(ref, abs=1e-5)
    assert ssim(torch.tensor(a)[None, None], torch.tensor(a)[None, None]).item() == pytest.approx(1)


def test_ssim_is_differentiable():
    a = torch.rand(1, 1, 16, 16, requires_grad=True)
    b = torch.rand(1, 1, 16, 16)
    (1 - ssim(a, b)).backward()
    assert torch.isfinite(a.grad).all()
    assert a.grad.abs().sum() > 0


def test_mask_loss_by_hand():
    m = t([1.0, 0.5, 0.0, 0.25])
    y = t([1.0, 1.0, 1.0, 0.0])
    yhat = t([0.5, 0.0, 0.0, 1.0])
    size = (0 + 0.25 + 1 + 0.5625) / 4
    l1 = (0.5 + 0.5 + 0 + 0.25) / 4
    l2 = (0.25 + 0.25 + 0 + 0.0625) / 4
    assert mask_loss(m, y, yhat, mu=2.0).item() == pytest.approx(size + 2 * l1, rel=1e-6)
    assert mask_loss(m, y, yhat, mu=3.0, distance="l2").item() == pytest.approx(
        size + 3 * l2, rel=1e-6
    )
    img_y = torch.rand(1, 1, 16, 16)
    img_p = torch.rand(1, 1, 16, 16)
    ones = torch.ones(1, 1, 16, 16)
    got = mask_loss(ones, img_y, img_p, mu=1.0, distance="ssim").item()
    assert got == pytest.approx(1 - ssim(img_y, img_p).item(), rel=1e-6)


def test_mask_loss_gradient_and_heuristic_dispatch():
    raw = torch.zeros(1, 1, 2, 2, requires_grad=True)  # mask 0.5
    y = torch.ones(1, 1, 2, 2)
    x = torch.zeros(1, 2, 2, 2)  # [degraded input, prediction]; prediction 0
    loss = heuristic_loss(raw, y, "mask", inputs=x, mu=2.0)
    assert loss.item() == pytest.approx(0.25 + 2 * 0.5)
    with pytest.raises(ValueError, match="inputs is required"):
        heuristic_loss(raw, y, "mask")
    with pytest.raises(ValueError, match="distance must be one of"):
        mask_loss(torch.ones(1, 1, 2, 2), y, y, distance="lpips")


def test_loss_errors_name_the_argument():
    shape_msg = r"target must have shape \(1, 1, 2, 2\); got \(1, 1, 3, 3\)"
    with pytest.raises(ValueError, match=shape_msg):
        quantile_loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 1, 3, 3))
    with pytest.raises(ValueError, match="quantiles must satisfy"):
        quantile_loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 1, 2, 2), quantiles=(0.9, 0.1))
    with pytest.raises(ValueError, match="point_loss must be one of"):
        quantile_loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 1, 2, 2), point_loss="huber")
    with pytest.raises(ValueError, match="var_floor must be a number > 0; got 0"):
        gaussian_nll_loss(torch.zeros(1, 2, 1, 1), torch.zeros(1, 1, 1, 1), var_floor=0)
    with pytest.raises(ValueError, match="level must be a number in"):
        pinball_loss(torch.zeros(2), torch.zeros(2), 1.5)
    with pytest.raises(ValueError, match="heuristic must be one of"):
        heuristic_loss(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), "lasso")


# -- sampler and schedule -------------------------------------------------------------------------
def test_sampler_keeps_input_and_target_aligned():
    rng = np.random.default_rng(0)
    hr = rng.random((64, 48)).astype(np.float32)
    sampler = PatchSampler(None, [hr], scale_factor=4, patch_shape=(4, 4),
                           degrade=nearest_downsample(4))
    x, y = sampler.sample(np.random.default_rng(1), 16)
    assert x.shape == (16, 1, 4, 4)
    assert y.shape == (16, 1, 16, 16)
    assert np.array_equal(x, y[:, :, ::4, ::4])
    # explicit inputs, two channels, flips and rotations applied alike
    inp = np.stack([hr, 1 - hr])
    lab = (hr > 0.5).astype(np.int64)
    sampler = PatchSampler([inp], [lab], patch_shape=(8, 8))
    x, y = sampler.sample(np.random.default_rng(2), 16)
    assert y.dtype == np.int64
    assert y.shape == (16, 8, 8)
    assert np.array_equal(x[:, 0] > 0.5, y.astype(bool))
    assert np.allclose(x[:, 1], 1 - x[:, 0])


def test_sampler_column_flips_only_keep_row_order():
    col = np.arange(32, dtype=np.float32)[:, None] * np.ones((1, 32), np.float32)  # rows 0..31
    sampler = PatchSampler([col[None]], [col], patch_shape=(8, 8), augment="cols")
    x, _ = sampler.sample(np.random.default_rng(0), 32)
    assert (np.diff(x[:, 0], axis=1) == 1).all()  # rows still increase downwards


def test_sampler_errors():
    with pytest.raises(ValueError, match=r"targets\[0\] must have shape \(8, 8\)"):
        PatchSampler([np.zeros((1, 4, 4))], [np.zeros((9, 9))], scale_factor=2, patch_shape=(2, 2))
    with pytest.raises(ValueError, match="augment must be one of"):
        PatchSampler([np.zeros((1, 4, 4))], [np.zeros((4, 4))], patch_shape=(2, 2), augment="x")
    with pytest.raises(ValueError, match="smaller than a target patch"):
        PatchSampler([np.zeros((1, 4, 4))], [np.zeros((4, 4))], patch_shape=(8, 8))


def test_learning_rate_schedules():
    assert learning_rate(0, lr=1.0, steps=10) == 1.0
    assert learning_rate(5, lr=1.0, steps=10) == pytest.approx(0.5)
    assert learning_rate(5, lr=1.0, steps=10, schedule="cosine", lr_min=0.2) == pytest.approx(0.6)
    assert learning_rate(7, lr=1.0, steps=9, schedule="step") == pytest.approx(0.01)
    assert learning_rate(7, lr=0.3, steps=9, schedule="constant") == 0.3
    with pytest.raises(ValueError, match="schedule must be one of"):
        learning_rate(0, lr=1.0, steps=10, schedule="linear")


# -- the loop ------------------------------------------------------------------------------------
def _noisy_pairs(seed=0, n=2, size=32, sigma=0.1):
    """Inputs x (smooth images) and targets y = x + sigma * N(0, 1): 5%/95% at x -/+ 1.645 sigma."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for _ in range(n):
        x = gaussian_filter(rng.random((size, size)), 2.0)
        x = ((x - x.min()) / (x.max() - x.min())).astype(np.float32)
        xs.append(x[None])
        ys.append((x + sigma * rng.standard_normal(x.shape)).astype(np.float32))
    return xs, ys


def test_quantile_training_learns_and_covers():
    xs, ys = _noisy_pairs(n=4, size=48)
    sampler = PatchSampler(xs, ys, patch_shape=(16, 16))
    net = init_network("quantile", seed=0, depth=1, base_channels=8)
    losses = []
    model = fit(net, sampler, heuristic="quantile", steps=120, batch_size=8, lr=1e-2,
                callback=lambda e: losses.append(e["loss"]))
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    tx, ty = _noisy_pairs(seed=7, n=1, size=64)
    out = model(tx[0][0])
    inside = np.mean((out["lower"] <= ty[0]) & (ty[0] <= out["upper"]))
    assert 0.75 <= inside <= 0.98, inside  # nominal 0.90, loose: short training


@pytest.mark.parametrize(
    ("heuristic", "kwargs"),
    [("residual", {}), ("gaussian", {}), ("softmax", {"bins": 8})],
)
def test_other_heads_learn(heuristic, kwargs):
    xs, ys = _noisy_pairs(n=2, size=32, sigma=0.05)
    ys = [np.clip(y, 0, 1) for y in ys]
    sampler = PatchSampler(xs, ys, patch_shape=(16, 16))
    net = init_network(heuristic, seed=1, depth=1, base_channels=8, **kwargs)
    losses = []
    fit(net, sampler, heuristic=heuristic, steps=50, batch_size=4, lr=1e-2,
        callback=lambda e: losses.append(e["loss"]))
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def test_segmentation_and_mask_learn():
    xs, ys = _noisy_pairs(n=2, size=32, sigma=0.0)
    labels = [(y > 0.5).astype(np.int64) for y in ys]
    net = init_network("segmentation", seed=0, n_classes=2, depth=1, base_channels=8)
    losses = []
    fit(net, PatchSampler(xs, labels, patch_shape=(16, 16)), heuristic="segmentation",
        steps=50, batch_size=4, lr=1e-2, callback=lambda e: losses.append(e["loss"]))
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])
    rng = np.random.default_rng(0)
    inputs = [np.stack([x[0], x[0] + 0.1 * rng.standard_normal(x[0].shape)]).astype(np.float32)
              for x in xs]
    net = init_network("mask", seed=0, in_channels=2, depth=1, base_channels=8)
    losses = []
    fit(net, PatchSampler(inputs, [x[0] for x in xs], patch_shape=(16, 16)), heuristic="mask",
        steps=50, batch_size=4, lr=1e-2, loss_options={"mu": 5.0},
        callback=lambda e: losses.append(e["loss"]))
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def _tiny_run(tmp_path=None, *, seed=0, steps=6, stop_after=None, resume=False, every=None):
    xs, ys = _noisy_pairs(n=2, size=32)
    sampler = PatchSampler(xs, ys, patch_shape=(16, 16))
    net = init_network("quantile", seed=seed, depth=2, base_channels=4)
    job = train_network(net, sampler, heuristic="quantile", steps=steps, batch_size=4, seed=seed,
                checkpoint_dir=tmp_path, checkpoint_every=every, resume=resume)
    events = []
    for event in job:
        events.append(event)
        if stop_after is not None and event["step"] == stop_after:
            job.close()
            break
    return net, events


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_same_seed_gives_bit_identical_weights():
    a, events = _tiny_run(seed=3)
    b, _ = _tiny_run(seed=3)
    c, _ = _tiny_run(seed=4)
    assert [e["step"] for e in events] == [1, 2, 3, 4, 5, 6]
    assert set(events[0]) >= {"step", "total", "loss", "lr"}
    assert _same(a, b)
    assert not _same(a, c)


def test_resume_equals_uninterrupted(tmp_path):
    full, _ = _tiny_run(tmp_path / "full", steps=6)
    _tiny_run(tmp_path / "split", steps=6, stop_after=3, every=3)
    assert load_checkpoint(tmp_path / "split", network=init_network(
        "quantile", depth=2, base_channels=4))["step"] == 3
    resumed, events = _tiny_run(tmp_path / "split", steps=6, resume=True, every=3)
    assert events[0]["step"] == 4
    assert events[0]["resumed_from"] == 3
    assert _same(full, resumed)
    names = sorted(p.name for p in (tmp_path / "split").iterdir())
    assert names == ["checkpoint.json", "optimizer.safetensors", "weights.safetensors"]
    record = json.loads((tmp_path / "split" / "checkpoint.json").read_text())
    assert record["step"] == 6


def test_checkpoint_is_never_silently_overwritten_or_mixed(tmp_path):
    _tiny_run(tmp_path, steps=2)
    with pytest.raises(FileExistsError, match="pass resume=True"):
        _tiny_run(tmp_path, steps=2)
    with pytest.raises(ValueError, match="was made with steps=2; this run has steps=5"):
        _tiny_run(tmp_path, steps=5, resume=True)
    (tmp_path / "optimizer.safetensors").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="does not match checkpoint.json"):
        _tiny_run(tmp_path, steps=2, resume=True)


def test_train_errors_name_the_argument():
    xs, ys = _noisy_pairs(n=1, size=16)
    sampler = PatchSampler(xs, ys, patch_shape=(8, 8))
    net = init_network("quantile", depth=1, base_channels=2)
    with pytest.raises(ValueError, match="steps must be an integer >= 1; got 0"):
        next(train_network(net, sampler, heuristic="quantile", steps=0))
    with pytest.raises(ValueError, match="sampler must be a PatchSampler"):
        next(train_network(net, (xs, ys), heuristic="quantile", steps=1))
    bad = PatchSampler(xs, [np.full_like(y, np.nan) for y in ys], patch_shape=(8, 8))
    with pytest.raises(FloatingPointError, match="loss became"):
        next(train_network(net, bad, heuristic="quantile", steps=1))


# -- CLI and laziness ----------------------------------------------------------------------------
def test_cli_train_tiny_recipe(tmp_path, capsys):
    from napari_im2im_uq.cli import main

    out = tmp_path / "demo"
    argv = ["train", "--recipe", "synthetic-sr4x-quantile", "--output", str(out), "--steps", "3"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "step 3/3" in printed
    assert "saved" in printed
    model = load_model(out)
    assert model.heuristic == "quantile"
    assert model.scale_factor == 4
    card = model.spec["card"]
    assert card["training"]["steps"] == 3
    assert "psnr_db" in card["held_out"]["baseline"]
    assert (out / "README.md").is_file()
    assert (tmp_path / "demo.checkpoint" / "checkpoint.json").is_file()
    # an existing bundle is not replaced without --overwrite
    assert main(argv) == 1
    assert "--overwrite" in capsys.readouterr().err
    # resuming a finished checkpoint re-saves the bundle without training further
    assert main([*argv, "--resume", "--overwrite", "--no-evaluate"]) == 0
    assert main(["train", "--list"]) == 0
    assert "tem-sr4x-quantile" in capsys.readouterr().out
    assert main(["train", "--recipe", "nope", "--output", str(out)]) == 2


def test_importing_training_does_not_import_torch():
    code = (
        "import sys, napari_im2im_uq.training, napari_im2im_uq.training._cli, "
        "napari_im2im_uq.cli as c; c.build_parser(); print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def test_validation_keeps_the_best_weights_and_resumes_exactly(tmp_path):
    from napari_im2im_uq.training._loop import _validation_loss

    xs, ys = _noisy_pairs(n=2, size=32)
    sampler = PatchSampler(xs[:1], ys[:1], patch_shape=(16, 16))
    batches = [(xs[1][None, :, :16, :16], ys[1][None, None, :16, :16]),
               (xs[1][None, :, 16:, 16:], ys[1][None, None, 16:, 16:])]

    def run(folder, stop_after=None, resume=False):
        net = init_network("quantile", seed=0, depth=1, base_channels=4)
        job = train_network(net, sampler, heuristic="quantile", steps=12, batch_size=4,
                            lr=0.05, validation=batches, validate_every=3, patience=3,
                            checkpoint_dir=folder, resume=resume)
        events = []
        try:
            while True:
                events.append(next(job))
                if events[-1]["step"] == stop_after:
                    job.close()
                    return None, events
        except StopIteration as stop:
            return stop.value, events

    model, events = run(tmp_path / "full")
    val = [e for e in events if e["phase"] == "validate"]
    assert [e["step"] for e in val] == [3, 6, 9, 12][:len(val)]
    best = min(val, key=lambda e: e["val_loss"])
    assert val[-1]["best_step"] == best["step"] != val[-1]["step"]  # the last is not the best
    # the returned weights are the best ones: their validation loss is the best one
    again = _validation_loss(model.network, batches, heuristic="quantile", loss_options={},
                             device=torch.device("cpu"), amp=False)
    assert again == pytest.approx(best["val_loss"], rel=1e-6)
    # cancelled after step 7 (between validations), then resumed: the same weights
    run(tmp_path / "split", stop_after=7)
    resumed, events2 = run(tmp_path / "split", resume=True)
    assert events2[0]["step"] == 8 and events2[0]["resumed_from"] == 7
    sa, sb = model.network.state_dict(), resumed.network.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # a callable validation, and patience without validation is refused
    seen = []
    net = init_network("quantile", seed=0, depth=1, base_channels=4)
    fit(net, sampler, heuristic="quantile", steps=4, batch_size=2,
        validation=lambda n: seen.append(n.training) or 1.0, validate_every=2)
    assert seen == [False, False]  # called in eval mode
    with pytest.raises(ValueError, match="patience needs validation"):
        fit(net, sampler, heuristic="quantile", steps=2, patience=2)
    with pytest.raises(ValueError, match="validation must be a callable"):
        fit(net, sampler, heuristic="quantile", steps=2, validation=[(np.zeros(3), 1)])
