"""The 2-D U-Net family and its receptive field (torch)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .._validation import check_int
from ._errors import NORMS, UPSAMPLINGS

__all__ = ["ARCHITECTURES", "UNet2d", "receptive_field_radius", "unet_receptive_extent"]


def _norm_layer(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(math.gcd(channels, 8), channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


class _DoubleConv(nn.Sequential):
    """Two (3x3 conv, norm, ReLU) blocks with zero 'same' padding."""

    def __init__(self, c_in: int, c_out: int, norm: str):
        bias = norm == "none"
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias),
            _norm_layer(norm, c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=bias),
            _norm_layer(norm, c_out),
            nn.ReLU(inplace=True),
        )


def unet_receptive_extent(*, depth: int, upsampling: str = "transpose", scale_factor: int = 1):
    """Exact extent of the receptive field of :class:`UNet2d`, in input pixels.

    Parameters
    ----------
    depth : int
        Number of down-sampling steps.
    upsampling : {"transpose", "bilinear"}
        Decoder up-sampling.
    scale_factor : int
        Super-resolution factor; the pixel-shuffle tail adds one 3x3 convolution at input
        resolution when it is above 1.

    Returns
    -------
    (before, after) : tuple of int
        Output pixel ``o`` (on the output grid, lying over input pixel ``i = o // scale_factor``)
        depends only on input pixels ``i - before .. i + after`` along each axis, whatever the
        alignment of ``i`` with the pooling grid.

    Examples
    --------
    >>> unet_receptive_extent(depth=1)
    (9, 9)
    """
    depth = check_int(depth, "depth")
    scale_factor = check_int(scale_factor, "scale_factor")
    if upsampling not in UPSAMPLINGS:
        raise ValueError(f"upsampling must be one of {UPSAMPLINGS}; got {upsampling!r}")
    # Feature pixel q at jump J (input pixels per feature pixel) lies over input pixel q*J and
    # depends on input pixels q*J - lo .. q*J + hi.
    lo = hi = 0
    jump = 1
    skips = []
    for _ in range(depth):
        lo, hi = lo + 2 * jump, hi + 2 * jump  # two 3x3 convs
        skips.append((lo, hi))
        hi += jump  # 2x2 max-pool, stride 2: q' covers 2q', 2q'+1
        jump *= 2
    lo, hi = lo + 2 * jump, hi + 2 * jump  # bottleneck
    for level in reversed(range(depth)):
        fine = jump // 2
        if upsampling == "transpose":  # 2x2, stride 2: o reads o // 2
            lo, hi = lo + fine, hi
        else:  # bilinear x2, align_corners=False, then a 1x1 conv: o reads its two neighbours
            lo, hi = lo + 2 * fine, hi + fine
        jump = fine
        s_lo, s_hi = skips[level]
        lo, hi = max(lo, s_lo), max(hi, s_hi)  # concatenate the skip connection
        lo, hi = lo + 2 * jump, hi + 2 * jump  # two 3x3 convs
    if scale_factor > 1:
        lo, hi = lo + 1, hi + 1  # 3x3 conv before the pixel shuffle
    return lo, hi


class UNet2d(nn.Module):
    """A 2-D U-Net with an optional sub-pixel (pixel-shuffle) super-resolution tail.

    The network returns *raw* channels; what they mean is decided by the model's heuristic
    (see :func:`decode_head`). All convolutions use zero 'same' padding, so an input of
    ``(B, in_channels, H, W)`` with ``H`` and ``W`` multiples of ``2**depth`` gives an output of
    ``(B, out_channels, H * scale_factor, W * scale_factor)``.

    Parameters
    ----------
    in_channels : int
        Number of input channels.
    out_channels : int
        Number of raw output channels (see :func:`head_channels`).
    depth : int
        Number of 2x2 max-pool down-sampling steps; ``divisor = 2**depth``.
    base_channels : int
        Width of the first level; level ``l`` has ``base_channels * 2**l`` channels.
    norm : {"batch", "group", "instance", "none"}
        Normalisation after each convolution. "group" and "instance" normalise with statistics
        of the whole tile, so the output is then not strictly local (see :attr:`local`).
    upsampling : {"transpose", "bilinear"}
        Decoder up-sampling: a 2x2 stride-2 transposed convolution, or bilinear interpolation
        followed by a 1x1 convolution.
    scale_factor : int
        Super-resolution factor ``s``. For ``s > 1`` the tail is a sub-pixel convolution
        (Shi et al. 2016): 3x3 conv to ``base_channels * s**2`` channels, ``PixelShuffle(s)``,
        ReLU, then the 1x1 output convolution at the output resolution.

    Examples
    --------
    >>> import torch
    >>> net = UNet2d(in_channels=1, out_channels=3, depth=2, base_channels=4, scale_factor=2)
    >>> net(torch.zeros(1, 1, 8, 12)).shape
    torch.Size([1, 3, 16, 24])
    >>> net.halo, net.divisor
    (24, 4)
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int = 1,
        depth: int = 4,
        base_channels: int = 32,
        norm: str = "batch",
        upsampling: str = "transpose",
        scale_factor: int = 1,
    ):
        super().__init__()
        in_channels = check_int(in_channels, "in_channels")
        out_channels = check_int(out_channels, "out_channels")
        depth = check_int(depth, "depth")
        base_channels = check_int(base_channels, "base_channels")
        scale_factor = check_int(scale_factor, "scale_factor")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}; got {norm!r}")
        if upsampling not in UPSAMPLINGS:
            raise ValueError(f"upsampling must be one of {UPSAMPLINGS}; got {upsampling!r}")
        self.config = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "depth": depth,
            "base_channels": base_channels,
            "norm": norm,
            "upsampling": upsampling,
            "scale_factor": scale_factor,
        }
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.encoders = nn.ModuleList()
        c_in = in_channels
        for level in range(depth):
            self.encoders.append(_DoubleConv(c_in, widths[level], norm))
            c_in = widths[level]
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _DoubleConv(widths[depth - 1], widths[depth], norm)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in reversed(range(depth)):
            if upsampling == "transpose":
                up = nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2)
            else:
                up = nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                    nn.Conv2d(widths[level + 1], widths[level], 1),
                )
            self.ups.append(up)
            self.decoders.append(_DoubleConv(2 * widths[level], widths[level], norm))
        if scale_factor > 1:
            self.tail = nn.Sequential(
                nn.Conv2d(base_channels, base_channels * scale_factor**2, 3, padding=1),
                nn.PixelShuffle(scale_factor),
                nn.ReLU(inplace=True),
            )
        else:
            self.tail = nn.Identity()
        self.head = nn.Conv2d(base_channels, out_channels, 1)
        self.float()

    @property
    def divisor(self) -> int:
        """Input rows and columns must be multiples of this (``2**depth``)."""
        return 2 ** self.config["depth"]

    @property
    def scale_factor(self) -> int:
        """Output pixels per input pixel along each axis."""
        return self.config["scale_factor"]

    @property
    def halo(self) -> int:
        """Receptive-field radius in input pixels (see :func:`receptive_field_radius`)."""
        return max(
            unet_receptive_extent(
                depth=self.config["depth"],
                upsampling=self.config["upsampling"],
                scale_factor=self.config["scale_factor"],
            )
        )

    @property
    def local(self) -> bool:
        """Whether outputs depend only on inputs within :attr:`halo` (False for group/instance)."""
        return self.config["norm"] in ("batch", "none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, in_channels, H, W)`` to raw ``(B, out_channels, H*s, W*s)``."""
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips), strict=True):
            x = decoder(torch.cat([up(x), skip], dim=1))
        return self.head(self.tail(x))


