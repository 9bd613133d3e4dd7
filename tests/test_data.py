"""Tests of napari_im2im_uq.data: EM tissue, TEM degradation, QPI optics, real-data readers."""

import numpy as np
import pytest
import scipy.fft
from scipy import ndimage

from napari_im2im_uq import data as d
from napari_im2im_uq.data import _readers

# ----------------------------------------------------------------------------- synthetic EM


@pytest.fixture(scope="module")
def tissue():
    return d.synthetic_em_tissue((192, 160), seed=3)


@pytest.fixture(scope="module")
def volume():
    return d.synthetic_em_tissue((3, 128, 128), seed=5)


def test_em_tissue_shapes_dtypes_ranges(tissue):
    assert set(tissue) >= {"image", "membranes", "mitochondria", "labels", "cells"}
    img = tissue["image"]
    assert img.shape == (192, 160)
    assert img.dtype == np.float32
    assert img.min() >= 0.0
    assert img.max() <= 1.0
    assert img.std() > 0.05
    assert tissue["membranes"].dtype == bool
    assert tissue["mitochondria"].dtype == bool
    assert tissue["labels"].dtype == np.uint8
    assert set(np.unique(tissue["labels"])) == {0, 1, 2}
    assert tissue["cells"].dtype == np.int32
    assert tissue["cells"].min() > 0


def test_em_labels_consistent_with_image(tissue):
    img, lab = tissue["image"], tissue["labels"]
    memb, mito = tissue["membranes"], tissue["mitochondria"]
    np.testing.assert_array_equal(lab == 1, memb)
    np.testing.assert_array_equal(lab == 2, mito)
    assert not (memb & mito).any()
    assert 0.05 < memb.mean() < 0.35
    assert 0.002 < mito.mean() < 0.2
    cyto = img[lab == 0].mean()
    assert img[memb].mean() < cyto - 0.2  # dark membranes
    assert img[mito].mean() < cyto - 0.1  # dark mitochondria
    # every mitochondrion lies inside one cell
    for cell in np.unique(tissue["cells"][mito]):
        assert (tissue["cells"][mito] == cell).sum() > 0


def test_em_membranes_follow_cell_boundaries(tissue):
    cells = tissue["cells"]
    change = np.zeros(cells.shape, bool)
    change[:, 1:] |= cells[:, 1:] != cells[:, :-1]
    change[1:, :] |= cells[1:, :] != cells[:-1, :]
    # almost every pixel where the cell changes is membrane (mitochondria never touch boundaries)
    assert tissue["membranes"][change].mean() > 0.95
    assert len(np.unique(cells)) >= 4


def test_em_reproducible_and_seed_dependent():
    a = d.synthetic_em_tissue((64, 64), seed=11)
    b = d.synthetic_em_tissue((64, 64), seed=11)
    c = d.synthetic_em_tissue((64, 64), seed=12)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["image"], c["image"])
    g = d.synthetic_em_tissue((64, 64), seed=np.random.default_rng(11))
    np.testing.assert_array_equal(g["labels"], a["labels"])


def test_em_options_change_the_output():
    clean = d.synthetic_em_tissue((96, 96), seed=0, noise=0.0, blur=0.0)
    noisy = d.synthetic_em_tissue((96, 96), seed=0, noise=0.1, blur=0.0)
    np.testing.assert_array_equal(clean["labels"], noisy["labels"])
    assert np.std(noisy["image"] - clean["image"]) > 0.05
    thin = d.synthetic_em_tissue((96, 96), seed=0, membrane_width=2.0)
    thick = d.synthetic_em_tissue((96, 96), seed=0, membrane_width=8.0)
    assert thick["membranes"].mean() > 2 * thin["membranes"].mean()
    few = d.synthetic_em_tissue((128, 128), seed=0, n_cells=4, n_mitochondria=0)
    many = d.synthetic_em_tissue((128, 128), seed=0, n_cells=30)
    assert len(np.unique(few["cells"])) < len(np.unique(many["cells"]))
    assert not few["mitochondria"].any()


