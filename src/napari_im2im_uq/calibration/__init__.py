"""The statistical core: exact, distribution-free calibration (numpy and scipy only).

Every function takes calibration data of shape (n, ...) with one tile per leading index and
returns an immutable :class:`CalibrationResult` that states its guarantee and applies itself to
new data.
"""

from ._errors import InfeasibleCalibrationError
from ._result import CalibrationResult
from .intervals import calibrate_intervals

__all__ = [
    "CalibrationResult",
    "InfeasibleCalibrationError",
    "calibrate_intervals",
]
