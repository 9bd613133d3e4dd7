"""Units: how the user's raw image becomes model input, and how outputs stay in stated units.

A bundle declares, in bioimage.io's pre/post-processing vocabulary (``{"id": ..., "kwargs":
{...}}``, applied in order):

``preprocessing`` (raw given channels -> the data units ``normalization`` expects)
    - ``scale_dtype_range``: integer images divided by their dtype's range (uint8 / 255,
      uint16 / 65535; signed: ``(x - min) / (max - min)``); float and bool taken as is.
      (This package's step: bioimage.io packages declare a float input instead.)
    - ``scale_linear``: ``x * gain + offset`` (``gain``, ``offset``: a number or one per channel).
    - ``scale_range``: ``(x - p_lo) / (p_hi - p_lo + eps)`` with ``p_lo``, ``p_hi`` the
      ``min_percentile``, ``max_percentile`` of the sample (``mode`` "per_sample").
    - ``zero_mean_unit_variance``: ``(x - mean) / (std + eps)``, ``mode`` "fixed" (``mean``,
      ``std`` given) or "per_sample".
    - ``clip``: ``min``, ``max``.
``postprocessing`` (outputs in data units): ``clip`` to ``min``, ``max`` (the point prediction
    and the bounds; spreads are not clipped).
``input_range``: ``[lo, hi]``, the range of the training inputs after preprocessing; input far
    outside it gets an :class:`~napari_im2im_uq.Im2ImUQWarning` naming both ranges.

A sample is the whole image or volume given: per-sample statistics are computed once, exactly
for an array in memory, from a subsample of a lazy one (:func:`resolve`), then every block is
mapped by the same per-channel affine and clip (:func:`apply`). numpy only.
"""

from __future__ import annotations

import math
import warnings
from functools import partial

import numpy as np

from ._errors import BundleError

__all__ = ["PREPROCESSING", "POSTPROCESSING", "apply", "check_units", "output_clip", "resolve"]

#: Preprocessing steps and their kwargs: (required, optional).
PREPROCESSING = {
    "scale_dtype_range": ((), ()),
    "scale_linear": ((), ("gain", "offset")),
    "scale_range": (("min_percentile", "max_percentile"), ("mode", "eps")),
    "zero_mean_unit_variance": (("mode",), ("mean", "std", "eps")),
    "clip": (("min", "max"), ()),
}
#: Postprocessing steps (on outputs in data units).
POSTPROCESSING = {"clip": (("min", "max"), ())}
#: Input more than this many declared spans beyond ``input_range`` is "far outside".
FAR = 1.0
#: Largest number of values per plane, and planes, read to estimate per-sample statistics.
SAMPLE_PIXELS, SAMPLE_PLANES = 512 * 512, 8


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _per_channel(where: str, value, n: int) -> list[float]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(_number(v) for v in values) or len(values) not in (1, n):
        raise BundleError(
            f"{where} must be a finite number or a list of {n} (one per given channel); "
            f"got {value!r}"
        )
    return [float(v) for v in values] * (n if len(values) == 1 else 1)


def _check_steps(spec: dict, field: str, allowed: dict, n: int) -> None:
    steps = spec.get(field, [])
    if not isinstance(steps, list):
        raise BundleError(f"{field} must be a list of steps {{'id': ..., 'kwargs': {{...}}}}; "
                          f"got {steps!r}")
    for i, step in enumerate(steps):
        where = f"{field}[{i}]"
        if not isinstance(step, dict) or step.get("id") not in allowed:
            raise BundleError(f"{where} must be an object with 'id' in {sorted(allowed)}; "
                              f"got {step!r}")
        extra = sorted(set(step) - {"id", "kwargs"})
        kwargs = step.get("kwargs", {})
        if extra or not isinstance(kwargs, dict):
            raise BundleError(f"{where} must hold only 'id' and 'kwargs' (an object); got {step!r}")
        required, optional = allowed[step["id"]]
        unknown = sorted(set(kwargs) - set(required) - set(optional))
        if unknown:
            raise BundleError(f"{where}.kwargs[{unknown[0]!r}] is not a kwarg of "
                              f"{step['id']!r}: expected some of {sorted(required + optional)}")
        for key in required:
            if key not in kwargs:
                raise BundleError(f"{where}.kwargs is missing {key!r} (required by "
                                  f"{step['id']!r}); got {kwargs!r}")
        _check_kwargs(where, step["id"], kwargs, n)


