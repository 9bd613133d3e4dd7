"""Errors raised by the calibration core."""

from __future__ import annotations

import math


class InfeasibleCalibrationError(ValueError):
    """The request cannot be certified with this data; the message says what would work."""


def tiles_needed_for_crc(alpha: float, bound: float) -> int:
    """Smallest n with bound / (n + 1) <= alpha (the CRC correction alone must fit under alpha)."""
    return max(1, math.ceil(bound / alpha - 1.0 - 1e-12))
