"""The ``train --input A --target B`` form of the command line (your own pairs), end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

torch = pytest.importorskip("torch")

from napari_im2im_uq.cli import main  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def pair_folders(tmp_path):
    """Two folders of TIFF pairs (a denoising task), named so that sorting pairs them."""
    rng = np.random.default_rng(0)
    (tmp_path / "noisy").mkdir()
    (tmp_path / "clean").mkdir()
    for name in ("b", "a"):
        y = rng.random((96, 96)).astype(np.float32)
        x = (y + 0.1 * rng.standard_normal(y.shape)).astype(np.float32)
        tifffile.imwrite(tmp_path / "noisy" / f"{name}.tif", x)
        tifffile.imwrite(tmp_path / "clean" / f"{name}.tif", y)
    return tmp_path / "noisy", tmp_path / "clean"


def test_train_on_folders_of_pairs_writes_a_bundle_with_its_regions(tmp_path, pair_folders,
                                                                    capsys):
    noisy, clean = pair_folders
    out = tmp_path / "mine"
    argv = ["train", "--input", str(noisy), "--target", str(clean), "--output", str(out),
            "--steps", "3", "--region-shape", "32", "--licence", "CC-BY-4.0",
            "--authors", "A. Person; B. Person"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "step 3/3" in printed and "validate step" in printed
    assert f"saved {out}" in printed and "held-back quality" in printed
    spec = json.loads((out / "model.json").read_text())
    regions = spec["training_regions"]
    assert regions["region_shape"] == [32, 32]
    assert [im["source"] for im in regions["images"]] == ["a.tif", "b.tif"]
    for part in ("train", "validation", "held_back"):
        assert sum(len(im[part]) for im in regions["images"]) >= 1, part
    assert spec["licence"] == "CC-BY-4.0"
    assert spec["authors"] == ["A. Person", "B. Person"]
    card = (out / "README.md").read_text()
    assert "- licence: CC-BY-4.0" in card and "- authors: A. Person; B. Person" in card
    assert "quality is measured on their held-back regions only" in card
    assert spec["heuristic"] == "quantile"
    assert "rmse" in spec["card"]["held_out"]["baseline"]
    # an existing bundle is not replaced without --overwrite; the message names the flag
    assert main(argv) == 1
    assert "--overwrite" in capsys.readouterr().err


def test_train_on_single_files(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.random((64, 96)).astype(np.float32)
    np.save(tmp_path / "low.npy", y[::2, ::2])
    np.save(tmp_path / "high.npy", y)
    out = tmp_path / "sr"
    assert main(["train", "--input", str(tmp_path / "low.npy"), "--target",
                 str(tmp_path / "high.npy"), "--output", str(out), "--steps", "2",
                 "--region-shape", "32", "--head", "gaussian", "--scale-factor", "2"]) == 0
    spec = json.loads((out / "model.json").read_text())
    assert spec["scale_factor"] == 2 and spec["heuristic"] == "gaussian"
    assert spec["training_regions"]["images"][0]["shape"] == [64, 96]


def test_bad_flags_exit_2_naming_the_flag(tmp_path, pair_folders, capsys):
    noisy, clean = pair_folders
    out = str(tmp_path / "m")
    cases = [
        (["--input", str(noisy), "--output", out], "--target required"),
        (["--input", str(tmp_path / "nope.tif"), "--target", str(clean), "--output", out],
         "--input: no such file"),
        (["--input", str(noisy), "--target", str(clean)], "--output required"),
        (["--input", str(noisy), "--target", str(clean), "--output", out, "--recipe",
          "tem-sr4x-quantile"], "not both"),
        (["--recipe", "tem-sr4x-quantile", "--output", out, "--head", "gaussian"],
         "--head only with --input"),
        (["--input", str(noisy), "--target", str(clean), "--output", out, "--no-evaluate"],
         "--no-evaluate only with --recipe"),
        (["--input", str(noisy), "--target", str(clean), "--output", out, "--region-shape",
          "32", "32", "32"], "--region-shape takes rows"),
        (["--output", out], "--recipe (or --input and --target) required"),
    ]
    for extra, said in cases:
        assert main(["train", *extra]) == 2, extra
        assert said in capsys.readouterr().err, extra
    with pytest.raises(SystemExit) as exit_info:  # argparse: a bad number or choice
        main(["train", "--input", str(noisy), "--target", str(clean), "--output", out,
              "--lr", "-1"])
    assert exit_info.value.code == 2
    assert "--lr" in capsys.readouterr().err


def test_errors_of_the_job_exit_1(tmp_path, capsys):
    rng = np.random.default_rng(2)
    np.save(tmp_path / "x.npy", rng.random((64, 64)).astype(np.float32))
    np.save(tmp_path / "y.npy", rng.random((96, 96)).astype(np.float32))
    code = main(["train", "--input", str(tmp_path / "x.npy"), "--target",
                 str(tmp_path / "y.npy"), "--output", str(tmp_path / "m"), "--steps", "2"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("train: ") and "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_mask_network_of_a_zoo_model_from_one_file(tmp_path, capsys):
    rng = np.random.default_rng(3)
    truth = rng.random((128, 128)).astype(np.float32)
    tifffile.imwrite(tmp_path / "truth.tif", truth)
    out = tmp_path / "mask"
    assert main(["train", "--input", str(tmp_path / "truth.tif"), "--base-model",
                 "tem-sr4x-quantile", "--output", str(out), "--steps", "2",
                 "--region-shape", "32"]) == 0
    printed = capsys.readouterr().out
    assert "spearman_error" in printed
    spec = json.loads((out / "model.json").read_text())
    assert spec["heuristic"] == "mask"
    assert spec["base_model"]["name"] == "tem-sr4x-quantile"
    assert spec["training_regions"]["images"][0]["shape"] == [128, 128]