def _check_kwargs(where: str, sid: str, kw: dict, n: int) -> None:
    for key in ("gain", "offset", "mean", "std", "min", "max"):
        if key in kw:
            _per_channel(f"{where}.kwargs[{key!r}]", kw[key], n)
    if "eps" in kw and not (_number(kw["eps"]) and kw["eps"] >= 0):
        raise BundleError(f"{where}.kwargs['eps'] must be a number >= 0; got {kw['eps']!r}")
    if sid == "clip" and any(
            hi <= lo for lo, hi in zip(_per_channel("", kw["min"], n),
                                       _per_channel("", kw["max"], n), strict=True)):
        raise BundleError(f"{where}.kwargs 'max' must exceed 'min'; got {kw!r}")
    if sid == "scale_range":
        lo, hi = kw["min_percentile"], kw["max_percentile"]
        if not (_number(lo) and _number(hi) and 0 <= lo < hi <= 100):
            raise BundleError(f"{where}.kwargs min_percentile, max_percentile must be numbers "
                              f"with 0 <= min < max <= 100; got {lo!r}, {hi!r}")
        if kw.get("mode", "per_sample") != "per_sample":
            raise BundleError(f"{where}.kwargs['mode'] must be 'per_sample'; got {kw['mode']!r}")
    if sid == "zero_mean_unit_variance":
        if kw["mode"] not in ("fixed", "per_sample"):
            raise BundleError(f"{where}.kwargs['mode'] must be 'fixed' or 'per_sample'; got "
                              f"{kw['mode']!r}")
        if kw["mode"] == "fixed":
            for key in ("mean", "std"):
                if key not in kw:
                    raise BundleError(f"{where}.kwargs is missing {key!r} (required by mode "
                                      f"'fixed'); got {kw!r}")
            if min(_per_channel("", kw["std"], n)) <= 0:
                raise BundleError(f"{where}.kwargs['std'] must be positive; got {kw['std']!r}")


def check_units(spec: dict, n_channels: int) -> None:
    """Check ``preprocessing``, ``postprocessing`` and ``input_range``; raise :class:`BundleError`.

    ``n_channels``: the given (not derived) input channels.

    Examples
    --------
    >>> check_units({"preprocessing": [{"id": "scale_linear", "kwargs": {"gain": "x"}}]}, 1)
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    napari_im2im_uq.models._errors.BundleError: preprocessing[0].kwargs['gain'] must be ...
    """
    _check_steps(spec, "preprocessing", PREPROCESSING, n_channels)
    _check_steps(spec, "postprocessing", POSTPROCESSING, 1)
    rng = spec.get("input_range")
    if rng is not None and not (isinstance(rng, list) and len(rng) == 2
                                and all(_number(v) for v in rng) and rng[0] < rng[1]):
        raise BundleError(f"input_range must be null or [lo, hi] with finite lo < hi; got {rng!r}")


def output_clip(spec: dict) -> tuple[float, float] | None:
    """Return the declared ``clip`` of the outputs (the last one), or None.

    Examples
    --------
    >>> output_clip({"postprocessing": [{"id": "clip", "kwargs": {"min": 0, "max": 1}}]})
    (0.0, 1.0)
    """
    clips = [s["kwargs"] for s in spec.get("postprocessing", []) if s["id"] == "clip"]
    return (float(clips[-1]["min"]), float(clips[-1]["max"])) if clips else None


def _sample(x4) -> tuple[np.ndarray, str]:
    """Values of a (Z, C, Y, X) array to estimate statistics from, and how they were chosen."""
    if isinstance(x4, np.ndarray):
        return x4, "the whole image"
    z, _, rows, cols = x4.shape
    planes = np.unique(np.linspace(0, z - 1, min(z, SAMPLE_PLANES)).round().astype(int))
    step = max(1, math.ceil(math.sqrt(rows * cols / SAMPLE_PIXELS)))
    part = np.asarray(x4[planes.tolist()][:, :, ::step, ::step].compute())
    return part, (f"a subsample: planes {planes.tolist()}, every {step}th row and column "
                  f"({part[:, 0].size} values per channel)")


def _channel_stats(arr: np.ndarray, *fns) -> list[np.ndarray]:
    """Each of ``fns`` of each channel of a (Z, C, Y, X) array, NaN and inf ignored.

    Each channel's finite values are gathered once for all of ``fns``.
    """
    out: list[list] = [[] for _ in fns]
    for c in range(arr.shape[1]):
        v = arr[:, c].astype(np.float64, copy=False).ravel()
        v = v[np.isfinite(v)]
        for values, fn in zip(out, fns, strict=True):
            values.append(fn(v) if v.size else np.nan)
    return [np.asarray(values, dtype=np.float64) for values in out]