#: The fixed registry of architectures a bundle may name; nothing else is ever constructed.
from ._srnet import SRNet2d  # noqa: E402  (the registry holds both families)

ARCHITECTURES: dict[str, type[nn.Module]] = {"unet2d": UNet2d, "srnet2d": SRNet2d}


def receptive_field_radius(network: nn.Module) -> int:
    """Receptive-field radius (the halo) of a registered network, in input pixels.

    Every output pixel lying over input pixel ``(r, c)`` depends only on input pixels within
    ``halo`` rows and columns of ``(r, c)``, so tiles extended by ``halo`` on each side give the
    same result as the whole image (for networks whose :attr:`~UNet2d.local` is True, and tile
    origins aligned to the same multiple of ``divisor``).

    Parameters
    ----------
    network : torch.nn.Module
        An instance of a class in :data:`ARCHITECTURES`.

    Returns
    -------
    int
        The halo in input pixels.

    Examples
    --------
    >>> receptive_field_radius(UNet2d(depth=2, base_channels=4))
    23
    """
    if not isinstance(network, tuple(ARCHITECTURES.values())):
        known = ", ".join(f"{k} ({v.__name__})" for k, v in ARCHITECTURES.items())
        raise ValueError(
            f"network must be an instance of a registered architecture ({known}); "
            f"got {type(network).__name__}"
        )
    return int(network.halo)
