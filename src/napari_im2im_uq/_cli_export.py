"""``napari-im2im-uq export``: write a model as a bioimage.io package (with its calibration).

Runs :func:`napari_im2im_uq.api.export_bioimageio`: MODEL (a zoo name or a bundle folder) is
written to PATH (a folder, or a zip when PATH ends in ".zip") in the chosen weight format, with
test tensors, the card, licence and citation, and the calibration record given by ``--record``
in the RDF's ``config``. Nothing heavy is imported when the parser is built.
"""

from __future__ import annotations

import sys

__all__ = ["register", "run"]

_FLAGS = {"record": "--record", "weight_format": "--format", "path": "PATH", "model": "MODEL"}


def register(subparsers) -> None:
    """Add the ``export`` sub-command to ``subparsers`` (an argparse sub-parser action)."""
    parser = subparsers.add_parser(
        "export",
        help="write a model as a bioimage.io package (with its calibration record)",
        description=(
            "Write MODEL as a bioimage.io model package at PATH (a folder, or a zip when PATH "
            "ends in .zip) that the bioimage.io tools validate and run: weights, test tensors, "
            "the card, licence and citation. With --record the calibration record travels in "
            "the package's config, and `napari-im2im-uq predict --model PATH` (or "
            "api.load_model / api.record_of) gets it back."
        ),
    )
    parser.add_argument("model", metavar="MODEL", help="zoo name or bundle folder")
    parser.add_argument("path", metavar="PATH", help="package to create: a folder or a .zip")
    parser.add_argument("--record", metavar="REC.json",
                        help="calibration record of MODEL to carry in the package")
    parser.add_argument("--format", dest="weight_format", default="torchscript",
                        choices=("torchscript", "onnx", "pytorch_state_dict"),
                        help="weight format (default: torchscript)")
    parser.set_defaults(func=run)


def run(args) -> int:
    """Export; print the package's path. Exit status 1 with a message on a refused argument."""
    from . import api
    from ._validation import in_flags

    try:
        path = api.export_bioimageio(args.model, args.path, record=args.record,
                                     weight_format=args.weight_format)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {in_flags(str(err), _FLAGS)}", file=sys.stderr)
        return 1
    print(f"wrote the bioimage.io package {path}"
          + (f" with the calibration record {args.record}" if args.record else ""))
    return 0
