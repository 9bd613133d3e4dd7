"""Training losses for each heuristic and for the mask network (torch).

Every loss takes *raw* network channels (what :class:`~napari_im2im_uq.models.UNet2d`
returns) and targets in the network's normalised output units, reads the head with
:func:`~napari_im2im_uq.models.decode_head` (so training and inference agree on what each
channel means) and returns a scalar tensor: the mean over pixels and over the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..models import decode_head

__all__ = [
    "DISTANCES",
    "POINT_LOSSES",
    "gaussian_nll_loss",
    "heuristic_loss",
    "mask_loss",
    "pinball_loss",
    "quantile_loss",
    "residual_loss",
    "segmentation_loss",
    "softmax_bin_loss",
    "softmax_bin_targets",
    "ssim",
]

#: Point losses that can be added to the quantile, residual and Gaussian losses.
POINT_LOSSES = ("l1", "l2")
#: Distances ``d`` of the mask loss (Kutiel et al. 2023, eq. 6).
DISTANCES = ("l1", "l2", "ssim")


def _check_tensor(name: str, value, ndim: int | None = 4) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor; got {type(value).__name__}")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(
            f"{name} must have {ndim} dimensions (B, C, H, W); got shape {tuple(value.shape)}"
        )
    return value


def _check_same(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_b} must have the shape of {name_a} {tuple(a.shape)}; got {tuple(b.shape)}"
        )


def _check_target(raw: torch.Tensor, target) -> torch.Tensor:
    target = _check_tensor("target", target)
    expected = (raw.shape[0], 1, *raw.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(f"target must have shape {expected}; got {tuple(target.shape)}")
    return target.float()


def _point(prediction: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    if kind not in POINT_LOSSES:
        raise ValueError(f"point_loss must be one of {POINT_LOSSES}; got {kind!r}")
    diff = prediction - target
    return diff.abs().mean() if kind == "l1" else diff.square().mean()


def _check_weight(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0; got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value!r}")
    return float(value)


def pinball_loss(estimate: torch.Tensor, target: torch.Tensor, level: float) -> torch.Tensor:
    """Mean pinball (quantile) loss of ``estimate`` as the ``level`` quantile of ``target``.

    ``L = (y - q) * level`` where ``y > q`` and ``(q - y) * (1 - level)`` where ``y <= q``
    (section 2.1.4 of Angelopoulos et al. 2022); its minimiser is the ``level`` quantile.

    Parameters
    ----------
    estimate, target : torch.Tensor
        Tensors of the same shape.
    level : float
        Quantile level in (0, 1).

    Returns
    -------
    torch.Tensor
        The scalar mean loss.

    Examples
    --------
    >>> import torch
    >>> q = torch.tensor([0.0, 0.0])
    >>> y = torch.tensor([1.0, -1.0])
    >>> round(pinball_loss(q, y, 0.9).item(), 6)  # (0.9 * 1 + 0.1 * 1) / 2
    0.5
    """
    _check_tensor("estimate", estimate, ndim=None)
    _check_tensor("target", target, ndim=None)
    _check_same("estimate", estimate, "target", target)
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0 < level < 1:
        raise ValueError(f"level must be a number in (0, 1); got {level!r}")
    diff = target.float() - estimate.float()
    return torch.maximum(level * diff, (level - 1.0) * diff).mean()


def quantile_loss(
    raw: torch.Tensor,
    target: torch.Tensor,
    *,
    quantiles: tuple[float, float] = (0.05, 0.95),
    point_loss: str = "l2",
    point_weight: float = 1.0,
) -> torch.Tensor:
    """Loss of the quantile head: pinball at both levels plus a point loss.

    ``L = pinball(lower, y, q_lo) + pinball(upper, y, q_hi) + point_weight * point(prediction, y)``
    with ``(q_lo, q_hi) = (alpha / 2, 1 - alpha / 2)`` (section 2.1.4 of Angelopoulos et al.
    2022); the head is read by :func:`~napari_im2im_uq.models.decode_head`, so
    ``lower <= prediction <= upper`` always.

    Parameters
    ----------
    raw : torch.Tensor
        ``(B, 3, H, W)`` raw network output.
    target : torch.Tensor
        ``(B, 1, H, W)`` target in normalised output units.
    quantiles : (float, float)
        The two levels, ``0 < q_lo < q_hi < 1``.
    point_loss : {"l2", "l1"}
        Loss of the point prediction (mean squared or mean absolute error).
    point_weight : float
        Weight of the point loss, >= 0.

    Returns
    -------
    torch.Tensor
        The scalar loss.

    Examples
    --------
    >>> import torch
    >>> raw = torch.zeros(1, 3, 2, 2)
    >>> loss = quantile_loss(raw, torch.zeros(1, 1, 2, 2))  # y = point: pinball of the offsets
    >>> round(loss.item(), 4)  # 2 * 0.05 * softplus(0)
    0.0693
    """
    raw = _check_tensor("raw", raw)
    target = _check_target(raw, target)
    q_lo, q_hi = _check_quantiles(quantiles)
    weight = _check_weight("point_weight", point_weight)
    out = decode_head(raw, "quantile")
    loss = pinball_loss(out["lower"], target, q_lo) + pinball_loss(out["upper"], target, q_hi)
    if weight:
        loss = loss + weight * _point(out["prediction"], target, point_loss)
    return loss


def _check_quantiles(quantiles) -> tuple[float, float]:
    try:
        q_lo, q_hi = (float(q) for q in quantiles)
    except (TypeError, ValueError):
        raise ValueError(f"quantiles must be two numbers (lo, hi); got {quantiles!r}") from None
    if not 0.0 < q_lo < q_hi < 1.0:
        raise ValueError(f"quantiles must satisfy 0 < lo < hi < 1; got {quantiles!r}")
    return q_lo, q_hi


def residual_loss(
    raw: torch.Tensor,
    target: torch.Tensor,
    *,
    point_loss: str = "l2",
    point_weight: float = 1.0,
) -> torch.Tensor:
    """Loss of the residual-magnitude head: regress ``|residual|`` plus a point loss.

    ``L = mean((r - |prediction.detach() - y|)^2) + point_weight * point(prediction, y)``
    (section 2.1.1 of Angelopoulos et al. 2022). The residual target is detached so the
    residual head does not pull the point prediction towards a smaller error estimate.

    Parameters
    ----------
    raw : torch.Tensor
        ``(B, 2, H, W)`` raw network output (point, residual before softplus).
    target : torch.Tensor
        ``(B, 1, H, W)`` target in normalised output units.
    point_loss : {"l2", "l1"}
        Loss of the point prediction.
    point_weight : float
        Weight of the point loss, >= 0.

    Returns
    -------
    torch.Tensor
        The scalar loss.

    Examples
    --------
    >>> import math, torch
    >>> raw = torch.zeros(1, 2, 1, 1)  # prediction 0, residual softplus(0) = log 2
    >>> y = torch.ones(1, 1, 1, 1)
    >>> round(residual_loss(raw, y).item(), 6) == round((math.log(2) - 1) ** 2 + 1, 6)
    True
    """
    raw = _check_tensor("raw", raw)
    target = _check_target(raw, target)
    if raw.shape[1] != 2:
        raise ValueError(f"raw must have 2 channels for the residual head; got {raw.shape[1]}")
    weight = _check_weight("point_weight", point_weight)
    out = decode_head(raw, "residual")
    magnitude = (out["prediction"].detach() - target).abs()
    loss = (out["residual"] - magnitude).square().mean()
    if weight:
        loss = loss + weight * _point(out["prediction"], target, point_loss)
    return loss


def gaussian_nll_loss(
    raw: torch.Tensor,
    target: torch.Tensor,
    *,
    var_floor: float = 1e-6,
    point_loss: str = "l2",
    point_weight: float = 0.0,
) -> torch.Tensor:
    """Gaussian negative log-likelihood of the Gaussian head, with a variance floor.

    ``L = 0.5 * (log v + (y - mean)^2 / v)`` with ``v = max(std^2, var_floor)`` (the
    constant ``0.5 log 2 pi`` is dropped), section 2.1.2 of Angelopoulos et al. 2022 written
    with the variance. The floor keeps the loss finite where the network is very sure.

    Parameters
    ----------
    raw : torch.Tensor
        ``(B, 2, H, W)`` raw network output (mean, std before softplus).
    target : torch.Tensor
        ``(B, 1, H, W)`` target in normalised output units.
    var_floor : float
        Smallest variance, > 0.
    point_loss : {"l2", "l1"}
        Optional extra point loss on the mean.
    point_weight : float
        Its weight, >= 0 (0: pure likelihood).

    Returns
    -------
    torch.Tensor
        The scalar loss.

    Examples
    --------
    >>> import math, torch
    >>> raw = torch.tensor([0.0, math.log(math.e - 1)]).view(1, 2, 1, 1)  # std ~= 1
    >>> y = torch.full((1, 1, 1, 1), 2.0)
    >>> round(gaussian_nll_loss(raw, y).item(), 3)  # 0.5 * (log 1 + 4 / 1)
    2.0
    """
    raw = _check_tensor("raw", raw)
    target = _check_target(raw, target)
    if raw.shape[1] != 2:
        raise ValueError(f"raw must have 2 channels for the gaussian head; got {raw.shape[1]}")
    if isinstance(var_floor, bool) or not isinstance(var_floor, int | float) or not var_floor > 0:
        raise ValueError(f"var_floor must be a number > 0; got {var_floor!r}")
    weight = _check_weight("point_weight", point_weight)
    out = decode_head(raw, "gaussian")
    var = out["std"].square().clamp(min=float(var_floor))
    loss = 0.5 * (var.log() + (target - out["prediction"]).square() / var).mean()
    if weight:
        loss = loss + weight * _point(out["prediction"], target, point_loss)
    return loss


def softmax_bin_targets(target: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin index of each target value for the softmax head: the nearest bin ``k / (K - 1)``.

    Values are clipped to [0, 1] first. (Appendix B of Angelopoulos et al. 2022 discretises
    [0, 1] into the K values ``k / (K - 1)``; the nearest one is used here, the read-out of
    :func:`~napari_im2im_uq.models.decode_head` uses the same bin values.)

    Parameters
    ----------
    target : torch.Tensor
        Targets in normalised output units, any shape.
    bins : int
        Number of bins K, >= 2.

    Returns
    -------
    torch.Tensor
        int64 indices in ``0 .. K - 1``, the shape of ``target``.

    Examples
    --------
    >>> import torch
    >>> softmax_bin_targets(torch.tensor([-0.2, 0.0, 0.3, 0.9, 1.5]), 5).tolist()
    [0, 0, 1, 4, 4]
    """
    _check_tensor("target", target, ndim=None)
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins must be an integer >= 2; got {bins!r}")
    return torch.round(target.float().clamp(0.0, 1.0) * (bins - 1)).long()


