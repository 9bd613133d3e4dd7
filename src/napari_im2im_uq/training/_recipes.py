"""Recipes of the shipped zoo: data, network, schedule, evaluation and model card of each model.

A recipe trains one model from the real data in ``../shared/data`` (read at run time, never
copied), saves the bundle (float16 weights), measures its quality on held-out data next to a
simple baseline and writes the model card (``model.json`` ``card`` and ``README.md``).
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RECIPES", "Recipe", "get_recipe", "list_recipes", "measure_card", "run_recipe"]

_EM_LICENCE = "CC BY-NC-SA 3.0 (inherited from the training data em_drosophila_vnc)"
_EM_CITATION = (
    "Gerhard, Funke, Martel, Cardona, Fetter (2013), Segmented anisotropic ssTEM dataset of "
    "neural tissue, figshare, doi:10.6084/m9.figshare.856713"
)
_QPI_LICENCE = "MIT (inherited from the training data qpi_dpc_cells)"
_QPI_CITATION = (
    "Zhang et al. (2023), Pupil-driven quantitative differential phase contrast imaging, "
    "arXiv:2306.17088"
)
_EM_TRAIN = tuple(range(0, 14))
_EM_HELD_OUT = tuple(range(14, 20))
#: Held-out crops re-measured by the zoo tests: (slice, first row, first column), 256 x 256.
_EM_SUBSET = ((14, 512, 256), (19, 128, 640))
_QPI_TRAIN_COLS = (0, 1000)
_QPI_HELD_OUT_COLS = (1000, 2000)
_QPI_SUBSET = ((300, 1200), (1400, 1650))
_QPI_RANGE = (-1.5, 3.5)
#: Input channels of the QPI model: the two images and their two-image Tikhonov phase.
_QPI_CHANNELS = ("r1", "r2", "phase_tikhonov_r1r2")
_CROP = 256
_SEG_SIGMA = 1.0


@dataclass(frozen=True)
class Recipe:
    """How one zoo model is made.

    Attributes
    ----------
    name : str
        The bundle name.
    task : str
        "tem-sr", "tem-seg", "qpi", "tem-mask" or "synthetic-sr".
    heuristic : str
        The head.
    description : str
        One sentence for the model card.
    network : dict
        Keyword arguments of :func:`~napari_im2im_uq.training.init_network`.
    steps, batch_size, patch, lr : int, int, int, float
        Training schedule (``patch`` in input pixels; cosine learning rate).
    augment : str
        See :class:`~napari_im2im_uq.training.PatchSampler`.
    loss_options : dict
        Options of the loss.
    base_model : str or None
        The model a mask network belongs to.
    real_data : bool
        Whether the recipe reads ``../shared/data``.
    """

    name: str
    task: str
    heuristic: str
    description: str
    network: dict[str, Any]
    steps: int
    batch_size: int
    patch: int
    lr: float = 2e-3
    augment: str = "dihedral"
    loss_options: dict[str, Any] = field(default_factory=dict)
    base_model: str | None = None
    real_data: bool = True


_SR_NET = {"depth": 3, "base_channels": 16, "norm": "batch", "scale_factor": 4}

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            "tem-sr4x-quantile", "tem-sr", "quantile",
            "4x super-resolution of ssTEM (Drosophila VNC) with pixel-wise 5% and 95% quantiles.",
            _SR_NET, steps=1500, batch_size=8, patch=32,
            loss_options={"quantiles": [0.05, 0.95], "point_loss": "l2"},
        ),
        Recipe(
            "tem-sr4x-residual", "tem-sr", "residual",
            "4x super-resolution of ssTEM with a regressed residual magnitude.",
            _SR_NET, steps=600, batch_size=8, patch=32, loss_options={"point_loss": "l2"},
        ),
        Recipe(
            "tem-sr4x-gaussian", "tem-sr", "gaussian",
            "4x super-resolution of ssTEM with one Gaussian (mean, std) per pixel.",
            _SR_NET, steps=600, batch_size=8, patch=32, lr=1e-3,
            loss_options={"var_floor": 1e-6},
        ),
        Recipe(
            "tem-sr4x-softmax", "tem-sr", "softmax",
            "4x super-resolution of ssTEM as classification over 32 intensity bins.",
            {**_SR_NET, "bins": 32}, steps=600, batch_size=8, patch=32,
        ),
        Recipe(
            "tem-membrane-seg", "tem-seg", "segmentation",
            "Membrane vs rest segmentation of ssTEM (Drosophila VNC).",
            {"depth": 3, "base_channels": 16, "norm": "batch", "n_classes": 2},
            steps=350, batch_size=4, patch=96,
        ),
        Recipe(
            "qpi-dpc-quantile", "qpi", "quantile",
            "Quantitative phase from two opposite oblique-illumination DPC images (top, bottom) "
            "and their two-image Tikhonov phase, with pixel-wise 5% and 95% quantiles.",
            {"depth": 3, "base_channels": 16, "norm": "batch", "in_channels": 3},
            steps=2000, batch_size=4, patch=96, augment="cols",
            loss_options={"quantiles": [0.05, 0.95], "point_loss": "l2"},
        ),
        Recipe(
            "tem-sr4x-mask", "tem-mask", "mask",
            "Mask network (Kutiel et al. 2023, L1 distance) for tem-sr4x-quantile.",
            {"depth": 3, "base_channels": 16, "norm": "batch", "in_channels": 2},
            steps=2000, batch_size=4, patch=96, augment="none",
            loss_options={"mu": 10.0, "distance": "l1"}, base_model="tem-sr4x-quantile",
        ),
        Recipe(
            "synthetic-sr4x-quantile", "synthetic-sr", "quantile",
            "Tiny demonstration: 4x super-resolution of synthetic EM tissue (no real data).",
            {"depth": 2, "base_channels": 4, "norm": "batch", "scale_factor": 4},
            steps=100, batch_size=4, patch=16, real_data=False,
            loss_options={"quantiles": [0.05, 0.95], "point_loss": "l2"},
        ),
    )
}

#: The recipes whose bundles ship in the zoo, in training order.
ZOO_ORDER = (
    "tem-sr4x-quantile",
    "tem-membrane-seg",
    "qpi-dpc-quantile",
    "tem-sr4x-residual",
    "tem-sr4x-gaussian",
    "tem-sr4x-softmax",
    "tem-sr4x-mask",
)


def list_recipes() -> list[str]:
    """Names of the training recipes (the zoo models plus a tiny synthetic demonstration).

    Examples
    --------
    >>> "tem-sr4x-quantile" in list_recipes()
    True
    """
    return list(RECIPES)


def get_recipe(name: str) -> Recipe:
    """Return the :class:`Recipe` called ``name``.

    Examples
    --------
    >>> get_recipe("tem-membrane-seg").heuristic
    'segmentation'
    """
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {list(RECIPES)}; got {name!r}")
    return RECIPES[name]


# -- data -----------------------------------------------------------------------------------
def _em(slices, root, what=("raw",)) -> dict[str, np.ndarray]:
    from ..data import load_em_drosophila

    return load_em_drosophila(stack=1, slices=list(slices), root=root, what=what)


def _qpi(root) -> dict[str, np.ndarray]:
    from ..data import load_qpi_dpc

    return load_qpi_dpc(root=root)


def _synthetic(seeds) -> np.ndarray:
    from ..data import synthetic_em_tissue

    return np.stack([synthetic_em_tissue((128, 128), seed=s)["image"] for s in seeds])


def qpi_tikhonov_channel(r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """Third input channel of ``qpi-dpc-quantile``: the two-image Tikhonov DPC phase.

    ``napari_im2im_uq.data.dpc_tikhonov(np.stack([r1, r2]), directions=("top", "bottom"))``
    with its defaults (the ``qpi_dpc_cells`` optics, ``reg=1e-2``), computed over the whole
    field of view (it is a global, FFT-based inversion) before tiles are cut.

    Examples
    --------
    >>> import numpy as np
    >>> qpi_tikhonov_channel(np.full((64, 64), 0.5), np.full((64, 64), 0.5)).shape
    (64, 64)
    """
    from ..data import dpc_tikhonov

    return dpc_tikhonov(np.stack([r1, r2]), directions=("top", "bottom"))


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


def _spec(recipe: Recipe, *, root, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": recipe.name}
    if recipe.task in ("tem-sr", "tem-mask", "tem-seg", "synthetic-sr"):
        spec["input_channels"] = ["raw"]
        spec["normalization"] = {"kind": "minmax", "min": 0.0, "max": 1.0}
        spec["output_range"] = None if recipe.task == "tem-seg" else [0.0, 1.0]
    if recipe.task in ("tem-sr", "tem-mask", "synthetic-sr"):
        spec["scale_factor"] = 4
    if recipe.heuristic in ("quantile", "softmax"):
        spec["quantiles"] = list(recipe.loss_options.get("quantiles", [0.05, 0.95]))
    if recipe.heuristic == "softmax":
        spec["bins"] = recipe.network["bins"]
    if recipe.task == "tem-seg":
        spec["classes"] = ["rest", "membrane"]
    if recipe.task == "qpi":
        spec["input_channels"] = list(_QPI_CHANNELS)
        spec["output_range"] = list(_QPI_RANGE)
    if recipe.task in ("tem-sr", "tem-seg", "tem-mask"):
        spec["training_data"] = {
            "dataset": "em_drosophila_vnc",
            "stack": 1,
            "slices": list(_EM_TRAIN),
            "target": "membranes" if recipe.task == "tem-seg" else "raw",
            "input": "raw" if recipe.task == "tem-seg" else "raw[::4, ::4] (4x nearest)",
            "never_used_for_training": "stack1 slices 14-19 (calibration and testing), stack2",
            "units": "raw = uint8 / 255 (as napari_im2im_uq.data.load_em_drosophila returns)",
        }
        spec["licence"] = _EM_LICENCE
        spec["citation"] = _EM_CITATION
    elif recipe.task == "qpi":
        spec["training_data"] = {
            "dataset": "qpi_dpc_cells",
            "input": [
                "raw/r1.png (top)",
                "raw/r2.png (bottom)",
                "phase_tikhonov_r1r2 = napari_im2im_uq.data.dpc_tikhonov(np.stack([r1, r2]), "
                "directions=('top', 'bottom')) over the whole field "
                "(napari_im2im_uq.training._recipes.qpi_tikhonov_channel)",
            ],
            "target": "derived/phase_l2_tikhonov_float32.npy (4-image Tikhonov phase, radians)",
            "train_region": {"rows": [0, 2000], "columns": list(_QPI_TRAIN_COLS)},
            "never_used_for_training": {"rows": [0, 2000], "columns": list(_QPI_HELD_OUT_COLS)},
            "units": "r1, r2 = uint8 / 255 (as napari_im2im_uq.data.load_qpi_dpc returns); "
            "phase in radians",
        }
        spec["licence"] = _QPI_LICENCE
        spec["citation"] = _QPI_CITATION
    else:
        spec["training_data"] = {"dataset": "synthetic_em_tissue", "seeds": [0, 1, 2, 3]}
        spec["licence"] = "public domain (synthetic data)"
    if extra:
        spec.update(extra)
    return spec


def _sampler(recipe: Recipe, *, root, base_model=None):
    from ._sampling import PatchSampler, nearest_downsample

    patch = (recipe.patch, recipe.patch)
    if recipe.task in ("tem-sr", "synthetic-sr"):
        hr = _em(_EM_TRAIN, root)["raw"] if recipe.task == "tem-sr" else _synthetic(range(4))
        return PatchSampler(
            None, list(hr), scale_factor=4, patch_shape=patch, augment=recipe.augment,
            degrade=nearest_downsample(4),
        ), {}
    if recipe.task == "tem-seg":
        em = _em(_EM_TRAIN, root, what=("raw", "membranes"))
        sampler = PatchSampler(
            [r[None] for r in em["raw"]], [m.astype(np.int64) for m in em["membranes"]],
            patch_shape=patch, augment=recipe.augment,
        )
        return sampler, {"baseline_threshold": _fit_threshold(em["raw"], em["membranes"])}
    if recipe.task == "qpi":
        qpi = _qpi(root)
        norm = _qpi_normalization(qpi)
        c0, c1 = _QPI_TRAIN_COLS
        x = np.stack([
            (qpi[k][:, c0:c1] - m) / s
            for k, m, s in zip(_QPI_CHANNELS, norm["mean"], norm["std"], strict=True)
        ]).astype(np.float32)
        lo, hi = _QPI_RANGE
        y = ((qpi["phase"][:, c0:c1] - lo) / (hi - lo)).astype(np.float32)
        sampler = PatchSampler([x], [y], patch_shape=patch, augment=recipe.augment)
        return sampler, {"normalization": norm, **_qpi_baseline_fit(qpi)}
    if recipe.task == "tem-mask":
        import torch
        import torch.nn.functional as F

        hr = _em(_EM_TRAIN, root)["raw"]
        inputs, targets = [], []
        for y in hr:
            x = y[::4, ::4]
            yhat = base_model(x)["prediction"]
            xt = base_model.normalize_input(torch.from_numpy(np.ascontiguousarray(x))[None, None])
            up = F.interpolate(xt, scale_factor=4, mode="bilinear", align_corners=False)[0, 0]
            pn = base_model.normalize_target(torch.from_numpy(yhat))
            inputs.append(np.stack([up.numpy(), pn.numpy()]).astype(np.float32))
            targets.append(base_model.normalize_target(torch.from_numpy(y)).numpy())
        sampler = PatchSampler(inputs, targets, patch_shape=patch, augment=recipe.augment)
        return sampler, {}
    raise AssertionError(recipe.task)  # pragma: no cover


# -- baselines and metrics -------------------------------------------------------------------
def _psnr(pred: np.ndarray, ref: np.ndarray, data_range: float) -> float:
    mse = float(np.mean((pred.astype(np.float64) - ref.astype(np.float64)) ** 2))
    return float(10 * math.log10(data_range**2 / mse)) if mse > 0 else float("inf")


def _ssim(pred: np.ndarray, ref: np.ndarray, data_range: float) -> float:
    from skimage.metrics import structural_similarity

    return float(
        structural_similarity(
            ref.astype(np.float64), pred.astype(np.float64), data_range=data_range,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        )
    )


def bicubic_upsample(lr: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Cubic-spline up-sampling aligned with nearest down-sampling (``hr[::f, ::f] = lr``).

    Output pixel ``(r, c)`` is the cubic spline through the low-resolution samples, read at
    ``(r / f, c / f)``: low-resolution pixel ``(i, j)`` sits on high-resolution pixel
    ``(f i, f j)``, as :func:`napari_im2im_uq.data.degrade_tem` samples it. Beyond the last
    sample the edge value is held.

    Examples
    --------
    >>> import numpy as np
    >>> lr = np.arange(16, dtype=float).reshape(4, 4)
    >>> up = bicubic_upsample(lr, 2, (8, 8))
    >>> bool(np.allclose(up[::2, ::2], lr))
    True
    """
    from scipy.ndimage import map_coordinates

    rows = np.arange(shape[0]) / factor
    cols = np.arange(shape[1]) / factor
    grid = np.meshgrid(rows, cols, indexing="ij")
    return map_coordinates(lr.astype(np.float64), grid, order=3, mode="nearest").astype(
        np.float32
    )


