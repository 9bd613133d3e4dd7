"""Model bundles: ``weights.safetensors`` + ``model.json``. Loading never unpickles."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load as _safetensors_load
from safetensors.torch import save as _safetensors_save

from ._catalog import MODEL_JSON, WEIGHTS_FILE, ZOO_DIR, _resolve, list_models, read_model_json
from ._errors import LIMITS, BundleError
from ._model import Im2ImModel
from ._spec import check_consistency, complete_spec, parameter_count, validate_spec

__all__ = ["MODEL_JSON", "WEIGHTS_FILE", "ZOO_DIR", "list_models", "load_model", "save_model"]


def _read_safetensors(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    """Parse safetensors bytes (never unpickles); raise BundleError for anything else."""
    problem = None
    if len(data) < 8:
        problem = f"it has only {len(data)} bytes"
    else:
        n = int.from_bytes(data[:8], "little")
        if n < 2 or 8 + n > len(data):
            problem = f"its 8-byte header length ({n}) does not fit the file size ({len(data)})"
        else:
            try:
                header = json.loads(data[8 : 8 + n].decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                header = None
            if not isinstance(header, dict):
                problem = "its header is not a JSON object"
    if problem is None:
        try:
            return _safetensors_load(data)
        except Exception as err:  # noqa: BLE001 - any parse failure means "not safetensors"
            problem = f"the safetensors parser refused it ({err})"
    raise BundleError(
        f"{path} is not a safetensors file: {problem}. Bundles are loaded only from safetensors; "
        "pickled weights (e.g. from torch.save) are refused"
    )


def _check_weights_size(path: Path, spec: dict) -> None:
    """Bound the weights file by the architecture's parameter count, before reading it.

    The count follows from ``model.json``'s kwargs without building the network: a file of
    float32 (or float16) weights and its JSON header has at most a known size, so a larger
    one is refused unread. Its 8-byte header length is bounded before anything else is read.
    A smaller file is read (it is smaller than the network) and its tensors are checked one
    by one, which says more than its size.
    """
    n_float, n_int = parameter_count(spec["architecture"], spec["kwargs"])
    header_max = LIMITS["safetensors_header_bytes"]
    high = 8 + header_max + 4 * n_float + 8 * n_int
    size = path.stat().st_size
    if size > high:
        raise BundleError(
            f"{path.name} must be at most {high:,} bytes for the architecture in {MODEL_JSON} "
            f"({spec['architecture']} with {n_float + n_int:,} parameters in float32, and a "
            f"header of at most {header_max:,} bytes); got {size:,} bytes: it was not read"
        )
    if size < 8:
        raise BundleError(
            f"{path} is not a safetensors file: it has {size} bytes, fewer than its 8-byte "
            "header length"
        )
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
    if not 2 <= n <= min(header_max, size - 8):
        raise BundleError(
            f"the header length of {path.name} (its first 8 bytes) must be between 2 and "
            f"{min(header_max, size - 8):,} bytes; got {n:,}: {path} is not a safetensors file"
        )


def _check_tensors(loaded: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    for key, ref in expected.items():
        if key not in loaded:
            raise BundleError(
                f"weights are missing tensor {key!r} (expected shape {tuple(ref.shape)})"
            )
        got = loaded[key]
        if tuple(got.shape) != tuple(ref.shape):
            raise BundleError(
                f"tensor {key!r} has the wrong shape: expected {tuple(ref.shape)}; "
                f"got {tuple(got.shape)}"
            )
        if ref.is_floating_point() != got.is_floating_point():
            raise BundleError(
                f"tensor {key!r} has the wrong dtype: expected {ref.dtype}; got {got.dtype}"
            )
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise BundleError(f"tensor {key!r} contains NaN or infinite values")
    extra = [key for key in loaded if key not in expected]
    if extra:
        raise BundleError(
            f"weights hold tensors the architecture does not have, first {extra[0]!r} "
            f"(shape {tuple(loaded[extra[0]].shape)}); {len(extra)} unexpected in all"
        )


def load_model(
    name_or_path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    search_paths: Iterable[str | os.PathLike] = (),
) -> Im2ImModel:
    """Load a model bundle safely.

    Only ``json`` and ``safetensors`` parse the files: nothing is unpickled. The bundle is
    refused with a :class:`BundleError` (a ValueError) naming the problem when a field is
    missing or invalid, the ``format_version`` is unsupported, the architecture is not in the
    registry, the SHA-256 of the weights differs from ``model.json``, the weights file is not
    safetensors, or tensor names, shapes or dtypes do not fit the architecture.

    Parameters
    ----------
    name_or_path : str or path-like
        A bundle folder, or the name of a bundle in the zoo or in ``search_paths``.
    device : str or torch.device
        Where to put the network. Weights stored as float16 are loaded as float32.
    search_paths : iterable of path-like
        Extra folders searched for named bundles (see :func:`list_models`).

    Returns
    -------
    Im2ImModel
        The model, in eval mode, float32, on ``device``.

    Examples
    --------
    >>> import tempfile
    >>> from napari_im2im_uq.models import build_network, load_model, save_model
    >>> net = build_network("residual", depth=1, base_channels=2)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = save_model(net, f"{tmp}/demo", spec={"heuristic": "residual"})
    ...     model = load_model(path)
    >>> model.output_names
    ('prediction', 'lower', 'upper', 'residual')
    """
    from ._unet import ARCHITECTURES

    folder = _resolve(name_or_path, search_paths)
    json_path, weights_path = folder / MODEL_JSON, folder / WEIGHTS_FILE
    for required in (json_path, weights_path):
        if not required.is_file():
            raise BundleError(f"the bundle {folder} has no {required.name}")
    spec = read_model_json(json_path)  # size and nesting bounded before parsing
    validate_spec(spec)  # kwargs bounded before anything is built
    _check_weights_size(weights_path, spec)  # the file's size bounded before it is read
    data = weights_path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec["sha256"]:
        raise BundleError(
            f"sha256 of {weights_path.name} does not match model.json: expected "
            f"{spec['sha256']}; got {digest}. The weights were modified or belong to another "
            "bundle"
        )
    tensors = _read_safetensors(data, weights_path)
    cls = ARCHITECTURES[spec["architecture"]]
    try:  # first on the meta device: nothing is allocated until the weights are known to fit
        with torch.device("meta"):
            probe = cls(**spec["kwargs"])
    except (TypeError, ValueError) as err:
        raise BundleError(
            f"kwargs {spec['kwargs']} are invalid for architecture {spec['architecture']!r}: {err}"
        ) from None
    check_consistency(spec, probe)
    expected = probe.state_dict()
    _check_tensors(tensors, expected)
    network = cls(**spec["kwargs"])
    state = {
        k: (v.float() if v.is_floating_point() else v.to(expected[k].dtype))
        for k, v in tensors.items()
    }
    network.load_state_dict(state, strict=True)
    network.to(device=device)
    return Im2ImModel(network, spec, sha256=digest)


def _write_atomic(path: Path, data: bytes) -> None:
    from .._files import write_atomic  # a unique temporary name: never a file of the user's

    write_atomic(path, data)


def save_model(
    model_or_network,
    path: str | os.PathLike,
    *,
    spec: dict | None = None,
    overwrite: bool = False,
    half: bool = False,
) -> Path:
    """Write a model bundle: ``weights.safetensors`` and ``model.json`` in the folder ``path``.

    Parameters
    ----------
    model_or_network : Im2ImModel or torch.nn.Module
        A model (its spec is the starting point) or a network of a registered architecture.
    path : path-like
        The bundle folder; created if needed.
    spec : dict, optional
        ``model.json`` fields, overriding the model's. ``heuristic`` is required for a bare
        network. ``architecture``, ``kwargs``, ``halo``, ``scale_factor``, ``format_version``
        and ``sha256`` follow from the network; ``name`` defaults to the folder name;
        ``training_data``, ``licence``, ``citation`` default to null and ``card`` to ``{}``.
    overwrite : bool
        Replace an existing bundle. Without it an existing bundle is never touched.
    half : bool
        Store floating-point weights as float16 (half the size); they load back as float32.

    Returns
    -------
    pathlib.Path
        The bundle folder.

    Examples
    --------
    >>> import tempfile
    >>> from napari_im2im_uq.models import build_network, save_model
    >>> net = build_network("quantile", depth=1, base_channels=2)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     folder = save_model(net, f"{tmp}/qr", spec={"heuristic": "quantile"}, half=True)
    ...     sorted(p.name for p in folder.iterdir())
    ['model.json', 'weights.safetensors']
    """
    folder = Path(path)
    if isinstance(model_or_network, Im2ImModel):
        network = model_or_network.network
        merged = model_or_network.spec
        merged.pop("sha256", None)
        merged.update(spec or {})
    elif isinstance(model_or_network, torch.nn.Module):
        network = model_or_network
        merged = dict(spec or {})
    else:
        raise ValueError(
            "model_or_network must be an Im2ImModel or a torch.nn.Module; got "
            f"{type(model_or_network).__name__}"
        )
    merged.setdefault("name", folder.name or "model")
    merged.pop("sha256", None)
    full = complete_spec(network, merged)  # fills and validates every field
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"path must be a folder for the bundle; got the existing file {folder}")
    existing = [f for f in (MODEL_JSON, WEIGHTS_FILE) if (folder / f).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{folder} already holds a bundle ({', '.join(existing)}); pass overwrite=True to "
            "replace it"
        )
    tensors = {}
    for key, value in network.state_dict().items():
        value = value.detach().to("cpu").contiguous()
        if value.is_floating_point():
            value = value.to(torch.float16 if half else torch.float32)
            if not bool(torch.isfinite(value).all()):
                hint = " (out of float16 range; save with half=False)" if half else ""
                raise ValueError(f"tensor {key!r} contains NaN or infinite values{hint}")
        tensors[key] = value.clone()
    data = _safetensors_save(tensors, metadata={"format": "pt"})
    full["sha256"] = hashlib.sha256(data).hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomic(folder / WEIGHTS_FILE, data)
    _write_atomic(
        folder / MODEL_JSON,
        (json.dumps(full, indent=2, sort_keys=False) + "\n").encode("utf-8"),
    )
    return folder
