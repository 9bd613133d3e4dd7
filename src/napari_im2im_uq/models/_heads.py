"""Heads: how the raw output channels of a network are read (torch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._errors import HEURISTICS

__all__ = ["STD_FLOOR", "build_network", "decode_head", "head_channels", "output_names"]

#: Smallest standard deviation of the Gaussian head, in normalised output units.
STD_FLOOR = 1e-4


def _check_heuristic(heuristic: str) -> None:
    if heuristic not in HEURISTICS:
        raise ValueError(f"heuristic must be one of {HEURISTICS}; got {heuristic!r}")


def head_channels(heuristic: str, *, bins: int | None = None, n_classes: int | None = None) -> int:
    """Return the number of raw network output channels a head needs.

    Parameters
    ----------
    heuristic : str
        One of :data:`HEURISTICS`.
    bins : int, optional
        Number of intensity bins K (required for "softmax", at least 2).
    n_classes : int, optional
        Number of classes (required for "segmentation", at least 2).

    Returns
    -------
    int
        3 for quantile (point, lower offset, upper offset), 2 for residual and gaussian,
        ``bins`` for softmax, ``n_classes`` for segmentation, 1 for mask and point.

    Examples
    --------
    >>> head_channels("quantile"), head_channels("softmax", bins=50)
    (3, 50)
    """
    _check_heuristic(heuristic)
    if heuristic == "softmax":
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
            raise ValueError(f"bins must be an integer >= 2 for the softmax head; got {bins!r}")
        return bins
    if heuristic == "segmentation":
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise ValueError(
                f"n_classes must be an integer >= 2 for the segmentation head; got {n_classes!r}"
            )
        return n_classes
    return {"quantile": 3, "residual": 2, "gaussian": 2, "mask": 1, "point": 1}[heuristic]


def output_names(heuristic: str) -> tuple[str, ...]:
    """Return the names of the outputs a model with this head returns (in data units).

    Examples
    --------
    >>> output_names("gaussian")
    ('prediction', 'lower', 'upper', 'std')
    """
    _check_heuristic(heuristic)
    return {
        "quantile": ("prediction", "lower", "upper"),
        "residual": ("prediction", "lower", "upper", "residual"),
        "gaussian": ("prediction", "lower", "upper", "std"),
        "softmax": ("prediction", "lower", "upper"),
        "segmentation": ("probabilities",),
        "mask": ("mask",),
        "point": ("prediction",),
    }[heuristic]


def build_network(
    heuristic: str,
    *,
    in_channels: int = 1,
    bins: int | None = None,
    n_classes: int | None = None,
    architecture: str = "unet2d",
    **kwargs,
):
    """Build an untrained network with the right number of output channels for a head.

    Parameters
    ----------
    heuristic : str
        One of :data:`HEURISTICS`.
    in_channels : int
        Network input channels. For "mask" this is the number of degraded-input channels plus
        one (the prediction is concatenated as the last channel).
    bins, n_classes : int, optional
        See :func:`head_channels`.
    architecture : str
        A key of :data:`ARCHITECTURES`.
    **kwargs
        Further architecture keyword arguments (``depth``, ``base_channels``, ``norm``,
        ``upsampling``, ``scale_factor``).

    Returns
    -------
    torch.nn.Module
        The network, float32, in training mode.

    Examples
    --------
    >>> net = build_network("quantile", depth=2, base_channels=4)
    >>> net.config["out_channels"]
    3
    """
    from ._unet import ARCHITECTURES

    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"architecture must be one of {sorted(ARCHITECTURES)}; got {architecture!r}"
        )
    out = head_channels(heuristic, bins=bins, n_classes=n_classes)
    return ARCHITECTURES[architecture](in_channels=in_channels, out_channels=out, **kwargs)


def _quantile_index(cdf: torch.Tensor, level: float) -> torch.Tensor:
    """Smallest bin index k with cdf[k] >= level (Appendix B of Angelopoulos et al. 2022)."""
    idx = (cdf < level).sum(dim=1, keepdim=True)
    return idx.clamp_(max=cdf.shape[1] - 1)


def decode_head(
    raw: torch.Tensor,
    heuristic: str,
    *,
    quantiles: tuple[float, float] = (0.05, 0.95),
) -> dict[str, torch.Tensor]:
    """Turn raw network channels into named outputs, in normalised output units.

    Regression outputs are in the network's units (0 and 1 stand for the model's
    ``output_range``); :class:`Im2ImModel` maps them to data units.

    - quantile: ``prediction = raw0``, ``lower = raw0 - softplus(raw1)``,
      ``upper = raw0 + softplus(raw2)``, so the quantiles can never cross the point.
    - residual: ``prediction = raw0``, ``residual = softplus(raw1)``, ``lower/upper =
      prediction -/+ residual``.
    - gaussian: ``prediction = raw0`` (the mean), ``std = softplus(raw1) + STD_FLOOR``,
      ``lower/upper = prediction -/+ std``.
    - softmax: ``p = softmax(raw)`` over K bins whose values are ``k / (K - 1)``; ``prediction``
      is the expectation ``sum_k p_k k / (K - 1)`` (not the paper's argmax, which is coarser);
      ``lower``/``upper`` are the bin values at the ``quantiles[0]``/``quantiles[1]`` quantiles
      of ``p`` (the smallest k whose cumulative probability reaches the level, as in Appendix B),
      widened to include the prediction where the expectation falls outside them.
    - segmentation: ``probabilities = softmax(raw)`` over classes.
    - mask: ``mask = sigmoid(raw)``.
    - point: ``prediction = raw0`` (a point-prediction model with no uncertainty head; the
      inference option ``uncertainty=`` derives lower/upper/std from it).

    Parameters
    ----------
    raw : torch.Tensor
        ``(B, head_channels, H, W)`` network output.
    heuristic : str
        One of :data:`HEURISTICS`.
    quantiles : (float, float)
        Read-out levels of the softmax head, ``(alpha / 2, 1 - alpha / 2)``.

    Returns
    -------
    dict of str to torch.Tensor
        float32 tensors of shape ``(B, 1, H, W)`` (``(B, K, H, W)`` for probabilities).

    Examples
    --------
    >>> import torch
    >>> out = decode_head(torch.zeros(1, 3, 4, 4), "quantile")
    >>> bool((out["lower"] <= out["prediction"]).all())
    True
    """
    _check_heuristic(heuristic)
    if raw.ndim != 4:
        raise ValueError(f"raw must have 4 dimensions (B, C, H, W); got shape {tuple(raw.shape)}")
    raw = raw.float()
    if heuristic in ("quantile", "residual", "gaussian"):
        expected = head_channels(heuristic)
        if raw.shape[1] != expected:
            raise ValueError(
                f"raw must have {expected} channels for the {heuristic} head; got {raw.shape[1]}"
            )
    point = raw[:, 0:1]
    if heuristic == "point":
        if raw.shape[1] != 1:
            raise ValueError(f"raw must have 1 channel for the point head; got {raw.shape[1]}")
        return {"prediction": point}
    if heuristic == "quantile":
        return {
            "prediction": point,
            "lower": point - F.softplus(raw[:, 1:2]),
            "upper": point + F.softplus(raw[:, 2:3]),
        }
    if heuristic in ("residual", "gaussian"):
        spread = F.softplus(raw[:, 1:2])
        if heuristic == "gaussian":
            spread = spread + STD_FLOOR
        extra = "residual" if heuristic == "residual" else "std"
        return {
            "prediction": point,
            "lower": point - spread,
            "upper": point + spread,
            extra: spread,
        }
    if heuristic == "softmax":
        q_lo, q_hi = (float(q) for q in quantiles)
        if not 0.0 < q_lo < q_hi < 1.0:
            raise ValueError(
                f"quantiles must satisfy 0 < quantiles[0] < quantiles[1] < 1; got {quantiles!r}"
            )
        k = raw.shape[1]
        if k < 2:
            raise ValueError(f"raw must have at least 2 channels (bins) for softmax; got {k}")
        prob = torch.softmax(raw, dim=1)
        values = torch.linspace(0.0, 1.0, k, device=raw.device, dtype=raw.dtype)
        prediction = (prob * values.view(1, k, 1, 1)).sum(dim=1, keepdim=True)
        cdf = torch.cumsum(prob, dim=1)
        lower = values[_quantile_index(cdf, q_lo)]
        upper = values[_quantile_index(cdf, q_hi)]
        return {
            "prediction": prediction,
            "lower": torch.minimum(lower, prediction),
            "upper": torch.maximum(upper, prediction),
        }
    if heuristic == "segmentation":
        return {"probabilities": torch.softmax(raw, dim=1)}
    return {"mask": torch.sigmoid(raw)}
