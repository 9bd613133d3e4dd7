"""Lazy tiled prediction: one dask graph whose blocks run the model on halo-extended tiles."""

from __future__ import annotations

import math
import os
import sys
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

from .._validation import check_int, check_tile_shape
from .._warnings import Im2ImUQWarning
from . import _worker
from ._axes import CANONICAL_AXES, check_axes, output_axes
from ._device import check_device, check_precision, resolve
from ._graph import BlockLayer, constant, piece_tasks, rechunk, task, window_pieces
from ._graph import ref as ref_to
from ._tiles import balanced, tile_side

__all__ = ["NonFinite", "Plan", "make_plan", "predict", "watch_nonfinite"]

# -- NaN and infinity in the input ----------------------------------------------------------
# One NaN input pixel makes the prediction NaN over its receptive field, so non-finite input
# is reported before (in-memory input) or while (lazy input, in the task that reads each block)
# the model runs: never silently.

_CURRENT = threading.local()  # the tally of the job planning in this thread
_WATCHED: dict[str, NonFinite] = {}  # graph name -> the tally its blocks add to
_LOCK = threading.Lock()


class NonFinite:
    """Tally of NaN and infinite input values per plane: ``{plane: [nan, inf, r0, r1, c0, c1]}``.

    Rows and columns are the bounding box of the non-finite pixels of the plane, inclusive.
    """

    def __init__(self, has_z: bool = True, halo: int = 0):
        self.planes: dict[int, list[int]] = {}
        self.has_z, self.halo = has_z, halo

    def add(self, found: dict) -> None:
        with _LOCK:
            for z, (nan, inf, r0, r1, c0, c1) in found.items():
                old = self.planes.get(z)
                self.planes[z] = [nan, inf, r0, r1, c0, c1] if old is None else [
                    old[0] + nan, old[1] + inf, min(old[2], r0), max(old[3], r1),
                    min(old[4], c0), max(old[5], c1)]

    def message(self, name: str = "image") -> str | None:
        """Say how many values, and where; None when every value was finite."""
        if not self.planes:
            return None
        nan = sum(v[0] for v in self.planes.values())
        inf = sum(v[1] for v in self.planes.values())
        def box(v):
            return f"rows {v[2]}-{v[3]}, columns {v[4]}-{v[5]}"
        if self.has_z:
            listed = sorted(self.planes.items())
            where = "in plane(s) " + "; ".join(
                f"{z} ({v[0] + v[1]}, {box(v)})" for z, v in listed[:10])
            if len(listed) > 10:
                where += f"; and {len(listed) - 10} more plane(s)"
        else:
            where = f"at {box(next(iter(self.planes.values())))}"
        return (
            f"{name} has {nan} NaN and {inf} infinite value(s) {where}: the prediction is not "
            f"finite within the receptive field ({self.halo} pixels) around each; replace or mask "
            "them before predicting"
        )

    def warn(self, name: str = "image", stacklevel: int = 2) -> None:
        message = self.message(name)
        if message:
            warnings.warn(message, Im2ImUQWarning, stacklevel=stacklevel + 1)


@contextmanager
def watch_nonfinite():
    """Collect the non-finite input values met by the blocks of the plans made inside.

    A job wraps planning and running in it and warns once at the end (:meth:`NonFinite.warn`);
    blocks of plans made outside a watch, or run in another process, warn per block.

    Examples
    --------
    >>> with watch_nonfinite() as tally:
    ...     pass
    >>> tally.message() is None
    True
    """
    tally = NonFinite()
    previous = getattr(_CURRENT, "tally", None)
    _CURRENT.tally = tally
    names: list[str] = []
    tally._names = names
    try:
        yield tally
    finally:
        if getattr(_CURRENT, "tally", None) is tally:
            _CURRENT.tally = previous
        with _LOCK:
            for name in names:
                if _WATCHED.get(name) is tally:
                    del _WATCHED[name]


