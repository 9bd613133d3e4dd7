"""napari reader of calibration records (JSON); no napari import here.

The reader opens a saved record as a Shapes layer of its calibration tiles, carrying the record
in its metadata, from which the Calibrate and Diagnostics widgets (and ``api.apply_record``)
take it. It returns None for any file that is not a record (never raises on a foreign or
hostile file: too large, nested too deeply, not UTF-8, not JSON); a file that says it is a
record is read by the validating reader (``api.load_record``), whose error names the field at
fault (or the checksum of a record edited by hand).
"""

from __future__ import annotations

import json
import os

from . import api


def get_reader(path):
    """Return the reader of ``path`` when it is a calibration record, else None."""
    if isinstance(path, list | tuple):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, str | os.PathLike):
        return None
    path = os.fspath(path)
    if not isinstance(path, str) or not path.lower().endswith(".json"):
        return None
    try:
        if not os.path.isfile(path) or os.path.getsize(path) > api.MAX_RECORD_BYTES:
            return None
        with open(path, encoding="utf-8") as fh:
            head = json.load(fh)
    except (OSError, ValueError, UnicodeDecodeError, RecursionError, MemoryError):
        return None
    if not isinstance(head, dict) or head.get("format") != api.RECORD_FORMAT:
        return None
    return read_record


def read_record(path):
    """Read a calibration record as a Shapes layer of its tiles (record in metadata)."""
    if isinstance(path, list):
        path = path[0]
    return [api.record_layer(api.load_record(path))]
