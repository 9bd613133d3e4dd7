"""napari writer of calibration records (JSON); no napari import here.

Saves the record that a calibrated layer (or a loaded record's tiles) carries in
``metadata["im2im_uq"]["record"]``; never over a file that is not a record.
"""

from __future__ import annotations

from . import api


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
