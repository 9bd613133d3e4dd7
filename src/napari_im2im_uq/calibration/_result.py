"""The immutable record of one calibration; it applies itself through the kernels of ``_apply``."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from . import _apply
from ._schema import FORMAT_VERSION, check_result

_APPLIERS = {
    "intervals": "intervals",
    "trust_mask": "trust_mask",
    "mask": "mask",
    "segmentation": "prediction_sets / varisco",
}


def _encode(value):
    """JSON-safe copy: floats that are not finite become strings, arrays become lists."""
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, np.ndarray):
        return _encode(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


@dataclass(frozen=True)
class CalibrationResult:
    """What a calibration found and what it guarantees.

    Create it with one of the ``calibrate_*`` functions, never by hand. It is immutable; it
    round-trips through JSON with :meth:`to_dict` / :meth:`from_dict`, and it applies itself to
    new model outputs with the method of its own ``method`` (:meth:`intervals`,
    :meth:`trust_mask`, :meth:`mask`, :meth:`prediction_sets` and :meth:`varisco`).

    Attributes
    ----------
    method : str
        "intervals", "trust_mask", "mask" or "segmentation".
    lam : float
        The calibrated parameter (lam_hat; the threshold t for a trust mask). May be ``inf``
        (for a trust mask: trust every pixel) or ``-inf`` (trust none).
    alpha : float
        The risk level asked for.
    delta : float or None
        The error level of a high-probability guarantee (RCPS), else None.
    beta : float or None
        The probability of a good tile for the conformal-quantile rule of the mask method.
    n : int
        Number of calibration tiles.
    rule : str
        "rcps", "crc", "conformal" or "paper".
    bound : str or None
        The concentration bound of RCPS ("hoeffding", "hoeffding_bentkus", "wsr").
    valid : bool
        Whether the guarantee is proven for this rule (False only for the mask method's "paper"
        rule, kept for comparison).
    guarantee : str
        The guarantee in plain words.
    loss : str
        The loss that was controlled.
    loss_bound : float
        B, the largest value the loss can take.
    tile_shape : tuple of int
        Shape of one calibration tile: the unit the guarantee speaks about.
    empirical_risk : float
        Mean calibration loss at ``lam``.
    curve : dict
        ``{"lam": [...], "risk": [...], "bound": [...]}``: empirical risk and the controlled
        quantity (upper confidence bound for RCPS, the corrected risk for CRC) against lam, for
        the plot next to the guarantee.
    params : dict
        Everything else needed to apply the result the same way (eps, distance, fidelity, tau,
        class weights, the WSR order seed, ...).
    """

    method: str
    lam: float
    alpha: float
    n: int
    rule: str
    valid: bool
    guarantee: str
    loss: str
    loss_bound: float
    tile_shape: tuple
    empirical_risk: float
    delta: float | None = None
    beta: float | None = None
    bound: str | None = None
    curve: dict = field(default_factory=dict, compare=False)
    params: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (non-finite floats are written as strings).

        Examples
        --------
        >>> import json
        >>> d = result.to_dict()  # doctest: +SKIP
        >>> CalibrationResult.from_dict(json.loads(json.dumps(d))) == result  # doctest: +SKIP
        True
        """
        out = _encode(asdict(self))
        out["format_version"] = FORMAT_VERSION
        out["tile_shape"] = list(self.tile_shape)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "data") -> CalibrationResult:
        """Rebuild a result from :meth:`to_dict` output (e.g. read back from JSON), checked.

        Every field is checked against the schema of its method
        (:func:`napari_im2im_uq.calibration._schema.check_result`): a hand-edited ``lam`` that
        is NaN, negative or 1e308, an ``alpha`` of 5, an ``n`` of "many", a missing key or an
        unknown method is refused with a message that names the field (``where`` names
        ``data`` in it), never applied.

        Raises
        ------
        ValueError
            (``RecordError``) naming the field, what it must be and what it is.

        Examples
        --------
        >>> CalibrationResult.from_dict(dict(result.to_dict(), lam="nan"))  # doctest: +SKIP
        Traceback (most recent call last):
        ...
        RecordError: data.lam must be a number in [0, 1e+12] (finite) for the 'intervals' ...
        """
        return cls(**check_result(data, where=where))

    def to_json(self, **kwargs) -> str:
        """Return :meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> CalibrationResult:
        """Rebuild a result from :meth:`to_json` output."""
        return cls.from_dict(json.loads(text))

    # ------------------------------------------------------------------ helpers
    def _require(self, method: str, caller: str) -> None:
        if self.method != method:
            raise ValueError(
                f"{caller}() applies a {method!r} calibration, but this result is for "
                f"{self.method!r}; call {_APPLIERS[self.method]}() instead"
            )

    def __repr__(self) -> str:
        level = f", delta={self.delta:g}" if self.delta is not None else ""
        level += f", beta={self.beta:g}" if self.beta is not None else ""
        bound = f", bound={self.bound!r}" if self.bound else ""
        return (
            f"CalibrationResult(method={self.method!r}, lam={self.lam:.6g}, alpha={self.alpha:g}"
            f"{level}, n={self.n}, rule={self.rule!r}{bound}, valid={self.valid})"
        )

    # ------------------------------------------------------------------ appliers
    def intervals(self, prediction, lower, upper):
        """Calibrated intervals ``[f - lam (f - lower), f + lam (upper - f)]`` (float64).

        Uses exactly the arithmetic of the calibration, so a pixel is covered here if and only if
        it was counted as covered there.

        Parameters
        ----------
        prediction, lower, upper : array_like (numpy or dask), same shape
            The model's point prediction and heuristic lower/upper bounds.

        Returns
        -------
        lower_cal, upper_cal : arrays of the same shape (lazy for dask input)
        """
        self._require("intervals", "intervals")
        return _apply.calibrated_bounds(prediction, lower, upper, self.lam)

    def interval_width(self, prediction, lower, upper):
        """Width ``upper_cal - lower_cal`` of the calibrated intervals."""
        lo, hi = self.intervals(prediction, lower, upper)
        return hi - lo

    def trust_mask(self, sigma):
        """Boolean mask of trusted pixels, ``sigma <= t`` (the comparison of the calibration)."""
        self._require("trust_mask", "trust_mask")
        return _apply.trusted(sigma, self.lam)

    def leakage_bound(self, n_leaked: int) -> float:
        """Risk bound if ``n_leaked`` calibration tiles were seen in training (002, Prop. 3.2).

        ``alpha * (n + 1) / (n - n_leaked + 1)``: the expected fidelity error on a new tile is
        at most this even if those tiles came from an arbitrarily different distribution.
        """
        self._require("trust_mask", "leakage_bound")
        if not (0 <= int(n_leaked) < self.n):
            raise ValueError(f"n_leaked must be in [0, {self.n}); got {n_leaked!r}")
        return self.alpha * (self.n + 1) / (self.n - int(n_leaked) + 1)

    def mask(self, mask_scores):
        """Calibrated continuous mask ``min(1, lam / (eps + 1 - m))`` (Kutiel et al.)."""
        self._require("mask", "mask")
        return _apply.calibrated_mask(mask_scores, self.lam, eps=self.params["eps"])

    def prediction_sets(self, scores):
        """Boolean sets of shape (..., K, ...): ``{k : 1 - p_k <= lam}`` plus the top-1 class.

        ``scores`` is read the way the calibration read it (probabilities or logits, class axis
        1 for a batch of tiles, axis 0 for a single image of shape (K, rows, columns)).
        """
        self._require("segmentation", "prediction_sets")
        return _apply.prediction_sets(scores, self.lam, scores_are=self.params["scores_are"])

    def varisco(self, scores, *, normalize: str = "classes"):
        """Varisco heat map: number of classes in each pixel's set, divided by K.

        With ``normalize="max"`` the count is divided by the largest count in the image instead
        (helpful with many classes, as in Mossina et al.), with ``"none"`` it is the raw count.
        """
        self._require("segmentation", "varisco")
        return _apply.varisco(scores, self.lam, scores_are=self.params["scores_are"],
                              normalize=normalize)

