"""Calibrate a model's outputs on ground truth and self-check a calibration.

The workflow is the same for every method; what differs is asked of the method's registry
entry (:mod:`napari_im2im_uq.calibration.methods`): the outputs it reads, the arrays it cuts
into tiles, how it checks the cut ground truth, how it calibrates, and the products it
applies (shown with the styles of :mod:`napari_im2im_uq.layers`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from .. import layers
from .._jobs import run_to_end, steps_callback
from .._validation import check_bool, check_int, check_range, check_tile_shape
from .._warnings import Im2ImUQWarning
from ..calibration import methods
from .apply import _score, result_layers
from .drift import summary_of
from .leakage import check_leakage, leakage_figures, leaked_tiles, refusal, training_regions
from .records import make_record
from .tiles import calibration_tiles, cut_many, no_tiles_error, spatial

__all__ = ["Calibration", "calibrate", "calibrate_job", "self_check"]


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` returns: the result, its record and the layers to show."""

    result: object
    record: dict
    layers: list = field(repr=False)
    tiles: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Collected:
    """The calibration tiles of one request, cut and checked by the method's entry."""

    method: object  # the registry entry
    arrays: dict  # whole outputs by name (numpy or dask)
    tiles: dict  # the method's tiles by name, shape (n, ...)
    origins: np.ndarray  # (n, 3) (plane, row, column) of each tile
    geometry: tuple  # (scale, translate, ndim) of the outputs' grid
    tile_shape: tuple
    truth_range: list
    leaked: dict | None = None  # n_leaked, planes_matched: the tiles checked against training


def collect(outputs, truth, *, method, tile_shape, regions=None, sigma=None,
            leakage=None) -> Collected:
    """Check the inputs, choose the tiles in ``regions`` and cut what ``method`` reads.

    ``leakage`` ("refuse" or "report"; None: not checked) compares the tiles with the
    training regions of the outputs' model (:mod:`.leakage`): "refuse" raises when any leaks.
    """
    entry = methods.get(method)
    if leakage is not None:
        leakage = check_leakage(leakage)
    sigma = _score(sigma)
    if not isinstance(outputs, dict):
        raise ValueError(
            "outputs must be a dict of output name to layer or array (api.model_outputs gives "
            f"it for a prediction layer); got {type(outputs).__name__}"
        )
    missing = [k for k in entry.needs if k not in outputs]
    if missing:
        raise ValueError(
            f"outputs must hold {list(entry.needs)} for method {method!r} (from "
            f"{entry.producers}); missing {missing}, got {sorted(outputs)}"
        )
    th, tw = check_tile_shape(tile_shape)
    key0 = entry.needs[0]
    ref_obj = outputs[key0]
    ref_data = layers.data_of(ref_obj, key0)
    ndim_img = ref_data.ndim - (1 if entry.class_axis else 0)
    grid_shape = tuple(spatial(ref_data, class_axis=entry.class_axis).shape[-3:])
    ref_shape = grid_shape if ndim_img == 3 else grid_shape[1:]
    truth_data = layers.data_of(truth, "truth")
    if tuple(truth_data.shape[-2:]) != grid_shape[-2:] or (
            truth_data.ndim == 3 and truth_data.shape[0] != grid_shape[0]):
        raise ValueError(
            f"truth must be on the prediction's grid: shape {ref_shape}; got shape "
            f"{tuple(truth_data.shape)}"
        )
    scale, translate = layers.geometry(ref_obj, ndim_img)
    origins = calibration_tiles(ref_shape, (th, tw), regions=regions, scale=scale,
                                translate=translate)
    if ndim_img == 2:
        origins[:, 0] = 0
    if len(origins) == 0:
        raise no_tiles_error(th, tw, grid_shape)
    arrays = {k: layers.data_of(v, k) for k, v in outputs.items()}
    wanted = {"truth": (spatial(truth_data), False)}  # cut together: one read of each chunk
    wanted.update({k: (v, entry.class_axis)
                   for k, v in entry.inputs(arrays, sigma=sigma).items()})
    raw = cut_many(wanted, origins, (th, tw))
    truth_tiles = raw["truth"]
    tiles, keep = entry.prepare_tiles(raw)
    keep = np.asarray(keep, dtype=bool)
    if not keep.all():
        origins = origins[keep]
        if len(origins) == 0:
            raise no_tiles_error(th, tw, grid_shape, unannotated=True)
    kept_truth = tiles["truth"] if "truth" in tiles else truth_tiles[keep]
    if "prediction" in raw:  # regression truth: same units as the prediction?
        check_units(kept_truth, raw["prediction"][keep])
    trained, model = training_regions(outputs) if leakage else (None, "model")
    leaked = None
    if trained is not None:
        hit, planes = leaked_tiles(truth_data, origins, (th, tw), trained)
        leaked = {"n_leaked": int(hit.sum()), "planes_matched": planes}
        if hit.any() and leakage == "refuse":
            raise refusal(int(hit.sum()), len(origins), model)
    return Collected(
        method=entry, arrays=arrays, tiles=tiles, origins=origins,
        geometry=(scale, translate, ndim_img), tile_shape=(th, tw),
        truth_range=[float(kept_truth.min()), float(kept_truth.max())], leaked=leaked,
    )


