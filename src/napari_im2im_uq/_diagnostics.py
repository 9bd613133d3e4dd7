"""Held-out diagnostics of a calibration: the papers' metrics and plots, without Qt.

The *Diagnostics* dock widget cuts held-out tiles with ground truth from the labelled regions
and hands them here. :func:`diagnose_tiles` (a generator, for a worker thread with a progress
bar) measures

- the held-out risk of the calibration itself (the loss it was calibrated to control);
- the test risk over repeated random calibration/test splits of these tiles, each split
  re-calibrated with exactly the settings of the result (:func:`recalibrate_like`), for the
  risk histogram of Angelopoulos et al.;
- per method, the papers' metrics (:mod:`napari_im2im_uq.calibration.metrics`): interval size,
  size-stratified risk, size/error rank correlation and spatial miscoverage for intervals; mask
  size, fidelity error and PSNR inside the trust mask for trust masks; mask size and masked
  distortion for Kutiel's mask; activation ratio, set sizes and varisco for segmentation sets.

:func:`plot_diagnostics` draws the report on a ``matplotlib.figure.Figure`` (matplotlib is
imported only there). Nothing here imports napari, Qt or torch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Generator, Mapping
from typing import Any

import numpy as np

from ._jobs import run_to_end
from .calibration import (
    CalibrationResult,
    InfeasibleCalibrationError,
    calibrate_intervals,
    calibrate_mask,
    calibrate_segmentation,
    calibrate_trust_mask,
    metrics,
)
from .calibration.evaluation import held_out_losses, iter_risk_over_splits

__all__ = ["check_tiles", "diagnose", "diagnose_tiles", "plot_diagnostics", "recalibrate_like"]

_SPEARMAN_PIXELS = 200_000  # pixels sampled for the size/error rank correlation


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------


def _required_keys(result: CalibrationResult) -> tuple[str, ...]:
    method = result.method
    if method == "intervals":
        return ("prediction", "lower", "upper", "truth")
    if method == "trust_mask":
        if result.params.get("fidelity") == "given":
            return ("sigma", "fidelity_error")
        return ("sigma", "prediction", "truth")
    if method == "mask":
        return ("mask_scores", "prediction", "truth")
    if method == "segmentation":
        return ("scores", "labels")
    raise ValueError(
        f"result.method must be 'intervals', 'trust_mask', 'mask' or 'segmentation'; got {method!r}"
    )


def _optional_keys(result: CalibrationResult) -> tuple[str, ...]:
    if result.method == "trust_mask" and result.params.get("fidelity") == "given":
        return ("prediction", "truth", "valid")  # prediction and truth give the PSNR
    return ("valid",)


def check_tiles(result: CalibrationResult, tiles: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Check held-out tiles against a calibration and return them as numpy arrays.

    Parameters
    ----------
    result : CalibrationResult
        The calibration to diagnose.
    tiles : mapping of str to array_like
        One held-out tile per leading index, with the keys the method needs (see
        :func:`diagnose_tiles`); other keys are ignored.

    Returns
    -------
    dict of str to ndarray
        The needed (and optional, when present) arrays, converted with ``numpy.asarray``.

    Raises
    ------
    ValueError
        For a missing key, an array of the wrong shape or dtype, tiles of another shape than the
        calibration tiles, or fewer than two tiles. The message names the key.

    Examples
    --------
    >>> from napari_im2im_uq.calibration import calibrate_intervals
    >>> rng = np.random.default_rng(0)
    >>> y = rng.normal(size=(40, 4, 4)); f = np.zeros_like(y)
    >>> res = calibrate_intervals(f, f - 1, f + 1, y, alpha=0.2, rule="crc")
    >>> sorted(check_tiles(res, {"prediction": f, "lower": f - 1, "upper": f + 1, "truth": y}))
    ['lower', 'prediction', 'truth', 'upper']
    >>> check_tiles(res, {"prediction": f, "lower": f - 1, "truth": y})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: tiles is missing the key 'upper' that an 'intervals' calibration needs ...
    """
    if not isinstance(result, CalibrationResult):
        raise ValueError(
            f"result must be a CalibrationResult from a calibrate_* function; got {type(result)}"
        )
    if not isinstance(tiles, Mapping):
        raise ValueError(f"tiles must be a dict of arrays (one tile per leading index); got "
                         f"{type(tiles)}")
    needed = _required_keys(result)
    article = "an" if result.method[0] in "aeiou" else "a"
    for key in needed:
        if key not in tiles or tiles[key] is None:
            have = ", ".join(repr(str(k)) for k in tiles) or "none"
            raise ValueError(
                f"tiles is missing the key {key!r} that {article} {result.method!r} calibration "
                f"needs (keys needed: {', '.join(repr(k) for k in needed)}); got the keys {have}"
            )
    keys = list(needed) + [k for k in _optional_keys(result) if tiles.get(k) is not None]
    arrays = {k: np.asarray(tiles[k]) for k in keys}
    tile_shape = tuple(int(s) for s in result.tile_shape)
    pixel_key = "labels" if result.method == "segmentation" else needed[0]
    ref = arrays[pixel_key]
    expect = f"(n, {', '.join(str(s) for s in tile_shape)})"
    if ref.ndim != 1 + len(tile_shape) or tuple(ref.shape[1:]) != tile_shape:
        raise ValueError(
            f"tiles[{pixel_key!r}] must have shape {expect}: one tile of the calibration's tile "
            f"shape {tile_shape} per leading index (the unit the guarantee speaks about); got "
            f"shape {ref.shape}"
        )
    n = int(ref.shape[0])
    for key, arr in arrays.items():
        if key == "scores":
            k = int(result.params.get("n_classes", arr.shape[1] if arr.ndim > 1 else 0))
            want = (n, k, *tile_shape)
            if arr.shape != want:
                raise ValueError(
                    f"tiles['scores'] must have shape (n, K, {', '.join(map(str, tile_shape))}) = "
                    f"{want} (K = {k} classes of the calibration); got shape {arr.shape}"
                )
        elif arr.shape != ref.shape:
            raise ValueError(
                f"tiles[{key!r}] must have the shape of tiles[{pixel_key!r}], {ref.shape}; got "
                f"shape {arr.shape}"
            )
        kinds = {"valid": "b", "labels": "iub"}.get(key, "biuf")
        if arr.dtype.kind not in kinds:
            what = {"valid": "booleans", "labels": "integers"}.get(key, "real numbers")
            raise ValueError(f"tiles[{key!r}] must hold {what}; got dtype {arr.dtype}")
    if n < 2:
        raise ValueError(
            f"tiles must hold at least 2 tiles (one to calibrate and one to test in each split); "
            f"got {n}"
        )
    if result.method == "segmentation" and "valid" in arrays:
        ignore = result.params.get("ignore_label")
        if ignore is None:
            raise ValueError(
                "tiles['valid'] cannot be used with a segmentation calibrated without an "
                "ignore_label; mark unannotated pixels in tiles['labels'] instead"
            )
        arrays["labels"] = np.where(arrays.pop("valid"), arrays["labels"], ignore)
    return arrays