def _f1_accuracy(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    pred, truth = pred.astype(bool), truth.astype(bool)
    tp = float(np.sum(pred & truth))
    fp = float(np.sum(pred & ~truth))
    fn = float(np.sum(~pred & truth))
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else 1.0
    return {"pixel_accuracy": float(np.mean(pred == truth)), "f1_membrane": f1}


def _smooth(raw: np.ndarray) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(raw.astype(np.float64), _SEG_SIGMA)


def _fit_threshold(raw: np.ndarray, membranes: np.ndarray) -> float:
    """Intensity threshold (membranes are dark) of the smoothed raw image maximising F1."""
    smooth = np.stack([_smooth(r) for r in raw])
    candidates = np.quantile(smooth, np.linspace(0.02, 0.6, 59))
    scores = [_f1_accuracy(smooth < t, membranes)["f1_membrane"] for t in candidates]
    return round(float(candidates[int(np.argmax(scores))]), 6)


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


def _regression_figures(out: dict[str, np.ndarray], ref: np.ndarray, data_range: float):
    pred = out["prediction"]
    figures = {
        "psnr_db": _psnr(pred, ref, data_range),
        "ssim": _ssim(pred, ref, data_range),
        "rmse": float(np.sqrt(np.mean((pred.astype(np.float64) - ref) ** 2))),
    }
    if "lower" in out:
        inside = (out["lower"] <= ref) & (ref <= out["upper"])
        figures["raw_interval_coverage"] = float(np.mean(inside))
        figures["mean_interval_width"] = float(np.mean(out["upper"] - out["lower"]))
    return figures


def _baseline_figures(pred: np.ndarray, ref: np.ndarray, data_range: float):
    return {
        "psnr_db": _psnr(pred, ref, data_range),
        "ssim": _ssim(pred, ref, data_range),
        "rmse": float(np.sqrt(np.mean((pred.astype(np.float64) - ref) ** 2))),
    }


def _mean_figures(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def _rounded(d):
    if isinstance(d, dict):
        return {k: _rounded(v) for k, v in d.items()}
    if isinstance(d, float):
        return round(d, 5)
    return d


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def _load_base_model(recipe: Recipe, output: Path | None):
    from ..models import load_model

    if output is not None:
        sibling = output.parent / recipe.base_model
        if (sibling / "model.json").is_file():
            return load_model(sibling)
    return load_model(recipe.base_model)


def measure_card(
    model,
    name: str,
    *,
    subset: bool = False,
    root: str | os.PathLike | None = None,
    base_model=None,
) -> dict[str, Any]:
    """Measure a recipe's model on its held-out data, next to the recipe's simple baseline.

    The held-out data are never used for training: stack1 slices 14-19 of
    ``em_drosophila_vnc`` (TEM models) and columns 1000-1999 of ``qpi_dpc_cells`` (QPI).
    With ``subset=True`` only two held-out 256 x 256 crops are measured (what the zoo tests
    re-measure; the crops are the ``subset`` entry of the card).

    Figures
    -------
    - super-resolution: PSNR (peak 1) and SSIM (Gaussian window, sigma 1.5) against cubic
      up-sampling aligned with the nearest down-sampling; RMSE; the uncalibrated coverage and
      mean width of the raw intervals.
    - QPI: the same against the two-image (r1, r2) Tikhonov DPC phase with gain and offset
      fitted on the training columns; PSNR with peak 5 rad.
    - segmentation: pixel accuracy and membrane F1 of the arg-max against a threshold of the
      Gaussian-smoothed (sigma 1) raw image fitted on the training slices.
    - mask: Spearman correlation of ``1 - mask`` with the absolute error of the base model,
      against that of the base model's interval width; the mask loss against the best constant
      mask.

    Parameters
    ----------
    model : Im2ImModel
        The model (e.g. ``load_model(name)``).
    name : str
        The recipe name.
    subset : bool
        Measure only the two held-out crops.
    root : path-like, optional
        Folder holding the data sets (default: :func:`napari_im2im_uq.data.shared_data_root`).
    base_model : Im2ImModel, optional
        For a mask model: its image-to-image model (default: the zoo's).

    Returns
    -------
    dict
        ``model`` and ``baseline`` figure dicts, ``baseline_name``, ``held_out`` and, for the
        segmentation and QPI baselines, their fitted parameters.

    Examples
    --------
    >>> from napari_im2im_uq.models import load_model
    >>> card = measure_card(load_model("tem-sr4x-quantile"), "tem-sr4x-quantile",
    ...                     subset=True)  # doctest: +SKIP
    >>> card["model"]["psnr_db"] > card["baseline"]["psnr_db"]  # doctest: +SKIP
    True
    """
    recipe = get_recipe(name)
    spec = model.spec
    card = spec.get("card") or {}
    if recipe.task in ("tem-sr", "synthetic-sr"):
        return _measure_sr(model, recipe, subset=subset, root=root)
    if recipe.task == "tem-seg":
        threshold = card.get("baseline_parameters", {}).get("threshold")
        if threshold is None:
            raise ValueError(
                "model must carry card['baseline_parameters']['threshold'] (written by "
                f"run_recipe); got card keys {sorted(card)}"
            )
        return _measure_seg(model, threshold, subset=subset, root=root)
    if recipe.task == "qpi":
        params = card.get("baseline_parameters", {})
        if "gain" not in params:
            raise ValueError(
                "model must carry card['baseline_parameters'] gain and offset (written by "
                f"run_recipe); got card keys {sorted(card)}"
            )
        return _measure_qpi(model, params, subset=subset, root=root)
    if base_model is None:
        base_model = _load_base_model(recipe, None)
    return _measure_mask(model, base_model, recipe, subset=subset, root=root)


def _em_eval_images(subset: bool, root, what=("raw",)):
    """Yield (label, dict of HR arrays) for the held-out slices or the two crops."""
    if subset:
        slices = sorted({s for s, _, _ in _EM_SUBSET})
        data = _em(slices, root, what=what)
        for s, r0, c0 in _EM_SUBSET:
            i = slices.index(s)
            yield (s, r0, c0), {k: v[i, r0 : r0 + _CROP, c0 : c0 + _CROP] for k, v in data.items()}
    else:
        data = _em(_EM_HELD_OUT, root, what=what)
        for i, s in enumerate(_EM_HELD_OUT):
            yield s, {k: v[i] for k, v in data.items()}


def _measure_sr(model, recipe: Recipe, *, subset: bool, root) -> dict[str, Any]:
    if recipe.task == "synthetic-sr":
        images = (("seed", {"raw": im}) for im in _synthetic((10, 11)))
        held_out = "synthetic_em_tissue seeds 10 and 11 (128 x 128)"
    else:
        images = _em_eval_images(subset, root)
        held_out = (
            "em_drosophila_vnc stack1 crops " + str([list(c) for c in _EM_SUBSET])
            + " (slice, row, column), 256 x 256"
            if subset else "em_drosophila_vnc stack1 slices 14-19, 1024 x 1024"
        )
    rows_m, rows_b = [], []
    for _, arrays in images:
        y = arrays["raw"]
        x = y[::4, ::4]
        out = model(x, batch_size=1)
        rows_m.append(_regression_figures(out, y, 1.0))
        rows_b.append(_baseline_figures(bicubic_upsample(x, 4, y.shape), y, 1.0))
    return {
        "held_out": held_out,
        "model": _mean_figures(rows_m),
        "baseline": _mean_figures(rows_b),
        "baseline_name": "cubic-spline up-sampling aligned with image[::4, ::4]",
        "averaging": "mean over images",
    }


def _measure_seg(model, threshold: float, *, subset: bool, root) -> dict[str, Any]:
    preds, base, truth = [], [], []
    for _, arrays in _em_eval_images(subset, root, what=("raw", "membranes")):
        prob = model(arrays["raw"][None], batch_size=1)["probabilities"]
        preds.append(np.argmax(prob, axis=0) == 1)
        base.append(_smooth(arrays["raw"]) < threshold)
        truth.append(arrays["membranes"])
    truth_all = np.stack(truth)
    return {
        "held_out": "em_drosophila_vnc stack1 "
        + ("crops " + str([list(c) for c in _EM_SUBSET]) if subset else "slices 14-19"),
        "model": _f1_accuracy(np.stack(preds), truth_all),
        "baseline": _f1_accuracy(np.stack(base), truth_all),
        "baseline_name": f"threshold {threshold} of the Gaussian-smoothed (sigma "
        f"{_SEG_SIGMA}) raw image, fitted for F1 on the training slices",
        "averaging": "pooled over all pixels",
    }


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


def _measure_mask(model, base_model, recipe: Recipe, *, subset: bool, root) -> dict[str, Any]:
    mu = float(recipe.loss_options.get("mu", 2.0))
    masks, errors, widths = [], [], []
    for _, arrays in _em_eval_images(subset, root):
        y = arrays["raw"]
        x = y[::4, ::4]
        out = base_model(x, batch_size=1)
        masks.append(model(x, prediction=out["prediction"], batch_size=1)["mask"])
        errors.append(np.abs(out["prediction"] - y))
        widths.append(out["upper"] - out["lower"])
    m, e, w = np.stack(masks), np.stack(errors), np.stack(widths)
    best_const = float(np.clip(1 - mu * e.mean() / 2, 0, 1))

    def objective(mask):
        return float(np.mean((mask - 1) ** 2) + mu * np.mean(mask * e))

    return {
        "held_out": "em_drosophila_vnc stack1 "
        + ("crops " + str([list(c) for c in _EM_SUBSET]) if subset else "slices 14-19"),
        "model": {"spearman_error": _spearman(1 - m, e), "mask_loss": objective(m),
                  "mean_mask": float(m.mean())},
        "baseline": {"spearman_error": _spearman(w, e),
                     "mask_loss": objective(np.full_like(m, best_const)),
                     "mean_mask": best_const},
        "baseline_name": "Spearman: the base model's interval width (upper - lower); mask loss: "
        "the best constant mask",
        "averaging": "pooled over all pixels",
    }


# -- the recipe runner -----------------------------------------------------------------------
def _machine() -> str:
    import torch

    gpu = "GPU " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()}-core CPU, {gpu}"


def run_recipe(
    name: str,
    *,
    output: str | os.PathLike,
    steps: int | None = None,
    seed: int = 0,
    resume: bool = False,
    overwrite: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 200,
    root: str | os.PathLike | None = None,
    evaluate: bool = True,
    command: str | None = None,
) -> Generator[dict[str, Any], None, Path]:
    """Train a zoo model by its recipe, save the bundle and its model card; a generator.

    Parameters
    ----------
    name : str
        A recipe name (see :func:`list_recipes`).
    output : path-like
        The bundle folder to write (``weights.safetensors``, ``model.json``, ``README.md``).
    steps : int, optional
        Training steps (default: the recipe's).
    seed : int
        Seed of the initial weights and of the patch sampling.
    resume : bool
        Continue from the checkpoint in ``checkpoint_dir`` if there is one.
    overwrite : bool
        Replace an existing bundle at ``output`` (otherwise that is an error, raised before
        training starts).
    checkpoint_dir : path-like, optional
        Default: a sibling of ``output`` named ``<output>.checkpoint``.
    checkpoint_every : int
        Steps between checkpoints.
    root : path-like, optional
        Folder holding the data sets.
    evaluate : bool
        Measure the card figures (on the held-out data) and write them into the card.
    command : str, optional
        The command line recorded in the card.

    Yields
    ------
    dict
        ``phase`` ("data", "train", "evaluate", "saved") and, while training, the events of
        :func:`~napari_im2im_uq.training.train`.

    Returns
    -------
    pathlib.Path
        The bundle folder.

    Examples
    --------
    >>> import tempfile
    >>> from napari_im2im_uq.training import run_recipe, run_to_end
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = run_to_end(run_recipe("synthetic-sr4x-quantile", output=f"{tmp}/demo",
    ...                                  steps=2))
    ...     sorted(p.name for p in path.iterdir())
    ['README.md', 'model.json', 'weights.safetensors']
    """
    import torch

    from ..models import load_model, save_model
    from ._loop import init_network, train

    recipe = get_recipe(name)
    output = Path(output)
    if (output / "model.json").exists() and not overwrite:
        raise FileExistsError(
            f"output {output} already holds a bundle; pass overwrite=True (--overwrite) to "
            "replace it"
        )
    steps = recipe.steps if steps is None else steps
    if checkpoint_dir is None:
        checkpoint_dir = output.with_name(output.name + ".checkpoint")
    t_start = time.perf_counter()
    yield {"phase": "data", "recipe": name}
    base_model = _load_base_model(recipe, output) if recipe.base_model else None
    sampler, fitted = _sampler(recipe, root=root, base_model=base_model)
    extra: dict[str, Any] = {}
    if "normalization" in fitted:
        extra["normalization"] = fitted["normalization"]
    if base_model is not None:
        extra["scale_factor"] = base_model.scale_factor
        extra["normalization"] = base_model.spec["normalization"]
        extra["output_range"] = base_model.spec["output_range"]
        extra["base_model"] = {"name": base_model.name, "sha256": base_model.sha256}
    spec = _spec(recipe, root=root, extra=extra)
    net_kwargs = dict(recipe.network)
    network = init_network(recipe.heuristic, seed=seed, **net_kwargs)
    t_train = time.perf_counter()
    job = train(
        network, sampler, heuristic=recipe.heuristic, steps=steps,
        batch_size=recipe.batch_size, lr=recipe.lr, schedule="cosine", seed=seed,
        loss_options=recipe.loss_options, spec=spec, checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every, resume=resume,
    )
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            model = stop.value
            break
        yield {"phase": "train", **event}
    train_seconds = time.perf_counter() - t_train
    card: dict[str, Any] = {
        "description": recipe.description,
        "training": {
            "recipe": name,
            "command": command or f"python recipes/train_zoo.py {name}",
            "steps": steps,
            "seed": seed,
            "batch_size": recipe.batch_size,
            "patch": [recipe.patch, recipe.patch],
            "optimizer": f"Adam, lr {recipe.lr}, cosine schedule to 0",
            "augmentation": recipe.augment,
            "loss_options": recipe.loss_options,
            "network": net_kwargs,
            "wall_time_s": round(train_seconds, 1),
            "resumed": bool(resume),
            "machine": _machine(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    if "baseline_threshold" in fitted:
        card["baseline_parameters"] = {"threshold": fitted["baseline_threshold"]}
    if "baseline_gain" in fitted:
        card["baseline_parameters"] = {
            "gain": fitted["baseline_gain"], "offset": fitted["baseline_offset"]
        }
    spec["card"] = card
    path = save_model(model, output, spec=spec, overwrite=True, half=True)
    if evaluate:
        yield {"phase": "evaluate", "recipe": name}
        shipped = load_model(path)  # float16 weights, as shipped
        card["held_out"] = _rounded(measure_card(shipped, name, root=root, base_model=base_model))
        card["subset"] = _rounded(
            measure_card(shipped, name, subset=True, root=root, base_model=base_model)
        )
        card["subset"]["tolerance"] = _SUBSET_TOLERANCE
        card["evaluation_wall_time_s"] = round(time.perf_counter() - t_start - train_seconds, 1)
        spec["card"] = card
        path = save_model(shipped, output, spec=spec, overwrite=True, half=True)
    (path / "README.md").write_text(model_card_markdown(json.loads(
        (path / "model.json").read_text(encoding="utf-8"))), encoding="utf-8")
    yield {"phase": "saved", "path": str(path)}
    return path


#: Absolute tolerance of the re-measured subset figures (same weights, same code: only
#: floating-point differences between machines and thread counts remain).
_SUBSET_TOLERANCE = {"psnr_db": 0.02, "default": 0.002}


def _table(held: dict[str, Any]) -> list[str]:
    keys = [k for k in held["model"] if k in held["baseline"]]
    only = [k for k in held["model"] if k not in held["baseline"]]
    lines = ["| figure | model | baseline |", "| --- | --- | --- |"]
    lines += [f"| {k} | {held['model'][k]:.4g} | {held['baseline'][k]:.4g} |" for k in keys]
    lines += [f"| {k} | {held['model'][k]:.4g} | - |" for k in only]
    return lines


def model_card_markdown(spec: dict[str, Any]) -> str:
    """Render a bundle's ``model.json`` as its ``README.md`` model card.

    Examples
    --------
    >>> text = model_card_markdown({"name": "m", "heuristic": "quantile", "card": {}})
    >>> text.splitlines()[0]
    '# m'
    """
    card = spec.get("card") or {}
    training = card.get("training", {})
    lines = [f"# {spec['name']}", "", card.get("description", ""), ""]
    lines += [
        "## Model",
        "",
        f"- heuristic: `{spec['heuristic']}`; outputs in data units",
        f"- inputs: {spec.get('input_channels')}, normalization {spec.get('normalization')}",
        f"- output_range: {spec.get('output_range')}; scale_factor: {spec.get('scale_factor')}; "
        f"halo: {spec.get('halo')} input pixels",
        f"- architecture: `{spec.get('architecture')}` {spec.get('kwargs')}",
    ]
    if "quantiles" in spec:
        lines.append(f"- quantile levels: {spec['quantiles']} (uncalibrated: calibrate before use)")
    if "classes" in spec:
        lines.append(f"- classes: {spec['classes']}")
    if "base_model" in spec:
        lines.append(f"- base model: {spec['base_model']}")
    lines += ["", "## Training data", "", "```json",
              json.dumps(spec.get("training_data"), indent=2), "```", ""]
    if training:
        lines += [
            "## Training",
            "",
            f"- command: `{training.get('command')}`",
            f"- steps: {training.get('steps')}, batch {training.get('batch_size')} patches of "
            f"{training.get('patch')} input pixels, {training.get('optimizer')}, augmentation "
            f"`{training.get('augmentation')}`, seed {training.get('seed')}",
            f"- loss options: {training.get('loss_options')}",
            f"- wall time: {training.get('wall_time_s')} s of training on "
            f"{training.get('machine')} (nice'd, shared); torch {training.get('torch')}",
            "",
        ]
    held = card.get("held_out")
    if held:
        lines += ["## Quality on held-out data", "", f"Held out: {held['held_out']}.",
                  f"Baseline: {held['baseline_name']}. Averaging: {held['averaging']}.", ""]
        lines += _table(held)
        lines.append("")
    sub = card.get("subset")
    if sub:
        lines += ["### Subset re-measured by `tests/test_zoo.py`", "",
                  f"{sub['held_out']}; tolerance {sub.get('tolerance')}.", ""]
        lines += _table(sub)
        lines.append("")
    lines += [
        "## Limitations",
        "",
        "- A small U-Net trained for minutes on a 2-core CPU: a demonstration model, not a "
        "state-of-the-art one.",
        "- Uncertainty outputs are heuristic until calibrated on held-out data from the same "
        "population (see napari_im2im_uq.calibration).",
        "",
        "## Licence and citation",
        "",
        f"- licence: {spec.get('licence')}",
        f"- cite: {spec.get('citation')}",
        "",
    ]
    return "\n".join(lines)
