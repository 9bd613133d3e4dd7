"""Calibration tiles: regions -> whole, non-overlapping tiles; random tile plans; cutting.

The unit of exchangeability is a tile (DESIGN.md section 3): everything here speaks in tiles
of one shape, as (plane, row, column) origins in the pixels of the outputs' grid, or as boxes
``[start..., stop...]`` of pixel edges in world coordinates (what a record keeps).
"""

from __future__ import annotations

import math

import numpy as np

from .. import layers
from .._validation import check_int, check_tile_shape
from ._chunks import TileReader, _chunked

__all__ = ["calibration_tiles", "cut", "cut_many", "spatial", "no_tiles_error", "overlap_mask",
           "plan_tiles", "world_tiles"]


def _region_arrays(regions) -> list[np.ndarray]:
    """Regions given as arrays: a list of (k, 2) or (k, 3) corner arrays of finite numbers."""
    message = ("regions must be a Shapes layer or a list of rectangles, each a (4, 2) or (4, 3) "
               "array of corner coordinates; got {}")
    if isinstance(regions, str | bytes) or not hasattr(regions, "__iter__"):
        raise ValueError(message.format(repr(regions)))
    out = []
    for i, region in enumerate(regions):
        try:
            verts = np.asarray(region, dtype=float)
        except (TypeError, ValueError):
            verts = None
        if (verts is None or verts.ndim != 2 or verts.shape[0] < 2 or verts.shape[1] not in (2, 3)
                or not np.isfinite(verts).all()):
            raise ValueError(message.format(f"region {i} = {region!r}"))
        out.append(verts)
    return out


def _rectangles(regions, ndim: int, scale, translate) -> list[tuple]:
    """``[(plane or None, r0, r1, c0, c1)]`` inclusive-exclusive pixel boxes in data coords."""
    if regions is None:
        return []
    if layers.is_layer(regions):
        shapes = list(regions.data)
        types = list(getattr(regions, "shape_type", ["rectangle"] * len(shapes)))
        r_scale = np.asarray(regions.scale, float)
        r_translate = np.asarray(regions.translate, float)
    else:
        shapes = _region_arrays(regions)
        types = ["rectangle"] * len(shapes)
        r_scale = r_translate = None
    boxes = []
    for i, (verts, kind) in enumerate(zip(shapes, types)):
        verts = np.asarray(verts, dtype=float)
        if kind != "rectangle":
            raise ValueError(
                f"regions must hold rectangles; shape {i} is a {kind}. Draw rectangles where "
                "ground truth exists"
            )
        if r_scale is not None:  # layer data coords -> world -> the image's data coords
            verts = verts * r_scale[-verts.shape[1]:] + r_translate[-verts.shape[1]:]
        k = verts.shape[1]
        verts = (verts - translate[-k:]) / scale[-k:]
        plane = None
        if k == 3 and ndim == 3:
            plane = int(round(float(verts[:, 0].mean())))
        elif k not in (2, 3):
            raise ValueError(f"regions must be 2-D or 3-D rectangles; shape {i} has {k} axes")
        rows, cols = verts[:, -2], verts[:, -1]
        # pixels whose centre lies inside the rectangle
        r0, r1 = math.ceil(rows.min() - 1e-9), math.floor(rows.max() + 1e-9) + 1
        c0, c1 = math.ceil(cols.min() - 1e-9), math.floor(cols.max() + 1e-9) + 1
        boxes.append((plane, r0, r1, c0, c1))
    return boxes