def _check_int(value, name: str, minimum: int, maximum: int | None = None) -> int:
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or value < minimum or (maximum is not None and value > maximum):
        span = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ValueError(f"{name} must be an integer {span}; got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------
# re-calibration
# --------------------------------------------------------------------------------------------


def _recalibrate(result: CalibrationResult, a: dict[str, np.ndarray]) -> CalibrationResult:
    """Calibrate checked arrays with every setting of ``result``."""
    p = result.params
    valid = a.get("valid")
    if result.method == "intervals":
        return calibrate_intervals(
            a["prediction"], a["lower"], a["upper"], a["truth"], alpha=result.alpha,
            delta=result.delta if result.delta is not None else 0.1, rule=result.rule,
            bound=result.bound or "hoeffding_bentkus", valid=valid, seed=int(p.get("seed", 0)),
        )
    if result.method == "trust_mask":
        given = p["fidelity"] == "given"
        return calibrate_trust_mask(
            a["sigma"], None if given else a["prediction"], None if given else a["truth"],
            alpha=result.alpha, fidelity=p["fidelity"], blur_sigma=p.get("blur_sigma"),
            fidelity_error=a["fidelity_error"] if given else None,
            loss_bound=result.loss_bound, data_range=p.get("data_range"), valid=valid,
        )
    if result.method == "mask":
        crc = result.rule == "crc"
        return calibrate_mask(
            a["mask_scores"], a["prediction"], a["truth"], alpha=result.alpha,
            beta=result.beta if result.beta is not None else 0.9, distance=p["distance"],
            rule=result.rule, eps=p["eps"], data_range=p.get("data_range"),
            loss_bound=result.loss_bound if crc else None, valid=valid,
        )
    return calibrate_segmentation(
        a["scores"], a["labels"], alpha=result.alpha, scores_are=p["scores_are"],
        loss=result.loss, tau=p.get("tau"), class_weights=p.get("class_weights"),
        ignore_label=p.get("ignore_label"), rule=result.rule,
        delta=result.delta if result.delta is not None else 0.1,
        bound=result.bound or "hoeffding_bentkus", seed=int(p.get("seed", 0)),
    )


def recalibrate_like(result: CalibrationResult, tiles: Mapping[str, Any]) -> CalibrationResult:
    """Calibrate other tiles with exactly the settings of an existing calibration.

    Method, rule, bound, alpha, delta, beta, loss, distance, eps, fidelity, blur, tau, class
    weights, ignore label, data range / loss bound and the WSR order seed are all read from
    ``result``; only the data change. Given the result's own calibration tiles it returns the
    same ``lam``.

    Parameters
    ----------
    result : CalibrationResult
        The calibration whose settings to repeat.
    tiles : mapping of str to array_like
        The tiles to calibrate on, with the keys of :func:`diagnose_tiles`.

    Returns
    -------
    CalibrationResult

    Raises
    ------
    ValueError
        As :func:`check_tiles`; :class:`~napari_im2im_uq.calibration.InfeasibleCalibrationError`
        (a ValueError) when the tiles are too few for the rule at this level.

    Examples
    --------
    >>> from napari_im2im_uq.calibration import calibrate_intervals
    >>> rng = np.random.default_rng(0)
    >>> y = rng.normal(size=(40, 4, 4)); f = np.zeros_like(y)
    >>> res = calibrate_intervals(f, f - 1, f + 1, y, alpha=0.2, rule="crc")
    >>> again = recalibrate_like(res, {"prediction": f, "lower": f - 1, "upper": f + 1,
    ...                                "truth": y})
    >>> again.lam == res.lam
    True
    """
    return _recalibrate(result, check_tiles(result, tiles))


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------


def _floats(values) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=np.float64).ravel()]


