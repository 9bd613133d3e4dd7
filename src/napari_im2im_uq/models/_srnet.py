"""A super-resolution network that works at the input resolution (torch).

Convolutions and residual blocks run on the low-resolution grid, so a step costs
``scale_factor**2`` times less than a network working on the output grid; a sub-pixel
convolution (pixel shuffle) up-samples at the end, and a global skip adds the bicubic
up-sampling of the input so that the network learns only the residual.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_int

__all__ = ["MAX_SPREAD_SIGMA", "SKIPS", "SRNet2d", "spread_reach", "srnet_parameter_count",
           "with_spread_sigma"]

#: What the global skip adds: the bicubic up-sampled input to the point channel (0), a
#: Gaussian prior centred on it to the logits of K intensity bins, or nothing.
SKIPS = ("point", "bins", "none")
#: Width, in [0, 1] intensity units, of the prior that the "bins" skip adds to the logits.
_BIN_PRIOR_WIDTH = 0.1
#: Largest ``spread_sigma`` (output pixels) a network accepts.
MAX_SPREAD_SIGMA = 8.0
#: Smallest smoothed spread before the inverse softplus (keeps its logarithm finite).
_SPREAD_FLOOR = 1e-30


def spread_reach(spread_sigma: float) -> int:
    """Return the radius, in output pixels, of the Gaussian of standard deviation ``spread_sigma``.

    The kernel is cut at ``ceil(3 sigma)`` (0 for sigma 0: no smoothing).

    Examples
    --------
    >>> spread_reach(0.0), spread_reach(0.8), spread_reach(1.5)
    (0, 3, 5)
    """
    return int(math.ceil(3.0 * float(spread_sigma) - 1e-9)) if spread_sigma > 0 else 0


def _gaussian_1d(sigma: float, device, dtype) -> torch.Tensor:
    r = spread_reach(sigma)
    t = torch.arange(-r, r + 1, device=device, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(dtype)


def _smooth(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian of every channel in float32, as sums of shifted copies.

    ``kernel`` is ``(C, 1, 2r + 1)``, the same row for every channel. Edges are replicated
    (the halo keeps them out of every kept output pixel). Shifted sums hold three images at a
    time; a grouped convolution unfolds every tap into memory (about 0.5 GB more on a
    2048 x 2048 output).
    """
    size = kernel.shape[-1]
    r = size // 2
    taps = [float(v) for v in kernel[0, 0].detach().cpu()]
    x = F.pad(x.float(), (r, r, r, r), mode="replicate")
    h, w = x.shape[-2] - 2 * r, x.shape[-1] - 2 * r
    rows = x[..., 0:h, :] * taps[0]
    for i in range(1, size):
        rows.add_(x[..., i : i + h, :], alpha=taps[i])
    del x
    out = rows[..., 0:w] * taps[0]
    for i in range(1, size):
        out.add_(rows[..., i : i + w], alpha=taps[i])
    return out


