"""Segmentation metrics: the activation ratio of prediction sets (Mossina et al., Eq. 17)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..._validation import as_valid
from ._common import (
    _batches,
    _tile_mean,
    _tiles,
)


def activation_ratio(sets: Any, *, valid: Any = None) -> np.ndarray:
    """Mean number of classes in the prediction set of each valid pixel (Mossina et al., Eq. 17).

    Parameters
    ----------
    sets : array_like of bool, shape (n, K, ...)
        Multi-label prediction sets: ``sets[i, k, ...]`` is True when class ``k`` is in the set
        of that pixel. Classes are on axis 1.
    valid : array_like of bool, shape (n, ...), optional
        Pixels that count (labelled, not void); the shape of ``sets`` without axis 1.

    Returns
    -------
    numpy.ndarray, shape (n,), float64
        Per tile, ``sum over valid pixels and classes of sets / number of valid pixels``: 1 for a
        plain segmentation, K when every class is in every set.

    Raises
    ------
    ValueError
        On a ``sets`` that is not boolean or has no class axis, a ``valid`` of another shape, or a
        tile without a valid pixel.

    Examples
    --------
    >>> import numpy as np
    >>> sets = np.zeros((1, 3, 1, 2), dtype=bool)
    >>> sets[0, 0, 0, 0] = True
    >>> sets[0, :, 0, 1] = True
    >>> activation_ratio(sets)
    array([2.])
    """
    sets = _tiles(sets, "sets", kinds="b", min_ndim=3)
    pixel_shape = (int(sets.shape[0]), *(int(s) for s in sets.shape[2:]))
    if valid is not None:
        valid = as_valid(valid, pixel_shape, "sets without its class axis 1")
    out = np.empty(int(sets.shape[0]), dtype=np.float64)
    for sl, b, v in _batches({"sets": sets}, valid):
        per_pixel = b["sets"].sum(axis=1, dtype=np.int64)
        out[sl] = _tile_mean(per_pixel, v)
    return out