def _nanmean(values) -> float:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def _nanmedian(values) -> float:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    return float(np.median(arr)) if arr.size else float("nan")


def _take(arrays: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in arrays.items()}


def _target(result: CalibrationResult) -> float:
    if result.method == "mask" and result.rule in ("conformal", "paper"):
        return 1.0 - float(result.beta)
    return float(result.alpha)


def _held_out_words(result: CalibrationResult) -> str:
    if result.method == "mask" and result.rule != "crc":
        return "fraction of tiles whose masked distortion exceeds alpha"
    return {
        "intervals": "fraction of pixels outside their interval",
        "trust_mask": "largest error among the trusted pixels",
        "mask": "masked distortion",
        "segmentation": f"{result.loss.replace('_', ' ')} of the prediction sets",
    }[result.method]


def _interval_metrics(result, a):
    valid = a.get("valid")
    lo, hi = result.intervals(a["prediction"], a["lower"], a["upper"])
    size = metrics.interval_size(lo, hi, valid=valid)
    raw = metrics.interval_size(a["lower"], a["upper"], valid=valid)
    strata = metrics.size_stratified_risk(lo, hi, a["truth"], n_strata=4, valid=valid)
    rho = metrics.spearman_size_error(lo, hi, a["truth"], a["prediction"], valid=valid,
                                      max_pixels=_SPEARMAN_PIXELS)
    return {
        "interval_size": _floats(size),
        "mean_interval_size": float(size.mean()),
        "mean_heuristic_interval_size": float(raw.mean()),
        "size_stratified_risk": {k: (_floats(v) if k != "count" else [int(c) for c in v])
                                 for k, v in strata.items()},
        "spearman_size_error": float(rho),
        "spatial_miscoverage": metrics.spatial_miscoverage(lo, hi, a["truth"], valid=valid),
    }


def _trust_metrics(result, a, losses):
    valid = a.get("valid")
    trusted = np.asarray(result.trust_mask(a["sigma"]))
    if valid is not None:
        trusted = trusted & valid
    size = metrics.mask_size(trusted, valid=valid)
    out = {
        "mask_size": _floats(size),
        "mean_mask_size": float(size.mean()),
        "empty_mask_fraction": float(np.mean(~trusted.reshape(trusted.shape[0], -1).any(axis=1))),
        "fidelity_error": _floats(losses),
        "mean_fidelity_error": float(np.mean(losses)),
        "psnr_inside": None,
        "psnr_whole": None,
        "psnr_peak": None,
        "psnr_floor": None,
    }
    if "prediction" in a and "truth" in a:
        data_range = result.params.get("data_range")
        peak = float(data_range[1] - data_range[0]) if data_range else float(result.loss_bound)
        with np.errstate(divide="ignore", invalid="ignore"):
            inside = metrics.psnr(a["prediction"], a["truth"], data_range=peak, mask=trusted,
                                  valid=valid)
            whole = metrics.psnr(a["prediction"], a["truth"], data_range=peak, valid=valid)
        out.update({
            "psnr_inside": _floats(inside),
            "psnr_whole": _floats(whole),
            "psnr_peak": peak,
            # a tile whose trusted pixels all err by at most alpha has at least this PSNR inside
            "psnr_floor": float(20.0 * math.log10(peak / result.alpha))
            if result.params.get("fidelity") == "pointwise" else None,
            "median_psnr_inside": _nanmedian(inside),
            "median_psnr_whole": _nanmedian(whole),
        })
    return out


