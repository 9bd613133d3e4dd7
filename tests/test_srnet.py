"""SRNet2d: the super-resolution network working at the input resolution."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from napari_im2im_uq.models import build_network, head_channels, load_model, save_model
from napari_im2im_uq.models._errors import BundleError
from napari_im2im_uq.models._spec import SRNET_DEFAULTS, check_kwargs, parameter_count
from napari_im2im_uq.models._srnet import SRNet2d

HEADS = [("quantile", {}), ("residual", {}), ("gaussian", {}), ("point", {}),
         ("softmax", {"bins": 8, "skip": "bins"})]


def test_defaults_match_the_signature():
    params = inspect.signature(SRNet2d).parameters
    assert {k: p.default for k, p in params.items()} == SRNET_DEFAULTS


@pytest.mark.parametrize(("heuristic", "extra"), HEADS)
@pytest.mark.parametrize("scale", [2, 4])
def test_shapes_and_parameter_count_for_each_head(heuristic, extra, scale):
    net = build_network(heuristic, architecture="srnet2d", channels=6, n_blocks=2,
                        scale_factor=scale, **extra)
    out = net(torch.zeros(2, 1, 7, 9))
    bins = extra.get("bins")
    assert out.shape == (2, head_channels(heuristic, bins=bins), 7 * scale, 9 * scale)
    count = sum(t.numel() for t in net.state_dict().values())
    assert parameter_count("srnet2d", net.config) == (count, 0)


def test_zoo_size_is_cpu_sized():
    floats, _ = parameter_count("srnet2d", {"out_channels": 3, "channels": 32, "n_blocks": 8})
    assert 100_000 <= floats <= 300_000
    assert 2 * floats < 20e6  # float16 bundle well under 20 MB


def test_untrained_point_is_close_to_bicubic():
    torch.manual_seed(0)
    net = build_network("quantile", architecture="srnet2d", channels=8, n_blocks=2).eval()
    x = torch.rand(1, 1, 16, 16)
    bicubic = torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic",
                                              align_corners=False)
    with torch.no_grad():
        point = net(x)[:, :1]
    assert float((point - bicubic).abs().mean()) < 0.05 * float(bicubic.abs().mean())


def test_bins_skip_puts_the_mode_at_the_upsampled_input():
    net = build_network("softmax", architecture="srnet2d", bins=11, skip="bins", channels=4,
                        n_blocks=1, scale_factor=1).eval()
    with torch.no_grad():
        net.tail.weight.zero_()
        x = torch.full((1, 1, 5, 5), 0.3)
        mode = net(x).argmax(dim=1)
    assert bool((mode == 3).all())


def test_receptive_field_is_the_halo():
    torch.manual_seed(1)
    net = SRNet2d(out_channels=1, channels=4, n_blocks=3, scale_factor=2).eval()
    x = torch.zeros(1, 1, 41, 41)
    x.requires_grad_(True)
    net(x)[0, 0, 40, 40].backward()  # output pixel over input pixel 20
    rows, cols = np.nonzero(x.grad[0, 0].numpy())
    reach = max(np.abs(rows - 20).max(), np.abs(cols - 20).max())
    assert reach <= net.halo


def test_bundle_round_trip_and_bounds(tmp_path):
    net = build_network("residual", architecture="srnet2d", channels=4, n_blocks=1,
                        scale_factor=2)
    path = save_model(net, tmp_path / "m", spec={"heuristic": "residual"}, half=True)
    model = load_model(path)
    out = model(np.random.default_rng(0).random((10, 13)).astype(np.float32))
    assert out["prediction"].shape == (20, 26)
    assert model.divisor == 1 and model.halo == net.halo
    with pytest.raises(BundleError, match=r"kwargs\['n_blocks'\] must be an integer"):
        check_kwargs("srnet2d", {"n_blocks": 1000})
    with pytest.raises(BundleError, match="unknown argument 'depth'"):
        check_kwargs("srnet2d", {"depth": 3})
    with pytest.raises(BundleError, match=r"kwargs\['skip'\] must be one of"):
        check_kwargs("srnet2d", {"skip": "cubic"})
    with pytest.raises(BundleError, match="parameters; a bundle may have at most"):
        check_kwargs("srnet2d", {"channels": 256, "out_channels": 1024, "scale_factor": 16})


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"skip": "x"}, "skip must be one of"),
    ({"skip": "bins", "out_channels": 1}, "skip='bins' needs out_channels >= 2"),
    ({"channels": 0}, "channels"),
])
def test_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SRNet2d(**kwargs)


# ----------------------------------------------------------------- the TEM SR recipe's data
def test_patch_degradation_is_fresh_per_patch_and_reproducible():
    from napari_im2im_uq.data import degrade_tem
    from napari_im2im_uq.training._recipes import _PatchDegradation
    from napari_im2im_uq.training._recipes_tem import TEM_DEGRADATION

    degrade = _PatchDegradation(TEM_DEGRADATION)
    rng = np.random.default_rng(0)
    a = rng.random((1, 32, 32)).astype(np.float32)
    b = rng.random((1, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(degrade(a), degrade(a))  # a resumed run sees the same pair
    noise_a = degrade(a) - degrade_tem(a)
    noise_b = degrade(b) - degrade_tem(b)
    assert degrade(a).shape == (1, 8, 8)
    assert not np.allclose(noise_a, noise_b)
    assert 0.02 < float(np.std(noise_a)) < 0.08  # about sqrt(I / 200) for I ~ 0.5


def test_validation_batches_are_fixed_crops_of_the_validation_slice():
    from napari_im2im_uq.training._recipes import _validation_batches
    from napari_im2im_uq.training._recipes_tem import TEM_DEGRADATION

    y = np.random.default_rng(1).random((1024, 1024)).astype(np.float32)
    first = _validation_batches(y, TEM_DEGRADATION)
    again = _validation_batches(y, TEM_DEGRADATION)
    assert [(x.shape, t.shape) for x, t in first] == [((4, 1, 64, 64), (4, 1, 256, 256))] * 2
    for (x1, t1), (x2, t2) in zip(first, again, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(t1, t2)


def test_tem_sr_recipes_hold_out_the_test_slices():
    from napari_im2im_uq.training._recipes import RECIPES
    from napari_im2im_uq.training._recipes_tem import _SR_TRAIN, _SR_VALIDATION

    assert set(_SR_TRAIN) | {_SR_VALIDATION} == set(range(14))
    recipe = RECIPES["tem-sr4x-quantile"]
    assert recipe.network["architecture"] == "srnet2d"
    assert recipe.degradation["mode"] == "area" and recipe.validate_every
