"""A prediction store is the user's data: what is ours in it, one writer at a time, the input.

- **Ownership.** A store is this tool's when its root ``zarr.json`` carries the
  ``napari_im2im_uq`` attribute; that root metadata is the first thing a new store gets
  (written atomically, marked ``"created": false``) and its arrays come after, so a store killed
  at any moment is recognised as ours: with ``"created"`` still false no block was written and it
  is created again. Only the entries this tool writes (:func:`ours_and_foreign`) are ever
  removed; a store holding anything else is refused, whatever ``overwrite`` says.
- **One writer.** :class:`StoreLock` is a folder ``_lock`` in the store holding a zarr group
  whose attributes name the holder (pid, host, process start, time); it is taken by renaming a
  prepared folder onto that name, which fails while another holds it. A lock whose process is
  gone (same host, pid dead or reused) is reported and taken over.
- **The input of each block.** Each block's task also writes the BLAKE2b of the input window
  it read (:func:`fingerprint_graph`); a resume recomputes those of the done blocks
  (:func:`changed_blocks`) and refuses a change, naming the planes (:func:`where`).
- **Input and output apart.** :func:`check_apart` refuses an output that is, contains or lies
  inside a file or store the input is read from.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import shutil
import socket
import threading
import uuid
import warnings
import weakref
from pathlib import Path

import numpy as np

from .._files import TEMP_PREFIX, write_atomic
from .._warnings import Im2ImUQWarning

__all__ = ["ATTRS_KEY", "LOCK", "StoreLock", "changed_blocks", "check_apart", "fingerprint_graph",
           "input_paths", "ours_and_foreign", "read_outputs", "read_root", "remove_ours", "where",
           "write_root"]

ATTRS_KEY = "napari_im2im_uq"
LOCK = "_lock"
#: Entries of a store written by this tool besides its outputs.
FIXED = ("zarr.json", "_done", "_input_blake2b", LOCK)
_HELD: set[str] = set()  # tokens of the locks this process holds
_HELD_LOCK = threading.Lock()


# -- what is in a store ----------------------------------------------------------------------


def read_root(path: Path):
    """Return the root group's ``napari_im2im_uq`` attribute, or None when it is not ours.

    Raises ``ValueError`` when there is a root ``zarr.json`` that is not readable JSON.
    """
    meta = path / "zarr.json"
    if not meta.is_file():
        return None
    try:
        doc = json.loads(meta.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, OSError) as err:
        raise ValueError(f"its zarr.json is not readable ({err})") from None
    attrs = doc.get("attributes") if isinstance(doc, dict) else None
    ours = attrs.get(ATTRS_KEY) if isinstance(attrs, dict) else None
    return ours if isinstance(ours, dict) else None


def read_outputs(path, *, name: str = "prediction", warn_incomplete: bool = True,
                 levels: bool = False) -> dict:
    """Return the outputs of a store written by ``predict`` as dask arrays, by name.

    ``name`` is how the store is said in the error (a command's argument). An interrupted
    run's store is read with a warning on stderr (unwritten tiles are NaN). With
    ``levels=True`` each output is the list of its resolution levels, finest first, as the
    group's OME metadata lists them (what napari takes as a multiscale image).
    """
    import sys

    import dask.array as da
    import zarr

    path = Path(path)
    try:
        root = zarr.open_group(store=str(path), mode="r")
        info = dict(root.attrs)[ATTRS_KEY]
        outputs = {k: da.from_zarr(root[spec["path"]]) for k, spec in info["outputs"].items()}
        if levels:
            outputs = {k: [da.from_zarr(root[f"{group}/{d['path']}"]) for d in
                           root[group].attrs["ome"]["multiscales"][0]["datasets"]]
                       for k, spec in info["outputs"].items()
                       for group in [spec["path"].rsplit("/", 1)[0]]}
    except Exception as err:  # noqa: BLE001 - any unreadable store gets the same answer
        raise ValueError(f"{name} must be a zarr store written by `napari-im2im-uq predict`; "
                         f"{path}: {err}") from None
    if warn_incomplete and not info.get("complete", True):
        print(f"warning: {path} is not complete (an interrupted run): unwritten tiles are "
              "NaN and read as 0", file=sys.stderr)
    return outputs


def write_root(path: Path, description: dict) -> None:
    """Write the root group's metadata with ``description`` as our attribute, atomically."""
    doc = {"zarr_format": 3, "node_type": "group", "attributes": {ATTRS_KEY: description}}
    write_atomic(path / "zarr.json", json.dumps(doc, indent=1))


def _is_temporary(name: str) -> bool:
    # ours (_files.write_atomic, a lock being taken) and zarr's own atomic writes
    return name.startswith(TEMP_PREFIX) or (name.startswith("zarr.") and name.endswith(".partial"))


def ours_and_foreign(path: Path, stored: dict | None) -> tuple[list[str], list[str]]:
    """Split the entries of the store ``path`` into this tool's and the others (sorted names).

    Ours: the root ``zarr.json``, ``_done``, ``_input_blake2b``, ``_lock``, our temporary files
    and one OME image group per output the root names (holding ``zarr.json`` and its array
    ``0`` only). Everything else, at the top or inside those groups, is foreign.
    """
    outputs = set()
    fixed = FIXED if stored is not None else (LOCK,)  # not our root: only a lock can be ours
    if stored:
        names = stored.get("outputs", {})
        outputs = {str(n) for n in (names if isinstance(names, dict | list) else ())}
        outputs |= {str(n) for n in stored.get("removing", ())}
    ours, foreign = [], []
    for entry in sorted(path.iterdir(), key=lambda p: p.name):
        name = entry.name
        if name in fixed or _is_temporary(name):
            ours.append(name)
        elif name in outputs and entry.is_dir():
            inner = {p.name for p in entry.iterdir()}
            levels = {n for n in inner if n.isdigit() and (entry / n).is_dir()}  # the pyramid
            extra = sorted(inner - {"zarr.json", "0"} - levels)
            for level in sorted(levels | ({"0"} & inner)):
                extra += [f"{level}/{n}" for n in sorted(p.name for p in
                                                         (entry / level).iterdir())
                          if n not in ("zarr.json", "c")]
            if extra:
                foreign += [f"{name}/{n}" for n in extra]
            else:
                ours.append(name)
        else:
            foreign.append(name)
    return ours, foreign


def remove_ours(path: Path, names) -> None:
    """Remove the entries ``names`` (from :func:`ours_and_foreign`) of the store.

    The lock and the root ``zarr.json`` stay: the caller rewrites the root (``"created":
    false``) before this runs, so the store is recognised as ours however far this gets.
    """
    for name in names:
        if name in (LOCK, "zarr.json"):
            continue
        target = path / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()


# -- input and output apart -------------------------------------------------------------------


def input_paths(image) -> list[Path]:
    """Files or stores that ``image`` is read from, as far as can be told (resolved paths).

    A zarr array on a local store, a numpy memmap (``.npy``, a memory-mapped TIFF) and dask
    arrays made from them (``da.from_array``, ``da.from_zarr``).
    """
    found = []

    def visit(obj) -> None:
        filename = getattr(obj, "filename", None)
        if filename and type(obj).__name__ == "memmap":
            found.append(Path(filename))
            return
        store = getattr(obj, "store", None)
        root = getattr(store, "root", None)
        if root is not None and hasattr(obj, "path"):
            found.append(Path(root) / str(obj.path or ""))

    visit(image)
    base = getattr(image, "_meta", None)
    graph = getattr(image, "dask", None)
    if base is not None and graph is not None and hasattr(graph, "layers"):
        for name, layer in graph.layers.items():
            if str(name).startswith("original-"):
                for value in dict(layer).values():
                    visit(value)
    return [p.expanduser().resolve() for p in found]


def check_apart(output: Path, inputs, *, output_name="store", input_name="image") -> None:
    """Refuse an ``output`` that is, contains or lies inside one of ``inputs``."""
    for source in inputs:
        if output == source:
            relation = "is"
        elif output in source.parents:
            relation = "contains"
        elif source in output.parents:
            relation = "lies inside"
        else:
            continue
        raise ValueError(
            f"{output_name} must be apart from the {input_name} it predicts from; {output} "
            f"{relation} {source}, which the {input_name} is read from. Choose another "
            f"{output_name}"
        )


# -- the input of each block: its fingerprint ---------------------------------------------------


def _fingerprint(pieces) -> np.ndarray:
    """BLAKE2b (16 bytes) of an input window given as its pieces (rows of arrays)."""
    digest = hashlib.blake2b(digest_size=16)
    for row in pieces:
        for piece in row:
            piece = np.ascontiguousarray(piece)
            digest.update(f"{piece.shape}{piece.dtype.str}".encode())
            digest.update(piece.data)
    return np.frombuffer(digest.digest(), dtype=np.uint8)


def fingerprint_graph(plan, name: str):
    """Return a graph with a task per block ``(name, iz, iy, ix)``: its input's fingerprint.

    The window is the block and its halo of the input as given (derived channels follow from
    it) and, for a mask model, of the prediction it rates (at the output resolution). When the
    model derives no channel the pieces come from the very chunks the prediction reads, so
    nothing is read twice. The tasks are built when they are run (:mod:`._graph`).
    """
    from dask.highlevelgraph import HighLevelGraph

    from ._graph import BlockLayer, piece_tasks, rechunk, task, window_pieces

    pz, br, bc = plan.block_shape
    src = rechunk(plan.source, (pz, plan.source.shape[1], br, bc))
    bounds = [np.cumsum((0, *c)) for c in src.chunks]
    pred = getattr(plan, "prediction", None)
    pred_bounds = None if pred is None else [np.cumsum((0, *c)) for c in pred.chunks]

    def build(index):
        iz, iy, ix = index
        y0, y1 = int(bounds[2][iy]), int(bounds[2][iy + 1])
        x0, x1 = int(bounds[3][ix]), int(bounds[3][ix + 1])
        tasks: dict = {}
        pieces, _ = window_pieces(src.name, src.chunks, iz, y0, y1, x0, x1, plan.halo, 1,
                                  bounds)
        refs = piece_tasks(pieces, f"{name}-in", index, tasks)
        if pred is not None:
            more, _ = window_pieces(pred.name, pred.chunks, iz, y0, y1, x0, x1, plan.halo,
                                   plan.scale_factor, pred_bounds)
            refs = [*refs, *piece_tasks(more, f"{name}-pred", index, tasks)]
        tasks[(name, *index)] = task((name, *index), _fingerprint, refs)
        return tasks

    grid = tuple(len(c) for c in (src.chunks[0], src.chunks[2], src.chunks[3]))
    layer = BlockLayer(name, grid, build, helpers=(f"{name}-in", f"{name}-pred"))
    return HighLevelGraph.from_collections(name, layer,
                                           dependencies=[src] if pred is None else [src, pred])


def changed_blocks(plan, done, stored, scheduler) -> list:
    """Return the blocks of ``done`` whose input window's fingerprint differs from ``stored``.

    ``done`` is a list of block indices ``(iz, iy, ix)``, ``stored`` their fingerprints (one
    row each).
    """
    from ._executor import run_graph
    from ._graph import BlockKeys

    name = f"im2im-verify-{uuid.uuid4().hex}"
    graph = fingerprint_graph(plan, name)
    grid = graph.layers[name].grid
    flat = np.ravel_multi_index(tuple(np.asarray(done, dtype=np.int64).T), grid)
    now = {}
    keys = BlockKeys(name, grid, flat)
    for _ in run_graph(graph, keys, scheduler=scheduler,
                       collect=lambda k, v: now.__setitem__(tuple(k[1:]), v)):
        pass
    return [b for b, old in zip(done, stored, strict=True) if not np.array_equal(now[b], old)]


def where(plan, blocks) -> str:
    """Return words for the input region of ``blocks``: planes (3-D) or rows/columns (2-D)."""
    bounds = [np.cumsum((0, *c)) for c in plan.x.chunks]
    if plan.has_z:
        planes = sorted({z for iz, _, _ in blocks
                         for z in range(int(bounds[0][iz]), int(bounds[0][iz + 1]))})
        runs, start = [], planes[0]
        for a, b in zip(planes, [*planes[1:], None], strict=True):
            if b != a + 1:
                runs.append(str(start) if start == a else f"{start}-{a}")
                start = b
        return ("plane " if len(planes) == 1 else "planes ") + ", ".join(runs)
    parts = [f"rows {int(bounds[2][iy])}-{int(bounds[2][iy + 1]) - 1} x columns "
             f"{int(bounds[3][ix])}-{int(bounds[3][ix + 1]) - 1}" for _, iy, ix in blocks[:6]]
    more = f" and {len(blocks) - 6} more blocks" if len(blocks) > 6 else ""
    return "the blocks at " + "; ".join(parts) + more


# -- one writer at a time ---------------------------------------------------------------------


def _start_ticks(pid: int):
    """Start time of process ``pid`` in clock ticks since boot (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int, ticks) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except OSError:
        return False
    now = _start_ticks(pid)
    return ticks is None or now is None or now == ticks  # a reused pid is another process


def _holder(folder: Path):
    try:
        doc = json.loads((folder / "zarr.json").read_text(encoding="utf-8"))
        info = doc["attributes"][ATTRS_KEY + "_lock"]
        return info if isinstance(info, dict) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _said(info) -> str:
    if not info:
        return "a run whose lock holds no readable holder"
    return (f"pid {info.get('pid')} on host {info.get('host')!r} since "
            f"{info.get('started')}")


class StoreLock:
    """The one-writer lock of a store (see the module's docstring).

    ``StoreLock(path).acquire()`` takes it or raises ``FileExistsError`` naming the holder;
    :meth:`release` gives it back (idempotent); :meth:`release_with` ties the release to the
    life of an object (a generator that may never run).
    """

    def __init__(self, path: Path):
        self.path = path
        self.token = uuid.uuid4().hex
        self.held = False

    @property
    def folder(self) -> Path:
        return self.path / LOCK

    def _info(self) -> dict:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "process_start": _start_ticks(os.getpid()),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "token": self.token,
        }

    def _prepare(self) -> Path:
        tmp = self.path / f"{TEMP_PREFIX}lock-{uuid.uuid4().hex}"
        tmp.mkdir()
        doc = {"zarr_format": 3, "node_type": "group",
               "attributes": {ATTRS_KEY + "_lock": self._info()}}
        (tmp / "zarr.json").write_text(json.dumps(doc), encoding="utf-8")
        return tmp

    def _stale(self, info) -> bool:
        if not info:
            return False
        if info.get("host") != socket.gethostname() or not isinstance(info.get("pid"), int):
            return False
        if info["pid"] == os.getpid():
            with _HELD_LOCK:
                return info.get("token") not in _HELD
        return not _alive(info["pid"], info.get("process_start"))

    def acquire(self) -> StoreLock:
        """Take the lock; raise ``FileExistsError`` naming its holder when another has it."""
        tmp = self._prepare()
        try:
            for _ in range(3):
                try:
                    os.rename(tmp, self.folder)
                except OSError:  # held (a non-empty _lock folder is there)
                    info = _holder(self.folder)
                    if not self._stale(info):
                        raise FileExistsError(
                            f"store {self.path} is being written by another run: {_said(info)} "
                            f"(lock {self.folder}). Wait for it to finish; if that run is gone "
                            "for good, delete the lock folder"
                        ) from None
                    self._take_over(info)
                    continue
                self.held = True
                with _HELD_LOCK:
                    _HELD.add(self.token)
                return self
            raise FileExistsError(f"store {self.path}: could not take its lock {self.folder}")
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _take_over(self, info) -> None:
        aside = self.path / f"{TEMP_PREFIX}stale-{uuid.uuid4().hex}"
        try:
            os.rename(self.folder, aside)
        except OSError:
            return  # another writer moved it first; try again
        moved = _holder(aside)
        if not moved or moved.get("token") != info.get("token"):  # a fresh lock: put it back
            with contextlib.suppress(OSError):
                os.rename(aside, self.folder)
            return
        shutil.rmtree(aside, ignore_errors=True)
        warnings.warn(
            f"store {self.path} had a stale lock of {_said(info)}, whose process is gone; "
            "taken over (blocks it had not marked done will be written again)",
            Im2ImUQWarning,
            stacklevel=5,
        )

    def release(self) -> None:
        """Give the lock back if this object holds it (no error when already released)."""
        if not self.held:
            return
        self.held = False
        with _HELD_LOCK:
            _HELD.discard(self.token)
        info = _holder(self.folder)
        if not info or info.get("token") != self.token:
            return
        aside = self.path / f"{TEMP_PREFIX}released-{uuid.uuid4().hex}"
        try:
            os.rename(self.folder, aside)
        except OSError:
            return
        shutil.rmtree(aside, ignore_errors=True)

    def release_with(self, owner) -> None:
        """Release when ``owner`` is garbage-collected (or at exit) if not released before."""
        weakref.finalize(owner, self.release)