def _mask_metrics(result, a):
    valid = a.get("valid")
    p = result.params
    m = np.asarray(result.mask(a["mask_scores"]))
    size = metrics.mask_size(m, valid=valid)
    dist = metrics.masked_distortion(m, a["prediction"], a["truth"], distance=p["distance"],
                                     data_range=p.get("data_range"), valid=valid)
    out = {
        "mask_size": _floats(size),
        "mean_mask_size": float(size.mean()),
        "masked_distortion": _floats(dist),
        "mean_masked_distortion": float(dist.mean()),
        "fraction_above_alpha": float(np.mean(dist > result.alpha)),
        "oracle_mask_size": None,
        "mean_oracle_mask_size": None,
        "oracle_correlation": None,
    }
    if p["distance"] in ("l1", "l2"):
        oracle = metrics.oracle_mask_size(a["prediction"], a["truth"], alpha=result.alpha,
                                          distance=p["distance"], valid=valid)
        corr = float("nan")
        if np.ptp(size) > 0 and np.ptp(oracle) > 0:
            corr = float(np.corrcoef(size, oracle)[0, 1])
        out.update({"oracle_mask_size": _floats(oracle), "mean_oracle_mask_size":
                    float(oracle.mean()), "oracle_correlation": corr})
    return out


def _segmentation_metrics(result, a):
    scores, labels = a["scores"], a["labels"]
    ignore = result.params.get("ignore_label")
    valid = None if ignore is None else labels != ignore
    sets = np.asarray(result.prediction_sets(scores))
    k = int(sets.shape[1])
    counts = sets.sum(axis=1)  # (n, rows, cols): classes in each pixel's set
    n = counts.shape[0]
    ratio = metrics.activation_ratio(sets, valid=valid)
    per_tile = counts.reshape(n, -1).mean(axis=1)
    hist = np.bincount(counts.ravel(), minlength=k + 1)[1:]
    return {
        "activation_ratio": _floats(ratio),
        "mean_activation_ratio": float(ratio.mean()),
        "set_size": _floats(per_tile),
        "mean_set_size": float(per_tile.mean()),
        "set_size_counts": {"size": list(range(1, k + 1)), "count": [int(c) for c in hist]},
        "varisco_mean": _floats(per_tile / k),
        "ambiguous_fraction": float(np.mean(counts > 1)),
        "n_classes": k,
    }


def _fmt(x) -> str:
    if x is None:
        return "n/a"
    x = float(x)
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.4g}"


def _summary(report: dict, result: CalibrationResult) -> list[tuple[str, str]]:
    level = report["level"]
    held = report["held_out"]
    splits = report["splits"]
    rule = result.rule + (f" ({result.bound})" if result.bound else "")
    out = [
        ("calibration", f"{result.method.replace('_', ' ')}, rule {rule}, lam = {_fmt(result.lam)}"
                        + ("" if result.valid else " (NOT a valid guarantee)")),
        ("held-out tiles", f"{report['n_tiles']} tiles of {' x '.join(map(str, report['tile_shape']))}"),
    ]
    conformal = result.method == "mask" and result.rule != "crc"
    label = "held-out tiles above alpha" if conformal else "held-out risk"
    out.append((label, f"{_fmt(held['mean'])} (target <= {_fmt(level)})"))
    line = (f"mean {_fmt(splits['mean_risk'])} over {splits['n_splits']} splits "
            f"({splits['n_cal']} calibrate, {splits['n_test']} test); "
            f"{splits['violation_rate']:.0%} of splits above {_fmt(level)}")
    if result.rule == "rcps":
        line += f" (allowed: at most {result.delta:.0%})"
    out.append(("split risk", line))
    m = report["metrics"]
    if result.method == "intervals":
        r = m["size_stratified_risk"]["risk"]
        out += [
            ("interval size", f"{_fmt(m['mean_interval_size'])} mean width (heuristic: "
                              f"{_fmt(m['mean_heuristic_interval_size'])})"),
            ("size-stratified risk", "smallest to largest quartile: "
                                     + ", ".join(_fmt(v) for v in r)),
            ("size/error correlation", f"Spearman {_fmt(m['spearman_size_error'])}"),
            ("spatial miscoverage", f"{_fmt(np.nanmin(m['spatial_miscoverage']))} to "
                                    f"{_fmt(np.nanmax(m['spatial_miscoverage']))} per position"),
        ]
    elif result.method == "trust_mask":
        out += [
            ("trusted fraction", f"{m['mean_mask_size']:.1%} of the pixels "
                                 f"({m['empty_mask_fraction']:.0%} of tiles trust nothing)"),
            ("fidelity error", f"{_fmt(m['mean_fidelity_error'])} mean largest trusted error"),
        ]
        if m["psnr_inside"] is not None:
            out.append(("PSNR", f"{_fmt(m['median_psnr_inside'])} dB inside the mask vs "
                                f"{_fmt(m['median_psnr_whole'])} dB whole tile (medians)"))
    elif result.method == "mask":
        out += [
            ("mask size", f"{m['mean_mask_size']:.1%} of the tile kept on average"),
            ("masked distortion", f"{_fmt(m['mean_masked_distortion'])} mean; "
                                  f"{m['fraction_above_alpha']:.1%} of tiles above alpha = "
                                  f"{_fmt(result.alpha)}"),
        ]
        if m["oracle_mask_size"] is not None:
            out.append(("oracle mask", f"{m['mean_oracle_mask_size']:.1%} kept; correlation "
                                       f"with the calibrated mask {_fmt(m['oracle_correlation'])}"))
    else:
        out += [
            ("activation ratio", f"{_fmt(m['mean_activation_ratio'])} classes per labelled pixel"),
            ("set size", f"{_fmt(m['mean_set_size'])} classes per pixel on average; "
                         f"{m['ambiguous_fraction']:.1%} of pixels hold more than one class"),
        ]
    return out


