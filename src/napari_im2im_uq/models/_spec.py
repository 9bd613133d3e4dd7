"""The ``model.json`` specification: defaults, validation and consistency with a network."""

from __future__ import annotations

import copy
import json
import math
import re
from typing import Any

from ._derived import check_derived, given_channels
from ._errors import (
    FORMAT_VERSION,
    HEURISTICS,
    LIMITS,
    NORMS,
    SUPPORTED_FORMAT_VERSIONS,
    UPSAMPLINGS,
    BundleError,
)
from ._units import check_units

__all__ = [
    "LIMITS",
    "NORMALIZATION_KINDS",
    "REQUIRED_FIELDS",
    "SRNET_DEFAULTS",
    "UNET_DEFAULTS",
    "check_kwargs",
    "complete_spec",
    "mask_halo",
    "parameter_count",
    "unet_parameter_count",
    "validate_spec",
]

#: Keyword arguments of ``UNet2d`` and their defaults (a test checks they match its signature).
UNET_DEFAULTS = {
    "in_channels": 1,
    "out_channels": 1,
    "depth": 4,
    "base_channels": 32,
    "norm": "batch",
    "upsampling": "transpose",
    "scale_factor": 1,
}
#: Inclusive bounds of the integer architecture kwargs, checked before anything is built.
UNET_BOUNDS = {
    "in_channels": (1, 64),
    "out_channels": (1, 1024),
    "depth": (1, 8),
    "base_channels": (1, 512),
    "scale_factor": (1, 16),
}
_UNET_CHOICES = {"norm": NORMS, "upsampling": UPSAMPLINGS}
#: Keyword arguments of ``SRNet2d`` and their defaults (a test checks they match its signature).
SRNET_DEFAULTS = {
    "in_channels": 1,
    "out_channels": 1,
    "channels": 32,
    "n_blocks": 8,
    "scale_factor": 4,
    "skip": "point",
    "spread_sigma": 0.0,
}
#: Inclusive bounds of the integer ``SRNet2d`` kwargs.
SRNET_BOUNDS = {
    "in_channels": (1, 64),
    "out_channels": (1, 1024),
    "channels": (1, 256),
    "n_blocks": (0, 64),
    "scale_factor": (1, 16),
}
_SRNET_CHOICES = {"skip": ("point", "bins", "none")}
_ARCH_KWARGS = {
    "unet2d": (UNET_DEFAULTS, UNET_BOUNDS, _UNET_CHOICES),
    "srnet2d": (SRNET_DEFAULTS, SRNET_BOUNDS, _SRNET_CHOICES),
}


#: Fields every ``model.json`` must have (others depend on the heuristic or are optional).
REQUIRED_FIELDS = (
    "format_version",
    "name",
    "architecture",
    "kwargs",
    "heuristic",
    "input_channels",
    "normalization",
    "output_range",
    "scale_factor",
    "halo",
    "sha256",
)
_HEURISTIC_FIELDS = {
    "quantile": ("quantiles",),
    "softmax": ("quantiles", "bins"),
    "segmentation": ("classes",),
}
_OPTIONAL_DEFAULTS = {"training_data": None, "licence": None, "citation": None, "card": {}}
NORMALIZATION_KINDS = ("minmax", "meanstd", "none")
_NORMALIZATION_PARAMS = {"minmax": ("min", "max"), "meanstd": ("mean", "std"), "none": ()}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _channel_params(kind: str, key: str, value, n_channels: int) -> list[float]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(_is_number(v) for v in values) or len(values) not in (1, n_channels):
        raise BundleError(
            f"normalization[{key!r}] for kind {kind!r} must be a finite number or a list of "
            f"{n_channels} finite numbers (one per input channel); got {value!r}"
        )
    return [float(v) for v in values]


