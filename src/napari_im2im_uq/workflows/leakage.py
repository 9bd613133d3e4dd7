"""Leakage at calibration: calibration tiles inside the regions a model was trained on.

A model trained by :func:`napari_im2im_uq.training.train` records in its spec the regions of
each target plane it trained and validated on (``spec["training_regions"]``: the fingerprint
of each target plane and its "train", "validation" and "held_back" boxes); every prediction
layer carries them in its metadata (``metadata["im2im_uq"]["model"]["training_regions"]``).

A calibration tile (plane p, rows, columns of the ground truth's grid) *leaks* when the
fingerprint of truth plane p (:func:`napari_im2im_uq._fingerprints.plane_fingerprints`)
equals the fingerprint of a training target plane and the tile intersects, with positive
area, one of that plane's "train" or "validation" boxes. Ground truth of other data (other
planes, other values, a crop) never matches a fingerprint and is never counted.

On such tiles the model is better than on new data, so a calibration on them is too
optimistic. Calibration refuses them by default; with ``leakage="report"`` it calibrates
anyway and the record states the worst-case bound of Adame et al. (Prop. 3.2): with ``n``
calibration tiles of which ``n_leaked`` leaked, a guarantee in expectation at level ``alpha``
(conformal risk control) holds on new tiles at ``alpha * (n + 1) / (n_new + 1)``, where
``n_new = n - n_leaked``. Prop. 3.2 says nothing of a high-probability (RCPS) guarantee: then
only the counts are reported.
"""

from __future__ import annotations

import numpy as np

from .. import layers
from .._fingerprints import plane_fingerprints
from .tiles import spatial

__all__ = ["LEAKAGE", "REFERENCE", "check_leakage", "leakage_figures", "leaked_tiles",
           "refusal", "training_regions"]

#: The values of ``leakage``: refuse leaked tiles, or calibrate on them and report the bound.
LEAKAGE = ("refuse", "report")
#: Where the bound comes from.
REFERENCE = "Adame et al., Prop. 3.2"
#: The kinds of box a calibration tile must not intersect.
USED = ("train", "validation")


def check_leakage(leakage) -> str:
    """Return ``leakage`` after checking it is one of :data:`LEAKAGE`.

    Examples
    --------
    >>> check_leakage("report")
    'report'
    >>> check_leakage(True)
    Traceback (most recent call last):
    ...
    ValueError: leakage must be 'refuse' or 'report'; got True
    """
    if not isinstance(leakage, str) or leakage not in LEAKAGE:
        raise ValueError(f"leakage must be 'refuse' or 'report'; got {leakage!r}")
    return leakage


def training_regions(outputs) -> tuple[dict | None, str]:
    """Return the training regions of the model the outputs come from, and the model's name.

    ``outputs`` maps output names to layers or arrays; the regions are read from the first
    layer whose metadata names a model with ``training_regions`` (None when none does: a zoo
    model, or arrays without metadata).

    Examples
    --------
    >>> training_regions({"prediction": np.zeros((4, 4))})
    (None, 'model')
    """
    for value in outputs.values():
        model = layers.meta(value).get("model") or {}
        if isinstance(model, dict) and model.get("training_regions") is not None:
            return model["training_regions"], str(model.get("name") or "model")
    return None, "model"


def _boxes(regions: dict) -> dict[str, list]:
    """Map each training target plane's fingerprint to its train and validation boxes."""
    if not isinstance(regions, dict) or not isinstance(regions.get("images"), list):
        raise ValueError("the model's training_regions must be a dict with a list 'images' "
                         f"(see training.train); got {type(regions).__name__}")
    out: dict[str, list] = {}
    for i, image in enumerate(regions["images"]):
        if not isinstance(image, dict) or not isinstance(image.get("fingerprint"), str):
            raise ValueError(f"the model's training_regions['images'][{i}] must be a dict with "
                             f"a 'fingerprint'; got {image!r:.80}")
        boxes = out.setdefault(image["fingerprint"], [])
        for key in USED:
            for box in image.get(key) or ():
                if len(box) != 4:
                    raise ValueError(f"the model's training_regions['images'][{i}][{key!r}] "
                                     f"must hold [r0, c0, r1, c1] boxes; got {box!r}")
                boxes.append(tuple(int(v) for v in box))
    return out


