"""Validation data of the zoo recipes: fixed crops of held-back training data, one code path.

TEM recipes watch the loss on stack1 slice 13 (they train on 0-12), the QPI recipe on
columns 800-999 (it draws patches from columns 0-799); the held-out test data (slices 14-19,
columns 1000-1999) are never touched.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._recipes_qpi import _QPI_VALIDATION_COLS
from ._recipes_tem import _SR_VALIDATION, degrade

#: Side of the QPI validation crops (the validation columns are 200 wide).
_QPI_VALIDATION_SIDE = 192


def _validation_batches(
    y: np.ndarray,
    degradation: dict[str, Any] | None = None,
    *,
    x: np.ndarray | None = None,
    side: int = 256,
    count: int = 8,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cut fixed crops of a validation image and their inputs into two batches.

    One code path for every task. The crops are ``side x side`` squares of ``y`` on a grid of
    step ``side``: every other grid position, at most ``count`` of them (every position when
    there are fewer than ``2 * count``). The input of a crop is the same crop of ``x``
    (``(C, H, W)``, aligned with ``y``), or, for super-resolution, ``degrade(crop,
    degradation)`` with the noise seeded by ``[13, i]`` (crop ``i``): fixed, so the loss of
    different steps is comparable.

    Parameters
    ----------
    y : numpy.ndarray
        ``(H, W)`` target: float (a regression target, given a channel axis) or integer labels.
    degradation : dict, optional
        A recipe's degradation (see :data:`TEM_DEGRADATION`): the inputs are made from ``y``.
    x : numpy.ndarray, optional
        ``(C, H, W)`` input, when it is not made from ``y``.
    side : int
        Crop side in target pixels.
    count : int
        Number of crops (at most).

    Returns
    -------
    list of (numpy.ndarray, numpy.ndarray)
        Two batches ``(inputs (B, C, h, w), targets (B, 1, side, side) or (B, side, side))``.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.zeros((64, 32), np.float32)
    >>> batches = _validation_batches(y, x=np.ones((2, 64, 32), np.float32), side=16)
    >>> [(a.shape, b.shape) for a, b in batches]
    [((4, 2, 16, 16), (4, 1, 16, 16)), ((4, 2, 16, 16), (4, 1, 16, 16))]
    """
    if (degradation is None) == (x is None):
        raise ValueError("give exactly one of degradation (the input made from y) and x (the "
                         f"input); got degradation={degradation!r}, x={type(x).__name__}")
    if x is not None and tuple(x.shape[1:]) != tuple(y.shape):
        raise ValueError(f"x must have shape (C, {y.shape[0]}, {y.shape[1]}) like y; got "
                         f"{tuple(x.shape)}")
    corners = [(r, c) for r in range(0, y.shape[0] - side + 1, side)
               for c in range(0, y.shape[1] - side + 1, side)]
    if len(corners) >= 2 * count:
        corners = corners[::2]
    corners = corners[:count]
    if len(corners) < 2:
        raise ValueError(f"y must hold at least two {side} x {side} crops; got shape {y.shape}")
    labels = np.issubdtype(y.dtype, np.integer)
    xs, ys = [], []
    for i, (r, c) in enumerate(corners):
        crop = y[r : r + side, c : c + side]
        if x is None:
            xs.append(degrade(crop, degradation, [_SR_VALIDATION, i])[None])
        else:
            xs.append(np.asarray(x[:, r : r + side, c : c + side], dtype=np.float32))
        ys.append(crop.astype(np.int64) if labels else crop.astype(np.float32)[None])
    inputs, targets = np.stack(xs), np.stack(ys)
    half = len(xs) // 2
    return [(inputs[:half], targets[:half]), (inputs[half:], targets[half:])]


def _validation_where(recipe) -> dict[str, Any]:
    """Where a recipe's validation crops come from (part of its training data, held back)."""
    if recipe.task == "qpi":
        return {"rows": [0, 2000], "columns": list(_QPI_VALIDATION_COLS)}
    return {"stack": 1, "slice": _SR_VALIDATION}


def _validation_text(recipe) -> str:
    if recipe.task == "qpi":
        where = (f"columns {_QPI_VALIDATION_COLS[0]}-{_QPI_VALIDATION_COLS[1] - 1} (all rows; "
                 f"no training patch is drawn there): 10 fixed {_QPI_VALIDATION_SIDE} x "
                 f"{_QPI_VALIDATION_SIDE} crops")
    else:
        noise = " (fixed noise)" if recipe.task == "tem-sr" else ""
        where = f"stack1 slice {_SR_VALIDATION}: 8 fixed 256 x 256 crops{noise}"
    return (f"{where}, loss every {recipe.validate_every} steps; the weights of the lowest "
            "loss are kept")
