"""Check whether a calibration carries over to new data, without ground truth (drift alarm).

The record of a calibration keeps a few statistics of each calibration tile (its
``drift_summary``: what the method's registry entry says drives its product, the prediction's
intensity and texture; see :mod:`napari_im2im_uq.calibration.drift`). :func:`check_drift` cuts
new outputs of the same model into tiles of the record's shape, computes the same statistics
and tests, for the whole volume and per region, whether they look like the calibration tiles:
a verdict in words, the p-value and effect size, and a layer marking the regions that drift.
On lazy outputs (a volume that may not fit in memory) it reads a seeded random sample of at most
:data:`MAX_TILES` tiles, each chunk under them once, and the verdict says so.
"""

from __future__ import annotations

import numpy as np

from .. import layers
from .._jobs import run_to_end, steps_callback
from .._validation import check_tile_shape
from ..calibration import drift as core
from ..calibration import methods
from ._chunks import TileReader, _chunked
from .records import as_record
from .tiles import calibration_tiles, spatial

__all__ = ["check_drift", "check_drift_job", "drift_layer", "input_features", "summary_of"]

#: Side of the square blocks of tiles that form a region of a single image ("auto").
BLOCK_TILES = 4
#: Most tiles the check reads from lazy (dask or zarr-backed) outputs: a seeded random sample
#: (the calibration summary keeps at most as many tiles).
MAX_TILES = 5000


