"""Held-out evaluation of a calibration: per-tile test losses and repeated random splits.

The test losses are computed by the method's registry entry through the result's own appliers
(``intervals``, ``trust_mask``, ``mask``, ``prediction_sets``), not through the calibration's
internal representation, so a mismatch between calibrating and applying would show up here.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

import numpy as np

from .._jobs import run_to_end
from . import methods
from ._result import CalibrationResult

__all__ = ["held_out_losses", "iter_risk_over_splits", "risk_over_splits"]


def held_out_losses(result: CalibrationResult, **data) -> np.ndarray:
    """Per-tile loss of ``result`` on held-out tiles (the loss it was calibrated to control).

    Parameters
    ----------
    result : CalibrationResult
    **data
        The arrays the method needs, shape (n, ...):
        intervals: ``prediction, lower, upper, truth[, valid]``;
        trust_mask: ``sigma`` and ``prediction, truth`` or ``fidelity_error`` ``[, valid]``;
        mask: ``mask_scores, prediction, truth[, valid]``;
        segmentation: ``scores, labels``.

    Returns
    -------
    losses : ndarray, shape (n,)

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.normal(size=(300, 8, 8)); f = np.zeros_like(y)
    >>> res = calibrate_intervals(f[:200], f[:200] - 1, f[:200] + 1, y[:200], alpha=0.1,
    ...                           rule="crc")  # doctest: +SKIP
    >>> held_out_losses(res, prediction=f[200:], lower=f[200:] - 1, upper=f[200:] + 1,
    ...             truth=y[200:]).mean() < 0.15  # doctest: +SKIP
    True
    """
    method = result.method
    if method not in methods.names():
        raise ValueError(f"result.method must be one of {methods.names()}; got {method!r}")
    return methods.get(method).held_out_losses(result, data)


def iter_risk_over_splits(
    calibrate: Callable[[np.ndarray], CalibrationResult],
    evaluate: Callable[[CalibrationResult, np.ndarray], np.ndarray],
    n_tiles: int,
    *,
    n_cal: int,
    n_splits: int = 100,
    seed: int = 0,
) -> Generator[tuple[int, int], None, dict]:
    """Run :func:`risk_over_splits` as a generator: yield ``(done, n_splits)``, return the dict."""
    if not (1 <= n_cal < n_tiles):
        raise ValueError(f"n_cal must be in [1, {n_tiles}) so that test tiles remain; got {n_cal}")
    if n_splits < 1:
        raise ValueError(f"n_splits must be at least 1; got {n_splits}")
    rng = np.random.default_rng(seed)
    risks, lams, results = [], [], []
    for i in range(n_splits):
        perm = rng.permutation(n_tiles)
        cal, test = np.sort(perm[:n_cal]), np.sort(perm[n_cal:])
        res = calibrate(cal)
        losses = np.asarray(evaluate(res, test), dtype=np.float64)
        risks.append(float(losses.mean()))
        lams.append(res.lam)
        results.append(res)
        yield i + 1, n_splits
    risks = np.asarray(risks)
    last = results[-1]
    return {
        "risk": risks,
        "lam": np.asarray(lams),
        "alpha": last.alpha,
        "mean_risk": float(risks.mean()),
        "violation_rate": float((risks > last.alpha).mean()),
    }


def risk_over_splits(calibrate, evaluate, n_tiles, *, n_cal, n_splits=100, seed=0) -> dict:
    """Repeat random calibration/test splits and collect the test risks (for histograms).

    Parameters
    ----------
    calibrate : callable
        ``calibrate(cal_indices) -> CalibrationResult``.
    evaluate : callable
        ``evaluate(result, test_indices) -> per-tile test losses``; :func:`held_out_losses` does it
        for each method.
    n_tiles : int
        Number of tiles to split.
    n_cal : int
        Calibration tiles per split; the rest are test tiles.
    n_splits : int, default 100
    seed : int, default 0

    Returns
    -------
    dict
        ``risk`` (n_splits,) mean test loss per split, ``lam`` per split, ``mean_risk``,
        ``violation_rate`` (fraction of splits with test risk above alpha), ``alpha``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.normal(size=(100, 4, 4)); f = np.zeros_like(y)
    >>> out = risk_over_splits(
    ...     lambda c: calibrate_intervals(f[c], f[c] - 1, f[c] + 1, y[c], alpha=0.2, rule="crc"),
    ...     lambda r, t: held_out_losses(r, prediction=f[t], lower=f[t] - 1, upper=f[t] + 1,
    ...                              truth=y[t]),
    ...     100, n_cal=50, n_splits=5)  # doctest: +SKIP
    >>> out["risk"].shape  # doctest: +SKIP
    (5,)
    """
    return run_to_end(iter_risk_over_splits(calibrate, evaluate, n_tiles, n_cal=n_cal,
                                            n_splits=n_splits, seed=seed))

