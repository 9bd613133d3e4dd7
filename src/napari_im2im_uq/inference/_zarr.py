"""Writing predictions to OME-Zarr, block by block: progress, cancel, resume.

Layout of a store written by :func:`predict_to_zarr` (zarr format 3, OME-NGFF 0.5)::

    OUT.zarr/                 group; attributes["napari_im2im_uq"] = the run description
      prediction/             group; attributes["ome"] = {"version": "0.5", "multiscales": [...]}
        0                     float32 array, one chunk per block, NaN where not yet written
        1, 2, ...             the resolution pyramid (``_pyramid``): 2x coarser in Y and X,
                              written by each block's task (chunks aligned on the blocks);
                              the OME metadata (``_ome``, validated by yaozarrs) lists them
      lower/0, upper/0, ...   one OME image group per model output
      _done                   uint8 array, one element (and one chunk) per block: 1 = written
      _input_blake2b          uint8 (blocks..., 16): BLAKE2b of the input window each block read
      _lock/                  while a run writes: who (see ``_store.StoreLock``)

A block's outputs and its input's fingerprint are written first and its ``_done`` element
last, so a block counts as done only when all its chunks are complete; after a cancel or a
crash, running the same call again checks the fingerprints of the done blocks against the input
(a change is refused, naming the planes) and computes only the blocks not marked done. The
root's attribute is written before anything else (``"created": false`` until the arrays exist),
so a store killed at any moment is recognised as this tool's; see ``_store`` for what an
overwrite may remove and for the one-writer lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import uuid
import warnings
from functools import partial
from pathlib import Path

import numpy as np

from .._warnings import Im2ImUQWarning
from ._axes import output_axes
from ._executor import check_scheduler, run_graph
from ._predict import make_plan
from ._pyramid import level_shape, pyramid
from ._store import (
    ATTRS_KEY,
    LOCK,
    StoreLock,
    changed_blocks,
    check_apart,
    fingerprint_graph,
    input_paths,
    ours_and_foreign,
    read_root,
    remove_ours,
    where,
    write_root,
)

__all__ = ["plan_to_zarr", "predict_to_zarr", "write_zarr"]

FORMAT = 3  # 3: resolution pyramids
DONE = "_done"
PRINT = "_input_blake2b"
_OPEN: dict = {}
_OPEN_LOCK = threading.Lock()


# -- the store -----------------------------------------------------------------------------


def _listing(names) -> str:
    names = list(names)
    shown = ", ".join(names[:8])
    return shown + (f" and {len(names) - 8} more" if len(names) > 8 else "")


def _store_state(path: Path):
    """Return ``("new", None)`` or ``("ours", attributes)``; raise for anything else."""
    if not path.exists():
        return "new", None
    if not path.is_dir():
        raise FileExistsError(f"store must be a folder for a zarr store; {path} is a file")
    try:
        stored = read_root(path)
    except ValueError as err:
        raise FileExistsError(
            f"store {path} is not a store predict_to_zarr wrote: {err}. It is never replaced, "
            "even with overwrite=True; choose another store"
        ) from None
    if stored is not None:
        return "ours", stored
    _, foreign = ours_and_foreign(path, None)
    if (path / "zarr.json").is_file():
        raise FileExistsError(
            f"store {path} is a zarr store not written by predict_to_zarr (it holds "
            f"{_listing(foreign)}); it is never replaced, even with overwrite=True. Choose "
            "another store"
        )
    if foreign:
        raise FileExistsError(
            f"store {path} is a folder that is not a zarr store (it holds {_listing(foreign)}); "
            "it is never replaced, even with overwrite=True. Choose another path"
        )
    return "new", None  # empty, or what a run killed before writing anything left (lock)


def _describe(plan) -> dict:
    model = plan.model
    return {
        "model": {
            "name": model.name,
            "id": plan.ref.model_id,
            "heuristic": model.heuristic,
            "scale_factor": plan.scale_factor,
            **({"training_regions": model.spec["training_regions"]}
               if model.spec.get("training_regions") else {}),
        },
        "input": {
            "shape": list(plan.image_shape),
            "dtype": str(plan.source.dtype),
            "axes": plan.given_axes,
        },
        "halo": plan.halo,
        "tile_shape": list(plan.tile_shape),
        "batch_size": plan.batch_size,
        "block_shape": list(plan.block_shape),
        "precision": plan.precision,
        **({} if plan.uncertainty is None else {"uncertainty": plan.uncertainty.describe()}),
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


def _ome(name: str, axes: str, scale: list[float], translation: list[float], unit, *,
         levels: int = 1) -> dict:
    """Return the validated OME-NGFF 0.5 ``ome`` attribute of an output (``levels`` levels)."""
    from ._ome import image_metadata

    return image_metadata(name, axes, scale, translation, unit=unit, levels=levels)


def _levels(axes: str, shape, chunks) -> int:
    from ._pyramid import n_levels

    return n_levels(shape, chunks, axes)


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


def _create(path: Path, plan, description: dict, pixel_size, unit, stored) -> str:
    """Create the store (replacing our entries of ``stored``'s run, if any); return the run id.

    The root's attribute comes first, atomically, so however far this gets the store is
    recognised as ours; ``"created"`` becomes true once every array exists.
    """
    import zarr

    run_id = uuid.uuid4().hex
    outputs = {}
    for name, channels in plan.layout:
        axes = _geometry(plan, name, channels, pixel_size)[0]
        outputs[name] = {"path": f"{name}/0", "axes": axes, "channels": channels}
    header = {"format": FORMAT, "run_id": run_id, "created": False, "run": description,
              "outputs": outputs, "complete": False}
    ours, _ = ours_and_foreign(path, stored)
    if stored is not None:
        old = stored.get("outputs", {})
        header["removing"] = sorted(set(old if isinstance(old, dict | list) else ())
                                    | set(stored.get("removing", ())))
    write_root(path, header)
    remove_ours(path, ours)
    root = zarr.open_group(store=str(path), mode="r+")
    for name, channels in plan.layout:
        axes, shape, chunks, scale, shift = _geometry(plan, name, channels, pixel_size)
        levels = _levels(axes, shape, chunks)
        group = root.create_group(name, attributes={
            "ome": _ome(name, axes, scale, shift, unit, levels=levels)})
        for k in range(levels):  # level k: 2**k coarser in Y and X, chunks aligned on blocks
            group.create_array(
                str(k),
                shape=level_shape(shape, axes, k),
                chunks=level_shape(chunks, axes, k),
                dtype="float32",
                fill_value=float("nan"),
                dimension_names=[a.lower() for a in axes],
            )
    grid = _grid(plan)
    root.create_array(DONE, shape=grid, chunks=(1, 1, 1), dtype="uint8", fill_value=0)
    root.create_array(PRINT, shape=(*grid, 16), chunks=(1, 1, 1, 16), dtype="uint8",
                      fill_value=0)
    header.pop("removing", None)
    header["created"] = True
    root.attrs[ATTRS_KEY] = header  # zarr writes its metadata atomically
    return run_id


def _open_arrays(path: str, run_id: str, names) -> dict:
    import zarr

    key = (path, run_id)
    with _OPEN_LOCK:
        if key not in _OPEN:
            root = zarr.open_group(store=path, mode="r+")
            arrays = {}
            for name in names:  # every level, as the group's OME metadata lists them
                sets = root[name].attrs["ome"]["multiscales"][0]["datasets"]
                arrays[name] = [root[f"{name}/{d['path']}"] for d in sets]
            arrays[DONE] = root[DONE]
            arrays[PRINT] = root[PRINT]
            if len(_OPEN) > 8:
                _OPEN.clear()
            _OPEN[key] = arrays
        return _OPEN[key]


def _store_block(block, digest, *, path, run_id, layout, has_z, index, origin):
    """Write one block's outputs (every pyramid level) and input fingerprint, then mark it done.

    A dask task. The block's region is aligned on the chunks of every level
    (:mod:`._pyramid`), so its downsampled blocks fill whole chunks of the coarser levels.
    """
    arrays = _open_arrays(path, run_id, [name for name, _ in layout])
    z0, r0, c0 = origin
    ch = 0
    for name, n in layout:
        part = block[:, ch : ch + n]
        ch += n
        if name == "probabilities":  # (C, Z, Y, X) or (C, Y, X)
            data = part.transpose(1, 0, 2, 3) if has_z else part[0]
            axes = "CZYX" if has_z else "CYX"
        else:
            data = part[:, 0] if has_z else part[0, 0]
            axes = "ZYX" if has_z else "YX"
        levels = arrays[name]
        for k, level in enumerate(pyramid(data, axes, len(levels))):
            start = {"C": 0, "Z": z0, "Y": r0 >> k, "X": c0 >> k}
            level_array = levels[k]
            level_array[tuple(slice(start[a], start[a] + m)
                              for a, m in zip(axes, level.shape, strict=True))] = level
    arrays[PRINT][index] = digest
    arrays[DONE][index] = 1
    return index


def _store_graph(plan, pending, path: str, run_id: str):
    """Build the graph that computes and stores each pending block, as rules (:mod:`._graph`).

    ``pending`` is None (every block) or the flat indices of the blocks to write. Returns
    ``(graph, keys)``: one key per pending block, whose task writes the block and its input's
    fingerprint, then marks it done; the keys and the tasks are made a wave at a time.
    """
    from dask.highlevelgraph import HighLevelGraph

    from ._graph import BlockKeys, BlockLayer, ref, task

    stacked = plan.stacked
    bounds = [np.cumsum((0, *c)) for c in stacked.chunks]
    name, prints = f"im2im-store-{run_id}", f"im2im-print-{run_id}"

    def build(index):
        iz, iy, ix = index
        func = partial(
            _store_block,
            path=path,
            run_id=run_id,
            layout=plan.layout,
            has_z=plan.has_z,
            index=index,
            origin=(int(bounds[0][iz]), int(bounds[2][iy]), int(bounds[3][ix])),
        )
        key = (name, *index)
        return {key: task(key, func, ref((stacked.name, iz, 0, iy, ix)), ref((prints, *index)))}

    grid = _grid(plan)
    graph = HighLevelGraph.merge(stacked.__dask_graph__(), fingerprint_graph(plan, prints))
    graph = HighLevelGraph({**graph.layers, name: BlockLayer(name, grid, build)},
                           {**graph.dependencies, name: {stacked.name, prints}})
    return graph, BlockKeys(name, grid, pending)


def _read_marks(path: Path, grid, *, array: str = DONE) -> np.ndarray:
    """Read the block marks ``array`` (``_done``, or apply's) from its chunk files' names.

    Reading 100,000 one-element chunks through zarr asks the store for each; listing the
    folder costs only the blocks written. Falls back on zarr for another chunk layout.
    """
    import zarr

    folder = path / array
    try:
        meta = json.loads((folder / "zarr.json").read_text(encoding="utf-8"))
        encoding = meta.get("chunk_key_encoding", {})
        layout_ok = (encoding.get("name") == "default"
                     and encoding.get("configuration", {}).get("separator", "/") == "/"
                     and tuple(meta.get("chunk_grid", {}).get("configuration", {})
                               .get("chunk_shape", ())) == (1,) * len(grid)
                     and meta.get("fill_value") == 0 and not meta.get("storage_transformers"))
    except (OSError, ValueError, AttributeError):
        meta, layout_ok = {}, False
    shape = meta.get("shape") if layout_ok else zarr.open_array(store=str(path), path=array,
                                                                mode="r").shape
    if tuple(shape) != tuple(grid):
        raise ValueError(f"the block marks {folder} do not match the grid {tuple(grid)}")
    if not layout_ok:
        return np.asarray(zarr.open_array(store=str(path), path=array, mode="r")[...])
    marks = np.zeros(grid, dtype=np.uint8)
    top = folder / "c"
    for dirpath, _, files in os.walk(top):
        parts = Path(dirpath).relative_to(top).parts
        if len(parts) != len(grid) - 1:
            continue
        for f in files:
            try:
                index = tuple(int(v) for v in (*parts, f))
            except ValueError:
                continue
            if all(0 <= i < n for i, n in zip(index, grid, strict=True)):
                marks[index] = 1
    return marks


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
    uncertainty=None,
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
    model, image, axes, tile_shape, halo, batch_size, device, precision, prediction, uncertainty
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
        Replace an existing store written by this function instead of resuming it (an
        :class:`~napari_im2im_uq.Im2ImUQWarning` says what is removed). Nothing else is ever
        replaced: a folder or zarr store this function did not write, or one of its stores
        that also holds other files, is refused whatever ``overwrite`` says. One run writes a
        store at a time (a ``_lock`` folder names it); a lock left by a process that is gone
        is reported and taken over. The store must be apart from the files the image is read
        from.
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
        The store is not one this function wrote (or also holds other files), or another
        run is writing it.
    ValueError
        Invalid arguments, a store that is, contains or lies inside the image's files, or a
        resume whose run description differs from the stored one or whose image changed
        where blocks were already written (the changed planes are named).

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
    path, state, stored = _open_store(store, overwrite, scheduler, input_paths(image))
    if state == "ours" and not overwrite and stored.get("created", True):
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
        uncertainty=uncertainty,
    )
    return _start(plan, path, overwrite=overwrite, scheduler=scheduler, pixel_size=pixel_size,
                  unit=unit)


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
    path, _, _ = _open_store(store, overwrite, scheduler, input_paths(plan.source))
    return _start(plan, path, overwrite=overwrite, scheduler=scheduler, pixel_size=pixel_size,
                  unit=unit)


def _open_store(store, overwrite, scheduler, inputs):
    """Check the store arguments; return ``(path, state, stored description)``."""
    if not isinstance(store, str | os.PathLike):
        raise ValueError(f"store must be a folder path for the zarr store; got {store!r}")
    if not isinstance(overwrite, bool):
        raise ValueError(f"overwrite must be True or False; got {overwrite!r}")
    check_scheduler(scheduler)
    path = Path(store).expanduser().resolve()
    check_apart(path, inputs)
    state, stored = _store_state(path)
    return path, state, stored


def _start(plan, path: Path, *, overwrite, scheduler, pixel_size, unit):
    """Take the store's lock, create the store or check a resume, and return the job."""
    pixel_size = _pixel_size(pixel_size, plan.has_z)
    description = _describe(plan)
    made = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        lock = StoreLock(path).acquire()
    except BaseException:
        if made:
            with contextlib.suppress(OSError):
                path.rmdir()
        raise
    try:
        state, stored = _store_state(path)  # again, now that no one else may write
        if state == "ours" and stored.get("created", True) and not overwrite:
            run_id, marks = _resume(plan, path, stored, description, pixel_size, unit,
                                    scheduler)
        else:
            if state == "ours":
                _say_replaced(path, stored, overwrite)
            run_id = _create(path, plan, description, pixel_size, unit, stored)
            marks = None
    except BaseException:
        lock.release()
        raise
    total = int(np.prod(_grid(plan)))
    pending = None if marks is None else np.flatnonzero(marks.ravel() == 0)  # None: all
    todo = total if pending is None else len(pending)
    job = _generate(plan, pending, str(path), run_id, total - todo, total, scheduler, lock)
    lock.release_with(job)  # also when the job is dropped without running
    return job


def _say_replaced(path: Path, stored: dict, overwrite: bool) -> None:
    """Refuse to replace a store holding files of the user's; say what a replacement removes."""
    ours, foreign = ours_and_foreign(path, stored)
    if foreign:
        raise FileExistsError(
            f"store {path} was written by predict_to_zarr but also holds files it did not "
            f"write: {_listing(foreign)}. It is never replaced while it holds them, even with "
            "overwrite=True; move them out or choose another store"
        )
    if not stored.get("created", True):
        return  # a creation cut short: no block was written, nothing to say
    removed = [n for n in ours if n not in (LOCK, "zarr.json")]
    warnings.warn(
        f"overwrite=True: replacing the store {path} (model "
        f"{stored.get('run', {}).get('model', {}).get('name')!r}, complete: "
        f"{stored.get('complete')}); removing {_listing(removed) or 'its metadata'}",
        Im2ImUQWarning,
        stacklevel=4,
    )


def _resume(plan, path: Path, stored, description, pixel_size, unit, scheduler):
    """Check that the store holds this run and that the input of its done blocks is unchanged."""
    import zarr

    diffs = _differences(stored.get("run", {}), description)
    if stored.get("format") != FORMAT:
        diffs.insert(0, f"format: stored {stored.get('format')!r}, now {FORMAT}")
    if diffs:
        raise ValueError(
            f"store {path} holds a different run, so it cannot be resumed: "
            + "; ".join(diffs)
            + ". Pass overwrite=True to replace it, or choose another store"
        )
    root = zarr.open_group(store=str(path), mode="r+")
    marks = _read_marks(path, _grid(plan))
    done = [tuple(int(i) for i in idx) for idx in np.argwhere(marks != 0)]
    if done:
        at = np.asarray(done, dtype=np.int64)  # one coordinate per byte of each fingerprint
        byte = np.broadcast_to(np.arange(16), (len(done), 16))
        stored_prints = root[PRINT].get_coordinate_selection(
            tuple(np.broadcast_to(c[:, None], byte.shape) for c in at.T) + (byte,))
        changed = changed_blocks(plan, done, stored_prints, scheduler)
        if changed:
            raise ValueError(
                f"image changed since store {path} was written: {where(plan, changed)} "
                f"({len(changed)} of the {len(done)} blocks written) differ from the input "
                "those blocks were predicted from, so resuming would mix two inputs. Give the "
                "original image, or pass overwrite=True to replace the store"
            )
    for name, channels in plan.layout:  # the pixel size may be given now
        axes_out, shape, chunks, scale, shift = _geometry(plan, name, channels, pixel_size)
        root[name].attrs["ome"] = _ome(name, axes_out, scale, shift, unit,
                                       levels=_levels(axes_out, shape, chunks))
    return stored["run_id"], marks


def _generate(plan, pending, path, run_id, done, total, scheduler, lock):
    import zarr

    try:
        yield done, total
        if done < total:
            graph, keys = _store_graph(plan, pending, path, run_id)
            yield from run_graph(graph, keys, scheduler=scheduler, done=done, total=total)
        root = zarr.open_group(store=path, mode="r+")
        if int(np.count_nonzero(_read_marks(Path(path), _grid(plan)) == 0)):
            # Cancelled via the inner generator's return: not complete.
            raise RuntimeError(
                f"the prediction into {path} stopped before every block was written"
            )
        attrs = dict(root.attrs[ATTRS_KEY])
        attrs["complete"] = True
        root.attrs[ATTRS_KEY] = attrs
        return {name: zarr.open_array(store=path, path=f"{name}/0", mode="r")
                for name, _ in plan.layout}
    finally:
        lock.release()


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
