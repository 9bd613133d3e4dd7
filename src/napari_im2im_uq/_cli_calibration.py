"""``napari-im2im-uq calibrate | apply | evaluate``: a calibration headless, on a prediction store.

- ``calibrate`` reads the outputs of a store ``napari-im2im-uq predict`` wrote (lazily, dask
  over zarr) and ground truth (.tif/.npy/zarr), calibrates on the given regions or on a random
  plan of tiles, and writes the record (JSON).
- ``apply`` applies a record to a store and writes each calibrated product (interval width,
  untrusted mask, calibrated bounds, sets...) as an OME image group ``calibrated/<product>`` of
  the same store, with its resolution pyramid, block by block through the one executor, under
  the store's lock. The prediction's own arrays are never written. A rerun of the same record
  resumes where a stopped run left off (blocks are marked as they are written); another record
  replaces the ``calibrated/`` groups an earlier ``apply`` wrote; anything else there is
  refused.
- ``evaluate`` measures a record on held-out ground truth and writes a report folder: the
  figure (PNG) and one self-contained HTML page.

Nothing heavy is imported when the parser is built.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

__all__ = ["register", "run_apply", "run_calibrate", "run_evaluate"]

#: Where ``apply`` writes, inside the prediction store.
GROUP = "calibrated"
#: The attribute of the ``calibrated`` group that lists what ``apply`` wrote.
ATTRS = "napari_im2im_uq_calibrated"
#: Argument names of the API said as this module's flags in its error messages.
_FLAGS = {"tile_shape": "--tile", "alpha": "--alpha", "delta": "--delta", "rule": "--rule",
          "method": "--method", "bound": "--bound", "sigma": "--sigma", "seed": "--seed",
          "data_range": "--data-range", "n_tiles": "--plan", "regions": "--regions",
          "truth": "--truth", "INPUT": "--truth", "scheduler": "--scheduler",
          "n_splits": "--splits", "leakage='report'": "--allow-leakage"}


def _store_argument(parser) -> None:
    parser.add_argument("prediction", metavar="PREDICTION.zarr",
                        help="store written by `napari-im2im-uq predict`")


def _record_arguments(parser) -> None:
    """Add the positional ``RECORD PREDICTION.zarr`` of ``apply`` and ``evaluate``."""
    parser.add_argument("record", metavar="RECORD", help="calibration record (.json)")
    _store_argument(parser)


@contextlib.contextmanager
def _on_scheduler(address):
    """Make the ``dask.distributed`` scheduler at ``address`` dask's default while a command runs.

    The lazy reads of ``calibrate`` and ``evaluate`` (the tiles under the plan, the held-out
    tiles) then run on its workers; without an address they run in threads here.
    """
    if address is None:
        yield
        return
    from distributed import Client

    try:
        client = Client(address, timeout="10s", set_as_default=True)
    except (OSError, TimeoutError) as err:
        raise ValueError(f"--scheduler: no dask scheduler answers at {address!r} ({err})") from err
    with client:
        yield


def register(subparsers) -> None:
    """Add ``calibrate``, ``apply`` and ``evaluate`` to ``subparsers`` (argparse)."""
    from ._validation import int_flag, level_flag

    cal = subparsers.add_parser(
        "calibrate",
        help="calibrate a prediction store on ground truth and write the record (.json)",
        description=(
            "Calibrate the outputs in PREDICTION.zarr (written by `napari-im2im-uq predict`) on "
            "ground truth given on the outputs' grid, over the rectangles of --regions or a "
            "random plan of --plan N tiles, and write the calibration record. Prints the "
            "guarantee."
        ),
    )
    _store_argument(cal)
    cal.add_argument("--truth", required=True, metavar="TRUTH",
                     help="ground truth on the outputs' grid: .tif/.tiff, .npy or .zarr")
    where = cal.add_mutually_exclusive_group(required=True)
    where.add_argument("--regions", metavar="REGIONS.json",
                       help="JSON list of rectangles where ground truth exists, each a list of "
                            "4 [row, column] (or [plane, row, column]) vertices in output pixels")
    where.add_argument("--plan", type=int_flag(), metavar="N",
                       help="calibrate on a random plan of N whole tiles (see --seed)")
    cal.add_argument("--seed", type=int_flag(minimum=0), default=0,
                     help="seed of the --plan draw and of the WSR order (default 0)")
    cal.add_argument("--method", required=True,
                     help="intervals, trust_mask, mask or segmentation")
    cal.add_argument("--rule", help="rcps or crc (intervals, segmentation); conformal, crc or "
                                    "paper (mask); default the first")
    cal.add_argument("--bound", default="hoeffding_bentkus",
                     help="RCPS bound: hoeffding_bentkus (default), hoeffding or wsr")
    cal.add_argument("--alpha", type=level_flag(), default=0.1, help="risk level (default 0.1)")
    cal.add_argument("--delta", type=level_flag(), default=0.1,
                     help="RCPS error level (default 0.1)")
    cal.add_argument("--tile", nargs=2, type=int_flag(), default=(64, 64),
                     metavar=("ROWS", "COLUMNS"), help="calibration tile (default 64 64)")
    cal.add_argument("--sigma", help="trust mask score: std, residual, width or mask")
    cal.add_argument("--data-range", nargs=2, type=float, metavar=("LOW", "HIGH"),
                     help="declared range of the data (trust mask: B, the largest error)")
    cal.add_argument("--allow-leakage", action="store_true",
                     help="calibrate even on tiles the model was trained or validated on (its "
                          "training_regions) and write the leakage bound (Adame et al., Prop. "
                          "3.2) in the record; without it such tiles are refused")
    cal.add_argument("-o", "--output", required=True, metavar="RECORD.json",
                     help="where to write the record")
    cal.set_defaults(func=run_calibrate)

    app = subparsers.add_parser(
        "apply",
        help="apply a record to a prediction store: write the calibrated layers into it",
        description=(
            "Apply RECORD to the outputs in PREDICTION.zarr and write each calibrated product "
            f"as an OME image group {GROUP}/<product> of the same store, block by block. The "
            "prediction's arrays are never written; a rerun of the same record resumes a "
            "stopped run, another record replaces the groups an earlier apply wrote. Prints "
            "the drift verdict."
        ),
    )
    _record_arguments(app)
    app.add_argument("--accept-edited", action="store_true",
                     help="apply a record whose checksum does not match its content")
    app.add_argument("--bounds", action="store_true",
                     help="also write the calibrated lower and upper bounds (intervals)")
    app.add_argument("--no-drift", action="store_true", help="skip the drift check")
    app.add_argument("--scheduler", metavar="ADDR", help="dask scheduler address")
    app.add_argument("--no-progress", action="store_true", help="no progress bar")
    app.set_defaults(func=run_apply)

    ev = subparsers.add_parser(
        "evaluate",
        help="measure a record on held-out ground truth: a PNG figure and an HTML report",
        description=(
            "Diagnose RECORD on the outputs in PREDICTION.zarr against held-out ground truth "
            "(the tiles used to calibrate are left out) and write REPORT/diagnostics.png and "
            "REPORT/report.html (self-contained: open it in a browser)."
        ),
    )
    _record_arguments(ev)
    ev.add_argument("--truth", required=True, metavar="HELD_OUT",
                    help="held-out ground truth on the outputs' grid: .tif/.tiff, .npy or .zarr")
    ev.add_argument("--regions", metavar="REGIONS.json",
                    help="rectangles where the held-out truth exists (default everywhere)")
    ev.add_argument("--splits", type=int_flag(minimum=2), default=100,
                    help="random calibration/test splits for the risk histogram (default 100)")
    ev.add_argument("--seed", type=int_flag(minimum=0), default=0, help="default 0")
    ev.add_argument("--accept-edited", action="store_true",
                    help="evaluate a record whose checksum does not match its content")
    ev.add_argument("-o", "--output", required=True, metavar="REPORT",
                    help="report folder (created)")
    for parser in (cal, ev):
        parser.add_argument("--scheduler", metavar="ADDR",
                            help="dask.distributed scheduler address: read the store there")
    ev.set_defaults(func=run_evaluate)


# -- shared ----------------------------------------------------------------------------------


def _error(err) -> int:
    from ._validation import in_flags

    print(f"error: {in_flags(str(err), _FLAGS)}", file=sys.stderr)
    return 2


def _truth(path):
    """Return the ground truth as an array (read lazily where the format allows)."""
    from .inference._cli import read_input

    try:
        return read_input(path)[0]
    except (ValueError, FileNotFoundError) as err:
        raise ValueError(str(err).replace("INPUT", "--truth")) from None


def _regions(path):
    """Return the rectangles of a JSON file: a list of vertex lists or ``{"regions": [...]}``."""
    import json

    import numpy as np

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"--regions must be a readable JSON file; {path}: {err}") from None
    if isinstance(doc, dict):
        doc = doc.get("regions")
    try:
        rects = [np.asarray(r, dtype=float) for r in doc]
    except (TypeError, ValueError):
        rects = None
    if not rects or any(r.ndim != 2 or r.shape[1] not in (2, 3) for r in rects):
        raise ValueError(f"--regions must hold a list of rectangles, each a list of [row, "
                         f"column] or [plane, row, column] vertices; {path} holds {doc!r:.80}")
    return rects


def _record(path, accept_edited):
    from .workflows.records import load_record

    return load_record(path, accept_edited=accept_edited)


def _product_name(layer_name: str) -> str:
    """``"interval width (model)"`` -> ``"interval_width"``: the group of a product."""
    import re

    base = re.sub(r"\s*\([^)]*\)\s*$", "", layer_name)
    return re.sub(r"[^0-9A-Za-z]+", "_", base).strip("_").lower() or "product"


# -- calibrate -------------------------------------------------------------------------------


def run_calibrate(args) -> int:
    """Run ``calibrate``; return the exit status."""
    from ._jobs import run_to_end
    from .workflows.calibrate import calibrate_job
    from .workflows.records import save_record
    from .workflows.tiles import plan_tiles

    try:
        outputs = _with_training_regions(_read(args.prediction), args.prediction)
        truth = _truth(args.truth)
        if args.plan is not None:
            # the truth lies on the outputs' grid (no class axis): the plan's grid
            regions = plan_tiles(truth, tile_shape=tuple(args.tile), n_tiles=args.plan,
                                 seed=args.seed)[0]
        else:
            regions = _regions(args.regions)
        job = calibrate_job(outputs, truth, method=args.method, alpha=args.alpha,
                            delta=args.delta, rule=args.rule, bound=args.bound,
                            tile_shape=tuple(args.tile), regions=regions, sigma=args.sigma,
                            data_range=tuple(args.data_range) if args.data_range else None,
                            seed=args.seed,
                            leakage="report" if args.allow_leakage else "refuse")
        with _on_scheduler(args.scheduler):
            cal = run_to_end(job, callback=lambda step: print(
                f"calibrate: step {step[0]}/{step[1]}", file=sys.stderr, flush=True))
        saved = save_record(cal.record, args.output)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        return _error(err)
    print(cal.result.guarantee)
    if cal.record.get("leakage"):
        print(cal.record["leakage"]["message"])
    print(f"record: {saved} ({len(cal.tiles)} tiles)")
    return 0


def _with_training_regions(outputs: dict, path) -> dict:
    """Give the outputs the model's training regions when the store's run names them.

    The store's ``run.model`` describes the model; a model trained by ``train`` has
    ``training_regions`` there, which calibration checks the tiles against (as it does for
    prediction layers). Without them the arrays are returned as they are.
    """
    from types import SimpleNamespace

    from .inference._store import read_root

    model = ((read_root(Path(path)) or {}).get("run") or {}).get("model") or {}
    if not isinstance(model, dict) or model.get("training_regions") is None:
        return outputs
    info = {"name": model.get("name"), "training_regions": model["training_regions"]}
    return {k: SimpleNamespace(data=v, name=k, metadata={"im2im_uq": {"model": info}},
                               scale=(1.0,) * v.ndim, translate=(0.0,) * v.ndim)
            for k, v in outputs.items()}


def _read(path, **kwargs):
    from .inference._store import read_outputs

    return read_outputs(path, name="PREDICTION.zarr", **kwargs)


# -- apply -----------------------------------------------------------------------------------


#: Inside ``calibrated/``: one uint8 array per product, one element per block (1 = written).
DONE = "_done"


def _write_block(*, inputs, record, bounds, region, targets, index):
    """Compute and write one block of every product, all its levels, then mark it. A task.

    ``inputs`` maps each output to its level-0 zarr array (path); the task reads the block's
    ``region`` of each (every class, if any), applies ``record`` to it
    (:func:`~napari_im2im_uq.workflows.apply.product_arrays`: products are per pixel) and
    writes each product's block into every level of its pyramid (``targets``: per product
    ``(path, axes, levels, marks)``), then marks it. Nothing but the block is held.
    """
    import zarr

    from .inference._pyramid import pyramid
    from .workflows.apply import product_arrays

    arrays = {}
    for name, path in inputs.items():
        source = zarr.open_array(store=path, mode="r")
        arrays[name] = source[(slice(None),) * (source.ndim - len(region)) + region]
    blocks = product_arrays(record, arrays, show_bounds=bounds)
    for block, (path, axes, levels, done) in zip(blocks, targets, strict=True):
        for k, level in enumerate(pyramid(block, axes, levels)):
            first = [r.start >> k if a in "YX" else r.start
                     for a, r in zip(axes, region, strict=True)]
            target = zarr.open_array(store=path, path=str(k), mode="r+")
            target[tuple(slice(f, f + m) for f, m in zip(first, level.shape,
                                                           strict=True))] = level
        zarr.open_array(store=done, mode="r+")[index] = 1
    return None


def _ome_of(store: Path, reference: str, name: str, ndim: int, levels: int) -> dict:
    """OME metadata of a product: the reference output's last ``ndim`` axes, its geometry."""
    import zarr

    from .inference._ome import image_metadata

    ome = dict(zarr.open_group(store=str(store / reference), mode="r").attrs).get("ome", {})
    try:
        scales = ome["multiscales"][0]
        axes = scales["axes"][-ndim:]
        transforms = {t["type"]: t[t["type"]] for t in
                      scales["datasets"][0]["coordinateTransformations"]}
        letters = "".join(a["name"].upper() for a in axes)
        unit = next((a.get("unit") for a in axes if a.get("unit")), None)
        return image_metadata(name, letters, transforms["scale"][-ndim:],
                              transforms["translation"][-ndim:], unit=unit, levels=levels)
    except (KeyError, IndexError, TypeError, ValueError):
        return {}


