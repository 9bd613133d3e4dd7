"""Baselines of a model trained on the user's pairs, and its quality on the held-back regions.

:func:`fit_baseline` fits the classical method a trained model must beat on the training
regions only; :func:`baseline_predict` applies it to one input image; :func:`held_back_quality`
measures the model and the baseline on the held-back regions of the spatial split (the
``training_regions`` of the bundle). All figures are JSON-able.

Baselines
    regression, ``scale_factor > 1``: cubic-spline up-sampling of each input channel (its
    alignment with the target grid, "corner" (``hr[::f, ::f] = lr``, nearest down-sampling) or
    "centre" (binning), chosen on the training regions), then an affine least-squares map of the
    channels to the target; ``scale_factor == 1``: the affine least-squares map of the input
    channels. Segmentation: with two classes, a threshold of the Gaussian-smoothed (sigma 1) first
    channel (threshold and side fitted for the mean F1 of the two classes); otherwise the
    majority class. Mask: the best constant mask of the mask loss, ``clip(1 - mu E|y - yhat| / 2,
    0, 1)`` with the base model's error on the training regions.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._card import _ssim
from ._recipes_tem import _SEG_SIGMA

__all__ = ["baseline_predict", "fit_baseline", "held_back_quality"]

_TASKS = ("regression", "segmentation", "mask")
#: Threshold candidates of the segmentation baseline: these quantiles of the smoothed channel.
_THRESHOLD_QUANTILES = np.linspace(0.01, 0.99, 99)
#: The smallest box side SSIM is measured on (the Gaussian window of sigma 1.5 is 11 wide).
_SSIM_MIN_SIDE = 11
#: Where low-resolution pixel ``(i, j)`` sits on the target grid, ``(f i + o, f j + o)``: the
#: offset ``o`` in target pixels as a function of the factor ``f``.
_ALIGNMENTS = {"corner": lambda f: 0.0, "centre": lambda f: (f - 1) / 2.0}


# -- checks -------------------------------------------------------------------------------------
def _check_task(task) -> str:
    if task not in _TASKS:
        raise ValueError(f"task must be one of {list(_TASKS)}; got {task!r}")
    return task


def _as_inputs(inputs, name="inputs") -> list[np.ndarray]:
    if isinstance(inputs, np.ndarray):
        inputs = [inputs]
    out = []
    for i, x in enumerate(inputs):
        arr = np.asarray(x)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3 or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(
                f"{name}[{i}] must be a numeric (C, h, w) or (h, w) array; got dtype {arr.dtype} "
                f"and shape {arr.shape}"
            )
        out.append(arr)
    return out


def _as_targets(targets, n: int) -> list[np.ndarray]:
    if isinstance(targets, np.ndarray):
        targets = [targets]
    targets = [np.asarray(t) for t in targets]
    if len(targets) != n:
        raise ValueError(f"targets must hold one image per input ({n}); got {len(targets)}")
    for i, t in enumerate(targets):
        if t.ndim != 2 or not np.issubdtype(t.dtype, np.number):
            raise ValueError(
                f"targets[{i}] must be a numeric (H, W) array; got dtype {t.dtype} and shape "
                f"{t.shape}"
            )
    return targets


def _check_scale(scale_factor) -> int:
    if isinstance(scale_factor, bool) or not isinstance(scale_factor, (int, np.integer)) or (
        scale_factor < 1
    ):
        raise ValueError(f"scale_factor must be an integer >= 1; got {scale_factor!r}")
    return int(scale_factor)


def _check_grids(inputs, targets, s: int) -> None:
    for i, (x, t) in enumerate(zip(inputs, targets, strict=True)):
        if t.shape != (x.shape[-2] * s, x.shape[-1] * s):
            raise ValueError(
                f"targets[{i}] must have shape input shape x scale_factor {s} = "
                f"{(x.shape[-2] * s, x.shape[-1] * s)}; got {t.shape}"
            )


def _boxes(regions, n: int, shapes, name="regions") -> list[list[tuple[int, int, int, int]]]:
    if len(regions) != n:
        raise ValueError(f"{name} must hold one list of boxes per image ({n}); got {len(regions)}")
    out = []
    for i, (boxes, shape) in enumerate(zip(regions, shapes, strict=True)):
        checked = []
        for box in boxes:
            r0, c0, r1, c1 = (int(v) for v in box)
            if not (0 <= r0 < r1 <= shape[0] and 0 <= c0 < c1 <= shape[1]):
                raise ValueError(
                    f"{name}[{i}] boxes must be [r0, c0, r1, c1] inside the target of shape "
                    f"{tuple(shape)}; got {list(box)}"
                )
            checked.append((r0, c0, r1, c1))
        out.append(checked)
    if not any(out):
        raise ValueError(f"{name} must hold at least one box; got none")
    return out


# -- cubic up-sampling on a box of the target grid ----------------------------------------------
#: Edge padding of the spline coefficients (what ``map_coordinates(mode="nearest")`` pads).
_SPLINE_PAD = 12


def _spline(channel: np.ndarray) -> np.ndarray:
    """Return the cubic spline coefficients of an edge-padded channel (computed once per image).

    The same as ``scipy.ndimage.map_coordinates(..., order=3, mode="nearest")`` computes on
    every call; :func:`_cubic_box` reads them with ``prefilter=False``.
    """
    from scipy.ndimage import spline_filter

    padded = np.pad(channel.astype(np.float64), _SPLINE_PAD, mode="edge")
    return spline_filter(padded, order=3, mode="nearest")


def _cubic_box(coeffs: np.ndarray, factor: int, box, alignment: str) -> np.ndarray:
    """Cubic spline through the low-resolution samples, read on target pixels ``box``.

    Target pixel ``(r, c)`` reads the spline at ``((r - o) / f, (c - o) / f)``; with "corner"
    (``o = 0``) this is :func:`napari_im2im_uq.training._recipes_tem.bicubic_upsample`.
    """
    from scipy.ndimage import map_coordinates

    r0, c0, r1, c1 = box
    off = _ALIGNMENTS[alignment](factor)
    rows = (np.arange(r0, r1) - off) / factor + _SPLINE_PAD
    cols = (np.arange(c0, c1) - off) / factor + _SPLINE_PAD
    grid = np.meshgrid(rows, cols, indexing="ij")
    return map_coordinates(coeffs, grid, order=3, mode="nearest", prefilter=False)


def _features(x: np.ndarray, s: int, boxes, alignment: str | None) -> list[np.ndarray]:
    """Per box, the (n_pixels, C) input channels on the target grid (up-sampled when s > 1)."""
    if s == 1:
        return [x[:, r0:r1, c0:c1].reshape(len(x), -1).T.astype(np.float64)
                for r0, c0, r1, c1 in boxes]
    coeffs = [_spline(ch) for ch in x]
    return [np.stack([_cubic_box(k, s, box, alignment).ravel() for k in coeffs], axis=1)
            for box in boxes]


def _affine_fit(feats: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Least squares ``y ~ feats @ w + b``; returns ``w``, ``b`` and the sum of squares."""
    design = np.concatenate([feats, np.ones((len(feats), 1))], axis=1)
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    sse = float(np.sum((design @ coef - y) ** 2))
    return coef[:-1], float(coef[-1]), sse


