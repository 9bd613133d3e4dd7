"""``Im2ImModel``: a network, its specification, and the maps to and from data units (torch)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ._derived import given_channels
from ._fold import inference_network
from ._heads import decode_head, output_names
from ._spec import complete_spec
from ._units import apply as apply_units
from ._units import output_clip
from ._units import resolve as resolve_units

__all__ = ["BORDER_MODE", "Im2ImModel"]

#: numpy ``np.pad`` mode used at image borders by :meth:`Im2ImModel.__call__`. "symmetric" mirrors
#: the edge pixel too; it is what dask's ``map_overlap(boundary="reflect")`` does.
BORDER_MODE = "symmetric"

_RANGE_OUTPUTS = ("prediction", "lower", "upper")
_SPREAD_OUTPUTS = ("std", "residual")


def _as_tensor(values, n: int, device, dtype=torch.float32) -> torch.Tensor:
    values = values if isinstance(values, list) else [values]
    if len(values) == 1:
        values = values * n
    return torch.tensor(values, device=device, dtype=dtype).view(1, n, 1, 1)


class Im2ImModel:
    """A trained image-to-image network with its ``model.json`` specification.

    The object is read-only once built; :meth:`to` moves it to another device or precision.
    Usually obtained from :func:`load_model`; a freshly trained network can be wrapped directly.

    Parameters
    ----------
    network : torch.nn.Module
        A network of a registered architecture (see :data:`ARCHITECTURES`). It is put in eval
        mode; it is not copied.
    spec : dict
        The ``model.json`` fields. Fields that follow from the network (``architecture``,
        ``kwargs``, ``halo``, ...) are filled in; ``heuristic`` is required.
    sha256 : str, optional
        SHA-256 of the weights file this model was loaded from (None for an unsaved model).

    Attributes
    ----------
    name : str
    spec : dict
        A copy of the full specification.
    heuristic : str
    scale_factor : int
        Output pixels per input pixel along rows and columns.
    halo : int
        Receptive-field radius in input pixels.
    divisor : int
        Input rows and columns given to :meth:`predict_tensor` must be multiples of this.
    in_channels : list of str
        Names of the input channels.
    output_names : tuple of str
        Keys of the dicts returned by :meth:`predict_tensor` and ``__call__``.
    network : torch.nn.Module
    sha256 : str or None
    local : bool
        False when the network normalises with whole-tile statistics (group/instance norm), so
        tiled and whole-image predictions differ slightly.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_im2im_uq.models import Im2ImModel, build_network
    >>> net = build_network("quantile", depth=2, base_channels=4)
    >>> model = Im2ImModel(net, {"heuristic": "quantile", "name": "demo"})
    >>> out = model(np.zeros((30, 41), dtype=np.float32))
    >>> sorted(out), out["prediction"].shape
    (['lower', 'prediction', 'upper'], (30, 41))
    """

    __slots__ = ("_frozen", "_network", "_sha256", "_spec")

    def __init__(
        self, network: torch.nn.Module, spec: dict[str, Any], *, sha256: str | None = None
    ):
        full = complete_spec(network, spec)
        self._freeze(network.eval(), full, sha256)

    def _freeze(self, network, full: dict[str, Any], sha256: str | None) -> None:
        """Set the read-only state: ``full`` (the model's own spec), ``network``, ``sha256``."""
        if sha256 is not None:
            full["sha256"] = sha256
        object.__setattr__(self, "_spec", full)
        object.__setattr__(self, "_network", network)
        object.__setattr__(self, "_sha256", full.get("sha256"))
        object.__setattr__(self, "_frozen", True)

    def _copy(self):
        """Return a model of the same type on a deep copy of the network (cached ones never move)."""
        return type(self)(copy.deepcopy(self._network), self.spec, sha256=self._sha256)

    def __setattr__(self, name, value):
        raise AttributeError(f"Im2ImModel is read-only; cannot set {name!r}")

    def __repr__(self) -> str:
        return (
            f"Im2ImModel(name={self.name!r}, heuristic={self.heuristic!r}, "
            f"scale_factor={self.scale_factor}, halo={self.halo}, divisor={self.divisor}, "
            f"device={str(self.device)!r})"
        )

    # -- attributes -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._spec["name"]

    @property
    def spec(self) -> dict[str, Any]:
        return copy.deepcopy(self._spec)

    @property
    def heuristic(self) -> str:
        return self._spec["heuristic"]

    @property
    def scale_factor(self) -> int:
        return int(self._spec["scale_factor"])

    @property
    def halo(self) -> int:
        return int(self._spec["halo"])

    @property
    def divisor(self) -> int:
        return int(self._network.divisor)

    @property
    def in_channels(self) -> list[str]:
        return list(self._spec["input_channels"])

    @property
    def output_names(self) -> tuple[str, ...]:
        return output_names(self.heuristic)

    @property
    def network(self) -> torch.nn.Module:
        return self._network

    @property
    def sha256(self) -> str | None:
        return self._sha256

    @property
    def local(self) -> bool:
        return bool(getattr(self._network, "local", True))

    @property
    def device(self) -> torch.device:
        return next(self._network.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self._network.parameters()).dtype

    # -- device -----------------------------------------------------------------------------
    def to(self, device, dtype: torch.dtype | None = None) -> Im2ImModel:
        """Move the network to ``device`` (and ``dtype``: float32, float16 or bfloat16).

        Normalisation and read-out always run in float32; only the network runs in ``dtype``.

        Returns
        -------
        Im2ImModel
            ``self``.

        Examples
        --------
        >>> from napari_im2im_uq.models import Im2ImModel, build_network
        >>> model = Im2ImModel(build_network("mask", in_channels=2, depth=1, base_channels=2),
        ...                    {"heuristic": "mask"})
        >>> model.to("cpu").device.type
        'cpu'
        """
        allowed = (None, torch.float32, torch.float16, torch.bfloat16)
        if dtype not in allowed:
            raise ValueError(f"dtype must be one of {allowed}; got {dtype!r}")
        self._network.to(device=device, dtype=dtype)
        return self

    # -- unit maps --------------------------------------------------------------------------
    def normalize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the declared input normalisation to ``(B, C, H, W)`` raw data (float32).

        Examples
        --------
        >>> import torch
        >>> from napari_im2im_uq.models import Im2ImModel, build_network
        >>> model = Im2ImModel(build_network("quantile", depth=1, base_channels=2),
        ...     {"heuristic": "quantile",
        ...      "normalization": {"kind": "minmax", "min": 0, "max": 255}})
        >>> model.normalize_input(torch.full((1, 1, 2, 2), 255.0)).max().item()
        1.0
        """
        x = x.to(dtype=torch.float32)
        norm = self._spec["normalization"]
        n = x.shape[1]
        if norm["kind"] == "minmax":
            lo = _as_tensor(norm["min"], n, x.device)
            hi = _as_tensor(norm["max"], n, x.device)
            return (x - lo) / (hi - lo)
        if norm["kind"] == "meanstd":
            mean = _as_tensor(norm["mean"], n, x.device)
            std = _as_tensor(norm["std"], n, x.device)
            return (x - mean) / std
        return x

    def normalize_target(self, y: torch.Tensor) -> torch.Tensor:
        """Map data-unit targets to the network's output units (``output_range`` -> [0, 1]).

        Identity when ``output_range`` is null. Training uses this on ground truth.

        Examples
        --------
        >>> import torch
        >>> from napari_im2im_uq.models import Im2ImModel, build_network
        >>> model = Im2ImModel(build_network("quantile", depth=1, base_channels=2),
        ...                    {"heuristic": "quantile", "output_range": [-1.0, 3.0]})
        >>> model.normalize_target(torch.tensor([3.0])).item()
        1.0
        """
        y = y.to(dtype=torch.float32)
        out_range = self._spec["output_range"]
        if out_range is None:
            return y
        lo, hi = (float(v) for v in out_range)
        return (y - lo) / (hi - lo)

    def _to_data_units(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out_range = self._spec["output_range"]
        clip = output_clip(self._spec)  # the declared postprocessing: point and bounds only
        if self.heuristic in ("segmentation", "mask") or (out_range is None and clip is None):
            return out
        lo, hi = (0.0, 1.0) if out_range is None else (float(v) for v in out_range)
        mapped = {}
        for key, value in out.items():
            if key in _RANGE_OUTPUTS:
                mapped[key] = value * (hi - lo) + lo
                if clip is not None:
                    mapped[key] = mapped[key].clamp(*clip)
            elif key in _SPREAD_OUTPUTS:
                mapped[key] = value * (hi - lo)
            else:
                mapped[key] = value
        return mapped

    # -- prediction -------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"x must be a torch.Tensor; got {type(x).__name__}")
        if x.ndim != 4:
            raise ValueError(
                f"x must have shape (B, C, H, W); got {x.ndim} dimensions {tuple(x.shape)}"
            )
        if x.shape[1] != len(self.in_channels):
            raise ValueError(
                f"x must have {len(self.in_channels)} channels {self.in_channels}; "
                f"got {x.shape[1]} (shape {tuple(x.shape)})"
            )
        rows, cols = x.shape[-2:]
        if rows % self.divisor or cols % self.divisor or rows == 0 or cols == 0:
            raise ValueError(
                f"x rows and columns must be positive multiples of divisor={self.divisor}; "
                f"got {rows} x {cols} (use model(...) to pad any size)"
            )

    def predict_tensor(
        self, x: torch.Tensor, *, prediction: torch.Tensor | None = None, fold: bool = True
    ) -> dict[str, torch.Tensor]:
        """Run the model on a batch in raw data units.

        Applies the input normalisation, runs the network (in its dtype, without gradients),
        reads the head out in float32 and maps outputs back to data units. The network run is
        its inference copy (:func:`~napari_im2im_uq.models._fold.inference_network`: eval-mode
        batch norm folded into the convolutions, made once and remade when the network
        changes); every prediction (tiled, untiled, :meth:`__call__`) runs that same copy, so
        they agree bit for bit, and differ from the network itself by float rounding only.

        Parameters
        ----------
        x : torch.Tensor
            ``(B, C, H, W)`` input in raw units, ``H`` and ``W`` multiples of :attr:`divisor`.
            Moved to the model's device.
        prediction : torch.Tensor, optional
            Mask models only (and required there): ``(B, 1, H * s, W * s)`` prediction of the
            image-to-image model, in data units. The input is up-sampled bilinearly
            (``align_corners=False``) to the output grid and concatenated with the
            normalised prediction.
        fold : bool
            False runs the network itself, unfolded (slower; what a plain forward pass of the
            user's network computes).

        Returns
        -------
        dict of str to torch.Tensor
            Keys :attr:`output_names`; float32 tensors of shape ``(B, 1, H * s, W * s)``
            (``(B, K, H * s, W * s)`` for "probabilities"), on the model's device.
            For regression heads ``lower <= prediction <= upper``.

        Examples
        --------
        >>> import torch
        >>> from napari_im2im_uq.models import Im2ImModel, build_network
        >>> net = build_network("gaussian", depth=2, base_channels=4, scale_factor=2)
        >>> model = Im2ImModel(net, {"heuristic": "gaussian"})
        >>> out = model.predict_tensor(torch.rand(2, 1, 8, 8))
        >>> out["std"].shape
        torch.Size([2, 1, 16, 16])
        """
        self._check_input(x)
        device = self.device
        xn = self.normalize_input(x.to(device=device))
        if self.heuristic == "mask":
            s = self.scale_factor
            expected = (x.shape[0], 1, x.shape[2] * s, x.shape[3] * s)
            if prediction is None:
                raise ValueError(
                    f"prediction is required for a mask model: a tensor of shape {expected}; "
                    "got None"
                )
            if tuple(prediction.shape) != expected:
                raise ValueError(
                    f"prediction must have shape {expected}; got {tuple(prediction.shape)}"
                )
            if s > 1:
                xn = F.interpolate(xn, scale_factor=s, mode="bilinear", align_corners=False)
            pn = self.normalize_target(prediction.to(device=device))
            xn = torch.cat([xn, pn], dim=1)
        elif prediction is not None:
            raise ValueError(
                f"prediction is only accepted by mask models; this model's heuristic is "
                f"{self.heuristic!r}"
            )
        network = inference_network(self._network) if fold else self._network
        with torch.no_grad():
            raw = network(xn.to(dtype=self.dtype))
        quantiles = self._spec.get("quantiles", (0.05, 0.95))
        out = decode_head(raw.float(), self.heuristic, quantiles=quantiles)
        return self._to_data_units(out)

    def __call__(
        self,
        x: np.ndarray,
        *,
        prediction: np.ndarray | None = None,
        batch_size: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Predict on a numpy array of any size.

        Border rule: the image is padded by :attr:`halo` pixels on every side, plus enough
        at the bottom and right to reach a multiple of :attr:`divisor`, mirroring the image
        (``np.pad`` mode "symmetric", i.e. dask's ``boundary="reflect"``); outputs are cropped
        back. So no output pixel sees the network's zero padding, and tiled inference that
        extends tiles by ``halo`` with the same boundary gives the same result.

        Parameters
        ----------
        x : numpy.ndarray
            ``(H, W)`` (single-channel models), ``(C, H, W)`` or ``(B, C, H, W)``, raw units.
        prediction : numpy.ndarray, optional
            Mask models only: the prediction on the output grid, with the same leading axes as
            ``x`` (``(H*s, W*s)``, ``(1, H*s, W*s)`` or ``(B, 1, H*s, W*s)``).
        batch_size : int, optional
            Images run through the network at once (default: all).

        Returns
        -------
        dict of str to numpy.ndarray
            float32 arrays with the leading axes of ``x``: ``(H*s, W*s)``, ``(1, H*s, W*s)`` or
            ``(B, 1, H*s, W*s)``; "probabilities" has ``K`` in place of the channel axis
            (``(K, H*s, W*s)`` for 2-D and 3-D inputs).

        Examples
        --------
        >>> import numpy as np
        >>> from napari_im2im_uq.models import Im2ImModel, build_network
        >>> net = build_network("segmentation", n_classes=3, depth=2, base_channels=4)
        >>> model = Im2ImModel(net, {"heuristic": "segmentation"})
        >>> model(np.zeros((1, 13, 7)))["probabilities"].shape
        (3, 13, 7)
        """
        arr = np.asarray(x)
        if arr.ndim not in (2, 3, 4) or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(
                "x must be a numeric array of shape (H, W), (C, H, W) or (B, C, H, W); "
                f"got dtype {arr.dtype} and shape {arr.shape}"
            )
        n_in = len(self.in_channels)
        if arr.ndim == 2 and n_in != 1:
            raise ValueError(
                f"x of shape (H, W) is only accepted by single-channel models; this model has "
                f"{n_in} channels {self.in_channels}; got shape {arr.shape}"
            )
        if arr.ndim > 2 and arr.shape[-3] != n_in:
            raise ValueError(
                f"x must have {n_in} channels on axis -3 ({self.in_channels}); got shape "
                f"{arr.shape} (pass a stack of single-channel images as (B, 1, H, W))"
            )
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
        ):
            raise ValueError(f"batch_size must be a positive integer or None; got {batch_size!r}")
        if arr.size == 0:
            raise ValueError(f"x must not be empty; got shape {arr.shape}")
        lead = arr.ndim
        x4 = arr.reshape((-1, n_in) + arr.shape[-2:]).astype(np.float32, copy=False)
        if self._spec.get("preprocessing") or self._spec.get("input_range"):  # raw -> data units
            given = [self.in_channels.index(c) for c in given_channels(self._spec)]
            raw = arr.reshape(x4.shape)[:, given]
            x4 = x4.astype(np.float32, copy=True)  # the caller's array is never changed
            x4[:, given] = apply_units(raw, resolve_units(self._spec, raw)["ops"], channel_axis=1)
        s = self.scale_factor
        rows, cols = x4.shape[-2:]
        halo, div = self.halo, self.divisor
        extra_r = -(rows + 2 * halo) % div
        extra_c = -(cols + 2 * halo) % div
        pad = ((0, 0), (0, 0), (halo, halo + extra_r), (halo, halo + extra_c))
        xp = np.pad(x4, pad, mode=BORDER_MODE)
        pred_p = None
        if self.heuristic == "mask":
            if prediction is None:
                raise ValueError("prediction is required for a mask model; got None")
            parr = np.asarray(prediction, dtype=np.float32)
            out_grid = (rows * s, cols * s)
            expected = (*arr.shape[:-3], 1, *out_grid) if lead > 2 else out_grid
            if parr.shape != expected:
                raise ValueError(f"prediction must have shape {expected}; got {parr.shape}")
            p4 = parr.reshape((-1, 1, rows * s, cols * s))
            pred_p = np.pad(
                p4,
                tuple((a * s, b * s) for a, b in pad),
                mode=BORDER_MODE,
            )
        elif prediction is not None:
            raise ValueError(
                f"prediction is only accepted by mask models; this model's heuristic is "
                f"{self.heuristic!r}"
            )
        n = xp.shape[0]
        step = n if batch_size is None else batch_size
        chunks: dict[str, list[np.ndarray]] = {}
        r0, c0 = halo * s, halo * s
        for start in range(0, n, max(step, 1)):
            xt = torch.from_numpy(np.ascontiguousarray(xp[start : start + step]))
            pt = (
                None
                if pred_p is None
                else torch.from_numpy(np.ascontiguousarray(pred_p[start : start + step]))
            )
            out = self.predict_tensor(xt, prediction=pt)
            for key, value in out.items():
                crop = value[..., r0 : r0 + rows * s, c0 : c0 + cols * s]
                chunks.setdefault(key, []).append(crop.cpu().numpy())
        result = {}
        for key, parts in chunks.items():
            full = np.concatenate(parts, axis=0).astype(np.float32, copy=False)
            if lead == 4:
                result[key] = full
            elif lead == 3:
                result[key] = full[0]
            else:
                result[key] = full[0] if key == "probabilities" else full[0, 0]
        return result
