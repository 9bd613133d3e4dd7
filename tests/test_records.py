"""Records are a format with a schema and a checksum; the record identifies its data.

Each bad record is one line of ``BAD_RECORDS``: the method of the calibration it starts from,
the edit made by hand to its saved JSON, and a fragment of the message that must name the field.
Every case asserts the clear error (a ValueError, never a KeyError/TypeError/AttributeError
from deep inside, never a record applied with NaN, negative or infinite widths) through each
reader (``load_record``, with and without ``accept_edited``, ``apply_record`` on the dict and
the napari reader), and that the user's file is unchanged.
"""

import hashlib
import json
import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from napari_im2im_uq import Im2ImUQWarning, api
from napari_im2im_uq._reader import get_reader
from napari_im2im_uq.calibration import CalibrationResult
from napari_im2im_uq.workflows import records

# ---------------------------------------------------------------------------- calibrations


def _intervals_data(seed=0, shape=(96, 96), noise=0.05):
    rng = np.random.default_rng(seed)
    truth = rng.random(shape).astype(np.float32)
    f = truth + noise * rng.standard_normal(shape).astype(np.float32)
    return {"prediction": f, "lower": f - 0.06, "upper": f + 0.06}, truth


def _calibrate(method):
    outputs, truth = _intervals_data()
    if method == "intervals":
        return api.calibrate(outputs, truth, method="intervals", alpha=0.2, rule="crc",
                             tile_shape=(16, 16)), outputs
    if method == "intervals_rcps":
        return api.calibrate(outputs, truth, method="intervals", alpha=0.2, rule="rcps",
                             tile_shape=(16, 16)), outputs
    if method == "trust_mask":
        return api.calibrate(outputs, truth, method="trust_mask", alpha=0.3, sigma="width",
                             data_range=(-1, 2), tile_shape=(16, 16)), outputs
    if method == "mask":
        rng = np.random.default_rng(1)
        out = {"mask": rng.random(truth.shape).astype(np.float32),
               "prediction": outputs["prediction"]}
        return api.calibrate(out, truth, method="mask", alpha=0.05, beta=0.8,
                             tile_shape=(16, 16)), out
    rng = np.random.default_rng(2)
    labels = rng.integers(1, 4, size=truth.shape)
    logits = rng.normal(size=(3, *truth.shape)) + 2.0 * np.eye(3)[labels - 1].transpose(2, 0, 1)
    p = np.exp(logits) / np.exp(logits).sum(axis=0)
    out = {"probabilities": p.astype(np.float32)}
    return api.calibrate(out, labels, method="segmentation", alpha=0.2, rule="crc",
                         tile_shape=(16, 16)), out


@pytest.fixture(scope="module")
def calibrated():
    """One calibration per method (made once), with the outputs it was made on."""
    return {m: _calibrate(m) for m in ("intervals", "intervals_rcps", "trust_mask", "mask",
                                       "segmentation")}


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _edited(record, edit):
    """Return a deep copy of ``record`` with one hand edit: ("set", "a.b.0", value) or ("del", ...)."""
    rec = json.loads(json.dumps(record))
    op, path, *value = edit
    *parents, last = path.split(".")
    node = rec
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        last = int(last)
    if op == "del":
        del node[last]
    elif op == "cut":  # drop the last item of a list
        node[last] = node[last][:-1]
    else:
        node[last] = value[0]
    return rec


NAN = float("nan")

