"""Reading a bioimage.io package's RDF with the field's own library, bioimageio.spec (no torch).

:func:`read_package_spec` turns the RDF into the fields a bundle's ``model.json`` has (axes,
halo, scale, minimum shape and step, pre/post-processing, card, licence, citation, the
calibration record in ``config["napari-im2im-uq"]``), without reading the weights: the Model
widget shows a package's card from here. Nothing is downloaded; the helpers at the end map
this package's units to the RDF's vocabulary for the export.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from pathlib import Path

from ._errors import BundleError

__all__ = ["CONFIG_KEY", "RDF_NAMES", "WEIGHT_FORMATS", "is_package", "read_package_spec"]

#: The key of this plugin's section in the RDF's ``config``.
CONFIG_KEY = "napari-im2im-uq"
#: File names of an RDF inside a package folder.
RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
#: Weight formats this plugin runs, in the order it prefers them.
WEIGHT_FORMATS = ("torchscript", "onnx", "pytorch_state_dict")
_INSTALL = "pip install 'napari-im2im-uq[bioimageio]'"
_SPDX = re.compile(r"^[A-Za-z0-9.+-]+")


def is_package(path) -> bool:
    """Whether ``path`` is a bioimage.io package: a folder with its RDF, the RDF, or a zip.

    Examples
    --------
    >>> is_package("tem-sr4x-quantile")
    False
    """
    if not isinstance(path, str | os.PathLike):
        return False
    p = Path(path)
    if p.is_dir():
        return any((p / n).is_file() for n in RDF_NAMES) or any(p.glob("*.bioimageio.yaml"))
    return p.is_file() and (p.suffix.lower() == ".zip" or p.name in RDF_NAMES
                            or p.name.endswith(".bioimageio.yaml"))


def _spec_lib():
    try:
        import bioimageio.spec as bs
    except ImportError as err:
        raise BundleError(
            f"reading or writing a bioimage.io package needs the optional libraries "
            f"bioimageio.spec and onnxruntime: {_INSTALL} ({err})") from None
    return bs


def _load_descr(path):
    """Validate the package with bioimageio.spec, without downloading anything."""
    bs = _spec_lib()
    from bioimageio.spec import InvalidDescr

    source = Path(path)
    if source.is_dir():
        names = [source / n for n in RDF_NAMES if (source / n).is_file()]
        source = names[0] if names else next(iter(sorted(source.glob("*.bioimageio.yaml"))))
    try:
        descr = bs.load_description(source, format_version="latest", perform_io_checks=False)
    except Exception as err:  # noqa: BLE001 - unreadable YAML, a bad zip, ...
        raise BundleError(f"{path} is not a readable bioimage.io package: {err}") from None
    if isinstance(descr, InvalidDescr) or getattr(descr, "type", None) != "model":
        errors = "; ".join(
            f"{'.'.join(map(str, e.loc))}: {e.msg}"
            for e in descr.validation_summary.details[-1].errors[:5]) if isinstance(
                descr, InvalidDescr) else f"a {getattr(descr, 'type', '?')} description"
        raise BundleError(f"{path} must be a valid bioimage.io model package; bioimageio.spec "
                          f"says: {errors or 'invalid'}")
    return descr


def _read_file(file_descr, what: str, path) -> bytes:
    """Bytes of a file the package holds; a remote one is refused, the SHA-256 checked."""
    from bioimageio.spec._internal.url import HttpUrl

    src = file_descr.source
    if isinstance(src, HttpUrl) or str(src).startswith(("http://", "https://")):
        raise BundleError(f"the {what} of {path} is a remote file ({src}); nothing is downloaded "
                          "at run time: download the package with its files first")
    expected = getattr(file_descr, "sha256", None)
    try:
        data = file_descr.get_reader().read()  # bioimageio.spec checks the SHA-256 as it reads
    except ValueError as err:
        if "sha256" not in str(err).lower():
            raise BundleError(f"the {what} of {path} ({src}) cannot be read: {err}") from None
        data = b""
    except OSError as err:
        raise BundleError(f"the {what} of {path} ({src}) cannot be read: {err}") from None
    if expected is not None and hashlib.sha256(data).hexdigest() != str(expected):
        raise BundleError(f"the {what} of {path} ({src}) does not match the SHA-256 its RDF "
                          f"states ({str(expected)[:12]}...): the package was altered")
    return data


def _axis_kind(ax) -> str:
    kind = getattr(ax, "type", None)
    if kind in ("batch", "channel"):
        return kind
    if kind == "space" and str(ax.id) in ("y", "x"):
        return str(ax.id)
    raise BundleError(f"axis {str(ax.id)!r} ({kind}) is not supported: this plugin runs 2-D "
                      "models whose tensors have axes among batch, channel, y, x")


def _steps(ops) -> list[dict]:
    out = []
    for op in ops:
        kw = op.kwargs.model_dump(mode="json") if hasattr(op, "kwargs") else {}
        out.append({"id": str(op.id), "kwargs": {k: v for k, v in kw.items() if v is not None}})
    return [s for s in out if s["id"] != "ensure_dtype"]


_BIG = 3.4e38


def _to_units(steps: list[dict]) -> list[dict] | None:
    """RDF input steps in this package's ``preprocessing`` vocabulary, or None if impossible."""
    out = []
    for step in steps:
        kind, kw = step["id"], step["kwargs"]
        if kind == "scale_linear":
            out.append({"id": "scale_linear", "kwargs": {"gain": kw.get("gain", 1.0),
                                                         "offset": kw.get("offset", 0.0)}})
        elif kind == "fixed_zero_mean_unit_variance":
            out.append({"id": "zero_mean_unit_variance",
                        "kwargs": {"mode": "fixed", "mean": kw["mean"], "std": kw["std"]}})
        elif kind == "zero_mean_unit_variance":
            out.append({"id": "zero_mean_unit_variance",
                        "kwargs": {"mode": "per_sample", "eps": kw.get("eps", 1e-6)}})
        elif kind == "scale_range" and not kw.get("reference_tensor"):
            out.append({"id": "scale_range", "kwargs": {
                "mode": "per_sample", "min_percentile": kw.get("min_percentile", 0.0),
                "max_percentile": kw.get("max_percentile", 100.0), "eps": kw.get("eps", 1e-6)}})
        elif kind == "clip" and kw.get("min_percentile") is None and kw.get(
                "max_percentile") is None:
            out.append({"id": "clip", "kwargs": {"min": kw.get("min", -_BIG),
                                                 "max": kw.get("max", _BIG)}})
        else:
            return None
    return out


