"""What every calibration method says about itself: the base of the registry entries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import drift

__all__ = ["Method", "Product"]


@dataclass(frozen=True)
class Product:
    """One whole-image array a calibration result makes (a layer, before any styling).

    Attributes
    ----------
    name : str
        What it is called, e.g. "interval width" (the caller appends the model's name).
    data : array (numpy or dask)
        The array, on the grid of the method's reference output (no class axis).
    role : str
        What it shows: "width", "bound", "untrusted", "mask", "segmentation", "set_size",
        "varisco"; the caller picks the style from it.
    kind : str
        "image" or "labels".
    limits : tuple of float or None
        Display limits when they are known (e.g. (0, K) for a set size).
    """

    name: str
    data: Any
    role: str
    kind: str = "image"
    limits: tuple | None = None


class Method:
    """One calibration method: what it needs, how it calibrates, how a result is applied.

    Subclasses set the static attributes and implement :meth:`inputs`, :meth:`calibrate`,
    :meth:`products`, :meth:`held_out_losses`, :meth:`recalibrate` and :meth:`metrics`; the
    defaults here suit a regression method (float ground truth, every tile kept).

    Attributes
    ----------
    name : str
        The registry key, the ``method`` of a :class:`~napari_im2im_uq.calibration.CalibrationResult`.
    title : str
        The label a user picks it by.
    needs : tuple of str
        The model outputs it reads; the first is the grid reference.
    producers : str
        Which models produce those outputs (for an error message).
    rules : tuple of str
        The calibration rules offered; the first is the default.
    options : frozenset of str
        The calibrate options it reads, of "delta", "bound", "beta", "distance", "sigma",
        "show_bounds", "seed".
    truth : str
        The ground truth it calibrates on: "image" or "labels".
    class_axis : bool
        Whether the reference output has a leading class axis.
    x_label : str
        The name of the calibrated parameter on a risk curve.
    tile_keys : tuple of str
        The tile arrays :meth:`calibrate` reads (after :meth:`prepare_tiles`).
    plots : tuple of str
        The plot kinds a diagnostics figure draws after the risk histogram.
    losses : tuple of str
        The ``loss`` values a result of this method may carry (checked when a record is read).
    lam_range : (float, float)
        The closed range of a finite ``lam`` a calibration of this method returns; a record
        outside it is refused (a hand-edited ``lam`` of -1 or 1e308 is never applied).
    lam_infinite : tuple of float
        The infinite ``lam`` values it may return (``inf`` / ``-inf``), none by default.
    params_schema : dict of str to ``calibration._schema.Param``
        What each key of ``result.params`` may hold.
    """

    name: str = ""
    title: str = ""
    needs: tuple[str, ...] = ()
    producers: str = ""
    rules: tuple[str, ...] = ()
    options: frozenset = frozenset()
    truth: str = "image"
    class_axis: bool = False
    x_label: str = "lam"
    tile_keys: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()
    losses: tuple[str, ...] = ()
    lam_range: tuple[float, float] = (0.0, 1e12)
    lam_infinite: tuple[float, ...] = ()
    params_schema: dict = {}

    def __repr__(self) -> str:
        return f"<calibration method {self.name!r}>"

    # ------------------------------------------------------------------ calibrating
    def inputs(self, arrays: dict, *, sigma=None) -> dict:
        """Return the whole-image arrays to cut into tiles, named as :meth:`calibrate` reads them.

        ``arrays`` maps output names to numpy or dask arrays; nothing is computed here.
        """
        raise NotImplementedError

    def prepare_tiles(self, tiles: dict) -> tuple[dict, np.ndarray]:
        """Turn cut tiles (with the raw ground truth under "truth") into calibration tiles.

        Returns ``(tiles, keep)``: the tiles :meth:`calibrate` reads and a boolean array of the
        cut tiles kept (all of them here).
        """
        out = dict(tiles)
        out["truth"] = np.asarray(tiles["truth"]).astype(np.float32)
        return out, np.ones(len(out["truth"]), dtype=bool)

    def check_rule(self, rule):
        """Return ``rule`` (None: the default) after checking this method offers it."""
        rule = rule or self.rules[0]
        if rule not in self.rules:
            raise ValueError(
                f"rule must be one of {self.rules} for method {self.name!r}; got {rule!r}")
        return rule

    def calibrate(self, tiles: dict, *, alpha, delta=0.1, rule=None, bound="hoeffding_bentkus",
                  beta=0.9, distance="l1", data_range=None, seed=0):
        """Calibrate prepared tiles; return a CalibrationResult."""
        raise NotImplementedError

    def alpha_limit(self, fields: dict) -> tuple[float, str]:
        """Return the exclusive upper limit of ``alpha`` for a result's checked fields, and why."""
        return 1.0, "a fraction"

    def check_consistency(self, fields: dict) -> list[tuple[str, str, object]]:
        """Return the disagreements between a result's checked fields: (field, expected, got)."""
        return []

    def record_extra(self, arrays: dict, *, sigma=None) -> dict:
        """Fields a saved record needs beyond the result to be applied the same way."""
        return {}

    def apply_options(self, record: dict) -> dict:
        """Return the keyword arguments of :meth:`products` that re-apply a saved record."""
        return {}

    def drift_features(self, tiles: dict) -> dict:
        """Per-tile statistics a drift check compares, none needing ground truth.

        ``tiles`` maps the names :meth:`inputs` gives to tiles of shape (n, rows, columns)
        (or (n, classes, rows, columns) with a class axis). Returns a dict of (n,) arrays: here
        the intensity and texture statistics of the prediction; a method adds the score that
        drives its product (:mod:`napari_im2im_uq.calibration.drift`).
        """
        if "prediction" not in tiles:
            return {}
        return drift.image_features(tiles["prediction"], "prediction")

    # ------------------------------------------------------------------ applying
    def products(self, result, arrays: dict, *, sigma=None, show_bounds=False) -> list[Product]:
        """Apply ``result`` to whole-image outputs: the arrays to show."""
        raise NotImplementedError

    def level(self, result) -> float:
        """Return the target the held-out risk is compared with (alpha here)."""
        return float(result.alpha)

    # ------------------------------------------------------------------ evaluating
    def held_out_losses(self, result, tiles: dict) -> np.ndarray:
        """Per-tile loss of ``result`` on held-out tiles (the loss it controls)."""
        raise NotImplementedError

    def recalibrate(self, result, tiles: dict):
        """Calibrate ``tiles`` with every setting of ``result`` (its curve may be left out)."""
        raise NotImplementedError

    @staticmethod
    def risk_control_options(result) -> dict:
        """Return ``delta``, ``bound`` and ``seed`` of ``result`` as the calibrators take them.

        A CRC result stores no delta or bound; the calibrators' defaults stand in.
        """
        return {"delta": result.delta if result.delta is not None else 0.1,
                "bound": result.bound or "hoeffding_bentkus",
                "seed": int(result.params.get("seed", 0))}

    def required_keys(self, result) -> tuple[str, ...]:
        """Return the held-out tile keys diagnostics need for ``result``."""
        return self.tile_keys

    def optional_keys(self, result) -> tuple[str, ...]:
        """Return the held-out tile keys diagnostics use when present."""
        return ("valid",)

    def pixel_key(self, result) -> str:
        """Return the tile key whose shape is (n, rows, columns)."""
        return self.required_keys(result)[0]

    def merge_valid(self, result, tiles: dict) -> dict:
        """Return checked held-out tiles with ``valid`` folded in where the method needs it."""
        return tiles

    def counts_tiles(self, result) -> bool:
        """Whether the held-out loss is the fraction of tiles above alpha (not a mean loss)."""
        return False

    def held_out_words(self, result) -> str:
        """Say what the held-out loss measures, in words."""
        raise NotImplementedError

    def metrics(self, result, tiles: dict, losses) -> dict:
        """Return the papers' metrics of ``result`` on checked held-out tiles."""
        return {}

    def summary(self, result, metrics: dict) -> list[tuple[str, str]]:
        """Lines (label, text) of the metrics, in plain words."""
        return []