def leaked_tiles(truth, origins, tile_shape, regions) -> tuple[np.ndarray, int]:
    """Return which calibration tiles leak, and how many truth planes are training targets.

    Parameters
    ----------
    truth : layer or array
        The ground truth, (rows, columns) or (planes, rows, columns), on the outputs' grid.
    origins : array of int, shape (n, 3)
        (plane, row, column) of each tile's first pixel.
    tile_shape : (int, int)
    regions : dict
        The model's ``training_regions``.

    Returns
    -------
    leaked : ndarray of bool, shape (n,)
        Tiles on a training target plane that intersect one of its train or validation boxes.
    planes_matched : int
        Truth planes holding tiles whose fingerprint is a training target plane's.

    Examples
    --------
    >>> from napari_im2im_uq._fingerprints import fingerprint
    >>> truth = np.arange(64.0).reshape(8, 8)
    >>> regions = {"images": [{"fingerprint": fingerprint(truth), "train": [[0, 0, 4, 4]]}]}
    >>> leaked, planes = leaked_tiles(truth, np.array([[0, 0, 0], [0, 4, 4]]), (4, 4), regions)
    >>> leaked.tolist(), planes
    ([True, False], 1)
    """
    boxes = _boxes(regions)
    origins = np.asarray(origins, dtype=np.int64).reshape(-1, 3)
    th, tw = (int(v) for v in tile_shape)
    data = spatial(layers.data_of(truth, "truth"))
    leaked = np.zeros(len(origins), dtype=bool)
    matched = 0
    for plane in np.unique(origins[:, 0]):
        used = boxes.get(plane_fingerprints(data[int(plane)])[0])
        if used is None:
            continue
        matched += 1
        here = origins[:, 0] == plane
        r, c = origins[here, 1:2], origins[here, 2:3]  # (k, 1) against (1, boxes)
        if not used:
            continue
        b = np.asarray(used, dtype=np.int64)
        hit = ((r < b[None, :, 2]) & (b[None, :, 0] < r + th)
               & (c < b[None, :, 3]) & (b[None, :, 1] < c + tw))
        leaked[here] = hit.any(axis=1)
    return leaked, matched


def refusal(n_leaked: int, n: int, model: str) -> ValueError:
    """Return the error raised when calibration tiles leak and ``leakage`` is "refuse"."""
    return ValueError(
        f"{n_leaked} of the {n} calibration tiles lie in regions model {model!r} was trained or "
        "validated on (its training_regions): the model is better there than on new data, so a "
        "calibration on them promises too much. Calibrate inside the held-back regions (choose "
        f"the Shapes layer 'held back ({model})' the Train dock adds, or "
        "api.held_back_shapes(...) as regions), or pass leakage='report' to calibrate anyway "
        f"and have the record state the leakage bound ({REFERENCE})"
    )


def leakage_figures(n, n_leaked, *, level, expectation, valid=True, what="risk",
                    planes_matched=None) -> dict:
    """Return the record's ``leakage`` field: the counts and the bound of Prop. 3.2.

    Parameters
    ----------
    n, n_leaked : int
        Calibration tiles, and those that leaked.
    level : float
        The guaranteed level (``alpha``; ``1 - beta`` for a conformal rule).
    expectation : bool
        Whether the guarantee holds in expectation (CRC, conformal): Prop. 3.2 covers it. A
        high-probability (RCPS) guarantee is not covered: ``bound`` is None.
    valid : bool
        False for a rule without a proven guarantee: no bound either.
    what : str
        What the level bounds, in words (e.g. "mean held-out loss").
    planes_matched : int, optional
        Truth planes found among the training targets.

    Returns
    -------
    dict
        ``n``, ``n_leaked``, ``n_new``, ``factor`` = (n + 1) / (n_new + 1), ``level``,
        ``bound`` (``level * factor``, or None), ``covered``, ``message`` and ``reference``.

    Examples
    --------
    >>> f = leakage_figures(10, 2, level=0.1, expectation=True)
    >>> f["n_new"], round(f["factor"], 4), round(f["bound"], 4)
    (8, 1.2222, 0.1222)
    >>> leakage_figures(10, 2, level=0.1, expectation=False)["bound"] is None
    True
    """
    n, n_leaked = int(n), int(n_leaked)
    if not 0 <= n_leaked <= n or n < 1:
        raise ValueError(f"n_leaked must be in [0, n] with n >= 1; got n={n}, "
                         f"n_leaked={n_leaked}")
    n_new = n - n_leaked
    factor = (n + 1) / (n_new + 1)
    covered = bool(expectation and valid)
    bound = float(level) * factor if covered else None
    counts = f"{n_leaked} of the {n} calibration tiles lie in the model's training regions"
    if not n_leaked:
        message = (f"Leakage: none of the {n} calibration tiles lies in the model's training "
                   "regions.")
    elif not valid:
        message = (f"Leakage: {counts}. This rule has no proven guarantee, with or without "
                   f"leakage ({REFERENCE} does not apply).")
    elif not expectation:
        message = (f"Leakage: {counts}. {REFERENCE} covers guarantees in expectation only, not "
                   "this high-probability (RCPS) guarantee: with leaked tiles it is not proven; "
                   "calibrate inside the held-back regions for a guarantee.")
    else:
        message = (f"Leakage: {counts}; only {n_new} are new. By {REFERENCE} the {what} on a "
                   f"new tile is at most {level:.4g} x (n + 1) / (n_new + 1) = {level:.4g} x "
                   f"{factor:.4g} = {bound:.4g} in expectation (not {level:.4g}).")
    out = {"n": n, "n_leaked": n_leaked, "n_new": n_new, "factor": factor, "level": float(level),
           "bound": bound, "covered": covered, "message": message, "reference": REFERENCE}
    if planes_matched is not None:
        out["planes_matched"] = int(planes_matched)
    return out
