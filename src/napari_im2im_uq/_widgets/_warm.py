"""Keep napari's main thread free while the plugin's heavy work runs in threads.

Two causes of a stalled viewer are the plugin's own, not napari's (``benchmarks/bench_heartbeat.py``):

* **Cold imports in a thread hold the GIL.** Loading torch's C++ library runs its static
  initialisers inside ``import torch`` with the GIL held (0.2-0.4 s of a frozen viewer even
  from a worker thread), and a first Predict or Calibrate imports torch, dask, scipy and
  matplotlib. :func:`warm_up` does all of it in a background thread once the first dock is
  idle, after :func:`preload_libraries` has loaded torch's shared libraries through the C
  library's ``dlopen`` (a ctypes call, made without the GIL), so ``import torch`` then finds
  them loaded.
* **A busy Python thread starves the main thread.** A thread that waits for the GIL gets it
  only after Python's switch interval (5 ms), and the main thread releases and takes it again
  at every call into Qt or OpenGL: one repaint waits hundreds of times. While a job or the
  warm-up runs, :func:`fast_switching` lowers the interval to :data:`SWITCH_INTERVAL_S`
  (restored when the last of them ends).

Nothing here runs on import: opening napari imports neither torch nor anything heavy.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import sys
import threading
from pathlib import Path

#: Python's thread switch interval (seconds) while a job or the warm-up runs; None leaves
#: Python's own (5 ms). 0.5 ms: the main thread waits at most that long for the GIL each
#: time it comes back from Qt or OpenGL.
SWITCH_INTERVAL_S: float | None = 0.0005

#: The modules a first Predict and a first Calibrate import, warmed in this order (torch
#: first, its libraries preloaded without the GIL).
WARM_MODULES = (
    "torch",
    "safetensors.torch",
    "dask.array",
    "napari_im2im_uq.models._bundle",
    "napari_im2im_uq.inference._predict",
    "napari_im2im_uq.inference._executor",
    "napari_im2im_uq.inference._worker",
    "napari_im2im_uq.workflows.predict",
    "napari_im2im_uq.workflows.calibrate",
    "napari_im2im_uq.workflows.apply",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
)

#: torch's shared libraries, loaded before ``import torch`` (the dependencies follow).
_TORCH_LIBRARIES = ("torch_cpu", "torch_python")

_lock = threading.Lock()
_holders = [0]
_saved: list = []
_started: list = []
#: Set when the warm-up thread has finished (successfully or not).
warmed = threading.Event()


def _library_file(folder: Path, stem: str) -> Path | None:
    for name in (f"lib{stem}.so", f"lib{stem}.dylib", f"{stem}.dll"):
        if (folder / name).is_file():
            return folder / name
    return None


def preload_libraries(package: str = "torch", stems=_TORCH_LIBRARIES) -> list[str]:
    """Load a package's shared libraries without holding the GIL; return the files loaded.

    A ctypes call into the C library's ``dlopen`` (``LoadLibraryW`` on Windows) releases the
    GIL, so the libraries' static initialisers run while other threads keep running Python;
    ``import package`` then finds them loaded. Nothing is loaded when the package is already
    imported or not installed, and a library that fails to load is skipped (the import then
    loads it as usual).

    Parameters
    ----------
    package : str
        An installed package with its shared libraries in ``<package>/lib``.
    stems : iterable of str
        Library names without prefix and suffix ("torch_cpu" for ``libtorch_cpu.so``).

    Returns
    -------
    list of str
        The files loaded.

    Examples
    --------
    >>> preload_libraries("no_such_package_here")
    []
    """
    if package in sys.modules:
        return []
    import importlib.util

    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return []
    if spec is None or spec.origin is None:
        return []
    import ctypes

    folder = Path(spec.origin).parent / "lib"
    loaded = []
    for stem in stems:
        path = _library_file(folder, stem)
        if path is None:
            continue
        try:
            if os.name == "nt":
                handle = ctypes.WinDLL("kernel32", use_last_error=True).LoadLibraryW(str(path))
            else:
                libc = ctypes.CDLL(None)
                libc.dlopen.restype = ctypes.c_void_p
                libc.dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
                handle = libc.dlopen(os.fsencode(path), os.RTLD_NOW | os.RTLD_LOCAL)
        except (OSError, AttributeError):
            handle = None
        if handle:
            loaded.append(str(path))
    return loaded


@contextlib.contextmanager
def fast_switching():
    """Lower Python's thread switch interval to :data:`SWITCH_INTERVAL_S` within the block.

    Nested and concurrent blocks share it: the interval found by the first is restored when
    the last ends.

    Examples
    --------
    >>> before = sys.getswitchinterval()
    >>> with fast_switching():
    ...     inside = sys.getswitchinterval()
    >>> sys.getswitchinterval() == before
    True
    """
    hold()
    try:
        yield
    finally:
        release()


def hold() -> None:
    """Start a span of fast switching (see :func:`fast_switching`); end it with :func:`release`."""
    with _lock:
        _holders[0] += 1
        if _holders[0] == 1 and SWITCH_INTERVAL_S is not None:
            _saved.append(sys.getswitchinterval())
            sys.setswitchinterval(min(SWITCH_INTERVAL_S, _saved[-1]))


def release() -> None:
    """End a span started by :func:`hold`."""
    with _lock:
        if _holders[0] == 0:
            return
        _holders[0] -= 1
        if _holders[0] == 0 and _saved:
            sys.setswitchinterval(_saved.pop())


def _draw_sample(figure) -> None:
    """Draw what the risk plot draws (lines, text, a legend): loads matplotlib's fonts."""
    ax = figure.add_subplot(1, 1, 1)
    ax.plot([0.0, 1.0], [0.2, 0.1], label="empirical risk")
    ax.axhline(0.1, linestyle="--", label="target 0.1")
    ax.axvline(0.5, linestyle=":", label="lam_hat = 0.5")
    ax.set_xlabel("lam")
    ax.set_ylabel("risk")
    ax.set_title("warm-up, n = 1 tiles", fontsize=9)
    ax.legend(fontsize=7, loc="best")