def _count_nonfinite(block: np.ndarray, z0: int, y0: int, x0: int) -> dict:
    """``{plane: [nan, inf, r0, r1, c0, c1]}`` of a (Z, C, Y, X) block at ``(z0, y0, x0)``."""
    if np.isfinite(np.sum(block, dtype=np.float64)):  # one pass, no temporary array
        return {}
    found = {}
    for k in range(block.shape[0]):
        bad = ~np.isfinite(block[k])
        total = int(bad.sum())
        if not total:
            continue
        nan = int(np.isnan(block[k]).sum())
        rows, cols = np.flatnonzero(bad.any(axis=(0, 2))), np.flatnonzero(bad.any(axis=(0, 1)))
        found[z0 + k] = [nan, total - nan, y0 + int(rows[0]), y0 + int(rows[-1]),
                         x0 + int(cols[0]), x0 + int(cols[-1])]
    return found


def _checked_block(model, pieces, pred_pieces, own, *, run, name, origin, channels, has_z, halo):
    """Count the non-finite given values of a block's own pixels, then run the block."""
    found = _count_nonfinite(own if channels is None else own[:, channels], *origin)
    if found:
        with _LOCK:
            tally = _WATCHED.get(name)
        if tally is not None:
            tally.add(found)
        else:  # no job watching here (another process, or a bare lazy predict): say it now
            block = NonFinite(has_z, halo)
            block.add(found)
            warn = warnings.warn
            if "distributed" in sys.modules:  # on a worker, forwarded to the clients too
                from distributed import warn
            warn(block.message("image"), Im2ImUQWarning, stacklevel=2)
    return run(model, pieces, pred_pieces)


def default_tile_side(model, device: str = "cpu") -> int:
    """Return the default tile side of a loaded model (see :func:`._tiles.tile_side`)."""
    return tile_side(model.spec.get("kwargs", {}), model.scale_factor, model.halo, model.divisor,
                     device)


def _output_view(block, *, start, stop, probabilities, has_z):
    """One output of a stacked block (a view), in the documented layout."""
    while isinstance(block, list):  # axes left out of the output come as lists of one chunk
        block = block[0]
    part = block[:, start:stop]
    if probabilities:
        return part.transpose(1, 0, 2, 3) if has_z else part[0]
    return part[:, 0] if has_z else part[0, 0]


@dataclass(frozen=True, eq=False)
class Plan:
    """Everything :func:`predict` decided, shared with :func:`predict_to_zarr`."""

    model: object
    ref: _worker.ModelRef
    axes: str  # of the model's input (C added when derived channels were)
    given_axes: str  # of the image the caller gave
    source: da.Array  # canonical (Z, C, Y, X) given channels, as given
    x: da.Array  # canonical (Z, C, Y, X) input with derived channels, chunked by block
    stacked: da.Array  # (Z, channels, Y * s, X * s) outputs
    layout: list  # [(name, channels)]
    halo: int
    tile_shape: tuple[int, int]
    batch_size: int
    block_shape: tuple[int, int, int]  # planes, rows, columns (input pixels)
    device: str
    precision: str
    image_shape: tuple[int, ...]
    units: dict | None = None  # the resolved preprocessing (models._units.resolve)
    uncertainty: object = None  # inference._uq.Uncertainty, or None
    prediction: da.Array | None = None  # mask models: (Z, 1, Y * s, X * s), chunked by block

    @property
    def scale_factor(self) -> int:
        return int(self.model.scale_factor)

    @property
    def has_z(self) -> bool:
        return "Z" in self.axes

    def outputs(self) -> dict[str, da.Array]:
        """Cheap views of :attr:`stacked`, one per output, in the documented layout."""
        result = {}
        ch = 0
        for name, n in self.layout:
            probabilities = name == "probabilities"
            out = ("c" if probabilities else "") + ("z" if self.has_z else "") + "yx"
            result[name] = da.blockwise(
                _output_view, out, self.stacked, "zcyx", dtype=np.float32,
                meta=np.empty((0,) * len(out), dtype=np.float32),
                adjust_chunks={"c": (n,)} if probabilities else None,
                start=ch, stop=ch + n, probabilities=probabilities, has_z=self.has_z,
            )
            ch += n
        return result