def _previous(store: Path):
    """Return the attribute of an earlier apply's ``calibrated`` group (refuse one not ours)."""
    import json

    folder = store / GROUP
    if not folder.exists():
        return None
    try:
        doc = json.loads((folder / "zarr.json").read_text(encoding="utf-8"))
        attrs = doc["attributes"][ATTRS]
        ours = set(attrs["products"]) | {DONE}
    except (OSError, ValueError, KeyError, TypeError):
        attrs, ours = None, set()
    entries = sorted(p.name for p in folder.iterdir() if p.name != "zarr.json")
    foreign = [n for n in entries if n not in ours]
    if foreign or attrs is None:
        raise FileExistsError(
            f"PREDICTION.zarr {store} holds a {GROUP}/ group that apply did not write (it holds "
            f"{', '.join(foreign[:8]) or 'no products list'}); it is never replaced. Move it "
            "out of the store")
    return attrs


def _plan_products(shown):
    """Name each product's group; return ``({name: description}, [(name, dask array)])``."""
    import dask.array
    import numpy as np

    from . import layers

    products, todo = {}, []
    for data, kwargs, kind in shown:
        name = _product_name(kwargs["name"])
        while name in products:
            name += "_"
        arr = data if hasattr(data, "dask") else dask.array.from_array(np.asarray(data))
        arr = arr.rechunk(arr.chunksize)
        products[name] = {"layer": kwargs["name"], "kind": kind,
                          "product": kwargs["metadata"][layers.META_KEY].get("product"),
                          "limits": None if kwargs.get("contrast_limits") is None else
                          [float(v) for v in kwargs["contrast_limits"]],
                          "shape": list(arr.shape), "chunks": list(arr.chunksize)}
        todo.append((name, arr))
    return products, todo


