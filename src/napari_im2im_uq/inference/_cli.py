"""``napari-im2im-uq predict``: tiled prediction of a file into an OME-Zarr store.

Nothing heavy is imported here at module level; torch, dask and zarr load when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["read_input", "register", "run"]

_TIF = (".tif", ".tiff")
_OME_LETTERS = {"z": "Z", "c": "C", "y": "Y", "x": "X"}
#: Argument names of predict_to_zarr said as this command's flags in its error messages.
_FLAGS = {"'models'": "--member", "uncertainty 'samples'": "--samples",
          "uncertainty 'transforms'": "--transforms",
          "tile_shape": "--tile", "batch_size": "--batch", "overwrite=True": "--overwrite",
          "overwrite": "--overwrite", "device": "--device", "precision": "--precision",
          "scheduler": "--scheduler", "store": "--output", "axes": "--axes", "model": "--model",
          "trust_code=True": "--trust-code"}


def register(subparsers) -> None:
    """Add the ``predict`` sub-command to ``subparsers`` (an argparse sub-parser action)."""
    from .._validation import int_flag  # a bad number exits 2 naming the flag

    parser = subparsers.add_parser(
        "predict",
        help="run a model tile by tile over an image and write its outputs to OME-Zarr",
        description=(
            "Run a model over INPUT (.tif/.tiff, .npy, a zarr array or an OME-Zarr image) tile "
            "by tile and write every output (prediction, lower, upper, ...) to an OME-Zarr "
            "store. Interrupted runs resume when the same command is run again."
        ),
    )
    parser.add_argument("input", metavar="INPUT", help="image file: .tif, .npy, .zarr")
    parser.add_argument("--model", required=True,
                        help="model name from the zoo, a bundle folder, or a bioimage.io package "
                             "(folder with rdf.yaml, or .zip)")
    parser.add_argument("--trust-code", action="store_true",
                        help="allow a bioimage.io package's pytorch_state_dict weights, whose "
                             "architecture is Python code from the package's author")
    parser.add_argument("--output", required=True, metavar="OUT.zarr", help="output zarr store")
    parser.add_argument(
        "--axes",
        help="axes of INPUT from Z, C, Y, X, e.g. ZYX or CYX (default: from the file's "
        "metadata, or YX for 2-D images)",
    )
    parser.add_argument(
        "--tile", nargs=2, type=int_flag(), metavar=("ROWS", "COLUMNS"), help="tile shape in pixels"
    )
    parser.add_argument("--batch", type=int_flag(), metavar="N", help="tiles per forward pass")
    parser.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda", "mps"), help="default: auto"
    )
    parser.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "float32", "float16", "bfloat16"),
        help="default: auto (float16 on CUDA, float32 elsewhere)",
    )
    parser.add_argument("--scheduler", metavar="ADDR", help="dask scheduler address")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing zarr store (never resume)"
    )
    parser.add_argument(
        "--uncertainty", choices=("tta", "mc_dropout", "ensemble", "constant"),
        help="uncertainty of a point-prediction model: test-time augmentation (8 rotations "
        "and flips), MC dropout, an ensemble (with --member) or the constant-width baseline; "
        "writes prediction, lower, upper (and std, std_smoothed)")
    parser.add_argument("--member", action="append", metavar="MODEL",
                        help="another model of the ensemble (repeat for each)")
    parser.add_argument("--samples", type=int_flag(), metavar="N",
                        help="MC dropout passes (default 16)")
    parser.add_argument("--transforms", nargs="+", metavar="NAME",
                        help="TTA transforms (default all 8): identity rot90 rot180 rot270 flip "
                        "flip_rot90 flip_rot180 flip_rot270")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _uncertainty(args):
    """Return the ``uncertainty=`` of predict_to_zarr from the flags (None: no --uncertainty)."""
    given = {"models": args.member, "samples": args.samples, "transforms": args.transforms}
    if not args.uncertainty:
        extra = [f"--{'member' if k == 'models' else k}" for k, v in given.items() if v]
        if extra:
            raise ValueError(f"{', '.join(extra)} need(s) --uncertainty; got none")
        return None
    return {"kind": args.uncertainty, **{k: v for k, v in given.items() if v}}


def _ome_image(group, path: Path):
    """(array, axes, pixel_size, unit) of an OME-Zarr image group (NGFF 0.4 or 0.5)."""
    attrs = dict(group.attrs)
    ome = attrs.get("ome", attrs)
    multiscales = ome.get("multiscales") if isinstance(ome, dict) else None
    if not multiscales:
        raise ValueError(
            f"INPUT {path} is a zarr group without OME 'multiscales' metadata; give the path "
            "of a zarr array or of an OME-Zarr image"
        )
    first = multiscales[0]
    dataset = first["datasets"][0]
    array = group[dataset["path"]]
    names = [a["name"] if isinstance(a, dict) else a for a in first.get("axes", [])]
    unknown = [n for n in names if n.lower() not in _OME_LETTERS]
    if unknown:
        raise ValueError(f"INPUT {path} has axes {names}; only z, c, y, x are supported (got {unknown})")
    axes = "".join(_OME_LETTERS[n.lower()] for n in names)
    scale = None
    for transform in dataset.get("coordinateTransformations", []):
        if transform.get("type") == "scale":
            scale = transform["scale"]
    pixel_size = None
    unit = None
    if scale is not None and len(scale) == len(axes):
        pixel_size = [scale[axes.index(a)] for a in "ZYX" if a in axes]
        units = {
            a.get("unit") for a in first["axes"] if isinstance(a, dict) and a.get("type") == "space"
        }
        unit = units.pop() if len(units) == 1 else None
    return array, axes, pixel_size, unit


def read_input(path) -> tuple:
    """Open INPUT lazily where the format allows.

    Returns
    -------
    (array, axes or None, pixel_size or None, unit or None)
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"INPUT {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        import numpy as np

        return np.load(path, mmap_mode="r", allow_pickle=False), None, None, None
    if suffix in _TIF:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series_axes = tif.series[0].axes.replace("S", "C")
        try:
            data = tifffile.memmap(path, mode="r")
        except ValueError:  # compressed or not contiguous: read it
            data = tifffile.imread(path)
        axes = series_axes if set(series_axes) <= set("ZCYX") and len(series_axes) == data.ndim else None
        return data, axes, None, None
    if path.is_dir():
        import zarr

        node = zarr.open(store=str(path), mode="r")
        if isinstance(node, zarr.Group):
            return _ome_image(node, path)
        return node, None, None, None
    raise ValueError(f"INPUT must be a .tif/.tiff, .npy or .zarr (array or OME-Zarr image); got {path}")


