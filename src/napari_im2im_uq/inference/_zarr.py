"""Writing predictions to OME-Zarr, block by block: progress, cancel, resume.

Layout of a store written by :func:`predict_to_zarr` (zarr format 3, OME-NGFF 0.5)::

    OUT.zarr/                 group; attributes["napari_im2im_uq"] = the run description
      prediction/             group; attributes["ome"] = {"version": "0.5", "multiscales": [...]}
        0                     float32 array, one chunk per block, NaN where not yet written
      lower/0, upper/0, ...   one OME image group per model output
      _done                   uint8 array, one element (and one chunk) per block: 1 = written

A block's outputs are written first and its ``_done`` element last, so a block counts as done
only when all its chunks are complete; after a cancel or a crash, running the same call again
computes only the blocks not marked done.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from functools import partial
from pathlib import Path

import numpy as np

from ._axes import output_axes
from ._executor import check_scheduler, run_graph
from ._predict import make_plan

__all__ = ["plan_to_zarr", "predict_to_zarr", "write_zarr"]

FORMAT = 1
ATTRS_KEY = "napari_im2im_uq"
DONE = "_done"
_OPEN: dict = {}
_OPEN_LOCK = threading.Lock()


# -- the store -----------------------------------------------------------------------------


def _store_state(path: Path, overwrite: bool):
    """Return ``"new"``, ``"ours"`` (a store this module wrote) or raise."""
    if not path.exists():
        return "new", None
    if not path.is_dir():
        raise FileExistsError(f"store must be a folder for a zarr store; {path} is a file")
    if not (path / "zarr.json").is_file():
        if any(path.iterdir()):
            raise FileExistsError(
                f"store {path} is a folder that is not a zarr store; it is never replaced. "
                "Choose another path"
            )
        return "new", None
    import zarr

    try:
        group = zarr.open_group(store=str(path), mode="r")
        attrs = dict(group.attrs)
    except Exception as err:  # noqa: BLE001 - any zarr failure: not a store we can resume
        if overwrite:
            return "other", None
        raise FileExistsError(
            f"store {path} exists and is not a readable zarr group ({err}); pass "
            "overwrite=True to replace it"
        ) from err
    if ATTRS_KEY not in attrs:
        if overwrite:
            return "other", None
        raise FileExistsError(
            f"store {path} is a zarr store not written by predict_to_zarr; pass overwrite=True "
            "to replace it"
        )
    return "ours", attrs[ATTRS_KEY]


def _sample_sha256(plan) -> str:
    """SHA-256 of a few small windows of the input (first, middle, last plane)."""
    import dask

    x = plan.source
    planes, _, rows, cols = x.shape
    size = 16
    windows = []
    for z in sorted({0, planes // 2, planes - 1}):
        for r0, c0 in (
            (0, 0),
            ((rows - size) // 2, (cols - size) // 2),
            (rows - size, cols - size),
        ):
            r0, c0 = max(r0, 0), max(c0, 0)
            windows.append(x[z, :, r0 : r0 + size, c0 : c0 + size])
    digest = hashlib.sha256()
    for part in dask.compute(*windows, scheduler="threads"):
        digest.update(np.ascontiguousarray(part).tobytes())
    return digest.hexdigest()


def _describe(plan) -> dict:
    model = plan.model
    return {
        "model": {
            "name": model.name,
            "id": plan.ref.model_id,
            "heuristic": model.heuristic,
            "scale_factor": plan.scale_factor,
        },
        "input": {
            "shape": list(plan.image_shape),
            "dtype": str(plan.source.dtype),
            "axes": plan.given_axes,
            "sample_sha256": _sample_sha256(plan),
        },
        "halo": plan.halo,
        "tile_shape": list(plan.tile_shape),
        "batch_size": plan.batch_size,
        "block_shape": list(plan.block_shape),
        "precision": plan.precision,
    }


def _differences(stored: dict, now: dict, prefix: str = "") -> list[str]:
    diffs = []
    for key in sorted(set(stored) | set(now)):
        a, b = stored.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: stored {a!r}, now {b!r}")
    return diffs


def _ome(name: str, axes: str, scale: list[float], translation: list[float], unit) -> dict:
    kinds = {"C": "channel", "Z": "space", "Y": "space", "X": "space"}
    axis_list = []
    for a in axes:
        entry = {"name": a.lower(), "type": kinds[a]}
        if unit and kinds[a] == "space":
            entry["unit"] = unit
        axis_list.append(entry)
    return {
        "version": "0.5",
        "multiscales": [
            {
                "name": name,
                "axes": axis_list,
                "datasets": [
                    {
                        "path": "0",
                        "coordinateTransformations": [
                            {"type": "scale", "scale": scale},
                            {"type": "translation", "translation": translation},
                        ],
                    }
                ],
            }
        ],
    }


def _geometry(plan, name: str, channels: int, pixel_size):
    """Axes, shape, chunks, scale and translation of output ``name``."""
    s = plan.scale_factor
    planes, _, rows, cols = plan.x.shape
    pz, br, bc = plan.block_shape
    axes = output_axes(plan.axes, name)
    shape, chunks, scale, shift = [], [], [], []
    space = dict(zip("ZYX" if plan.has_z else "YX", pixel_size, strict=True))
    for a in axes:
        if a == "C":
            shape.append(channels), chunks.append(channels), scale.append(1.0), shift.append(0.0)
        elif a == "Z":
            shape.append(planes), chunks.append(pz), scale.append(space["Z"]), shift.append(0.0)
        else:
            size, block = (rows, br) if a == "Y" else (cols, bc)
            step = space[a]
            shape.append(size * s)
            chunks.append(block * s)
            scale.append(step / s)
            # Output pixel centres: input pixel i covers [i - 1/2, i + 1/2).
            shift.append(step * (1.0 / s - 1.0) / 2.0)
    return axes, tuple(shape), tuple(chunks), scale, shift


def _grid(plan) -> tuple[int, int, int]:
    return tuple(len(c) for c in (plan.x.chunks[0], plan.x.chunks[2], plan.x.chunks[3]))


def _create(path: Path, plan, description: dict, pixel_size, unit) -> str:
    import zarr

    run_id = uuid.uuid4().hex
    root = zarr.open_group(store=str(path), mode="w", zarr_format=3)
    outputs = {}
    for name, channels in plan.layout:
        axes, shape, chunks, scale, shift = _geometry(plan, name, channels, pixel_size)
        group = root.create_group(name)
        group.create_array(
            "0",
            shape=shape,
            chunks=chunks,
            dtype="float32",
            fill_value=float("nan"),
            dimension_names=[a.lower() for a in axes],
        )
        group.attrs["ome"] = _ome(name, axes, scale, shift, unit)
        outputs[name] = {"path": f"{name}/0", "axes": axes, "channels": channels}
    root.create_array(DONE, shape=_grid(plan), chunks=(1, 1, 1), dtype="uint8", fill_value=0)
    root.attrs[ATTRS_KEY] = {
        "format": FORMAT,
        "run_id": run_id,
        "run": description,
        "outputs": outputs,
        "complete": False,
    }
    return run_id


def _open_arrays(path: str, run_id: str, names) -> dict:
    import zarr

    key = (path, run_id)
    with _OPEN_LOCK:
        if key not in _OPEN:
            root = zarr.open_group(store=path, mode="r+")
            arrays = {name: root[f"{name}/0"] for name in names}
            arrays[DONE] = root[DONE]
            if len(_OPEN) > 8:
                _OPEN.clear()
            _OPEN[key] = arrays
        return _OPEN[key]


def _store_block(block, *, path, run_id, layout, has_z, index, origin):
    """Write one block's outputs, then mark it done. Runs inside a dask task."""
    arrays = _open_arrays(path, run_id, [name for name, _ in layout])
    z0, r0, c0 = origin
    z1, r1, c1 = z0 + block.shape[0], r0 + block.shape[2], c0 + block.shape[3]
    ch = 0
    for name, n in layout:
        part = block[:, ch : ch + n]
        ch += n
        if name == "probabilities":
            if has_z:
                arrays[name][:, z0:z1, r0:r1, c0:c1] = part.transpose(1, 0, 2, 3)
            else:
                arrays[name][:, r0:r1, c0:c1] = part[0]
        elif has_z:
            arrays[name][z0:z1, r0:r1, c0:c1] = part[:, 0]
        else:
            arrays[name][r0:r1, c0:c1] = part[0, 0]
    arrays[DONE][index] = 1
    return index


