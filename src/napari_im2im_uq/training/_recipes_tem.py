"""TEM recipes (Drosophila VNC ssTEM): data, baselines and held-out figures.

Super-resolution (against cubic up-sampling), membrane segmentation (against a fitted
threshold) and the mask model (against the base model's interval width).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._card import _baseline_figures, _mean_figures, _regression_figures, _spearman

__all__ = ["TEM_DEGRADATION", "bicubic_upsample", "degradation_of", "degrade"]

_EM_LICENCE = "CC BY-NC-SA 3.0 (inherited from the training data em_drosophila_vnc)"
_EM_CITATION = (
    "Gerhard, Funke, Martel, Cardona, Fetter (2013), Segmented anisotropic ssTEM dataset of "
    "neural tissue, figshare, doi:10.6084/m9.figshare.856713"
)
_EM_TRAIN = tuple(range(0, 14))
_EM_HELD_OUT = tuple(range(14, 20))
#: Super-resolution recipes train on slices 0-12 and watch the loss on slice 13 (validation,
#: best weights kept); 14-19 stay the held-out test set.
_SR_TRAIN = tuple(range(0, 13))
_SR_VALIDATION = 13
#: The TEM degradation of the super-resolution recipes (keyword arguments of
#: :func:`napari_im2im_uq.data.degrade_tem`): 4 x 4 binning and the noise of a short exposure.
TEM_DEGRADATION = {"function": "degrade_tem", "factor": 4, "mode": "area", "photons": 200.0,
                   "read_noise": 2.0}
#: How the first zoo models were made (bundles without a ``degradation`` entry).
_NEAREST = {"function": "degrade_tem", "factor": 4, "mode": "nearest"}
#: Held-out crops re-measured by the zoo tests: (slice, first row, first column), 256 x 256.
_EM_SUBSET = ((14, 512, 256), (19, 128, 640))
_CROP = 256
_SEG_SIGMA = 1.0


def _em(slices, root, what=("raw",)) -> dict[str, np.ndarray]:
    from ..data import load_em_drosophila

    return load_em_drosophila(stack=1, slices=list(slices), root=root, what=what)


def _synthetic(seeds) -> np.ndarray:
    from ..data import synthetic_em_tissue

    return np.stack([synthetic_em_tissue((128, 128), seed=s)["image"] for s in seeds])


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


def bicubic_upsample(
    lr: np.ndarray, factor: int, shape: tuple[int, int], *, grid: str = "corners"
) -> np.ndarray:
    """Cubic-spline up-sampling aligned with nearest down-sampling or with binning.

    ``grid="corners"``: output pixel ``(r, c)`` is the cubic spline through the
    low-resolution samples, read at ``(r / f, c / f)``: low-resolution pixel ``(i, j)`` sits
    on high-resolution pixel ``(f i, f j)``, as ``degrade_tem(mode="nearest")`` samples it.
    ``grid="centres"``: read at ``((r + 0.5) / f - 0.5, (c + 0.5) / f - 0.5)``: low-resolution
    pixel ``(i, j)`` sits at the centre of the ``f x f`` block it averages, as
    ``degrade_tem(mode="area")`` bins it. Beyond the last sample the edge value is held.

    Examples
    --------
    >>> import numpy as np
    >>> lr = np.arange(16, dtype=float).reshape(4, 4)
    >>> up = bicubic_upsample(lr, 2, (8, 8))
    >>> bool(np.allclose(up[::2, ::2], lr))
    True
    >>> ramp = np.tile(np.arange(16.0), (16, 1))  # a ramp survives binning and up-sampling
    >>> binned = ramp.reshape(8, 2, 8, 2).mean(axis=(1, 3))
    >>> up = bicubic_upsample(binned, 2, (16, 16), grid="centres")
    >>> bool(np.allclose(up[:, 6:10], ramp[:, 6:10], atol=0.01))  # away from the edges
    True
    """
    from scipy.ndimage import map_coordinates

    if grid not in ("corners", "centres"):
        raise ValueError(f"grid must be 'corners' or 'centres'; got {grid!r}")
    offset = 0.0 if grid == "corners" else 0.5
    rows = (np.arange(shape[0]) + offset) / factor - offset
    cols = (np.arange(shape[1]) + offset) / factor - offset
    grid_rc = np.meshgrid(rows, cols, indexing="ij")
    return map_coordinates(lr.astype(np.float64), grid_rc, order=3, mode="nearest").astype(
        np.float32
    )


def degradation_of(spec: dict) -> dict[str, Any]:
    """Return the degradation a TEM super-resolution bundle was trained with (its spec).

    Examples
    --------
    >>> degradation_of({"training_data": {"degradation": TEM_DEGRADATION}})["mode"]
    'area'
    >>> degradation_of({"training_data": None})["mode"]
    'nearest'
    """
    data = spec.get("training_data") or {}
    return dict(data.get("degradation") or _NEAREST)


def degrade(y: np.ndarray, degradation: dict[str, Any], seed) -> np.ndarray:
    """Apply a recipe's ``degradation`` (see :data:`TEM_DEGRADATION`) to a HR image, float32.

    Examples
    --------
    >>> import numpy as np
    >>> degrade(np.full((8, 8), 0.5), TEM_DEGRADATION, 0).shape
    (2, 2)
    """
    from ..data import degrade_tem

    kwargs = {k: v for k, v in degradation.items() if k != "function"}
    rng = np.random.default_rng(seed)  # an int or a list of ints
    return degrade_tem(y, seed=rng, **kwargs).astype(np.float32)


def _eval_seed(label) -> list[int]:
    """Return the noise seed of a held-out image (its slice, or slice, row and column)."""
    return [int(v) for v in (label if isinstance(label, tuple) else (label,))]


def _measure_sr(model, recipe, *, subset: bool, root) -> dict[str, Any]:
    if recipe.task == "synthetic-sr":
        images = ((s, {"raw": im}) for s, im in zip((10, 11), _synthetic((10, 11)), strict=True))
        held_out = "synthetic_em_tissue seeds 10 and 11 (128 x 128)"
    else:
        images = _em_eval_images(subset, root)
        held_out = (
            "em_drosophila_vnc stack1 crops " + str([list(c) for c in _EM_SUBSET])
            + " (slice, row, column), 256 x 256"
            if subset else "em_drosophila_vnc stack1 slices 14-19, 1024 x 1024"
        )
    deg = degradation_of(model.spec)
    grid = "centres" if deg["mode"] == "area" else "corners"
    rows_m, rows_b = [], []
    for label, arrays in images:
        y = arrays["raw"]
        x = degrade(y, deg, _eval_seed(label))
        out = model(x, batch_size=1)
        rows_m.append(_regression_figures(out, y, 1.0))
        rows_b.append(_baseline_figures(bicubic_upsample(x, 4, y.shape, grid=grid), y, 1.0))
    return {
        "held_out": held_out,
        "model": _mean_figures(rows_m),
        "baseline": _mean_figures(rows_b),
        "baseline_name": (
            "cubic-spline up-sampling aligned with image[::4, ::4]" if grid == "corners"
            else "cubic-spline up-sampling aligned with 4 x 4 binning (pixel centres)"
        ),
        "degradation": deg,
        "noise_seeds": "numpy.random.default_rng([slice]) per slice, [slice, row, column] "
        "per crop",
        "averaging": "mean over images",
    }


def _measure_mask(model, base_model, recipe, *, subset: bool, root) -> dict[str, Any]:
    mu = float(recipe.loss_options.get("mu", 2.0))
    masks, errors, widths = [], [], []
    deg = degradation_of(base_model.spec)
    for label, arrays in _em_eval_images(subset, root):
        y = arrays["raw"]
        x = degrade(y, deg, _eval_seed(label))
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



# -- segmentation -----------------------------------------------------------------------------
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

