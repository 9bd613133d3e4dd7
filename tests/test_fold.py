"""Tests of models._fold: the inference copy computes the network's function to float
rounding, is made once, and is made again whenever the network changes."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from napari_im2im_uq.models import Im2ImModel, build_network  # noqa: E402
from napari_im2im_uq.models._fold import fold_network, inference_network  # noqa: E402


def _randomise(net: nn.Module, seed: int) -> nn.Module:
    """Random weights and batch-norm statistics (as a trained network's), eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 2.0 + 0.1)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return net.eval()


def _random_network(seed: int) -> nn.Module:
    rng = np.random.default_rng(seed)
    if rng.random() < 0.25:
        kw = {"architecture": "srnet2d", "channels": int(rng.choice([4, 8])),
              "n_blocks": int(rng.integers(0, 3)), "scale_factor": int(rng.choice([1, 2, 4]))}
    else:
        kw = {"depth": int(rng.integers(1, 4)), "base_channels": int(rng.choice([2, 4, 8])),
              "norm": str(rng.choice(["batch", "batch", "none", "group"])),
              "upsampling": str(rng.choice(["transpose", "bilinear"])),
              "scale_factor": int(rng.choice([1, 2]))}
    heuristic = str(rng.choice(["quantile", "segmentation"]))
    extra = {"n_classes": 3} if heuristic == "segmentation" else {}
    return _randomise(build_network(heuristic, **kw, **extra), seed)


@pytest.mark.parametrize("seed", range(40))
def test_folded_equals_network_to_float_rounding(seed):
    torch.manual_seed(seed)
    net = _random_network(seed)
    folded = fold_network(net)
    div = getattr(net, "divisor", 1)
    x = torch.rand(2, 1, 4 * div + div * (seed % 3), 5 * div)
    with torch.no_grad():
        want, got = net(x), folded(x)
    assert got.shape == want.shape
    scale = float(want.abs().max()) + 1.0
    # float32 rounding of a few dozen layers: relative 1e-5 of the output's magnitude.
    assert float((got - want).abs().max()) <= 1e-5 * scale
    assert not any(isinstance(m, nn.BatchNorm2d | nn.ConvTranspose2d) for m in folded.modules())


def test_fold_keeps_the_network_and_modules_it_cannot_fold():
    net = _randomise(build_network("quantile", depth=2, base_channels=4), 0)
    net.encoders[0].insert(3, nn.Dropout2d(0.5))  # conv, bn, relu, DROPOUT, conv, bn, relu
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded = fold_network(net)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert sum(isinstance(m, nn.Dropout2d) for m in folded.modules()) == 1
    net.encoders[0][3].train()  # MC dropout: dropout on, batch norm in eval mode
    folded = inference_network(net)
    assert folded is not net and folded.encoders[0][3].training
    with pytest.raises(TypeError, match="network must be a torch.nn.Module; got int"):
        fold_network(3)


def test_batch_norm_in_training_mode_runs_unfolded():
    net = build_network("quantile", depth=1, base_channels=2).train()
    assert inference_network(net) is net
    net.eval()
    assert inference_network(net) is not net


def _check_fresh(model: Im2ImModel, x: torch.Tensor) -> None:
    """The model's prediction equals a fold made now from the network as it is."""
    with torch.no_grad():
        want = fold_network(model.network)(model.normalize_input(x))
    got = model.predict_tensor(x)["probabilities"]
    assert torch.equal(got, torch.softmax(want, dim=1))


def test_cache_made_once_and_invalidated_by_any_change():
    net = _randomise(build_network("segmentation", n_classes=2, depth=2, base_channels=4), 1)
    model = Im2ImModel(net, {"heuristic": "segmentation"})
    x = torch.rand(1, 1, 16, 16)
    first = inference_network(net)
    assert inference_network(net) is first
    _check_fresh(model, x)
    with torch.no_grad():  # in place, as an optimizer step does
        net.encoders[0][0].weight.mul_(1.5)
    assert inference_network(net) is not first
    _check_fresh(model, x)
    second = inference_network(net)
    with torch.no_grad():  # a buffer: batch-norm statistics updated in place
        net.encoders[0][1].running_var.add_(1.0)
    assert inference_network(net) is not second
    _check_fresh(model, x)
    third = inference_network(net)
    other = _randomise(build_network("segmentation", n_classes=2, depth=2, base_channels=4), 2)
    net.load_state_dict(other.state_dict())
    assert inference_network(net) is not third
    _check_fresh(model, x)
    fourth = inference_network(net)
    net.head = nn.Conv2d(4, 2, 1)  # a module replaced
    assert inference_network(net) is not fourth
    _check_fresh(model, x)


def test_optimizer_steps_are_seen():
    net = _randomise(build_network("quantile", depth=1, base_channels=2), 3)
    model = Im2ImModel(net, {"heuristic": "quantile"})
    x = torch.rand(2, 1, 8, 8)
    before = model.predict_tensor(x)["prediction"].clone()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(2):
        net.train()
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()
        net.eval()
        with torch.no_grad():
            want = fold_network(net)(model.normalize_input(x))[:, :1]
        got = model.predict_tensor(x)["prediction"]
        assert torch.equal(got, want)
    assert not torch.equal(got, before)


def test_unfolded_prediction_is_the_network_itself():
    net = _randomise(build_network("quantile", depth=2, base_channels=4), 4)
    model = Im2ImModel(net, {"heuristic": "quantile"})
    x = torch.rand(1, 1, 12, 16)
    with torch.no_grad():
        raw = net(model.normalize_input(x))
    assert torch.equal(model.predict_tensor(x, fold=False)["prediction"], raw[:, :1])
    folded = model.predict_tensor(x)["prediction"]
    assert float((folded - raw[:, :1]).abs().max()) <= 1e-5 * (float(raw.abs().max()) + 1)


def test_cache_does_not_keep_the_network_alive():
    import gc
    import weakref

    net = build_network("quantile", depth=1, base_channels=2).eval()
    inference_network(net)
    ref = weakref.ref(net)
    del net
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize("seed", range(4))
def test_folded_rounding_does_not_depend_on_threads_or_tile_position(seed):
    """Bit for bit: aligned windows of a plane, with 1 or 2 torch threads.

    The zoo's U-Net shape (depth 3, 16 channels, transposed up-sampling) on windows of at
    least 160 pixels: oneDNN's 3 x 3 convolutions round differently on much smaller
    windows, folded or not, and torch's bilinear up-sampling with the position.
    """
    rng = np.random.default_rng(seed)
    net = _randomise(build_network("segmentation", n_classes=2, depth=3, base_channels=16), seed)
    model = Im2ImModel(net, {"heuristic": "segmentation"})
    x = torch.from_numpy(rng.random((1, 1, 208, 264), dtype=np.float32))
    halo, before = model.halo, torch.get_num_threads()
    try:
        runs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            runs.append(model.predict_tensor(x)["probabilities"])
        assert torch.equal(runs[0], runs[1])
        for r0, c0, rows, cols in [(48, 64, 160, 200), (0, 0, 160, 208), (40, 56, 168, 200)]:
            part = model.predict_tensor(x[..., r0 : r0 + rows, c0 : c0 + cols])["probabilities"]
            inner = part[..., halo : rows - halo, halo : cols - halo]
            want = runs[1][..., r0 + halo : r0 + rows - halo, c0 + halo : c0 + cols - halo]
            assert inner.numel() > 0 and torch.equal(inner, want)
    finally:
        torch.set_num_threads(before)