def diagnose_tiles(
    result: CalibrationResult,
    tiles: Mapping[str, Any],
    *,
    n_splits: int = 100,
    n_cal: int | None = None,
    seed: int = 0,
) -> Generator[tuple[int, int], None, dict]:
    """Evaluate a calibration on held-out tiles, yielding progress; return the report.

    A generator for a worker thread: it yields ``(done, total)`` (one step for the held-out
    risk, one per split, one for the metrics, one at the end) and returns the report as
    ``StopIteration.value`` (``report = yield from diagnose_tiles(...)``, or :func:`diagnose`).

    Parameters
    ----------
    result : CalibrationResult
        The calibration to diagnose.
    tiles : mapping of str to array_like
        Held-out tiles with ground truth, one per leading index, of the calibration's tile
        shape (rows, cols):

        - intervals: ``prediction``, ``lower``, ``upper`` (the model's raw, uncalibrated
          heuristic bounds) and ``truth``, each (n, rows, cols);
        - trust_mask: ``sigma`` and ``prediction``, ``truth`` (for ``fidelity="given"``:
          ``fidelity_error``, with ``prediction`` and ``truth`` optional, for the PSNR);
        - mask: ``mask_scores``, ``prediction``, ``truth``;
        - segmentation: ``scores`` (n, K, rows, cols) as calibrated (probabilities or logits)
          and ``labels`` (n, rows, cols) int, the result's ignore label where not annotated.

        Optional ``valid`` (bool, (n, rows, cols)): the pixels that count (for segmentation,
        pixels outside it get the ignore label).
    n_splits : int, default 100
        Random calibration/test splits of the tiles, each re-calibrated with
        :func:`recalibrate_like`.
    n_cal : int, optional
        Calibration tiles per split, in [1, n - 1]; default ``min(result.n, n // 2)``.
    seed : int, default 0
        Seed of the splits (and of the pixel sample of the rank correlation).

    Yields
    ------
    (done, total) : tuple of int

    Returns
    -------
    dict
        ``method``, ``rule``, ``lam``, ``alpha``, ``delta``, ``beta``, ``level`` (the target:
        alpha, or 1 - beta for the mask method's conformal and paper rules), ``valid_guarantee``,
        ``guarantee``, ``n_tiles``, ``tile_shape``;
        ``held_out``: ``losses`` (per tile), ``mean``, ``what``, ``meets_target``;
        ``splits``: ``risk`` and ``lam`` (per split), ``mean_risk``, ``violation_rate``
        (fraction of splits with risk above ``level``), ``allowed_violation_rate`` (delta for
        RCPS, else None), ``fraction_above`` (for the conformal rules: mean fraction of test
        tiles above alpha, else None), ``n_splits``, ``n_cal``, ``n_test``, ``seed``;
        ``metrics``: the method's metrics (see the module docstring; per-tile values are lists,
        maps are ndarrays); ``summary``: a list of (label, text) pairs in plain words.

    Raises
    ------
    ValueError
        As :func:`check_tiles`, and for ``n_splits < 1``, ``n_cal`` outside [1, n - 1], or a
        split too small for the rule
        (:class:`~napari_im2im_uq.calibration.InfeasibleCalibrationError`).
        Errors are raised at the first ``next()``.

    Examples
    --------
    >>> from napari_im2im_uq.calibration import calibrate_intervals
    >>> rng = np.random.default_rng(0)
    >>> y = rng.normal(size=(80, 4, 4)); f = np.zeros_like(y)
    >>> res = calibrate_intervals(f[:40], f[:40] - 1, f[:40] + 1, y[:40], alpha=0.2, rule="crc")
    >>> tiles = {"prediction": f[40:], "lower": f[40:] - 1, "upper": f[40:] + 1, "truth": y[40:]}
    >>> gen = diagnose_tiles(res, tiles, n_splits=3)
    >>> next(gen)
    (1, 6)
    >>> report = diagnose(res, tiles, n_splits=3)
    >>> len(report["splits"]["risk"]), report["metrics"]["spatial_miscoverage"].shape
    (3, (4, 4))
    """
    arrays = check_tiles(result, tiles)
    n = int(arrays["labels" if result.method == "segmentation" else
                   _required_keys(result)[0]].shape[0])
    n_splits = _check_int(n_splits, "n_splits", 1)
    if n_cal is None:
        n_cal = max(1, min(int(result.n), n // 2))
    n_cal = _check_int(n_cal, "n_cal", 1, n - 1)
    seed = _check_int(seed, "seed", 0)
    total = n_splits + 3
    level = _target(result)

    losses = np.asarray(held_out_losses(result, **arrays), dtype=np.float64)
    mean = float(losses.mean())
    yield 1, total

    def calibrate(idx):
        try:
            return _recalibrate(result, _take(arrays, idx))
        except InfeasibleCalibrationError as err:
            raise InfeasibleCalibrationError(
                f"n_cal={n_cal} calibration tiles per split are too few for this calibration: "
                f"{err} (pass more held-out tiles or a larger n_cal)"
            ) from err

    def evaluate(res, idx):
        return held_out_losses(res, **_take(arrays, idx))

    gen = iter_risk_over_splits(calibrate, evaluate, n, n_cal=n_cal, n_splits=n_splits, seed=seed)
    while True:
        try:
            done, _ = next(gen)
        except StopIteration as stop:
            split = stop.value
            break
        yield 1 + done, total
    risks = np.asarray(split["risk"], dtype=np.float64)
    conformal = result.method == "mask" and result.rule != "crc"

    if result.method == "intervals":
        found = _interval_metrics(result, arrays)
    elif result.method == "trust_mask":
        found = _trust_metrics(result, arrays, losses)
    elif result.method == "mask":
        found = _mask_metrics(result, arrays)
    else:
        found = _segmentation_metrics(result, arrays)
    yield total - 1, total

    report = {
        "method": result.method,
        "rule": result.rule,
        "lam": float(result.lam),
        "alpha": float(result.alpha),
        "delta": result.delta,
        "beta": result.beta,
        "level": level,
        "valid_guarantee": bool(result.valid),
        "guarantee": result.guarantee,
        "n_tiles": n,
        "tile_shape": [int(s) for s in result.tile_shape],
        "held_out": {
            "losses": _floats(losses),
            "mean": mean,
            "what": _held_out_words(result),
            "meets_target": bool(mean <= level),
        },
        "splits": {
            "risk": _floats(risks),
            "lam": _floats(split["lam"]),
            "mean_risk": float(risks.mean()),
            "violation_rate": float(np.mean(risks > level)),
            "allowed_violation_rate": result.delta if result.rule == "rcps" else None,
            "fraction_above": float(risks.mean()) if conformal else None,
            "n_splits": n_splits,
            "n_cal": n_cal,
            "n_test": n - n_cal,
            "seed": seed,
        },
        "metrics": found,
    }
    report["summary"] = _summary(report, result)
    yield total, total
    return report


def diagnose(result: CalibrationResult, tiles: Mapping[str, Any], **kw) -> dict:
    """Run :func:`diagnose_tiles` to the end and return its report.

    Parameters
    ----------
    result : CalibrationResult
        The calibration to diagnose.
    tiles : mapping of str to array_like
        Held-out tiles, as for :func:`diagnose_tiles`.
    **kw
        ``n_splits``, ``n_cal``, ``seed`` of :func:`diagnose_tiles`.

    Returns
    -------
    dict
        The report of :func:`diagnose_tiles`.

    Examples
    --------
    >>> from napari_im2im_uq.calibration import calibrate_intervals
    >>> rng = np.random.default_rng(0)
    >>> y = rng.normal(size=(60, 4, 4)); f = np.zeros_like(y)
    >>> res = calibrate_intervals(f[:30], f[:30] - 1, f[:30] + 1, y[:30], alpha=0.2, rule="crc")
    >>> report = diagnose(res, {"prediction": f[30:], "lower": f[30:] - 1,
    ...                         "upper": f[30:] + 1, "truth": y[30:]}, n_splits=4)
    >>> report["summary"][2][0]
    'held-out risk'
    """
    return run_to_end(diagnose_tiles(result, tiles, **kw))


# --------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------


def _risk_histogram(ax, report):
    splits = report["splits"]
    risks = np.asarray(splits["risk"], dtype=np.float64)
    level = report["level"]
    held = report["held_out"]["mean"]
    lo = min(risks.min(), level, held)
    hi = max(risks.max(), level, held)
    pad = 0.05 * (hi - lo) if hi > lo else max(abs(hi), 1e-3) * 0.1
    bins = int(np.clip(round(math.sqrt(risks.size)) * 2, 5, 30))
    ax.hist(risks, bins=bins, range=(lo - pad, hi + pad), color="tab:blue", alpha=0.75,
            label=f"{splits['n_splits']} random splits")
    ax.axvline(level, color="tab:red", linestyle="--", linewidth=1.5,
               label=f"target {_fmt(level)}")
    ax.axvline(held, color="black", linestyle=":", linewidth=1.5,
               label=f"held-out {_fmt(held)}")
    conformal = report["method"] == "mask" and report["rule"] != "crc"
    ax.set_xlabel("fraction of test tiles above alpha" if conformal else "test risk (mean loss)")
    ax.set_ylabel("number of splits")
    ax.set_title(f"Risk over {splits['n_splits']} splits: {splits['violation_rate']:.0%} above "
                 "target")
    ax.legend(fontsize="small")


def _interval_plots(figure, report, grid):
    m = report["metrics"]
    ax = figure.add_subplot(*grid(1))
    strata = m["size_stratified_risk"]
    risk = np.asarray(strata["risk"], dtype=np.float64)
    names = ["smallest", "2nd", "3rd", "largest"] if risk.size == 4 else \
        [str(i + 1) for i in range(risk.size)]
    ax.bar(np.arange(risk.size), np.nan_to_num(risk), color="tab:orange",
           tick_label=names)
    ax.axhline(report["alpha"], color="tab:red", linestyle="--", label=f"alpha {report['alpha']:g}")
    ax.set_xlabel("interval size quartile")
    ax.set_ylabel("fraction of pixels not covered")
    ax.set_title("Size-stratified risk")
    ax.legend(fontsize="small")
    ax2 = figure.add_subplot(*grid(2))
    im = ax2.imshow(m["spatial_miscoverage"], cmap="magma", vmin=0.0, interpolation="nearest")
    figure.colorbar(im, ax=ax2, label="fraction of tiles not covered")
    ax2.set_title("Spatial miscoverage within a tile")
    ax2.set_xlabel("column")
    ax2.set_ylabel("row")
    return [ax, ax2]


def _trust_plots(figure, report, grid):
    m = report["metrics"]
    ax = figure.add_subplot(*grid(1))
    ax.hist(m["mask_size"], bins=20, range=(0.0, 1.0), color="tab:green", alpha=0.8)
    ax.set_xlabel("trusted fraction of the tile")
    ax.set_ylabel("number of tiles")
    ax.set_title(f"Mask size: {m['mean_mask_size']:.1%} trusted on average")
    ax2 = figure.add_subplot(*grid(2))
    if m["psnr_inside"] is None:
        ax2.text(0.5, 0.5, "PSNR needs prediction and truth", ha="center", va="center",
                 transform=ax2.transAxes)
        ax2.set_axis_off()
        return [ax, ax2]
    inside = np.asarray(m["psnr_inside"], dtype=np.float64)
    whole = np.asarray(m["psnr_whole"], dtype=np.float64)
    keep = np.isfinite(inside) & np.isfinite(whole)
    ax2.scatter(whole[keep], inside[keep], s=12, color="tab:green", alpha=0.7,
                label="tiles")
    if keep.any():
        lo = float(min(whole[keep].min(), inside[keep].min()))
        hi = float(max(whole[keep].max(), inside[keep].max()))
        ax2.plot([lo, hi], [lo, hi], color="gray", linewidth=1, label="equal")
    if m["psnr_floor"] is not None:
        ax2.axhline(m["psnr_floor"], color="tab:red", linestyle="--",
                    label=f"error <= alpha: {m['psnr_floor']:.1f} dB")
    ax2.set_xlabel("PSNR of the whole tile (dB)")
    ax2.set_ylabel("PSNR inside the trust mask (dB)")
    dropped = int((~keep).sum())
    extra = f" ({dropped} tiles empty or perfect, not shown)" if dropped else ""
    ax2.set_title("PSNR inside vs whole" + extra)
    ax2.legend(fontsize="small")
    return [ax, ax2]


def _mask_plots(figure, report, grid):
    m = report["metrics"]
    ax = figure.add_subplot(*grid(1))
    ax.hist(m["mask_size"], bins=20, range=(0.0, 1.0), color="tab:purple", alpha=0.8,
            label="calibrated mask")
    if m["oracle_mask_size"] is not None:
        ax.hist(m["oracle_mask_size"], bins=20, range=(0.0, 1.0), histtype="step",
                color="black", label="oracle mask")
    ax.set_xlabel("mask size (mean of the mask over the tile)")
    ax.set_ylabel("number of tiles")
    ax.set_title(f"Mask size: {m['mean_mask_size']:.1%} kept on average")
    ax.legend(fontsize="small")
    return [ax]


def _segmentation_plots(figure, report, grid):
    m = report["metrics"]
    ax = figure.add_subplot(*grid(1))
    sizes = m["set_size_counts"]
    count = np.asarray(sizes["count"], dtype=np.float64)
    ax.bar(sizes["size"], count / max(count.sum(), 1.0), color="tab:cyan",
           tick_label=[str(s) for s in sizes["size"]])
    ax.set_xlabel("classes in a pixel's prediction set")
    ax.set_ylabel("fraction of pixels")
    ax.set_title(f"Set sizes: activation ratio {_fmt(m['mean_activation_ratio'])}")
    return [ax]


def plot_diagnostics(report: dict, figure, *, ncols: int = 1) -> list:
    """Draw a diagnostics report on a matplotlib figure.

    The figure is cleared first and given matplotlib's constrained layout. Plots: a histogram of
    the split test risks with the target level (dashed) and the held-out risk (dotted); for
    intervals also the size-stratified risk (quartile bars) and the spatial miscoverage map
    (with a colorbar); for trust masks the trusted-fraction histogram and the per-tile PSNR
    inside the mask against the whole tile; for Kutiel's mask the mask-size histogram (and the
    oracle's); for segmentation the distribution of prediction-set sizes.

    Parameters
    ----------
    report : dict
        From :func:`diagnose` or :func:`diagnose_tiles`.
    figure : matplotlib.figure.Figure
        The figure to draw on (for example the one of a Qt canvas).
    ncols : int, default 1
        Columns of the grid of plots (1: stacked vertically, for a narrow dock widget).

    Returns
    -------
    list of matplotlib.axes.Axes
        The plot axes, the risk histogram first (colorbars are extra axes of the figure and are
        not listed): 3 for intervals, 3 for trust masks, 2 for masks and for segmentation.

    Examples
    --------
    >>> from matplotlib.figure import Figure
    >>> from napari_im2im_uq.calibration import calibrate_intervals
    >>> rng = np.random.default_rng(0)
    >>> y = rng.normal(size=(60, 4, 4)); f = np.zeros_like(y)
    >>> res = calibrate_intervals(f[:30], f[:30] - 1, f[:30] + 1, y[:30], alpha=0.2, rule="crc")
    >>> report = diagnose(res, {"prediction": f[30:], "lower": f[30:] - 1,
    ...                         "upper": f[30:] + 1, "truth": y[30:]}, n_splits=4)
    >>> len(plot_diagnostics(report, Figure()))
    3
    """
    import matplotlib  # noqa: F401  (the figure's own package; no pyplot)

    if not isinstance(report, Mapping) or "method" not in report or "splits" not in report:
        raise ValueError("report must be the dict returned by diagnose() or diagnose_tiles(); "
                         f"got {type(report)}")
    ncols = _check_int(ncols, "ncols", 1)
    n_axes = {"intervals": 3, "trust_mask": 3, "mask": 2, "segmentation": 2}.get(report["method"])
    if n_axes is None:
        raise ValueError(f"report['method'] must be 'intervals', 'trust_mask', 'mask' or "
                         f"'segmentation'; got {report['method']!r}")
    figure.clear()
    figure.set_layout_engine("constrained")
    ncols = min(ncols, n_axes)
    nrows = math.ceil(n_axes / ncols)

    def grid(i):
        return nrows, ncols, i + 1

    first = figure.add_subplot(*grid(0))
    _risk_histogram(first, report)
    more = {"intervals": _interval_plots, "trust_mask": _trust_plots, "mask": _mask_plots,
            "segmentation": _segmentation_plots}[report["method"]](figure, report, grid)
    return [first, *more]