def test_em_volume_planes_vary_slowly(volume):
    assert volume["image"].shape == (3, 128, 128)
    assert volume["labels"].shape == (3, 128, 128)
    m = volume["membranes"]
    other = d.synthetic_em_tissue((128, 128), seed=6)["membranes"]

    def iou(a, b):
        return (a & b).sum() / (a | b).sum()

    assert not np.array_equal(m[0], m[1])
    assert iou(m[0], m[1]) > 0.4
    assert iou(m[0], m[1]) > 2 * iou(m[0], other)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shape": (5,)}, "shape must be"),
        ({"shape": (8, 8)}, "rows and cols >= 16"),
        ({"membrane_width": 0}, "membrane_width must be"),
        ({"noise": -0.1}, "noise must be"),
        ({"n_cells": 0}, "n_cells must be"),
        ({"n_cells": 2.5}, "n_cells must be a finite integer"),
        ({"seed": "a"}, "seed must be"),
    ],
)
def test_em_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        d.synthetic_em_tissue(**{"shape": (32, 32), **kwargs})


# ----------------------------------------------------------------------------- TEM degradation


def test_degrade_nearest_is_every_kth_pixel(tissue):
    y = tissue["image"]
    before = y.copy()
    x = d.degrade_tem(y, factor=4, mode="nearest")
    np.testing.assert_array_equal(x, y[::4, ::4])
    assert x.dtype == y.dtype
    assert not np.shares_memory(x, y)
    np.testing.assert_array_equal(y, before)
    vol = np.random.default_rng(0).random((2, 16, 24))
    np.testing.assert_array_equal(d.degrade_tem(vol, factor=4, mode="nearest"),
                                  vol[:, ::4, ::4])
    u8 = (np.arange(64).reshape(8, 8)).astype(np.uint8)
    assert d.degrade_tem(u8, factor=2, mode="nearest").dtype == np.uint8


def test_degrade_area_is_block_mean():
    rng = np.random.default_rng(1)
    y = rng.random((3, 12, 8)).astype(np.float32)
    x = d.degrade_tem(y, factor=4, mode="area")
    expected = y.reshape(3, 3, 4, 2, 4).mean(axis=(2, 4))
    np.testing.assert_allclose(x, expected, rtol=1e-6)
    assert x.shape == (3, 3, 2)
    assert x.dtype == np.float32
    assert d.degrade_tem(np.ones((8, 8), np.uint8), factor=4, mode="area").dtype == np.float32


def test_degrade_crops_to_multiple_of_factor():
    y = np.arange(10 * 11, dtype=np.float64).reshape(10, 11)
    x = d.degrade_tem(y, factor=4, mode="nearest")
    assert x.shape == (2, 2)
    np.testing.assert_array_equal(x, y[:8:4, :8:4])
    np.testing.assert_allclose(
        d.degrade_tem(y, factor=4, mode="area"), y[:8, :8].reshape(2, 4, 2, 4).mean(axis=(1, 3))
    )


def test_degrade_noise_is_seeded():
    y = np.full((64, 64), 0.5, np.float32)
    a = d.degrade_tem(y, factor=2, noise_std=0.1, seed=4)
    b = d.degrade_tem(y, factor=2, noise_std=0.1, seed=4)
    np.testing.assert_array_equal(a, b)
    assert abs(float(np.std(a - 0.5)) - 0.1) < 0.01
    assert not np.array_equal(a, d.degrade_tem(y, factor=2, noise_std=0.1, seed=5))


def test_degrade_default_is_binning():
    y = np.random.default_rng(2).random((16, 16))
    np.testing.assert_array_equal(d.degrade_tem(y), d.degrade_tem(y, factor=4, mode="area"))


def test_binning_preserves_the_mean():
    rng = np.random.default_rng(3)
    for _ in range(20):
        f = int(rng.integers(1, 6))
        y = rng.random((f * int(rng.integers(1, 9)), f * int(rng.integers(1, 9))))
        assert abs(d.degrade_tem(y, factor=f).mean() - y.mean()) < 1e-12


