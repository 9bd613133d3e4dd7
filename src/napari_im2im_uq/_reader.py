"""napari reader of calibration records (JSON) and prediction stores (.zarr); no napari here.

A folder that is a store ``napari-im2im-uq predict`` wrote opens as one multiscale image layer
per output (its resolution pyramid, lazily: napari reads the chunks of the level and the
region it shows), with the metadata the plugin's own prediction layers carry, so Calibrate and
Diagnostics take them; the calibrated products ``apply`` wrote into it open the same way.

The record reader opens a saved record as a Shapes layer of its calibration tiles, carrying the record
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
    if isinstance(path, str) and os.path.isdir(path):
        return read_store if _is_store(path) else None
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


def _is_store(path: str) -> bool:
    """Tell whether the folder ``path`` is a prediction store (never raises)."""
    try:
        with open(os.path.join(path, "zarr.json"), encoding="utf-8") as fh:
            if os.fstat(fh.fileno()).st_size > api.MAX_RECORD_BYTES:
                return False
            doc = json.load(fh)
    except (OSError, ValueError, UnicodeDecodeError, RecursionError, MemoryError):
        return False
    attrs = doc.get("attributes") if isinstance(doc, dict) else None
    info = attrs.get("napari_im2im_uq") if isinstance(attrs, dict) else None
    return isinstance(info, dict) and isinstance(info.get("outputs"), dict)


def _geometry(group) -> dict:
    """Level 0's scale and translation of an OME image group."""
    sets = group.attrs["ome"]["multiscales"][0]["datasets"]
    out = {}
    for t in sets[0]["coordinateTransformations"]:
        key = "scale" if t["type"] == "scale" else "translate"
        out[key] = tuple(float(v) for v in t["scale" if key == "scale" else "translation"])
    return out


def read_store(path):
    """Read a prediction store as multiscale image layers (outputs, then calibrated products)."""
    import uuid

    import zarr

    from . import layers
    from .inference._store import read_outputs

    if isinstance(path, list):
        path = path[0]
    root = zarr.open_group(store=str(path), mode="r")
    info = dict(root.attrs)["napari_im2im_uq"]
    model = dict((info.get("run") or {}).get("model") or {})
    pyramids = read_outputs(path, name="store", levels=True)
    names = {k: f"{k} ({model.get('name', 'model')})" for k in pyramids}
    run = info.get("run_id") or uuid.uuid4().hex
    out = []
    for key, levels in pyramids.items():
        group = root[info["outputs"][key]["path"].rsplit("/", 1)[0]]
        kwargs = {**layers.output_style(key), **_geometry(group), "name": names[key],
                  "multiscale": True, "metadata": {layers.META_KEY: {
                      "role": "output", "output": key, "model": model, "run": run,
                      "outputs": names, "storage": "zarr", "store": os.fspath(path),
                      "axes": info["outputs"][key].get("axes"), "uncertainty": None}}}
        if key == "probabilities":
            kwargs["contrast_limits"] = (0.0, 1.0)
        out.append((levels, kwargs, "image"))
    return out + _calibrated(root, path)


def _calibrated(root, path) -> list:
    """Return the products ``apply`` wrote (``calibrated/<product>``) as layer tuples."""
    import dask.array as da

    from . import layers

    if "calibrated" not in root:
        return []
    group = root["calibrated"]
    attrs = dict(group.attrs).get("napari_im2im_uq_calibrated") or {}
    if not attrs.get("complete"):
        return []
    out = []
    for name, spec in attrs.get("products", {}).items():
        sub = group[name]
        sets = sub.attrs["ome"]["multiscales"][0]["datasets"]
        levels = [da.from_zarr(sub[d["path"]]) for d in sets]
        role = spec.get("product")
        # limits from the coarsest level: small, and the same data
        style = layers.product_style(role, levels[-1], spec.get("limits"))
        kind = spec.get("kind", "image")
        kwargs = {**style, **_geometry(sub), "name": spec["layer"], "multiscale": True,
                  "metadata": {layers.META_KEY: {"role": "calibrated", "product": role,
                                                 "store": os.fspath(path)}}}
        out.append((levels, kwargs, kind))
    return out
