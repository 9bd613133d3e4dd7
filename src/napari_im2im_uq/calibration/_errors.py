"""Errors raised by the calibration core."""

from __future__ import annotations

import math


class InfeasibleCalibrationError(ValueError):
    """The request cannot be certified with this data; the message says what would work."""


def tiles_needed_for_crc(alpha: float, bound: float) -> int:
    """Smallest n with bound / (n + 1) <= alpha (the CRC correction alone must fit under alpha)."""
    return max(1, math.ceil(bound / alpha - 1.0 - 1e-12))


# Numerical slack of the CRC inequality, in units of the summed loss: ties that floating-point
# summation pushes a hair above the threshold still count as ties (the excess risk is < 1e-12).
CRC_SLACK = 1e-12


def crc_threshold(n: int, alpha: float, bound: float, *, what: str) -> float:
    """``alpha (n + 1) - B`` (the largest summed loss CRC allows), or refuse too few tiles."""
    threshold = alpha * (n + 1) - bound + CRC_SLACK
    if threshold < 0:
        need = tiles_needed_for_crc(alpha, bound)
        raise InfeasibleCalibrationError(
            f"the calibration set has {n} tiles; {what} at alpha={alpha:g} with B={bound:g} needs "
            f"at least {need} (the correction B/(n+1) = {bound / (n + 1):.3g} alone exceeds alpha)"
        )
    return threshold