@pytest.mark.parametrize(("photons", "read_noise"), [(200.0, 2.0), (100.0, 0.0), (1000.0, 10.0)])
def test_shot_noise_matches_the_poisson_gaussian_model(photons, read_noise):
    # many seeds: per intensity, the mean and variance over 40 seeds x 1024 pixels match
    # I and I / photons + (read_noise / photons)**2 (intensities away from the clip at 0 and 1)
    levels = np.array([0.2, 0.5, 0.7])
    y = np.repeat(levels, 128 * 128).reshape(3, 128, 128)
    samples = np.stack([
        d.degrade_tem(y, factor=4, photons=photons, read_noise=read_noise, seed=s)
        for s in range(40)
    ])  # (seeds, 3, 32, 32)
    for k, level in enumerate(levels):
        values = samples[:, k].ravel()
        var = level / photons + (read_noise / photons) ** 2
        n = values.size
        # tolerance: 5 standard errors of the mean and of the variance (kurtosis ~ 3)
        assert abs(values.mean() - level) < 5 * np.sqrt(var / n)
        assert abs(values.var() / var - 1) < 5 * np.sqrt(2 / n)


def test_shot_noise_is_seeded_clipped_and_leaves_the_input():
    y = np.full((64, 64), 0.99, np.float32)
    before = y.copy()
    a = d.degrade_tem(y, photons=20.0, read_noise=1.0, seed=7)
    np.testing.assert_array_equal(a, d.degrade_tem(y, photons=20.0, read_noise=1.0, seed=7))
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1 and (a == 1).any()
    np.testing.assert_array_equal(y, before)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((np.zeros((8, 8)),), {"photons": 0}, "photons must be"),
        ((np.zeros((8, 8)),), {"photons": 10, "read_noise": -1}, "read_noise must be"),
        ((np.zeros((8, 8)),), {"read_noise": 2.0}, "read_noise is in counts and needs photons"),
        ((np.zeros(16),), {}, "image must be 2-D or 3-D"),
        ((np.zeros((2, 2)),), {"factor": 4}, "at least factor=4 rows"),
        ((np.zeros((8, 8)),), {"factor": 0}, "factor must be an integer >= 1"),
        ((np.zeros((8, 8)),), {"factor": 2.5}, "factor must be an integer >= 1"),
        ((np.zeros((8, 8)),), {"mode": "bicubic"}, "mode must be 'nearest' or 'area'"),
        ((np.zeros((8, 8)),), {"noise_std": -1}, "noise_std must be"),
        ((np.zeros((8, 8), bool),), {}, "real numeric array"),
    ],
)
def test_degrade_refuses_bad_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        d.degrade_tem(*args, **kwargs)


# ----------------------------------------------------------------------------- QPI


@pytest.fixture(scope="module")
def cells():
    return d.cell_phase_object((128, 128), seed=2, n_cells=3, cell_radius=(18, 30))


def test_cell_phase_object(cells):
    phase, absorption = cells["phase"], cells["absorption"]
    assert phase.dtype == np.float32
    assert phase.shape == (128, 128)
    assert absorption.dtype == np.float32
    assert absorption.shape == (128, 128)
    assert phase.min() >= 0
    assert 1.5 < phase.max() <= 3.0 + 1e-6
    assert absorption.min() >= 0
    assert absorption.max() < 0.3
    assert 0.05 < (phase > 0.1).mean() < 0.9  # cells and background
    again = d.cell_phase_object((128, 128), seed=2, n_cells=3, cell_radius=(18, 30))
    np.testing.assert_array_equal(again["phase"], phase)
    other = d.cell_phase_object((128, 128), seed=3, n_cells=3, cell_radius=(18, 30))
    assert not np.array_equal(other["phase"], phase)
    assert d.cell_phase_object((64, 64), seed=0, max_phase=1.0)["phase"].max() <= 1.0 + 1e-6


def test_zero_phase_gives_equal_flat_images():
    for model in ("abbe", "wotf"):
        imgs = d.simulate_dpc(np.zeros((64, 64)), directions=("top", "bottom", "left"), model=model)
        assert imgs.shape == (3, 64, 64)
        assert imgs.dtype == np.float32
        np.testing.assert_allclose(imgs, 1.0, atol=1e-5)
    uniform = d.simulate_dpc(np.zeros((64, 64)), np.full((64, 64), 0.1))
    np.testing.assert_allclose(uniform, np.exp(-0.2), rtol=1e-5)


def _dpc(images):
    return (images[0] - images[1]) / (images[0] + images[1])