def _leakage_field(col: Collected, result) -> dict:
    """Return the record's ``leakage``: the counts and, in expectation, the bound."""
    return leakage_figures(
        result.n, col.leaked["n_leaked"], level=col.method.level(result),
        expectation=result.delta is None, valid=bool(result.valid),
        what=col.method.held_out_words(result), planes_matched=col.leaked["planes_matched"])


def check_units(truth, prediction, *, ratio=20.0) -> None:
    """Refuse truth and prediction whose ranges obviously differ in units (spans ``ratio`` apart).

    A constant truth or prediction says nothing about units and passes.

    Examples
    --------
    >>> check_units(np.array([0.0, 255.0]), np.array([0.0, 1.0]))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: truth spans [0, 255] but the prediction spans [0, 1]: ...
    """
    t = np.asarray(truth, dtype=np.float64)
    p = np.asarray(prediction, dtype=np.float64)
    t, p = t[np.isfinite(t)], p[np.isfinite(p)]
    if not t.size or not p.size:
        return
    (t0, t1), (p0, p1) = (t.min(), t.max()), (p.min(), p.max())
    small, large = sorted((t1 - t0, p1 - p0))
    gap = max(t0 - p1, p0 - t1, 0.0)
    if small > 0 and (large > ratio * small or gap > ratio * large):
        raise ValueError(
            f"truth spans [{t0:.4g}, {t1:.4g}] but the prediction spans [{p0:.4g}, {p1:.4g}]: "
            "they are in different units; convert the truth to the prediction's units (e.g. a "
            "uint8 truth divided by 255, uint16 by 65535, as the model's preprocessing does "
            "with its input) and calibrate again"
        )


def _data_range(outputs, data_range):
    if data_range is not None:
        return check_range(data_range, "data_range")
    for v in outputs.values():
        rng = layers.meta(v).get("model", {}).get("output_range")
        if rng:
            return tuple(float(x) for x in rng)
    return None


def _calibrate_tiles(col: Collected, outputs, *, alpha, delta, rule, bound, beta, distance,
                     data_range, seed, tiles=None):
    return col.method.calibrate(
        col.tiles if tiles is None else tiles, alpha=alpha, delta=delta, rule=rule, bound=bound,
        beta=beta, distance=distance, data_range=_data_range(outputs, data_range), seed=seed)