def _store_graph(plan, pending, path: str, run_id: str):
    """Build the graph that computes and stores each pending block.

    Returns ``(graph, keys)``: one key per pending block, whose task writes the block and
    then marks it done.
    """
    from dask.highlevelgraph import HighLevelGraph

    stacked = plan.stacked
    bounds = [np.cumsum((0, *c)) for c in stacked.chunks]
    name = f"im2im-store-{run_id}"
    dsk = {}
    for iz, iy, ix in pending:
        origin = (int(bounds[0][iz]), int(bounds[2][iy]), int(bounds[3][ix]))
        func = partial(
            _store_block,
            path=path,
            run_id=run_id,
            layout=plan.layout,
            has_z=plan.has_z,
            index=(iz, iy, ix),
            origin=origin,
        )
        dsk[(name, iz, iy, ix)] = (func, (stacked.name, iz, 0, iy, ix))
    keys = list(dsk)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[stacked])
    return graph, keys


def _pixel_size(pixel_size, has_z: bool) -> list[float]:
    n = 3 if has_z else 2
    if pixel_size is None:
        return [1.0] * n
    try:
        values = [float(v) for v in pixel_size]
    except (TypeError, ValueError):
        values = []
    if len(values) != n or not all(np.isfinite(v) and v > 0 for v in values):
        axes = "(Z, Y, X)" if has_z else "(Y, X)"
        raise ValueError(
            f"pixel_size must be {n} positive numbers, the input's pixel size along {axes}; "
            f"got {pixel_size!r}"
        )
    return values


