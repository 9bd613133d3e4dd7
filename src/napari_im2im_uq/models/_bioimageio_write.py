"""Writing a bioimage.io model package (torch and bioimageio.spec, imported by the export only)."""

from __future__ import annotations

import hashlib
import json
import string
import warnings
from pathlib import Path

import numpy as np
import torch

from ._bioimageio_model import ExportedNetwork, apply_ops
from ._bioimageio_rdf import CONFIG_KEY, _cite, _licence, _norm_steps, _rdf_step

__all__ = ["write_package"]

_LIB = "napari_im2im_uq.models._bioimageio_model"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _test_input(spec: dict, n: int, side: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    u = rng.random((1, n, side, side), dtype=np.float32)
    norm = spec.get("normalization", {"kind": "none"})
    if norm["kind"] == "minmax":
        lo = np.asarray(norm["min"], np.float32).reshape(1, -1, 1, 1)
        hi = np.asarray(norm["max"], np.float32).reshape(1, -1, 1, 1)
        return (lo + (hi - lo) * u).astype(np.float32)
    if norm["kind"] == "meanstd":
        mean = np.asarray(norm["mean"], np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(norm["std"], np.float32).reshape(1, -1, 1, 1)
        return (mean + std * (4 * u - 2)).astype(np.float32)
    return u


def _card(spec: dict, names, fmt: str, record) -> str:
    card = spec.get("card") or {}
    lines = [f"# {spec.get('name', 'model')}", "", str(card.get("description", "")), "",
             "Exported by napari-im2im-uq (calibrated uncertainty for image-to-image models).", "",
             f"- head: {spec['heuristic']}; outputs: {', '.join(names)}",
             f"- input channels: {', '.join(spec['input_channels'])}",
             f"- scale: {spec['scale_factor']}x; halo: {spec['halo']} input pixels",
             f"- weights: {fmt}",
             f"- licence: {spec.get('licence') or 'not stated'}",
             f"- citation: {spec.get('citation') or 'not stated'}"]
    if spec.get("derived_channels"):
        lines.append(f"- derived input channels (computed by napari-im2im-uq from the given ones):"
                     f" {json.dumps(spec['derived_channels'])}")
    if record is not None:
        res = record.get("result", {})
        lines += ["", "## Calibration", "",
                  f"This package carries a calibration record in `config.{CONFIG_KEY}.record`: "
                  f"method {res.get('method', '?')}, alpha {res.get('alpha', '?')}, "
                  f"delta {res.get('delta', '?')}, n {res.get('n', '?')}. "
                  "`napari-im2im-uq` restores it when it loads the package."]
    return "\n".join(lines) + "\n"


def _rdf_name(name) -> str:
    """Return the model's name as the RDF allows it: letters, digits, ``_+- ()``, 5-128 long."""
    allowed = set(string.ascii_letters + string.digits + "_+- ()")
    text = "".join(c if c in allowed else "-" for c in str(name or "model"))[:128]
    return text if len(text) >= 5 else f"{text} model"


def _trace(exported, args):
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is bioimage.io's format
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks of the head
        return torch.jit.trace(exported, args, check_trace=False, strict=False)


def write_package(im2im, network, spec: dict, target: Path, *, record, weight_format: str) -> Path:
    """Write the package of ``network`` (of ``im2im``, None for a point-only U-Net) to ``target``.

    ``target``'s folder is a scratch folder; the package (folder, or zip when ``target`` ends
    in ".zip") is written at ``target`` and returned.
    """
    import bioimageio.spec as bs
    from bioimageio.spec.model import v0_5 as m

    from .. import __version__

    work = target.parent / "files"
    work.mkdir()
    heuristic = spec["heuristic"]
    names = list(im2im.output_names) if im2im is not None else ["prediction"]
    n_in = len(spec["input_channels"])
    s, halo, div = int(spec["scale_factor"]), int(spec["halo"]), int(network.divisor)
    arch = spec.get("architecture", "unet2d")
    exported = ExportedNetwork(heuristic, dict(network.config), spec.get("quantiles", (0.05, 0.95)),
                               spec.get("output_range"), s, arch)
    exported.net.load_state_dict(
        {k: v.detach().cpu().clone() for k, v in network.state_dict().items()})
    exported.float().eval()
    mask = heuristic == "mask"

    side = div * -(-max(64, 2 * halo + div) // div)
    x = _test_input(spec, n_in, side)
    in_steps = _norm_steps(spec, n_in)
    feeds = [apply_ops(torch.from_numpy(x), in_steps)]
    pred_steps = []
    tests = {"input": x}
    if mask:
        lo, hi = spec.get("output_range") or (0.0, 1.0)
        p = np.random.default_rng(1).random((1, 1, side * s, side * s), dtype=np.float32)
        tests["prediction"] = (lo + (hi - lo) * p).astype(np.float32)
        if (lo, hi) != (0.0, 1.0):  # the identity is no step (the validator refuses it)
            pred_steps = [{"id": "scale_linear", "kwargs": {"gain": 1.0 / (hi - lo),
                                                            "offset": -lo / (hi - lo)}}]
        feeds.append(apply_ops(torch.from_numpy(tests["prediction"]), pred_steps))
    clip = [st for st in spec.get("postprocessing", []) if st["id"] == "clip"]
    post = {name: (clip[-1:] if name in ("prediction", "lower", "upper")
                   and heuristic not in ("segmentation", "mask") else []) for name in names}
    with torch.no_grad():
        outs = exported(*feeds)
    for name, value in zip(names, outs, strict=True):
        tests[name] = apply_ops(value.float(), [
            {"id": "clip", "kwargs": dict(st["kwargs"])} for st in post[name]]).numpy()
    for key, arr in tests.items():
        np.save(work / f"{key}.npy", np.ascontiguousarray(arr, dtype=np.float32))

    weights = work / ("weights.onnx" if weight_format == "onnx" else "weights.pt")
    torch_version = m.Version(torch.__version__.split("+")[0])
    if weight_format == "torchscript":
        _trace(exported, tuple(feeds)).save(str(weights))
        entry = {"torchscript": m.TorchscriptWeightsDescr(
            source=weights, sha256=m.Sha256(_sha(weights)), pytorch_version=torch_version)}
    elif weight_format == "onnx":
        in_names = ["input", "prediction"][: len(feeds)]
        dyn = {k: {0: "batch", 2: "rows", 3: "columns"} for k in in_names + names}
        with warnings.catch_warnings():  # the TorchScript-based exporter needs no onnxscript
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(exported, tuple(feeds), str(weights), input_names=in_names,
                              output_names=names, dynamic_axes=dyn, opset_version=17,
                              dynamo=False)
        entry = {"onnx": m.OnnxWeightsDescr(source=weights, sha256=m.Sha256(_sha(weights)),
                                            opset_version=17)}
    else:
        torch.save(exported.state_dict(), weights)
        kwargs = {"heuristic": heuristic, "unet": dict(network.config),
                  "quantiles": list(spec.get("quantiles", (0.05, 0.95))),
                  "output_range": spec.get("output_range"), "scale_factor": s}
        if arch != "unet2d":  # packages of U-Nets stay as they were
            kwargs["architecture"] = arch
        entry = {"pytorch_state_dict": m.PytorchStateDictWeightsDescr(
            source=weights, sha256=m.Sha256(_sha(weights)), pytorch_version=torch_version,
            architecture=m.ArchitectureFromLibraryDescr(
                callable=m.Identifier("ExportedNetwork"), import_from=_LIB, kwargs=kwargs))}

    least = div * -(-(2 * halo + 1) // div)  # the validator wants more than two halos
    space = {a: m.ParameterizedSize(min=least, step=div) for a in ("y", "x")}
    inputs = [m.InputTensorDescr(
        id=m.TensorId("input"),
        axes=[m.BatchAxis(), m.ChannelAxis(channel_names=[m.Identifier(c)
                                                          for c in spec["input_channels"]]),
              *(m.SpaceInputAxis(id=m.AxisId(a), size=space[a]) for a in ("y", "x"))],
        test_tensor=m.FileDescr(source=work / "input.npy", sha256=m.Sha256(_sha(work / "input.npy"))),
        preprocessing=[_rdf_step(m, st, n_in) for st in in_steps])]
    if mask:
        inputs.append(m.InputTensorDescr(
            id=m.TensorId("prediction"),
            axes=[m.BatchAxis(), m.ChannelAxis(channel_names=[m.Identifier("prediction")]),
                  *(m.SpaceInputAxis(id=m.AxisId(a), scale=1.0 / s, size=m.SizeReference(
                      tensor_id=m.TensorId("input"), axis_id=m.AxisId(a))) for a in ("y", "x"))],
            test_tensor=m.FileDescr(source=work / "prediction.npy",
                                    sha256=m.Sha256(_sha(work / "prediction.npy"))),
            preprocessing=[_rdf_step(m, st, 1) for st in pred_steps]))
    outputs = []
    for name in names:
        channels = (spec["classes"] if name == "probabilities" else [name])
        space_out = [
            (m.SpaceOutputAxisWithHalo if halo else m.SpaceOutputAxis)(
                id=m.AxisId(a), scale=1.0 / s,
                size=m.SizeReference(tensor_id=m.TensorId("input"), axis_id=m.AxisId(a)),
                **({"halo": halo * s} if halo else {}))
            for a in ("y", "x")]
        outputs.append(m.OutputTensorDescr(
            id=m.TensorId(name),
            axes=[m.BatchAxis(), m.ChannelAxis(channel_names=[m.Identifier(c) for c in channels]),
                  *space_out],
            test_tensor=m.FileDescr(source=work / f"{name}.npy",
                                    sha256=m.Sha256(_sha(work / f"{name}.npy"))),
            postprocessing=[_rdf_step(m, st, 1) for st in post[name]]))
    (work / "README.md").write_text(_card(spec, names, weight_format, record), encoding="utf-8")
    ours = {
        "spec": json.loads(json.dumps({k: v for k, v in spec.items() if k != "path"})),
        "bundle_sha256": spec.get("sha256"),
        "weights_sha256": {weight_format: _sha(weights)},
        "record": record,
        "exported_by": f"napari-im2im-uq {__version__}",
    }
    licence = _licence(spec.get("licence"))
    descr = m.ModelDescr(
        name=_rdf_name(spec.get("name")),
        description=str((spec.get("card") or {}).get("description") or
                        f"{heuristic} image-to-image model exported by napari-im2im-uq")[:1024],
        authors=[m.Author(name="napari-im2im-uq")],
        cite=[_cite(m, str(spec.get("citation") or ""))],
        license=licence,
        documentation=m.FileDescr(source=work / "README.md"),
        tags=["napari-im2im-uq", "image-to-image", "uncertainty", heuristic, "2d"],
        inputs=inputs, outputs=outputs, weights=m.WeightsDescr(**entry),
        config={CONFIG_KEY: ours})
    if target.suffix == ".zip":
        bs.save_bioimageio_package(descr, output_path=target)
    else:
        bs.save_bioimageio_package_as_folder(descr, output_path=target)
    return target