def _optional_int(value, name: str, *, minimum: int, words: str):
    """``None``, or ``value`` as an int >= ``minimum`` (:func:`check_int`), said as ``words``."""
    if value is None:
        return None
    try:
        return check_int(value, name, minimum=minimum)
    except ValueError:
        raise ValueError(f"{name} must be {words} or None; got {value!r}") from None


def _resolve_model(model):
    """Return a loaded model: an Im2ImModel as is, a name or folder from the model cache."""
    from ..models import Im2ImModel, load_cached

    if isinstance(model, Im2ImModel):
        return model
    if isinstance(model, str | os.PathLike):
        return load_cached(model)
    raise ValueError(
        "model must be an Im2ImModel, the name of a model in the zoo or a bundle folder; got "
        f"{type(model).__name__}"
    )


def _as_dask(image, name: str) -> da.Array:
    if isinstance(image, da.Array):
        arr = image
    elif isinstance(image, np.ndarray):
        arr = da.from_array(image, chunks=image.shape or (), name=False)
    elif hasattr(image, "shape") and hasattr(image, "dtype") and hasattr(image, "__getitem__"):
        chunks = getattr(image, "chunks", None)  # a zarr array: a block reads its own chunks
        ok = isinstance(chunks, tuple) and len(chunks) == len(image.shape) and all(
            isinstance(c, int) and c > 0 for c in chunks)
        arr = da.from_array(image, chunks=chunks if ok else "auto")
    else:
        try:
            as_np = np.asarray(image)
        except Exception as err:  # noqa: BLE001 - say what was expected
            raise ValueError(
                f"{name} must be an array (numpy, dask, zarr or array-like); got {type(image).__name__}"
            ) from err
        arr = da.from_array(as_np, chunks=as_np.shape or (), name=False)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a real numeric array; got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty; got shape {arr.shape}")
    if any(math.isnan(s) for s in arr.shape):
        raise ValueError(f"{name} must have a known shape; got {arr.shape}")
    return arr


def _units(spec, image, source, given_axes) -> dict:
    """Resolve the model's preprocessing: exact statistics in memory, else from a subsample."""
    from ..models._units import resolve

    return resolve(spec, source if image is None else _canonical(image, given_axes),
                   dtype=source.dtype)


def _expand(block, axis):
    return np.expand_dims(block, axis)


def _canonical(arr: da.Array, axes: str) -> da.Array:
    """Transpose and expand ``arr`` to (Z, C, Y, X) (a rule for dask arrays, not per chunk)."""
    present = [a for a in CANONICAL_AXES if a in axes]
    arr = arr.transpose([axes.index(a) for a in present])
    missing = tuple(i for i, a in enumerate(CANONICAL_AXES) if a not in axes)
    if not missing:
        return arr
    if isinstance(arr, da.Array):
        return arr.map_blocks(_expand, missing, new_axis=list(missing), dtype=arr.dtype,
                              meta=np.empty((0,) * len(CANONICAL_AXES), dtype=arr.dtype))
    return np.expand_dims(arr, missing)