@pytest.mark.parametrize("model", ["abbe", "wotf"])
def test_dpc_signal_antisymmetric_under_flip(cells, model):
    phase = cells["phase"]
    for axis, dirs in ((0, ("top", "bottom")), (1, ("left", "right"))):
        s = _dpc(d.simulate_dpc(phase, directions=dirs, model=model))
        s_flip = _dpc(d.simulate_dpc(np.flip(phase, axis), directions=dirs, model=model))
        assert np.abs(s).max() > 0.1
        np.testing.assert_allclose(s_flip, -np.flip(s, axis), atol=2e-4)


def test_abbe_matches_direct_reference():
    """The coarse-grid Abbe sum equals the obvious sum over source points on the full grid."""
    n, px, lam, na = 48, 0.12, 0.523, 0.5
    rng = np.random.default_rng(0)
    phase = ndimage.gaussian_filter(rng.random((n, n)), 2) * 6
    absorption = ndimage.gaussian_filter(rng.random((n, n)), 2) * 0.2
    f = scipy.fft.fftfreq(n, d=px)
    fr, fc = f[:, None], f[None, :]
    rho = np.hypot(fr, fc)
    pupil = rho < na / lam
    spec = np.fft.fft2(np.exp(-absorption + 1j * phase))
    for direction, side in (("top", (fr < 0) & (fc == fc)), ("right", (fc > 0) & (fr == fr))):
        source = (rho * lam > 0.45) & (rho * lam < 0.5) & side
        assert source.sum() >= 2
        ref = np.zeros((n, n))
        for r, c in np.argwhere(source):
            ref += np.abs(np.fft.ifft2(np.roll(spec, (r, c), axis=(0, 1)) * pupil)) ** 2
        ref /= source.sum()
        got = d.simulate_dpc(phase, absorption, directions=(direction,))[0]
        np.testing.assert_allclose(got, ref, atol=2e-5)


def test_abbe_and_wotf_agree_for_weak_objects(cells):
    weak = cells["phase"] * 0.02
    abbe = d.simulate_dpc(weak, model="abbe")
    wotf = d.simulate_dpc(weak, model="wotf")
    signal = np.abs(wotf - 1).max()
    assert signal > 0.01
    assert np.abs(abbe - wotf).max() < 0.1 * signal


def test_transfer_functions_structure():
    h_abs, h_ph = d.dpc_transfer_functions((64, 48), directions=("top", "bottom", "left"))
    assert h_ph.shape == (3, 64, 48)
    np.testing.assert_allclose(h_ph[0].real, 0, atol=1e-12)
    np.testing.assert_allclose(h_ph[0], -h_ph[1], atol=1e-12)
    np.testing.assert_allclose(h_abs[0], h_abs[1], atol=1e-12)
    assert abs(h_ph[0, 0, 0]) < 1e-12
    assert abs(h_abs[0, 0, 0] + 2) < 1e-9
    odd = h_ph[2][np.ix_(-np.arange(64) % 64, -np.arange(48) % 48)]
    np.testing.assert_allclose(odd, -h_ph[2], atol=1e-12)


def test_tikhonov_recovers_phase_two_and_four_images(cells):
    # `cells` is one fixed object; two images lose the frequencies perpendicular to their
    # axis, so other objects can score lower with two images (see the test below)
    phase = cells["phase"]
    truth = phase - phase.mean()
    two = d.simulate_dpc(phase, cells["absorption"], directions=("top", "bottom"))
    est2 = d.dpc_tikhonov(two, directions=("top", "bottom"))
    assert est2.dtype == np.float32
    assert est2.shape == phase.shape
    assert abs(float(est2.mean())) < 1e-5
    assert np.corrcoef(est2.ravel(), truth.ravel())[0, 1] > 0.9
    dirs4 = ("top", "bottom", "left", "right")
    four = d.simulate_dpc(phase, cells["absorption"], directions=dirs4)
    est4 = d.dpc_tikhonov(four, directions=dirs4)
    assert np.corrcoef(est4.ravel(), truth.ravel())[0, 1] > 0.95
    # the order of the images does not matter, only their labels
    swapped = d.dpc_tikhonov(two[::-1], directions=("bottom", "top"))
    np.testing.assert_allclose(swapped, est2, atol=1e-5)
    # weak object, linear model: the scale is right too
    weak = phase * 0.05
    est = d.dpc_tikhonov(d.simulate_dpc(weak, model="wotf", directions=dirs4), directions=dirs4,
                         reg=1e-4)
    assert 0.85 < est.std() / weak.std() < 1.05


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_tikhonov_on_other_objects(seed):
    phase = d.cell_phase_object((96, 96), seed=seed, n_cells=2)["phase"]
    dirs4 = ("top", "bottom", "left", "right")
    images = d.simulate_dpc(phase, directions=dirs4)
    est4 = d.dpc_tikhonov(images, directions=dirs4)
    est2 = d.dpc_tikhonov(images[:2], directions=dirs4[:2])
    r4 = np.corrcoef(est4.ravel(), phase.ravel())[0, 1]
    r2 = np.corrcoef(est2.ravel(), phase.ravel())[0, 1]
    assert r4 > 0.95
    assert 0.6 < r2 < r4


