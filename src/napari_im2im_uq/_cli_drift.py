"""``napari-im2im-uq drift``: check whether a calibration carries over to a predicted volume.

Reads a calibration record (JSON) and the OME-Zarr store ``napari-im2im-uq predict`` wrote,
runs :func:`napari_im2im_uq.api.check_drift` (no ground truth needed) and prints the verdict.
Nothing heavy is imported when the parser is built.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["register", "run"]

#: Exit status when the alarm sounds (with ``--fail-on-drift``).
DRIFT_STATUS = 3


def register(subparsers) -> None:
    """Add the ``drift`` sub-command to ``subparsers`` (an argparse sub-parser action)."""
    parser = subparsers.add_parser(
        "drift",
        help="check, without ground truth, whether a calibration carries over to a prediction",
        description=(
            "Cut the outputs in PREDICTION.zarr into tiles of the record's shape and test "
            "whether they look like the calibration tiles of RECORD: the whole volume by a "
            "permutation test over planes (planes as the exchangeable units; tiles against "
            "tiles when there are too few planes), at a family-wise level; the map of "
            "regions by conformal p-values against the calibration's regions (blocks ranked "
            "with their planes), Benjamini-Hochberg at the level (false discovery rate; the "
            "chance of any false mark when nothing drifts). Prints the verdict, which test "
            "and map were used, the p-value, the effect size and the regions that drift."
        ),
    )
    parser.add_argument("record", metavar="RECORD", help="calibration record (.json)")
    parser.add_argument("prediction", metavar="PREDICTION.zarr",
                        help="store written by `napari-im2im-uq predict`")
    parser.add_argument("--level", type=float, default=0.05,
                        help="family-wise false-alarm level (default 0.05)")
    parser.add_argument("--regions", default="auto",
                        help="'auto' (planes of a volume when the calibration has planes "
                             "enough to mark one, else blocks of 4 x 4 tiles within planes), "
                             "'plane', 'whole' or an integer k (blocks of k x k tiles)")
    parser.add_argument("--json", metavar="OUT.json", help="also write the verdict as JSON")
    parser.add_argument("--fail-on-drift", action="store_true",
                        help=f"exit with status {DRIFT_STATUS} when the alarm sounds")
    parser.set_defaults(func=run)


def _regions(text: str):
    return int(text) if text.isdigit() else text


def run(args) -> int:
    """Run the ``drift`` command; return the exit status."""
    from .inference._store import read_outputs
    from .workflows.drift import check_drift
    from .workflows.records import load_record

    try:
        record = load_record(args.record)
        outputs = read_outputs(args.prediction)
        verdict, _ = check_drift(record, outputs, level=args.level,
                                 regions=_regions(args.regions))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(verdict["message"])
    for r in verdict["regions"]:
        if r["drifted"]:
            print(f"  {verdict['region_word']} {r['region']}: p = {r['p_value']:.2g}, "
                  f"{r['statistic']} AUC {r['auc']:.2f} ({r['n_tiles']} tiles)")
    if args.json:
        out = {k: v for k, v in verdict.items() if k not in ("tile_map", "geometry")}
        out["tile_map"] = verdict["tile_map"].tolist()
        Path(args.json).write_text(json.dumps(out, indent=1), encoding="utf-8")
    return DRIFT_STATUS if (args.fail_on_drift and verdict["drifted"]) else 0