def predict_to_zarr(
    model,
    image,
    store: str | os.PathLike,
    *,
    axes: str,
    tile_shape: tuple[int, int] | None = None,
    halo: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    prediction=None,
    scheduler=None,
    overwrite: bool = False,
    pixel_size=None,
    unit: str | None = None,
):
    """Predict every output into an OME-Zarr store, block by block; resumable.

    Arguments are checked and the store is created (or checked for a resume) when this
    function is called; the work happens while the returned generator is iterated. It yields
    ``(done_blocks, total_blocks)`` (first the blocks already done, then after each block
    written) and returns the arrays (``StopIteration.value``; :func:`write_zarr` runs it to
    the end for you). Closing the generator (``gen.close()``, or a napari worker's quit)
    cancels: blocks in flight are finished and marked, no new block starts.

    Layout (zarr format 3, OME-NGFF 0.5): one OME image group per output (``prediction/0``,
    ``lower/0``, ...) with axes from :func:`output_axes`, a ``scale`` transformation of
    ``pixel_size / scale_factor`` on rows and columns and a ``translation`` that puts output
    pixel centres where they lie over the input; ``_done`` marks finished blocks; the root
    group's ``napari_im2im_uq`` attribute holds the run description. A block counts as
    written only once marked, so a store is never left with a half-written block that counts.

    Parameters
    ----------
    model, image, axes, tile_shape, halo, batch_size, device, precision, prediction
        As for :func:`predict`. When resuming, ``tile_shape`` and ``batch_size`` left at None
        take the stored run's values.
    store : path-like
        Folder of the zarr store (must be visible to the workers when ``scheduler`` is a
        cluster). An existing store written by this function with the same model, input and
        parameters is resumed; one with a different run description is refused, naming the
        differences.
    scheduler : None, str or distributed.Client
        None runs the blocks on threads in this process; an address or a ``Client`` runs the
        same graph on a dask cluster (workers must see ``store`` and the model bundle folder;
        a model given as an object is shipped once). A lost worker's blocks are recomputed.
    overwrite : bool
        Replace an existing zarr store instead of resuming it. A folder that is not a zarr
        store is never replaced.
    pixel_size : sequence of float, optional
        Physical size of an input pixel along (Z, Y, X) or (Y, X) (default 1).
    unit : str, optional
        OME unit of the spatial axes, e.g. "micrometer".

    Returns
    -------
    generator
        Yields ``(int, int)``; returns ``dict`` of output name to read-only ``zarr.Array``.

    Raises
    ------
    FileExistsError
        The store exists, is not resumable and ``overwrite`` is False; or it is a folder
        that is not a zarr store.
    ValueError
        Invalid arguments, or a resume whose run description differs from the stored one.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from napari_im2im_uq.models import Im2ImModel, build_network
    >>> from napari_im2im_uq.inference import predict_to_zarr
    >>> model = Im2ImModel(build_network("quantile", depth=2, base_channels=4),
    ...                    {"heuristic": "quantile"})
    >>> image = np.zeros((40, 40), dtype=np.float32)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     gen = predict_to_zarr(model, image, f"{tmp}/out.zarr", axes="YX",
    ...                           tile_shape=(16, 16), device="cpu")
    ...     steps = []
    ...     try:
    ...         while True:
    ...             steps.append(next(gen))
    ...     except StopIteration as stop:
    ...         arrays = stop.value
    ...     shape = arrays["prediction"].shape
    >>> steps[-1], shape
    ((9, 9), (40, 40))
    """
    path, state, stored = _open_store(store, overwrite, scheduler)
    if state == "ours" and not overwrite:
        run = stored.get("run", {})
        if tile_shape is None and "tile_shape" in run:
            tile_shape = tuple(run["tile_shape"])
        if batch_size is None and "batch_size" in run:
            batch_size = run["batch_size"]
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
        check_here=scheduler is None,
    )
    return _start(plan, path, stored if state == "ours" and not overwrite else None,
                  scheduler=scheduler, pixel_size=pixel_size, unit=unit)