def calibration_tiles(shape, tile_shape, *, regions=None, scale=None, translate=None):
    """Non-overlapping calibration tiles inside the labeled regions (or the whole image).

    Each rectangle is cut into a grid of whole tiles from its corner (partial tiles at its
    far edges are left out); tiles that overlap a tile already taken from an earlier rectangle
    are skipped, so no pixel is counted twice.

    Parameters
    ----------
    shape : tuple of int
        (rows, columns) or (planes, rows, columns) of the image the tiles are cut from.
    tile_shape : (int, int)
    regions : napari Shapes layer or list of (4, 2) / (4, 3) arrays, optional
        Rectangles where ground truth exists, in world coordinates for a layer (converted
        with ``scale`` and ``translate`` of the image) and in the image's pixel coordinates
        for arrays. A 2-D rectangle on a 3-D image applies to every plane; a 3-D one to its
        plane. A pixel is inside when its centre is.
    scale, translate : sequence of float, optional
        The image layer's geometry (default: pixel coordinates).

    Returns
    -------
    ndarray of int, shape (n, 3)
        (plane, row, column) of each tile's first pixel (plane 0 for a 2-D image).

    Examples
    --------
    >>> calibration_tiles((100, 130), (32, 32)).shape
    (12, 3)
    >>> rect = np.array([[0, 0], [0, 70], [40, 70], [40, 0]], float)
    >>> calibration_tiles((100, 130), (16, 16), regions=[rect]).tolist()
    [[0, 0, 0], [0, 0, 16], [0, 0, 32], [0, 0, 48], [0, 16, 0], [0, 16, 16], [0, 16, 32], [0, 16, 48]]
    """
    th, tw = check_tile_shape(tile_shape)
    message = ("shape must be (rows, columns) or (planes, rows, columns) of positive integers; "
               f"got {shape!r}")
    if isinstance(shape, str | bytes) or not hasattr(shape, "__len__") or len(shape) not in (2, 3):
        raise ValueError(message)
    try:
        shape = tuple(check_int(v, "shape") for v in shape)
    except ValueError:
        raise ValueError(message) from None
    planes = shape[0] if len(shape) == 3 else 1
    rows, cols = shape[-2:]
    ndim = len(shape)
    scale = np.ones(ndim) if scale is None else np.asarray(scale, float)[-ndim:]
    translate = np.zeros(ndim) if translate is None else np.asarray(translate, float)[-ndim:]
    boxes = _rectangles(regions, ndim, scale, translate)
    if regions is None:
        boxes = [(None, 0, rows, 0, cols)]
    taken: dict[int, list] = {}
    out = []
    for plane, r0, r1, c0, c1 in boxes:
        r0, c0 = max(r0, 0), max(c0, 0)
        r1, c1 = min(r1, rows), min(c1, cols)
        for z in range(planes) if plane is None else [plane]:
            if not 0 <= z < planes:
                continue
            for r in range(r0, r1 - th + 1, th):
                for c in range(c0, c1 - tw + 1, tw):
                    if any(r < rr + th and rr < r + th and c < cc + tw and cc < c + tw
                           for rr, cc in taken.get(z, ())):
                        continue
                    taken.setdefault(z, []).append((r, c))
                    out.append((z, r, c))
    return np.array(out, dtype=np.int64).reshape(-1, 3)


def plan_tiles(image, *, tile_shape=(64, 64), n_tiles=20, seed=0, name=None):
    """Lay out a random, non-overlapping plan of calibration tiles as a Shapes layer tuple.

    Tiles are drawn uniformly without replacement from the grid of whole tiles of the image
    (every plane of a volume), so the tiles where ground truth is then acquired are an
    exchangeable sample of the grid's tiles: the population a calibration on them speaks
    about, by design, instead of by assumption about a hand-picked region.

    Parameters
    ----------
    image : layer or array-like
        The image on whose grid the tiles lie (the prediction, i.e. the ground truth's grid).
    tile_shape : (int, int)
    n_tiles : int
        Number of tiles (at most the number of grid tiles).
    seed : int
    name : str, optional

    Returns
    -------
    tuple
        ``(rectangles, kwargs, "shapes")`` in world coordinates of ``image``, one rectangle
        per tile whose edges follow its pixels' edges.

    Examples
    --------
    >>> data, kwargs, kind = plan_tiles(np.zeros((128, 128)), tile_shape=(32, 32), n_tiles=3)
    >>> len(data), data[0].shape, kind
    (3, (4, 2), 'shapes')
    """
    th, tw = check_tile_shape(tile_shape)
    data = layers.data_of(image, "image")
    shape = tuple(data.shape[-3:]) if data.ndim >= 3 else tuple(data.shape)
    ndim = len(shape)
    grid = calibration_tiles(shape, (th, tw))
    n_tiles = check_int(n_tiles, "n_tiles")
    seed = check_int(seed, "seed", minimum=0)
    if n_tiles > len(grid):
        raise ValueError(
            f"n_tiles must be at most the {len(grid)} whole tiles of {th} x {tw} in an image of "
            f"shape {shape}; got {n_tiles}"
        )
    pick = grid[np.sort(np.random.default_rng(seed).choice(len(grid), n_tiles, replace=False))]
    scale, translate = layers.geometry(image, ndim)
    rects = []
    for z, r, c in pick:
        rr = np.array([r, r, r + th, r + th], float) - 0.5
        cc = np.array([c, c + tw, c + tw, c], float) - 0.5
        verts = np.stack([rr, cc], axis=1)
        if ndim == 3:
            verts = np.concatenate([np.full((4, 1), float(z)), verts], axis=1)
        rects.append(verts * scale + translate)
    kwargs = {
        "name": name or f"calibration tile plan ({th} x {tw})",
        "shape_type": "rectangle",
        "edge_color": "yellow",
        "face_color": [0.0, 0.0, 0.0, 0.0],
        "edge_width": max(1.0, float(scale[-1]) * th / 32),
        "metadata": {layers.META_KEY: {"role": "tile plan", "tile_shape": [th, tw], "seed": seed,
                                "n_tiles": int(n_tiles), "grid_tiles": len(grid)}},
    }
    return rects, kwargs, "shapes"


def spatial(arr, *, class_axis: bool = False):
    """View an output as (planes, rows, columns), or (classes, planes, rows, columns)."""
    if class_axis:
        return arr if arr.ndim == 4 else arr[:, None]
    return arr if arr.ndim == 3 else arr[None]


