"""A bioimage.io model as an :class:`Im2ImModel` (torch): runners, pre/post-processing, export.

:class:`BioimageioModel` runs the weights of a bioimage.io package (TorchScript, ONNX through
onnxruntime, or a ``pytorch_state_dict`` whose architecture the user trusted) behind the
interface the tiled inference uses (``predict_tensor``, ``halo``, ``divisor``,
``scale_factor``, ``output_names``). The package's RDF is read by
:mod:`napari_im2im_uq.models._bioimageio`, which builds the ``geometry`` this module runs.

:class:`ExportedNetwork` is what :func:`~napari_im2im_uq.models._bioimageio.export_bioimageio`
writes: a network of the zoo with its head read out and mapped to data units inside the
forward pass, so that any bioimage.io tool gets the named outputs in the user's units.
"""

from __future__ import annotations

import copy
import io
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ._errors import BundleError
from ._model import Im2ImModel

__all__ = ["BioimageioModel", "ExportedNetwork", "OnnxRunner", "TorchRunner", "apply_ops"]

_RANGE_OUTPUTS = ("prediction", "lower", "upper")
_SPREAD_OUTPUTS = ("std", "residual")


class ExportedNetwork(torch.nn.Module):
    """A U-Net of this package with its head decoded and its outputs in data units.

    The forward pass takes the network's normalised input (the RDF's preprocessing gives it)
    and, for a mask model, the prediction normalised to the output range; it returns one tensor
    per output name, ``(B, C, H * s, W * s)``.

    Parameters
    ----------
    heuristic : str
        The head, or "point" for a network whose single output channel is the prediction.
    unet : dict
        Keyword arguments of the network (:class:`~napari_im2im_uq.models.UNet2d`, or of
        ``architecture``'s class).
    quantiles : [lo, hi]
        Quantile levels of the quantile and softmax heads.
    output_range : [lo, hi] or None
        Data units of 0 and 1 in the network's output.
    scale_factor : int
        Output pixels per input pixel (a mask model up-samples its input by it).
    architecture : str
        A key of :data:`~napari_im2im_uq.models.ARCHITECTURES` ("unet2d" or "srnet2d").

    Examples
    --------
    >>> net = ExportedNetwork("gaussian", {"depth": 1, "base_channels": 2, "out_channels": 2})
    >>> [o.shape[1] for o in net(torch.zeros(1, 1, 4, 4))]
    [1, 1, 1, 1]
    """

    def __init__(self, heuristic: str, unet: dict, quantiles=(0.05, 0.95), output_range=None,
                 scale_factor: int = 1, architecture: str = "unet2d"):
        super().__init__()
        from ._unet import ARCHITECTURES

        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {sorted(ARCHITECTURES)}; got "
                             f"{architecture!r}")
        self.heuristic = str(heuristic)
        self.quantiles = (float(quantiles[0]), float(quantiles[1]))
        self.output_range = None if output_range is None else [float(v) for v in output_range]
        self.scale_factor = int(scale_factor)
        self.net = ARCHITECTURES[architecture](**unet)

    def _units(self, name: str, value: torch.Tensor) -> torch.Tensor:
        if self.output_range is None or self.heuristic in ("segmentation", "mask"):
            return value
        lo, hi = self.output_range
        if name in _RANGE_OUTPUTS:
            return value * (hi - lo) + lo
        if name in _SPREAD_OUTPUTS:
            return value * (hi - lo)
        return value

    def forward(self, x: torch.Tensor, prediction: torch.Tensor | None = None):
        from ._heads import decode_head

        if self.heuristic == "mask":
            if self.scale_factor > 1:
                x = F.interpolate(x, scale_factor=self.scale_factor, mode="bilinear",
                                  align_corners=False)
            x = torch.cat([x, prediction], dim=1)
        raw = self.net(x)
        if self.heuristic == "point":
            return (self._units("prediction", raw),)
        out = decode_head(raw.float(), self.heuristic, quantiles=self.quantiles)
        return tuple(self._units(name, value) for name, value in out.items())