def plan_to_zarr(plan, store: str | os.PathLike, *, scheduler=None, overwrite: bool = False,
                 pixel_size=None, unit: str | None = None):
    """Write a :class:`~napari_im2im_uq.inference.Plan` into an OME-Zarr store; resumable.

    :func:`predict_to_zarr` for a prediction already planned (by :func:`make_plan`), so the
    graph is built once when the caller also needs the plan (e.g. to size the outputs). An
    existing store is resumed only if its run description equals this plan's (a plan fixes
    its tile shape and batch size; :func:`predict_to_zarr` takes a resumed store's).

    Parameters
    ----------
    plan : Plan
    store, scheduler, overwrite, pixel_size, unit
        As for :func:`predict_to_zarr`.

    Returns
    -------
    generator
        Yields ``(int, int)``; returns ``dict`` of output name to read-only ``zarr.Array``.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from napari_im2im_uq.models import Im2ImModel, build_network
    >>> from napari_im2im_uq.inference import make_plan, plan_to_zarr
    >>> from napari_im2im_uq._jobs import run_to_end
    >>> model = Im2ImModel(build_network("quantile", depth=2, base_channels=4),
    ...                    {"heuristic": "quantile"})
    >>> plan = make_plan(model, np.zeros((40, 40), dtype=np.float32), axes="YX",
    ...                  tile_shape=(16, 16), device="cpu")
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     arrays = run_to_end(plan_to_zarr(plan, f"{tmp}/out.zarr"))
    ...     shape = arrays["lower"].shape
    >>> shape
    (40, 40)
    """
    path, state, stored = _open_store(store, overwrite, scheduler)
    return _start(plan, path, stored if state == "ours" and not overwrite else None,
                  scheduler=scheduler, pixel_size=pixel_size, unit=unit)


