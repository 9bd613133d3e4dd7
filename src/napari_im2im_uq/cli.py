"""Headless command line: ``napari-im2im-uq <command> ...``.

Each sub-command lives next to the code it drives, in a private ``_cli`` module that exposes
``register(subparsers)``; this file only collects them. Heavy packages (torch, dask, zarr) are
imported by the sub-commands when they run, never when the parser is built.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that contribute sub-commands, in the order ``--help`` lists them.
_COMMAND_MODULES = (
    "napari_im2im_uq._demo",
    "napari_im2im_uq.training._cli",
    "napari_im2im_uq.inference._cli",
    "napari_im2im_uq._cli_drift",
    "napari_im2im_uq._cli_calibration",
    "napari_im2im_uq._cli_export",
)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every available sub-command registered."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="napari-im2im-uq",
        description="Calibrated uncertainty for image-to-image networks in microscopy.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:  # a real missing dependency, not an absent sub-command
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
