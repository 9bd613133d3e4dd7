"""The calibration record: what a reviewer reads (JSON), what a result layer carries.

A record holds the calibration result (``CalibrationResult.to_dict``), its guarantee in words,
the model (name, sha256, output range), the layers it was made from, the calibration tiles in
world coordinates, a fingerprint of the ground truth of each calibration tile, the package
version, and a checksum of its own content. It is written with :func:`save_record` (never over
a file that is not a record), read back with :func:`load_record`, and shown as a Shapes layer
of its tiles with :func:`record_layer`.

A record is a format with a schema: :func:`check_record` is the one validating reader
(:func:`as_record`, :func:`load_record`, the napari reader, ``apply_record`` and ``diagnose`` go
through it). It checks every field's type and range (the result's through
``CalibrationResult.from_dict``), and the checksum (the sha256 of the canonical JSON of the
record without its ``checksum`` field): a record edited by hand is refused with a message that
says so, unless the edit is accepted explicitly (``accept_edited=True``, with a warning). The
checksum detects edits, it is not a signature: whoever recomputes it vouches for the record.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np

from .. import layers
from .._warnings import Im2ImUQWarning
from ..calibration._schema import RecordError, integer, number, text
from .tiles import cut, spatial, world_tiles

__all__ = ["MAX_RECORD_BYTES", "RECORD_FORMAT", "RECORD_VERSION", "RecordError", "as_record",
           "check_record", "content_checksum", "load_record", "make_record", "matching_tiles",
           "record_layer", "save_record", "seal", "tile_fingerprints", "warn_if_other_model"]

#: ``format`` field of a saved calibration record.
RECORD_FORMAT = "napari-im2im-uq calibration record"


#: ``version`` of the records this package writes: 2 adds ``checksum`` and ``tiles_fingerprint``.
RECORD_VERSION = 2
#: The record versions this package reads (version 1 loads with a warning: no checksum).
READABLE_VERSIONS = (1, 2)
#: The largest record file read (checked before parsing).
MAX_RECORD_BYTES = 64 * 2**20
#: How each calibration tile's ground truth is fingerprinted.
FINGERPRINT = "sha256 of the tile's ground truth as float64 (C order), first 16 hex digits"

_HEX = re.compile(r"[0-9a-f]+")


def tile_fingerprints(truth, origins, tile_shape) -> list[str]:
    """Return the fingerprint of the ground truth of each tile at ``origins`` (plane, row, col).

    The values count, not their dtype: the same labels as uint8 or int64 give the same print.
    """
    if not len(origins):
        return []
    tiles = cut(spatial(layers.data_of(truth, "truth")), origins, tuple(tile_shape))
    return [hashlib.sha256(np.ascontiguousarray(t, dtype=np.float64).tobytes()).hexdigest()[:16]
            for t in tiles]


def _plain(value):
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"a record holds only JSON values; got {type(value).__name__}")


def content_checksum(record: dict) -> str:
    """Return the sha256 of the canonical JSON of ``record`` without its ``checksum`` field."""
    body = {k: v for k, v in record.items() if k != "checksum"}
    text_ = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                       default=_plain)
    return hashlib.sha256(text_.encode("ascii")).hexdigest()


def seal(record: dict) -> dict:
    """Set ``record["checksum"]`` to the checksum of its content (in place); return the record.

    Whatever adds a field to a record after :func:`make_record` seals it again; a record
    changed without sealing is refused as edited.
    """
    record["checksum"] = {"sha256": content_checksum(record)}
    return record


def make_record(result, outputs, truth, origins, geometry, tile_shape, extra=None) -> dict:
    """Return the sealed record of a calibration (``geometry``: the outputs' scale, translate, ndim).

    ``extra`` fields (a method's ``record_extra``, ``truth_range``, ``drift_summary``, ...) are
    part of the record and of its checksum.
    """
    from .. import __version__

    scale, translate, ndim = geometry
    model = next((layers.meta(v)["model"] for v in outputs.values() if layers.meta(v).get("model")),
                 None)
    pred = outputs.get("prediction", next(iter(outputs.values())))
    record = {
        "format": RECORD_FORMAT,
        "version": RECORD_VERSION,
        "calibration": result.to_dict(),
        "guarantee": result.guarantee,
        "model": model,
        "prediction_layer": layers.name_of(pred, None),
        "truth_layer": layers.name_of(truth, None),
        "tile_shape": list(tile_shape),
        "tiles_world": world_tiles(origins, *tile_shape, scale, translate, ndim),
        "tiles_note": "each tile as [start..., stop...] world coordinates of its pixel edges "
                      "((planes,) rows, columns)",
        "scale": [float(v) for v in scale],
        "translate": [float(v) for v in translate],
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "package": f"napari-im2im-uq {__version__}",
        "tiles_fingerprint": {"kind": FINGERPRINT,
                              "truth": tile_fingerprints(truth, origins, tile_shape)},
        **(extra or {}),
    }
    return seal(record)


def _box_list(value, where: str, n: int) -> list:
    if not isinstance(value, list):
        raise RecordError(f"{where} must be a list of the {n} calibration tiles; got "
                          f"{type(value).__name__}")
    if len(value) != n:
        raise RecordError(f"{where} must list the {n} calibration tiles (calibration.n); got "
                          f"{len(value)}")
    width = None
    for i, box in enumerate(value):
        here = f"{where}[{i}]"
        if not isinstance(box, list) or len(box) not in (4, 6) or (width and len(box) != width):
            raise RecordError(
                f"{here} must be [start..., stop...]: {width or '4 or 6'} numbers; got "
                f"{box if not isinstance(box, list) else f'{len(box)} values'!r}")
        width = len(box)
        vals = [number(v, f"{here}[{j}]") for j, v in enumerate(box)]
        k = width // 2
        if not all(a < b for a, b in zip(vals[:k], vals[k:])):
            raise RecordError(f"{here} must have each start below its stop; got {box!r}")
    return value


def _numbers(value, where: str, length: int | None, *, nonzero=False) -> list:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        want = f"a list of {length} numbers" if length else "a list of numbers"
        raise RecordError(f"{where} must be {want}; got {value!r}")
    out = [number(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if nonzero and 0.0 in out:
        raise RecordError(f"{where} must be a list of non-zero numbers; got {value!r}")
    return out


def _check_fields(rec: dict, where: str) -> None:
    """Check the record-level fields (the result's are ``CalibrationResult.from_dict``'s)."""
    from .._validation import check_tile_shape
    from ..calibration import CalibrationResult

    required = ["calibration", "guarantee", "tile_shape", "tiles_world", "scale", "translate"]
    if rec["version"] >= 2:
        required += ["tiles_fingerprint", "checksum"]
    missing = [k for k in required if k not in rec]
    if missing:
        raise RecordError(f"{where} is missing the field(s) {', '.join(missing)} (a version "
                          f"{rec['version']} record needs {', '.join(required)})")
    result = CalibrationResult.from_dict(rec["calibration"], where=f"{where}.calibration")
    text(rec["guarantee"], f"{where}.guarantee")
    for key in ("prediction_layer", "truth_layer", "tiles_note", "created", "package", "sigma"):
        if rec.get(key) is not None:
            text(rec[key], f"{where}.{key}")
    try:
        shape = check_tile_shape(rec["tile_shape"], f"{where}.tile_shape")
    except ValueError as err:
        raise RecordError(str(err)) from None
    if isinstance(rec["tile_shape"], str) or shape != tuple(result.tile_shape[-2:]):
        raise RecordError(f"{where}.tile_shape must be the calibration's tile shape "
                          f"{list(result.tile_shape)}; got {rec['tile_shape']!r}")
    boxes = _box_list(rec["tiles_world"], f"{where}.tiles_world", result.n)
    ndim = len(boxes[0]) // 2
    _numbers(rec["scale"], f"{where}.scale", ndim, nonzero=True)
    _numbers(rec["translate"], f"{where}.translate", ndim)
    if rec.get("truth_range") is not None:
        lo, hi = _numbers(rec["truth_range"], f"{where}.truth_range", 2)
        if lo > hi:
            raise RecordError(f"{where}.truth_range must be [low, high] with low <= high; got "
                              f"{rec['truth_range']!r}")
    model = rec.get("model")
    if model is not None:
        if not isinstance(model, dict):
            raise RecordError(f"{where}.model must be a dict (name, sha256, ...) or null; got "
                              f"{type(model).__name__}")
        if model.get("name") is not None:
            text(model["name"], f"{where}.model.name")
        sha = model.get("sha256")
        if sha is not None and not (isinstance(sha, str) and _HEX.fullmatch(sha)):
            raise RecordError(f"{where}.model.sha256 must be a hex digest; got {sha!r}")
        if model.get("output_range") is not None:
            _numbers(list(model["output_range"]) if isinstance(model["output_range"], tuple)
                     else model["output_range"], f"{where}.model.output_range", 2)
    if rec.get("drift_summary") is not None and not isinstance(rec["drift_summary"], dict):
        raise RecordError(f"{where}.drift_summary must be a dict; got "
                          f"{type(rec['drift_summary']).__name__}")
    if rec.get("leakage") is not None:
        _check_leakage(rec["leakage"], f"{where}.leakage", result)
    fp = rec.get("tiles_fingerprint")
    if fp is not None:
        prints = fp.get("truth") if isinstance(fp, dict) else None
        if not isinstance(prints, list) or len(prints) != result.n or not all(
                isinstance(h, str) and len(h) == 16 and _HEX.fullmatch(h) for h in prints):
            raise RecordError(
                f"{where}.tiles_fingerprint must be {{'kind': ..., 'truth': [...]}} with one "
                f"16-digit hex fingerprint per calibration tile ({result.n}); got "
                f"{type(prints).__name__ if not isinstance(prints, list) else len(prints)}")


def _check_leakage(value, where: str, result) -> None:
    """Check a record's ``leakage`` (workflows.leakage): counts and Prop. 3.2's figures agree."""
    from ..calibration import methods

    if not isinstance(value, dict):
        raise RecordError(f"{where} must be a dict (n, n_leaked, n_new, factor, bound, ...); "
                          f"got {type(value).__name__}")
    n = integer(value.get("n"), f"{where}.n", lo=1)
    if n != result.n:
        raise RecordError(f"{where}.n must be the number of calibration tiles {result.n}; got {n}")
    leaked = integer(value.get("n_leaked"), f"{where}.n_leaked", lo=0)
    new = integer(value.get("n_new"), f"{where}.n_new", lo=0)
    if leaked > n or new != n - leaked:
        raise RecordError(f"{where} must have n_leaked <= n and n_new = n - n_leaked; got n={n}, "
                          f"n_leaked={leaked}, n_new={new}")
    factor = number(value.get("factor"), f"{where}.factor")
    if not np.isclose(factor, (n + 1) / (new + 1), rtol=1e-9, atol=0):
        raise RecordError(f"{where}.factor must be (n + 1) / (n_new + 1) = {(n + 1) / (new + 1)!r}"
                          f"; got {factor!r}")
    bound, covered = value.get("bound"), value.get("covered")
    if not isinstance(covered, bool):
        raise RecordError(f"{where}.covered must be true or false; got {covered!r}")
    expected = result.delta is None and bool(result.valid)  # in expectation, and proven
    if covered != expected:
        raise RecordError(f"{where}.covered must say whether Prop. 3.2 covers this guarantee "
                          f"({str(expected).lower()}); got {str(covered).lower()}")
    if covered:
        level = methods.get(result.method).level(result)
        if not np.isclose(number(bound, f"{where}.bound"), level * factor, rtol=1e-9, atol=0):
            raise RecordError(f"{where}.bound must be level x factor = {level * factor!r}; got "
                              f"{bound!r}")
    elif bound is not None:
        raise RecordError(f"{where}.bound must be null when Prop. 3.2 does not cover the "
                          f"guarantee; got {bound!r}")
    for key in ("message", "reference"):
        text(value.get(key), f"{where}.{key}")


def _checksum_state(rec: dict, where: str):
    """Return (stored, computed): stored None when the record carries none."""
    stored = rec.get("checksum")
    if stored is None:
        return None, content_checksum(rec)
    sha = stored.get("sha256") if isinstance(stored, dict) else None
    if not (isinstance(sha, str) and len(sha) == 64 and _HEX.fullmatch(sha)):
        raise RecordError(f"{where}.checksum must be {{'sha256': <64 hex digits>}}; got "
                          f"{stored!r}")
    return sha, content_checksum(rec)


def check_record(rec, *, accept_edited: bool = False, origin: str | None = None) -> dict:
    """Check a record against the schema and its checksum; return it (resealed if accepted).

    Parameters
    ----------
    rec : dict
        A record as :func:`make_record` made it or as read back from JSON.
    accept_edited : bool, default False
        Accept a record whose content no longer matches its checksum (edited by hand after
        calibration), with an :class:`~napari_im2im_uq.Im2ImUQWarning`. The schema is checked
        all the same: an edited ``lam`` of NaN is never accepted.
    origin : str, optional
        Where the record comes from (its path), added to messages.

    Returns
    -------
    dict
        ``rec`` itself; for an accepted edit a copy whose ``checksum`` matches its content and
        keeps the written one as ``edited_from``.

    Raises
    ------
    RecordError
        (a ValueError) naming the field, what it must be and what it is; for an edited record,
        naming the checksum.

    Examples
    --------
    >>> rec = dict(cal.record, guarantee="always right")  # doctest: +SKIP
    >>> check_record(rec)  # doctest: +SKIP
    Traceback (most recent call last):
    ...
    RecordError: record.checksum does not match the record's content: ...
    """
    try:
        return _check_record(rec, accept_edited, origin)
    except RecordError as err:
        if origin:
            raise RecordError(f"{err} (in {origin})") from None
        raise


def _check_record(rec, accept_edited, origin):
    where = "record"
    if not isinstance(rec, dict):
        raise RecordError(f"{where} must be a dict (a calibration record); got "
                          f"{type(rec).__name__}")
    if rec.get("format") != RECORD_FORMAT:
        raise RecordError(f"{where}.format must be {RECORD_FORMAT!r}; got {rec.get('format')!r}")
    version = integer(rec.get("version"), f"{where}.version", lo=1)
    if version not in READABLE_VERSIONS:
        raise RecordError(
            f"{where}.version must be one of {list(READABLE_VERSIONS)} (the record versions this "
            f"napari-im2im-uq reads; a newer one wrote it?); got {version}")
    stored, computed = _checksum_state(rec, where)
    edited = stored is not None and stored != computed
    try:
        _check_fields(rec, where)
    except RecordError as err:
        note = (" (and the record's checksum does not match its content: it was edited after "
                "calibration)") if edited else ""
        raise RecordError(f"{err}{note}") from None
    if stored is None and version == 1:
        warnings.warn(f"the record {origin or ''} was written before records carried a checksum "
                      "(version 1): its content cannot be verified", Im2ImUQWarning, stacklevel=4)
        return rec
    if not edited:
        return rec
    what = (f"{where}.checksum does not match the record's content: the record was edited after "
            f"calibration (sha256 of the content {computed[:12]}..., written "
            f"{stored[:12]}...)")
    if not accept_edited:
        raise RecordError(f"{what}. Restore the original, or use the edited record explicitly "
                          "with load_record(path, accept_edited=True) (or as_record(record, "
                          "accept_edited=True)): its guarantee is then yours to vouch for")
    warnings.warn(f"{what}{f' (in {origin})' if origin else ''}; accepted as asked "
                  "(accept_edited=True): its guarantee is yours to vouch for", Im2ImUQWarning,
                  stacklevel=4)
    out = dict(rec)
    out["checksum"] = {"sha256": computed, "edited_from": stored}
    return out


def as_record(source, *, accept_edited: bool = False) -> dict:
    """Return the checked record of a dict, a saved JSON file or a calibrated layer.

    Every record goes through :func:`check_record` (schema and checksum).
    """
    if isinstance(source, dict):
        rec = source
    elif layers.is_layer(source):
        rec = layers.meta(source).get("record")
        if rec is None:
            raise ValueError(
                f"the layer {source.name!r} carries no calibration record (calibrate first, or "
                "choose a layer made by Calibrate)"
            )
    elif isinstance(source, str | Path):
        return load_record(source, accept_edited=accept_edited)
    else:
        raise ValueError(
            "record must be a dict, a path to a saved record or a calibrated layer; got "
            f"{type(source).__name__}"
        )
    if not isinstance(rec, dict) or rec.get("format") != RECORD_FORMAT:
        raise RecordError(f"record must be a {RECORD_FORMAT!r}; got format "
                          f"{rec.get('format') if isinstance(rec, dict) else rec!r}")
    return check_record(rec, accept_edited=accept_edited)


def warn_if_other_model(record: dict, outputs, *, stacklevel: int = 3) -> bool:
    """Warn when ``outputs`` come from another model than the record's (by sha256); say if so."""
    model = record.get("model") or {}
    for v in outputs.values():
        other = layers.meta(v).get("model") or {}
        if model.get("sha256") and other.get("sha256") and other["sha256"] != model["sha256"]:
            warnings.warn(
                f"the record was calibrated for model {model.get('name')} "
                f"(sha256 {model['sha256'][:12]}); these outputs come from {other.get('name')} "
                f"(sha256 {other['sha256'][:12]}): the guarantee does not carry over",
                Im2ImUQWarning, stacklevel=stacklevel,
            )
            return True
    return False


def matching_tiles(record: dict, truth, geometry) -> tuple[list, int, bool]:
    """Return the record's calibration tiles that hold, here, the ground truth it calibrated on.

    A record tile counts when this grid has a tile at the same world position whose ground
    truth has the same fingerprint: same position AND same data. ``geometry`` is the
    (scale, translate, ndim) of the grid of ``truth``.

    Returns
    -------
    boxes : list
        The matching tiles, as ``record["tiles_world"]`` writes them.
    other : int
        Record tiles at a position inside this grid whose data differ (another volume).
    by_data : bool
        False when the record carries no fingerprint (version 1): every tile is taken by
        position alone.
    """
    boxes = record.get("tiles_world", [])
    prints = (record.get("tiles_fingerprint") or {}).get("truth")
    if prints is None:
        return list(boxes), 0, False
    scale, translate, ndim = geometry
    scale, translate = np.asarray(scale, float), np.asarray(translate, float)
    th, tw = record["tile_shape"]
    grid = spatial(layers.data_of(truth, "truth")).shape
    origins, where = [], []
    for i, box in enumerate(boxes):
        k = len(box) // 2
        if k != ndim:
            continue
        pix = (np.asarray(box[:k], float) - translate) / scale + 0.5
        if not np.allclose(pix, np.round(pix), atol=1e-6):
            continue
        z, r, c = ([0] + [int(round(v)) for v in pix])[-3:] if k == 2 else \
            [int(round(v)) for v in pix]
        if 0 <= z < grid[0] and 0 <= r and r + th <= grid[1] and 0 <= c and c + tw <= grid[2]:
            origins.append((z, r, c))
            where.append(i)
    here = tile_fingerprints(truth, np.asarray(origins, dtype=np.int64).reshape(-1, 3), (th, tw))
    same = [i for i, h in zip(where, here) if h == prints[i]]
    return [boxes[i] for i in same], len(where) - len(same), True


def save_record(source, path) -> str:
    """Save a calibration record (from a calibrated layer, a Calibration or a dict) as JSON.

    Never overwrites a file that is not a calibration record.

    Returns
    -------
    str
        The path written.
    """
    if hasattr(source, "record") and hasattr(source, "result"):  # a Calibration
        source = source.record
    rec = as_record(source)
    if not isinstance(path, str | os.PathLike):
        raise ValueError(f"path must be a file path ending in .json; got {type(path).__name__}")
    path = Path(path)
    if path.suffix.lower() != ".json":
        raise ValueError(f"path must end in .json; got {str(path)!r}")
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            ours = isinstance(old, dict) and old.get("format") == RECORD_FORMAT
        except (ValueError, UnicodeDecodeError):
            ours = False
        if not ours:
            raise FileExistsError(f"{path} exists and is not a calibration record: not overwritten")
    from .._files import write_atomic  # a unique temporary name: never a file of the user's

    write_atomic(path, json.dumps(rec, indent=1, allow_nan=False))
    return str(path)


def load_record(path, *, accept_edited: bool = False) -> dict:
    """Read a saved calibration record, checked (schema and checksum; see :func:`check_record`).

    Parameters
    ----------
    path : str or path-like
        A JSON file written by :func:`save_record` (at most :data:`MAX_RECORD_BYTES`).
    accept_edited : bool, default False
        Accept a record edited by hand after calibration (its checksum no longer matches), with
        a warning; its fields are checked all the same.

    Returns
    -------
    dict

    Raises
    ------
    ValueError
        (``RecordError``) for a file that is not a readable record, naming the field at fault.

    Examples
    --------
    >>> save_record(cal, "rec.json"); rec = load_record("rec.json")  # doctest: +SKIP
    """
    if not isinstance(path, str | os.PathLike):
        raise RecordError(f"path must be a path to a saved record (str or path-like); got "
                          f"{type(path).__name__}")
    path = Path(path)
    try:
        size = os.path.getsize(path)
        if size > MAX_RECORD_BYTES:
            raise RecordError(f"path must be a calibration record of at most {MAX_RECORD_BYTES} "
                              f"bytes; {path} has {size}")
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as err:
        if isinstance(err, RecordError):
            raise
        why = "nested too deeply" if isinstance(err, RecursionError) else err
        raise RecordError(f"path must be a readable JSON calibration record; {path}: {why}") \
            from None
    if not isinstance(rec, dict) or rec.get("format") != RECORD_FORMAT:
        raise RecordError(f"path must be a {RECORD_FORMAT!r}; {path} is not one")
    rec = check_record(rec, accept_edited=accept_edited, origin=str(path))
    edited_from = (rec.get("checksum") or {}).get("edited_from")
    if edited_from and not accept_edited:
        warnings.warn(f"the record {path} was edited after calibration and the edit accepted "
                      "(accept_edited=True); its guarantee is the editor's to vouch for",
                      Im2ImUQWarning, stacklevel=2)
    return rec


def record_layer(record, *, name=None):
    """Return a Shapes layer tuple of a record's calibration tiles, carrying the record."""
    rec = as_record(record)
    rects = []
    for t in rec.get("tiles_world", []):
        k = len(t) // 2
        lo, hi = np.array(t[:k]), np.array(t[k:])
        r = np.array([[lo[-2], lo[-1]], [lo[-2], hi[-1]], [hi[-2], hi[-1]], [hi[-2], lo[-1]]])
        if k == 3:  # the rectangle lies in its plane's centre
            r = np.concatenate([np.full((4, 1), 0.5 * (lo[0] + hi[0])), r], axis=1)
        rects.append(r)
    cal = rec["calibration"]
    model = (rec.get("model") or {}).get("name", "model")
    kwargs = {
        "name": name or f"calibration record: {cal['method']} ({model})",
        "shape_type": "rectangle",
        "edge_color": "cyan",
        "face_color": [0.0, 0.0, 0.0, 0.0],
        "metadata": {layers.META_KEY: {"role": "record", "record": rec}},
    }
    return rects, kwargs, "shapes"

