"""Default tile sizes, from a model's spec alone (no torch, no dask: the widgets read it)."""

from __future__ import annotations

#: Estimated float32 memory of one tile's forward pass that caps the default tile, on a GPU
#: and on the CPU (the estimate is conservative: measured peaks are 0.6-0.9 of it).
TILE_BUDGET = {"gpu": 1 << 31, "cpu": 1 << 30}
#: On the CPU, the default tile is the smallest whose halo costs at most this fraction of its
#: own area (``(T + 2 halo)**2 <= (1 + HALO_OVERHEAD) * T**2``): CPUs run moderate tiles
#: faster per pixel (caches), so a larger tile would only cost memory. GPUs take the largest
#: tile in the budget.
HALO_OVERHEAD = 0.15
#: Default tiles are at least this many input pixels (and at least four halos) wide, at most
#: ``MAX_TILE``.
MIN_TILE = 256
MAX_TILE = 4096


def _bytes_per_pixel(kwargs: dict, scale_factor: int) -> float:
    """Estimate (conservatively) the forward-pass memory per input pixel, float32.

    The U-Net family: measured peaks are about 30 * base_channels bytes per pixel, plus the
    super-resolution tail and the head on the finer grid. A network at the input resolution
    (``channels``, ``n_blocks``: SRNet): a few feature maps and the sub-pixel convolution's
    ``out_channels * s**2`` maps per input pixel, then the outputs on the finer grid
    (measured 650-880 bytes per pixel for the zoo's, 32 channels, s = 4).
    """
    s = int(scale_factor)
    channels = int(kwargs.get("in_channels", 1))
    if "channels" in kwargs and "base_channels" not in kwargs:
        width, out = int(kwargs["channels"]), int(kwargs.get("out_channels", 1))
        return 4.0 * (4 * width + 3 * out * s * s + 2 * channels)
    base = int(kwargs.get("base_channels", 32))
    return 4.0 * (8 * base + 3 * base * s * s + 12 * s * s + 2 * channels)


def tile_side(kwargs: dict, scale_factor: int, halo: int, divisor: int, device: str = "cpu"):
    """Return the default tile side of a model on ``device`` ("cpu", or anything else: a GPU).

    The halo is recomputed for every tile, so a tile of side ``T`` costs ``(T + 2 halo)**2``
    pixels of work for ``T**2`` of output. On a GPU the tile is the largest whose tile plus
    halo fits :data:`TILE_BUDGET`; on the CPU the smallest whose halo costs at most
    :data:`HALO_OVERHEAD` of its area, within the CPU budget. Both at least :data:`MIN_TILE`
    and four halos, at most :data:`MAX_TILE`, a multiple of ``divisor``.

    Examples
    --------
    >>> tile_side({"channels": 32, "out_channels": 3}, 4, 19, 1, "cpu")
    526
    >>> tile_side({"base_channels": 16, "depth": 3}, 1, 51, 8, "cpu")
    1088
    >>> tile_side({"base_channels": 16, "depth": 3}, 1, 51, 8, "cuda")
    1584
    """
    gpu = device != "cpu"
    budget = TILE_BUDGET["gpu" if gpu else "cpu"]
    side = int((budget / _bytes_per_pixel(kwargs, scale_factor)) ** 0.5) - 2 * halo
    if not gpu:
        enough = -(-2 * halo // ((1.0 + HALO_OVERHEAD) ** 0.5 - 1.0))
        side = min(side, int(enough))
    side = min(max(side, MIN_TILE, 4 * halo), MAX_TILE)
    return -(-side // divisor) * divisor


def balanced(size: int, side: int, divisor: int) -> int:
    """Return the tile along an axis of ``size`` pixels: as many tiles as ``side`` needs, even.

    ``ceil(size / side)`` tiles of about equal length (rounded up to ``divisor``), none
    longer than ``side`` rounded up to ``divisor`` or ``size`` rounded up: no thin last tile
    whose halo would cost more than the tile.

    Examples
    --------
    >>> balanced(1024, 525, 1), balanced(1000, 1088, 8), balanced(2048, 1088, 8)
    (512, 1000, 1024)
    """
    up = lambda v: -(-v // divisor) * divisor  # noqa: E731
    n = -(-size // side)
    return min(up(-(-size // n)), up(side), up(size))


def tile_side_from_spec(spec: dict, device: str = "cpu"):
    """Return the default tile side of a bundle's spec (``model.json``), or None if unknown.

    Examples
    --------
    >>> from napari_im2im_uq.models import read_spec
    >>> spec = read_spec("tem-sr4x-quantile")
    >>> tile_side_from_spec(spec, "cpu") > 0
    True
    """
    kwargs = spec.get("kwargs", {})
    if "halo" not in spec:
        return None
    divisor = 2 ** int(kwargs["depth"]) if "depth" in kwargs else 1  # srnet2d: any size
    return tile_side(kwargs, int(spec.get("scale_factor", 1)), int(spec["halo"]), divisor,
                     device)