def cut(arr, origins, tile_shape, *, class_axis: bool = False) -> np.ndarray:
    """Cut the tiles at ``origins`` ((plane, row, column) rows) out of a 2-D or 3-D array.

    With ``class_axis`` the array has a leading class axis, which each tile keeps:
    (n, classes, rows, columns); else (n, rows, columns). Only the tiles are read, and a
    chunked (dask or zarr) array is read once per chunk, however many tiles it holds
    (:func:`cut_many`).

    Examples
    --------
    >>> cut(np.arange(64.0).reshape(8, 8), np.array([[0, 0, 0], [0, 4, 4]]), (2, 2)).tolist()
    [[[0.0, 1.0], [8.0, 9.0]], [[36.0, 37.0], [44.0, 45.0]]]
    """
    return cut_many({"a": (arr, class_axis)}, origins, tile_shape)["a"]


def cut_many(arrays: dict, origins, tile_shape) -> dict:
    """Cut the same tiles out of several arrays; each chunk of a lazy one is read once.

    Parameters
    ----------
    arrays : dict of str to (array, bool)
        Each array (numpy, dask or zarr; 2-D or 3-D, with a leading class axis when the bool
        is True) by name.
    origins : ndarray of int, shape (n, 3)
        (plane, row, column) of each tile's first pixel.
    tile_shape : (int, int)

    Returns
    -------
    dict of str to ndarray
        The stacked tiles of each array, as :func:`cut` gives them. The tiles of every dask
        or zarr array are read together (:class:`~._chunks.TileReader`): only the chunks under
        the tiles are computed, and a chunk shared by many tiles, or by several of the arrays
        (outputs of one lazy graph), is read once.

    Examples
    --------
    >>> a = np.arange(32.0).reshape(2, 4, 4)
    >>> out = cut_many({"x": (a, False), "y": (a + 1, False)}, np.array([[1, 2, 2]]), (2, 2))
    >>> out["x"].tolist(), out["y"].shape
    ([[[26.0, 27.0], [30.0, 31.0]]], (1, 2, 2))
    """
    th, tw = tile_shape
    origins = np.asarray(origins, dtype=np.int64).reshape(-1, 3)
    out, lazy = {}, {}
    for name, (arr, class_axis) in arrays.items():
        chunked = _chunked(arr)
        a = spatial(arr if chunked is None else chunked, class_axis=class_axis)
        if not len(origins):
            out[name] = np.empty((0,) + tuple(a.shape[:1] if class_axis else ()) + (th, tw),
                                 a.dtype)
        elif chunked is not None:
            lazy[name] = (chunked, class_axis)
        elif class_axis:
            out[name] = np.stack([np.asarray(a[:, z, r:r + th, c:c + tw]) for z, r, c in origins])
        else:
            out[name] = np.stack([np.asarray(a[z, r:r + th, c:c + tw]) for z, r, c in origins])
    if lazy and len(origins):
        # Only the chunks under the tiles are computed (slicing a huge dask array and calling
        # dask.compute would optimise its whole graph first), in the tiles' order on disk.
        order = np.lexsort(origins.T[::-1])
        got = TileReader(lazy, origins[order], tile_shape).take(np.arange(len(order)))
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        out.update({name: tiles[back] for name, tiles in got.items()})
    return {name: out[name] for name in arrays}


def world_tiles(origins, th, tw, scale, translate, ndim) -> list[list[float]]:
    """Return each tile as ``[start..., stop...]`` world coordinates of its pixel edges."""
    out = []
    for z, r, c in origins:  # pixel edges; a plane spans [z - 0.5, z + 0.5]
        lo = np.array([z - 0.5, r - 0.5, c - 0.5])[-ndim:] * scale + translate
        hi = np.array([z + 0.5, r + th - 0.5, c + tw - 0.5])[-ndim:] * scale + translate
        out.append([float(v) for v in np.r_[lo, hi]])
    return out


def overlap_mask(tiles, others) -> np.ndarray:
    """Return which boxes of ``tiles`` overlap a box of ``others`` ([start..., stop...])."""
    a = np.asarray(tiles, float).reshape(len(tiles), -1)
    if not len(others) or not len(a):
        return np.zeros(len(a), bool)
    b = np.asarray(others, float)
    if a.shape[1] != b.shape[1]:
        return np.zeros(len(a), bool)
    k = a.shape[1] // 2
    eps = 1e-9
    hit = np.ones((len(a), len(b)), bool)
    for j in range(k):
        hit &= (a[:, None, j] < b[None, :, k + j] - eps) & (b[None, :, j] < a[:, None, k + j] - eps)
    return hit.any(axis=1)


def no_tiles_error(th, tw, grid_shape, unannotated=False) -> ValueError:
    """Return the error raised when no whole tile fits inside the labeled regions."""
    return ValueError(
        f"no whole {th} x {tw} tile fits inside the labeled regions"
        + (" (every tile is unannotated: label 0)" if unannotated else "")
        + f"; make the regions larger than the tile or the tile smaller (image {grid_shape})"
    )

