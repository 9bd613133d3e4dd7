"""Readers of the real data sets in ``../shared/data`` (never copied into the project)."""

from __future__ import annotations

import numbers
import os
from pathlib import Path

import numpy as np

__all__ = ["load_em_drosophila", "load_isbi2012", "load_qpi_dpc", "shared_data_root"]

ENV_VAR = "NAPARI_IM2IM_UQ_DATA"
_DATASETS = ("em_drosophila_vnc", "em_isbi2012", "qpi_dpc_cells")
_EM_LAYERS = ("raw", "membranes", "mitochondria", "synapses", "labels")


def _candidates():
    """Folders ``<ancestor>/shared/data`` above the working directory and above this file."""
    seen = []
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            cand = folder / "shared" / "data"
            if cand not in seen:
                seen.append(cand)
    return seen


def shared_data_root():
    """Locate the folder that holds the real data sets (``em_drosophila_vnc``, ``qpi_dpc_cells``).

    The environment variable ``NAPARI_IM2IM_UQ_DATA`` wins when it is set (its value is returned
    even if the folder does not exist, so that the readers can say so). Otherwise the first
    ``shared/data`` folder holding at least one of the known data sets, found by walking up from
    the current working directory and then from this source file, is returned: with the project
    checked out at ``/work/main`` that is ``/work/shared/data``, i.e. ``../shared/data``.

    Returns
    -------
    pathlib.Path or None
        The data folder, or None when none is found.

    Examples
    --------
    >>> from napari_im2im_uq.data import shared_data_root
    >>> root = shared_data_root()
    >>> root is None or root.name == "data" or "NAPARI_IM2IM_UQ_DATA" in __import__("os").environ
    True
    """
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    for cand in _candidates():
        if cand.is_dir() and any((cand / name).is_dir() for name in _DATASETS):
            return cand
    return None


def _dataset_dir(name, root):
    """Return ``<root>/<name>`` or raise a FileNotFoundError that says where we looked."""
    if root is None:
        base = shared_data_root()
        if base is None:
            looked = ", ".join(str(c) for c in _candidates()[:6])
            raise FileNotFoundError(
                f"the data set {name!r} was not found: no shared/data folder above the working "
                f"directory or the package (looked in {looked}, ...). Set the environment variable "
                f"{ENV_VAR} to the folder that contains {name}/, or pass root=..."
            )
    else:
        base = Path(root).expanduser()
    folder = base / name
    if not folder.is_dir():
        how = f"root={root!r}" if root is not None else (
            f"{ENV_VAR}={os.environ[ENV_VAR]!r}" if os.environ.get(ENV_VAR) else "the search"
        )
        raise FileNotFoundError(
            f"the data set folder {folder} does not exist (from {how}). Point {ENV_VAR} or "
            f"root= at the folder that contains {name}/"
        )
    return folder


def _imread(path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing file {path}: is the data set complete?")
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path)
    import imageio.v3 as iio

    return iio.imread(path)


def _select(slices, n, name="slices"):
    """Turn None, an int, a slice or a sequence of ints into a list of indices in range(n)."""
    if slices is None:
        return list(range(n))
    if isinstance(slices, slice):
        return list(range(n))[slices]
    if isinstance(slices, numbers.Integral) and not isinstance(slices, bool):
        idx = [int(slices)]
    else:
        try:
            idx = [int(i) for i in slices]
            ok = all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in slices)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(
                f"{name} must be None, an int, a slice or a sequence of ints; got {slices!r}"
            )
    bad = [i for i in idx if not -n <= i < n]
    if bad:
        raise ValueError(f"{name} must index 0..{n - 1} (this set has {n} slices); got {slices!r}")
    return [i % n for i in idx]


def load_em_drosophila(*, stack=1, slices=None, root=None, what=("raw",)):
    """Load the Drosophila VNC ssTEM stacks of ``em_drosophila_vnc`` (Gerhard et al. 2013).

    20 slices of 1024 x 1024 pixels at 4.6 nm per pixel (sections 45-50 nm) per stack; stack 1
    is annotated, stack 2 has raw images only. Licence CC BY-NC-SA 3.0 (see the README there).

    Parameters
    ----------
    stack : {1, 2}
        Which stack.
    slices : None, int, slice or sequence of int
        Which of the 20 slices (default all), in that order.
    root : str or pathlib.Path, optional
        The folder that contains ``em_drosophila_vnc/`` (default: :func:`shared_data_root`).
    what : sequence of str
        Any of ``"raw"`` (float32 in [0, 1], the uint8 divided by 255), ``"membranes"`` (bool),
        ``"mitochondria"`` (bool: the 0/255 mask thresholded at > 127, as its README says),
        ``"synapses"`` (bool) and ``"labels"`` (uint8, the merged classes as stored: 0/32/64/96
        oriented membrane, 128 junction, 159 glia, 191 mitochondria, 223 synapse,
        255 intracellular). Only ``"raw"`` exists for stack 2.

    Returns
    -------
    dict
        One (n_slices, 1024, 1024) array per name in ``what``.

    Raises
    ------
    FileNotFoundError
        When the data set is not found (the message says where it looked and how to point at it).
    ValueError
        For an invalid ``stack``, ``slices`` or ``what``.

    Examples
    --------
    >>> from napari_im2im_uq.data import load_em_drosophila
    >>> em = load_em_drosophila(slices=[0], what=("raw", "membranes"))  # doctest: +SKIP
    >>> em["raw"].shape, em["membranes"].dtype  # doctest: +SKIP
    ((1, 1024, 1024), dtype('bool'))
    """
    if stack not in (1, 2) or isinstance(stack, bool):
        raise ValueError(f"stack must be 1 or 2; got {stack!r}")
    what = (what,) if isinstance(what, str) else tuple(what)
    allowed = _EM_LAYERS if stack == 1 else ("raw",)
    bad = [w for w in what if w not in allowed]
    if not what or bad:
        raise ValueError(f"what must name some of {allowed} for stack {stack}; got {what!r}")
    idx = _select(slices, 20)
    folder = _dataset_dir("em_drosophila_vnc", root) / f"stack{stack}"
    out = {}
    for name in what:
        planes = []
        for i in idx:
            if name == "raw":
                img = _imread(folder / "raw" / f"{i:02d}.tif").astype(np.float32) / 255.0
            elif name == "labels":
                img = np.asarray(_imread(folder / "labels" / f"labels{i:08d}.png"), np.uint8)
            elif name == "mitochondria":
                img = _imread(folder / name / f"{i:02d}.png") > 127
            else:
                img = _imread(folder / name / f"{i:02d}.png").astype(bool)
            planes.append(img)
        out[name] = np.stack(planes)
    return out


