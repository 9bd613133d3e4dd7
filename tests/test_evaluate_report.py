"""`napari-im2im-uq evaluate` writes a readable report on real VNC held-out slices."""

from __future__ import annotations

import numpy as np
import pytest

from napari_im2im_uq.cli import main
from napari_im2im_uq.data import shared_data_root

MODEL = "tem-sr4x-quantile"


@pytest.mark.realdata
def test_the_report_on_real_vnc_held_out_slices(tmp_path, capsys):
    if shared_data_root() is None:
        pytest.skip("../shared/data not found (set NAPARI_IM2IM_UQ_DATA to the data folder)")
    from napari_im2im_uq.data import degrade_tem, load_em_drosophila
    from napari_im2im_uq.data._em import TEM_PHOTONS, TEM_READ_NOISE

    # slices 17-19 of stack 1: never seen by the zoo model (trained on 0-12, validated on 13)
    truth = load_em_drosophila(stack=1, slices=[17, 18, 19])["raw"][:, 256:512, 256:512]
    low = degrade_tem(truth, factor=4, mode="area", photons=TEM_PHOTONS,
                      read_noise=TEM_READ_NOISE, seed=0)
    np.save(tmp_path / "input.npy", low.astype(np.float32))
    np.save(tmp_path / "truth.npy", truth.astype(np.float32))
    store, record, report = tmp_path / "vnc.zarr", tmp_path / "rec.json", tmp_path / "report"
    assert main(["predict", str(tmp_path / "input.npy"), "--model", MODEL, "--axes", "ZYX",
                 "--output", str(store), "--device", "cpu", "--no-progress"]) == 0
    assert main(["calibrate", str(store), "--truth", str(tmp_path / "truth.npy"), "--plan",
                 "16", "--method", "intervals", "--rule", "crc", "-o", str(record)]) == 0
    assert main(["evaluate", str(record), str(store), "--truth", str(tmp_path / "truth.npy"),
                 "--splits", "20", "-o", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "32 tiles (16 calibration tiles left out)" in printed  # 3 x 16 tiles of 64 x 64
    for name in ("diagnostics.png", "example.png"):
        assert (report / name).read_bytes().startswith(b"\x89PNG")
    page = (report / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 2
    assert "The guarantee" in page and "target &lt;= 0.1" in page
    assert "plane 1, rows 0-256, columns 0-256" in page  # the example's region, said
