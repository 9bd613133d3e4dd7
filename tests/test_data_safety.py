"""Stores and files are the user's data: each case ends in a clear error and changes nothing.

Cases are data tables: one line per case. Every case hashes every file the user had before
and after, and asserts the error's words.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
zarr = pytest.importorskip("zarr")

from napari_im2im_uq import Im2ImUQWarning  # noqa: E402
from napari_im2im_uq._files import write_atomic  # noqa: E402
from napari_im2im_uq._jobs import run_to_end  # noqa: E402
from napari_im2im_uq.inference import predict_to_zarr, write_zarr  # noqa: E402
from napari_im2im_uq.models import Im2ImModel, build_network  # noqa: E402


def _model(seed=0):
    torch.manual_seed(seed)
    return Im2ImModel(build_network("quantile", depth=1, base_channels=2),
                      {"heuristic": "quantile"})


IMAGE = np.random.default_rng(0).random((3, 24, 24), dtype=np.float32)
KW = dict(axes="ZYX", tile_shape=(8, 8), device="cpu")


def _hashes(root):
    """SHA-256 of every file under ``root`` (the user's state)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# -- stores: what is at the output path -------------------------------------------------------


def _zarr_group(path):
    zarr.open_group(str(path), mode="w").create_array("raw", shape=(4,), dtype="f4")[...] = 1


def _our_store_plus(extra):
    def make(path):
        write_zarr(_model(), IMAGE, path, **KW)
        target = path / extra
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("the user's")
    return make


def _folder_with(name):
    def make(path):
        path.mkdir()
        (path / name).write_text("the user's")
    return make


def _file(path):
    path.write_text("not a folder")


def _bad_root(path):
    path.mkdir()
    (path / "zarr.json").write_text("{not json")


# (case, what is at the store, overwrite, error, words)
STORE_CASES = [
    ("foreign zarr group", _zarr_group, False, FileExistsError, "not written by predict_to_zarr"),
    ("foreign zarr group, overwrite", _zarr_group, True, FileExistsError, "never replaced"),
    ("folder of notes", _folder_with("notes.txt"), False, FileExistsError, "not a zarr store"),
    ("folder of notes, overwrite", _folder_with("notes.txt"), True, FileExistsError,
     "holds notes.txt"),
    ("folder holding _done only", _folder_with("_done"), True, FileExistsError, "not a zarr"),
    ("a file", _file, True, FileExistsError, "is a file"),
    ("unreadable zarr.json", _bad_root, True, FileExistsError, "not readable"),
    ("our store + a user file", _our_store_plus("notes.txt"), True, FileExistsError,
     "also holds files it did not write: notes.txt"),
    ("our store + a user group", _our_store_plus("labels/zarr.json"), True, FileExistsError,
     "labels"),
    ("our store + a file inside an output", _our_store_plus("prediction/mine.txt"), True,
     FileExistsError, "prediction/mine.txt"),
    ("our store + a file inside an array", _our_store_plus("lower/0/mine.txt"), True,
     FileExistsError, "lower/0/mine.txt"),
]


@pytest.mark.parametrize(("case", "make", "overwrite", "error", "words"), STORE_CASES,
                         ids=[c[0] for c in STORE_CASES])
def test_a_store_is_the_users_data(tmp_path, case, make, overwrite, error, words):
    store = tmp_path / "out.zarr"
    make(store)
    before = _hashes(tmp_path)
    with pytest.raises(error, match=words):
        predict_to_zarr(_model(), IMAGE + 1, store, overwrite=overwrite, **KW)
    assert _hashes(tmp_path) == before


# -- input and output apart -------------------------------------------------------------------


def _zarr_input(tmp_path):
    z = zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=IMAGE.shape, dtype="f4",
                        chunks=(1, 24, 24))
    z[...] = IMAGE
    return z


def _dask_of_zarr(tmp_path):
    import dask.array as da

    return da.from_zarr(_zarr_input(tmp_path))


def _memmap_input(tmp_path):
    np.save(tmp_path / "in.npy", IMAGE)
    return np.load(tmp_path / "in.npy", mmap_mode="r")


# (case, input maker, store relative to tmp_path, words)
APART_CASES = [
    ("output is the zarr input", _zarr_input, "in.zarr", "is "),
    ("output inside the zarr input", _zarr_input, "in.zarr/pred.zarr", "lies inside"),
    ("output contains the zarr input", _zarr_input, ".", "contains"),
    ("dask of zarr: output is the input", _dask_of_zarr, "in.zarr", "is "),
    ("memmap: output is the .npy", _memmap_input, "in.npy", "is "),
]


@pytest.mark.parametrize(("case", "make", "where", "words"), APART_CASES,
                         ids=[c[0] for c in APART_CASES])
@pytest.mark.parametrize("overwrite", [False, True])
def test_output_apart_from_input(tmp_path, case, make, where, words, overwrite):
    image = make(tmp_path)
    before = _hashes(tmp_path)
    with pytest.raises(ValueError, match=f"store must be apart from the image.*{words}"):
        predict_to_zarr(_model(), image, tmp_path / where, overwrite=overwrite, **KW)
    assert _hashes(tmp_path) == before