def load_isbi2012(*, split="train", slices=None, root=None):
    """Load the ISBI 2012 EM segmentation challenge volume of ``em_isbi2012``.

    30 slices of 512 x 512 pixels at 4 x 4 x 50 nm (Drosophila first-instar larva VNC; a
    different animal, stage and microscope than :func:`load_em_drosophila`, useful to test a
    shift of distribution).

    Parameters
    ----------
    split : {"train", "test"}
        ``"train"`` has membrane labels, ``"test"`` has raw images only.
    slices : None, int, slice or sequence of int
        Which of the 30 slices (default all), in numeric file order.
    root : str or pathlib.Path, optional
        The folder that contains ``em_isbi2012/`` (default: :func:`shared_data_root`).

    Returns
    -------
    dict
        ``raw``: float32 (n, 512, 512) in [0, 1]; for ``"train"`` also ``membranes``: bool
        (n, 512, 512), True where the label image is 0 (membrane).

    Raises
    ------
    FileNotFoundError
        When the data set is not found.
    ValueError
        For an invalid ``split`` or ``slices``.

    Examples
    --------
    >>> from napari_im2im_uq.data import load_isbi2012
    >>> isbi = load_isbi2012(slices=slice(0, 2))  # doctest: +SKIP
    >>> isbi["raw"].shape, isbi["membranes"].dtype  # doctest: +SKIP
    ((2, 512, 512), dtype('bool'))
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    idx = _select(slices, 30)
    folder = _dataset_dir("em_isbi2012", root) / split
    out = {"raw": np.stack([_imread(folder / "image" / f"{i}.png") for i in idx])}
    out["raw"] = out["raw"].astype(np.float32) / 255.0
    if split == "train":
        out["membranes"] = np.stack([_imread(folder / "label" / f"{i}.png") == 0 for i in idx])
    return out


def load_qpi_dpc(*, root=None):
    """Load the real DPC images of adherent cells of ``qpi_dpc_cells`` (Zhang et al. 2023).

    One 2000 x 2000 field of view at 0.12 um per pixel, wavelength 0.523 um, objective NA 0.5,
    annular illumination NA 0.45-0.5: the optics that the defaults of
    :func:`~napari_im2im_uq.data.simulate_dpc` describe.

    Parameters
    ----------
    root : str or pathlib.Path, optional
        The folder that contains ``qpi_dpc_cells/`` (default: :func:`shared_data_root`).

    Returns
    -------
    dict
        ``r1``, ``r2`` (top / bottom half-annulus), ``r3``, ``r4`` (left / right), ``bf``
        (brightfield): float32 (2000, 2000) in [0, 1] (uint8 / 255); ``phase``: float32
        (2000, 2000) radians, the 4-image Tikhonov reconstruction of ``derived/`` (a target,
        not ground truth).

    Raises
    ------
    FileNotFoundError
        When the data set is not found.

    Examples
    --------
    >>> from napari_im2im_uq.data import load_qpi_dpc
    >>> qpi = load_qpi_dpc()  # doctest: +SKIP
    >>> qpi["r1"].shape, qpi["phase"].dtype  # doctest: +SKIP
    ((2000, 2000), dtype('float32'))
    """
    folder = _dataset_dir("qpi_dpc_cells", root)
    out = {
        name: _imread(folder / "raw" / f"{name}.png").astype(np.float32) / 255.0
        for name in ("r1", "r2", "r3", "r4", "bf")
    }
    phase_path = folder / "derived" / "phase_l2_tikhonov_float32.npy"
    if not phase_path.is_file():
        raise FileNotFoundError(f"missing file {phase_path}: is the data set complete?")
    out["phase"] = np.load(phase_path, allow_pickle=False).astype(np.float32, copy=False)
    return out
