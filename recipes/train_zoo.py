"""Train a shipped zoo model by its recipe: ``python recipes/train_zoo.py NAME``.

Writes ``src/napari_im2im_uq/zoo/NAME/`` (weights.safetensors in float16, model.json with the
model card, README.md). Data are read from ../shared/data at run time (never copied).
``--all`` trains every zoo model one after another, in dependency order (the mask model
needs tem-sr4x-quantile). The device is chosen automatically (CUDA with bfloat16 mixed
precision when present, else the CPU); a run is resumable (``--resume``) from the checkpoints
written at every validation. Run it nice'd on a shared machine:

    nice -n 10 python recipes/train_zoo.py tem-sr4x-quantile
    nice -n 5 env OMP_NUM_THREADS=1 python recipes/train_zoo.py qpi-dpc-quantile --threads 1 \
        --output /tmp/zoo --checkpoints /tmp/zoo-checkpoints --resume
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ZOO = Path(__file__).resolve().parent.parent / "src" / "napari_im2im_uq" / "zoo"


def main(argv=None) -> int:
    """Parse the command line and train the named zoo models; return the exit status."""
    import torch

    from napari_im2im_uq.training import run_recipe, run_to_end
    from napari_im2im_uq.training._cli import _printer
    from napari_im2im_uq.training._recipes import ZOO_ORDER

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"zoo models, among {list(ZOO_ORDER)}")
    parser.add_argument("--all", action="store_true", help="train every zoo model in order")
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--output", type=Path, default=ZOO, help="folder of the bundles")
    parser.add_argument(
        "--checkpoints", type=Path, default=None,
        help="folder of the checkpoints, one sub-folder per model (default: "
        "<temp>/napari-im2im-uq-checkpoints); --resume continues from there",
    )
    args = parser.parse_args(argv)
    names = list(ZOO_ORDER) if args.all else args.names
    unknown = [n for n in names if n not in ZOO_ORDER]
    if not names or unknown:
        parser.error(f"names must be among {list(ZOO_ORDER)} (or --all); got {names}")
    torch.set_num_threads(args.threads)
    checkpoints = args.checkpoints or Path(tempfile.gettempdir()) / "napari-im2im-uq-checkpoints"
    for name in names:
        command = f"nice -n 10 python recipes/train_zoo.py {name}" + (
            f" --steps {args.steps}" if args.steps else ""
        ) + (f" --seed {args.seed}" if args.seed else "")
        job = run_recipe(
            name, output=args.output / name, steps=args.steps, seed=args.seed,
            resume=args.resume, overwrite=True, checkpoint_dir=checkpoints / name,
            command=command,
        )
        path = run_to_end(job, callback=_printer())
        print(f"saved {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