def _open_store(store, overwrite, scheduler):
    """Check the store arguments; return ``(path, state, stored description)``."""
    if not isinstance(store, str | os.PathLike):
        raise ValueError(f"store must be a folder path for the zarr store; got {store!r}")
    if not isinstance(overwrite, bool):
        raise ValueError(f"overwrite must be True or False; got {overwrite!r}")
    check_scheduler(scheduler)
    path = Path(store).expanduser().resolve()
    state, stored = _store_state(path, overwrite)
    return path, state, stored


def _start(plan, path: Path, stored, *, scheduler, pixel_size, unit):
    """Create the store (or check a resume, ``stored`` being its attributes) and start."""
    resume = stored is not None
    pixel_size = _pixel_size(pixel_size, plan.has_z)
    description = _describe(plan)
    if resume:
        diffs = _differences(stored.get("run", {}), description)
        if stored.get("format") != FORMAT:
            diffs.insert(0, f"format: stored {stored.get('format')!r}, now {FORMAT}")
        if diffs:
            raise ValueError(
                f"store {path} holds a different run, so it cannot be resumed: "
                + "; ".join(diffs)
                + ". Pass overwrite=True to replace it, or choose another store"
            )
        run_id = stored["run_id"]
        import zarr

        root = zarr.open_group(store=str(path), mode="r+")
        for name, channels in plan.layout:  # the pixel size may be given now
            axes_out, _, _, scale, shift = _geometry(plan, name, channels, pixel_size)
            root[name].attrs["ome"] = _ome(name, axes_out, scale, shift, unit)
        marks = np.asarray(root[DONE][...])
    else:
        run_id = _create(path, plan, description, pixel_size, unit)
        marks = np.zeros(_grid(plan), dtype=np.uint8)
    pending = [tuple(int(i) for i in idx) for idx in np.argwhere(marks == 0)]
    total = int(marks.size)
    return _generate(plan, pending, str(path), run_id, total - len(pending), total, scheduler)


def _generate(plan, pending, path, run_id, done, total, scheduler):
    import zarr

    yield done, total
    if pending:
        graph, keys = _store_graph(plan, pending, path, run_id)
        yield from run_graph(graph, keys, scheduler=scheduler, done=done, total=total)
    root = zarr.open_group(store=path, mode="r+")
    if int(np.count_nonzero(np.asarray(root[DONE][...]) == 0)):
        # Cancelled via the inner generator's return: not complete.
        raise RuntimeError(f"the prediction into {path} stopped before every block was written")
    attrs = dict(root.attrs[ATTRS_KEY])
    attrs["complete"] = True
    root.attrs[ATTRS_KEY] = attrs
    return {name: zarr.open_array(store=path, path=f"{name}/0", mode="r") for name, _ in plan.layout}


def write_zarr(model, image, store, *, progress=None, **kwargs):
    """Run :func:`predict_to_zarr` to the end and return its arrays.

    Parameters
    ----------
    model, image, store
        As for :func:`predict_to_zarr`.
    progress : callable, optional
        Called with ``(done_blocks, total_blocks)`` after each step.
    **kwargs
        Keyword-only options of :func:`predict_to_zarr` (``axes`` is required).

    Returns
    -------
    dict of str to zarr.Array
        The written outputs, read-only.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from napari_im2im_uq.models import Im2ImModel, build_network
    >>> from napari_im2im_uq.inference import write_zarr
    >>> model = Im2ImModel(build_network("gaussian", depth=2, base_channels=4),
    ...                    {"heuristic": "gaussian"})
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     arrays = write_zarr(model, np.ones((2, 30, 30)), f"{tmp}/out.zarr", axes="ZYX",
    ...                         device="cpu")
    ...     names = sorted(arrays)
    >>> names
    ['lower', 'prediction', 'std', 'upper']
    """
    from .._jobs import run_to_end, steps_callback

    return run_to_end(predict_to_zarr(model, image, store, **kwargs),
                      callback=steps_callback(progress))