def input_features(image, origins, tile_shape, grid_shape) -> dict:
    """Intensity and texture statistics of the input under each output tile.

    ``image`` is the model's input on a grid ``f`` times coarser than the outputs' grid
    (``f`` a whole number dividing the tile), (rows, columns) or (planes, rows, columns).
    """
    data = layers.data_of(image, "image")
    f = _input_factor(data, tile_shape, grid_shape)
    a = data if data.ndim == 3 else data[None]
    th, tw = tile_shape
    tiles = np.stack([np.asarray(a[z, r // f:(r + th) // f, c // f:(c + tw) // f])
                      for z, r, c in origins])
    return core.image_features(tiles, "input")


def _input_factor(data, tile_shape, grid_shape) -> int:
    """How many times coarser than the outputs' grid the input is (checked)."""
    planes, rows, cols = grid_shape
    lead = data.shape[0] if data.ndim == 3 else 1
    f_r, f_c = rows / data.shape[-2], cols / data.shape[-1]
    th, tw = tile_shape
    if (data.ndim not in (2, 3) or lead != planes or f_r != f_c or f_r < 1
            or f_r != int(f_r) or th % int(f_r) or tw % int(f_r)):
        raise ValueError(
            "image must be the model's input of these outputs: (rows, columns) or (planes, "
            f"rows, columns) on a grid a whole factor coarser than the outputs' {grid_shape} "
            f"that divides the tile {tile_shape}; got shape {tuple(data.shape)}")
    return int(f_r)


def summary_of(entry, tiles: dict, origins, tile_shape, grid_shape, *, image=None) -> dict:
    """Return the ``drift_summary`` of calibration tiles (the method's statistics, positions)."""
    feats = dict(entry.drift_features(tiles))
    if image is not None:
        feats.update(input_features(image, origins, tile_shape, grid_shape))
    return core.summarize(feats, tile_shape=tile_shape,
                          tiles=np.asarray(origins, dtype=np.int64).reshape(-1, 3))


def _auto_regions(regions, summary, tile_shape, grid_shape, level):
    """Resolve "auto": planes when the plane map can mark one plane, else blocks.

    The plane map's p-values cannot go below ``1 / (K + 1)`` (K calibration planes), so it can
    mark a single plane among the L new ones only when ``1 / (K + 1) <= level / L``. Otherwise
    blocks of :data:`BLOCK_TILES` x :data:`BLOCK_TILES` tiles within planes, ranked with planes
    as units (``1 / ((K + 1) B)``, B blocks a plane), when they can go below ``level``; else
    planes (the tile-test fallback says why).
    """
    if not (isinstance(regions, str) and regions == "auto"):
        return regions
    planes, rows, cols = grid_shape
    if planes == 1:
        return BLOCK_TILES
    tiles = summary.get("tiles")
    if tiles is None:
        return "plane"
    k = len(np.unique(np.asarray(tiles, dtype=np.int64).reshape(-1, 3)[:, 0]))
    if 1.0 / (k + 1) <= float(level) / planes:
        return "plane"
    blocks = (rows // tile_shape[0] // BLOCK_TILES) * (cols // tile_shape[1] // BLOCK_TILES)
    return BLOCK_TILES if blocks > 1 and 1.0 / ((k + 1) * blocks) <= float(level) else "plane"


def _reference_regions(summary, tile_shape, regions):
    """Region and plane of each calibration tile, cut as the new tiles are (or None, None)."""
    tiles = summary.get("tiles")
    if tiles is None or isinstance(regions, np.ndarray | list | tuple) or regions == "whole":
        return None, None
    pos = np.asarray(tiles, dtype=np.int64).reshape(-1, 3)
    if regions == "plane":
        return pos[:, 0], pos[:, 0]
    k = int(regions)
    keys = np.stack([pos[:, 0], pos[:, 1] // (tile_shape[0] * k),
                     pos[:, 2] // (tile_shape[1] * k)], axis=1)
    return np.unique(keys, axis=0, return_inverse=True)[1].ravel(), pos[:, 0]


def _regions(origins, tile_shape, grid_shape, regions):
    """Region index of each tile and the word for one region."""
    ids, word = _region_ids(origins, tile_shape, grid_shape, regions)
    _, inverse = np.unique(ids, return_inverse=True)
    return inverse.astype(np.int64).ravel(), word


def _region_ids(origins, tile_shape, grid_shape, regions):
    """Region id of each tile (the same id for a tile wherever it is sampled) and the word."""
    planes, rows, cols = grid_shape
    th, tw = tile_shape
    if isinstance(regions, np.ndarray | list | tuple):
        grid = np.asarray(regions)
        want = (rows // th, cols // tw)
        if grid.shape == want:
            grid = np.broadcast_to(grid, (planes, *want))
        if grid.shape != (planes, *want) or not np.issubdtype(grid.dtype, np.integer):
            raise ValueError(f"regions given as an array must hold an int region per tile, shape "
                             f"{(planes, *want)} or {want}; got {grid.dtype} {grid.shape}")
        return grid[origins[:, 0], origins[:, 1] // th, origins[:, 2] // tw], "region"
    if regions == "auto":
        regions = "plane" if planes > 1 else BLOCK_TILES
    if regions == "whole":
        return np.zeros(len(origins), np.int64), "region"
    if regions == "plane":
        return origins[:, 0], "plane"
    if isinstance(regions, int | np.integer) and not isinstance(regions, bool) and regions > 0:
        k = int(regions)
        nbr, nbc = -(-(rows // th) // k), -(-(cols // tw) // k)
        ids = (origins[:, 0] * nbr + origins[:, 1] // (th * k)) * nbc + origins[:, 2] // (tw * k)
        return ids, f"block of {k} x {k} tiles"
    raise ValueError(f"regions must be 'auto', 'plane', 'whole', a positive int (blocks of "
                     f"k x k tiles) or an int array of tile regions; got {regions!r}")


def drift_layer(verdict: dict, *, name: str = "drift") -> tuple:
    """Return the layer tuple of a verdict's tile map: 1 where the region of a tile drifts."""
    geom = verdict["geometry"]
    data = np.asarray(verdict["tile_map"], dtype=np.uint8)
    if geom["ndim"] == 2:
        data = data[0]
    compact = {k: v for k, v in verdict.items() if k not in ("tile_map", "geometry")}
    kwargs = {"name": name, **layers.drift_style(),
              "scale": tuple(geom["scale"]), "translate": tuple(geom["translate"]),
              "metadata": {layers.META_KEY: {"role": "drift", "verdict": compact}}}
    return data, kwargs, "image"


def check_drift_job(record, outputs, *, image=None, tile_shape=None, level=0.05,
                    regions="auto", sigma=None, max_tiles=MAX_TILES, seed=0):
    """Check drift as a generator (see :func:`check_drift`).

    Yields ``(plane, planes)`` on in-memory outputs, ``(tiles, sampled tiles)`` on lazy ones.
    """
    rec = as_record(record)
    summary = rec.get("drift_summary")
    reference = core.as_features(summary)
    entry = methods.get(rec["calibration"]["method"])
    if not isinstance(outputs, dict):
        raise ValueError("outputs must be a dict of output name to layer or array "
                         f"(api.model_outputs gives it); got {type(outputs).__name__}")
    missing = [k for k in entry.needs if k not in outputs]
    if missing:
        raise ValueError(f"outputs must hold {list(entry.needs)} for the record's method "
                         f"{entry.name!r}; missing {missing}, got {sorted(outputs)}")
    rec_shape = tuple(int(v) for v in summary.get("tile_shape") or rec["tile_shape"])
    if tile_shape is not None and tuple(check_tile_shape(tile_shape)) != rec_shape:
        raise ValueError(f"tile_shape must be the record's {rec_shape} (the statistics depend "
                         f"on the tile); got {tuple(tile_shape)}")
    th, tw = rec_shape
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1); got {level}")
    if sigma is None:
        sigma = entry.apply_options(rec).get("sigma")
    elif not isinstance(sigma, str):
        sigma = layers.data_of(sigma, "sigma")
    arrays = {k: layers.data_of(v, k) for k, v in outputs.items()}
    inputs = entry.inputs(arrays, sigma=sigma)
    ref_key = entry.needs[0]
    ref_data = arrays[ref_key]
    ndim = ref_data.ndim - (1 if entry.class_axis else 0)
    grid_shape = tuple(spatial(ref_data, class_axis=entry.class_axis).shape[-3:])
    with_input = any(k.startswith("input ") for k in reference)
    if with_input and image is None:
        reference = {k: v for k, v in reference.items() if not k.startswith("input ")}
    planes = grid_shape[0]
    lazy = any(_chunked(v) is not None for v in inputs.values())
    if lazy and max_tiles is not None:
        origins, total = _sample_origins(grid_shape, (th, tw), max_tiles, seed)
        if len(origins) == 0:
            raise ValueError(f"no whole {th} x {tw} tile (the record's tile) fits in the "
                             f"outputs of shape {grid_shape}")
        new = yield from _sampled_features(
            entry, inputs, image if with_input else None, origins, (th, tw), grid_shape)
    else:
        origins = calibration_tiles(grid_shape, (th, tw))
        total = len(origins)
        if len(origins) == 0:
            raise ValueError(f"no whole {th} x {tw} tile (the record's tile) fits in the "
                             f"outputs of shape {grid_shape}")
        new = yield from _plane_features(entry, inputs, image if with_input else None, origins,
                                         (th, tw), grid_shape)
    regions = _auto_regions(regions, summary, (th, tw), grid_shape, level)
    region, word = _regions(origins, (th, tw), grid_shape, regions)
    ref_region, _ = _reference_regions(summary, (th, tw), regions)
    units = {}
    if summary.get("tiles") is not None:  # planes: the units of the whole test and the map
        ref_plane = np.asarray(summary["tiles"], dtype=np.int64).reshape(-1, 3)[:, 0]
        units = {"reference_unit": ref_plane, "unit": origins[:, 0]}
    result = core.drift_test(reference, new, region, level=level, reference_region=ref_region,
                             **units)
    result["message"] = core.verdict_words(result, region_word=word)
    result["region_word"] = word
    drifted = np.array([r["drifted"] for r in result["regions"]] or [result["drifted"]], bool)
    sampled = len(origins) < total
    if sampled:
        result["sampled"] = {"tiles": len(origins), "of": total, "seed": int(seed)}
        result["message"] += (
            f" Checked on {len(origins):,} random tiles of {total:,} (seed {int(seed)}; a lazy "
            f"volume is sampled, not read whole); the map covers the {_plural(word)} holding a "
            f"sampled tile only, the others are not tested.")
        tile_map = _region_map(origins, region, drifted, (th, tw), grid_shape, regions)
    else:
        tile_map = np.zeros((planes, grid_shape[1] // th, grid_shape[2] // tw), np.uint8)
        tile_map[origins[:, 0], origins[:, 1] // th, origins[:, 2] // tw] = drifted[region]
    ref_obj = outputs[ref_key]
    scale, translate = layers.geometry(ref_obj, ndim)
    step = np.array([1.0, th, tw])[-ndim:]
    shift = np.array([0.0, (th - 1) / 2.0, (tw - 1) / 2.0])[-ndim:]
    result["tile_map"] = tile_map
    result["geometry"] = {"ndim": ndim, "scale": [float(v) for v in scale * step],
                          "translate": [float(v) for v in translate + scale * shift]}
    model = (rec.get("model") or {}).get("name", "model")
    return result, drift_layer(result, name=f"drift ({model})")


def _plane_features(entry, inputs, image, origins, tile_shape, grid_shape):
    """Statistics of every tile, a plane at a time (in-memory outputs); yields progress."""
    th, tw = tile_shape
    planes = grid_shape[0]
    feats: dict = {}
    yield 0, planes
    for z in range(planes):
        sel = origins[origins[:, 0] == z]
        if len(sel):
            local = sel.copy()
            local[:, 0] = 0
            tiles = {}
            for k, v in inputs.items():
                a = spatial(v, class_axis=entry.class_axis)
                plane = np.asarray(a[:, z:z + 1] if entry.class_axis else a[z:z + 1])
                tiles[k] = _cut_plane(plane, local, (th, tw), entry.class_axis)
            f = dict(entry.drift_features(tiles))
            if image is not None:
                f.update(input_features(_plane(image, z), local, (th, tw),
                                        (1,) + grid_shape[1:]))
            for k, v in f.items():
                feats.setdefault(k, []).append(np.asarray(v))
        yield z + 1, planes
    return {k: np.concatenate(v) for k, v in feats.items()}


def _sample_origins(grid_shape, tile_shape, max_tiles, seed):
    """At most ``max_tiles`` whole tiles of the grid drawn at random (seeded), in grid order.

    The whole tiles are those of :func:`~.tiles.calibration_tiles` on the whole image (a grid
    from the corner); the draw is made among their indices, never listing them all.
    """
    if not isinstance(max_tiles, int | np.integer) or isinstance(max_tiles, bool) or max_tiles < 1:
        raise ValueError(f"max_tiles must be a positive int or None; got {max_tiles!r}")
    planes, rows, cols = grid_shape
    th, tw = tile_shape
    grid = (planes, rows // th, cols // tw)
    total = int(np.prod(grid))
    if total <= max_tiles:
        flat = np.arange(total)
    else:
        flat = np.sort(np.random.default_rng(seed).choice(total, size=int(max_tiles),
                                                           replace=False))
    z, i, j = np.unravel_index(flat, grid)
    return np.stack([z, i * th, j * tw], axis=1).astype(np.int64), total


#: Sampled tiles whose statistics are computed together (their pixels held at once).
TILES_AT_ONCE = 256


def _sampled_features(entry, inputs, image, origins, tile_shape, grid_shape):
    """Statistics of the sampled tiles of lazy outputs; each chunk is read once. Yields progress.

    The tiles are read in grid order, :data:`TILES_AT_ONCE` at a time; the chunks under them
    are computed alone (their tasks only, :class:`._chunks.TileReader`), every input's together,
    and dropped when no later tile needs them.
    """
    th, tw = tile_shape
    named = {k: (v, entry.class_axis) for k, v in inputs.items()}
    if image is not None:
        data = layers.data_of(image, "image")
        f = _input_factor(data, tile_shape, grid_shape)
        named["input"] = (data, False)
    reader = TileReader(named, origins, tile_shape,
                         factor={"input": f} if image is not None else {})
    feats: dict = {}
    n = len(origins)
    yield 0, n
    for start in range(0, n, TILES_AT_ONCE):
        ids = np.arange(start, min(start + TILES_AT_ONCE, n))
        tiles = reader.take(ids)
        image_tiles = tiles.pop("input", None)
        found = dict(entry.drift_features(tiles))
        if image_tiles is not None:
            found.update(core.image_features(image_tiles, "input"))
        for k, v in found.items():
            feats.setdefault(k, []).append(np.asarray(v))
        yield int(ids[-1]) + 1, n
    return {k: np.concatenate(v) for k, v in feats.items()}


def _plural(word: str) -> str:
    return word.replace("block of", "blocks of") if word.startswith("block") else f"{word}s"


def _region_map(origins, region, drifted, tile_shape, grid_shape, regions) -> np.ndarray:
    """Tile map of a sampled check: every tile of a region that holds a sampled tile.

    A plane at a time (the map is one byte per tile; region ids of a plane's tiles only).
    """
    planes, rows, cols = grid_shape
    th, tw = tile_shape
    ids, _ = _region_ids(origins, tile_shape, grid_shape, regions)
    uniq = np.unique(ids)  # the compact region index of a tile is its id's rank here
    per_region = np.zeros(len(uniq), bool)
    per_region[region] = drifted[region]
    tile_map = np.zeros((planes, rows // th, cols // tw), np.uint8)
    i, j = np.meshgrid(np.arange(rows // th) * th, np.arange(cols // tw) * tw, indexing="ij")
    for z in range(planes):
        plane = np.stack([np.full(i.size, z), i.ravel(), j.ravel()], axis=1)
        plane_ids, _ = _region_ids(plane, tile_shape, grid_shape, regions)
        pos = np.clip(np.searchsorted(uniq, plane_ids), 0, len(uniq) - 1)
        hit = uniq[pos] == plane_ids
        tile_map[z].reshape(-1)[hit] = per_region[pos[hit]]
    return tile_map


def _plane(image, z):
    data = layers.data_of(image, "image")
    return data[z] if data.ndim == 3 else data


def _cut_plane(plane, origins, tile_shape, class_axis):
    th, tw = tile_shape
    if class_axis:
        return np.stack([plane[:, 0, r:r + th, c:c + tw] for _, r, c in origins])
    return np.stack([plane[0, r:r + th, c:c + tw] for _, r, c in origins])


def check_drift(record, outputs, *, image=None, tile_shape=None, level=0.05, regions="auto",
                sigma=None, max_tiles=MAX_TILES, seed=0, progress=None):
    """Test whether new outputs look like the calibration tiles (no ground truth needed).

    The outputs are cut into whole tiles of the record's shape; for each the statistics of the
    record's ``drift_summary`` are computed (those of the method's registry entry) and
    compared with the calibration tiles' (:mod:`napari_im2im_uq.calibration.drift`). Planes of
    a real stack differ from one another, so the plane is the unit of exchangeability: the
    whole volume is tested by a permutation test over planes (its planes against random sets
    of as many planes among the calibration's and its own; tiles against tiles, Mann-Whitney
    and Holm, when the planes are too few or the record keeps no tile positions), at
    family-wise level ``level``. The map tests each region against the calibration's regions
    cut the same way (conformal p-values; a block is ranked among the blocks of the calibration
    planes and of its own plane, each scored against the other planes) and marks them by
    Benjamini-Hochberg at ``level``: when nothing drifts, the chance of any marked region is
    at most ``level``. The verdict says which test and map were used.

    Parameters
    ----------
    record : dict, path-like or layer
        A calibration record made by this version (it holds a ``drift_summary``).
    outputs : dict of str to layer or array
        New outputs of the same model (:func:`model_outputs`), as for :func:`apply_record`.
    image : layer or array, optional
        The model's input of these outputs; compared too when the record holds input
        statistics (calibrated with ``image=``).
    tile_shape : (int, int), optional
        Must be the record's tile shape (the default).
    level : float
        Family-wise false-alarm level, default 0.05.
    regions : "auto", "plane", "whole", int or array of int
        The regions tested besides the whole: each plane, blocks of k x k tiles within planes
        (int), none, or the region of each tile as an array of shape (planes, tile rows, tile
        columns) (or (tile rows, tile columns), the same for every plane). "auto": planes when
        the calibration has planes enough to mark one of the new planes (a plane's p-value
        cannot go below 1 / (calibration planes + 1)), else blocks of 4 x 4 tiles (one image
        too). Blocks are ranked with their planes as the units, so the map keeps its level
        under plane-to-plane differences; a shift of whole planes is marked only as well as
        planes could be.
    sigma : str or array, optional
        The trust-mask score when the record was calibrated with a score given as an array.
    max_tiles : int or None
        On lazy outputs (dask or zarr-backed: a volume that may not fit in memory), the check
        reads a seeded random sample of at most this many whole tiles (default
        :data:`MAX_TILES`), each chunk under them once, and says so in the verdict
        (``sampled``: tiles, of, seed); the map then marks the regions holding a sampled
        tile only. None reads every tile. In-memory outputs are always checked whole.
    seed : int
        Seed of the sample.
    progress : callable, optional
        Called with ``(plane, planes)`` (``(tiles, sampled tiles)`` on lazy outputs).

    Returns
    -------
    verdict : dict
        ``message`` (the verdict in words), ``drifted``, ``p_value`` (family-wise adjusted),
        ``whole_test`` ("planes" or "tiles"), ``region_test``, ``region_units``,
        ``level``, ``auc`` and ``smd`` (effect sizes), ``statistic``, ``whole`` (per
        statistic), ``regions`` (per region: ``p_value``, ``auc``, ``drifted``, ...),
        ``tile_map`` ((planes, tile rows, tile columns) uint8: 1 where the tile's region
        drifts) and ``geometry``.
    layer : tuple
        An Image layer tuple of the tile map, drawn over the outputs (drifting regions
        coloured, the rest clear), carrying the verdict in its metadata.

    Examples
    --------
    >>> from napari_im2im_uq.workflows.calibrate import calibrate
    >>> rng = np.random.default_rng(0)
    >>> truth = rng.random((256, 256)).astype(np.float32)
    >>> f = truth + 0.05 * rng.standard_normal(truth.shape).astype(np.float32)
    >>> out = {"prediction": f, "lower": f - 0.05, "upper": f + 0.05}
    >>> cal = calibrate(out, truth, alpha=0.2, rule="crc", tile_shape=(16, 16))
    >>> verdict, layer = check_drift(cal.record, {k: 2 * v for k, v in out.items()})
    >>> verdict["drifted"], layer[2]
    (True, 'image')
    """
    return run_to_end(
        check_drift_job(record, outputs, image=image, tile_shape=tile_shape, level=level,
                        regions=regions, sigma=sigma, max_tiles=max_tiles, seed=seed),
        callback=steps_callback(progress))
