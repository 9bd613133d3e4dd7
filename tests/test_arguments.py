"""Arguments are checked once, at the surface, with one vocabulary.

Every public function of ``api`` and every command-line command answers a bad argument with a
message that names the argument (the flag, on the command line), says what was expected and
what was received. The cases are data tables: a new case is one line.
"""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from napari_im2im_uq import Im2ImUQWarning, api
from napari_im2im_uq.cli import main

MODEL = "tem-sr4x-quantile"
RNG = np.random.default_rng(0)
TRUTH = RNG.random((64, 64)).astype(np.float32)
F = TRUTH + np.float32(0.05)
OUT = {"prediction": F, "lower": F - np.float32(0.1), "upper": F + np.float32(0.1)}
IMG = np.zeros((16, 16), np.float32)
T16 = {"tile_shape": (16, 16)}


@pytest.fixture(scope="module")
def record():
    return api.calibrate(OUT, TRUTH, alpha=0.2, rule="crc", **T16).record


# (id, call taking the fixture record, regex: the argument's name, the expectation, the value)
API_CASES = [
    # predict: tile shapes are pairs of positive integers, counts positive integers
    ("predict-tile-string", lambda r: api.predict(MODEL, IMG, tile_shape="64"),
     r"tile_shape must be two positive integers \(rows, columns\); got '64'"),
    ("predict-tile-fraction", lambda r: api.predict(MODEL, IMG, tile_shape=(16.7, 16)),
     r"tile_shape must be two positive integers .*; got \(16\.7, 16\)"),
    ("predict-tile-negative", lambda r: api.predict(MODEL, IMG, tile_shape=(-3, 16)),
     r"tile_shape must be two positive integers .*; got \(-3, 16\)"),
    ("predict-tile-three", lambda r: api.predict(MODEL, IMG, tile_shape=(16, 16, 16)),
     r"tile_shape must be two positive integers .*; got \(16, 16, 16\)"),
    ("predict-batch-zero", lambda r: api.predict(MODEL, IMG, batch_size=0),
     r"batch_size must be a positive integer or None; got 0"),
    ("predict-batch-fraction", lambda r: api.predict(MODEL, IMG, batch_size=2.5),
     r"batch_size must be a positive integer or None; got 2\.5"),
    ("predict-device", lambda r: api.predict(MODEL, IMG, device="gpu"), r"device must be .*'gpu'"),
    ("predict-precision", lambda r: api.predict(MODEL, IMG, precision="float8"),
     r"precision must be .*'float8'"),
    ("predict-output", lambda r: api.predict(MODEL, IMG, output="disk"),
     r"output must be 'auto', 'memory', 'lazy' or 'zarr'; got 'disk'"),
    ("predict-axes", lambda r: api.predict(MODEL, IMG, axes="QX"), r"axes .*'QX'"),
    ("predict-model-type", lambda r: api.predict(42, IMG),
     r"model must be the name of a model in the zoo, a bundle folder or an Im2ImModel; got int"),
    ("predict-overwrite-string", lambda r: api.predict(MODEL, IMG, overwrite="no"),
     r"overwrite must be True or False; got 'no'"),
    ("predict-image-string", lambda r: api.predict(MODEL, "abc"),
     r"image must be a real numeric array; got dtype <U3"),
    ("predict-model-unknown", lambda r: api.predict("no-such-model", IMG),
     r"must be a bundle folder or one of the known models .*; got 'no-such-model'"),
    ("predict-image-none", lambda r: api.predict(MODEL, None), r"image .*None"),
    ("predict-store-without-zarr", lambda r: api.predict(MODEL, IMG, output="memory", store="x"),
     r"store must be given exactly when output is 'zarr'; got output='memory', store='x'"),
    # calibrate, self_check: levels in (0, 1), tile shapes, names from the registry
    ("calibrate-alpha-above-one", lambda r: api.calibrate(OUT, TRUTH, alpha=1.5, **T16),
     r"alpha must be in \(0, 1\); got 1\.5"),
    ("calibrate-alpha-zero", lambda r: api.calibrate(OUT, TRUTH, alpha=0, **T16),
     r"alpha must be in \(0, 1\); got 0"),
    ("calibrate-alpha-string", lambda r: api.calibrate(OUT, TRUTH, alpha="0.1", **T16),
     r"alpha must be a number in \(0, 1\); got '0\.1'"),
    ("calibrate-delta-one", lambda r: api.calibrate(OUT, TRUTH, delta=1, **T16),
     r"delta must be in \(0, 1\); got 1"),
    ("calibrate-tile-string", lambda r: api.calibrate(OUT, TRUTH, tile_shape="64"),
     r"tile_shape must be two positive integers .*; got '64'"),
    ("calibrate-tile-fraction", lambda r: api.calibrate(OUT, TRUTH, tile_shape=(16.7, 16)),
     r"tile_shape must be two positive integers .*; got \(16\.7, 16\)"),
    ("calibrate-method", lambda r: api.calibrate(OUT, TRUTH, method="nope", **T16),
     r"method must be one of .*; got 'nope'"),
    ("calibrate-rule", lambda r: api.calibrate(OUT, TRUTH, rule="nope", **T16),
     r"rule must be .*'nope'"),
    ("calibrate-bound", lambda r: api.calibrate(OUT, TRUTH, bound="nope", **T16),
     r"bound must be .*'nope'"),
    ("calibrate-outputs-list", lambda r: api.calibrate([F], TRUTH, **T16),
     r"outputs must be a dict .*; got list"),
    ("calibrate-truth-shape", lambda r: api.calibrate(OUT, TRUTH[:10], **T16),
     r"truth must be on the prediction's grid: shape \(64, 64\); got shape \(10, 64\)"),
    ("calibrate-seed-negative", lambda r: api.calibrate(OUT, TRUTH, rule="crc", seed=-1, **T16),
     r"seed must be an integer >= 0; got -1"),
    ("calibrate-seed-word", lambda r: api.calibrate(OUT, TRUTH, rule="crc", seed="x", **T16),
     r"seed must be an integer >= 0; got 'x'"),
    ("calibrate-show-bounds", lambda r: api.calibrate(OUT, TRUTH, rule="crc", show_bounds="yes",
                                                      **T16),
     r"show_bounds must be True or False; got 'yes'"),
    ("calibrate-beta", lambda r: api.calibrate({"mask": F * 0 + 0.5, "prediction": F}, TRUTH,
                                               method="mask", beta=2, **T16),
     r"beta must be in \(0, 1\); got 2"),
    ("calibrate-distance", lambda r: api.calibrate({"mask": F * 0 + 0.5, "prediction": F}, TRUTH,
                                                   method="mask", distance="l3", **T16),
     r"distance must be one of .*; got 'l3'"),
    ("calibrate-data-range-string",
     lambda r: api.calibrate({"prediction": F, "std": F * 0 + 0.1}, TRUTH, method="trust_mask",
                             alpha=0.2, data_range="01", **T16),
     r"data_range must be \(low, high\): two finite numbers with low < high; got '01'"),
    ("calibrate-data-range-reversed",
     lambda r: api.calibrate({"prediction": F, "std": F * 0 + 0.1}, TRUTH, method="trust_mask",
                             alpha=0.2, data_range=(1, 0), **T16),
     r"data_range must be \(low, high\).*; got \(1, 0\)"),
    ("calibrate-regions-string", lambda r: api.calibrate(OUT, TRUTH, rule="crc", regions="x", **T16),
     r"regions must be a Shapes layer or a list of rectangles.*; got 'x'"),
    ("calibrate-regions-not-corners",
     lambda r: api.calibrate(OUT, TRUTH, rule="crc", regions=[[1, 2]], **T16),
     r"regions must be .*; got region 0 = \[1, 2\]"),
    ("calibrate-progress", lambda r: api.calibrate(OUT, TRUTH, rule="crc", progress="x", **T16),
     r"progress must be None or a callable taking \(done, total\); got 'x'"),
    ("predict-progress", lambda r: api.predict(MODEL, IMG, progress=3),
     r"progress must be None or a callable .*; got 3"),
    ("predict-second-image-shape", lambda r: api.predict(MODEL, IMG, second_image=IMG[:4]),
     r"second_image must have the shape of image \(16, 16\); got \(4, 16\)"),
    ("self-check-regions-number", lambda r: api.self_check(OUT, TRUTH, regions=5, **T16),
     r"regions must be .*; got 5"),
    ("diagnose-leave-out-string", lambda r: api.diagnose(r, OUT, TRUTH, leave_out_calibration="no"),
     r"leave_out_calibration must be True or False; got 'no'"),
    ("self-check-seed-fraction", lambda r: api.self_check(OUT, TRUTH, seed=1.5, **T16),
     r"seed must be an integer >= 0; got 1\.5"),
    ("self-check-alpha", lambda r: api.self_check(OUT, TRUTH, alpha=2, **T16),
     r"alpha must be in \(0, 1\); got 2"),
    ("self-check-tile-zero", lambda r: api.self_check(OUT, TRUTH, tile_shape=(0, 16)),
     r"tile_shape must be two positive integers .*; got \(0, 16\)"),
    # tiles
    ("plan-tiles-count-zero", lambda r: api.plan_tiles(TRUTH, tile_shape=(16, 16), n_tiles=0),
     r"n_tiles must be an integer >= 1; got 0"),
    ("plan-tiles-count-fraction",
     lambda r: api.plan_tiles(TRUTH, tile_shape=(16, 16), n_tiles=2.5),
     r"n_tiles must be an integer >= 1; got 2\.5"),
    ("plan-tiles-too-many", lambda r: api.plan_tiles(TRUTH, tile_shape=(16, 16), n_tiles=17),
     r"n_tiles must be at most the 16 whole tiles .*; got 17"),
    ("plan-tiles-tile-string", lambda r: api.plan_tiles(TRUTH, tile_shape="16"),
     r"tile_shape must be two positive integers .*; got '16'"),
    ("plan-tiles-seed", lambda r: api.plan_tiles(TRUTH, tile_shape=(16, 16), n_tiles=3, seed="x"),
     r"seed must be an integer >= 0; got 'x'"),
    ("plan-tiles-seed-negative",
     lambda r: api.plan_tiles(TRUTH, tile_shape=(16, 16), n_tiles=3, seed=-1),
     r"seed must be an integer >= 0; got -1"),
    ("calibration-tiles-fraction", lambda r: api.calibration_tiles((64, 64), (16.5, 16)),
     r"tile_shape must be two positive integers .*; got \(16\.5, 16\)"),
    ("calibration-tiles-shape", lambda r: api.calibration_tiles((64,), (16, 16)),
     r"shape must be \(rows, columns\) or \(planes, rows, columns\) of positive integers; "
     r"got \(64,\)"),
    ("calibration-tiles-negative", lambda r: api.calibration_tiles((-64, 64), (16, 16)),
     r"shape must be .* of positive integers; got \(-64, 64\)"),
    # diagnose, apply_record, records
    ("diagnose-splits-zero", lambda r: api.diagnose(r, OUT, TRUTH, n_splits=0,
                                                    leave_out_calibration=False),
     r"n_splits must be an integer >= 1; got 0"),
    ("diagnose-splits-fraction", lambda r: api.diagnose(r, OUT, TRUTH, n_splits=2.5,
                                                        leave_out_calibration=False),
     r"n_splits must be an integer >= 1; got 2\.5"),
    ("diagnose-tile-string", lambda r: api.diagnose(r, OUT, TRUTH, tile_shape="16",
                                                    leave_out_calibration=False),
     r"tile_shape must be two positive integers .*; got '16'"),
    ("apply-record-outputs-list", lambda r: api.apply_record(r, [F]),
     r"outputs must be a dict .*; got list"),
    ("apply-record-show-bounds", lambda r: api.apply_record(r, OUT, show_bounds="no"),
     r"show_bounds must be True or False; got 'no'"),
    ("apply-record-record-type", lambda r: api.apply_record(42, OUT), r"record must be .*; got int"),
    ("model-card-type", lambda r: api.model_card(42),
     r"model must be the name of a model in the zoo, a bundle folder or an Im2ImModel; got int"),
    ("model-io-unknown", lambda r: api.model_io("no-such-model"),
     r"one of the known models .*; got 'no-such-model'"),
    ("list-models-search-paths", lambda r: api.list_models(search_paths=42),
     r"search_paths must be a folder or a list of folders; got 42"),
    ("save-record-suffix", lambda r: api.save_record(r, "record.txt"),
     r"path must end in \.json; got 'record\.txt'"),
    ("method-unknown", lambda r: api.method("nope"), r"method must be one of .*; got 'nope'"),
]


