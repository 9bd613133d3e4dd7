"""Calibration refuses (or reports) tiles inside the regions a model was trained on."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from napari_im2im_uq import api
from napari_im2im_uq._fingerprints import FINGERPRINT, plane_fingerprints
from napari_im2im_uq.workflows import records
from napari_im2im_uq.workflows.leakage import leakage_figures, leaked_tiles

SIZE = 64
REGION = 16


def _grid_boxes(rows, cols):
    """16 x 16 region boxes [r0, c0, r1, c1] at the given region rows and columns."""
    return [[r * REGION, c * REGION, (r + 1) * REGION, (c + 1) * REGION] for r in rows
            for c in cols]


def _split(truth_planes, planes=None):
    """A training_regions dict as training.train records it: the top half trained on, region
    (2, 0) validated on, the rest held back; one entry per target plane used (``planes``)."""
    planes = range(len(truth_planes)) if planes is None else planes
    prints = plane_fingerprints(np.asarray(truth_planes))
    images = [{"fingerprint": prints[p], "shape": [SIZE, SIZE], "source": f"array 0, plane {p}",
               "train": _grid_boxes(range(2), range(4)), "validation": _grid_boxes([2], [0]),
               "held_back": _grid_boxes([2], range(1, 4)) + _grid_boxes([3], range(4))}
              for p in planes]
    return {"region_shape": [REGION, REGION], "fingerprint": FINGERPRINT, "seed": 0,
            "fractions": {"train": 0.5, "validation": 0.0625, "held_back": 0.4375},
            "images": images}


def _outputs(truth, split, *, seed=0):
    """Interval outputs of a model named "mine" as layers whose metadata carry ``split``."""
    rng = np.random.default_rng(seed)
    pred = (truth + 0.05 * rng.standard_normal(truth.shape)).astype(np.float32)
    model = {"name": "mine", "sha256": "a" * 64, "heuristic": "quantile", "scale_factor": 1,
             "output_range": [0.0, 1.0], "training_regions": split}
    arrays = {"prediction": pred, "lower": pred - 0.05, "upper": pred + 0.05}
    ndim = truth.ndim
    return {k: SimpleNamespace(data=v, name=f"{k} (mine)", scale=(1.0,) * ndim,
                               translate=(0.0,) * ndim,
                               metadata={"im2im_uq": {"role": "output", "output": k,
                                                      "model": model}})
            for k, v in arrays.items()}


def _rect(r0, c0, r1, c1, plane=None):
    """The rectangle covering pixels [r0, r1) x [c0, c1) (pixel edges), as a region."""
    corners = np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]], float) - 0.5
    if plane is not None:
        corners = np.concatenate([np.full((4, 1), float(plane)), corners], axis=1)
    return corners


@pytest.fixture
def data():
    truth = np.random.default_rng(1).random((SIZE, SIZE)).astype(np.float32)
    return truth, _outputs(truth, _split(truth[None]))


CAL = {"method": "intervals", "rule": "crc", "alpha": 0.2, "tile_shape": (REGION, REGION)}


def test_tiles_inside_the_held_back_regions_pass_and_the_record_says_so(data):
    truth, outputs = data
    held = [_rect(*b) for b in _split(truth[None])["images"][0]["held_back"]]
    cal = api.calibrate(outputs, truth, regions=held, **CAL)
    assert cal.result.n == 7
    leak = cal.record["leakage"]
    assert (leak["n"], leak["n_leaked"], leak["n_new"], leak["factor"]) == (7, 0, 7, 1.0)
    assert leak["planes_matched"] == 1 and leak["bound"] == pytest.approx(0.2)
    assert "none of the 7 calibration tiles" in leak["message"]
    assert records.check_record(cal.record) is cal.record
    # the training regions travel with the model into the record
    assert cal.record["model"]["training_regions"] == _split(truth[None])


@pytest.mark.parametrize("origin", [(31, 16), (47, 15)], ids=["train row", "validation pixel"])
def test_one_tile_overlapping_a_used_box_by_one_row_or_pixel_is_refused(data, origin):
    truth, outputs = data
    held = [_rect(*b) for b in _split(truth[None])["images"][0]["held_back"][1:]]
    r, c = origin
    regions = [_rect(r, c, r + REGION, c + REGION)] + held  # the first is taken first
    with pytest.raises(ValueError, match=r"^1 of the \d+ calibration tiles lie in regions model "
                                         r"'mine' was trained or validated on") as err:
        api.calibrate(outputs, truth, regions=regions, **CAL)
    message = str(err.value)
    assert "held back (mine)" in message and "api.held_back_shapes" in message
    assert "leakage='report'" in message and "Prop. 3.2" in message
    # a tile one pixel further is new
    regions[0] = _rect(r + 1, c + 1, r + 1 + REGION, c + 1 + REGION)
    assert api.calibrate(outputs, truth, regions=regions, **CAL).record["leakage"]["n_leaked"] == 0


def test_truth_of_other_data_is_never_refused(data):
    truth, outputs = data
    other = np.random.default_rng(7).random(truth.shape).astype(np.float32)
    cal = api.calibrate(outputs, other, **CAL)  # every tile, the trained ones included
    assert cal.result.n == 16
    assert cal.record["leakage"]["n_leaked"] == 0 and cal.record["leakage"]["planes_matched"] == 0
    # the same values in another dtype are the same data: refused
    with pytest.raises(ValueError, match="^9 of the 16 calibration tiles"):
        api.calibrate(outputs, truth.astype(np.float64), **CAL)


def test_a_model_without_training_regions_is_not_checked(data):
    truth, outputs = data
    model = dict(outputs["prediction"].metadata["im2im_uq"]["model"])
    del model["training_regions"]
    for layer in outputs.values():
        layer.metadata = {"im2im_uq": dict(layer.metadata["im2im_uq"], model=model)}
    cal = api.calibrate(outputs, truth, **CAL)
    assert "leakage" not in cal.record
    arrays = {k: v.data for k, v in outputs.items()}
    assert "leakage" not in api.calibrate(arrays, truth, **CAL).record


def test_a_volume_whose_planes_were_partly_used_counts_only_those_planes():
    rng = np.random.default_rng(2)
    truth = rng.random((3, SIZE, SIZE)).astype(np.float32)
    outputs = _outputs(truth, _split(truth, planes=[0, 2]))
    # plane 1 was not a training target: its trained-region tiles are new
    cal = api.calibrate(outputs, truth, regions=[_rect(0, 0, SIZE, SIZE, plane=1)], **CAL)
    assert cal.record["leakage"]["n_leaked"] == 0 and cal.record["leakage"]["planes_matched"] == 0
    with pytest.raises(ValueError, match="^9 of the 16 calibration tiles"):
        api.calibrate(outputs, truth, regions=[_rect(0, 0, SIZE, SIZE, plane=2)], **CAL)
    cal = api.calibrate(outputs, truth, leakage="report", **CAL)  # every tile of every plane
    leak = cal.record["leakage"]
    assert (leak["n"], leak["n_leaked"], leak["n_new"], leak["planes_matched"]) == (48, 18, 30, 2)
    assert leak["factor"] == pytest.approx(49 / 31)
    assert leak["bound"] == pytest.approx(0.2 * 49 / 31)


def test_report_writes_the_figures_of_prop_3_2(data, tmp_path):
    truth, outputs = data
    cal = api.calibrate(outputs, truth, leakage="report", **CAL)
    leak = cal.record["leakage"]
    assert (leak["n"], leak["n_leaked"], leak["n_new"]) == (16, 9, 7)
    assert leak["factor"] == pytest.approx(17 / 8) and leak["bound"] == pytest.approx(0.2 * 17 / 8)
    assert leak["covered"] is True and leak["reference"] == "Adame et al., Prop. 3.2"
    assert "at most 0.2 x (n + 1) / (n_new + 1) = 0.2 x 2.125 = 0.425" in leak["message"]
    saved = api.save_record(cal, tmp_path / "rec.json")
    assert api.load_record(saved)["leakage"] == leak
    # a high-probability guarantee: the counts only
    rcps = api.calibrate(outputs, truth, leakage="report", **{**CAL, "rule": "rcps"})
    leak = rcps.record["leakage"]
    assert (leak["n_leaked"], leak["covered"], leak["bound"]) == (9, False, None)
    assert "covers guarantees in expectation only" in leak["message"]
    assert records.check_record(rcps.record) is rcps.record


def test_an_edited_leakage_field_fails_the_checksum_and_a_wrong_one_the_schema(data):
    truth, outputs = data
    rec = api.calibrate(outputs, truth, leakage="report", **CAL).record
    edited = json.loads(json.dumps(rec))
    edited["leakage"]["n_leaked"] = 0
    with pytest.raises(records.RecordError, match="checksum does not match"):
        records.check_record(edited)
    with pytest.raises(records.RecordError, match=r"record.leakage must have n_leaked <= n and "
                                                  r"n_new = n - n_leaked"):
        records.check_record(edited, accept_edited=True)
    for key, value, match in [("factor", 1.0, r"leakage.factor must be \(n \+ 1\)"),
                              ("bound", 0.2, "leakage.bound must be level x factor"),
                              ("n", 3, "leakage.n must be the number of calibration tiles 16"),
                              ("covered", False, "leakage.covered must say"),
                              ("message", None, "leakage.message")]:
        bad = dict(rec, leakage=dict(rec["leakage"], **{key: value}))
        with pytest.raises(records.RecordError, match=match):
            records.check_record(records.seal(bad))
    with pytest.raises(records.RecordError, match="record.leakage must be a dict"):
        records.check_record(records.seal(dict(rec, leakage=[9, 16])))


@pytest.mark.parametrize("value", ["yes", True, None, "REFUSE"])
def test_bad_leakage_values_name_the_argument(data, value):
    truth, outputs = data
    with pytest.raises(ValueError, match=r"^leakage must be 'refuse' or 'report'; got"):
        api.calibrate(outputs, truth, leakage=value, **CAL)
    with pytest.raises(ValueError, match=r"^leakage must be 'refuse' or 'report'; got"):
        api.self_check(outputs, truth, leakage=value, **CAL)


def test_self_check_refuses_leaked_tiles_too(data):
    truth, outputs = data
    with pytest.raises(ValueError, match="^9 of the 16 calibration tiles"):
        api.self_check(outputs, truth, **CAL)
    report = api.self_check(outputs, truth, leakage="report", **CAL)
    assert report["leakage"] == {"n_leaked": 9, "planes_matched": 1}


def _slow_leaks(origins, tile_shape, boxes_by_plane, shape):
    """Reference: paint each plane's used boxes, then look under each tile."""
    out = []
    for z, r, c in origins:
        painted = np.zeros(shape, bool)
        for r0, c0, r1, c1 in boxes_by_plane.get(z, []):
            painted[r0:r1, c0:c1] = True
        out.append(bool(painted[r:r + tile_shape[0], c:c + tile_shape[1]].any()))
    return np.array(out, bool)


