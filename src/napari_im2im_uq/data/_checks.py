"""Small argument checks shared by the data module (errors name the argument and the value)."""

from __future__ import annotations

import numbers

import numpy as np


def as_rng(seed, name="seed"):
    """Return a ``numpy.random.Generator`` from an int, None or an existing generator."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or (isinstance(seed, numbers.Integral) and not isinstance(seed, bool)):
        if seed is not None and seed < 0:
            raise ValueError(
                f"{name} must be a non-negative integer, None or a Generator; got {seed!r}"
            )
        return np.random.default_rng(seed)
    raise ValueError(
        f"{name} must be an integer, None or a numpy.random.Generator; "
        f"got {type(seed).__name__} {seed!r}"
    )


def check_shape(shape, name="shape", *, min_size=8, allow_3d=True):
    """Validate a (rows, cols) or (planes, rows, cols) shape and return it as a tuple of ints."""
    try:
        out = tuple(int(s) for s in shape)
        ok = all(float(s) == int(s) for s in shape)
    except (TypeError, ValueError):
        ok = False
        out = ()
    allowed = "(rows, cols) or (planes, rows, cols)" if allow_3d else "(rows, cols)"
    ndims = (2, 3) if allow_3d else (2,)
    if not ok or len(out) not in ndims:
        raise ValueError(f"{name} must be {allowed} given as integers; got {shape!r}")
    if any(s < min_size for s in out[-2:]) or (len(out) == 3 and out[0] < 1):
        raise ValueError(
            f"{name} must have rows and cols >= {min_size} (and planes >= 1); got {shape!r}"
        )
    return out


def check_positive(value, name, *, allow_zero=False, integer=False):
    """Check that a scalar is a finite positive (or non-negative) number."""
    kind = "integer" if integer else "number"
    bad = isinstance(value, bool) or not isinstance(value, numbers.Real)
    if integer and not isinstance(value, numbers.Integral):
        bad = True
    if not bad:
        bad = not np.isfinite(value) or (value < 0 if allow_zero else value <= 0)
    if bad:
        rel = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite {kind} {rel}; got {value!r}")
    return value


def check_range(value, name, *, low=0.0, high=None, allow_equal=True):
    """Check a (min, max) pair of numbers with low <= min <= max (<= high)."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (min, max) of numbers; got {value!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < low or hi < lo or (
        high is not None and hi > high
    ) or (not allow_equal and hi == lo):
        upper = "" if high is None else f" <= {high}"
        raise ValueError(
            f"{name} must be a pair (min, max) with {low} <= min <= max{upper}; got {value!r}"
        )
    return lo, hi


def as_float_image(image, name="image", *, ndims=(2, 3)):
    """Return ``np.asarray(image)`` after checking it is real, numeric, with ndim in ``ndims``."""
    arr = np.asarray(image)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.number)) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be a real numeric array; got dtype {arr.dtype}")
    if arr.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name} must be {want}; got an array of shape {arr.shape}")
    return arr
