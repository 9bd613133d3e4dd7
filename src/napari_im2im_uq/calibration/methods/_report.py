"""Small helpers the entries share to write diagnostics metrics and summary lines."""

from __future__ import annotations

import math

import numpy as np

#: Pixels sampled for the size/error rank correlation of intervals.
SPEARMAN_PIXELS = 200_000


def floats(values) -> list[float]:
    """Return the values as a flat list of Python floats."""
    return [float(v) for v in np.asarray(values, dtype=np.float64).ravel()]


def nanmedian(values) -> float:
    """Return the median of the values that are not NaN (NaN when there are none)."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    return float(np.median(arr)) if arr.size else float("nan")


def fmt(x) -> str:
    """Format a number for a summary line: 4 significant digits, "n/a" for None or NaN."""
    if x is None:
        return "n/a"
    x = float(x)
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.4g}"