def validate_spec(spec: Any, *, require_sha256: bool = True) -> None:
    """Check the fields of a ``model.json`` dict; raise :class:`BundleError` naming the problem."""
    from ._unet import ARCHITECTURES

    if not isinstance(spec, dict):
        raise BundleError(f"model.json must hold a JSON object; got {type(spec).__name__}")
    if "format_version" not in spec:
        raise BundleError("model.json is missing the field 'format_version'")
    if spec["format_version"] not in SUPPORTED_FORMAT_VERSIONS:
        raise BundleError(
            f"unsupported format_version: expected one of {list(SUPPORTED_FORMAT_VERSIONS)}; "
            f"got {spec['format_version']!r}"
        )
    for field in REQUIRED_FIELDS:
        if field == "sha256" and not require_sha256:
            continue
        if field not in spec:
            raise BundleError(f"model.json is missing the field {field!r}")
    if not isinstance(spec["name"], str) or not spec["name"]:
        raise BundleError(f"name must be a non-empty string; got {spec['name']!r}")
    if spec["architecture"] not in ARCHITECTURES:
        raise BundleError(
            f"unknown architecture {spec['architecture']!r}; known architectures: "
            f"{sorted(ARCHITECTURES)}"
        )
    if not isinstance(spec["kwargs"], dict):
        raise BundleError(f"kwargs must be a JSON object; got {spec['kwargs']!r}")
    check_kwargs(spec["architecture"], spec["kwargs"])
    heuristic = spec["heuristic"]
    if heuristic not in HEURISTICS:
        raise BundleError(f"heuristic must be one of {HEURISTICS}; got {heuristic!r}")
    for field in _HEURISTIC_FIELDS.get(heuristic, ()):
        if field not in spec:
            raise BundleError(
                f"model.json is missing the field {field!r} (required for heuristic {heuristic!r})"
            )
    channels = spec["input_channels"]
    if (
        not isinstance(channels, list)
        or not channels
        or not all(isinstance(c, str) and c for c in channels)
        or len(set(channels)) != len(channels)
    ):
        raise BundleError(
            f"input_channels must be a non-empty list of distinct channel names; got {channels!r}"
        )
    if len(channels) > LIMITS["input_channels"]:
        raise BundleError(
            f"input_channels must name at most {LIMITS['input_channels']} channels; got "
            f"{len(channels)}"
        )
    norm = spec["normalization"]
    if not isinstance(norm, dict) or norm.get("kind") not in NORMALIZATION_KINDS:
        raise BundleError(
            f"normalization must be an object with 'kind' in {NORMALIZATION_KINDS}; got {norm!r}"
        )
    kind = norm["kind"]
    params = {}
    for key in _NORMALIZATION_PARAMS[kind]:
        if key not in norm:
            raise BundleError(f"normalization of kind {kind!r} is missing the field {key!r}")
        params[key] = _channel_params(kind, key, norm[key], len(channels))
    if kind == "minmax" and any(
        hi <= lo for lo, hi in zip(*_broadcast(params["min"], params["max"]), strict=True)
    ):
        raise BundleError(f"normalization 'max' must exceed 'min'; got {norm!r}")
    if kind == "meanstd" and any(s <= 0 for s in params["std"]):
        raise BundleError(f"normalization 'std' must be positive; got {norm!r}")
    out_range = spec["output_range"]
    if out_range is not None and not (
        isinstance(out_range, list)
        and len(out_range) == 2
        and all(_is_number(v) for v in out_range)
        and out_range[0] < out_range[1]
    ):
        raise BundleError(
            f"output_range must be null or [lo, hi] with finite lo < hi; got {out_range!r}"
        )
    if heuristic == "softmax" and out_range is None:
        raise BundleError(
            "output_range must be [lo, hi] for the softmax heuristic (the bins span it); got null"
        )
    _bounded_int(spec, "scale_factor", 1, LIMITS["scale_factor"])
    _bounded_int(spec, "halo", 0, LIMITS["halo"])
    if "quantiles" in _HEURISTIC_FIELDS.get(heuristic, ()):
        q = spec["quantiles"]
        if not (
            isinstance(q, list)
            and len(q) == 2
            and all(_is_number(v) for v in q)
            and 0 < q[0] < q[1] < 1
        ):
            raise BundleError(f"quantiles must be [lo, hi] with 0 < lo < hi < 1; got {q!r}")
    if heuristic == "softmax":
        _bounded_int(spec, "bins", 2, LIMITS["bins"])
    if heuristic == "segmentation":
        classes = spec["classes"]
        if not (
            isinstance(classes, list)
            and len(classes) >= 2
            and all(isinstance(c, str) for c in classes)
        ):
            raise BundleError(f"classes must be a list of at least 2 class names; got {classes!r}")
        if len(classes) > LIMITS["classes"]:
            raise BundleError(
                f"classes must name at most {LIMITS['classes']} classes; got {len(classes)}"
            )
    sha = spec.get("sha256")
    if "sha256" in spec and (not isinstance(sha, str) or not _SHA256.match(sha)):
        raise BundleError(
            f"sha256 must be 64 lower-case hexadecimal digits; got {spec['sha256']!r}"
        )
    if "card" in spec and not isinstance(spec["card"], dict):
        raise BundleError(f"card must be a JSON object; got {spec['card']!r}")
    check_derived(spec)
    check_units(spec, len(given_channels(spec)))


