"""The statistical core: exact, distribution-free calibration (numpy and scipy only).

Every ``calibrate_*`` function takes calibration data of shape (n, ...) with one tile per
leading index (numpy or dask) and returns an immutable :class:`CalibrationResult` that states
its guarantee in words and applies itself to new data. ``methods`` is the registry with one
entry per method (what it needs, how it calibrates, how a result is applied, its held-out loss
and metrics): callers ask it instead of switching on a method's name. ``metrics`` holds the
papers' evaluation measures; ``evaluation`` repeats random calibration/test splits;
``diagnostics`` reports on held-out tiles.
"""

from . import bounds, methods, metrics
from ._errors import InfeasibleCalibrationError
from ._result import CalibrationResult
from .evaluation import risk_over_splits
from .intervals import calibrate_intervals, interval_critical_values
from .mask import calibrate_mask
from .segmentation import calibrate_segmentation
from .trust_mask import calibrate_trust_mask, fidelity_error_map

__all__ = [
    "CalibrationResult",
    "InfeasibleCalibrationError",
    "bounds",
    "calibrate_intervals",
    "calibrate_mask",
    "calibrate_segmentation",
    "calibrate_trust_mask",
    "fidelity_error_map",
    "interval_critical_values",
    "methods",
    "metrics",
    "risk_over_splits",
]
