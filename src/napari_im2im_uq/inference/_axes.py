"""Axes of inputs and outputs (pure Python: no numpy, torch or dask needed)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["CANONICAL_AXES", "check_axes", "output_axes", "spatial_axes"]

#: Input axes in the order the block function sees them (missing ones are added with size 1).
CANONICAL_AXES = "ZCYX"
_LETTERS = set(CANONICAL_AXES)


def check_axes(axes, *, shape: Sequence[int], n_channels: int) -> str:
    """Validate ``axes`` for an image of ``shape`` and a model with ``n_channels`` inputs.

    Returns the axes in upper case. Errors name the argument, what was expected and what
    was received.
    """
    if not isinstance(axes, str):
        raise ValueError(
            f"axes must be a string of the letters Z, C, Y, X (e.g. 'YX', 'ZYX', 'CYX', "
            f"'ZCYX'); got {axes!r}"
        )
    upper = axes.upper()
    bad = sorted(set(upper) - _LETTERS)
    if bad:
        raise ValueError(
            f"axes must use only the letters Z, C, Y, X (planes, channels, rows, columns); "
            f"got {axes!r} with {bad}"
        )
    repeated = sorted({a for a in upper if upper.count(a) > 1})
    if repeated:
        raise ValueError(f"axes must name each axis at most once; got {axes!r} ({repeated} twice)")
    if "Y" not in upper or "X" not in upper:
        raise ValueError(f"axes must contain both Y (rows) and X (columns); got {axes!r}")
    if len(upper) != len(shape):
        raise ValueError(
            f"axes must have one letter per image dimension: expected {len(shape)} letters for "
            f"an image of shape {tuple(shape)}; got {axes!r}"
        )
    if "C" in upper:
        size = shape[upper.index("C")]
        if size != n_channels:
            raise ValueError(
                f"the C axis of image must have the model's {n_channels} input channel(s); got "
                f"{size} (image shape {tuple(shape)}, axes {axes!r})"
            )
    elif n_channels != 1:
        raise ValueError(
            f"axes must contain C for a model with {n_channels} input channels; got {axes!r} "
            f"(image shape {tuple(shape)})"
        )
    for letter in "YX":
        if shape[upper.index(letter)] < 1:
            raise ValueError(f"image must not be empty; got shape {tuple(shape)}")
    return upper


def spatial_axes(axes: str) -> str:
    """Canonical spatial axes of an input: ``"ZYX"`` or ``"YX"``."""
    return "ZYX" if "Z" in axes.upper() else "YX"


def output_axes(axes: str, name: str) -> str:
    """Axes of the output ``name`` for input ``axes`` (canonical order).

    Every output has the input's Z, Y and X axes in that order (Y and X on the model's output
    grid); ``probabilities`` has a leading class axis ``C``. The input's channel axis is gone.

    Parameters
    ----------
    axes : str
        Input axes, letters from Z, C, Y, X.
    name : str
        An output name of the model.

    Returns
    -------
    str
        E.g. ``"ZYX"`` or ``"CZYX"``.

    Examples
    --------
    >>> output_axes("ZCYX", "prediction"), output_axes("YX", "probabilities")
    ('ZYX', 'CYX')
    """
    space = spatial_axes(axes)
    return "C" + space if name == "probabilities" else space
