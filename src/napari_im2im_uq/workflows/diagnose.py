"""Diagnose a calibration on held-out ground truth: the papers' metrics, layer-level.

Cuts the held-out tiles and hands them to the tile-level report. The tiles the record was
calibrated on are left out, so the measurement is held out by construction; a calibration tile
is one at the same position AND with the same ground truth (the record's per-tile
fingerprints), so a record made on one volume and diagnosed on another leaves out nothing.
When the held-out risk is above the target by more than its Monte-Carlo error,
:func:`diagnose` warns. Tiles inside the regions the model was trained or validated on (a model
trained by :func:`napari_im2im_uq.training.train`, see :mod:`.leakage`) are kept but counted:
the report says the model's error there is optimistic.
"""

from __future__ import annotations

import warnings

from .._jobs import run_to_end, steps_callback
from .._validation import check_bool, check_tile_shape
from .._warnings import Im2ImUQWarning
from ..calibration import methods
from .calibrate import collect
from .leakage import leaked_tiles, training_regions
from .records import as_record, matching_tiles, warn_if_other_model
from .tiles import overlap_mask, world_tiles

__all__ = ["diagnose", "diagnose_job"]


def diagnose_job(record, outputs, truth, *, regions=None, tile_shape=None, n_splits=100, seed=0,
                 leave_out_calibration=True):
    """Diagnostics on held-out ground truth, as a generator (see :func:`diagnose`)."""
    from ..calibration import CalibrationResult
    from ..calibration.diagnostics import diagnose_tiles

    leave_out_calibration = check_bool(leave_out_calibration, "leave_out_calibration")
    rec = as_record(record)
    result = CalibrationResult.from_dict(rec["calibration"], where="record.calibration")
    entry = methods.get(result.method)
    if isinstance(outputs, dict):
        warn_if_other_model(rec, outputs, stacklevel=4)
    tile_shape = check_tile_shape(tile_shape or rec.get("tile_shape", result.tile_shape[-2:]))
    col = collect(outputs, truth, method=result.method, tile_shape=tile_shape, regions=regions,
                  sigma=entry.apply_options(rec).get("sigma"))
    tiles, origins = col.tiles, col.origins
    boxes, other_data, by_data = matching_tiles(rec, truth, col.geometry)
    seen = overlap_mask(world_tiles(origins, *tile_shape, *col.geometry), boxes)
    left_out = 0
    if leave_out_calibration and seen.any():
        left_out = int(seen.sum())
        if left_out == len(origins):
            raise ValueError(
                f"every one of the {len(origins)} tiles was used to calibrate (same position and "
                "same ground truth): there is no held-out ground truth in these regions (choose "
                "other regions, or pass leave_out_calibration=False to measure on the "
                "calibration tiles anyway)"
            )
        tiles = {k: v[~seen] for k, v in tiles.items()}
        origins, seen = origins[~seen], seen[~seen]
    trained, model = training_regions(outputs) if isinstance(outputs, dict) else (None, "")
    in_training = (int(leaked_tiles(truth, origins, tile_shape, trained)[0].sum())
                   if trained is not None else 0)
    report = yield from diagnose_tiles(result, tiles, n_splits=n_splits, seed=seed)
    report["tiles"] = origins
    report["tiles_in_training_regions"] = in_training
    report["calibration_tiles_left_out"] = left_out
    report["tiles_used_to_calibrate"] = used = int(seen.sum())
    report["calibration_tiles_with_other_data"] = other_data
    notes = []
    if used:
        notes.append((
            "NOT held out",
            f"{used} of the {len(origins)} tiles overlap the calibration tiles: their risk is "
            "optimistic; choose regions the calibration did not see"))
    elif left_out:
        notes.append((
            "held out", f"{len(origins)} tiles ({left_out} calibration tiles left out)"))
    if other_data:
        notes.append((
            "other data", f"{other_data} of the record's calibration tiles lie in this image but "
                          "hold other ground truth: not calibration tiles here, kept"))
    if in_training:
        notes.append((
            "trained on", f"{in_training} of the {len(origins)} tiles lie in the regions model "
                          f"{model!r} was trained or validated on: its error there is optimistic "
                          "(measure on its held-back regions)"))
    if not by_data:
        notes.append((
            "calibration tiles", "identified by position only (the record predates data "
                                 "fingerprints)"))
    # The held-out risk stays first, after a "NOT held out" that qualifies it.
    head = [notes.pop(0)] if used else []
    summary = report["summary"]
    report["summary"] = head + summary[:1] + notes + summary[1:]
    held = report["held_out"]
    if not held["within_error"]:  # above by more than its Monte-Carlo error: not noise
        warnings.warn(f"diagnose: {held['message']}", Im2ImUQWarning, stacklevel=4)
    return report


def diagnose(record, outputs, truth, *, progress=None, **kwargs) -> dict:
    """Compute the papers' metrics of a calibration on held-out ground truth.

    Warns (:class:`~napari_im2im_uq.Im2ImUQWarning`) when the held-out risk is above the
    target by more than its Monte-Carlo error (2 standard errors: a smaller excess is what a
    risk controlled in expectation shows about half the time); the report's summary puts that
    figure first in every case, with its standard error, and says whether it meets the target
    or is above it within or beyond that error. The risk over random splits
    re-calibrates on the held-out tiles: it shows the spread of the guarantee, it does not test
    this record.

    Parameters
    ----------
    record : dict, path or calibrated layer
        The calibration to diagnose (checked: schema and checksum). Outputs of another model
        than the record's are diagnosed with a warning.
    outputs, truth
        As for :func:`calibrate`: held-out ground truth, NOT the tiles used to calibrate.
    regions : Shapes layer or list of rectangles, optional
    tile_shape : (int, int), optional
        Default: the record's.
    n_splits : int
        Random calibration/test splits of the held-out tiles for the risk histogram.
    seed : int
    leave_out_calibration : bool
        Leave out the tiles that overlap the record's calibration tiles (default): those at
        the same position with the same ground truth (the record's fingerprints), so the
        measurement is on held-out ground truth; with False they are kept and the report says
        how many are not held out.
    progress : callable, optional

    Returns
    -------
    dict
        The report of ``napari_im2im_uq.calibration.diagnostics.diagnose_tiles`` plus "tiles",
        "calibration_tiles_left_out", "tiles_used_to_calibrate" and
        "calibration_tiles_with_other_data" (record tiles in this image whose ground truth
        differs: another volume) and "tiles_in_training_regions" (tiles the model was trained
        or validated on, kept and named in the summary).

    Examples
    --------
    >>> report = diagnose(cal.record, outputs, truth, regions=right)  # doctest: +SKIP
    >>> report["summary"][0][0]  # doctest: +SKIP
    'held-out risk'
    """
    return run_to_end(diagnose_job(record, outputs, truth, **kwargs),
                      callback=steps_callback(progress))