def _bounded_int(spec: dict, field: str, lo: int, hi: int) -> None:
    value = spec[field]
    if not _is_int(value) or not lo <= value <= hi:
        raise BundleError(f"{field} must be an integer in [{lo}, {hi}]; got {value!r}")


def check_kwargs(architecture: str, kwargs: dict) -> dict:
    """Check an architecture's kwargs against their bounds before anything is built.

    Returns the full kwargs (defaults filled in). Raises :class:`BundleError` naming the
    argument, its range and the value; a network above ``LIMITS["parameters"]`` parameters
    is refused with its parameter count, computed without building it.

    Examples
    --------
    >>> check_kwargs("unet2d", {"depth": 40})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    napari_im2im_uq.models._errors.BundleError: kwargs['depth'] must be an integer in [1, 8]; got 40
    """
    if architecture not in _ARCH_KWARGS:  # the registry's architectures (checked by the caller)
        raise BundleError(
            f"unknown architecture {architecture!r}; known architectures: {sorted(_ARCH_KWARGS)}"
        )
    defaults, bounds, choices = _ARCH_KWARGS[architecture]
    unknown = sorted(k for k in kwargs if k not in defaults)
    if unknown:
        raise BundleError(
            f"kwargs {kwargs} are invalid for architecture {architecture!r}: unknown argument "
            f"{unknown[0]!r}; expected some of {sorted(defaults)}"
        )
    for key, (lo, hi) in bounds.items():
        if key in kwargs and (not _is_int(kwargs[key]) or not lo <= kwargs[key] <= hi):
            raise BundleError(f"kwargs[{key!r}] must be an integer in [{lo}, {hi}]; got {kwargs[key]!r}")
    for key, allowed in choices.items():
        if key in kwargs and kwargs[key] not in allowed:
            raise BundleError(f"kwargs[{key!r}] must be one of {list(allowed)}; got {kwargs[key]!r}")
    if architecture == "srnet2d" and "spread_sigma" in kwargs:
        from ._srnet import MAX_SPREAD_SIGMA

        sigma = kwargs["spread_sigma"]
        if not _is_number(sigma) or not 0.0 <= sigma <= MAX_SPREAD_SIGMA:
            raise BundleError(f"kwargs['spread_sigma'] must be a number in [0, "
                              f"{MAX_SPREAD_SIGMA}]; got {sigma!r}")
    full = {**defaults, **kwargs}
    n = sum(parameter_count(architecture, full))
    if n > LIMITS["parameters"]:
        raise BundleError(
            f"kwargs {kwargs} describe a network of {n:,} parameters; a bundle may have at most "
            f"{LIMITS['parameters']:,}"
        )
    return full