def _fit_regression(inputs, targets, boxes, s: int) -> dict[str, Any]:
    best = None
    for alignment in ("corner", "centre") if s > 1 else (None,):
        feats, ys = [], []
        for x, t, bx in zip(inputs, targets, boxes, strict=True):
            feats += _features(x, s, bx, alignment)
            ys += [t[r0:r1, c0:c1].ravel().astype(np.float64) for r0, c0, r1, c1 in bx]
        w, b, sse = _affine_fit(np.concatenate(feats), np.concatenate(ys))
        if best is None or sse < best[3]:
            best = (alignment, w, b, sse)
    alignment, w, b, _ = best
    if s > 1:
        name = (f"cubic-spline up-sampling x{s} ({alignment}-aligned) of each input channel, "
                "then an affine least-squares map of the channels to the target, fitted on the "
                "training regions")
    else:
        name = ("affine least-squares map of the input channels to the target, fitted on the "
                "training regions")
    return {"name": name, "task": "regression", "scale_factor": s, "alignment": alignment,
            "weights": [float(v) for v in w], "offset": b}


# -- segmentation ---------------------------------------------------------------------------------
def _smooth(x: np.ndarray, s: int) -> np.ndarray:
    """Return the Gaussian-smoothed first channel on the target grid."""
    from scipy.ndimage import gaussian_filter

    sm = gaussian_filter(x[0].astype(np.float64), _SEG_SIGMA)
    if s == 1:
        return sm
    return _cubic_box(_spline(sm), s, (0, 0, sm.shape[0] * s, sm.shape[1] * s), "corner")