def _default_tile(model, rows: int, cols: int, tile_shape, device: str, div=None):
    """Return the tile run at once: the caller's, or the model's default spread evenly.

    Multiples of the divisor (rounded up), and no larger than the image (rounded up). The
    default side is split into tiles of about equal length along each axis
    (:func:`._tiles.balanced`): an image of 1,024 rows with a default of 526 runs two tiles of
    512, not 526 and a thin 498 with the same halo.
    """
    div = div or model.divisor
    if tile_shape is None:
        side = default_tile_side(model, device)
        return (balanced(rows, side, div), balanced(cols, side, div))
    tile = check_tile_shape(tile_shape)
    up = lambda v: -(-v // div) * div  # noqa: E731
    return (min(up(tile[0]), up(rows)), min(up(tile[1]), up(cols)))


def _block_shape(planes: int, rows: int, cols: int, tile, batch: int):
    """Planes, rows and columns of a dask block: ``batch`` tiles, planes first."""
    n_r, n_c = -(-rows // tile[0]), -(-cols // tile[1])
    pz = min(batch, planes)
    per_plane = max(1, batch // pz)
    k_c = min(per_plane, n_c)
    k_r = min(max(1, per_plane // k_c), n_r)
    return pz, tile[0] * k_r, tile[1] * k_c


def _block_graph(name, x, pred, *, scale, halo, ref, run, n_channels, check):
    """Return the stacked outputs: a dask array whose block tasks are built when run.

    Block ``(iz, 0, iy, ix)`` runs ``run`` on its window of ``x`` (and of ``pred``, the
    prediction a mask model rates, on the output grid): the chunks around it, parts of them
    sliced by helper tasks, mirrored at the image's borders by the task
    (:func:`._graph.window_pieces`). ``check``: count the block's non-finite input first
    (:func:`_checked_block`). Nothing is built per block here (:class:`._graph.BlockLayer`).
    """
    model_key = f"im2im-model-{ref.token[:24]}"
    bounds = [np.cumsum((0, *c)) for c in x.chunks]
    pred_bounds = None if pred is None else [np.cumsum((0, *c)) for c in pred.chunks]

    def build(index):
        iz, _, iy, ix = index
        y0, y1 = int(bounds[2][iy]), int(bounds[2][iy + 1])
        x0, x1 = int(bounds[3][ix]), int(bounds[3][ix + 1])
        tasks: dict = {}
        pieces, pads = window_pieces(x.name, x.chunks, iz, y0, y1, x0, x1, halo, 1, bounds)
        refs = piece_tasks(pieces, f"{name}-in", index, tasks)
        pred_refs = None
        if pred is not None:
            more, _ = window_pieces(pred.name, pred.chunks, iz, y0, y1, x0, x1, halo, scale,
                                   pred_bounds)
            pred_refs = piece_tasks(more, f"{name}-pred", index, tasks)
        key = (name, *index)
        func = partial(run, pads=pads)
        if check is None:
            tasks[key] = task(key, func, ref_to(model_key), refs, pred_refs)
        else:  # the block's own chunk is one of its pieces: no extra read
            func = partial(_checked_block, run=func, name=name,
                           origin=(int(bounds[0][iz]), y0, x0), **check)
            tasks[key] = task(key, func, ref_to(model_key), refs, pred_refs,
                              ref_to((x.name, iz, 0, iy, ix)))
        return tasks

    grid = (len(x.chunks[0]), 1, len(x.chunks[2]), len(x.chunks[3]))
    layer = BlockLayer(name, grid, build, helpers=(f"{name}-in", f"{name}-pred"))
    graph = HighLevelGraph.from_collections(name, layer,
                                            dependencies=[x] if pred is None else [x, pred])
    graph = HighLevelGraph(
        {**graph.layers, model_key: MaterializedLayer({model_key: constant(model_key, ref)})},
        {**graph.dependencies, model_key: set(), name: graph.dependencies[name] | {model_key}},
    )
    chunks = (
        x.chunks[0],
        (n_channels,),
        tuple(c * scale for c in x.chunks[2]),
        tuple(c * scale for c in x.chunks[3]),
    )
    return da.Array(graph, name, chunks, meta=np.empty((0, 0, 0, 0), dtype=np.float32))


def make_plan(
    model,
    image,
    *,
    axes,
    tile_shape=None,
    halo=None,
    batch_size=None,
    device="auto",
    precision="auto",
    prediction=None,
    check_here=True,
    uncertainty=None,
) -> Plan:
    """Validate the arguments of :func:`predict` and build its graph."""
    from ..models import add_derived_channels, given_channels
    from ..models._units import apply as apply_units

    device = check_device(device)
    precision = check_precision(precision)
    model = _resolve_model(model)
    arr = _as_dask(image, "image")
    n_in = len(model.in_channels)
    spec = model.spec
    given_axes = check_axes(axes, shape=arr.shape, n_channels=len(given_channels(spec)))
    source = _canonical(arr, given_axes)  # what the caller gave, for run descriptions
    in_memory = isinstance(image, np.ndarray) and not isinstance(image, np.memmap)
    kind, units = arr.dtype.kind, _units(spec, image if in_memory else None, source, given_axes)
    if units["ops"]:  # raw -> the model's data units, in the task that reads each block
        c_axis = given_axes.index("C") if "C" in given_axes else None
        arr = arr if c_axis is None else rechunk(arr, {c_axis: -1})
        arr = arr.map_blocks(partial(apply_units, ops=units["ops"], channel_axis=c_axis),
                             dtype=np.float32)
    full, axes = add_derived_channels(spec, arr, given_axes)
    from ._uq import prepare

    def member(other):  # an ensemble member: loaded, and the one that runs here
        other = _resolve_model(other)
        member_ref = _worker.make_ref(other)
        if check_here or device != "auto":
            _worker.register(member_ref, other, device=device, precision=precision)
        return other, member_ref

    uq = prepare(uncertainty, model, member=member)
    need, div = (int(model.halo), model.divisor) if uq is None else (uq.halo, uq.divisor)
    halo = _optional_int(halo, "halo", minimum=0, words="a non-negative integer")
    if halo is None:
        halo = need
    if halo > need:  # keep the pooling grid where the untiled run has it
        halo = need + -(-(halo - need) // div) * div
    if halo < need:
        warnings.warn(
            f"halo={halo} is smaller than the model's receptive field ({need} pixels): "
            "tiled predictions will differ from whole-image ones near tile borders",
            Im2ImUQWarning,
            stacklevel=3,
        )
    if not model.local:
        warnings.warn(
            f"model {model.name!r} normalises with whole-tile statistics (group or instance "
            "norm), so tiled predictions differ slightly from whole-image ones",
            Im2ImUQWarning,
            stacklevel=3,
        )
    batch_size = _optional_int(batch_size, "batch_size", minimum=1, words="a positive integer")
    x = _canonical(full, axes)
    # Non-finite input: counted now for an array in memory (before anything runs), else by
    # each block's task as it reads the block (no extra pass over a large volume).
    has_z, check_blocks, channels = "Z" in given_axes, False, None
    if kind == "f" and in_memory:  # a memory-mapped file is read block by block
        tally = NonFinite(has_z, halo)
        tally.add(_count_nonfinite(_canonical(image, given_axes), 0, 0, 0))
        tally.warn("image", stacklevel=3)
    elif kind == "f":
        check_blocks = True
        names, given = spec["input_channels"], given_channels(spec)
        if len(given) != len(names):  # derived channels are not the user's input
            channels = [names.index(c) for c in given]
    planes, _, rows, cols = x.shape
    # Resolve here when the work runs here (the usual case): a clear error now, not in a task.
    local_device = None
    if check_here or device != "auto":
        local_device, dtype = resolve(device, precision)
    tile = _default_tile(model, rows, cols, tile_shape, local_device or "cpu", div)
    if batch_size is None:
        batch_size = 1 if (local_device or "cpu") == "cpu" else 4
    block = _block_shape(planes, rows, cols, tile, batch_size)
    x = rechunk(x, (block[0], n_in, block[1], block[2]))

    s = model.scale_factor
    pred = None
    if model.heuristic == "mask":
        if prediction is None:
            raise ValueError(
                "prediction is required for a mask model: the image-to-image prediction on "
                f"the output grid (axes {output_axes(axes, 'prediction')!r}); got None"
            )
        parr = _as_dask(prediction, "prediction")
        present = "".join(a for a in CANONICAL_AXES if a in axes and a != "C")
        expected = tuple(arr.shape[given_axes.index(a)] * (s if a in "YX" else 1) for a in present)
        if tuple(parr.shape) != expected:
            raise ValueError(
                f"prediction must have shape {expected} (axes {present!r} on the output "
                f"grid); got {tuple(parr.shape)}"
            )
        pred = _canonical(parr, present)
        pred = rechunk(pred, (block[0], 1, block[1] * s, block[2] * s))
    elif prediction is not None:
        raise ValueError(
            f"prediction is only accepted by mask models; this model's heuristic is {model.heuristic!r}"
        )

    # The model: the one cache's, shipped by bundle path (or, built in memory, by its bytes)
    # to other processes; here the same object runs when it is on the device already, a copy
    # moved there otherwise (the caller's object is never moved or changed).
    ref = _worker.make_ref(model)
    if local_device is not None:
        _worker.register(ref, model, device=device, precision=precision)

    layout = _worker.output_channels(model, uq)
    n_channels = sum(n for _, n in layout)
    token = tokenize(
        x.name,
        None if pred is None else pred.name,
        ref.token,
        halo,
        tile,
        block,
        batch_size,
        device,
        precision,
        None if uq is None else uq.describe(),
    )
    name = f"im2im-predict-{token}"
    watch = getattr(_CURRENT, "tally", None)
    if check_blocks and watch is not None:
        watch.has_z, watch.halo = has_z, halo
        with _LOCK:
            _WATCHED[name] = watch
        watch._names.append(name)
    func = partial(
        _worker.run_block,
        halo=halo,
        tile=tile,
        batch=batch_size,
        device=device,
        precision=precision,
        n_channels=n_channels,
        uq=uq,
    )
    check = {"channels": channels, "has_z": has_z, "halo": halo} if check_blocks else None
    stacked = _block_graph(name, x, pred, scale=s, halo=halo, ref=ref, run=func,
                           n_channels=n_channels, check=check)
    return Plan(
        model=model,
        ref=ref,
        axes=axes,
        given_axes=given_axes,
        source=source,
        x=x,
        stacked=stacked,
        layout=layout,
        halo=halo,
        tile_shape=tile,
        batch_size=batch_size,
        block_shape=block,
        device=device,
        precision=precision,
        image_shape=tuple(int(v) for v in arr.shape),
        units=units,
        uncertainty=uq,
        prediction=pred,
    )


def predict(
    model,
    image,
    *,
    axes: str,
    tile_shape: tuple[int, int] | None = None,
    halo: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    prediction=None,
    uncertainty=None,
) -> dict[str, da.Array]:
    """Predict lazily, tile by tile, with the same result as running on the whole image.

    The image is cut into blocks of ``batch_size`` tiles (planes first, then tiles along rows
    and columns). Each block is extended by ``halo`` input pixels of its neighbours, the tiles
    run through the model in one batch and the halo is cropped from the outputs. At the image's
    borders the missing halo is mirrored (``np.pad`` mode "symmetric", which is dask's
    ``boundary="reflect"``), as :meth:`Im2ImModel.__call__` does on the whole image, and tile
    origins are multiples of the model's ``divisor``; so for a model whose ``local`` is True,
    ``predict(...)[name]`` equals ``model(image)[name]`` up to float32 rounding, for any
    image and tile shape.

    All outputs are views of one dask array that stacks them; computing several outputs
    together (``dask.compute(out["prediction"], out["lower"])`` or :func:`predict_to_zarr`)
    runs the model once per tile. Computing them one after the other runs it again.

    Parameters
    ----------
    model : Im2ImModel, str or path-like
        A loaded model, the name of a model in the zoo, or a bundle folder.
    image : array-like
        numpy, dask or zarr array (or anything with ``shape``, ``dtype`` and slicing) in raw
        data units. It is read, never modified.
    axes : str
        One letter per dimension of ``image`` from Z (planes), C (channels), Y (rows),
        X (columns), each at most once, with Y and X present, e.g. "YX", "ZYX", "CYX",
        "ZCYX". C is required for models with several input channels and must then have the
        model's channel count.
    tile_shape : (int, int), optional
        Rows and columns of input pixels per tile, without the halo. Rounded up to multiples
        of the model's ``divisor`` and clipped to the image. Default: the largest square tile
        whose forward pass (with its halo) is estimated to need at most 128 MiB on the CPU
        or 1 GiB on a GPU in float32 (e.g. 528 and 1576 for a depth-2 U-Net with 8 base
        channels), at least 128 and four halos, at most 4096.
    halo : int, optional
        Input pixels added around each tile (default: the model's receptive-field radius,
        ``model.halo``). A larger halo is rounded up to ``model.halo`` plus a multiple of
        ``model.divisor`` (so the down-sampling grid stays where the untiled run has it); a
        smaller one warns: results then differ near tile borders.
    batch_size : int, optional
        Tiles per forward pass, and per dask block (default: 1 on the CPU, 4 on a GPU). A
        batch that runs out of GPU memory is retried with fewer tiles, then smaller tiles
        (an :class:`~napari_im2im_uq.Im2ImUQWarning` says so); the smaller sizes are kept for
        the rest of the run in that process.
    device : {"auto", "cpu", "cuda", "mps"}
        "auto" picks CUDA, then MPS, then the CPU, in each process that runs blocks.
        "cuda:N" picks a GPU.
    precision : {"auto", "float32", "float16", "bfloat16"}
        Precision of the network ("auto": float16 on CUDA, float32 elsewhere). float16 is
        refused on the CPU; bfloat16 is allowed there. Normalisation and read-out always run
        in float32, and outputs are float32.
    prediction : array-like, optional
        Mask models only (and required there): the image-to-image prediction, with the
        input's Z, Y, X axes in canonical order on the output grid.
    uncertainty : str or dict, optional
        Uncertainty of a point prediction, derived tile by tile inside each block: "tta"
        (the 8 rotations and flips, or ``{"kind": "tta", "transforms": [...]}``),
        "mc_dropout" (``samples`` passes with dropout on; refused without dropout layers),
        ``{"kind": "ensemble", "models": [...]}`` (the model and these, averaged) or
        "constant" (``lower/upper = prediction -/+ 1``). Outputs are then ``prediction``
        (the samples' mean), ``lower``/``upper`` (``-/+ std``), ``std`` and ``std_smoothed``
        (the kernel-smoothed variance of Adame et al. 2025); see :mod:`._uq`.

    Returns
    -------
    dict of str to dask.array.Array
        One float32 array per output name of the model (``prediction``, ``lower``,
        ``upper``, ``std``, ``residual``, ``probabilities``, ``mask``). Layout: the input's
        Z, Y, X axes in that order without C (e.g. "ZCYX" -> "ZYX"), rows and columns times
        the model's ``scale_factor``; ``probabilities`` has a leading class axis ("CZYX" or
        "CYX"). See :func:`output_axes`.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_im2im_uq.models import Im2ImModel, build_network
    >>> from napari_im2im_uq.inference import predict
    >>> net = build_network("quantile", depth=2, base_channels=4, scale_factor=2)
    >>> model = Im2ImModel(net, {"heuristic": "quantile"})
    >>> image = np.random.default_rng(0).random((3, 50, 45), dtype=np.float32)
    >>> out = predict(model, image, axes="ZYX", tile_shape=(32, 32), device="cpu")
    >>> out["upper"].shape
    (3, 100, 90)
    >>> whole = model(image[1])["prediction"]
    >>> bool(np.allclose(out["prediction"][1].compute(), whole, atol=1e-5))
    True
    """
    plan = make_plan(
        model,
        image,
        axes=axes,
        tile_shape=tile_shape,
        halo=halo,
        batch_size=batch_size,
        device=device,
        precision=precision,
        prediction=prediction,
        uncertainty=uncertainty,
    )
    return plan.outputs()