def test_leaked_tiles_equal_a_painted_reference_on_random_cases():
    rng = np.random.default_rng(3)
    for _ in range(200):
        planes, h, w = int(rng.integers(1, 4)), int(rng.integers(6, 20)), int(rng.integers(6, 20))
        truth = rng.integers(0, 3, (planes, h, w)).astype(np.uint8)
        truth[:, 0, 0] = np.arange(planes)  # distinct planes
        prints = plane_fingerprints(truth)
        used = sorted(rng.choice(planes, int(rng.integers(0, planes + 1)), replace=False))
        images, by_plane = [], {}
        for p in used:
            entry = {"fingerprint": prints[p], "shape": [h, w], "train": [], "validation": [],
                     "held_back": [[0, 0, h, w]]}  # held back boxes never count
            for _ in range(int(rng.integers(0, 4))):
                r0, c0 = int(rng.integers(0, h)), int(rng.integers(0, w))
                box = [r0, c0, int(rng.integers(r0 + 1, h + 1)), int(rng.integers(c0 + 1, w + 1))]
                entry[str(rng.choice(["train", "validation"]))].append(box)
                by_plane.setdefault(p, []).append(box)
            images.append(entry)
        th, tw = int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1))
        n = int(rng.integers(1, 12))
        origins = np.stack([rng.integers(0, planes, n), rng.integers(0, h - th + 1, n),
                            rng.integers(0, w - tw + 1, n)], axis=1)
        data = truth if planes > 1 or rng.random() < 0.5 else truth[0]
        if data.ndim == 2:
            origins[:, 0] = 0
        leaked, matched = leaked_tiles(data, origins, (th, tw), {"images": images})
        np.testing.assert_array_equal(leaked, _slow_leaks(origins, (th, tw), by_plane, (h, w)))
        assert matched == len(set(origins[:, 0].tolist()) & set(used))