def _tensor(desc, inputs: bool) -> dict:
    axes = [_axis_kind(ax) for ax in desc.axes]
    if "y" not in axes or "x" not in axes:
        raise BundleError(f"tensor {str(desc.id)!r} must have the space axes y and x; got {axes}")
    steps = _steps(desc.preprocessing if inputs else desc.postprocessing)
    channel = next((ax for ax in desc.axes if getattr(ax, "type", None) == "channel"), None)
    names = [str(c) for c in channel.channel_names] if channel is not None else [str(desc.id)]
    return {"id": str(desc.id), "axes": axes, "ops": steps, "channels": names}


def _input_geometry(desc, path) -> tuple[list[int], list[int], dict]:
    mins, steps, by_id = [], [], {}
    for ax in desc.axes:
        by_id[str(ax.id)] = ax
    for a in ("y", "x"):
        size = by_id[a].size
        if isinstance(size, int):
            raise BundleError(f"{path}: input axis {a!r} has the fixed size {size}; this plugin "
                              "tiles images and needs a size of the form min + k * step")
        if not hasattr(size, "step"):
            raise BundleError(f"{path}: input axis {a!r} must have a size min + k * step; got "
                              f"{size!r}")
        mins.append(int(size.min))
        steps.append(int(size.step))
    return mins, steps, by_id