def warm_up_now(modules=WARM_MODULES) -> list[str]:
    """Import ``modules`` and draw one small figure, in the calling thread; return what failed.

    torch's libraries are preloaded without the GIL first (:func:`preload_libraries`). A
    module that fails to import is skipped (the job that needs it reports the error). The
    cyclic garbage collector is paused meanwhile and runs once at the end: imports create
    hundreds of thousands of objects, and each full collection they trigger holds the GIL
    for 0.2-0.7 s (measured in napari's process); without the final one the debt would fall
    due during the first jobs.
    """
    failed = []
    enabled = gc.isenabled()
    gc.disable()
    try:
        _import_all(modules, failed)
    finally:
        if enabled:
            gc.enable()
        gc.collect()
    return failed


def _import_all(modules, failed) -> None:
    with fast_switching():
        if "torch" in modules:
            preload_libraries("torch")
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - the job that needs it will say why
                failed.append(name)
        try:
            from ._plot import render

            render(_draw_sample, height=1.0)
        except Exception:  # noqa: BLE001 - the plot is drawn again, with its errors, later
            failed.append("matplotlib figure")


_warming = threading.Lock()


def ensure_warm() -> None:
    """Warm up (:func:`warm_up_now`) in the calling thread unless done; once per process.

    A job's thread calls it first, so a job started before the background warm-up imports
    what it needs the same way (libraries without the GIL, one collection); a second caller
    waits for the first.
    """
    if warmed.is_set():
        return
    with _warming:
        if warmed.is_set():
            return
        try:
            warm_up_now()
        finally:
            warmed.set()


def warm_up(delay_ms: int | None) -> None:
    """Warm the plugin up in a background thread ``delay_ms`` after now (once per process).

    None does nothing. While a job runs the warm-up waits (the job imports what it needs, and
    two threads importing at once would starve the main thread). The widgets open without
    importing anything heavy: the timer fires only when the event loop runs.
    """
    if delay_ms is None or _started:
        return
    _started.append(True)
    if all(name in sys.modules for name in WARM_MODULES):
        warmed.set()
        return
    from qtpy.QtCore import QTimer

    def start():
        if warmed.is_set():
            return
        if _holders[0]:  # a job runs (it warms up first, see ensure_warm): try again later
            QTimer.singleShot(int(delay_ms), start)
            return
        threading.Thread(target=ensure_warm, name="im2im-uq warm-up", daemon=True).start()

    QTimer.singleShot(int(delay_ms), start)