def _block_graph(task: str, chunks, **write):
    """Return the graph of the block tasks: a rule, block -> its :func:`_write_block` task."""
    import functools

    import numpy as np
    from dask.highlevelgraph import HighLevelGraph

    from .inference._graph import BlockLayer
    from .inference._graph import task as make_task

    starts = [np.r_[0, np.cumsum(c)] for c in chunks]

    def build(index):
        region = tuple(slice(int(s[i]), int(s[i + 1])) for s, i in zip(starts, index,
                                                                        strict=True))
        key = (task, *index)
        return {key: make_task(key, functools.partial(_write_block, region=region,
                                                      index=index, **write))}

    layer = BlockLayer(task, tuple(len(c) for c in chunks), build)
    return HighLevelGraph.from_collections(task, layer, dependencies=[])


def _missing_blocks(store: Path) -> str:
    """Say which blocks of an interrupted prediction are missing and how to finish it."""
    import json

    import numpy as np

    from .inference._zarr import DONE, _read_marks

    try:
        grid = tuple(json.loads((store / DONE / "zarr.json").read_text(encoding="utf-8"))
                     ["shape"])
        marks = _read_marks(store, grid) != 0
    except (OSError, ValueError, KeyError, TypeError):
        return " (run the same `napari-im2im-uq predict` command again to finish it)"
    missing = np.argwhere(~marks)
    first = ", ".join(str(tuple(int(v) for v in m)) for m in missing[:5])
    more = ", ..." if len(missing) > 5 else ""
    return (f": {int(marks.sum()):,} of {marks.size:,} blocks are written, {len(missing):,} "
            f"missing (block indices {first}{more} on a grid of {grid}). Applying to the "
            "written blocks only would leave the products partly empty: run the same "
            "`napari-im2im-uq predict` command again (it resumes from the written blocks), "
            "then apply")