def _scale_and_halo(descr, in_axes: dict, path) -> tuple[int, int]:
    """Output pixels per input pixel (from the axes' scales) and the halo in input pixels."""
    scales, halos = [], []
    for ax in descr.outputs[0].axes:
        if str(ax.id) not in ("y", "x"):
            continue
        size = ax.size
        if isinstance(size, int) or not hasattr(size, "tensor_id") or size.offset:
            raise BundleError(f"{path}: output axis {str(ax.id)!r} must have the size of an "
                              f"input axis (a size reference with offset 0); got {size!r}")
        ratio = in_axes[str(ax.id)].scale / ax.scale
        s = round(ratio)
        if s < 1 or abs(ratio - s) > 1e-6:
            raise BundleError(f"{path}: output axis {str(ax.id)!r} must be an integer multiple "
                              f"of the input's resolution; got a ratio of {ratio}")
        scales.append(s)
        halos.append(int(getattr(ax, "halo", 0) or 0))
    if len(set(scales)) != 1:
        raise BundleError(f"{path}: rows and columns must have the same scale; got {scales}")
    s = scales[0]
    return s, max(-(-h // s) for h in halos)


def read_package_spec(path, *, descr=None, trust_code: bool = False,
                      weight_format: str | None = None) -> dict:
    """Read a package's RDF into the fields the plugin uses (no torch, no weights read).

    Returns a spec like a bundle's ``model.json``: "name", "heuristic" ("point" for a package
    with one output of one channel, else the head this plugin exported), "input_channels",
    "scale_factor", "halo", "divisor", "preprocessing", "output_names", "weight_format" (the
    one that would run), "weight_formats", "licence", "citation", "card", "record" (the
    calibration record it carries, or None), "geometry", "path".

    Examples
    --------
    >>> read_package_spec("no-such-package")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    napari_im2im_uq.models._errors.BundleError: ...
    """
    if not is_package(path):
        raise BundleError(f"path must be a bioimage.io package (a folder with {' or '.join(RDF_NAMES)}"
                          f", or its zip); got {str(path)!r}")
    descr = descr if descr is not None else _load_descr(path)
    ours = dict((descr.config.model_extra or {}).get(CONFIG_KEY) or {})
    our_spec = dict(ours.get("spec") or {})
    inputs = [_tensor(t, True) for t in descr.inputs]
    outputs = [_tensor(t, False) for t in descr.outputs]
    mins, steps, in_axes = _input_geometry(descr.inputs[0], path)
    s, halo = _scale_and_halo(descr, in_axes, path)
    if our_spec:
        heuristic = our_spec.get("heuristic", "point")
        names = [o["id"] for o in outputs]
    elif len(outputs) == 1 and len(outputs[0]["channels"]) == 1:
        heuristic, names = "point", ["prediction"]
    else:
        raise BundleError(f"{path}: a package from elsewhere must have one output of one channel "
                          f"(a point prediction); got outputs "
                          f"{[(o['id'], len(o['channels'])) for o in outputs]}")
    available = [f for f in WEIGHT_FORMATS if getattr(descr.weights, f, None) is not None]
    if not available:
        present = [k for k, v in descr.weights if v is not None]
        raise BundleError(f"{path} must hold weights as one of {list(WEIGHT_FORMATS)}; it holds "
                          f"{present}")
    if weight_format is not None:
        if weight_format not in available:
            raise BundleError(f"weight_format must be one of the package's {available}; got "
                              f"{weight_format!r}")
        chosen = weight_format
    else:
        chosen = next(f for f in available if f != "pytorch_state_dict" or trust_code
                      or available == ["pytorch_state_dict"])
    # Steps on the whole image before tiling (exact per-sample statistics); with derived
    # channels (computed from the given ones) they stay per tile, on every channel.
    units = None if our_spec.get("derived_channels") else _to_units(inputs[0]["ops"])
    preprocessing = [] if units is None else units
    if units is not None:
        inputs[0]["ops"] = []
    lead = [p for p in our_spec.get("preprocessing", [])[:1] if p.get("id") == "scale_dtype_range"]
    local = all(op["id"] not in ("zero_mean_unit_variance", "scale_range", "scale_mean_variance")
                for t in inputs + outputs for op in t["ops"])
    cites = "; ".join(c.text + (f" doi:{c.doi}" if c.doi else "") for c in descr.cite)
    weights_entry = getattr(descr.weights, chosen)
    spec = {
        "format": "bioimageio",
        "name": str(descr.name),
        "heuristic": heuristic,
        "input_channels": our_spec.get("input_channels", inputs[0]["channels"]),
        "normalization": {"kind": "none"},
        "preprocessing": lead + preprocessing,
        "postprocessing": [],
        "input_range": our_spec.get("input_range"),
        "output_range": our_spec.get("output_range"),
        "scale_factor": s,
        "halo": halo,
        "divisor": math.lcm(*steps),
        "local": local,
        "output_names": names,
        "weight_format": chosen,
        "weight_formats": available,
        "weights_sha256": str(weights_entry.sha256) if weights_entry.sha256 else None,
        "licence": str(descr.license) if descr.license else "not stated",
        "citation": cites,
        "card": {"description": str(descr.description),
                 **{k: v for k, v in (our_spec.get("card") or {}).items() if k != "description"}},
        "training_data": our_spec.get("training_data") or {},
        "record": ours.get("record"),
        "geometry": {"inputs": inputs, "outputs": outputs, "min_shape": mins, "step": steps},
        "path": str(Path(path).resolve()),
    }
    for key in ("quantiles", "classes", "bins", "derived_channels"):
        if key in our_spec:
            spec[key] = our_spec[key]
    spec["sha256"] = _identity(spec, ours)
    return spec


def _identity(spec: dict, ours: dict) -> str | None:
    """Return the model's sha256: its bundle's if the weights are those written at export."""
    written = (ours.get("weights_sha256") or {}).get(spec["weight_format"])
    if ours.get("bundle_sha256") and written and written == spec["weights_sha256"]:
        return ours["bundle_sha256"]
    return spec["weights_sha256"]


def _architecture(entry, path, trust_code: bool):
    arch = entry.architecture
    where = getattr(arch, "import_from", None) or str(getattr(arch, "source", "?"))
    if not trust_code:
        raise BundleError(
            f"{path} holds pytorch_state_dict weights, which need the architecture's Python "
            f"source ({where}, callable {arch.callable}): code from the package's author that "
            "would run on this machine. Nothing from it was run. Pass trust_code=True (the "
            "command line's --trust-code) only if you trust its author, or ask for the "
            "TorchScript or ONNX weights")
    kwargs = dict(arch.kwargs)
    if hasattr(arch, "import_from"):
        import importlib

        return getattr(importlib.import_module(arch.import_from), str(arch.callable)), kwargs
    import types

    source = _read_file(arch, "architecture source", path).decode("utf-8")
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    module = types.ModuleType(f"bioimageio_architecture_{digest}")
    exec(compile(source, str(arch.source), "exec"), module.__dict__)  # noqa: S102 - trusted
    return getattr(module, str(arch.callable)), kwargs



# -- writing helpers (the RDF's vocabulary) -------------------------------------------


def _licence(text) -> str | None:
    if not text:
        return None
    from bioimageio.spec.model.v0_5 import LicenseId

    head = str(text).split("(")[0].strip()
    for guess in (head, head.replace(" ", "-"), (_SPDX.match(head) or [""])[0]):
        try:
            return str(LicenseId(guess))
        except Exception:  # noqa: BLE001, S112 - not an SPDX id: try the next spelling
            continue
    return None


def _cite(m, text: str):
    doi = re.search(r"10\.\d{4,9}/[^\s;,)]+", text or "")
    url = re.search(r"https?://[^\s;,)]+", text or "")
    if doi:
        return m.CiteEntry(text=text, doi=m.Doi(doi.group().rstrip(".")))
    if url:
        return m.CiteEntry(text=text, url=url.group())
    return m.CiteEntry(text=text or "napari-im2im-uq",
                       url="https://github.com/napari/napari")


def _norm_steps(spec: dict, n: int) -> list[dict]:
    """Return the bundle's units (preprocessing, then normalization) as RDF steps."""
    steps = []
    for step in spec.get("preprocessing", []):
        kw = step.get("kwargs", {})
        if step["id"] == "scale_dtype_range":
            continue  # the package declares a float32 input
        if step["id"] == "zero_mean_unit_variance" and kw.get("mode") == "fixed":
            steps.append({"id": "fixed_zero_mean_unit_variance",
                          "kwargs": {"mean": kw["mean"], "std": kw["std"]}})
        elif step["id"] == "zero_mean_unit_variance":
            steps.append({"id": "zero_mean_unit_variance", "kwargs": {"eps": kw.get("eps", 1e-6)}})
        elif step["id"] == "scale_range":
            steps.append({"id": "scale_range", "kwargs": {
                "min_percentile": kw["min_percentile"], "max_percentile": kw["max_percentile"],
                "eps": kw.get("eps", 1e-6)}})
        else:
            steps.append({"id": step["id"], "kwargs": dict(kw)})
    norm = spec.get("normalization", {"kind": "none"})
    if norm["kind"] == "minmax":
        lo, hi = _lists(norm["min"], n), _lists(norm["max"], n)
        if lo == [0.0] * n and hi == [1.0] * n:
            return steps  # the identity (the RDF's validator refuses it as a step)
        steps.append({"id": "scale_linear", "kwargs": {
            "gain": [1.0 / (b - a) for a, b in zip(lo, hi, strict=True)],
            "offset": [-a / (b - a) for a, b in zip(lo, hi, strict=True)]}})
    elif norm["kind"] == "meanstd":
        steps.append({"id": "fixed_zero_mean_unit_variance",
                      "kwargs": {"mean": _lists(norm["mean"], n), "std": _lists(norm["std"], n)}})
    return steps


def _lists(value, n: int) -> list[float]:
    values = value if isinstance(value, list) else [value]
    return [float(v) for v in values] * (n if len(values) == 1 else 1)


def _rdf_step(m, step: dict, n: int):
    kind, kw = step["id"], dict(step["kwargs"])
    along = any(isinstance(v, list) for v in kw.values())
    if along and n == 1:
        kw = {k: (v[0] if isinstance(v, list) else v) for k, v in kw.items()}
        along = False
    if along:
        kw = {k: (v if isinstance(v, list) else [v] * n) if k in ("gain", "offset", "mean", "std")
              else v for k, v in kw.items()}
    if kind == "scale_linear":
        if along:
            return m.ScaleLinearDescr(kwargs=m.ScaleLinearAlongAxisKwargs(
                axis=m.AxisId("channel"), **kw))
        return m.ScaleLinearDescr(kwargs=m.ScaleLinearKwargs(**kw))
    if kind == "fixed_zero_mean_unit_variance":
        if along:
            return m.FixedZeroMeanUnitVarianceDescr(
                kwargs=m.FixedZeroMeanUnitVarianceAlongAxisKwargs(axis=m.AxisId("channel"), **kw))
        return m.FixedZeroMeanUnitVarianceDescr(kwargs=m.FixedZeroMeanUnitVarianceKwargs(**kw))
    if kind == "zero_mean_unit_variance":
        return m.ZeroMeanUnitVarianceDescr(kwargs=m.ZeroMeanUnitVarianceKwargs(
            axes=[m.AxisId("y"), m.AxisId("x")], **kw))
    if kind == "scale_range":
        return m.ScaleRangeDescr(kwargs=m.ScaleRangeKwargs(
            axes=[m.AxisId("y"), m.AxisId("x")], **kw))
    if kind == "clip":
        lo, hi = kw.get("min"), kw.get("max")
        return m.ClipDescr(kwargs=m.ClipKwargs(min=lo if not isinstance(lo, list) else min(lo),
                                               max=hi if not isinstance(hi, list) else max(hi)))
    raise BundleError(f"preprocessing step {kind!r} has no bioimage.io equivalent")
