"""Where model bundles are and what their cards say: ``json`` only, never torch.

The Model widget lists the zoo and shows a bundle's card from here, so opening napari and the
plugin's widgets does not import torch.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from ._errors import LIMITS, BundleError

__all__ = ["MODEL_JSON", "WEIGHTS_FILE", "ZOO_DIR", "list_models", "read_bounded_json", "read_spec"]

MODEL_JSON = "model.json"
WEIGHTS_FILE = "weights.safetensors"
#: Where the shipped bundles live: one folder per model.
ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo"


def _search_dirs(search_paths: Iterable[str | os.PathLike]) -> list[Path]:
    if isinstance(search_paths, str | os.PathLike):
        search_paths = [search_paths]
    try:
        paths = list(search_paths)
    except TypeError:
        paths = [search_paths]
    bad = [p for p in paths if not isinstance(p, str | os.PathLike)]
    if bad:
        raise ValueError(
            f"search_paths must be a folder or a list of folders; got {search_paths!r}"
        )
    return [ZOO_DIR, *(Path(p) for p in paths)]


def _bundles(search_paths) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for root in _search_dirs(search_paths):
        if not root.is_dir():
            continue
        for sub in sorted(root.iterdir()):
            if sub.is_dir() and (sub / MODEL_JSON).is_file() and sub.name not in found:
                found[sub.name] = sub
    return found


def list_models(*, search_paths: Iterable[str | os.PathLike] = ()) -> list[str]:
    """Names of the model bundles in the shipped zoo and in extra folders.

    A bundle is a folder holding ``model.json`` and ``weights.safetensors``; its name is the
    folder name. The zoo is searched first; a later folder does not shadow an earlier name.

    Parameters
    ----------
    search_paths : iterable of path-like
        Extra folders whose sub-folders are bundles.

    Returns
    -------
    list of str
        Bundle names, zoo first, each group sorted.

    Examples
    --------
    >>> isinstance(list_models(), list)
    True
    """
    return list(_bundles(search_paths))


def _resolve(name_or_path, search_paths) -> Path:
    if not isinstance(name_or_path, str | os.PathLike):
        raise ValueError(
            "name_or_path must be the name of a model in the zoo or a bundle folder; got "
            f"{type(name_or_path).__name__}"
        )
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if isinstance(name_or_path, str) and os.sep not in name_or_path and "/" not in name_or_path:
        bundles = _bundles(search_paths)
        if name_or_path in bundles:
            return bundles[name_or_path]
        raise ValueError(
            f"name_or_path must be a bundle folder or one of the known models {sorted(bundles)}; "
            f"got {name_or_path!r}"
        )
    raise ValueError(f"name_or_path must be an existing bundle folder; got {str(name_or_path)!r}")


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def _nesting_depth(text: str) -> int:
    """Deepest nesting of JSON arrays and objects in ``text``, counted without parsing it."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub('""', text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def read_bounded_json(path: Path, *, max_bytes: int, max_depth: int, what: str):
    """Parse a JSON file of an untrusted bundle after bounding its size and nesting depth.

    The size is checked before the file is read and the depth before it is parsed, so a
    huge or deeply nested file is refused with a :class:`BundleError`, never a
    ``MemoryError`` or ``RecursionError``.
    """
    size = path.stat().st_size
    if size > max_bytes:
        raise BundleError(
            f"{what} must be at most {max_bytes:,} bytes; got {size:,} bytes ({path})"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise BundleError(f"{path} is not valid JSON: {err}") from None
    depth = _nesting_depth(text)
    if depth > max_depth:
        raise BundleError(
            f"{what} must nest arrays and objects at most {max_depth} deep; got depth {depth} "
            f"({path})"
        )
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:
        raise BundleError(f"{path} is not valid JSON: {err}") from None


def read_model_json(json_path: Path) -> dict:
    """Read a bundle's ``model.json`` within :data:`LIMITS`; a JSON object or BundleError."""
    spec = read_bounded_json(json_path, max_bytes=LIMITS["model_json_bytes"],
                             max_depth=LIMITS["json_depth"], what=MODEL_JSON)
    if not isinstance(spec, dict):
        raise BundleError(f"{json_path} must hold a JSON object; got {type(spec).__name__}")
    return spec


def read_spec(name_or_path, *, search_paths: Iterable[str | os.PathLike] = ()) -> dict:
    """Read a bundle's ``model.json`` (its spec and card) without loading the weights.

    Parameters
    ----------
    name_or_path : str or path-like
        A bundle folder, or the name of a bundle in the zoo or in ``search_paths``, or a
        bioimage.io package (its fields read from the RDF by bioimageio.spec, no weights read).
    search_paths : iterable of path-like
        Extra folders searched for named bundles.

    Returns
    -------
    dict
        The parsed ``model.json``, plus ``"path"``: the bundle folder.

    Examples
    --------
    >>> spec = read_spec("tem-sr4x-quantile")
    >>> spec["heuristic"], spec["scale_factor"]
    ('quantile', 4)
    """
    from ._bioimageio_rdf import is_package

    if is_package(name_or_path):  # a bioimage.io package: its RDF, read by bioimageio.spec
        from ._bioimageio_rdf import read_package_spec

        return read_package_spec(name_or_path)
    folder = _resolve(name_or_path, search_paths)
    json_path = folder / MODEL_JSON
    if not json_path.is_file():
        raise BundleError(f"the bundle {folder} has no {MODEL_JSON}")
    spec = read_model_json(json_path)
    spec["path"] = str(folder)
    return spec
