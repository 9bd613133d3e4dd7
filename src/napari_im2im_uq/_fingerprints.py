"""Content fingerprints of images and tiles: what training and calibration compare.

A fingerprint is the first 16 hex digits of the sha256 of the values as float64 (C order), so
the same values give the same print whatever their dtype (uint8 labels and int64 labels, a
uint16 target and the same target as float32). Imports nothing of the package, so every layer
may use it: the training split records the fingerprint of each target plane it cut regions
from, and calibration compares its ground truth's planes with them to find leaked tiles.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["FINGERPRINT", "fingerprint", "plane_fingerprints"]

#: How an image or tile is fingerprinted (stated in records and model specs).
FINGERPRINT = "sha256 of the values as float64 (C order), first 16 hex digits"


def fingerprint(values) -> str:
    """Return the fingerprint of an array's values (see :data:`FINGERPRINT`).

    Examples
    --------
    >>> a = np.arange(6, dtype=np.uint8).reshape(2, 3)
    >>> fingerprint(a) == fingerprint(a.astype(np.float32)), len(fingerprint(a))
    (True, 16)
    >>> fingerprint(a) == fingerprint(a.T)
    False
    """
    arr = np.ascontiguousarray(np.asarray(values), dtype=np.float64)
    digest = hashlib.sha256(repr(arr.shape).encode("ascii"))
    digest.update(arr.tobytes())
    return digest.hexdigest()[:16]


def plane_fingerprints(image) -> list[str]:
    """Return the fingerprint of each 2-D plane of an image (one for a 2-D image).

    ``image`` is a 2-D (rows, columns) or 3-D (planes, rows, columns) array; a dask array is
    computed one plane at a time.

    Examples
    --------
    >>> vol = np.zeros((3, 4, 5))
    >>> vol[1] = 1
    >>> prints = plane_fingerprints(vol)
    >>> len(prints), prints[0] == prints[2], prints[0] == prints[1]
    (3, True, False)
    >>> plane_fingerprints(vol[0]) == prints[:1]
    True
    """
    ndim = getattr(image, "ndim", np.ndim(image))
    if ndim == 2:
        return [fingerprint(image)]
    if ndim != 3:
        raise ValueError(
            f"image must be 2-D (rows, columns) or 3-D (planes, rows, columns); got {ndim}-D"
        )
    return [fingerprint(image[i]) for i in range(image.shape[0])]