def calibrate_job(outputs, truth, *, method="intervals", alpha=0.1, delta=0.1, rule=None,
                  bound="hoeffding_bentkus", beta=0.9, tile_shape=(64, 64), regions=None,
                  sigma=None, distance="l1", data_range=None, seed=0, show_bounds=False,
                  image=None, leakage="refuse"):
    """Calibrate as a generator (see :func:`calibrate`): yields ``(step, 3)``."""
    seed = check_int(seed, "seed", minimum=0)
    show_bounds = check_bool(show_bounds, "show_bounds")
    leakage = check_leakage(leakage)
    yield 0, 3
    col = collect(outputs, truth, method=method, tile_shape=tile_shape, regions=regions,
                  sigma=sigma, leakage=leakage)
    yield 1, 3
    result = _calibrate_tiles(col, outputs, alpha=alpha, delta=delta, rule=rule, bound=bound,
                              beta=beta, distance=distance, data_range=data_range, seed=seed)
    yield 2, 3
    extra = dict(col.method.record_extra(col.arrays, sigma=_score(sigma)))
    extra["truth_range"] = col.truth_range
    grid = spatial(col.arrays[col.method.needs[0]], class_axis=col.method.class_axis).shape[-3:]
    extra["drift_summary"] = summary_of(col.method, col.tiles, col.origins, col.tile_shape,
                                        tuple(grid), image=image)
    if col.leaked is not None:  # the model names its training regions: the tiles were checked
        extra["leakage"] = _leakage_field(col, result)
    record = make_record(result, outputs, truth, col.origins, col.geometry, col.tile_shape,
                         extra)
    shown = result_layers(col.method, result, record, outputs, show_bounds=show_bounds,
                          sigma=sigma)
    yield 3, 3
    return Calibration(result=result, record=record, layers=shown, tiles=col.origins)


def calibrate(outputs, truth, *, progress=None, **kwargs) -> Calibration:
    """Calibrate a model's outputs on ground truth the user chose; return result and layers.

    Parameters
    ----------
    outputs : dict of str to layer or array
        The outputs of one prediction run by name (:func:`model_outputs` gives them for a
        layer): "prediction", "lower", "upper" for intervals; "prediction" and a score for a
        trust mask; "mask" and "prediction" for the mask method; "probabilities" for
        segmentation. (planes, rows, columns) or (rows, columns).
    truth : Image or Labels layer, or array
        Ground truth on the outputs' grid. For segmentation, labels where 0 means "not
        annotated" (ignored) and label k + 1 is the model's class k.
    method : {"intervals", "trust_mask", "mask", "segmentation"}
    alpha, delta, beta : float
        Risk level, RCPS error level, and the mask method's probability of a good tile.
    rule : str, optional
        "rcps" or "crc" (intervals, segmentation), "conformal", "crc" or "paper" (mask);
        default the first.
    bound : {"hoeffding_bentkus", "hoeffding", "wsr"}
        The RCPS bound.
    tile_shape : (int, int)
        Calibration tile in output pixels: the unit the guarantee speaks about.
    regions : Shapes layer or list of rectangles, optional
        Where ground truth exists (default: everywhere).
    sigma : str or array, optional
        Trust mask score: "std", "residual", "width" (upper - lower) or "mask" (1 - mask);
        default the first the model has.
    distance : {"l1", "l2", "ssim"}
        The mask method's distance.
    data_range : (float, float), optional
        Declared range of the data (default: the model's output range); B of the trust mask.
    seed : int
        The WSR order.
    show_bounds : bool
        Also return the calibrated lower and upper bounds (intervals).
    image : layer or array, optional
        The model's input of these outputs; its intensity and texture under each calibration
        tile join the record's ``drift_summary`` (what :func:`check_drift` compares).
    leakage : {"refuse", "report"}
        What to do with calibration tiles inside the regions the model was trained or
        validated on (a model trained by ``train`` names them; its outputs carry them): "refuse"
        (default) raises a ValueError saying how many of the tiles leak; "report" calibrates
        anyway and the record's ``leakage`` states the counts and the bound of Adame et al.,
        Prop. 3.2 (``alpha * (n + 1) / (n_new + 1)`` for a guarantee in expectation; none for
        a high-probability one). Ground truth of other data never leaks.
    progress : callable, optional
        Called with ``(step, 3)``.

    Returns
    -------
    Calibration
        ``result`` (:class:`~napari_im2im_uq.calibration.CalibrationResult`), ``record`` (a
        JSON-ready dict: the result, the model name and sha256, the tiles in world
        coordinates, the data range, ``drift_summary``: a few statistics per calibration
        tile, no pixels, for :func:`check_drift`, and ``leakage`` when the model names its
        training regions), ``layers`` (tuples carrying the record in
        ``metadata["im2im_uq"]["record"]``) and ``tiles`` (their (plane, row, column)).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> truth = rng.random((128, 128)).astype(np.float32)
    >>> f = truth + 0.05 * rng.standard_normal(truth.shape).astype(np.float32)
    >>> out = {"prediction": f, "lower": f - 0.05, "upper": f + 0.05}
    >>> cal = calibrate(out, truth, method="intervals", alpha=0.2, rule="crc", tile_shape=(16, 16))
    >>> cal.result.n, [kw["name"] for _, kw, _ in cal.layers]
    (64, ['interval width (model)'])
    """
    return run_to_end(calibrate_job(outputs, truth, **kwargs), callback=steps_callback(progress))