def parameter_count(architecture: str, kwargs: dict) -> tuple[int, int]:
    """Return ``(floating, integer)`` element counts of a registered architecture's weights.

    Computed from the kwargs alone (nothing is built).

    Examples
    --------
    >>> parameter_count("srnet2d", {"channels": 4, "n_blocks": 1, "scale_factor": 2})
    (632, 0)
    """
    if architecture == "srnet2d":
        from ._srnet import srnet_parameter_count

        return srnet_parameter_count({**SRNET_DEFAULTS, **kwargs})
    return unet_parameter_count(kwargs)


def unet_parameter_count(kwargs: dict) -> tuple[int, int]:
    """Return ``(floating, integer)`` element counts of a ``UNet2d``'s ``state_dict``.

    Computed from the kwargs alone (nothing is built): the weights file of a bundle must hold
    exactly these elements, so its size is known before it is read.

    Examples
    --------
    >>> unet_parameter_count({**UNET_DEFAULTS, "depth": 1, "base_channels": 2})
    (479, 6)
    """
    k = {**UNET_DEFAULTS, **kwargs}
    norm, base, depth = k["norm"], k["base_channels"], k["depth"]
    counts = [0, 0]

    def double_conv(c_in: int, c_out: int) -> None:
        bias = c_out if norm == "none" else 0
        counts[0] += c_out * c_in * 9 + c_out * c_out * 9 + 2 * bias
        if norm == "batch":  # weight, bias, running mean and variance; batches tracked
            counts[0] += 2 * 4 * c_out
            counts[1] += 2
        elif norm in ("group", "instance"):  # affine weight and bias
            counts[0] += 2 * 2 * c_out

    widths = [base * 2**level for level in range(depth + 1)]
    c_in = k["in_channels"]
    for level in range(depth):
        double_conv(c_in, widths[level])
        c_in = widths[level]
    double_conv(widths[depth - 1], widths[depth])
    for level in range(depth):
        kernel = 4 if k["upsampling"] == "transpose" else 1
        counts[0] += widths[level + 1] * widths[level] * kernel + widths[level]
        double_conv(2 * widths[level], widths[level])
    s = k["scale_factor"]
    if s > 1:
        counts[0] += base * base * s * s * 9 + base * s * s
    counts[0] += base * k["out_channels"] + k["out_channels"]
    return counts[0], counts[1]


def _broadcast(a: list[float], b: list[float]) -> tuple[list[float], list[float]]:
    n = max(len(a), len(b))
    return (a * n if len(a) == 1 else a), (b * n if len(b) == 1 else b)


