"""Default tile sizes, from a model's spec alone (no torch, no dask: the widgets read it)."""

from __future__ import annotations

#: Estimated float32 memory of one tile's forward pass that sets the default tile shape, on a
#: GPU and on the CPU. CPUs run smaller tiles faster (caches); GPUs larger ones.
TILE_BUDGET = {"gpu": 1 << 30, "cpu": 1 << 27}
#: Default tiles are at least this many input pixels (and at least four halos) wide, at most
#: ``MAX_TILE``.
MIN_TILE = 128
MAX_TILE = 4096


def _bytes_per_pixel(kwargs: dict, scale_factor: int) -> float:
    """Estimate (conservatively) the forward-pass memory per input pixel, float32.

    Measured peaks of the U-Net family are about 30 * base_channels bytes per pixel, plus
    the super-resolution tail and the head on the finer grid.
    """
    base = int(kwargs.get("base_channels", 32))
    s = int(scale_factor)
    channels = int(kwargs.get("in_channels", 1))
    return 4.0 * (8 * base + 3 * base * s * s + 12 * s * s + 2 * channels)


def tile_side(kwargs: dict, scale_factor: int, halo: int, divisor: int, device: str = "cpu"):
    """Return the default tile side: the largest whose tile plus halo fits the budget.

    The budget is :data:`TILE_BUDGET` for the device ("cpu", or anything else for a GPU).
    The halo is recomputed for every tile, so a tile of side ``T`` costs ``(T + 2 halo)**2``
    pixels of work for ``T**2`` of output: larger tiles waste less, but on a CPU smaller
    tensors run faster per pixel.
    """
    budget = TILE_BUDGET["cpu" if device == "cpu" else "gpu"]
    side = int((budget / _bytes_per_pixel(kwargs, scale_factor)) ** 0.5) - 2 * halo
    side = min(max(side, MIN_TILE, 4 * halo), MAX_TILE)
    return -(-side // divisor) * divisor


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