def _apply_job(record, store: Path, *, bounds: bool, drift: bool, scheduler):
    """Write the products of ``record`` into ``store``; a generator of ``(done, total)``.

    Each product is a multiscale OME image group ``calibrated/<name>`` (levels as the
    prediction's, :mod:`.inference._pyramid`); a block task writes a block of every level, then
    marks it in ``calibrated/_done/<name>``. A rerun with the same record and products resumes
    (only unmarked blocks run); another record or other products replace the groups.
    Returns ``(products, verdict)``: {group path: layer name} and the drift verdict or None.
    """
    import shutil

    import dask
    import numpy as np
    import zarr

    from . import layers
    from .inference._executor import check_scheduler, run_graph
    from .inference._graph import BlockKeys
    from .inference._pyramid import level_shape, n_levels
    from .inference._store import StoreLock, read_root
    from .inference._zarr import _read_marks
    from .workflows.apply import apply_record

    check_scheduler(scheduler)
    stored = read_root(store)
    if not stored or not stored.get("complete", False):
        raise ValueError(f"PREDICTION.zarr must be a complete store written by "
                         f"`napari-im2im-uq predict`; {store} is not{_missing_blocks(store)}")
    outputs = _read(store)
    shown = apply_record(record, outputs, show_bounds=bounds, check_drift=drift)
    if not shown:
        raise ValueError(f"RECORD gives no product for the outputs of {store}")
    verdict = shown[0][1]["metadata"][layers.META_KEY].get("drift")
    reference = next(iter(stored["outputs"].values()))["path"].split("/")[0]
    products, todo = _plan_products(shown)
    checksum = record.get("checksum")
    lock = StoreLock(store).acquire()
    try:
        previous = _previous(store)
        resume = (previous is not None and previous.get("record_checksum") == checksum
                  and previous.get("products") == products)
        root = zarr.open_group(store=str(store), mode="r+")
        if not resume:
            if previous is not None:
                shutil.rmtree(store / GROUP)
            group = root.create_group(GROUP, attributes={ATTRS: {
                "products": products, "complete": False, "drift": verdict,
                "record_checksum": checksum}})
            marks = group.create_group(DONE)
        else:
            group = root[GROUP]
            marks = group[DONE]
        # one task per block reads the block of the outputs and writes every product: the
        # graph is a rule (a block's task is built when its wave runs), memory is the blocks
        # in flight and the planning costs nothing per block
        chunks = todo[0][1].chunks
        members = []
        for name, arr in todo:
            if arr.chunks != chunks:
                raise ValueError(f"RECORD gives products on different grids ({name}: "
                                 f"{arr.chunksize}, {todo[0][0]}: {todo[0][1].chunksize})")
            axes = "ZYX"[-arr.ndim:]
            levels = n_levels(arr.shape, arr.chunksize, axes)
            if not resume:
                sub = group.create_group(name, attributes={"ome": _ome_of(
                    store, reference, products[name]["layer"], arr.ndim, levels)})
                for k in range(levels):
                    sub.create_array(str(k), shape=level_shape(arr.shape, axes, k),
                                     chunks=level_shape(arr.chunksize, axes, k),
                                     dtype=arr.dtype, fill_value=0)
                marks.create_array(name, shape=arr.numblocks, chunks=(1,) * arr.ndim,
                                   dtype="uint8", fill_value=0)
            members.append((str(store / GROUP / name), axes, levels,
                            str(store / GROUP / DONE / name)))
        grid = tuple(len(c) for c in chunks)
        # a block task marks every product after writing it, the last product last
        written = (_read_marks(store, grid, array=f"{GROUP}/{DONE}/{todo[-1][0]}") != 0)
        inputs = {k: str(store / spec["path"]) for k, spec in stored["outputs"].items()}
        task = f"im2im-apply-{dask.base.tokenize(checksum, store, bounds)}"
        graph = _block_graph(task, chunks, inputs=inputs, record=record, bounds=bounds,
                             targets=tuple(members))
        keys = BlockKeys(task, grid, np.flatnonzero(written.reshape(-1) == 0))
        done = int(written.sum())
        total = done + len(keys)
        yield done, total
        yield from run_graph(graph, keys, scheduler=scheduler, done=done, total=total)
        if (_read_marks(store, grid, array=f"{GROUP}/{DONE}/{todo[-1][0]}") != 0).all():
            group.attrs[ATTRS] = {**dict(group.attrs)[ATTRS], "complete": True}
    finally:
        lock.release()
    return {f"{GROUP}/{n}": p["layer"] for n, p in products.items()}, verdict