def test_a_saved_bundle_with_training_regions_is_refused_end_to_end(tmp_path):
    import torch

    from napari_im2im_uq.models import build_network, save_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(4)
    image = rng.random((SIZE, SIZE)).astype(np.float32)
    net = build_network("quantile", depth=1, base_channels=2)
    spec = {"heuristic": "quantile", "output_range": [0.0, 1.0]}
    # the truth the (untrained) network's outputs are calibrated on: near its prediction
    plain = api.predict(save_model(net, tmp_path / "plain", spec=spec), image, device="cpu")
    pred = next(data for data, kw, _ in plain if kw["name"].startswith("prediction"))
    truth = (pred + 0.01 * rng.standard_normal(pred.shape)).astype(np.float32)
    split = _split(truth[None])
    folder = save_model(net, tmp_path / "mine", spec={**spec, "training_regions": split})
    shown = api.predict(folder, image, device="cpu")
    # every output layer names the regions: napari Image layers from the tuples
    stand_ins = {kw["metadata"]["im2im_uq"]["output"]: SimpleNamespace(
        data=data, name=kw["name"], scale=kw["scale"], translate=kw["translate"],
        metadata=kw["metadata"]) for data, kw, _ in shown}
    assert all(v.metadata["im2im_uq"]["model"]["training_regions"] == split
               for v in stand_ins.values())
    outputs = {k: stand_ins[k] for k in ("prediction", "lower", "upper")}
    with pytest.raises(ValueError, match="^9 of the 16 calibration tiles lie in regions model "
                                         "'mine'"):
        api.calibrate(outputs, truth, **CAL)
    held = [_rect(*b) for b in split["images"][0]["held_back"]]
    cal = api.calibrate(outputs, truth, regions=held, **CAL)
    assert cal.record["leakage"]["n_leaked"] == 0 and cal.result.n == 7
    assert cal.record["model"]["name"] == "mine"