def mask_halo(network_halo: int, scale_factor: int) -> int:
    """Halo, in input pixels, of a mask model whose network runs on the output grid.

    The degraded input is up-sampled bilinearly (reading input pixels up to one away), then
    the network reads ``network_halo`` output pixels around each output pixel.
    """
    if scale_factor == 1:
        return network_halo
    return -(-network_halo // scale_factor) + 1


def network_in_channels(spec: dict) -> int:
    """Network input channels implied by the spec (mask models also read the prediction)."""
    return len(spec["input_channels"]) + (1 if spec["heuristic"] == "mask" else 0)


def check_consistency(spec: dict, network) -> None:
    """Check that a validated spec and a built network agree; raise :class:`BundleError`."""
    from ._heads import head_channels

    config = network.config
    expected_in = network_in_channels(spec)
    if config["in_channels"] != expected_in:
        extra = " (input channels + 1 for the prediction)" if spec["heuristic"] == "mask" else ""
        raise BundleError(
            f"kwargs['in_channels'] must be {expected_in}{extra} for input_channels "
            f"{spec['input_channels']}; got {config['in_channels']}"
        )
    expected_out = head_channels(
        spec["heuristic"],
        bins=spec.get("bins"),
        n_classes=len(spec["classes"]) if spec["heuristic"] == "segmentation" else None,
    )
    if config["out_channels"] != expected_out:
        raise BundleError(
            f"kwargs['out_channels'] must be {expected_out} for the {spec['heuristic']} head; "
            f"got {config['out_channels']}"
        )
    if spec["heuristic"] == "mask":
        if network.scale_factor != 1:
            raise BundleError(
                "a mask network runs on the output grid: kwargs['scale_factor'] must be 1; "
                f"got {network.scale_factor}"
            )
        needed = mask_halo(network.halo, spec["scale_factor"])
    else:
        if network.scale_factor != spec["scale_factor"]:
            raise BundleError(
                f"scale_factor must equal the network's kwargs['scale_factor'] "
                f"({network.scale_factor}); got {spec['scale_factor']}"
            )
        needed = network.halo
    if spec["halo"] < needed:
        raise BundleError(
            f"halo is smaller than the network's receptive field: expected at least {needed}; "
            f"got {spec['halo']}"
        )


def complete_spec(network, spec: dict | None) -> dict:
    """Fill the fields of a spec that follow from the network; validate; return a new dict."""
    from ._unet import ARCHITECTURES

    try:  # a JSON round trip: tuples become lists, non-JSON values are refused here
        spec = json.loads(json.dumps(dict(spec or {})))
    except (TypeError, ValueError) as err:
        raise BundleError(
            f"spec must hold only JSON values (str, number, list, dict, null): {err}"
        ) from None
    if "heuristic" not in spec:
        raise BundleError(f"spec must name the 'heuristic', one of {HEURISTICS}")
    arch = [name for name, cls in ARCHITECTURES.items() if type(network) is cls]
    if not arch:
        raise BundleError(
            f"network must be an instance of a registered architecture {sorted(ARCHITECTURES)}; "
            f"got {type(network).__name__}"
        )
    if "architecture" in spec and spec["architecture"] != arch[0]:
        raise BundleError(
            f"spec['architecture'] is {spec['architecture']!r} but the network is {arch[0]!r}"
        )
    config = dict(network.config)
    if "kwargs" in spec and spec["kwargs"] != config:
        raise BundleError(
            f"spec['kwargs'] does not match the network: expected {config}; got {spec['kwargs']}"
        )
    heuristic = spec["heuristic"]
    n_in = config["in_channels"] - (1 if heuristic == "mask" else 0)
    spec.setdefault("format_version", FORMAT_VERSION)
    spec.setdefault("name", "model")
    spec["architecture"] = arch[0]
    spec["kwargs"] = config
    spec.setdefault(
        "input_channels", ["input"] if n_in == 1 else [f"channel{i}" for i in range(n_in)]
    )
    spec.setdefault("normalization", {"kind": "none"})
    spec.setdefault("output_range", None)
    spec.setdefault("scale_factor", 1 if heuristic == "mask" else network.scale_factor)
    if heuristic in ("quantile", "softmax"):
        spec.setdefault("quantiles", [0.05, 0.95])
    if heuristic == "softmax":
        spec.setdefault("bins", config["out_channels"])
    if heuristic == "segmentation":
        spec.setdefault("classes", [f"class{i}" for i in range(config["out_channels"])])
    if "halo" not in spec and _is_int(spec["scale_factor"]) and spec["scale_factor"] >= 1:
        spec["halo"] = (
            mask_halo(network.halo, spec["scale_factor"]) if heuristic == "mask" else network.halo
        )
    for key, default in _OPTIONAL_DEFAULTS.items():
        spec.setdefault(key, copy.deepcopy(default))
    validate_spec(spec, require_sha256=False)
    check_consistency(spec, network)
    return spec