def test_the_api_table_has_enough_cases():
    assert len(API_CASES) >= 30
    assert len({c[0] for c in API_CASES}) == len(API_CASES)


@pytest.mark.parametrize(("call", "message"), [c[1:] for c in API_CASES],
                         ids=[c[0] for c in API_CASES])
def test_bad_api_argument_is_named_with_what_was_received(record, call, message):
    with pytest.raises(ValueError, match=message):
        call(record)


# (id, argv, the flag and the value in the message) -- argparse exits 2, message on stderr
CLI_CASES = [
    ("demo-tile-negative", ["demo", "--report", "--tile", "-3"],
     r"argument --tile: must be an integer in \[4, 512\]; got -3"),
    ("demo-tile-too-large", ["demo", "--report", "--tile", "1000"],
     r"argument --tile: must be an integer in \[4, 512\]; got 1000"),
    ("demo-tile-not-multiple", ["demo", "--report", "--tile", "30"],
     r"argument --tile: must be a multiple of 4; got 30"),
    ("demo-images-absurd", ["demo", "--report", "--images", "1000000"],
     r"argument --images: must be an integer in \[1, 100\]; got 1000000"),
    ("demo-tile-zero", ["demo", "--report", "--tile", "0"], r"argument --tile: .*; got 0"),
    ("demo-tile-word", ["demo", "--report", "--tile", "big"], r"argument --tile: .*; got 'big'"),
    ("demo-alpha", ["demo", "--report", "--alpha", "1.5"],
     r"argument --alpha: must be in \(0, 1\); got 1\.5"),
    ("demo-delta", ["demo", "--report", "--delta", "0"],
     r"argument --delta: must be in \(0, 1\); got 0\.0"),
    ("demo-trust-alpha", ["demo", "--trust-alpha", "-1"],
     r"argument --trust-alpha: must be in \(0, 1\); got -1\.0"),
    ("demo-images", ["demo", "--report", "--images", "0"],
     r"argument --images: must be an integer in \[1, 100\]; got 0"),
    ("demo-seed", ["demo", "--report", "--seed", "-1"],
     r"argument --seed: must be an integer >= 0; got -1"),
    ("train-steps", ["train", "--recipe", "x", "--output", "o", "--steps", "0"],
     r"argument --steps: must be an integer >= 1; got 0"),
    ("train-steps-fraction", ["train", "--recipe", "x", "--output", "o", "--steps", "2.5"],
     r"argument --steps: must be an integer >= 1; got '2\.5'"),
    ("train-seed", ["train", "--seed", "-4"], r"argument --seed: must be an integer >= 0; got -4"),
    ("train-checkpoint-every", ["train", "--checkpoint-every", "0"],
     r"argument --checkpoint-every: must be an integer >= 1; got 0"),
    ("train-threads", ["train", "--threads", "-2"],
     r"argument --threads: must be an integer >= 1; got -2"),
    ("predict-tile-negative", ["predict", "in.npy", "--model", MODEL, "--output", "o.zarr",
                               "--tile", "-3", "16"],
     r"argument --tile: must be an integer >= 1; got -3"),
    ("predict-tile-fraction", ["predict", "in.npy", "--model", MODEL, "--output", "o.zarr",
                               "--tile", "16.7", "16"],
     r"argument --tile: must be an integer >= 1; got '16\.7'"),
    ("predict-batch", ["predict", "in.npy", "--model", MODEL, "--output", "o.zarr",
                       "--batch", "0"], r"argument --batch: must be an integer >= 1; got 0"),
    ("predict-device", ["predict", "in.npy", "--model", MODEL, "--output", "o.zarr",
                        "--device", "gpu"], r"argument --device: invalid choice: 'gpu'"),
    ("predict-precision", ["predict", "in.npy", "--model", MODEL, "--output", "o.zarr",
                           "--precision", "float8"], r"argument --precision: invalid choice"),
]