class _PlainProgress:
    """Progress lines on stderr when tqdm is not installed."""

    def __init__(self, total: int, initial: int):
        self.total, self.n = total, initial
        self._report()

    def _report(self) -> None:
        print(f"{self.n}/{self.total} blocks", file=sys.stderr, flush=True)

    def update(self, k: int) -> None:
        self.n += k
        self._report()

    def close(self) -> None:
        pass


def _progress_bar(total: int, initial: int):
    try:
        from tqdm import tqdm
    except ImportError:
        return _PlainProgress(total, initial)
    return tqdm(total=total, initial=initial, unit="block", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run ``predict``; return the exit status."""
    from ._predict import watch_nonfinite

    with watch_nonfinite() as nonfinite:  # NaN / inf in INPUT: one warning, not one per block
        code = _run(args)
    if code == 0:
        nonfinite.warn("INPUT")
    return code


def _run(args: argparse.Namespace) -> int:
    from .._validation import in_flags
    from .._warnings import Im2ImUQWarning  # noqa: F401 - warnings show on stderr as usual

    try:
        from ._store import check_apart  # before reading: an --overwrite must not touch INPUT

        check_apart(Path(args.output).expanduser().resolve(),
                    [Path(args.input).expanduser().resolve()], output_name="--output",
                    input_name="INPUT")
        image, file_axes, pixel_size, unit = read_input(args.input)
        axes = args.axes or file_axes
        if axes is None:
            if image.ndim != 2:
                raise ValueError(
                    f"--axes is needed for INPUT of shape {tuple(image.shape)}: one letter per "
                    "dimension from Z, C, Y, X (e.g. ZYX, CYX, ZCYX)"
                )
            axes = "YX"
        from . import predict_to_zarr

        model = args.model
        if args.trust_code:  # a package's own code runs only when asked for
            from ..models import load_cached

            model = load_cached(args.model, trust_code=True)
        gen = predict_to_zarr(
            model,
            image,
            args.output,
            axes=axes,
            tile_shape=tuple(args.tile) if args.tile else None,
            batch_size=args.batch,
            device=args.device,
            precision=args.precision,
            scheduler=args.scheduler,
            overwrite=args.overwrite,
            uncertainty=_uncertainty(args),
            pixel_size=pixel_size,
            unit=unit,
        )
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        print(f"error: {in_flags(str(err), _FLAGS)}", file=sys.stderr)
        return 1
    bar = None
    try:
        try:
            while True:
                done, total = next(gen)
                if args.no_progress:
                    continue
                if bar is None:
                    bar = _progress_bar(total, done)
                else:
                    bar.update(done - bar.n)
        except StopIteration as stop:
            arrays = stop.value
    except KeyboardInterrupt:
        gen.close()
        print(f"stopped; run the same command again to resume into {args.output}", file=sys.stderr)
        raise
    except (ValueError, MemoryError, RuntimeError) as err:
        print(f"error: {in_flags(str(err), _FLAGS)}", file=sys.stderr)
        return 1
    finally:
        gen.close()
        if bar is not None:
            bar.close()
    for name, array in arrays.items():
        print(f"{name}: {Path(args.output) / name / '0'} shape {tuple(array.shape)}")
    return 0