def _f1(pred: np.ndarray, truth: np.ndarray, label: int) -> float:
    p, t = pred == label, truth == label
    tp, fp, fn = np.sum(p & t), np.sum(p & ~t), np.sum(~p & t)
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn > 0 else 1.0


def _threshold_scores(v_a: np.ndarray, v_b: np.ndarray, cands: np.ndarray) -> np.ndarray:
    """Mean F1 of classes a and b when ``v < t`` is called a, for each candidate ``t``."""
    a_sorted, b_sorted = np.sort(v_a), np.sort(v_b)
    tp_a = np.searchsorted(a_sorted, cands, side="left").astype(np.float64)  # a called a
    fp_a = np.searchsorted(b_sorted, cands, side="left").astype(np.float64)  # b called a
    fn_a = len(v_a) - tp_a
    tp_b, fp_b, fn_b = len(v_b) - fp_a, fn_a, fp_a

    def f1(tp, fp, fn):
        den = 2 * tp + fp + fn
        return np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), 1.0)

    return (f1(tp_a, fp_a, fn_a) + f1(tp_b, fp_b, fn_b)) / 2


def _fit_segmentation(inputs, targets, boxes, s: int, n_classes) -> dict[str, Any]:
    labels, values = [], []
    for x, t, bx in zip(inputs, targets, boxes, strict=True):
        sm = _smooth(x, s)
        for r0, c0, r1, c1 in bx:
            tt = t[r0:r1, c0:c1]
            keep = tt > 0
            labels.append(tt[keep].astype(np.int64))
            values.append(sm[r0:r1, c0:c1][keep])
    lab, val = np.concatenate(labels), np.concatenate(values)
    if lab.size == 0:
        raise ValueError("targets have no annotated pixel (label > 0) in the training regions")
    k = int(n_classes) if n_classes is not None else int(lab.max())
    counts = np.bincount(lab, minlength=k + 1)
    if k != 2 or np.count_nonzero(counts[1:3]) < 2:
        label = int(np.argmax(counts[1:]) + 1)
        return {"name": f"the majority class of the training regions (label {label})",
                "task": "segmentation", "kind": "majority", "label": label, "scale_factor": s}
    cands = np.unique(np.quantile(val, _THRESHOLD_QUANTILES))
    below_1 = _threshold_scores(val[lab == 1], val[lab == 2], cands)  # v < t -> label 1
    below_2 = _threshold_scores(val[lab == 2], val[lab == 1], cands)  # v < t -> label 2
    if below_1.max() >= below_2.max():
        t, below, above = float(cands[int(np.argmax(below_1))]), 1, 2
    else:
        t, below, above = float(cands[int(np.argmax(below_2))]), 2, 1
    return {"name": f"threshold {t:.6g} of the Gaussian-smoothed (sigma {_SEG_SIGMA}) first "
                    f"channel (label {below} below, {above} above), fitted for the mean F1 of the "
                    "two classes on the training regions",
            "task": "segmentation", "kind": "threshold", "threshold": t, "below": below,
            "above": above, "sigma": _SEG_SIGMA, "scale_factor": s}