class _ResBlock(nn.Module):
    """conv 3x3, ReLU, conv 3x3, scaled and added to the input (EDSR, no normalisation)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.conv2(F.relu(self.conv1(x)))


class SRNet2d(nn.Module):
    """Residual super-resolution network at the input resolution, pixel-shuffle up-sampling.

    ``conv 3x3 -> n_blocks residual blocks -> conv 3x3 (+ long skip) -> conv 3x3 to
    out_channels * s**2 -> PixelShuffle(s)``, plus a global skip from the bicubic
    up-sampling (pixel centres aligned, as for binning) of the first input channel: added to
    output channel 0 (``skip="point"``: the point prediction of the quantile, residual,
    Gaussian and point heads), or, for the softmax head (``skip="bins"``), added to the
    logits of the ``out_channels`` equally spaced intensity bins as
    ``-(k / (K - 1) - up)**2 / (2 * 0.1**2)``, so that an untrained network already predicts
    around the up-sampled input. No normalisation layer: the output is local
    (:attr:`local`) and the same in training and evaluation.

    Parameters
    ----------
    in_channels, out_channels : int
        Input channels and raw output channels (see :func:`head_channels`).
    channels : int
        Width of the feature maps.
    n_blocks : int
        Number of residual blocks.
    scale_factor : int
        Super-resolution factor ``s`` (1: no up-sampling, the skip adds the input itself).
    skip : {"point", "bins", "none"}
        The global skip.
    spread_sigma : float
        Standard deviation, in output pixels, of a fixed (not trained) Gaussian smoothing of
        the spread after the pixel shuffle; 0 (default): none. The pixel shuffle gives each of
        the ``s**2`` sub-pixel positions its own filter, which leaves a faint ``s``-pixel
        lattice in the width. With ``skip="point"`` the channels after the point (the quantile
        offsets, the residual, the Gaussian std, all read through a softplus by
        :func:`decode_head`) are smoothed as ``softplus^-1(G * softplus(raw))``: the spread
        itself is averaged and the point channel is left untouched, bit for bit. With
        ``skip="bins"`` (softmax) the network's logits are smoothed before the prior is added:
        the expectation read from the bins moves a little too. The halo grows by the kernel's
        reach (``ceil(3 sigma)`` output pixels, rounded up to input pixels). The smoothing is
        fixed before any calibration, so calibration guarantees are unchanged.

    Examples
    --------
    >>> import torch
    >>> net = SRNet2d(out_channels=3, channels=8, n_blocks=2, scale_factor=4)
    >>> net(torch.zeros(1, 1, 10, 12)).shape
    torch.Size([1, 3, 40, 48])
    >>> net.halo, net.divisor
    (7, 1)
    >>> SRNet2d(out_channels=3, channels=8, n_blocks=2, spread_sigma=1.0).halo
    8
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: int = 32,
        n_blocks: int = 8,
        scale_factor: int = 4,
        skip: str = "point",
        spread_sigma: float = 0.0,
    ):
        super().__init__()
        in_channels = check_int(in_channels, "in_channels")
        out_channels = check_int(out_channels, "out_channels")
        channels = check_int(channels, "channels")
        n_blocks = check_int(n_blocks, "n_blocks", minimum=0)
        scale_factor = check_int(scale_factor, "scale_factor")
        if skip not in SKIPS:
            raise ValueError(f"skip must be one of {SKIPS}; got {skip!r}")
        if skip == "bins" and out_channels < 2:
            raise ValueError(
                f"skip='bins' needs out_channels >= 2 (the intensity bins); got {out_channels}"
            )
        if (
            isinstance(spread_sigma, bool)
            or not isinstance(spread_sigma, int | float)
            or not 0.0 <= spread_sigma <= MAX_SPREAD_SIGMA
        ):
            raise ValueError(
                f"spread_sigma must be a number in [0, {MAX_SPREAD_SIGMA}] (output pixels); got "
                f"{spread_sigma!r}"
            )
        if spread_sigma > 0 and (skip == "none" or (skip == "point" and out_channels < 2)):
            raise ValueError(
                "spread_sigma > 0 needs spread channels: skip='point' with out_channels >= 2 "
                f"or skip='bins'; got skip={skip!r}, out_channels={out_channels}"
            )
        self.config = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "channels": channels,
            "n_blocks": n_blocks,
            "scale_factor": scale_factor,
            "skip": skip,
        }
        if spread_sigma > 0:  # absent at 0, so older bundles' kwargs match the config
            self.config["spread_sigma"] = float(spread_sigma)
            n_spread = out_channels - 1 if skip == "point" else out_channels
            kernel = _gaussian_1d(float(spread_sigma), "cpu", torch.float32)
            # not in the state dict: the weights (and their sha256) stay those of the network
            self.register_buffer("spread_kernel", kernel.repeat(n_spread, 1, 1), persistent=False)
        s = scale_factor
        self.head = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.blocks = nn.Sequential(*(_ResBlock(channels) for _ in range(n_blocks)))
        self.body_end = nn.Conv2d(channels, channels, 3, padding=1)
        self.tail = nn.Conv2d(channels, out_channels * s * s, 3, padding=1)
        self.shuffle = nn.PixelShuffle(s) if s > 1 else nn.Identity()
        with torch.no_grad():  # start at the skip: a small residual
            self.tail.weight.mul_(0.1)
            self.tail.bias.zero_()
        self.float()

    @property
    def divisor(self) -> int:
        """Input rows and columns must be multiples of this (1: any size)."""
        return 1

    @property
    def scale_factor(self) -> int:
        """Output pixels per input pixel along each axis."""
        return self.config["scale_factor"]

    @property
    def halo(self) -> int:
        """Receptive-field radius in input pixels.

        ``2 n_blocks + 3`` 3x3 convolutions, plus the spread smoothing's reach
        (:func:`spread_reach` output pixels, rounded up to input pixels). The bicubic skip
        reads input pixels up to 2 away, fewer than the convolutions.
        """
        s = self.config["scale_factor"]
        reach = spread_reach(self.config.get("spread_sigma", 0.0))
        return 2 * self.config["n_blocks"] + 3 + -(-reach // s)

    @property
    def local(self) -> bool:
        """Always True: no layer reads statistics of the whole tile."""
        return True

    def _upsampled(self, x: torch.Tensor) -> torch.Tensor:
        first = x[:, 0:1]
        s = self.config["scale_factor"]
        if s == 1:
            return first
        return F.interpolate(first, scale_factor=s, mode="bicubic", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, H, W)`` to raw ``(B, out_channels, H*s, W*s)``."""
        feat = self.head(x)
        feat = feat + self.body_end(self.blocks(feat))
        out = self.shuffle(self.tail(feat))
        skip = self.config["skip"]
        sigma = self.config.get("spread_sigma", 0.0)
        if skip == "none":
            return out
        up = self._upsampled(x).to(out.dtype)
        if skip == "point":
            spread = out[:, 1:]
            if sigma > 0:
                spread = _smooth_softplus(spread, self.spread_kernel)
            return torch.cat([out[:, :1] + up, spread], dim=1)
        if sigma > 0:
            out = _smooth(out, self.spread_kernel).to(out.dtype)
        k = out.shape[1]
        values = torch.linspace(0.0, 1.0, k, device=out.device, dtype=out.dtype)
        prior = -(values.view(1, k, 1, 1) - up).square() / (2 * _BIN_PRIOR_WIDTH**2)
        return out + prior


def _smooth_softplus(raw: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``softplus^-1(G * softplus(raw))`` in float32: the spread smoothed, back as raw values."""
    y = _smooth(F.softplus(raw.float()), kernel).clamp_min(_SPREAD_FLOOR)
    # log(expm1(y)) without expm1 (ONNX has none): a series below 0.01, exact above; the
    # relative error of softplus of the result stays under 1e-5 (each branch's argument is
    # clamped to its own range, so neither makes an infinity or a NaN gradient)
    small = y.clamp_max(0.01)
    large = y.clamp_min(0.01)
    inverse = torch.where(y < 0.01, torch.log(small) + 0.5 * small,
                          large + torch.log(1.0 - torch.exp(-large)))
    return inverse.to(raw.dtype)


def with_spread_sigma(network: SRNet2d, spread_sigma: float) -> SRNet2d:
    """Return a new :class:`SRNet2d` with ``network``'s weights and ``spread_sigma`` (0: none).

    The smoothing holds no weights, so trained weights take it on unchanged; ``network`` is
    not modified. Its halo follows.

    Examples
    --------
    >>> net = SRNet2d(out_channels=3, channels=4, n_blocks=1, scale_factor=4)
    >>> with_spread_sigma(net, 1.5).halo - net.halo  # reach 5 output pixels: 2 input pixels
    2
    """
    if not isinstance(network, SRNet2d):
        raise TypeError(f"network must be an SRNet2d; got {type(network).__name__}")
    kwargs = {k: v for k, v in network.config.items() if k != "spread_sigma"}
    if spread_sigma > 0:
        kwargs["spread_sigma"] = float(spread_sigma)
    out = SRNet2d(**kwargs)
    out.load_state_dict(network.state_dict())
    return out.train(network.training)


def srnet_parameter_count(kwargs: dict) -> tuple[int, int]:
    """Return ``(floating, integer)`` element counts of an :class:`SRNet2d`'s ``state_dict``.

    Computed from the kwargs alone (nothing is built).

    Examples
    --------
    >>> srnet_parameter_count({"in_channels": 1, "out_channels": 3, "channels": 32,
    ...                        "n_blocks": 8, "scale_factor": 4})
    (171408, 0)
    """
    k = {"in_channels": 1, "out_channels": 1, "channels": 32, "n_blocks": 8,
         "scale_factor": 4, **kwargs}
    c, n = k["channels"], k["n_blocks"]
    conv = lambda c_in, c_out: c_out * c_in * 9 + c_out  # noqa: E731
    total = conv(k["in_channels"], c) + n * 2 * conv(c, c) + conv(c, c)
    total += conv(c, k["out_channels"] * k["scale_factor"] ** 2)
    return int(total), 0
