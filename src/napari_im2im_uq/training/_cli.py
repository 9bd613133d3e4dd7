"""The ``train`` sub-command: ``napari-im2im-uq train --recipe NAME --output DIR``.

No torch import at module level: the parser is built without it.
"""

from __future__ import annotations

import sys

__all__ = ["register"]


def register(subparsers) -> None:
    """Add the ``train`` sub-command to an ``argparse`` sub-parsers object.

    Examples
    --------
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> register(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["train", "--recipe", "tem-sr4x-quantile", "--output", "out"])
    >>> args.recipe, args.steps, args.seed, args.resume
    ('tem-sr4x-quantile', None, 0, False)
    """
    from .._validation import int_flag  # a bad number exits 2 naming the flag

    parser = subparsers.add_parser(
        "train",
        help="train a model by one of the zoo recipes",
        description=(
            "Train a model by a recipe (the zoo models and a tiny synthetic demonstration), "
            "save the bundle (weights.safetensors, model.json, README.md) to --output and "
            "measure its quality on held-out data. Real-data recipes read ../shared/data "
            "(or $NAPARI_IM2IM_UQ_DATA)."
        ),
    )
    parser.add_argument("--recipe", help="recipe name; --list shows them")
    parser.add_argument("--output", help="bundle folder to write")
    parser.add_argument(
        "--steps", type=int_flag(), default=None, help="training steps (default: the recipe's)"
    )
    parser.add_argument(
        "--seed", type=int_flag(minimum=0), default=0, help="seed of weights and patches (default 0)"
    )
    parser.add_argument(
        "--resume", action="store_true",
        help="continue from the checkpoint in --checkpoint-dir if there is one",
    )
    parser.add_argument(
        "--checkpoint-dir", default=None,
        help="checkpoint folder (default: <output>.checkpoint beside the bundle)",
    )
    parser.add_argument(
        "--checkpoint-every", type=int_flag(), default=200, help="steps between checkpoints"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a bundle at --output")
    parser.add_argument("--no-evaluate", action="store_true", help="skip the held-out evaluation")
    parser.add_argument("--data-root", default=None, help="folder holding the data sets")
    parser.add_argument("--threads", type=int_flag(), default=None, help="torch CPU threads")
    parser.add_argument("--list", action="store_true", help="list the recipes and exit")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from . import _recipes  # no torch at import time

    if args.list:
        for name in _recipes.list_recipes():
            print(f"{name}: {_recipes.get_recipe(name).description}")
        return 0
    missing = [flag for flag, value in (("--recipe", args.recipe), ("--output", args.output))
               if not value]
    if missing:
        print(f"train: {' and '.join(missing)} required (see --help)", file=sys.stderr)
        return 2
    if args.recipe not in _recipes.RECIPES:
        print(
            f"train: --recipe must be one of {_recipes.list_recipes()}; got {args.recipe!r}",
            file=sys.stderr,
        )
        return 2
    if args.threads is not None and args.threads < 1:
        print(f"train: --threads must be >= 1; got {args.threads}", file=sys.stderr)
        return 2
    if args.steps is not None and args.steps < 1:
        print(f"train: --steps must be >= 1; got {args.steps}", file=sys.stderr)
        return 2
    import torch

    from ._checkpoint import check_bundle_output, check_checkpoint_folder
    from ._loop import run_to_end

    try:  # before any training: nothing of the user's at --output is replaced
        check_bundle_output(args.output, overwrite=args.overwrite)
        check_checkpoint_folder(args.checkpoint_dir or f"{args.output.rstrip('/')}.checkpoint")
    except FileExistsError as err:
        said = str(err).replace("overwrite=True (--overwrite)", "--overwrite")
        print(f"train: {said.replace('output ', '--output ', 1)}", file=sys.stderr)
        return 1

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    command = f"napari-im2im-uq train --recipe {args.recipe} --output {args.output}"
    for flag, value in (("--steps", args.steps), ("--seed", args.seed or None)):
        if value is not None:
            command += f" {flag} {value}"
    if args.resume:
        command += " --resume"
    job = _recipes.run_recipe(
        args.recipe, output=args.output, steps=args.steps, seed=args.seed, resume=args.resume,
        overwrite=args.overwrite, checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every, root=args.data_root,
        evaluate=not args.no_evaluate, command=command,
    )
    try:
        path = run_to_end(job, callback=_printer())
    except (FileExistsError, FileNotFoundError, ValueError) as err:
        print(f"train: {err}", file=sys.stderr)
        return 1
    print(f"saved {path}")
    return 0


def _printer():
    def show(event) -> None:
        phase = event.get("phase")
        if phase == "train":
            total = event["total"]
            every = max(1, total // 50)
            if event["step"] % every == 0 or event["step"] == total or "resumed_from" in event:
                resumed = ""
                if "resumed_from" in event:
                    resumed = f" (resumed from step {event['resumed_from']})"
                print(
                    f"step {event['step']}/{total}  loss {event['loss']:.5f}  lr {event['lr']:.2e}"
                    f"  {event['seconds']:.1f} s{resumed}",
                    flush=True,
                )
        elif phase == "saved":
            pass
        else:
            print(f"{phase}: {event.get('recipe', '')}", flush=True)

    return show
