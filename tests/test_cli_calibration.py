"""The headless commands calibrate, apply and evaluate on a store written by predict."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_im2im_uq import api
from napari_im2im_uq.cli import main

zarr = pytest.importorskip("zarr")
pytest.importorskip("dask")

MODEL = "tem-sr4x-quantile"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A prediction store of a 48 x 48 synthetic image, and truth on its 192 x 192 grid."""
    from napari_im2im_uq._jobs import run_to_end
    from napari_im2im_uq.inference import predict_to_zarr

    folder = tmp_path_factory.mktemp("cli_calibration")
    rng = np.random.default_rng(0)
    image = rng.random((48, 48)).astype(np.float32)
    path = folder / "pred.zarr"
    run_to_end(predict_to_zarr(api.load_model(MODEL), image, str(path), axes="YX",
                               device="cpu"))
    pred = np.asarray(zarr.open_array(store=str(path / "prediction" / "0"), mode="r"))
    truth = pred + 0.02 * rng.standard_normal(pred.shape).astype(np.float32)
    np.save(folder / "truth.npy", truth)
    held = pred + 0.02 * rng.standard_normal(pred.shape).astype(np.float32)
    np.save(folder / "held.npy", held)
    return folder, path


def _calibrate(folder, path, *more):
    record = folder / "record.json"
    code = main(["calibrate", str(path), "--truth", str(folder / "truth.npy"),
                 "--method", "intervals", "--rule", "crc", "--alpha", "0.2",
                 "--tile", "32", "32", "-o", str(record), *more])
    return code, record


def _arrays_bytes(path):
    return {p.relative_to(path).as_posix(): p.read_bytes()
            for name in ("prediction", "lower", "upper") for p in (path / name).rglob("*")
            if p.is_file()}


def test_calibrate_on_a_plan_and_on_regions(store, capsys):
    folder, path = store
    code, record = _calibrate(folder, path, "--plan", "12", "--seed", "3")
    assert code == 0
    printed = capsys.readouterr().out
    rec = api.load_record(record)
    assert "at most 20.0%" in printed and "12 calibration tiles" in printed
    assert rec["calibration"]["n"] == 12
    # the same plan drawn through the API gives the same record
    truth = np.load(folder / "truth.npy")
    plan = api.plan_tiles(truth, tile_shape=(32, 32), n_tiles=12, seed=3)[0]
    outputs = {k: np.asarray(zarr.open_array(store=str(path / k / "0"), mode="r"))
               for k in ("prediction", "lower", "upper")}
    cal = api.calibrate(outputs, truth, method="intervals", rule="crc", alpha=0.2,
                        tile_shape=(32, 32), regions=plan)
    assert rec["calibration"]["lam"] == pytest.approx(cal.record["calibration"]["lam"])

    regions = folder / "regions.json"
    regions.write_text(json.dumps([[[-0.5, -0.5], [-0.5, 95.5], [95.5, 95.5], [95.5, -0.5]]]))
    code, record = _calibrate(folder, path, "--regions", str(regions))
    assert code == 0 and api.load_record(record)["calibration"]["n"] == 9  # 3 x 3 tiles