def test_shot_noise_is_seeded_and_poisson(cells):
    clean = d.simulate_dpc(cells["phase"])
    a = d.simulate_dpc(cells["phase"], photons=500.0, seed=1)
    b = d.simulate_dpc(cells["phase"], photons=500.0, seed=1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, d.simulate_dpc(cells["phase"], photons=500.0, seed=2))
    resid = (a - clean) / np.sqrt(clean / 500.0)
    assert abs(float(resid.mean())) < 0.05
    assert 0.9 < float(resid.std()) < 1.1


def test_led_illumination_runs_and_inverts(cells):
    dirs = ("top", "bottom", "left", "right")
    imgs = d.simulate_dpc(cells["phase"], illumination="led", na_illumination=(0.0, 0.5),
                          directions=dirs)
    assert imgs.shape == (4, 128, 128)
    est = d.dpc_tikhonov(imgs, illumination="led", na_illumination=(0.0, 0.5), directions=dirs)
    assert np.corrcoef(est.ravel(), cells["phase"].ravel())[0, 1] > 0.9


def test_qpi_inputs_not_mutated(cells):
    phase, absorption = cells["phase"].copy(), cells["absorption"].copy()
    imgs = d.simulate_dpc(phase, absorption)
    before = imgs.copy()
    d.dpc_tikhonov(imgs)
    np.testing.assert_array_equal(phase, cells["phase"])
    np.testing.assert_array_equal(absorption, cells["absorption"])
    np.testing.assert_array_equal(imgs, before)


@pytest.mark.parametrize(
    ("func", "kwargs", "match"),
    [
        ("simulate", {"directions": ("top", "diagonal")}, "directions must be distinct names"),
        ("simulate", {"model": "born"}, "model must be 'abbe' or 'wotf'"),
        ("simulate", {"pixel_size": 1.0}, "na_objective / wavelength must be below"),
        ("simulate", {"na_illumination": (0.5, 0.45)}, "na_illumination must be a pair"),
        ("simulate", {"illumination": "ring"}, "illumination must be"),
        ("simulate", {"photons": 0}, "photons must be"),
        ("simulate", {"absorption": np.zeros((4, 4))}, "absorption must be a real array"),
        ("simulate", {"phase": np.zeros((3, 32, 32))}, "phase must be a real 2-D array"),
        ("simulate", {"phase": np.zeros((8, 8))}, "has no point on the frequency grid"),
        ("tikhonov", {"directions": ("top", "left")}, "opposite pairs"),
        ("tikhonov", {"images": np.ones((3, 32, 32))}, r"images must be a real array"),
        ("tikhonov", {"reg": 0.0}, "reg must be a finite number > 0"),
        ("phase_object", {"shape": (2, 32, 32)}, r"shape must be \(rows, cols\)"),
        ("phase_object", {"cell_radius": (30, 10)}, "cell_radius must be a pair"),
    ],
)
def test_qpi_refuses_bad_arguments(func, kwargs, match):
    kwargs = dict(kwargs)
    if func == "simulate":
        phase = kwargs.pop("phase", np.zeros((32, 32)))
        with pytest.raises(ValueError, match=match):
            d.simulate_dpc(phase, **kwargs)
    elif func == "tikhonov":
        images = kwargs.pop("images", np.ones((2, 32, 32)))
        with pytest.raises(ValueError, match=match):
            d.dpc_tikhonov(images, **kwargs)
    else:
        with pytest.raises(ValueError, match=match):
            d.cell_phase_object(**kwargs)


