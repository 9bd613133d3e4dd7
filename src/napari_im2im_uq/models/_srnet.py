"""A super-resolution network that works at the input resolution (torch).

Convolutions and residual blocks run on the low-resolution grid, so a step costs
``scale_factor**2`` times less than a network working on the output grid; a sub-pixel
convolution (pixel shuffle) up-samples at the end, and a global skip adds the bicubic
up-sampling of the input so that the network learns only the residual.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_int

__all__ = ["SKIPS", "SRNet2d", "srnet_parameter_count"]

#: What the global skip adds: the bicubic up-sampled input to the point channel (0), a
#: Gaussian prior centred on it to the logits of K intensity bins, or nothing.
SKIPS = ("point", "bins", "none")
#: Width, in [0, 1] intensity units, of the prior that the "bins" skip adds to the logits.
_BIN_PRIOR_WIDTH = 0.1


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

    Examples
    --------
    >>> import torch
    >>> net = SRNet2d(out_channels=3, channels=8, n_blocks=2, scale_factor=4)
    >>> net(torch.zeros(1, 1, 10, 12)).shape
    torch.Size([1, 3, 40, 48])
    >>> net.halo, net.divisor
    (7, 1)
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
        self.config = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "channels": channels,
            "n_blocks": n_blocks,
            "scale_factor": scale_factor,
            "skip": skip,
        }
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
        """Receptive-field radius in input pixels: ``2 n_blocks + 3`` 3x3 convolutions.

        The bicubic skip reads input pixels up to 2 away, fewer than the convolutions.
        """
        return 2 * self.config["n_blocks"] + 3

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
        if skip == "none":
            return out
        up = self._upsampled(x).to(out.dtype)
        if skip == "point":
            return torch.cat([out[:, :1] + up, out[:, 1:]], dim=1)
        k = out.shape[1]
        values = torch.linspace(0.0, 1.0, k, device=out.device, dtype=out.dtype)
        prior = -(values.view(1, k, 1, 1) - up).square() / (2 * _BIN_PRIOR_WIDTH**2)
        return out + prior


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