def test_the_cli_table_has_enough_cases():
    assert len(CLI_CASES) >= 15


@pytest.mark.parametrize(("argv", "message"), [c[1:] for c in CLI_CASES],
                         ids=[c[0] for c in CLI_CASES])
def test_bad_flag_exits_2_naming_the_flag(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # the message is on stderr, without a traceback
    assert re.search(message, captured.err), captured.err
    assert "Traceback" not in captured.err
    assert list(tmp_path.iterdir()) == []  # nothing was written


def test_demo_negative_tile_in_a_real_process_exits_2_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "napari_im2im_uq.cli", "demo", "--report", "--tile", "-3"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 2
    assert "argument --tile: must be an integer in [4, 512]; got -3" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_predict_cli_says_deeper_errors_in_flag_names(tmp_path, capsys):
    """A check below the parser (here the axes) is reported with the command's flag names."""
    np.save(tmp_path / "in.npy", np.zeros((2, 16, 16), np.float32))
    code = main(["predict", str(tmp_path / "in.npy"), "--model", MODEL, "--output",
                 str(tmp_path / "o.zarr"), "--axes", "QYX", "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert code != 0
    assert "--axes" in err and "QYX" in err
    assert "Traceback" not in err


def test_in_flags_says_argument_names_as_flags():
    from napari_im2im_uq._validation import in_flags

    flags = {"tile_shape": "--tile", "overwrite=True": "--overwrite", "batch_size": "--batch"}
    said = in_flags("tile_shape must be two positive integers; got '64'. Pass overwrite=True "
                    "to replace the store; batch_size=2 was used; the tile_shape of a record", flags)
    assert said == ("--tile must be two positive integers; got '64'. Pass --overwrite to replace "
                    "the store; --batch=2 was used; the tile_shape of a record")


# -- NaN and infinity in the input: reported with the count and the planes, before predicting


def _tiny_model():
    from napari_im2im_uq.models import Im2ImModel, build_network

    return Im2ImModel(build_network("quantile", depth=1, base_channels=2), {"heuristic": "quantile"})


def _volume_with_holes():
    vol = RNG.random((4, 24, 24)).astype(np.float32)
    vol[1, 3, 4] = np.nan
    vol[1, 20, 22] = np.nan
    vol[3, 10, 5] = np.inf
    return vol


NONFINITE = (r"image has 2 NaN and 1 infinite value\(s\) in plane\(s\) 1 \(2, rows 3-20, "
             r"columns 4-22\); 3 \(1, rows 10-10, columns 5-5\): the prediction is not finite "
             r"within the receptive field")


def _nonfinite_warnings(record):
    return [w for w in record if issubclass(w.category, Im2ImUQWarning)
            and "infinite value" in str(w.message)]


def test_nan_in_an_array_is_reported_before_anything_runs(monkeypatch):
    from napari_im2im_uq import Im2ImUQWarning
    from napari_im2im_uq.inference import _worker, make_plan

    ran = []
    monkeypatch.setattr(_worker, "run_block", lambda *a, **k: ran.append(1))
    with pytest.warns(Im2ImUQWarning, match=NONFINITE):
        make_plan(_tiny_model(), _volume_with_holes(), axes="ZYX", device="cpu")
    assert ran == []  # planned, nothing computed: the warning came first


def test_nan_in_a_2d_array_says_where():
    image = np.ones((20, 20), np.float32)
    image[7, 9] = -np.inf
    with pytest.warns(Im2ImUQWarning, match=r"image has 0 NaN and 1 infinite value\(s\) at rows "
                                            r"7-7, columns 9-9"):
        api.predict(_tiny_model(), image, device="cpu")


def test_nan_in_a_lazy_input_is_counted_per_block_and_reported_once():
    da = pytest.importorskip("dask.array")
    lazy = da.from_array(_volume_with_holes(), chunks=(1, 12, 12))
    with pytest.warns(Im2ImUQWarning, match="infinite value") as record:
        layers = api.predict(_tiny_model(), lazy, device="cpu", tile_shape=(8, 8), output="memory")
    found = _nonfinite_warnings(record)
    assert len(found) == 1, [str(w.message) for w in found]
    assert re.search(NONFINITE, str(found[0].message))
    assert isinstance(layers[0][0], np.ndarray)


def test_nan_in_a_lazy_input_outside_a_job_warns_per_block():
    da = pytest.importorskip("dask.array")
    from napari_im2im_uq.inference import predict

    lazy = da.from_array(_volume_with_holes(), chunks=(1, 24, 24))
    out = predict(_tiny_model(), lazy, axes="ZYX", device="cpu", tile_shape=(24, 24),
                  batch_size=1)
    with pytest.warns(Im2ImUQWarning, match="infinite value") as record:
        out["prediction"].compute(scheduler="sync")
    messages = sorted(str(w.message) for w in _nonfinite_warnings(record))
    assert len(messages) == 2  # the two blocks (planes) with non-finite values, once each
    assert any("2 NaN and 0 infinite value(s) in plane(s) 1 (2," in m for m in messages)
    assert any("0 NaN and 1 infinite value(s) in plane(s) 3 (1," in m for m in messages)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_finite_and_integer_inputs_are_not_reported(dtype):
    import warnings

    image = (RNG.random((2, 16, 16)) * 100).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Im2ImUQWarning)
        api.predict(_tiny_model(), image, device="cpu")


def test_predict_cli_refusal_speaks_of_the_overwrite_flag(tmp_path, capsys):
    np.save(tmp_path / "in.npy", np.zeros((16, 16), np.float32))
    (tmp_path / "out.zarr").mkdir()
    (tmp_path / "out.zarr" / "notes.txt").write_text("the user's")
    code = main(["predict", str(tmp_path / "in.npy"), "--model", MODEL, "--output",
                 str(tmp_path / "out.zarr"), "--device", "cpu", "--no-progress", "--overwrite"])
    err = capsys.readouterr().err
    assert code == 1
    assert "--overwrite" in err and "overwrite=True" not in err
    assert (tmp_path / "out.zarr" / "notes.txt").read_text() == "the user's"


def test_nan_in_a_lazy_input_written_to_zarr_is_reported_once(tmp_path):
    da = pytest.importorskip("dask.array")
    lazy = da.from_array(_volume_with_holes(), chunks=(2, 24, 24))
    with pytest.warns(Im2ImUQWarning, match="infinite value") as record:
        api.predict(_tiny_model(), lazy, device="cpu", tile_shape=(8, 8), output="zarr",
                    store=tmp_path / "out.zarr")
    found = _nonfinite_warnings(record)
    assert len(found) == 1
    assert re.search(NONFINITE, str(found[0].message))


def test_predict_cli_reports_nan_in_a_memory_mapped_input_once(tmp_path, capsys):
    np.save(tmp_path / "in.npy", _volume_with_holes())  # read back memory-mapped: block by block
    with pytest.warns(Im2ImUQWarning, match="infinite value") as record:
        code = main(["predict", str(tmp_path / "in.npy"), "--model", MODEL, "--output",
                     str(tmp_path / "o.zarr"), "--axes", "ZYX", "--tile", "8", "8",
                     "--device", "cpu", "--no-progress"])
    assert code == 0
    found = _nonfinite_warnings(record)
    assert len(found) == 1
    assert re.search(NONFINITE.replace("image", "INPUT"), str(found[0].message))
