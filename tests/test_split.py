"""Tests of training._split: the spatial split of training pairs and its record."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_im2im_uq._fingerprints import FINGERPRINT
from napari_im2im_uq.training import Split, held_back_shapes, spatial_split
from napari_im2im_uq.training._split import default_region_shape
from napari_im2im_uq.workflows.tiles import calibration_tiles


def _split(shapes, **kwargs):
    n = len(shapes)
    return spatial_split(shapes, fingerprints=[f"fp{i}" for i in range(n)],
                         sources=[f"array {i}" for i in range(n)], **kwargs)


def _reference_cells(shapes, rh, rw):
    """Every whole grid cell of every plane, by brute force over pixels."""
    cells = set()
    for i, (h, w) in enumerate(shapes):
        for r in range(h):
            for c in range(w):
                r0, c0 = r - r % rh, c - c % rw
                if r0 + rh <= h and c0 + rw <= w:
                    cells.add((i, r0, c0, r0 + rh, c0 + rw))
    return cells


def test_regions_are_disjoint_and_cover_the_grid_on_random_cases():
    rng = np.random.default_rng(0)
    for case in range(60):
        n = int(rng.integers(1, 4))
        shapes = [(int(rng.integers(20, 140)), int(rng.integers(20, 140))) for _ in range(n)]
        rh, rw = int(rng.integers(8, 40)), int(rng.integers(8, 40))
        fr = rng.dirichlet([3, 1, 1]) * 0.97 + 0.01
        fr = fr / fr.sum()
        expected = _reference_cells(shapes, rh, rw)
        if len(expected) < 3:
            with pytest.raises(ValueError, match="a split needs at least 3"):
                _split(shapes, region_shape=(rh, rw), fractions=fr, seed=case)
            continue
        split = _split(shapes, region_shape=(rh, rw), fractions=fr, seed=case)
        got = {p: {(i, *b) for i, im in enumerate(split.images) for b in im.boxes(p)}
               for p in ("train", "validation", "held_back")}
        # disjoint parts whose union is exactly the grid of whole regions
        assert sum(len(v) for v in got.values()) == len(expected)
        assert got["train"] | got["validation"] | got["held_back"] == expected
        owner = np.zeros((n, 140, 140), int)  # no pixel in two boxes
        for boxes in got.values():
            for i, r0, c0, r1, c1 in boxes:
                owner[i, r0:r1, c0:c1] += 1
        assert owner.max() == 1
        assert all(len(v) >= 1 for v in got.values())
        n_all = len(expected)
        assert len(got["validation"]) <= max(1, round(fr[1] * n_all))
        assert len(got["held_back"]) <= max(1, round(fr[2] * n_all))


def test_assignment_is_seeded_and_near_the_fractions():
    a = _split([(512, 512)], region_shape=(32, 32), seed=3)
    b = _split([(512, 512)], region_shape=(32, 32), seed=3)
    c = _split([(512, 512)], region_shape=(32, 32), seed=4)
    assert a == b and a != c
    im = a.images[0]
    assert (len(im.train), len(im.validation), len(im.held_back)) == (179, 26, 51)  # of 256


def test_record_round_trips_through_json():
    split = _split([(100, 70), (64, 64)], region_shape=(32, 16), seed=5,
                   fractions=(0.6, 0.2, 0.2))
    spec = json.loads(json.dumps(split.to_spec()))
    assert spec["fingerprint"] == FINGERPRINT
    assert spec["fractions"] == {"train": 0.6, "validation": 0.2, "held_back": 0.2}
    assert spec["images"][1]["source"] == "array 1"
    assert spec["images"][0]["shape"] == [100, 70]
    assert Split.from_spec(spec) == split


def test_bad_records_and_arguments_name_the_field():
    spec = _split([(64, 96)], region_shape=(32, 32)).to_spec()
    bad = json.loads(json.dumps(spec))
    bad["images"][0]["train"][0] = [0, 0, 0, 32]
    with pytest.raises(ValueError, match=r"training_regions\['images'\]\[0\]\['train'\]\[0\]"):
        Split.from_spec(bad)
    bad = json.loads(json.dumps(spec))
    bad["images"][0]["held_back"] = [[0, 0, 32, 200]]
    with pytest.raises(ValueError, match="lies outside the plane"):
        Split.from_spec(bad)
    with pytest.raises(ValueError, match=r"missing \['seed'\]"):
        Split.from_spec({k: v for k, v in spec.items() if k != "seed"})
    with pytest.raises(ValueError, match="fractions must be three numbers"):
        _split([(64, 64)], fractions=(0.5, 0.5, 0.0))
    with pytest.raises(ValueError, match="region_shape must be two positive integers"):
        _split([(64, 64)], region_shape=(30, 32), multiple_of=4)
    with pytest.raises(ValueError, match=r"hold 2 whole region\(s\) of region_shape \(32, 32\)"):
        _split([(64, 40)], region_shape=(32, 32))
    with pytest.raises(ValueError, match="one entry per plane"):
        spatial_split([(64, 64)], fingerprints=[], sources=[])


def test_default_region_shape():
    assert default_region_shape([(2048, 2048)]) == (128, 128)
    assert default_region_shape([(256, 256)]) == (48, 48)
    assert default_region_shape([(100, 100)]) == (32, 32)  # never below 32
    assert default_region_shape([(1024, 1024)], multiple_of=3) == (126, 126)


def test_held_back_shapes_select_exactly_the_held_back_pixels():
    split = _split([(96, 128), (96, 128)], region_shape=(32, 32), seed=2)
    spec = split.to_spec()
    rects = held_back_shapes(spec, ndim=3)
    assert len(rects) == sum(len(im.held_back) for im in split.images)
    # the calibration tiles cut inside them are the held-back boxes themselves
    tiles = calibration_tiles((2, 96, 128), (32, 32), regions=rects)
    expected = sorted((i, b[0], b[1]) for i, im in enumerate(split.images) for b in im.held_back)
    assert sorted(map(tuple, tiles.tolist())) == expected
    # world coordinates: scale and translate of the target layer
    world = held_back_shapes(spec, ndim=2, scale=(2.0, 0.5), translate=(10.0, -1.0))
    r0, c0, r1, c1 = split.images[0].held_back[0]
    assert np.allclose(world[0][0], [(r0 - 0.5) * 2 + 10, (c0 - 0.5) * 0.5 - 1])
    assert np.allclose(world[0][2], [(r1 - 0.5) * 2 + 10, (c1 - 0.5) * 0.5 - 1])
    swapped = held_back_shapes(spec, ndim=3, plane_of={"fp0": 1, "fp1": 0})
    assert swapped[0][0, 0] == 1.0
    with pytest.raises(ValueError, match="plane_of must give the plane"):
        held_back_shapes(spec, ndim=3, plane_of={"fp0": 1})


def test_region_sampler_draws_every_patch_inside_the_boxes_and_no_other():
    from napari_im2im_uq.training._region_sampler import RegionSampler

    rng = np.random.default_rng(1)
    for case in range(25):
        s = int(rng.choice([1, 2]))
        h, w = int(rng.integers(6, 12)), int(rng.integers(6, 12))
        p = int(rng.integers(2, 5))
        split = spatial_split([(h * s, w * s)], region_shape=(2 * s, 2 * s), seed=case,
                              fingerprints=["f"], sources=["a"], multiple_of=s)
        boxes = list(split.images[0].train)
        inside = np.zeros((h, w), bool)
        for r0, c0, r1, c1 in boxes:
            inside[r0 // s:r1 // s, c0 // s:c1 // s] = True
        valid = {(r, c) for r in range(h - p + 1) for c in range(w - p + 1)
                 if inside[r:r + p, c:c + p].all()}
        x = np.arange(h * w, dtype=np.float32).reshape(1, h, w)
        y = np.kron(x[0], np.ones((s, s), np.float32))
        if not valid:
            with pytest.raises(ValueError, match="at least one patch"):
                RegionSampler([x], [y], [boxes], scale_factor=s, patch_shape=(p, p))
            continue
        sampler = RegionSampler([x], [y], [boxes], scale_factor=s, patch_shape=(p, p),
                                augment="none")
        xb, yb = sampler.sample(np.random.default_rng(case), 60 * len(valid))
        drawn = {divmod(int(v), w) for v in xb[:, 0, 0, 0]}
        assert drawn == valid
        assert np.array_equal(yb[:, 0, ::s, ::s], xb[:, 0])  # the aligned target patch


def test_transpose_augmentation_keeps_a_super_resolution_pair_aligned():
    from napari_im2im_uq.training._region_sampler import RegionSampler

    y = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    x = y[::4, ::4][None]  # corner-aligned nearest down-sampling
    box = [[(0, 0, 64, 64)]]
    kept = RegionSampler([x], [y], box, scale_factor=4, patch_shape=(8, 8), augment="transpose")
    xb, yb = kept.sample(np.random.default_rng(1), 64)
    assert np.array_equal(xb[:, 0], yb[:, 0, ::4, ::4])
    code = np.arange(256, dtype=np.float32).reshape(1, 16, 16)  # value = row * 16 + column
    coded = RegionSampler([code], [np.kron(code[0], np.ones((4, 4)))], box, scale_factor=4,
                          patch_shape=(8, 8), augment="transpose")
    xc, _ = coded.sample(np.random.default_rng(1), 64)
    steps = xc[:, 0, 0, 1] - xc[:, 0, 0, 0]  # along a patch row: +1 as is, +16 transposed
    assert set(steps.tolist()) == {1.0, 16.0} and 16 < int(np.sum(steps == 16)) < 48
    # flips of the pair would shift the input by 3 target pixels against its target
    flipped = RegionSampler([x], [y], box, scale_factor=4, patch_shape=(8, 8), augment="dihedral")
    xb, yb = flipped.sample(np.random.default_rng(1), 64)
    assert not np.array_equal(xb[:, 0], yb[:, 0, ::4, ::4])