def test_apply_writes_the_products_and_never_the_prediction(store, capsys):
    folder, path = store
    _, record = _calibrate(folder, path, "--plan", "12")
    before = _arrays_bytes(path)
    assert main(["apply", str(record), str(path), "--bounds", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "drift" in printed.lower()
    assert _arrays_bytes(path) == before  # byte for byte
    outputs = {k: np.asarray(zarr.open_array(store=str(path / k / "0"), mode="r"))
               for k in ("prediction", "lower", "upper")}
    expected = {kw["name"]: np.asarray(d)
                for d, kw, _ in api.apply_record(str(record), outputs, show_bounds=True,
                                                 check_drift=False)}
    group = zarr.open_group(store=str(path / "calibrated"), mode="r")
    written = group.attrs["napari_im2im_uq_calibrated"]
    assert written["complete"] and set(written["products"]) == {
        "interval_width", "calibrated_lower", "calibrated_upper"}
    for name, info in written["products"].items():
        got = np.asarray(group[f"{name}/0"])
        np.testing.assert_array_equal(got, expected[info["layer"]])
        ome = group[name].attrs["ome"]["multiscales"][0]
        assert [a["name"] for a in ome["axes"]] == ["y", "x"]
    # a rerun replaces only the groups it wrote
    assert main(["apply", str(record), str(path), "--no-progress"]) == 0
    assert sorted(p.name for p in (path / "calibrated").iterdir()) == [
        "_done", "interval_width", "zarr.json"]
    assert _arrays_bytes(path) == before
    # anything else in calibrated/ is the user's: refused, kept
    (path / "calibrated" / "notes").mkdir()
    assert main(["apply", str(record), str(path), "--no-progress"]) == 2
    assert "notes" in capsys.readouterr().err and (path / "calibrated" / "notes").exists()
    (path / "calibrated" / "notes").rmdir()


def test_evaluate_writes_the_png_and_the_html(store, tmp_path, capsys):
    folder, path = store
    _, record = _calibrate(folder, path, "--plan", "12")
    report = tmp_path / "report"
    assert main(["evaluate", str(record), str(path), "--truth", str(folder / "held.npy"),
                 "--splits", "20", "-o", str(report)]) == 0
    png = (report / "diagnostics.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    page = (report / "report.html").read_text(encoding="utf-8")
    assert "held-out risk" in page and "data:image/png;base64," in page
    assert "at most 20.0%" in page  # the guarantee
    assert "held-out risk" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "flag"), [
    (["--plan", "0"], "--plan"),
    (["--plan", "4", "--alpha", "2"], "--alpha"),
    (["--plan", "4", "--tile", "0", "32"], "--tile"),
    (["--plan", "400"], "--plan"),
    (["--plan", "4", "--method", "nope"], "--method"),
])
def test_bad_arguments_name_the_flag_and_exit_2(store, capsys, argv, flag):
    folder, path = store
    base = ["calibrate", str(path), "--truth", str(folder / "truth.npy"), "--tile", "32", "32",
            "-o", str(folder / "bad.json")]
    if "--method" not in argv:
        base += ["--method", "intervals"]
    try:
        code = main([*base, *argv])
    except SystemExit as stop:  # argparse
        code = stop.code
    assert code == 2
    assert flag in capsys.readouterr().err
    assert not (folder / "bad.json").exists()


def test_missing_store_or_truth_names_the_argument(store, tmp_path, capsys):
    folder, path = store
    assert main(["calibrate", str(tmp_path / "none.zarr"), "--truth", str(folder / "truth.npy"),
                 "--plan", "4", "--method", "intervals", "-o", str(tmp_path / "r.json")]) == 2
    assert "PREDICTION.zarr" in capsys.readouterr().err
    assert main(["calibrate", str(path), "--truth", str(tmp_path / "none.npy"), "--plan", "4",
                 "--method", "intervals", "-o", str(tmp_path / "r.json")]) == 2
    assert "--truth" in capsys.readouterr().err


def test_calibrate_refuses_tiles_of_the_training_regions_unless_allowed(store, tmp_path,
                                                                        capsys):
    """A store whose run names the model's training_regions (as predict writes them for a
    model trained by ``train``): the trained tiles are refused; --allow-leakage reports."""
    import shutil

    from napari_im2im_uq._fingerprints import plane_fingerprints

    folder, path = store
    truth = np.load(folder / "truth.npy")  # 192 x 192: the top-left 64 x 64 trained on
    split = {"region_shape": [64, 64], "images": [{
        "fingerprint": plane_fingerprints(truth)[0], "shape": list(truth.shape),
        "train": [[0, 0, 64, 64]], "validation": [[0, 64, 64, 128]],
        "held_back": [[64, 0, 192, 192]]}]}
    trained = tmp_path / "trained.zarr"
    shutil.copytree(path, trained)
    doc = json.loads((trained / "zarr.json").read_text())
    doc["attributes"]["napari_im2im_uq"]["run"]["model"]["training_regions"] = split
    (trained / "zarr.json").write_text(json.dumps(doc))
    whole = tmp_path / "whole.json"  # every 32 x 32 tile: 36, of which 8 trained or validated on
    whole.write_text(json.dumps([[[-0.5, -0.5], [-0.5, 191.5], [191.5, 191.5], [191.5, -0.5]]]))
    (folder / "record.json").unlink(missing_ok=True)
    code, record = _calibrate(folder, trained, "--regions", str(whole))
    assert code == 2 and not record.exists()
    err = capsys.readouterr().err
    assert "8 of the 36 calibration tiles lie in regions model 'tem-sr4x-quantile'" in err
    assert "--allow-leakage" in err and "leakage='report'" not in err
    code, record = _calibrate(folder, trained, "--regions", str(whole), "--allow-leakage")
    assert code == 0
    leak = api.load_record(record)["leakage"]
    assert (leak["n"], leak["n_leaked"], leak["bound"]) == (36, 8, pytest.approx(0.2 * 37 / 29))
    assert "Leakage: 8 of the 36 calibration tiles" in capsys.readouterr().out
    regions = tmp_path / "held.json"  # the held-back rows only: nothing to refuse
    regions.write_text(json.dumps([[[63.5, -0.5], [63.5, 191.5], [191.5, 191.5],
                                    [191.5, -0.5]]]))
    code, record = _calibrate(folder, trained, "--regions", str(regions))
    assert code == 0 and api.load_record(record)["leakage"]["n_leaked"] == 0


def test_predict_writes_the_training_regions_into_the_store_and_calibrate_refuses(store, tmp_path,
                                                                                  capsys):
    """A model whose spec names training_regions: predict records them in the store's run, so
    the headless calibrate refuses the trained tiles without any hand edit of the store."""
    from napari_im2im_uq._fingerprints import plane_fingerprints
    from napari_im2im_uq._jobs import run_to_end
    from napari_im2im_uq.inference import predict_to_zarr
    from napari_im2im_uq.models import save_model

    folder, _ = store
    truth = np.load(folder / "truth.npy")
    split = {"region_shape": [64, 64], "images": [{
        "fingerprint": plane_fingerprints(truth)[0], "shape": list(truth.shape),
        "train": [[0, 0, 64, 64]], "validation": [], "held_back": [[64, 0, 192, 192]]}]}
    zoo = api.load_model(MODEL)
    bundle = save_model(zoo, tmp_path / "trained", spec={**zoo.spec, "training_regions": split})
    image = np.random.default_rng(0).random((48, 48)).astype(np.float32)
    path = tmp_path / "pred.zarr"
    run_to_end(predict_to_zarr(api.load_model(bundle), image, str(path), axes="YX",
                               device="cpu"))
    run = json.loads((path / "zarr.json").read_text())["attributes"]["napari_im2im_uq"]["run"]
    assert run["model"]["training_regions"] == split
    record, whole = tmp_path / "record.json", tmp_path / "whole.json"
    whole.write_text(json.dumps([[[-0.5, -0.5], [-0.5, 191.5], [191.5, 191.5], [191.5, -0.5]]]))
    code = main(["calibrate", str(path), "--truth", str(folder / "truth.npy"), "--method",
                 "intervals", "--rule", "crc", "--alpha", "0.2", "--tile", "32", "32",
                 "--regions", str(whole), "-o", str(record)])
    assert code == 2 and not record.exists()
    assert "4 of the 36 calibration tiles" in capsys.readouterr().err


def test_calibrate_and_evaluate_run_on_a_dask_scheduler(store, tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    folder, path = store
    _, record = _calibrate(folder, path, "--plan", "12", "--seed", "3")
    here = api.load_record(record)["calibration"]
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        with distributed.Client(address, set_as_default=False) as watcher:
            with distributed.get_task_stream(client=watcher) as stream:
                code, on_cluster = _calibrate(folder, path, "--plan", "12", "--seed", "3",
                                              "--scheduler", address)
            assert code == 0
            assert len(stream.data) > 0  # the tiles were read by the cluster's worker
            assert api.load_record(on_cluster)["calibration"]["lam"] == here["lam"]
            report = tmp_path / "report"
            with distributed.get_task_stream(client=watcher) as stream:
                assert main(["evaluate", str(on_cluster), str(path), "--truth",
                             str(folder / "held.npy"), "--splits", "20", "-o", str(report),
                             "--scheduler", address]) == 0
            assert len(stream.data) > 0 and (report / "report.html").is_file()
    capsys.readouterr()
    assert main(["calibrate", str(path), "--truth", str(folder / "truth.npy"), "--method",
                 "intervals", "--plan", "4", "-o", str(tmp_path / "r.json"),
                 "--scheduler", "tcp://127.0.0.1:9"]) == 2
    assert "--scheduler" in capsys.readouterr().err