def run_apply(args) -> int:
    """Run ``apply``; return the exit status."""
    from ._jobs import run_to_end
    from .inference._cli import _progress_bar

    store = Path(args.prediction).expanduser().resolve()
    bar = None

    def progress(step):
        nonlocal bar
        done, total = step
        if bar is None:
            bar = _progress_bar(total, done)
        else:
            bar.update(done - bar.n)

    try:
        record = _record(args.record, args.accept_edited)
        job = _apply_job(record, store, bounds=args.bounds, drift=not args.no_drift,
                         scheduler=args.scheduler)
        products, verdict = run_to_end(job, callback=None if args.no_progress else progress)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        return _error(err)
    finally:
        if bar is not None:
            bar.close()
    for path, name in products.items():
        print(f"{name}: {store / path / '0'}")
    if verdict:
        print(verdict["message"])
    return 0


# -- evaluate --------------------------------------------------------------------------------


def _png(figure) -> bytes:
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _example_figure(record, outputs: dict, truth, figure) -> str:
    """Draw one held-out plane: truth, prediction and each calibrated product; return its title.

    The middle plane, cropped to its central 512 x 512 pixels at most; only that crop is read
    from the store.
    """
    import numpy as np

    from .workflows.apply import product_arrays

    grid = truth.shape
    plane = grid[0] // 2 if len(grid) == 3 else None
    rows, cols = grid[-2:]
    r0, c0 = max(0, (rows - 512) // 2), max(0, (cols - 512) // 2)
    crop = (slice(r0, min(rows, r0 + 512)), slice(c0, min(cols, c0 + 512)))
    where = crop if plane is None else (plane, *crop)

    def read(a):
        return np.asarray(a[(slice(None),) * (a.ndim - len(where)) + where])

    arrays = {k: read(v) for k, v in outputs.items()}
    shown = [("ground truth", read(truth), "gray", None)]
    if "prediction" in arrays:
        shown.append(("prediction", arrays["prediction"], "gray", None))
    for name, data in product_arrays(record, arrays, names=True):
        data = np.asarray(data)
        cmap = "tab10" if data.dtype.kind in "iub" and data.max(initial=0) > 1 else "magma"
        shown.append((name, data, cmap, None))
    axes = figure.subplots(1, len(shown), squeeze=False)[0]
    for ax, (name, data, cmap, _) in zip(axes, shown, strict=True):
        finite = data[np.isfinite(data)] if data.dtype.kind == "f" else data
        lo, hi = (np.percentile(finite, (1, 99)) if finite.size else (0.0, 1.0))
        im = ax.imshow(data, cmap=cmap, vmin=float(lo), vmax=float(hi if hi > lo else lo + 1),
                       interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.set_xticks([]), ax.set_yticks([])
        if cmap != "gray":
            figure.colorbar(im, ax=ax, shrink=0.7)
    where_said = "" if plane is None else f"plane {plane}, "
    title = (f"The record applied to one region ({where_said}rows {crop[0].start}-"
             f"{crop[0].stop}, columns {crop[1].start}-{crop[1].stop}; calibration tiles lying "
             "there are not masked)")
    figure.suptitle(title, fontsize=11)
    return title


def _html(record_path, report: dict, guarantee: str, figures: list, facts: list) -> str:
    import base64
    import html

    said = report["held_out"]["message"]
    rows = "\n".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                     for k, v in [*facts, *report["summary"]] if k != "held-out risk")
    images = "\n".join(
        f"<h3>{html.escape(caption)}</h3><img alt=\"{html.escape(caption)}\" "
        f"src=\"data:image/png;base64,{base64.b64encode(png).decode('ascii')}\">"
        for caption, png in figures)
    title = f"Calibration report: {html.escape(Path(record_path).name)}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:70em;margin:2em auto;line-height:1.4}}
th{{text-align:left;vertical-align:top;padding-right:1em;white-space:nowrap}}
td,th{{border-bottom:1px solid #ddd;padding:.3em}}table{{border-collapse:collapse}}
img{{max-width:100%}}.g{{background:#f4f4f4;padding:1em}}</style></head>
<body><h1>{title}</h1>
<h2>Held-out result</h2><p>{html.escape(said)}</p>
<h2>The guarantee</h2><p class="g">{html.escape(guarantee)}</p>
<h2>Summary</h2><table>
{rows}
</table>
<h2>Figures</h2>
{images}
</body></html>
"""


def run_evaluate(args) -> int:
    """Run ``evaluate``; return the exit status."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from ._diagnostics import plot_diagnostics
    from ._jobs import run_to_end
    from .calibration import CalibrationResult, methods
    from .workflows.diagnose import diagnose_job

    out = Path(args.output)
    try:
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"--output must be a folder for the report; {out} is a file")
        record = _record(args.record, args.accept_edited)
        outputs = _read(args.prediction)
        truth = _truth(args.truth)
        regions = _regions(args.regions) if args.regions else None
        with _on_scheduler(args.scheduler):
            report = run_to_end(diagnose_job(record, outputs, truth, regions=regions,
                                             n_splits=args.splits, seed=args.seed))
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        return _error(err)
    result = CalibrationResult.from_dict(record["calibration"], where="record.calibration")
    n_plots = 1 + len(methods.get(result.method).plots)  # the risk histogram, then the method's
    figure = Figure(figsize=(5.2 * n_plots, 4.8), layout="constrained")
    plot_diagnostics(report, figure, ncols=n_plots)  # one row: no empty panel
    figures = [("Diagnostics on the held-out tiles", _png(figure))]
    example = Figure(figsize=(15, 4.6), layout="constrained")
    caption = _example_figure(record, outputs, truth, example)
    figures.append((caption, _png(example)))
    out.mkdir(parents=True, exist_ok=True)
    (out / "diagnostics.png").write_bytes(figures[0][1])
    (out / "example.png").write_bytes(figures[1][1])
    facts = [("record", str(args.record)), ("prediction store", str(args.prediction)),
             ("held-out ground truth", f"{args.truth} (shape {tuple(truth.shape)})")]
    page = _html(args.record, report, result.guarantee, figures, facts)
    (out / "report.html").write_text(page, encoding="utf-8")
    for label, text in report["summary"]:
        print(f"{label}: {text}")
    print(f"report: {out / 'report.html'}")
    return 0
