"""Held-out diagnostics of a calibration: the held-out risk, random splits and the papers' metrics.

The *Diagnostics* job cuts held-out tiles with ground truth from the labelled regions and hands
them here. :func:`diagnose_tiles` (a generator, for a worker thread with a progress bar) measures

- the held-out risk of the calibration itself (the loss it was calibrated to control);
- the test risk over repeated random calibration/test splits of these tiles, each split
  re-calibrated with exactly the settings of the result (:func:`recalibrate_like`), for the
  risk histogram of Angelopoulos et al.;
- per method, the papers' metrics (:mod:`napari_im2im_uq.calibration.metrics`), as the method's
  registry entry (:mod:`napari_im2im_uq.calibration.methods`) computes them: interval size,
  size-stratified risk, size/error rank correlation and spatial miscoverage for intervals; mask
  size, fidelity error and PSNR inside the trust mask for trust masks; mask size and masked
  distortion for Kutiel's mask; activation ratio, set sizes and varisco for segmentation sets.

Numpy only; the plots of a report are drawn by ``napari_im2im_uq._diagnostics``.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Mapping
from typing import Any

import numpy as np

from .._jobs import run_to_end
from .._validation import check_int
from . import methods
from ._errors import InfeasibleCalibrationError
from ._result import CalibrationResult
from .evaluation import held_out_losses, iter_risk_over_splits
from .methods._report import floats, fmt

__all__ = ["SPLITS_NOTE", "check_tiles", "diagnose_tiles", "diagnostics_report",
           "held_out_verdict", "recalibrate_like"]

#: What the risk over random splits is (it re-calibrates: it does not test the record).
SPLITS_NOTE = ("re-calibrated on random halves of the held-out tiles: the spread of the "
               "guarantee, not a test of this record")
#: Standard errors within which a held-out risk above the target is called noise.
WITHIN_ERRORS = 2.0


def _entry(result: CalibrationResult) -> methods.Method:
    if result.method not in methods.names():
        raise ValueError(
            "result.method must be 'intervals', 'trust_mask', 'mask' or 'segmentation'; got "
            f"{result.method!r}"
        )
    return methods.get(result.method)


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
    entry = _entry(result)
    needed = entry.required_keys(result)
    article = "an" if result.method[0] in "aeiou" else "a"
    for key in needed:
        if key not in tiles or tiles[key] is None:
            have = ", ".join(repr(str(k)) for k in tiles) or "none"
            raise ValueError(
                f"tiles is missing the key {key!r} that {article} {result.method!r} calibration "
                f"needs (keys needed: {', '.join(repr(k) for k in needed)}); got the keys {have}"
            )
    keys = list(needed) + [k for k in entry.optional_keys(result) if tiles.get(k) is not None]
    arrays = {k: np.asarray(tiles[k]) for k in keys}
    tile_shape = tuple(int(s) for s in result.tile_shape)
    pixel_key = entry.pixel_key(result)
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
        if key == "scores":  # the class scores of a segmentation: (n, K, rows, columns)
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
    return entry.merge_valid(result, arrays)


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
    return _entry(result).recalibrate(result, check_tiles(result, tiles))


def _take(arrays: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in arrays.items()}


def held_out_verdict(losses, level: float, *, what: str, counts_tiles: bool = False) -> dict:
    """Return the held-out risk of a calibration against its target, with its Monte-Carlo error.

    Parameters
    ----------
    losses : array_like
        The per-tile held-out losses (for a conformal rule: 1 where a tile is above alpha).
    level : float
        The target.
    what : str
        What the loss measures, in words.
    counts_tiles : bool
        Whether the mean is a fraction of tiles (conformal rules).

    Returns
    -------
    dict
        ``mean``, ``standard_error`` (of the mean over the tiles, NaN for one tile),
        ``meets_target`` (mean <= level), ``within_error`` (mean <= level + 2 standard
        errors: an excess this small is not evidence against the guarantee), ``z`` (the
        excess in standard errors) and ``message`` in words.

    Examples
    --------
    >>> v = held_out_verdict([0.2, 0.1, 0.3, 0.2], 0.1, what="miscoverage")
    >>> v["meets_target"], v["within_error"], round(v["standard_error"], 4)
    (False, False, 0.0408)
    """
    arr = np.asarray(losses, dtype=np.float64).ravel()
    mean = float(arr.mean())
    se = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else float("nan")
    excess = mean - level
    z = excess / se if se > 0 else (math.inf if excess > 0 else 0.0)
    meets = mean <= level
    within = meets or (math.isfinite(se) and mean <= level + WITHIN_ERRORS * se)
    label = "held-out tiles above alpha" if counts_tiles else "held-out risk"
    figure = (f"{label} of this record: {fmt(mean)} +/- {fmt(se)} (Monte-Carlo standard error "
              f"over {arr.size} tiles; {what}), target <= {fmt(level)}")
    if meets:
        verdict = "meets the target"
    elif within:
        verdict = (f"ABOVE the target, by {z:.1f} standard errors: within the Monte-Carlo "
                   "error, not evidence against the guarantee (more held-out tiles would say)")
    else:
        verdict = (f"ABOVE the target by {fmt(z)} standard errors: the guarantee does not hold "
                   "on these tiles (another population than the calibration tiles: recalibrate "
                   "on tiles like these)")
    return {"mean": mean, "standard_error": se, "meets_target": bool(meets),
            "within_error": bool(within), "z": float(z), "message": f"{figure}: {verdict}"}


def _summary(report: dict, result: CalibrationResult, entry) -> list[tuple[str, str]]:
    level = report["level"]
    held = report["held_out"]
    splits = report["splits"]
    rule = result.rule + (f" ({result.bound})" if result.bound else "")
    label = "held-out tiles above alpha" if entry.counts_tiles(result) else "held-out risk"
    verdict = ("meets the target" if held["meets_target"] else
               "ABOVE the target, within its Monte-Carlo error" if held["within_error"] else
               "ABOVE the target, beyond its Monte-Carlo error: the guarantee does not hold here")
    out = [
        (label, f"{fmt(held['mean'])} +/- {fmt(held['standard_error'])} (Monte-Carlo standard "
                f"error), target <= {fmt(level)}: {verdict}"),
        ("calibration", f"{result.method.replace('_', ' ')}, rule {rule}, lam = {fmt(result.lam)}"
                        + ("" if result.valid else " (NOT a valid guarantee)")),
        ("held-out tiles", f"{report['n_tiles']} tiles of {' x '.join(map(str, report['tile_shape']))}"),
    ]
    line = (f"{SPLITS_NOTE}: mean {fmt(splits['mean_risk'])} over {splits['n_splits']} splits "
            f"({splits['n_cal']} calibrate, {splits['n_test']} test); "
            f"{splits['violation_rate']:.0%} of splits above {fmt(level)}")
    if result.rule == "rcps":
        line += f" (allowed: at most {result.delta:.0%})"
    out.append(("split risk", line))
    return out + entry.summary(result, report["metrics"])


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
    ``StopIteration.value`` (``report = yield from diagnose_tiles(...)``, or
    :func:`diagnostics_report`).

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
        ``held_out``: ``losses`` (per tile), ``mean``, ``standard_error`` (Monte-Carlo, of
        the mean over the tiles), ``what``, ``meets_target``, ``within_error``, ``z`` and
        ``message`` (see :func:`held_out_verdict`): the one figure that tests this result;
        ``splits``: ``risk`` and ``lam`` (per split), ``mean_risk``, ``violation_rate``
        (fraction of splits with risk above ``level``), ``allowed_violation_rate`` (delta for
        RCPS, else None), ``fraction_above`` (for the conformal rules: mean fraction of test
        tiles above alpha, else None), ``n_splits``, ``n_cal``, ``n_test``, ``seed``, ``note``
        (each split re-calibrates: the spread of the guarantee, not a test of this result);
        ``metrics``: the method's metrics (see the module docstring; per-tile values are lists,
        maps are ndarrays); ``summary``: a list of (label, text) pairs in plain words, the
        held-out risk with its standard error and verdict first.

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
    >>> report = diagnostics_report(res, tiles, n_splits=3)
    >>> len(report["splits"]["risk"]), report["metrics"]["spatial_miscoverage"].shape
    (3, (4, 4))
    """
    arrays = check_tiles(result, tiles)
    entry = methods.get(result.method)
    n = int(arrays[entry.pixel_key(result)].shape[0])
    n_splits = check_int(n_splits, "n_splits", minimum=1)
    if n_cal is None:
        n_cal = max(1, min(int(result.n), n // 2))
    n_cal = check_int(n_cal, "n_cal", minimum=1, maximum=n - 1)
    seed = check_int(seed, "seed", minimum=0)
    total = n_splits + 3
    level = entry.level(result)

    losses = np.asarray(held_out_losses(result, **arrays), dtype=np.float64)
    verdict = held_out_verdict(losses, level, what=entry.held_out_words(result),
                               counts_tiles=entry.counts_tiles(result))
    yield 1, total

    def calibrate(idx):
        try:
            return entry.recalibrate(result, _take(arrays, idx))
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
    found = entry.metrics(result, arrays, losses)
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
            "losses": floats(losses),
            "what": entry.held_out_words(result),
            **verdict,
        },
        "splits": {
            "risk": floats(risks),
            "lam": floats(split["lam"]),
            "mean_risk": float(risks.mean()),
            "violation_rate": float(np.mean(risks > level)),
            "allowed_violation_rate": result.delta if result.rule == "rcps" else None,
            "fraction_above": float(risks.mean()) if entry.counts_tiles(result) else None,
            "n_splits": n_splits,
            "n_cal": n_cal,
            "n_test": n - n_cal,
            "seed": seed,
            "note": SPLITS_NOTE,
        },
        "metrics": found,
    }
    report["summary"] = _summary(report, result, entry)
    yield total, total
    return report


def diagnostics_report(result: CalibrationResult, tiles: Mapping[str, Any], **kw) -> dict:
    """Run :func:`diagnose_tiles` to the end and return its report.

    (``napari_im2im_uq.api.diagnose`` does the same from a record, model outputs and ground
    truth, cutting the held-out tiles itself.)

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
    >>> report = diagnostics_report(res, {"prediction": f[30:], "lower": f[30:] - 1,
    ...                                   "upper": f[30:] + 1, "truth": y[30:]}, n_splits=4)
    >>> report["summary"][0][0]
    'held-out risk'
    """
    return run_to_end(diagnose_tiles(result, tiles, **kw))