def softmax_bin_loss(raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over K intensity bins (the softmax heuristic, Appendix B).

    Parameters
    ----------
    raw : torch.Tensor
        ``(B, K, H, W)`` logits over the K bins.
    target : torch.Tensor
        ``(B, 1, H, W)`` target in normalised output units ([0, 1]; clipped).

    Returns
    -------
    torch.Tensor
        The scalar mean cross-entropy.

    Examples
    --------
    >>> import math, torch
    >>> raw = torch.zeros(1, 4, 1, 1)  # uniform over 4 bins
    >>> round(softmax_bin_loss(raw, torch.zeros(1, 1, 1, 1)).item(), 6) == round(math.log(4), 6)
    True
    """
    raw = _check_tensor("raw", raw)
    target = _check_target(raw, target)
    bins = raw.shape[1]
    labels = softmax_bin_targets(target[:, 0], bins)
    return F.cross_entropy(raw.float(), labels)


def segmentation_loss(
    raw: torch.Tensor,
    labels: torch.Tensor,
    *,
    class_weights=None,
) -> torch.Tensor:
    """Pixel-wise cross-entropy of a segmentation head, optionally class-weighted.

    With weights the mean is the weighted mean (``sum w_y CE / sum w_y``), as in
    :func:`torch.nn.functional.cross_entropy`.

    Parameters
    ----------
    raw : torch.Tensor
        ``(B, n_classes, H, W)`` logits.
    labels : torch.Tensor
        ``(B, H, W)`` or ``(B, 1, H, W)`` integer class indices.
    class_weights : sequence of float, optional
        One weight >= 0 per class.

    Returns
    -------
    torch.Tensor
        The scalar loss.

    Examples
    --------
    >>> import math, torch
    >>> raw = torch.zeros(1, 2, 1, 2)
    >>> labels = torch.tensor([[[0, 1]]])
    >>> round(segmentation_loss(raw, labels).item(), 6) == round(math.log(2), 6)
    True
    """
    raw = _check_tensor("raw", raw)
    _check_tensor("labels", labels, ndim=None)
    if labels.ndim == 4 and labels.shape[1] == 1:
        labels = labels[:, 0]
    expected = (raw.shape[0], *raw.shape[2:])
    if tuple(labels.shape) != expected:
        raise ValueError(f"labels must have shape {expected}; got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor; got dtype {labels.dtype}")
    n_classes = raw.shape[1]
    weight = None
    if class_weights is not None:
        values = [float(w) for w in class_weights]
        if len(values) != n_classes or any(not (w >= 0 and math.isfinite(w)) for w in values):
            raise ValueError(
                f"class_weights must be {n_classes} finite numbers >= 0 (one per class); "
                f"got {class_weights!r}"
            )
        weight = torch.tensor(values, dtype=torch.float32, device=raw.device)
    return F.cross_entropy(raw.float(), labels.long(), weight=weight)


def _gaussian_window(size: int, sigma: float, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return g.to(dtype)


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    data_range: float = 1.0,
    sigma: float = 1.5,
    window: int = 11,
    reduction: str = "mean",
) -> torch.Tensor:
    """Differentiable structural similarity (Wang et al. 2004) with a Gaussian window.

    Local means, variances and covariance are Gaussian-weighted (``sigma``, ``window`` taps,
    separable), computed only where the window fits ("valid"), with ``C1 = (0.01 R)^2`` and
    ``C2 = (0.03 R)^2``. This is what ``skimage.metrics.structural_similarity(a, b,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=R)`` computes.

    Parameters
    ----------
    a, b : torch.Tensor
        ``(B, C, H, W)`` images, H and W at least ``window``.
    data_range : float
        ``R``, the dynamic range of the images (> 0).
    sigma : float
        Standard deviation of the Gaussian window.
    window : int
        Window size (odd).
    reduction : {"mean", "none"}
        Mean over everything, or one value per image and channel ``(B, C)``.

    Returns
    -------
    torch.Tensor
        The SSIM (1 for identical images).

    Examples
    --------
    >>> import torch
    >>> x = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    >>> round(ssim(x, x).item(), 6)
    1.0
    """
    a = _check_tensor("a", a)
    b = _check_tensor("b", b)
    _check_same("a", a, "b", b)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise ValueError(f"window must be an odd positive integer; got {window!r}")
    if min(a.shape[-2:]) < window:
        raise ValueError(
            f"a and b must have at least window={window} rows and columns; got shape "
            f"{tuple(a.shape)}"
        )
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0; got {data_range!r}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none'; got {reduction!r}")
    a, b = a.float(), b.float()
    n, c = a.shape[:2]
    g = _gaussian_window(window, float(sigma), a.device, a.dtype)

    def blur(t):
        t = t.reshape(n * c, 1, *t.shape[-2:])
        t = F.conv2d(t, g.view(1, 1, window, 1))
        t = F.conv2d(t, g.view(1, 1, 1, window))
        return t

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a.square()
    var_b = blur(b * b) - mu_b.square()
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    smap = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a.square() + mu_b.square() + c1) * (var_a + var_b + c2)
    )
    per_image = smap.reshape(n, c, -1).mean(dim=-1)
    return per_image.mean() if reduction == "mean" else per_image


def mask_loss(
    mask: torch.Tensor,
    target: torch.Tensor,
    prediction: torch.Tensor,
    *,
    mu: float = 2.0,
    distance: str = "l1",
    data_range: float = 1.0,
) -> torch.Tensor:
    """Loss of Kutiel et al.'s mask network: ``||m - 1||^2 + mu d(m * y, m * yhat)``.

    Eq. 6 of ``001_12b5c67d24812f2b.txt``, with both terms averaged over pixels (so ``mu``
    does not depend on the image size): ``mean((m - 1)^2) + mu * d`` where ``d`` is
    ``mean|m y - m yhat|`` ("l1"), ``mean((m y - m yhat)^2)`` ("l2") or
    ``1 - SSIM(m y, m yhat)`` ("ssim", see :func:`ssim`). For "l1" the per-pixel minimiser
    is ``m = 1 - mu E|y - yhat| / 2`` (clipped to [0, 1]).

    Parameters
    ----------
    mask : torch.Tensor
        ``(B, 1, H, W)`` mask in [0, 1] (the decoded mask head).
    target : torch.Tensor
        ``(B, 1, H, W)`` ground truth ``y`` in normalised output units.
    prediction : torch.Tensor
        ``(B, 1, H, W)`` the image-to-image model's prediction ``yhat``, same units; treated as
        a constant (detached).
    mu : float
        Weight of the distortion, >= 0.
    distance : {"l1", "l2", "ssim"}
        The distortion ``d``.
    data_range : float
        Dynamic range for SSIM.

    Returns
    -------
    torch.Tensor
        The scalar loss.

    Examples
    --------
    >>> import torch
    >>> m = torch.full((1, 1, 2, 2), 0.5)
    >>> y = torch.ones(1, 1, 2, 2)
    >>> yhat = torch.zeros(1, 1, 2, 2)
    >>> mask_loss(m, y, yhat, mu=2.0).item()  # 0.25 + 2 * 0.5
    1.25
    """
    mask = _check_tensor("mask", mask)
    target = _check_tensor("target", target)
    prediction = _check_tensor("prediction", prediction)
    _check_same("mask", mask, "target", target)
    _check_same("mask", mask, "prediction", prediction)
    if mask.shape[1] != 1:
        raise ValueError(f"mask must have 1 channel; got shape {tuple(mask.shape)}")
    weight = _check_weight("mu", mu)
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}; got {distance!r}")
    mask, target = mask.float(), target.float()
    prediction = prediction.detach().float()
    size_term = (mask - 1.0).square().mean()
    my, myhat = mask * target, mask * prediction
    if distance == "l1":
        d = (my - myhat).abs().mean()
    elif distance == "l2":
        d = (my - myhat).square().mean()
    else:
        d = 1.0 - ssim(my, myhat, data_range=data_range)
    return size_term + weight * d


def heuristic_loss(
    raw: torch.Tensor,
    target: torch.Tensor,
    heuristic: str,
    *,
    inputs: torch.Tensor | None = None,
    **options,
) -> torch.Tensor:
    """Compute the training loss of a head, by name: what :func:`train` minimises.

    Parameters
    ----------
    raw : torch.Tensor
        ``(B, head_channels, H, W)`` raw network output.
    target : torch.Tensor
        ``(B, 1, H, W)`` normalised target; for "segmentation" integer labels
        ``(B, H, W)`` or ``(B, 1, H, W)``.
    heuristic : str
        "quantile", "residual", "gaussian", "softmax", "segmentation" or "mask".
    inputs : torch.Tensor, optional
        The network input; required for "mask", whose last channel is the prediction ``yhat``
        (the mask network reads ``[degraded input, prediction]``).
    **options
        Keyword options of the head's loss: :func:`quantile_loss`, :func:`residual_loss`,
        :func:`gaussian_nll_loss`, :func:`segmentation_loss` or :func:`mask_loss`
        (``softmax`` takes none).

    Returns
    -------
    torch.Tensor
        The scalar loss.

    Examples
    --------
    >>> import torch
    >>> raw = torch.zeros(2, 3, 4, 4)
    >>> heuristic_loss(raw, torch.zeros(2, 1, 4, 4), "quantile", point_weight=0.0).shape
    torch.Size([])
    """
    if heuristic == "quantile":
        return quantile_loss(raw, target, **options)
    if heuristic == "residual":
        return residual_loss(raw, target, **options)
    if heuristic == "gaussian":
        return gaussian_nll_loss(raw, target, **options)
    if heuristic == "softmax":
        if options:
            raise ValueError(f"the softmax loss takes no options; got {sorted(options)}")
        return softmax_bin_loss(raw, target)
    if heuristic == "segmentation":
        return segmentation_loss(raw, target, **options)
    if heuristic == "mask":
        if inputs is None:
            raise ValueError(
                "inputs is required for the mask loss (its last channel is the prediction); "
                "got None"
            )
        _check_tensor("inputs", inputs)
        mask = decode_head(raw, "mask")["mask"]
        return mask_loss(mask, target, inputs[:, -1:], **options)
    raise ValueError(
        "heuristic must be one of ('quantile', 'residual', 'gaussian', 'softmax', "
        f"'segmentation', 'mask'); got {heuristic!r}"
    )
