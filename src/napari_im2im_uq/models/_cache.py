"""The process's one cache of loaded models (torch).

Every place that needs a loaded model asks here: the prediction job loading a bundle by name
or folder, and the dask tasks that run blocks (in this process or in a distributed worker).
An entry is keyed by ``(identity, device, dtype)``: the identity of a bundle is its folder and
the SHA-256 of its weights (as ``model.json`` states it), so an edited bundle is loaded again;
a model built in memory has the identity its caller gives it (see
:func:`napari_im2im_uq.inference._worker.make_ref`). At most :data:`MAX_MODELS` models are held,
the least recently used is dropped first.

The cache lives in ``models/`` (not in ``inference/``) because loading a bundle is a models
concern: the prediction job and the workers share it without anything below ``inference``
needing dask, and the same loaded object serves both (a model loaded here is passed to the
workers by its bundle path, see :func:`bundle_source`).
"""

from __future__ import annotations

import collections
import threading
from pathlib import Path

__all__ = ["MAX_MODELS", "bundle_identity", "bundle_source", "cache_info", "clear_cache",
           "get_or_load", "load_cached"]

#: Models held per process.
MAX_MODELS = 4
CPU_KEY = ("cpu", "torch.float32")

# key -> (model, source): source is how a worker names the bundle (zoo name or folder), or None.
_CACHE: collections.OrderedDict = collections.OrderedDict()
_LOCK = threading.RLock()
_STATS = {"loads": 0}


def bundle_identity(folder, sha256) -> str:
    """Return the cache identity of a bundle: its resolved folder and the SHA-256 of its weights."""
    return f"bundle|{Path(folder).resolve()}|{sha256}"


def _evict() -> None:
    while len(_CACHE) > MAX_MODELS:
        _CACHE.popitem(last=False)


def get_or_load(key: tuple, load, *, source: str | None = None, count: bool = True):
    """Return the model cached under ``key``, calling ``load()`` once on a miss.

    ``count`` counts the call as a load (read from a bundle or its bytes); a copy of a held
    model moved to another device is not counted.
    """
    with _LOCK:
        entry = _CACHE.get(key)
        if entry is not None:
            _CACHE.move_to_end(key)
            return entry[0]
        model = load()
        if count:
            _STATS["loads"] += 1
        _CACHE[key] = (model, source)
        _evict()
        return model


def load_cached(name_or_path, *, search_paths=()):
    """Load a bundle (zoo name or folder) once per process, on the CPU in float32.

    The same object is returned while the bundle's ``model.json`` states the same weights
    SHA-256; treat it as read-only (move a copy, never the cached object).

    Parameters
    ----------
    name_or_path : str or path-like
        As for :func:`~napari_im2im_uq.models.load_model`.
    search_paths : iterable of path-like
        Extra folders searched for named bundles.

    Returns
    -------
    Im2ImModel

    Examples
    --------
    >>> from napari_im2im_uq.models import load_cached
    >>> load_cached("tem-sr4x-quantile") is load_cached("tem-sr4x-quantile")
    True
    """
    from ._bundle import load_model
    from ._catalog import read_spec

    spec = read_spec(name_or_path, search_paths=search_paths)
    folder = Path(spec["path"])
    # A folder travels to workers as its absolute path; a zoo name as the name.
    source = str(folder.resolve()) if Path(name_or_path).is_dir() else str(name_or_path)
    key = (bundle_identity(folder, spec.get("sha256")), *CPU_KEY)
    return get_or_load(key, lambda: load_model(folder), source=source)


def bundle_source(model) -> tuple[str, str] | None:
    """Return ``(identity, source)`` of a model this cache loaded from a bundle, else None.

    ``source`` names the bundle for another process (zoo name or absolute folder). A model
    built in memory, or loaded with :func:`load_model` directly, has none: it travels to the
    workers by its bytes.
    """
    with _LOCK:
        for key, (held, source) in _CACHE.items():
            if held is model and source is not None:
                return key[0], source
    return None


def cache_info() -> dict:
    """Return the models loaded by this process so far and held now (tests, benchmarks)."""
    with _LOCK:
        return {"loads": _STATS["loads"], "models": len(_CACHE)}


def clear_cache() -> None:
    """Forget every cached model and the load count."""
    with _LOCK:
        _CACHE.clear()
        _STATS["loads"] = 0
