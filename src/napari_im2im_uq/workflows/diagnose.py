"""Diagnose a calibration on held-out ground truth: the papers' metrics, layer-level.

Cuts the held-out tiles (leaving out those that overlap the record's calibration tiles, so the
measurement is held out by construction) and hands them to the tile-level report.
"""

from __future__ import annotations

from .._jobs import run_to_end, steps_callback
from .._validation import check_tile_shape
from ..calibration import methods
from .calibrate import collect
from .records import as_record
from .tiles import overlap_mask, world_tiles

__all__ = ["diagnose", "diagnose_job"]


def diagnose_job(record, outputs, truth, *, regions=None, tile_shape=None, n_splits=100, seed=0,
                 leave_out_calibration=True):
    """Diagnostics on held-out ground truth, as a generator (see :func:`diagnose`)."""
    from ..calibration import CalibrationResult
    from ..calibration.diagnostics import diagnose_tiles

    rec = as_record(record)
    result = CalibrationResult.from_dict(rec["calibration"])
    entry = methods.get(result.method)
    tile_shape = check_tile_shape(tile_shape or rec.get("tile_shape", result.tile_shape[-2:]))
    col = collect(outputs, truth, method=result.method, tile_shape=tile_shape, regions=regions,
                  sigma=entry.apply_options(rec).get("sigma"))
    tiles, origins = col.tiles, col.origins
    seen = overlap_mask(world_tiles(origins, *tile_shape, *col.geometry),
                        rec.get("tiles_world", []))
    left_out = 0
    if leave_out_calibration and seen.any():
        left_out = int(seen.sum())
        if left_out == len(origins):
            raise ValueError(
                f"every one of the {len(origins)} tiles was used to calibrate: there is no "
                "held-out ground truth in these regions (choose other regions, or pass "
                "leave_out_calibration=False to measure on the calibration tiles anyway)"
            )
        tiles = {k: v[~seen] for k, v in tiles.items()}
        origins, seen = origins[~seen], seen[~seen]
    report = yield from diagnose_tiles(result, tiles, n_splits=n_splits, seed=seed)
    report["tiles"] = origins
    report["calibration_tiles_left_out"] = left_out
    report["tiles_used_to_calibrate"] = used = int(seen.sum())
    if used:
        report["summary"].insert(0, (
            "NOT held out",
            f"{used} of the {len(origins)} tiles overlap the calibration tiles: their risk is "
            "optimistic; choose regions the calibration did not see"))
    elif left_out:
        report["summary"].insert(0, (
            "held out", f"{len(origins)} tiles ({left_out} calibration tiles left out)"))
    return report


def diagnose(record, outputs, truth, *, progress=None, **kwargs) -> dict:
    """Compute the papers' metrics of a calibration on held-out ground truth.

    Parameters
    ----------
    record : dict, path or calibrated layer
        The calibration to diagnose.
    outputs, truth
        As for :func:`calibrate`: held-out ground truth, NOT the tiles used to calibrate.
    regions : Shapes layer or list of rectangles, optional
    tile_shape : (int, int), optional
        Default: the record's.
    n_splits : int
        Random calibration/test splits of the held-out tiles for the risk histogram.
    seed : int
    leave_out_calibration : bool
        Leave out the tiles that overlap the record's calibration tiles (default), so the
        measurement is on held-out ground truth; with False they are kept and the report says
        how many are not held out.
    progress : callable, optional

    Returns
    -------
    dict
        The report of ``napari_im2im_uq.calibration.diagnostics.diagnose_tiles`` plus "tiles".
    """
    return run_to_end(diagnose_job(record, outputs, truth, **kwargs),
                      callback=steps_callback(progress))