def test_figures_refuse_impossible_counts():
    with pytest.raises(ValueError, match="n_leaked must be in"):
        leakage_figures(3, 4, level=0.1, expectation=True)
    f = leakage_figures(5, 5, level=0.1, expectation=True)
    assert f["n_new"] == 0 and f["factor"] == 6 and f["bound"] == pytest.approx(0.6)
    assert leakage_figures(5, 1, level=0.1, expectation=True, valid=False)["bound"] is None


def _sim_tiles(rng, n, *, perfect=False):
    """Intervals [-1, 1] around 0 on 4 x 4 tiles; truth N(0, s^2) with s per tile, or 0."""
    s = rng.uniform(0.3, 3.0, (n, 1, 1))
    pred = np.zeros((n, 4, 4))
    truth = pred.copy() if perfect else s * rng.standard_normal((n, 4, 4))
    return pred, pred - 1, pred + 1, truth


@pytest.mark.parametrize(("n_new", "n_leaked"), [(20, 20), (10, 30)])
def test_crc_risk_on_new_tiles_stays_under_the_leakage_bound(n_new, n_leaked):
    """Prop. 3.2: perfectly predicted leaked tiles (zero loss) lower lam_hat; the mean risk on
    new tiles over 200 calibration draws stays under alpha * (n + 1) / (n_new + 1) (3 standard
    errors), and is above alpha: the leakage matters."""
    from napari_im2im_uq.calibration.intervals import calibrate_intervals
    from napari_im2im_uq.calibration.metrics import interval_miscoverage

    alpha = 0.1
    test = _sim_tiles(np.random.default_rng(10**6), 5000)
    risks = []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        cal = [np.concatenate(pair) for pair in zip(_sim_tiles(rng, n_new),
                                                    _sim_tiles(rng, n_leaked, perfect=True))]
        result = calibrate_intervals(*cal, alpha=alpha, rule="crc")
        lo, hi = result.intervals(*test[:3])
        risks.append(interval_miscoverage(lo, hi, test[3]).mean())
    risks = np.asarray(risks)
    se = risks.std(ddof=1) / np.sqrt(len(risks))
    bound = leakage_figures(n_new + n_leaked, n_leaked, level=alpha, expectation=True)["bound"]
    assert bound == pytest.approx(alpha * (n_new + n_leaked + 1) / (n_new + 1))
    assert risks.mean() <= bound + 3 * se
    assert risks.mean() > alpha


def test_diagnose_counts_and_names_tiles_the_model_was_trained_on():
    """Held-out truth inside the training regions is kept by diagnose but named: the model's
    error there is optimistic; held-back truth gives no such note."""
    truth = np.random.default_rng(2).random((128, 128)).astype(np.float32)
    split = {"region_shape": [64, 128], "fingerprint": FINGERPRINT, "seed": 0,
             "images": [{"fingerprint": plane_fingerprints(truth)[0], "shape": [128, 128],
                         "train": [[0, 0, 64, 128]], "validation": [],
                         "held_back": [[64, 0, 128, 128]]}]}
    outputs = _outputs(truth, split)
    cal = api.calibrate(outputs, truth, regions=[_rect(64, 0, 96, 128)], **CAL)
    report = api.diagnose(cal.record, outputs, truth, regions=[_rect(0, 0, 64, 128)],
                          n_splits=5)
    assert report["tiles_in_training_regions"] == len(report["tiles"]) == 32
    notes = dict(report["summary"])
    assert "32 of the 32 tiles lie in the regions model 'mine' was trained" in notes["trained on"]
    held = api.diagnose(cal.record, outputs, truth, regions=[_rect(96, 0, 128, 128)],
                        n_splits=5)
    assert held["tiles_in_training_regions"] == 0 and len(held["tiles"]) == 16
    assert "trained on" not in dict(held["summary"])
