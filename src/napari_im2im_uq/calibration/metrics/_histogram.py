"""Risk over repeated calibration/test splits: the histogram of Angelopoulos et al. (2022)."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from ..._validation import NUMERIC, check_int


def risk_histogram(
    risks: Any,
    *,
    bins: int = 20,
    limits: tuple[float, float] | None = None,
    alpha: float | None = None,
) -> dict[str, Any]:
    """Histogram of test risks over repeated calibration/test splits, and the violation rate.

    Angelopoulos et al. plot, for each method, the test risk of many random splits: the risk
    should fall below ``alpha`` in at least a ``1 - delta`` fraction of them.

    Parameters
    ----------
    risks : array_like, shape (m,)
        One test risk per split, finite.
    bins : int, default 20
        Number of equal-width bins.
    limits : (float, float), optional
        Range of the bins. Defaults to (0, 1) when every risk lies in [0, 1] (risks of fraction
        losses, comparable across methods), else to the smallest and largest risk.
    alpha : float, optional
        The risk level; when given, ``violation_rate`` is the fraction of risks above it.

    Returns
    -------
    dict
        ``counts`` (bins,) int64, ``edges`` (bins + 1,) float64, as ``numpy.histogram``, and
        ``violation_rate``: a float, or None when ``alpha`` is not given.

    Raises
    ------
    ValueError
        On an empty or non-1-D ``risks``, NaN or inf in it, ``bins < 1``, or ``limits`` that are
        not two finite increasing numbers.

    Examples
    --------
    >>> import numpy as np
    >>> result = risk_histogram([0.02, 0.06, 0.09, 0.12], bins=4, limits=(0.0, 0.2), alpha=0.1)
    >>> result["counts"]
    array([1, 2, 1, 0])
    >>> result["violation_rate"]
    0.25
    """
    bins = check_int(bins, "bins")
    arr = np.asarray(risks)
    if arr.dtype.kind not in NUMERIC or arr.ndim != 1 or arr.size == 0:
        raise ValueError(
            "risks must be a non-empty 1-D array of numbers, one risk per split; got "
            f"shape {arr.shape} and dtype {arr.dtype}"
        )
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(
            f"risks must be finite; got {int(np.count_nonzero(~np.isfinite(arr)))} NaN or inf"
        )
    if limits is None:
        low, high = float(arr.min()), float(arr.max())
        limits = (0.0, 1.0) if low >= 0 and high <= 1 else (low, high)
    else:
        lim = np.asarray(limits, dtype=np.float64)
        if lim.shape != (2,) or not np.all(np.isfinite(lim)) or lim[0] >= lim[1]:
            raise ValueError(
                f"limits must be two finite numbers (low, high) with low < high; got {limits!r}"
            )
        limits = (float(lim[0]), float(lim[1]))
    counts, edges = np.histogram(arr, bins=bins, range=limits)
    rate = None
    if alpha is not None:
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not np.isfinite(alpha):
            raise ValueError(f"alpha must be a finite number; got {alpha!r}")
        rate = float(np.mean(arr > alpha))
    return {"counts": counts.astype(np.int64), "edges": edges, "violation_rate": rate}