class TorchRunner:
    """Runs a torch module (TorchScript or a trusted state dict) on a list of input tensors."""

    kind = "torch"

    def __init__(self, module: torch.nn.Module, weight_format: str):
        self.module = module.eval()
        self.weight_format = weight_format

    def __deepcopy__(self, memo):
        return TorchRunner(copy.deepcopy(self.module, memo), self.weight_format)

    @property
    def device(self) -> torch.device:
        for p in self.module.parameters():
            return p.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for p in self.module.parameters():
            return p.dtype
        return torch.float32

    def to(self, device, dtype=None) -> None:
        self.module.to(device=device, dtype=dtype)

    def __call__(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        with torch.no_grad():
            out = self.module(*[t.to(device=self.device, dtype=self.dtype) for t in inputs])
        if isinstance(out, torch.Tensor):
            return [out]
        return list(out)


class OnnxRunner:
    """Runs an ONNX model with onnxruntime on the CPU (tensors in, tensors out)."""

    kind = "onnx"
    weight_format = "onnx"

    def __init__(self, data: bytes):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(
            data, sess_options=options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __deepcopy__(self, memo):
        return self  # an onnxruntime session is immutable and may run from several threads

    device = torch.device("cpu")
    dtype = torch.float32

    def to(self, device, dtype=None) -> None:
        """Stay on the CPU (onnxruntime runs there here); the caller moves the outputs."""

    def __call__(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        feed = {name: t.detach().cpu().float().numpy()
                for name, t in zip(self.input_names, inputs, strict=True)}
        return [torch.from_numpy(np.asarray(o)) for o in self.session.run(None, feed)]


def load_runner(weight_format: str, data: bytes, architecture=None) -> TorchRunner | OnnxRunner:
    """Build the runner of one weights entry from its bytes (``architecture``: the callable)."""
    if weight_format == "torchscript":
        return TorchRunner(torch.jit.load(io.BytesIO(data), map_location="cpu"), weight_format)
    if weight_format == "onnx":
        return OnnxRunner(data)
    if weight_format == "pytorch_state_dict":
        builder, kwargs, strict = architecture
        module = builder(**kwargs)
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        module.load_state_dict(state, strict=strict)
        return TorchRunner(module, weight_format)
    raise BundleError(f"weight_format must be one of torchscript, onnx, pytorch_state_dict; "
                      f"got {weight_format!r}")


# -- pre- and post-processing (the RDF's vocabulary), on (B, C, H, W) float32 tensors --------

_DIMS = {"batch": 0, "channel": 1, "y": 2, "x": 3}


def _per_channel(value, x: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32, device=x.device)
    return t.view(1, -1, 1, 1) if t.ndim == 1 else t


def _reduce_dims(kwargs: dict) -> list[int]:
    axes = kwargs.get("axes")
    if axes is None:
        return [1, 2, 3]
    return sorted(_DIMS[str(a)] for a in axes if str(a) in _DIMS)


def apply_ops(x: torch.Tensor, ops: list[dict]) -> torch.Tensor:
    """Apply a list of RDF processing steps ``{"id": ..., "kwargs": {...}}`` to ``x``.

    Fixed steps (scale_linear, fixed_zero_mean_unit_variance, clip with bounds, sigmoid,
    binarize, ensure_dtype) act pixel by pixel; steps with sample statistics
    (zero_mean_unit_variance, scale_range, clip with percentiles) compute them over the tile
    they are given (the model is then marked not ``local``).

    Examples
    --------
    >>> x = torch.ones(1, 1, 2, 2)
    >>> apply_ops(x, [{"id": "scale_linear", "kwargs": {"gain": 2.0, "offset": 1.0}}]).max().item()
    3.0
    """
    for op in ops:
        kind, kw = op["id"], op.get("kwargs", {})
        if kind == "scale_linear":
            x = x * _per_channel(kw.get("gain", 1.0), x) + _per_channel(kw.get("offset", 0.0), x)
        elif kind == "fixed_zero_mean_unit_variance":
            x = (x - _per_channel(kw["mean"], x)) / _per_channel(kw["std"], x)
        elif kind == "zero_mean_unit_variance":
            dims = _reduce_dims(kw)
            mean = x.mean(dim=dims, keepdim=True)
            std = x.std(dim=dims, keepdim=True, unbiased=False)
            x = (x - mean) / (std + kw.get("eps", 1e-6))
        elif kind == "scale_range":
            dims = _reduce_dims(kw)
            flat = x.movedim(dims, list(range(4 - len(dims), 4))).flatten(4 - len(dims))
            lo = torch.quantile(flat, kw.get("min_percentile", 0.0) / 100, dim=-1)
            hi = torch.quantile(flat, kw.get("max_percentile", 100.0) / 100, dim=-1)
            for d in dims:
                lo, hi = lo.unsqueeze(d), hi.unsqueeze(d)
            x = (x - lo) / (hi - lo + kw.get("eps", 1e-6))
        elif kind == "clip":
            lo, hi = kw.get("min"), kw.get("max")
            if kw.get("min_percentile") is not None:
                lo = torch.quantile(x.flatten(), kw["min_percentile"] / 100).item()
            if kw.get("max_percentile") is not None:
                hi = torch.quantile(x.flatten(), kw["max_percentile"] / 100).item()
            x = x.clamp(min=lo, max=hi)
        elif kind == "sigmoid":
            x = torch.sigmoid(x)
        elif kind == "binarize":
            x = (x > _per_channel(kw["threshold"], x)).float()
        elif kind == "ensure_dtype":
            continue  # outputs are float32 here; the dtype of the package's files is theirs
        else:
            raise BundleError(
                f"processing step {kind!r} is not supported; supported: scale_linear, "
                "fixed_zero_mean_unit_variance, zero_mean_unit_variance, scale_range, clip, "
                "sigmoid, binarize, ensure_dtype")
    return x


#: Steps whose result depends on statistics of the whole tile (tiled != untiled).
SAMPLE_STATISTICS = ("zero_mean_unit_variance", "scale_range", "scale_mean_variance")


def _to_layout(x: torch.Tensor, axes: list[str]) -> torch.Tensor:
    """(B, C, H, W) -> the tensor's axes in the RDF's order (batch/channel may be absent)."""
    keep = [a for a in ("batch", "channel", "y", "x") if a in axes]
    for a in ("channel", "batch"):
        if a not in axes:
            x = x.squeeze(_DIMS[a])
    return x.permute([keep.index(a) for a in axes])


def _from_layout(x: torch.Tensor, axes: list[str]) -> torch.Tensor:
    """Permute the RDF's axis order to (B, C, H, W)."""
    order = [a for a in ("batch", "channel", "y", "x") if a in axes]
    x = x.permute([axes.index(a) for a in order])
    for a in ("batch", "channel"):
        if a not in axes:
            x = x.unsqueeze(_DIMS[a])
    return x


class BioimageioModel(Im2ImModel):
    """A model read from a bioimage.io package, run like any :class:`Im2ImModel`.

    Parameters
    ----------
    network : TorchRunner or OnnxRunner
        The runner of the package's weights.
    spec : dict
        What :func:`~napari_im2im_uq.models._bioimageio.read_package_spec` returns: name,
        heuristic, input channels, halo, scale, the ``geometry`` (tensor axes, processing,
        minimum shape and step) and the card.
    sha256 : str, optional
        The model's identity (see the package reader).
    """

    __slots__ = ()

    def __init__(self, network, spec: dict[str, Any], *, sha256: str | None = None):
        self._freeze(network, copy.deepcopy(dict(spec)), sha256)

    def __repr__(self) -> str:
        return (f"BioimageioModel(name={self.name!r}, weight_format={self.weight_format!r}, "
                f"scale_factor={self.scale_factor}, halo={self.halo}, divisor={self.divisor})")

    @property
    def weight_format(self) -> str:
        return self._spec["weight_format"]

    @property
    def divisor(self) -> int:
        return int(self._spec["divisor"])

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(self._spec["output_names"])

    @property
    def local(self) -> bool:
        return bool(self._spec.get("local", True))

    @property
    def device(self) -> torch.device:
        return self._network.device

    @property
    def dtype(self) -> torch.dtype:
        return self._network.dtype

    def to(self, device, dtype: torch.dtype | None = None) -> BioimageioModel:
        """Move the network (TorchScript, state dict) to ``device``; ONNX stays on the CPU."""
        allowed = (None, torch.float32, torch.float16, torch.bfloat16)
        if dtype not in allowed:
            raise ValueError(f"dtype must be one of {allowed}; got {dtype!r}")
        self._network.to(device, dtype)
        return self

    def normalize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the RDF's preprocessing of the first input to ``(B, C, H, W)`` raw data."""
        return apply_ops(x.to(dtype=torch.float32), self._spec["geometry"]["inputs"][0]["ops"])

    def predict_tensor(self, x: torch.Tensor, *, prediction: torch.Tensor | None = None):
        """Run the package on ``(B, C, H, W)`` raw data (see :meth:`Im2ImModel.predict_tensor`).

        Tiles smaller than the RDF's minimum shape are mirrored up to it and cropped back.
        """
        self._check_input(x)
        geometry = self._spec["geometry"]
        needs_pred = len(geometry["inputs"]) > 1
        s = self.scale_factor
        if needs_pred and prediction is None:
            raise ValueError("prediction is required for a mask model: a tensor of shape "
                             f"{(x.shape[0], 1, x.shape[2] * s, x.shape[3] * s)}; got None")
        if not needs_pred and prediction is not None:
            raise ValueError(f"prediction is only accepted by mask models; this model's "
                             f"heuristic is {self.heuristic!r}")
        rows, cols = x.shape[-2:]
        min_r, min_c = geometry["min_shape"]
        pad_r, pad_c = max(0, min_r - rows), max(0, min_c - cols)
        pad_r += -(rows + pad_r - min_r) % geometry["step"][0] if pad_r else 0
        pad_c += -(cols + pad_c - min_c) % geometry["step"][1] if pad_c else 0
        tensors = [x.float().cpu()]
        if needs_pred:
            tensors.append(prediction.float().cpu())
        feeds = []
        for k, (t, desc) in enumerate(zip(tensors, geometry["inputs"], strict=False)):
            f = s if k else 1
            if pad_r or pad_c:
                t = torch.from_numpy(np.pad(t.numpy(), ((0, 0), (0, 0), (0, pad_r * f),
                                                        (0, pad_c * f)), mode="symmetric"))
            feeds.append(_to_layout(apply_ops(t, desc["ops"]), desc["axes"]).contiguous())
        raw = self._network(feeds)
        out = {}
        for name, value, desc in zip(self.output_names, raw, geometry["outputs"], strict=True):
            value = apply_ops(_from_layout(value.float().cpu(), desc["axes"]), desc["ops"])
            out[name] = value[..., : rows * s, : cols * s].contiguous()
        return out