# ----------------------------------------------------------------------------- real data

ROOT = d.shared_data_root()
needs_data = pytest.mark.skipif(ROOT is None, reason="../shared/data not found")


def test_shared_data_root_env_var_and_missing_messages(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_IM2IM_UQ_DATA", str(tmp_path))
    assert d.shared_data_root() == tmp_path
    with pytest.raises(FileNotFoundError, match="NAPARI_IM2IM_UQ_DATA"):
        d.load_qpi_dpc()
    monkeypatch.delenv("NAPARI_IM2IM_UQ_DATA")
    monkeypatch.setattr(_readers, "_candidates", lambda: [tmp_path / "shared" / "data"])
    assert d.shared_data_root() is None
    with pytest.raises(FileNotFoundError, match="looked in .*NAPARI_IM2IM_UQ_DATA"):
        d.load_isbi2012()
    with pytest.raises(FileNotFoundError, match="em_drosophila_vnc"):
        d.load_em_drosophila(root=tmp_path)


@pytest.mark.realdata
@needs_data
def test_load_em_drosophila():
    em = d.load_em_drosophila(
        slices=[0, 19], what=("raw", "membranes", "mitochondria", "synapses", "labels")
    )
    assert em["raw"].shape == (2, 1024, 1024)
    assert em["raw"].dtype == np.float32
    assert em["raw"].min() >= 0.0
    assert em["raw"].max() <= 1.0
    for key in ("membranes", "mitochondria", "synapses"):
        assert em[key].dtype == bool
        assert em[key].shape == (2, 1024, 1024)
    assert set(np.unique(em["labels"])) <= {0, 32, 64, 96, 128, 159, 191, 223, 255}
    assert 0.1 < em["membranes"].mean() < 0.35
    assert 0.01 < em["mitochondria"].mean() < 0.2
    # the README's grey levels: membranes darker than the rest
    assert em["raw"][em["membranes"]].mean() < em["raw"][~em["membranes"]].mean() - 0.1
    raw2 = d.load_em_drosophila(stack=2, slices=slice(3, 4))["raw"]
    assert raw2.shape == (1, 1024, 1024)
    with pytest.raises(ValueError, match="what must name some of"):
        d.load_em_drosophila(stack=2, what=("membranes",))
    with pytest.raises(ValueError, match="slices must index 0..19"):
        d.load_em_drosophila(slices=[20])
    with pytest.raises(ValueError, match="stack must be 1 or 2"):
        d.load_em_drosophila(stack=3)


@pytest.mark.realdata
@needs_data
def test_load_isbi2012():
    isbi = d.load_isbi2012(slices=slice(0, 2))
    assert isbi["raw"].shape == (2, 512, 512)
    assert isbi["raw"].dtype == np.float32
    assert isbi["membranes"].dtype == bool
    assert 0.1 < isbi["membranes"].mean() < 0.4
    test = d.load_isbi2012(split="test", slices=29)
    assert set(test) == {"raw"}
    assert test["raw"].shape == (1, 512, 512)
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        d.load_isbi2012(split="val")


@pytest.mark.realdata
@needs_data
def test_load_qpi_dpc_and_tikhonov_matches_derived_phase():
    qpi = d.load_qpi_dpc()
    assert set(qpi) == {"r1", "r2", "r3", "r4", "bf", "phase"}
    for key in ("r1", "r2", "r3", "r4", "bf", "phase"):
        assert qpi[key].shape == (2000, 2000)
        assert qpi[key].dtype == np.float32
    assert qpi["r1"].min() >= 0
    assert qpi["r1"].max() <= 1
    assert -1.6 < qpi["phase"].min() < -1.3
    assert 3.1 < qpi["phase"].max() < 3.4
    # our four-image inversion with the README's optics reproduces the derived target
    crop = (slice(700, 1212), slice(700, 1212))
    images = np.stack([qpi[k][crop] for k in ("r1", "r2", "r3", "r4")])
    est = d.dpc_tikhonov(images, directions=("top", "bottom", "left", "right"))
    inner = (slice(64, -64), slice(64, -64))
    assert np.corrcoef(est[inner].ravel(), qpi["phase"][crop][inner].ravel())[0, 1] > 0.95