# -- mask -----------------------------------------------------------------------------------------
def _crop(x: np.ndarray, box, s: int, halo: int):
    """Return the input crop of target ``box`` extended by ``halo`` input pixels.

    Also return the slice of the crop's target grid that is ``box``.
    """
    r0, c0, r1, c1 = box
    h, w = x.shape[-2:]
    a0, b0 = max(0, r0 // s - halo), max(0, c0 // s - halo)
    a1, b1 = min(h, -(-r1 // s) + halo), min(w, -(-c1 // s) + halo)
    return x[:, a0:a1, b0:b1], np.s_[r0 - a0 * s : r1 - a0 * s, c0 - b0 * s : c1 - b0 * s]


def _squeeze(out: dict[str, np.ndarray], sl) -> dict[str, np.ndarray]:
    return {k: (v if k == "probabilities" else v[0])[(..., *sl)] for k, v in out.items()}


def _outputs(model, x: np.ndarray, box, s: int, *, base_model=None) -> dict[str, np.ndarray]:
    """Return the outputs on target ``box``, from the input crop extended by the models' halo.

    With ``base_model`` (a mask ``model``): the base model's outputs plus the "mask" computed
    from the base model's prediction on the same crop.
    """
    first = model if base_model is None else base_model
    halo = max(int(getattr(m, "halo", 0)) for m in (model, first))
    crop, sl = _crop(x, box, s, halo)
    out = first(crop, batch_size=1)
    if base_model is not None:
        out["mask"] = model(crop, prediction=out["prediction"], batch_size=1)["mask"]
    return _squeeze(out, sl)


def _mask_constant(errors: np.ndarray, mu: float) -> float:
    return float(np.clip(1 - mu * float(np.mean(errors)) / 2, 0.0, 1.0))


def _check_base(base_model):
    if base_model is None:
        raise ValueError("task 'mask' needs base_model= (the model whose errors the mask learns); "
                         "got None")
    return base_model


def _fit_mask(inputs, targets, boxes, s: int, base_model, mu: float) -> dict[str, Any]:
    base_model = _check_base(base_model)
    errors = [np.abs(_outputs(base_model, x, box, s)["prediction"].astype(np.float64)
                     - t[box[0]:box[2], box[1]:box[3]]).ravel()
              for x, t, bx in zip(inputs, targets, boxes, strict=True) for box in bx]
    value = _mask_constant(np.concatenate(errors), mu)
    return {"name": f"the best constant mask of the mask loss (mu {mu}) on the training regions",
            "task": "mask", "value": value, "mu": float(mu), "scale_factor": s}


def fit_baseline(
    task: str,
    inputs,
    targets,
    regions,
    *,
    scale_factor: int = 1,
    n_classes: int | None = None,
    base_model=None,
    mu: float = 2.0,
) -> dict[str, Any]:
    """Fit the baseline a trained model is compared with, on the training regions only.

    Parameters
    ----------
    task : {"regression", "segmentation", "mask"}
        What the model does (see the module docstring for each baseline).
    inputs : list of numpy.ndarray
        One ``(C, h, w)`` (or ``(h, w)``) input image per target plane, raw units.
    targets : list of numpy.ndarray
        One ``(H, W)`` target per input, ``H = h * scale_factor``: values (regression; for
        "mask" the truth the base model is compared with) or integer labels with 0 = not
        annotated and classes 1..K (segmentation).
    regions : list of list of [r0, c0, r1, c1]
        Per image, the half-open "train" boxes in target pixels; nothing outside is read.
    scale_factor : int
        Target pixels per input pixel along each axis.
    n_classes : int, optional
        Segmentation: K (default: the largest label in the training regions).
    base_model : callable, optional
        Mask only (required there): the model whose errors the mask network learns.
    mu : float
        Mask only: the weight of the mask loss (``mean((m - 1)^2) + mu mean(m |y - yhat|)``).

    Returns
    -------
    dict
        JSON-able parameters with ``"name"`` (what the baseline is, in words) and ``"task"``;
        pass them to :func:`baseline_predict`.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).random((2, 16, 16)).astype(np.float32)
    >>> y = 3 * x[0] - x[1] + 0.5
    >>> params = fit_baseline("regression", [x], [y], [[[0, 0, 8, 16]]])
    >>> np.round(params["weights"], 6).tolist(), round(params["offset"], 6)
    ([3.0, -1.0], 0.5)
    """
    task = _check_task(task)
    s = _check_scale(scale_factor)
    inputs = _as_inputs(inputs)
    targets = _as_targets(targets, len(inputs))
    _check_grids(inputs, targets, s)
    boxes = _boxes(regions, len(inputs), [t.shape for t in targets])
    if task == "regression":
        return _fit_regression(inputs, targets, boxes, s)
    if task == "segmentation":
        if n_classes is not None and (isinstance(n_classes, bool) or not isinstance(
                n_classes, (int, np.integer)) or n_classes < 1):
            raise ValueError(f"n_classes must be an integer >= 1 or None; got {n_classes!r}")
        return _fit_segmentation(inputs, targets, boxes, s, n_classes)
    return _fit_mask(inputs, targets, boxes, s, base_model, float(mu))


def baseline_predict(params: dict[str, Any], x) -> np.ndarray:
    """Apply a baseline fitted by :func:`fit_baseline` to one input image.

    Parameters
    ----------
    params : dict
        The output of :func:`fit_baseline`.
    x : numpy.ndarray
        One ``(C, h, w)`` (or ``(h, w)``) input image, raw units.

    Returns
    -------
    numpy.ndarray
        ``(h * s, w * s)`` on the target grid: float32 values (regression, and the constant of a
        mask baseline) or int64 labels 1..K (segmentation).

    Examples
    --------
    >>> import numpy as np
    >>> params = {"name": "affine", "task": "regression", "scale_factor": 1,
    ...           "alignment": None, "weights": [2.0], "offset": 1.0}
    >>> baseline_predict(params, np.ones((1, 2, 3))).tolist()
    [[3.0, 3.0, 3.0], [3.0, 3.0, 3.0]]
    """
    if not isinstance(params, dict) or params.get("task") not in _TASKS:
        raise ValueError(f"params must be the dict fit_baseline returns; got {params!r:.200}")
    (x,) = _as_inputs([x], name="x")
    s = int(params.get("scale_factor", 1))
    shape = (x.shape[-2] * s, x.shape[-1] * s)
    if params["task"] == "regression":
        if len(params["weights"]) != len(x):
            raise ValueError(f"x must have {len(params['weights'])} channels (as fitted); got "
                             f"shape {x.shape}")
        (feats,) = _features(x, s, [(0, 0, *shape)], params["alignment"])
        pred = feats @ np.asarray(params["weights"], dtype=np.float64) + params["offset"]
        return pred.reshape(shape).astype(np.float32)
    if params["task"] == "mask":
        return np.full(shape, params["value"], dtype=np.float32)
    if params["kind"] == "majority":
        return np.full(shape, params["label"], dtype=np.int64)
    below = _smooth(x, s) < params["threshold"]
    return np.where(below, params["below"], params["above"]).astype(np.int64)


# -- figures --------------------------------------------------------------------------------------
def _regression_figures(preds, truths, peak: float, lowers=None, uppers=None) -> dict[str, float]:
    """Pool over the pixels of all regions; SSIM is averaged over regions weighted by pixels."""
    d = np.concatenate([(p.astype(np.float64) - t).ravel() for p, t in zip(preds, truths)])
    mse = float(np.mean(d**2))
    sizes = np.array([t.size for t in truths], dtype=np.float64)
    ok = np.array([min(t.shape) >= _SSIM_MIN_SIDE for t in truths])
    figures = {"psnr_db": float(10 * math.log10(peak**2 / mse)) if mse > 0 else math.inf}
    if ok.any():  # boxes smaller than the SSIM window are left out of the SSIM (never all)
        ssims = [_ssim(p, t, peak) for p, t, k in zip(preds, truths, ok) if k]
        figures["ssim"] = float(np.average(ssims, weights=sizes[ok]))
    figures.update(rmse=math.sqrt(mse), mae=float(np.mean(np.abs(d))))
    if lowers is not None:
        lo = np.concatenate([v.ravel() for v in lowers]).astype(np.float64)
        up = np.concatenate([v.ravel() for v in uppers]).astype(np.float64)
        tr = np.concatenate([t.ravel() for t in truths]).astype(np.float64)
        figures["raw_interval_coverage"] = float(np.mean((lo <= tr) & (tr <= up)))
        figures["mean_interval_width"] = float(np.mean(up - lo))
    return figures


def _segmentation_figures(preds, truths, n_classes: int) -> dict[str, float]:
    """Pixel accuracy and per-class F1 on the annotated pixels (label > 0), pooled."""
    t = np.concatenate([v.ravel() for v in truths])
    p = np.concatenate([v.ravel() for v in preds])
    keep = t > 0
    t, p = t[keep], p[keep]
    figures = {"pixel_accuracy": float(np.mean(p == t)) if t.size else math.nan}
    f1s = [_f1(p, t, k) for k in range(1, n_classes + 1)]
    figures.update({f"f1_class_{k}": f for k, f in enumerate(f1s, start=1)})
    figures["f1_mean"] = float(np.mean(f1s))
    return figures


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def _mask_loss(mask: np.ndarray, errors: np.ndarray, mu: float) -> float:
    return float(np.mean((mask - 1.0) ** 2) + mu * np.mean(mask * errors))


def _check_split(split, inputs, targets) -> list[dict[str, Any]]:
    images = split.get("images") if isinstance(split, dict) else None
    if not isinstance(images, list):
        raise ValueError("split must be a training_regions dict with an 'images' list; got "
                         f"{type(split).__name__}")
    if len(images) != len(inputs):
        raise ValueError(f"split must describe one image per input ({len(inputs)}); its 'images' "
                         f"has {len(images)}")
    for i, (entry, t) in enumerate(zip(images, targets, strict=True)):
        if tuple(entry["shape"]) != t.shape:
            raise ValueError(f"targets[{i}] must have the shape the split records, "
                             f"{tuple(entry['shape'])}; got {t.shape}")
    return images


def held_back_quality(
    model,
    inputs,
    targets,
    split: dict[str, Any],
    baseline: dict[str, Any],
    *,
    task: str,
    base_model=None,
) -> dict[str, Any]:
    """Measure a trained model and its baseline on the held-back regions of its split.

    Each held-back box is predicted from its input crop extended by the model's ``halo`` (so the
    model sees context, but nothing outside the box is scored). Figures are pooled over the
    pixels of all held-back boxes (SSIM: the mean over boxes weighted by their pixels).

    Parameters
    ----------
    model : Im2ImModel
        The trained model (called as ``model(x)``; mask models as ``model(x, prediction=...)``).
    inputs, targets : list of numpy.ndarray
        As for :func:`fit_baseline`, one per entry of ``split["images"]``, in that order.
    split : dict
        The ``training_regions`` dict: its ``"train"`` boxes give the PSNR peak (the range of the
        training targets), its ``"held_back"`` boxes are scored.
    baseline : dict
        The output of :func:`fit_baseline`.
    task : {"regression", "segmentation", "mask"}
        Regression: ``psnr_db``, ``ssim``, ``rmse``, ``mae`` and, for models with intervals,
        ``raw_interval_coverage`` and ``mean_interval_width``. Segmentation (annotated pixels
        only): ``pixel_accuracy``, ``f1_class_<k>``, ``f1_mean``. Mask: ``spearman_error``
        (Spearman of ``1 - mask`` with the base model's absolute error), ``mask_loss``,
        ``mean_mask``; the baseline's Spearman is the base model's interval width when it has
        intervals (a constant mask ranks nothing).
    base_model : callable, optional
        Mask only (required there): the model whose errors the mask learns.

    Returns
    -------
    dict
        ``{"model": {...}, "baseline": {...}, "baseline_name": str, "n_regions": int,
        "n_pixels": int}`` (``n_pixels``: target pixels scored; annotated ones for segmentation).

    Examples
    --------
    >>> import numpy as np
    >>> from napari_im2im_uq.models import Im2ImModel, build_network
    >>> net = build_network("quantile", depth=1, base_channels=2)
    >>> model = Im2ImModel(net, {"heuristic": "quantile", "name": "m"})
    >>> x = np.random.default_rng(0).random((1, 32, 64)).astype(np.float32)
    >>> split = {"images": [{"shape": [32, 64], "train": [[0, 0, 32, 32]],
    ...                      "validation": [], "held_back": [[0, 32, 32, 64]]}]}
    >>> params = fit_baseline("regression", [x], [x[0]], [[[0, 0, 32, 32]]])
    >>> q = held_back_quality(model, [x], [x[0]], split, params, task="regression")
    >>> q["n_regions"], q["n_pixels"], sorted(q["baseline"])
    (1, 1024, ['mae', 'psnr_db', 'rmse', 'ssim'])
    """
    task = _check_task(task)
    inputs = _as_inputs(inputs)
    targets = _as_targets(targets, len(inputs))
    images = _check_split(split, inputs, targets)
    s = int(getattr(model, "scale_factor", 1)) if task != "mask" else int(
        getattr(_check_base(base_model), "scale_factor", 1))
    _check_grids(inputs, targets, s)
    shapes = [t.shape for t in targets]
    held = _boxes([e["held_back"] for e in images], len(inputs), shapes, name="held_back")
    train = _boxes([e["train"] for e in images], len(inputs), shapes, name="train")
    truths, outs, bases = [], [], []
    for x, t, bx in zip(inputs, targets, held, strict=True):
        base_full = baseline_predict(baseline, x)
        for box in bx:
            sl = np.s_[box[0]:box[2], box[1]:box[3]]
            truths.append(t[sl])
            bases.append(base_full[sl])
            outs.append(_outputs(model, x, box, s,
                                 base_model=base_model if task == "mask" else None))
    result: dict[str, Any] = {"baseline_name": baseline["name"], "n_regions": len(truths)}
    if task == "regression":
        peak = _peak(targets, train)
        intervals = all("lower" in o and "upper" in o for o in outs)
        result["model"] = _regression_figures(
            [o["prediction"] for o in outs], truths, peak,
            [o["lower"] for o in outs] if intervals else None,
            [o["upper"] for o in outs] if intervals else None)
        result["baseline"] = _regression_figures(bases, truths, peak)
        result["n_pixels"] = int(sum(t.size for t in truths))
    elif task == "segmentation":
        k = max(int(outs[0]["probabilities"].shape[0]),
                int(baseline.get("label", 0)), int(baseline.get("above", 0)))
        preds = [np.argmax(o["probabilities"], axis=0) + 1 for o in outs]
        result["model"] = _segmentation_figures(preds, truths, k)
        result["baseline"] = _segmentation_figures(bases, truths, k)
        result["n_pixels"] = int(sum(np.count_nonzero(t > 0) for t in truths))
    else:
        mu = float(baseline.get("mu", 2.0))
        err = np.concatenate([np.abs(o["prediction"].astype(np.float64) - t).ravel()
                              for o, t in zip(outs, truths)])
        mask = np.concatenate([o["mask"].ravel() for o in outs]).astype(np.float64)
        const = np.concatenate([b.ravel() for b in bases]).astype(np.float64)
        result["model"] = {"spearman_error": _spearman(1 - mask, err),
                           "mask_loss": _mask_loss(mask, err, mu), "mean_mask": float(mask.mean())}
        result["baseline"] = {"mask_loss": _mask_loss(const, err, mu),
                              "mean_mask": float(const.mean())}
        if all("lower" in o and "upper" in o for o in outs):
            width = np.concatenate([(o["upper"] - o["lower"]).ravel() for o in outs])
            result["baseline"]["spearman_error"] = _spearman(width.astype(np.float64), err)
            result["baseline_name"] += ("; Spearman: the base model's interval width "
                                        "(upper - lower)")
        result["n_pixels"] = int(err.size)
    return result


def _peak(targets, train) -> float:
    """Return the data range of the training targets (inside the train boxes): the PSNR peak."""
    lo, hi = math.inf, -math.inf
    for t, bx in zip(targets, train, strict=True):
        for r0, c0, r1, c1 in bx:
            v = t[r0:r1, c0:c1]
            lo, hi = min(lo, float(np.min(v))), max(hi, float(np.max(v)))
    return hi - lo if hi > lo else 1.0
