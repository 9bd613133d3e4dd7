"""QPI recipe (qpi_dpc_cells): data, normalisation, baseline and held-out figures.

The model's third input, the two-image Tikhonov phase, is the derived channel the bundle
declares; its transform lives in :mod:`napari_im2im_uq.models._derived`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..models import qpi_tikhonov_channel
from ._card import _baseline_figures, _mean_figures, _regression_figures
from ._recipes_tem import _CROP

__all__ = ["qpi_tikhonov_channel"]

_QPI_LICENCE = "MIT (inherited from the training data qpi_dpc_cells)"
_QPI_CITATION = (
    "Zhang et al. (2023), Pupil-driven quantitative differential phase contrast imaging, "
    "arXiv:2306.17088"
)
_QPI_TRAIN_COLS = (0, 1000)
_QPI_HELD_OUT_COLS = (1000, 2000)
#: Recipes with validation train on columns 0-799 and watch the loss on columns 800-999 (part
#: of the training region, never the held-out columns 1000-1999).
_QPI_FIT_COLS = (0, 800)
_QPI_VALIDATION_COLS = (800, 1000)
_QPI_SUBSET = ((300, 1200), (1400, 1650))
_QPI_RANGE = (-1.5, 3.5)
#: Input channels of the QPI model: the two images and their two-image Tikhonov phase.
_QPI_CHANNELS = ("r1", "r2", "phase_tikhonov_r1r2")
#: How the bundle declares its third channel (computed by inference from r1 and r2).
_QPI_DERIVED = {
    "phase_tikhonov_r1r2": {
        "transform": "dpc_tikhonov", "from": ["r1", "r2"], "directions": ["top", "bottom"],
    }
}


def _qpi(root) -> dict[str, np.ndarray]:
    from ..data import load_qpi_dpc

    return load_qpi_dpc(root=root)


def _qpi_channels(qpi: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if "phase_tikhonov_r1r2" not in qpi:
        qpi["phase_tikhonov_r1r2"] = qpi_tikhonov_channel(qpi["r1"], qpi["r2"])
    return qpi


def _qpi_normalization(qpi: dict[str, np.ndarray]) -> dict[str, Any]:
    c0, c1 = _QPI_TRAIN_COLS
    qpi = _qpi_channels(qpi)
    mean = [round(float(qpi[k][:, c0:c1].mean()), 6) for k in _QPI_CHANNELS]
    std = [round(float(qpi[k][:, c0:c1].std()), 6) for k in _QPI_CHANNELS]
    return {"kind": "meanstd", "mean": mean, "std": std}


def _qpi_two_image_tikhonov(qpi: dict[str, np.ndarray]) -> np.ndarray:
    return _qpi_channels(qpi)["phase_tikhonov_r1r2"]


def _qpi_baseline_fit(qpi: dict[str, np.ndarray]) -> dict[str, float]:
    """Gain and offset of the two-image Tikhonov phase fitted on the training columns."""
    est = _qpi_two_image_tikhonov(qpi)
    c0, c1 = _QPI_TRAIN_COLS
    a = est[:, c0:c1].ravel().astype(np.float64)
    b = qpi["phase"][:, c0:c1].ravel().astype(np.float64)
    design = np.stack([a, np.ones_like(a)], axis=1)
    gain, offset = np.linalg.lstsq(design, b, rcond=None)[0]
    return {"baseline_gain": round(float(gain), 6), "baseline_offset": round(float(offset), 6)}


def _measure_qpi(model, params: dict[str, float], *, subset: bool, root) -> dict[str, Any]:
    qpi = _qpi(root)
    est = _qpi_two_image_tikhonov(qpi) * params["gain"] + params["offset"]
    peak = _QPI_RANGE[1] - _QPI_RANGE[0]
    if subset:
        regions = [np.s_[r : r + _CROP, c : c + _CROP] for r, c in _QPI_SUBSET]
    else:
        regions = [np.s_[:, _QPI_HELD_OUT_COLS[0] : _QPI_HELD_OUT_COLS[1]]]
    rows_m, rows_b = [], []
    for region in regions:
        x = np.stack([qpi[k][region] for k in _QPI_CHANNELS])
        out = model(x, batch_size=1)
        out = {k: v[0] for k, v in out.items()}
        ref = qpi["phase"][region]
        rows_m.append(_regression_figures(out, ref, peak))
        rows_b.append(_baseline_figures(est[region], ref, peak))
    return {
        "held_out": "qpi_dpc_cells "
        + (
            "crops " + str([list(c) for c in _QPI_SUBSET]) + " (row, column), 256 x 256"
            if subset
            else "columns 1000-1999, all rows"
        ),
        "model": _mean_figures(rows_m),
        "baseline": _mean_figures(rows_b),
        "baseline_name": "two-image (r1, r2) Tikhonov DPC phase (napari_im2im_uq.data."
        "dpc_tikhonov, reg 1e-2, whole field) with gain and offset fitted on the training columns",
        "averaging": "mean over regions; PSNR with peak 5 rad (the output_range)",
    }