# (method it starts from, hand edit, fragment of the message)
BAD_RECORDS = [
    # the calibrated parameter
    ("intervals", ("set", "calibration.lam", NAN),
     r"calibration\.lam must be a number in \[0, 1e\+12\] \(finite\) for the 'intervals' method;"
     r" got nan"),
    ("intervals", ("set", "calibration.lam", "nan"), r"calibration\.lam must be a number .* got 'nan'"),
    ("intervals", ("set", "calibration.lam", -0.5),
     r"calibration\.lam must be a number in \[0, .* got -0\.5"),
    ("intervals", ("set", "calibration.lam", 1e308), r"calibration\.lam must be .* got 1e\+308"),
    ("intervals", ("set", "calibration.lam", "inf"),
     r"calibration\.lam must be .*\(finite\).* got 'inf'"),
    ("intervals", ("set", "calibration.lam", "big"), r"calibration\.lam must be a number .* got 'big'"),
    ("intervals", ("set", "calibration.lam", None), r"calibration\.lam must be a number .* got None"),
    ("intervals", ("set", "calibration.lam", True), r"calibration\.lam must be a number .* got True"),
    ("intervals", ("set", "calibration.lam", [1.0]), r"calibration\.lam must be a number .* got 'list'"),
    ("trust_mask", ("set", "calibration.lam", NAN),
     r"calibration\.lam must be .*'inf' or '-inf' for the 'trust_mask' method; got nan"),
    ("trust_mask", ("set", "calibration.lam", 1e308),
     r"calibration\.lam must be a number in \[-1e\+30, 1e\+30\]"),
    ("segmentation", ("set", "calibration.lam", 1.5),
     r"calibration\.lam must be a number in \[0, 1\] \(finite\) for the 'segmentation'"),
    ("segmentation", ("set", "calibration.lam", -0.1), r"calibration\.lam must be a number in \[0, 1\]"),
    ("mask", ("set", "calibration.lam", -1),
     r"calibration\.lam must be a number in \[0, 1e\+12\] or 'inf' for the 'mask'"),
    # levels
    ("intervals", ("set", "calibration.alpha", 5),
     r"calibration\.alpha must be a number in \(0, 1\) \(a fraction\); got 5"),
    ("intervals", ("set", "calibration.alpha", 0), r"calibration\.alpha must be a number in \(0, 1\)"),
    ("intervals", ("set", "calibration.alpha", -0.1), r"calibration\.alpha must be .* got -0\.1"),
    ("intervals", ("set", "calibration.alpha", "0.1"), r"calibration\.alpha must be .* got '0\.1'"),
    ("trust_mask", ("set", "calibration.alpha", 5),
     r"calibration\.alpha must be a number in \(0, 3\) \(the tolerated error, below loss_bound\);"
     r" got 5"),
    ("intervals_rcps", ("set", "calibration.delta", 1.5),
     r"calibration\.delta must be a number in \(0, 1\)"),
    ("intervals_rcps", ("set", "calibration.delta", None),
     r"calibration\.delta must be a number in \(0, 1\) for rule 'rcps'; got None"),
    ("intervals_rcps", ("set", "calibration.bound", "chebyshev"),
     r"calibration\.bound must be one of 'hoeffding', 'hoeffding_bentkus', 'wsr'; got 'chebyshev'"),
    ("intervals", ("set", "calibration.rule", "rcps"),
     r"calibration\.delta must be a number in \(0, 1\) for rule 'rcps'"),
    ("mask", ("set", "calibration.beta", 1.5), r"calibration\.beta must be a number in \(0, 1\)"),
    ("mask", ("set", "calibration.beta", None),
     r"calibration\.beta must be a number in \(0, 1\) for rule 'conformal'"),
    # counts, types, names
    ("intervals", ("set", "calibration.n", "many"),
     r"calibration\.n must be an integer >= 1; got 'many'"),
    ("intervals", ("set", "calibration.n", 0), r"calibration\.n must be an integer >= 1; got 0"),
    ("intervals", ("set", "calibration.n", 2.5), r"calibration\.n must be an integer >= 1; got 2\.5"),
    ("intervals", ("set", "calibration.n", 35),
     r"record\.tiles_world must list the 35 calibration tiles \(calibration\.n\); got 36"),
    ("intervals", ("set", "calibration.method", "magic"),
     r"calibration\.method must be one of 'intervals', 'trust_mask', 'mask', 'segmentation'; got"
     r" 'magic'"),
    ("intervals", ("set", "calibration.method", 3), r"calibration\.method must be one of .* got 3"),
    ("intervals", ("set", "calibration.rule", "magic"),
     r"calibration\.rule must be one of 'rcps', 'crc'; got 'magic'"),
    ("intervals", ("set", "calibration.loss", "mse"),
     r"calibration\.loss must be one of 'miscoverage'; got 'mse'"),
    ("intervals", ("set", "calibration.valid", "yes"),
     r"calibration\.valid must be true or false; got 'yes'"),
    ("intervals", ("set", "calibration.guarantee", 7),
     r"calibration\.guarantee must be a string; got 7"),
    ("intervals", ("set", "calibration.tile_shape", "16"),
     r"calibration\.tile_shape must be a list of 1 to 3 positive integers"),
    ("intervals", ("set", "calibration.tile_shape", [16, -16]),
     r"calibration\.tile_shape must be a list of 1 to 3 positive integers"),
    ("intervals", ("set", "calibration.loss_bound", -1),
     r"calibration\.loss_bound must be a number > 0"),
    ("intervals", ("set", "calibration.empirical_risk", NAN),
     r"calibration\.empirical_risk must be a number >= 0"),
    ("intervals", ("set", "calibration.curve", "x"),
     r"calibration\.curve must be a dict of lists of numbers"),
    ("intervals", ("set", "calibration.curve.lam", [0.1, "x"]),
     r"calibration\.curve\.lam\[1\] must be a number"),
    ("intervals", ("set", "calibration.params", []), r"calibration\.params must be a dict; got 'list'"),
    ("intervals", ("set", "calibration.params", {"seed": -1}),
     r"calibration\.params\.seed must be an integer >= 0; got -1"),
    # missing and unknown keys, versions
    ("intervals", ("del", "calibration.lam"),
     r"calibration is missing the field\(s\) lam \(a result needs"),
    ("intervals", ("del", "calibration.method"), r"calibration is missing the field\(s\) method"),
    ("intervals", ("set", "calibration.lam_hat", 1.0), r"calibration has unknown field\(s\) lam_hat"),
    ("intervals", ("set", "calibration.format_version", 2),
     r"calibration\.format_version must be 1 .* got 2"),
    ("intervals", ("set", "calibration", "x"),
     r"record\.calibration must be a dict from CalibrationResult\.to_dict; got 'x'"),
    ("intervals", ("del", "calibration"), r"record is missing the field\(s\) calibration"),
    ("intervals", ("set", "version", 3), r"record\.version must be one of \[1, 2\] .* got 3"),
    ("intervals", ("set", "version", "2"), r"record\.version must be an integer >= 1; got '2'"),
    ("intervals", ("set", "format", "another tool's record"), r"calibration record"),
    # the method's parameters
    ("trust_mask", ("set", "calibration.params.fidelity", "psychic"),
     r"calibration\.params\.fidelity must be one of 'pointwise', 'blurred', 'given'; got 'psychic'"),
    ("trust_mask", ("del", "calibration.params.fidelity"),
     r"calibration\.params is missing the key 'fidelity' that a 'trust_mask' result needs"),
    ("trust_mask", ("set", "calibration.params.data_range", [2, 1]),
     r"calibration\.params\.data_range must be a \[low, high\] pair"),
    ("trust_mask", ("set", "calibration.loss", "fidelity_blurred"),
     r"calibration\.loss must be 'fidelity_pointwise' \(params\.fidelity is 'pointwise'\)"),
    ("trust_mask", ("set", "calibration.params.fidelity", "blurred"),
     r"calibration\.loss must be 'fidelity_blurred'"),
    ("mask", ("set", "calibration.params.eps", -1), r"calibration\.params\.eps must be a number > 0"),
    ("mask", ("set", "calibration.params.distance", "ssim"),
     r"calibration\.loss must be 'distortion_ssim_above_alpha'"),
    ("segmentation", ("set", "calibration.params.n_classes", "two"),
     r"calibration\.params\.n_classes must be an integer >= 1; got 'two'"),
    ("segmentation", ("set", "calibration.params.scores_are", "odds"),
     r"calibration\.params\.scores_are must be one of 'probabilities', 'logits'"),
    ("segmentation", ("set", "calibration.loss", "coverage_ratio"),
     r"calibration\.params\.tau must be a number in \(0, 1\] for loss 'coverage_ratio'"),
    # the record around the result
    ("intervals", ("del", "tiles_world"), r"record is missing the field\(s\) tiles_world"),
    ("intervals", ("cut", "tiles_world"),
     r"record\.tiles_world must list the 36 calibration tiles \(calibration\.n\); got 35"),
    ("intervals", ("set", "tiles_world.0", [0, 0]),
     r"record\.tiles_world\[0\] must be \[start\.\.\., stop\.\.\.\]: 4 or 6 numbers"),
    ("intervals", ("set", "tiles_world.0.0", "a"), r"record\.tiles_world\[0\]\[0\] must be a number"),
    ("intervals", ("set", "tiles_world.0.0", 99.0),
     r"record\.tiles_world\[0\] must have each start below its stop"),
    ("intervals", ("set", "tile_shape", "16"),
     r"record\.tile_shape must be two positive integers \(rows, columns\); got '16'"),
    ("intervals", ("set", "tile_shape", [32, 32]),
     r"record\.tile_shape must be the calibration's tile shape \[16, 16\]; got \[32, 32\]"),
    ("intervals", ("set", "scale", [0, 1]), r"record\.scale must be a list of non-zero numbers"),
    ("intervals", ("set", "translate", "x"), r"record\.translate must be a list of 2 numbers; got 'x'"),
    ("intervals", ("set", "model", "abc"),
     r"record\.model must be a dict \(name, sha256, \.\.\.\) or null; got str"),
    ("intervals", ("set", "model", {"name": "m", "sha256": 123}),
     r"record\.model\.sha256 must be a hex digest; got 123"),
    ("intervals", ("set", "guarantee", 5), r"record\.guarantee must be a string; got 5"),
    ("intervals", ("set", "truth_range", [1, 0]),
     r"record\.truth_range must be \[low, high\] with low <= high"),
    ("intervals", ("set", "drift_summary", "x"), r"record\.drift_summary must be a dict; got str"),
    ("intervals", ("del", "checksum"),
     r"record is missing the field\(s\) checksum \(a version 2 record needs"),
    ("intervals", ("set", "checksum", "abc"),
     r"record\.checksum must be \{'sha256': <64 hex digits>\}; got 'abc'"),
    ("intervals", ("cut", "tiles_fingerprint.truth"),
     r"record\.tiles_fingerprint must be .* one 16-digit hex fingerprint per calibration tile"
     r" \(36\); got 35"),
]