def test_cli_predict_into_its_own_input_is_refused(tmp_path, capsys):
    from napari_im2im_uq.cli import main

    _zarr_input(tmp_path)
    before = _hashes(tmp_path)
    argv = ["predict", str(tmp_path / "in.zarr"), "--model", "x", "--output",
            str(tmp_path / "in.zarr"), "--overwrite", "--axes", "ZYX"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "--output must be apart from the INPUT" in err
    assert _hashes(tmp_path) == before


# -- resume checks the input of every written block -------------------------------------------


def _changed(where):
    image = IMAGE.copy()
    image[where] += 1
    return image


# (case, change made to the input, planes named)
RESUME_CASES = [
    ("one pixel of plane 1", (1, 3, 3), "plane 1 "),
    ("a corner of plane 2", (2, 23, 23), "plane 2 "),
    ("planes 0 and 2", (np.array([0, 2]), 10, 10), "planes 0, 2 "),
    ("all planes", (slice(None), 0, 0), "planes 0-2 "),
]


@pytest.mark.parametrize(("case", "where", "words"), RESUME_CASES,
                         ids=[c[0] for c in RESUME_CASES])
def test_resume_refuses_a_changed_input(tmp_path, case, where, words):
    store = tmp_path / "o.zarr"
    write_zarr(_model(), IMAGE, store, **KW)
    before = _hashes(tmp_path)
    with pytest.raises(ValueError, match=f"image changed since store.*{words}"):
        predict_to_zarr(_model(), _changed(where), store, **KW)
    assert _hashes(tmp_path) == before


def test_resume_accepts_a_change_where_no_block_was_written(tmp_path):
    """The done blocks' input is unchanged: resuming gives the clean run of the new input."""
    store = tmp_path / "o.zarr"
    write_zarr(_model(), IMAGE, store, **KW)
    root = zarr.open_group(str(store), mode="r+")
    root["_done"][2] = 0  # as if stopped before plane 2 (one plane per block here)
    root["prediction/0"][2] = np.nan
    new = _changed((2, 5, 5))
    arrays = run_to_end(predict_to_zarr(_model(), new, store, **KW))
    clean = write_zarr(_model(), new, tmp_path / "clean.zarr", **KW)
    for name in arrays:
        np.testing.assert_array_equal(arrays[name][...], clean[name][...])


def test_overwrite_replaces_only_ours_and_says_so(tmp_path):
    store = tmp_path / "o.zarr"
    write_zarr(_model(), IMAGE, store, **KW)
    (tmp_path / "beside.txt").write_text("the user's")
    before = _hashes(tmp_path)
    with pytest.warns(Im2ImUQWarning, match="removing _done, _input_blake2b, lower, prediction"):
        arrays = run_to_end(predict_to_zarr(_model(), IMAGE + 1, store, overwrite=True, **KW))
    after = _hashes(tmp_path)
    assert after["beside.txt"] == before["beside.txt"]
    clean = write_zarr(_model(), IMAGE + 1, tmp_path / "clean.zarr", **KW)
    np.testing.assert_array_equal(arrays["upper"][...], clean["upper"][...])


# -- temporary files never take a user's name -------------------------------------------------


# (case, target name, user's file beside it)
TEMP_CASES = [
    ("record", "rec.json", "rec.json.tmp"),
    ("record, dotted", "rec.json", ".rec.json.tmp"),
    ("checkpoint weights", "weights.safetensors", ".weights.safetensors.tmp"),
    ("model.json", "model.json", ".model.json.tmp"),
]


@pytest.mark.parametrize(("case", "target", "theirs"), TEMP_CASES, ids=[c[0] for c in TEMP_CASES])
def test_write_atomic_never_touches_a_users_file(tmp_path, case, target, theirs):
    (tmp_path / theirs).write_text("the user's")
    before = _hashes(tmp_path)
    write_atomic(tmp_path / target, b"{}")
    after = _hashes(tmp_path)
    assert after.pop(target) == hashlib.sha256(b"{}").hexdigest()
    assert after == before


def test_save_record_keeps_a_users_tmp_file(tmp_path):
    from napari_im2im_uq.workflows import records

    (tmp_path / "rec.json.tmp").write_text("the user's")
    before = _hashes(tmp_path)
    calls = []
    real = records.as_record
    records.as_record = lambda source: (calls.append(source), {"format": records.RECORD_FORMAT})[1]
    try:
        records.save_record({}, tmp_path / "rec.json")
    finally:
        records.as_record = real
    assert calls
    assert _hashes(tmp_path)["rec.json.tmp"] == before["rec.json.tmp"]
    assert json.loads((tmp_path / "rec.json").read_text())["format"] == records.RECORD_FORMAT


# -- train --output ---------------------------------------------------------------------------


def _bundle_dir(files):
    def make(path):
        path.mkdir()
        for name in files:
            (path / name).write_text("the user's")
    return make


# (case, what is in --output, extra flags, words)
TRAIN_CASES = [
    ("README only", _bundle_dir(["README.md"]), [], "holds README.md but no model bundle"),
    ("weights only", _bundle_dir(["weights.safetensors"]), [], "weights.safetensors"),
    ("README + weights, --overwrite", _bundle_dir(["README.md", "weights.safetensors"]),
     ["--overwrite"], "never replaced, even with --overwrite"),
    ("a model.json not ours", _bundle_dir(["model.json"]), ["--overwrite"], "no model bundle"),
    ("a file", lambda p: p.write_text("x"), [], "is a file"),
]


@pytest.mark.parametrize(("case", "make", "flags", "words"), TRAIN_CASES,
                         ids=[c[0] for c in TRAIN_CASES])
def test_train_output_is_the_users_data(tmp_path, capsys, case, make, flags, words):
    from napari_im2im_uq.cli import main

    out = tmp_path / "out"
    make(out)
    before = _hashes(tmp_path)
    argv = ["train", "--recipe", "synthetic-sr4x-quantile", "--output", str(out), "--steps", "1",
            *flags]
    assert main(argv) == 1
    assert words in capsys.readouterr().err
    assert _hashes(tmp_path) == before


def test_checkpoint_folder_of_the_users_is_refused(tmp_path):
    from napari_im2im_uq.training._checkpoint import save_checkpoint

    folder = tmp_path / "ck"
    folder.mkdir()
    (folder / "weights.safetensors").write_text("the user's")
    before = _hashes(tmp_path)
    net = torch.nn.Linear(2, 1)
    with pytest.raises(FileExistsError, match="training did not write"):
        save_checkpoint(folder, network=net, optimizer=torch.optim.Adam(net.parameters()), step=0,
                        config={})
    assert _hashes(tmp_path) == before
    # a save of ours cut short (its mark in the header) is replaced
    (folder / "weights.safetensors").unlink()
    save_checkpoint(folder, network=net, optimizer=torch.optim.Adam(net.parameters()), step=0,
                    config={})
    (folder / "checkpoint.json").unlink()
    save_checkpoint(folder, network=net, optimizer=torch.optim.Adam(net.parameters()), step=1,
                    config={})


def test_run_recipe_from_the_api_never_replaces_a_users_files(tmp_path):
    from napari_im2im_uq.training import run_recipe

    out = tmp_path / "mine"
    out.mkdir()
    (out / "README.md").write_text("my notes")
    before = _hashes(tmp_path)
    with pytest.raises(FileExistsError, match="README.md"):
        run_to_end(run_recipe("synthetic-sr4x-quantile", output=out, steps=1))
    assert _hashes(tmp_path) == before


def test_saving_a_bundle_keeps_a_users_tmp_files(tmp_path):
    from napari_im2im_uq.models import save_model

    out = tmp_path / "bundle"
    out.mkdir()
    for name in (".weights.safetensors.tmp", ".model.json.tmp"):
        (out / name).write_text("the user's")
    save_model(_model(), out, overwrite=True)
    assert (out / ".weights.safetensors.tmp").read_text() == "the user's"
    assert (out / ".model.json.tmp").read_text() == "the user's"
    assert (out / "model.json").exists()


@pytest.mark.parametrize(("call", "error", "words"), [
    (lambda api, rec: api.load_record(42), ValueError, "path must be a path to a saved record"),
    (lambda api, rec: api.save_record(rec, 42), ValueError, "path must be a file path ending"),
])
def test_record_paths_of_the_wrong_type_are_named(call, error, words):
    from napari_im2im_uq import api

    rng = np.random.default_rng(0)
    truth = rng.random((64, 64)).astype(np.float32)
    out = {"prediction": truth, "lower": truth - 0.1, "upper": truth + 0.1}
    rec = api.calibrate(out, truth, alpha=0.3, rule="crc", tile_shape=(16, 16)).record
    with pytest.raises(error, match=words):
        call(api, rec)


def test_resume_of_a_mask_model_refuses_a_changed_prediction_input(tmp_path):
    """A mask model reads two inputs: the image and the prediction it rates; both are checked."""
    torch.manual_seed(0)
    mask = Im2ImModel(build_network("mask", in_channels=2, depth=1, base_channels=2),
                      {"heuristic": "mask"})
    pred = np.random.default_rng(1).random(IMAGE.shape, dtype=np.float32)
    store = tmp_path / "m.zarr"
    write_zarr(mask, IMAGE, store, prediction=pred, **KW)
    before = _hashes(tmp_path)
    changed = pred.copy()
    changed[1, 4, 4] += 1
    with pytest.raises(ValueError, match="image changed since store.*plane 1 "):
        predict_to_zarr(mask, IMAGE, store, prediction=changed, **KW)
    assert _hashes(tmp_path) == before
    arrays = run_to_end(predict_to_zarr(mask, IMAGE, store, prediction=pred, **KW))
    assert set(arrays) == {"mask"}  # the same inputs resume (nothing to do)