def self_check(outputs, truth, *, method="intervals", alpha=0.1, delta=0.1, rule=None,
               bound="hoeffding_bentkus", beta=0.9, tile_shape=(64, 64), regions=None, sigma=None,
               distance="l1", data_range=None, seed=0, leakage="refuse") -> dict:
    """Calibrate on a random half of the labeled tiles and measure the risk on the other half.

    A warning (:class:`~napari_im2im_uq.Im2ImUQWarning`) is issued when the held-out risk is
    above the target level: then the labeled tiles are not a good sample of one population
    (e.g. a region unlike the rest), or the half is too small to say.

    Parameters
    ----------
    outputs, truth
        As for :func:`calibrate`.
    method, alpha, delta, rule, bound, beta, tile_shape, regions, sigma, distance, data_range
        As for :func:`calibrate`.
    seed : int
        Seed of the split (and of the WSR order).
    leakage : {"refuse", "report"}
        As for :func:`calibrate`: tiles the model was trained on are refused, or counted.

    Returns
    -------
    dict
        "n_calibration", "n_test", "test_risk" (mean held-out loss; for the mask method's
        conformal rule, the fraction of tiles above alpha), "level", "passed", "message",
        "result" (the half-calibration) and "leakage" (``{"n_leaked", "planes_matched"}`` of
        all the labeled tiles when the model names its training regions, else None).
    """
    seed = check_int(seed, "seed", minimum=0)
    col = collect(outputs, truth, method=method, tile_shape=tile_shape, regions=regions,
                  sigma=sigma, leakage=check_leakage(leakage))
    tiles = col.tiles
    n = len(col.origins)
    if n < 4:
        raise ValueError(
            f"the labeled regions hold {n} whole tiles; a self-check needs at least 4 (2 to "
            "calibrate, 2 to test): label more or use smaller tiles"
        )
    perm = np.random.default_rng(seed).permutation(n)
    cal_idx, test_idx = perm[: n // 2], perm[n // 2:]
    cal_tiles = {k: v[cal_idx] for k, v in tiles.items()}
    test_tiles = {k: v[test_idx] for k, v in tiles.items()}
    result = _calibrate_tiles(col, outputs, alpha=alpha, delta=delta, rule=rule, bound=bound,
                              beta=beta, distance=distance, data_range=data_range, seed=seed,
                              tiles=cal_tiles)
    losses = col.method.held_out_losses(result, test_tiles)
    risk = float(np.mean(losses))
    level = col.method.level(result)
    se = float(np.std(losses, ddof=1) / math.sqrt(len(losses))) if len(losses) > 1 else float("nan")
    passed = risk <= level
    what = "fraction of test tiles above alpha" if result.rule in ("conformal", "paper") \
        else "mean held-out loss"
    message = (
        f"Calibrated on {len(cal_idx)} tiles, tested on {len(test_idx)}: {what} = {risk:.4g} "
        f"(standard error {se:.2g}), target <= {level:g}. "
        + ("Consistent with the guarantee." if passed else
           "ABOVE the target: the labeled tiles may not be one population (or the test half "
           "is small); acquire ground truth on a random tile plan.")
    )
    if not passed:
        warnings.warn(message, Im2ImUQWarning, stacklevel=2)
    return {"n_calibration": int(len(cal_idx)), "n_test": int(len(test_idx)), "test_risk": risk,
            "standard_error": se, "level": level, "passed": bool(passed), "message": message,
            "result": result, "leakage": col.leaked}