def resolve(spec: dict, x4, *, dtype=None) -> dict:
    """Resolve the declared preprocessing for one image into per-channel affine maps and clips.

    Parameters
    ----------
    spec : dict
        A validated ``model.json``.
    x4 : numpy.ndarray or dask.array.Array
        The given channels, (Z, C, Y, X), raw. Statistics are exact for a numpy array, else
        estimated once from a subsample.
    dtype : numpy.dtype, optional
        The image's dtype (default ``x4.dtype``).

    Returns
    -------
    dict
        JSON-able: ``ops`` (``["affine", scale, offset]`` / ``["clip", lo, hi]``, per channel),
        ``steps`` (the declared steps with the statistics used), ``statistics_from``,
        ``dtype`` and ``observed_range`` (after preprocessing, ``[lo, hi]`` or None).
        Warns (:class:`~napari_im2im_uq.Im2ImUQWarning`) when the observed range is far
        outside the declared ``input_range``.

    Examples
    --------
    >>> import numpy as np
    >>> spec = {"preprocessing": [{"id": "scale_dtype_range"}]}
    >>> units = resolve(spec, np.full((1, 1, 2, 2), 255, np.uint8))
    >>> round(float(apply(np.full((1, 1, 2, 2), 51, np.uint8), units["ops"], channel_axis=1).max()), 6)
    0.2
    """
    dtype = np.dtype(dtype or x4.dtype)
    n = x4.shape[1]
    ops: list = []
    steps: list = []
    sample, sample_note = None, None

    def current():
        nonlocal sample, sample_note
        if sample is None:
            sample, sample_note = _sample(x4)
        return apply(sample, ops, channel_axis=1)

    for step in spec.get("preprocessing", []):
        sid, kw = step["id"], dict(step.get("kwargs", {}))
        used = {"id": sid, "kwargs": kw}
        if sid == "scale_dtype_range":
            if dtype.kind in "ui":
                info = np.iinfo(dtype)
                ops.append(["affine", [1.0 / (info.max - info.min)] * n,
                            [-info.min / (info.max - info.min)] * n])
            used["applied"] = f"{dtype}: " + (
                f"(x - {np.iinfo(dtype).min}) / {np.iinfo(dtype).max - np.iinfo(dtype).min}"
                if dtype.kind in "ui" else "as is")
        elif sid == "scale_linear":
            ops.append(["affine", _per_channel("gain", kw.get("gain", 1.0), n),
                        _per_channel("offset", kw.get("offset", 0.0), n)])
        elif sid == "clip":
            ops.append(["clip", _per_channel("min", kw["min"], n), _per_channel("max", kw["max"], n)])
        else:
            eps = float(kw.get("eps", 1e-6))
            if sid == "scale_range":
                vals = current()
                lo, hi = _channel_stats(vals, partial(np.percentile, q=kw["min_percentile"]),
                                        partial(np.percentile, q=kw["max_percentile"]))
                used["statistics"] = {"min": lo.tolist(), "max": hi.tolist()}
                center, width = lo, hi - lo + eps
            elif kw["mode"] == "fixed":
                center = np.asarray(_per_channel("mean", kw["mean"], n))
                width = np.asarray(_per_channel("std", kw["std"], n)) + eps
            else:
                vals = current()
                center, std = _channel_stats(vals, np.mean, np.std)
                used["statistics"] = {"mean": center.tolist(), "std": std.tolist()}
                width = std + eps
            center, width = np.nan_to_num(center), np.where(np.isfinite(width), width, 1.0)
            ops.append(["affine", (1.0 / width).tolist(), (-center / width).tolist()])
        steps.append(used)
    units = {"dtype": str(dtype), "steps": steps, "ops": ops, "statistics_from": sample_note,
             "observed_range": None}
    declared = spec.get("input_range")
    if declared is not None:
        vals = current()
        mins, maxs = _channel_stats(vals, np.min, np.max)
        lo, hi = np.nanmin(mins), np.nanmax(maxs)
        if np.isfinite(lo) and np.isfinite(hi):
            units["observed_range"] = [float(lo), float(hi)]
            units["statistics_from"] = sample_note
            warn_range(units, declared, spec.get("name", "model"))
    return units


def warn_range(units: dict, declared, name: str) -> None:
    """Warn when the observed input range is far outside the declared ``input_range``."""
    from .._warnings import Im2ImUQWarning

    lo, hi = (float(v) for v in declared)
    olo, ohi = units["observed_range"]
    far = FAR * (hi - lo)
    if olo < lo - far or ohi > hi + far:
        warnings.warn(
            f"image values span [{olo:.4g}, {ohi:.4g}] after the model's preprocessing "
            f"({units['dtype']} input), far outside [{lo:.4g}, {hi:.4g}], the range model "
            f"{name!r} was trained on: predictions there are extrapolation; convert the image "
            "to the model's units (e.g. a float image in 0-255 divided by 255)",
            Im2ImUQWarning, stacklevel=4,
        )


def apply(block, ops, *, channel_axis: int | None) -> np.ndarray:
    """Map a block of raw values by resolved ops (:func:`resolve`); float32, input unchanged.

    ``channel_axis``: the axis of the given channels (None: one channel).
    """
    out = np.asarray(block).astype(np.float32, copy=True)
    if not ops:
        return out
    shape = [1] * out.ndim
    if channel_axis is not None:
        shape[channel_axis] = -1

    def param(values):
        return np.asarray(values, dtype=np.float32).reshape(shape) if channel_axis is not None \
            else np.float32(values[0])

    for kind, a, b in ops:
        if kind == "affine":
            out *= param(a)
            out += param(b)
        else:
            np.clip(out, param(a), param(b), out=out)
    return out
