"""What runs inside a dask task: the per-process model cache and the block function (torch).

A block is a region of ``planes x rows x columns`` input pixels (all channels). The task gets
the block extended by the halo (real neighbouring pixels where they exist, and how much to
mirror at the image's borders), cuts it into tiles whose origins are multiples of the
network's divisor, runs the tiles through the model in batches and writes the cropped
outputs into one stacked array ``(planes, output channels, rows * s, columns * s)``.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._warnings import Im2ImUQWarning
from ..models import _cache
from ._device import resolve

__all__ = [
    "ModelRef",
    "cache_info",
    "clear_cache",
    "get_model",
    "make_ref",
    "output_channels",
    "run_block",
]

_LOG = logging.getLogger("napari_im2im_uq.inference")
_DEVICE_LOCKS: dict[str, threading.Lock] = collections.defaultdict(threading.Lock)
_LIMITS: dict[tuple, dict] = {}
_THREADS = {"set": False}


@dataclass(frozen=True, eq=False)
class ModelRef:
    """How a worker process gets a model: a bundle (zoo name or folder), or the bundle's bytes.

    ``token`` is the model's identity in the process's model cache
    (:mod:`napari_im2im_uq.models._cache`): for a bundle, its folder and weights SHA-256, the
    same key :func:`~napari_im2im_uq.models.load_cached` uses, so the process that planned the
    prediction runs the very model it loaded; ``model_id`` identifies the model in a zarr run
    description.
    """

    token: str
    model_id: str
    path: str | None = None
    spec_json: str | None = None
    weights: bytes | None = field(default=None, repr=False)


def _spec_id(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def make_ref(model) -> ModelRef:
    """Describe ``model`` for the workers.

    A model loaded by :func:`~napari_im2im_uq.models.load_cached` travels by its bundle (the
    zoo name, or the folder's absolute path), with no copy of its weights; a model built in
    memory (or changed since it was loaded) has no bundle and is saved to bytes once here.
    """
    held = _cache.bundle_source(model)
    if held is not None:
        identity, source = held
        return ModelRef(token=identity, model_id=_spec_id(model.spec), path=source)
    from ..models import save_model

    cls = f"{type(model).__module__}.{type(model).__qualname__}"
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_model(model, Path(tmp) / "bundle")
        spec_json = (folder / "model.json").read_text(encoding="utf-8")
        weights = (folder / "weights.safetensors").read_bytes()
    model_id = _spec_id(json.loads(spec_json))
    # The network's structure too: modules outside its config (dropout added by hand) count.
    token = "memory|" + hashlib.sha256(f"{cls}|{model_id}|{model.network!r}".encode()).hexdigest()
    return ModelRef(token=token, model_id=model_id, spec_json=spec_json, weights=weights)


def _load(ref: ModelRef):
    from ..models import load_model

    if ref.path is not None:
        model = load_model(ref.path)
        if _spec_id(model.spec) != ref.model_id:
            raise RuntimeError(
                f"the model bundle {ref.path} changed since the prediction was set up "
                "(its model.json or weights differ); build the prediction again"
            )
        return model
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bundle"
        folder.mkdir()
        (folder / "weights.safetensors").write_bytes(ref.weights)
        (folder / "model.json").write_text(ref.spec_json, encoding="utf-8")
        return load_model(folder)


def _in_distributed_worker() -> bool:
    if "distributed" not in sys.modules:
        return False
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def _key(ref: ModelRef, device: str, precision: str):
    dev, dtype = resolve(device, precision)
    return (ref.token, dev, str(dtype)), dev, dtype


def register(ref: ModelRef, model, *, device: str, precision: str) -> None:
    """Make ``model`` (the caller's, on the CPU) the one that runs ``ref`` in this process.

    The cached model is never moved: when ``device``/``precision`` resolve to another device
    or dtype, a copy is moved there. Either way nothing is read from disk again.
    """
    key, dev, dtype = _key(ref, device, precision)

    def place():
        if str(model.device) == dev and model.dtype == dtype and _cache.bundle_source(model):
            return model  # the cached bundle model itself: already where it runs
        return model._copy().to(dev, dtype)

    _cache.get_or_load(key, place, count=False)


def get_model(ref: ModelRef, *, device: str, precision: str):
    """Return the model for ``ref`` on this process's ``device``, loading it at most once."""
    key, dev, dtype = _key(ref, device, precision)

    def load():
        if not _THREADS["set"] and _in_distributed_worker():
            import torch

            torch.set_num_threads(1)  # one tile at a time per worker thread: no oversubscription
            _THREADS["set"] = True
        return _load(ref).to(dev, dtype)

    return _cache.get_or_load(key, load)


def cache_info() -> dict:
    """Return the models loaded by this process so far and held now (tests, benchmarks)."""
    return _cache.cache_info()


def clear_cache() -> None:
    """Forget every cached model, learned out-of-memory limit and the load count."""
    _cache.clear_cache()
    _LIMITS.clear()


def output_channels(model, uq=None) -> list[tuple[str, int]]:
    """``(name, channels)`` of each output, in the order they are stacked in a block."""
    if uq is not None:
        return [(name, 1) for name in uq.names]
    # model.spec is a copy: made only for the class count (this runs once per block).
    return [
        (name, len(model.spec["classes"]) if name == "probabilities" else 1)
        for name in model.output_names
    ]


# -- the block function --------------------------------------------------------------------


def _is_oom(err: BaseException) -> bool:
    import torch

    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def _free_memory(device: str) -> None:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


def _device_lock(device: str):
    """One forward pass at a time on a GPU, or on a CPU that torch already runs in parallel.

    Distributed workers run torch on one thread each; their threads then run in parallel.
    """
    import torch

    if device == "cpu" and torch.get_num_threads() == 1:
        return contextlib.nullcontext()
    return _DEVICE_LOCKS[device]


def _tell(message: str) -> None:
    _LOG.warning(message)
    warnings.warn(message, Im2ImUQWarning, stacklevel=3)


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def _split(region, divisor: int):
    """Split a tile region in two along its longer side, at a multiple of ``divisor``."""
    r, c, tr, tc = region
    for long_rows in (tr >= tc, tr < tc):
        if long_rows:
            half = _round_up(-(-tr // 2), divisor)
            if half < tr:
                return [(r, c, half, tc), (r + half, c, tr - half, tc)]
        else:
            half = _round_up(-(-tc // 2), divisor)
            if half < tc:
                return [(r, c, tr, half), (r, c + half, tr, tc - half)]
    return None


def _assemble(pieces) -> np.ndarray:
    if isinstance(pieces, np.ndarray):
        return pieces
    rows = [np.concatenate(list(row), axis=-1) if len(row) > 1 else row[0] for row in pieces]
    return np.concatenate(rows, axis=-2) if len(rows) > 1 else rows[0]


def _pad_window(pieces, pads, scale: int) -> np.ndarray:
    arr = _assemble(pieces).astype(np.float32, copy=False)
    (top, bottom), (left, right) = pads
    if top or bottom or left or right:
        widths = ((0, 0), (0, 0), (top * scale, bottom * scale), (left * scale, right * scale))
        arr = np.pad(arr, widths, mode="symmetric")
    return arr


def run_block(
    ref: ModelRef,
    pieces,
    pred_pieces,
    *,
    pads,
    halo: int,
    tile: tuple[int, int],
    batch: int,
    device: str,
    precision: str,
    n_channels: int,
    uq=None,
) -> np.ndarray:
    """Run the model on one block and return its stacked outputs.

    Parameters
    ----------
    ref : ModelRef
    pieces : nested list of numpy.ndarray
        ``pieces[i][j]`` are ``(planes, C, r_i, c_j)`` parts of the input window (the block
        and its available halo); they are concatenated along rows and columns.
    pred_pieces : nested list of numpy.ndarray or None
        Mask models: the same on the output grid, from the prediction.
    pads : ((top, bottom), (left, right))
        Mirror padding (``np.pad`` mode "symmetric") that completes the window at the image's
        borders, in input pixels.
    halo : int
    tile : (rows, columns)
        Largest tile run at once (multiples of the divisor).
    batch : int
        Largest number of tiles per forward pass.
    device, precision : str
        As given to :func:`predict`; resolved in this process.
    n_channels : int
        Total output channels (see :func:`output_channels`).
    uq : napari_im2im_uq.inference._uq.Uncertainty, optional
        Derive the uncertainty outputs of a point prediction (TTA, MC dropout, ensemble,
        constant width) tile by tile, on the whole window (see :mod:`._uq`).

    Returns
    -------
    numpy.ndarray
        ``(planes, n_channels, rows * s, columns * s)`` float32.
    """
    model = get_model(ref, device=device, precision=precision)
    if uq is not None:
        from ._uq import wrap

        model = wrap(model, uq, key=(ref.token, device, precision),
                     get_model=lambda r: get_model(r, device=device, precision=precision))
    s, div = model.scale_factor, model.divisor
    window = _pad_window(pieces, pads, 1)
    pred_window = None if pred_pieces is None else _pad_window(pred_pieces, pads, s)
    planes = window.shape[0]
    rows, cols = window.shape[2] - 2 * halo, window.shape[3] - 2 * halo
    out = np.empty((planes, n_channels, rows * s, cols * s), dtype=np.float32)
    layout = output_channels(model)

    key = (ref.token, str(model.device), str(model.dtype))
    limits = _LIMITS.setdefault(key, {})
    batch = min(batch, limits.get("batch", batch))
    tile_r, tile_c = tile
    if "tile" in limits:
        tile_r, tile_c = min(tile_r, limits["tile"][0]), min(tile_c, limits["tile"][1])
    regions = [
        (r, c, min(tile_r, rows - r), min(tile_c, cols - c))
        for r in range(0, rows, tile_r)
        for c in range(0, cols, tile_c)
    ]
    # Work items: (plane, region); consecutive items of equal tile shape share a batch.
    pending = collections.deque(
        sorted(((z, reg) for reg in regions for z in range(planes)), key=lambda i: i[1][2:])
    )
    dev_lock = _device_lock(str(model.device))
    while pending:
        shape = pending[0][1][2:]
        items = []
        while pending and len(items) < batch and pending[0][1][2:] == shape:
            items.append(pending.popleft())
        try:
            _run_items(model, items, window, pred_window, out, halo, layout, dev_lock)
        except Exception as err:
            if not _is_oom(err):
                raise
            del err
            _free_memory(str(model.device))
            if len(items) > 1:
                batch = max(1, len(items) // 2)
                limits["batch"] = min(batch, limits.get("batch", batch))
                pending.extendleft(reversed(items))
                _tell(
                    f"out of memory on {model.device} with {len(items)} tiles of "
                    f"{shape[0]} x {shape[1]} pixels; retrying with {batch} tile(s) per batch"
                )
                continue
            (z, region) = items[0]
            parts = _split(region, div)
            if parts is None:
                raise MemoryError(
                    f"out of memory on {model.device} even with one tile of {shape[0]} x "
                    f"{shape[1]} pixels (plus a halo of {halo}); use a smaller model, "
                    "precision='float16' or device='cpu'"
                ) from None
            new_tile = (max(p[2] for p in parts), max(p[3] for p in parts))
            old = limits.get("tile", (tile_r, tile_c))
            limits["tile"] = (min(old[0], new_tile[0]), min(old[1], new_tile[1]))
            pending.extendleft(reversed([(z, p) for p in parts]))
            _tell(
                f"out of memory on {model.device} with one tile of {shape[0]} x {shape[1]} "
                f"pixels; retrying with tiles of {new_tile[0]} x {new_tile[1]}"
            )
    return out


def _run_items(model, items, window, pred_window, out, halo, layout, dev_lock) -> None:
    import torch

    s, div = model.scale_factor, model.divisor
    _, _, tr, tc = items[0][1]
    extra_r = -(tr + 2 * halo) % div
    extra_c = -(tc + 2 * halo) % div
    widths = ((0, 0), (0, 0), (0, extra_r), (0, extra_c))

    def cut(arr, z, r, c, f):
        part = arr[z, :, r * f : (r + tr + 2 * halo) * f, c * f : (c + tc + 2 * halo) * f]
        return part

    x = np.stack([cut(window, z, r, c, 1) for z, (r, c, _, _) in items])
    if extra_r or extra_c:
        x = np.pad(x, widths, mode="symmetric")
    p = None
    if pred_window is not None:
        p = np.stack([cut(pred_window, z, r, c, s) for z, (r, c, _, _) in items])
        if extra_r or extra_c:
            p = np.pad(p, tuple((a * s, b * s) for a, b in widths), mode="symmetric")
        p = torch.from_numpy(np.ascontiguousarray(p))
    x = torch.from_numpy(np.ascontiguousarray(x))
    with dev_lock:
        result = model.predict_tensor(x, prediction=p)
        result = {
            k: v[..., halo * s : (halo + tr) * s, halo * s : (halo + tc) * s].cpu()
            for k, v in result.items()
        }
    ch = 0
    for name, n in layout:
        values = result[name].numpy()
        for i, (z, (r, c, _, _)) in enumerate(items):
            out[z, ch : ch + n, r * s : (r + tr) * s, c * s : (c + tc) * s] = values[i]
        ch += n
