"""The calibration record: what a reviewer reads (JSON), what a result layer carries.

A record holds the calibration result (``CalibrationResult.to_dict``), its guarantee in words,
the model (name, sha256, output range), the layers it was made from, the calibration tiles in
world coordinates and the package version. It is written with :func:`save_record` (never over
a file that is not a record), read back with :func:`load_record`, and shown as a Shapes layer
of its tiles with :func:`record_layer`.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np

from .. import layers
from .tiles import world_tiles

__all__ = ["RECORD_FORMAT", "RECORD_VERSION", "as_record", "load_record", "make_record",
           "record_layer", "save_record"]

#: ``format`` field of a saved calibration record.
RECORD_FORMAT = "napari-im2im-uq calibration record"


RECORD_VERSION = 1


def make_record(result, outputs, truth, origins, geometry, tile_shape, extra=None) -> dict:
    """Return the record of a calibration (``geometry``: the outputs' scale, translate, ndim)."""
    from .. import __version__

    scale, translate, ndim = geometry
    model = next((layers.meta(v)["model"] for v in outputs.values() if layers.meta(v).get("model")),
                 None)
    pred = outputs.get("prediction", next(iter(outputs.values())))
    return {
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
        **(extra or {}),
    }


def as_record(source) -> dict:
    """Return the record of a dict, a saved JSON file or a calibrated layer (checked format)."""
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
        return load_record(source)
    else:
        raise ValueError(
            "record must be a dict, a path to a saved record or a calibrated layer; got "
            f"{type(source).__name__}"
        )
    if rec.get("format") != RECORD_FORMAT:
        raise ValueError(f"record must be a {RECORD_FORMAT!r}; got format {rec.get('format')!r}")
    return rec


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


def load_record(path) -> dict:
    """Read a saved calibration record (checked: it must parse back into a result)."""
    from ..calibration import CalibrationResult

    path = Path(path)
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"path must be a readable JSON calibration record; {path}: {err}") from None
    if not isinstance(rec, dict) or rec.get("format") != RECORD_FORMAT:
        raise ValueError(f"path must be a {RECORD_FORMAT!r}; {path} is not one")
    CalibrationResult.from_dict(rec["calibration"])
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

