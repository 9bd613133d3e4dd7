"""napari reader and writer of calibration records (JSON); no napari import here.

The writer saves the record a calibrated layer carries (``metadata["im2im_uq"]["record"]``);
the reader opens such a file as a Shapes layer of the calibration tiles, carrying the record in
its metadata, from which the Calibrate and Diagnostics widgets (and :func:`api.apply_record`)
take it.
"""

from __future__ import annotations

import json

from . import api


def get_reader(path):
    """Return the reader of ``path`` when it is a calibration record, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    path = str(path)
    if not path.lower().endswith(".json"):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            head = json.load(fh)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(head, dict) or head.get("format") != api.RECORD_FORMAT:
        return None
    return read_record


def read_record(path):
    """Read a calibration record as a Shapes layer of its tiles (record in metadata)."""
    if isinstance(path, list):
        path = path[0]
    return [api.record_layer(api.load_record(path))]


def write_record(path: str, layer_data: list) -> list[str]:
    """Write the calibration record of the one selected layer that carries one."""
    records = [meta.get("metadata", {}).get(api.META_KEY, {}).get("record")
               for _, meta, _ in layer_data]
    records = [r for r in records if r]
    if len(records) != 1:
        raise ValueError(
            "select exactly one layer made by Calibrate (or a loaded record) to save its "
            f"calibration record; the selection holds {len(records)} records"
        )
    return [api.save_record(records[0], path)]
