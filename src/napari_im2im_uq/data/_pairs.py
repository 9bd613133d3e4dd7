"""Readers of the user's own training pairs: TIFF, ``.npy``, zarr arrays, or folders of them."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = ["Pairs", "read_images", "read_pairs"]

_TIFF = (".tif", ".tiff")
_NPY = (".npy",)
_WHAT = "a TIFF file (.tif, .tiff), a .npy file, a zarr array (a store or group/array path), " \
        "or a folder of them"


class Pairs(NamedTuple):
    """Input and target arrays read from files, one pair per file, with their source names."""

    inputs: list[np.ndarray]
    targets: list[np.ndarray]
    sources: list[str]


def _is_zarr(path: Path) -> bool:
    return path.is_dir() and (
        path.suffix == ".zarr"
        or any((path / f).is_file() for f in ("zarr.json", ".zarray", ".zgroup"))
    )


def _read_zarr(path: Path, name: str) -> np.ndarray:
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:  # zarr raises several types for a folder that is not a store
        raise ValueError(f"{name}: {path} is not a readable zarr array ({err})") from err
    if isinstance(node, zarr.Group):
        arrays = sorted(k for k, _ in node.arrays())
        if len(arrays) != 1:
            raise ValueError(
                f"{name}: {path} is a zarr group with {len(arrays)} arrays {arrays}; give the "
                f"path of one array (e.g. {path / arrays[0]})" if arrays else
                f"{name}: {path} is a zarr group with no array; give the path of an array"
            )
        node = node[arrays[0]]
    return np.asarray(node[...])


def _read_file(path: Path, name: str) -> np.ndarray:
    suffix = path.suffix.lower()
    if _is_zarr(path):
        return _read_zarr(path, name)
    if suffix in _TIFF and path.is_file():
        import tifffile

        try:
            return np.asarray(tifffile.imread(str(path)))
        except Exception as err:  # tifffile raises many types for a damaged file
            raise ValueError(f"{name}: {path} is not a readable TIFF file ({err})") from err
    if suffix in _NPY and path.is_file():
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"{name}: {path} is not a readable .npy array ({err})") from err
    raise ValueError(f"{name} must be {_WHAT}; got {path}")


def _entries(folder: Path) -> list[Path]:
    """Return the readable entries of a folder, sorted by name (hidden ones skipped)."""
    out = []
    for p in sorted(folder.iterdir(), key=lambda p: p.name):
        if p.name.startswith("."):
            continue
        if _is_zarr(p) or (p.is_file() and p.suffix.lower() in _TIFF + _NPY):
            out.append(p)
    return out


def _as_path(value, name: str) -> Path:
    if not isinstance(value, (str, Path)):
        raise TypeError(f"{name} must be a path (str or pathlib.Path); got "
                        f"{type(value).__name__}")
    path = Path(value).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{name}: no such file or folder: {path}")
    return path


def read_images(path, *, name: str = "path") -> tuple[list[np.ndarray], list[str]]:
    """Read the images of one file, zarr array or folder (entries sorted by name).

    Parameters
    ----------
    path : str or pathlib.Path
        As one side of :func:`read_pairs`.
    name : str
        How errors name the argument.

    Returns
    -------
    (list of numpy.ndarray, list of str)
        The arrays as stored and their file names.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from napari_im2im_uq.data import read_images
    >>> folder = Path(tempfile.mkdtemp())
    >>> np.save(folder / "b.npy", np.zeros((4, 4)))
    >>> np.save(folder / "a.npy", np.ones((4, 4)))
    >>> arrays, names = read_images(folder)
    >>> names, float(arrays[0][0, 0])
    (['a.npy', 'b.npy'], 1.0)
    """
    p = _as_path(path, name)
    if p.is_dir() and not _is_zarr(p):
        entries = _entries(p)
        if not entries:
            raise ValueError(f"{name}: the folder {p} holds no {_WHAT.rsplit(', or', 1)[0]}")
        return [_read_file(e, name) for e in entries], [e.name for e in entries]
    return [_read_file(p, name)], [p.name]


def read_pairs(input, target) -> Pairs:  # noqa: A002 (the CLI's --input)
    """Read training pairs from files: one file each, or two folders matched by sorted name.

    Parameters
    ----------
    input, target : str or pathlib.Path
        Each a TIFF file (``.tif``/``.tiff``, read with ``tifffile``; a multi-page file is a
        stack), a ``.npy`` file, a zarr array (a store holding one array, or the path of an array
        inside a group, e.g. ``data.zarr/raw``), or a folder of such files. Two folders are
        paired by sorted file name: the i-th entry of one with the i-th of the other (both must
        hold the same number). Arrays are returned as stored (dtype and axes unchanged).

    Returns
    -------
    Pairs
        ``inputs`` and ``targets`` (lists of numpy arrays, one per pair) and ``sources`` (the
        target's file name per pair, for the record of the training regions).

    Raises
    ------
    FileNotFoundError
        When a path does not exist (the message names ``input`` or ``target``).
    ValueError
        For an unreadable or unsupported file, a zarr group with several arrays, an empty folder,
        folders of different lengths, or a folder paired with a file.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from pathlib import Path
    >>> from napari_im2im_uq.data import read_pairs
    >>> folder = Path(tempfile.mkdtemp())
    >>> np.save(folder / "low.npy", np.zeros((8, 8), np.float32))
    >>> np.save(folder / "high.npy", np.ones((16, 16), np.float32))
    >>> pairs = read_pairs(folder / "low.npy", folder / "high.npy")
    >>> pairs.inputs[0].shape, pairs.targets[0].shape, pairs.sources
    ((8, 8), (16, 16), ['high.npy'])
    """
    paths = {"input": _as_path(input, "input"), "target": _as_path(target, "target")}
    folders = {k: p.is_dir() and not _is_zarr(p) for k, p in paths.items()}
    if folders["input"] != folders["target"]:
        which = "input" if folders["input"] else "target"
        other = "target" if which == "input" else "input"
        raise ValueError(f"input and target must both be folders or both files; {which} is the "
                         f"folder {paths[which]} and {other} the file {paths[other]}")
    if not folders["input"]:
        return Pairs([_read_file(paths["input"], "input")],
                     [_read_file(paths["target"], "target")], [paths["target"].name])
    lists = {k: _entries(p) for k, p in paths.items()}
    for k, entries in lists.items():
        if not entries:
            raise ValueError(f"{k}: the folder {paths[k]} holds no {_WHAT.rsplit(', or', 1)[0]}")
    if len(lists["input"]) != len(lists["target"]):
        raise ValueError(
            f"input and target folders must hold the same number of files (paired by sorted "
            f"name); input {paths['input']} has {len(lists['input'])}, target "
            f"{paths['target']} has {len(lists['target'])}"
        )
    return Pairs(
        [_read_file(p, "input") for p in lists["input"]],
        [_read_file(p, "target") for p in lists["target"]],
        [p.name for p in lists["target"]],
    )