def _case_id(case):
    method, (op, path, *value), _ = case
    shown = "" if not value else f"={value[0]!r}"[:20]
    return f"{method}-{op}-{path}{shown}"


@pytest.mark.parametrize("case", BAD_RECORDS, ids=[_case_id(c) for c in BAD_RECORDS])
def test_a_bad_record_is_refused_naming_the_field_and_left_unchanged(calibrated, tmp_path, case):
    method, edit, fragment = case
    cal, outputs = calibrated[method]
    bad = _edited(cal.record, edit)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(bad, indent=1), encoding="utf-8")
    before = _sha(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused, not accepted with a warning
        with pytest.raises(ValueError, match=fragment):
            api.load_record(path)
        with pytest.raises(ValueError, match=fragment):
            api.load_record(path, accept_edited=True)  # accepting an edit is not a schema pass
        with pytest.raises(ValueError, match=fragment):
            api.apply_record(bad, outputs)
        reader = get_reader(str(path))
        if reader is not None:
            with pytest.raises(ValueError, match=fragment):
                reader(str(path))
    assert _sha(path) == before


def test_the_table_covers_every_method_and_enough_cases():
    assert len(BAD_RECORDS) >= 35
    assert {m for m, _, _ in BAD_RECORDS} >= {"intervals", "trust_mask", "mask", "segmentation"}


def test_from_dict_is_the_same_validator_and_names_its_argument(calibrated):
    cal, _ = calibrated["intervals"]
    data = dict(cal.result.to_dict(), lam=-1.0)
    with pytest.raises(ValueError, match=r"data\.lam must be a number in \[0, 1e\+12\]"):
        CalibrationResult.from_dict(data)
    with pytest.raises(ValueError, match=r"data must be a dict"):
        CalibrationResult.from_dict(["not", "a", "dict"])
    for method, (cal, _) in calibrated.items():  # every real result passes and round-trips
        text = json.dumps(cal.result.to_dict(), allow_nan=False)
        assert CalibrationResult.from_dict(json.loads(text)) == cal.result, method


# ---------------------------------------------------------------------------- the checksum


def test_every_record_is_sealed_and_round_trips(calibrated, tmp_path):
    for method, (cal, outputs) in calibrated.items():
        rec = cal.record
        assert rec["version"] == records.RECORD_VERSION == 2
        assert rec["checksum"]["sha256"] == records.content_checksum(rec), method
        assert len(rec["tiles_fingerprint"]["truth"]) == cal.result.n
        path = tmp_path / f"{method}.json"
        api.save_record(cal, path)
        assert api.load_record(path) == json.loads(json.dumps(rec)), method


def test_an_edited_record_is_refused_naming_the_checksum_then_accepted_explicitly(
        calibrated, tmp_path):
    cal, outputs = calibrated["intervals"]
    path = tmp_path / "r.json"
    api.save_record(cal, path)
    rec = json.loads(path.read_text())
    rec["calibration"]["lam"] = rec["calibration"]["lam"] * 0.5  # valid, but not what was found
    path.write_text(json.dumps(rec, indent=1))
    before = _sha(path)
    with pytest.raises(ValueError, match=r"record\.checksum does not match the record's "
                                         r"content: the record was edited after calibration "
                                         r".*accept_edited=True"):
        api.load_record(path)
    with pytest.raises(ValueError, match="checksum does not match"):
        api.apply_record(str(path), outputs)
    with pytest.raises(ValueError, match="checksum does not match"):
        get_reader(str(path))(str(path))
    with pytest.raises(ValueError, match="checksum does not match"):
        api.apply_record(rec, outputs)  # an edited dict too
    with pytest.warns(Im2ImUQWarning, match="edited after calibration.*accepted as asked"):
        accepted = api.load_record(path, accept_edited=True)
    assert _sha(path) == before
    assert accepted["checksum"]["edited_from"] == cal.record["checksum"]["sha256"]
    assert accepted["calibration"]["lam"] == rec["calibration"]["lam"]
    (width, _, _), = api.apply_record(accepted, outputs)  # accepted once: used without a warning
    (full, _, _), = api.apply_record(cal.record, outputs)
    assert np.nanmax(width) < np.nanmax(full)  # the edited lam is the one applied
    again = tmp_path / "accepted.json"
    api.save_record(accepted, again)  # the trail is kept: loading it says it was edited
    with pytest.warns(Im2ImUQWarning, match="edited after calibration and the edit accepted"):
        api.load_record(again)


def test_a_record_changed_in_memory_is_refused_until_sealed(calibrated):
    cal, outputs = calibrated["intervals"]
    rec = json.loads(json.dumps(cal.record))
    rec["guarantee"] = "always right"
    with pytest.raises(ValueError, match="checksum does not match"):
        api.apply_record(rec, outputs)
    with pytest.raises(ValueError, match="checksum does not match"):
        api.diagnose(rec, outputs, _intervals_data()[1], n_splits=3)
    records.seal(rec)  # whoever reseals vouches for it
    api.apply_record(rec, outputs)


def test_a_record_written_before_checksums_loads_with_a_warning(tmp_path):
    outputs, truth = _intervals_data(shape=(128, 128))
    left = [np.array([[0, 0], [0, 64], [128, 64], [128, 0]], float)]
    cal = api.calibrate(outputs, truth, method="intervals", alpha=0.3, rule="crc",
                        tile_shape=(16, 16), regions=left)
    old = {k: v for k, v in cal.record.items()
           if k not in ("checksum", "tiles_fingerprint", "drift_summary")}
    old["version"] = 1
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    with pytest.warns(Im2ImUQWarning, match="written before records carried a checksum .*cannot "
                                            "be verified"):
        rec = api.load_record(path)
    assert rec["calibration"] == cal.record["calibration"]
    with pytest.warns(Im2ImUQWarning, match="cannot be verified"):
        report = api.diagnose(old, outputs, truth, n_splits=3)
    assert report["calibration_tiles_left_out"] == 32  # by position, as before
    assert any("position only" in text for _, text in report["summary"])


# ---------------------------------------------------------------------------- the napari reader


def _write(path, content):
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


HOSTILE_FILES = [
    ("nested", "[" * 200_000 + "]" * 200_000),
    ("nested_dict", '{"a":' * 100_000 + "1" + "}" * 100_000),
    ("not_json", "this is not JSON"),
    ("not_utf8", b"\xff\xfe\x00garbage"),
    ("empty", ""),
    ("a_list", "[1, 2, 3]"),
    ("a_number", "1e999"),
    ("other_dict", '{"format": "someone else"}'),
    ("format_not_str", '{"format": ["napari-im2im-uq calibration record"]}'),
]


@pytest.mark.parametrize(("name", "content"), HOSTILE_FILES, ids=[n for n, _ in HOSTILE_FILES])
def test_the_reader_answers_none_for_a_foreign_or_hostile_file(tmp_path, name, content):
    path = _write(tmp_path / f"{name}.json", content)
    before = _sha(path)
    assert get_reader(str(path)) is None
    assert get_reader([str(path)]) is None
    assert _sha(path) == before


def test_the_reader_checks_the_size_before_reading_and_refuses_odd_paths(tmp_path):
    huge = tmp_path / "huge.json"
    with open(huge, "wb") as fh:  # sparse: no disk used, but too large to parse
        fh.truncate(records.MAX_RECORD_BYTES + 1)
    assert get_reader(str(huge)) is None
    with pytest.raises(ValueError, match="at most .* bytes"):
        api.load_record(huge)
    folder = tmp_path / "folder.json"
    folder.mkdir()
    for path in (str(folder), str(tmp_path / "missing.json"), None, 3, ["a.json", "b.json"],
                 str(tmp_path / "record.txt")):
        assert get_reader(path) is None
    nested = _write(tmp_path / "deep.json", "[" * 200_000 + "]" * 200_000)
    with pytest.raises(ValueError, match="nested too deeply"):
        api.load_record(nested)


# ------------------------------------------------------------ the data it was calibrated on


def test_diagnose_leaves_out_only_tiles_with_the_same_position_and_the_same_data():
    outputs, truth = _intervals_data(seed=0, shape=(128, 128))
    left = [np.array([[0, 0], [0, 64], [128, 64], [128, 0]], float)]
    cal = api.calibrate(outputs, truth, method="intervals", alpha=0.2, rule="crc",
                        tile_shape=(16, 16), regions=left)
    same = api.diagnose(cal.record, outputs, truth, n_splits=3)
    assert same["calibration_tiles_left_out"] == 32 and len(same["tiles"]) == 32
    other_out, other_truth = _intervals_data(seed=7, shape=(128, 128))  # another volume
    other = api.diagnose(cal.record, other_out, other_truth, n_splits=3)
    assert other["calibration_tiles_left_out"] == 0 and len(other["tiles"]) == 64
    assert other["calibration_tiles_with_other_data"] == 32
    assert any(label == "other data" for label, _ in other["summary"])
    here = api.diagnose(cal.record, other_out, other_truth, regions=left, n_splits=3)
    assert len(here["tiles"]) == 32 and here["tiles_used_to_calibrate"] == 0  # not refused
    changed = truth.copy()
    changed[:16, :16] += 1.0  # one calibration tile's ground truth differs
    some = api.diagnose(cal.record, outputs, changed, n_splits=3)
    assert some["calibration_tiles_left_out"] == 31
    assert some["calibration_tiles_with_other_data"] == 1


def test_fingerprints_read_values_not_dtypes():
    labels = np.arange(64, dtype=np.uint8).reshape(8, 8)
    origins = np.array([[0, 0, 0], [0, 4, 4]])
    a = records.tile_fingerprints(labels, origins, (4, 4))
    assert a == records.tile_fingerprints(labels.astype(np.int64), origins, (4, 4))
    assert a[0] != a[1] and all(len(h) == 16 for h in a)


def _layer(data, model):
    meta = {"im2im_uq": {"model": model}} if model else {}
    return SimpleNamespace(data=data, metadata=meta, name="out", scale=(1.0, 1.0),
                           translate=(0.0, 0.0))


def test_diagnose_and_apply_warn_when_the_outputs_come_from_another_model():
    outputs, truth = _intervals_data(shape=(128, 128))
    mine = {"name": "mine", "sha256": "a" * 64}
    theirs = {"name": "theirs", "sha256": "b" * 64}
    left = [np.array([[0, 0], [0, 64], [128, 64], [128, 0]], float)]
    cal = api.calibrate({k: _layer(v, mine) for k, v in outputs.items()}, truth,
                        method="intervals", alpha=0.2, rule="crc", tile_shape=(16, 16),
                        regions=left)
    assert cal.record["model"]["sha256"] == "a" * 64
    other = {k: _layer(v, theirs) for k, v in outputs.items()}
    with pytest.warns(Im2ImUQWarning, match="calibrated for model mine .* theirs .* does not "
                                            "carry over"):
        api.apply_record(cal.record, other)
    with pytest.warns(Im2ImUQWarning, match="calibrated for model mine .* does not carry over"):
        api.diagnose(cal.record, other, truth, n_splits=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        api.diagnose(cal.record, {k: _layer(v, mine) for k, v in outputs.items()}, truth,
                     n_splits=3)


# ---------------------------------------------------------------------------- the loud figure


def test_a_held_out_risk_above_the_target_is_the_loudest_figure():
    from matplotlib.figure import Figure

    outputs, truth = _intervals_data(seed=0, shape=(128, 128))
    left = [np.array([[0, 0], [0, 64], [128, 64], [128, 0]], float)]
    cal = api.calibrate(outputs, truth, method="intervals", alpha=0.1, rule="crc",
                        tile_shape=(16, 16), regions=left)
    shifted, shifted_truth = _intervals_data(seed=3, shape=(128, 128), noise=0.15)  # a shift
    with pytest.warns(Im2ImUQWarning, match=r"held-out risk of this record: .* \+/- .*ABOVE the "
                                            r"target by .* standard errors"):
        report = api.diagnose(cal.record, shifted, shifted_truth, n_splits=20)
    held = report["held_out"]
    assert not held["meets_target"] and not held["within_error"]
    assert held["mean"] > 0.1 + 2 * held["standard_error"] > 0.1
    label, text = report["summary"][0]
    assert label == "held-out risk"
    assert "+/-" in text and "ABOVE the target" in text and "Monte-Carlo" in text
    split_text = dict(report["summary"])["split risk"]
    assert split_text.startswith("re-calibrated on random halves of the held-out tiles: the "
                                 "spread of the guarantee, not a test of this record")
    fig = Figure()
    axes = api.plot_diagnostics(report, fig)
    assert "ABOVE the target" in " ".join(fig._suptitle.get_text().split())  # wrapped
    assert "not a test of this record" in axes[0].get_title()


def test_a_held_out_risk_within_the_target_says_so_quietly():
    outputs, truth = _intervals_data(seed=0, shape=(128, 128))
    left = [np.array([[0, 0], [0, 64], [128, 64], [128, 0]], float)]
    cal = api.calibrate(outputs, truth, method="intervals", alpha=0.3, rule="crc",
                        tile_shape=(16, 16), regions=left)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = api.diagnose(cal.record, outputs, truth, n_splits=5)
    assert report["held_out"]["meets_target"]
    assert report["summary"][0][1].endswith("meets the target")
    assert math.isfinite(report["held_out"]["standard_error"])


@pytest.mark.parametrize(("losses", "meets", "within"), [
    ([0.05, 0.1, 0.15, 0.1], True, True),  # mean 0.1 = target
    ([0.0, 0.3, 0.0, 0.2, 0.1, 0.08], False, True),  # 0.113: above, by 0.3 standard errors
    ([0.2, 0.1, 0.3, 0.2], False, False),  # 0.2: above by 2.4 standard errors
])
def test_the_held_out_verdict_weighs_the_excess_against_its_monte_carlo_error(losses, meets,
                                                                              within):
    from napari_im2im_uq.calibration.diagnostics import held_out_verdict

    v = held_out_verdict(losses, 0.1, what="miscoverage")
    se = np.std(losses, ddof=1) / math.sqrt(len(losses))
    assert v["standard_error"] == pytest.approx(se)
    assert (v["meets_target"], v["within_error"]) == (meets, within)
    assert ("ABOVE" in v["message"]) == (not meets)
    assert ("within the Monte-Carlo error" in v["message"]) == (within and not meets)


def test_a_volume_calibrated_whole_is_not_refused_on_another_volume():
    """The issue's case: every tile of the other volume sits at a calibration tile's position."""
    a_out, a_truth = _intervals_data(seed=1, shape=(2, 64, 64))
    b_out, b_truth = _intervals_data(seed=2, shape=(2, 64, 64))
    cal = api.calibrate(a_out, a_truth, method="intervals", alpha=0.3, rule="crc",
                        tile_shape=(16, 16))
    assert cal.result.n == 32
    with pytest.raises(ValueError, match="no held-out ground truth"):
        api.diagnose(cal.record, a_out, a_truth, n_splits=3)  # the same volume: all seen
    report = api.diagnose(cal.record, b_out, b_truth, n_splits=3)
    assert len(report["tiles"]) == 32 and report["calibration_tiles_left_out"] == 0
    assert report["calibration_tiles_with_other_data"] == 32


@pytest.mark.realdata
def test_isbi_slices_15_to_29_against_a_record_of_slices_0_to_14():
    """Real shift (the issue's example): the held-out risk is loud, no tile is dropped."""
    from napari_im2im_uq.data import degrade_tem, load_isbi2012, shared_data_root

    if shared_data_root() is None:
        pytest.skip("../shared/data not found")
    raw = load_isbi2012()["raw"]
    outs = api.predict("tem-sr4x-quantile", degrade_tem(raw, factor=4, mode="area"),
                       device="cpu")
    arrs = {kw["name"].split(" (")[0]: np.asarray(d) for d, kw, _ in outs}
    first = {k: arrs[k][:15] for k in ("prediction", "lower", "upper")}
    second = {k: arrs[k][15:] for k in ("prediction", "lower", "upper")}
    cal = api.calibrate(first, raw[:15], method="intervals", alpha=0.1, rule="crc",
                        tile_shape=(64, 64))
    with pytest.warns(Im2ImUQWarning, match="ABOVE the target by"):
        report = api.diagnose(cal.record, second, raw[15:], n_splits=20)
    assert report["calibration_tiles_left_out"] == 0 and len(report["tiles"]) == cal.result.n
    held = report["held_out"]
    assert held["mean"] > 0.1 + 2 * held["standard_error"]  # measured: 0.163 +/- 0.0009
    assert report["summary"][0][0] == "held-out risk"
