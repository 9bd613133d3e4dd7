"""The ``train`` sub-command, two forms.

``napari-im2im-uq train --recipe NAME --output DIR`` (a zoo recipe) and
``napari-im2im-uq train --input A --target B --output DIR [--head ...] [--base-model M]`` (your
own pairs: TIFF, .npy, zarr arrays or folders of them, read by
:func:`napari_im2im_uq.data.read_pairs`; the job is :func:`napari_im2im_uq.training.train`).

No torch import at module level: the parser is built without it.
"""

from __future__ import annotations

import sys

__all__ = ["register"]

_HEADS = ("quantile", "residual", "gaussian", "softmax", "segmentation", "mask")
_TASKS = ("regression", "segmentation", "mask")
#: Flags of one form only (dest -> flag): refused with the other form.
_RECIPE_ONLY = {"checkpoint_every": "--checkpoint-every", "no_evaluate": "--no-evaluate",
                "data_root": "--data-root"}
_PAIRS_ONLY = {
    "target": "--target", "head": "--head", "task": "--task", "base_model": "--base-model",
    "scale_factor": "--scale-factor", "region_shape": "--region-shape",
    "batch_size": "--batch-size", "patch": "--patch", "lr": "--lr", "device": "--device",
    "patience": "--patience", "name": "--name", "description": "--description",
    "licence": "--licence", "citation": "--citation", "authors": "--authors",
}
#: Python argument names of training.train in its messages -> the flags.
_IN_FLAGS = {
    "overwrite=True": "--overwrite", "resume=True": "--resume", "input": "--input",
    "target": "--target", "output": "--output", "head": "--head", "task": "--task",
    "base_model": "--base-model", "scale_factor": "--scale-factor",
    "region_shape": "--region-shape", "steps": "--steps", "batch_size": "--batch-size",
    "patch": "--patch", "lr": "--lr", "device": "--device", "seed": "--seed",
    "patience": "--patience", "checkpoint_dir": "--checkpoint-dir",
}


def _lr_flag(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0; got {text!r}")
    return value


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
    >>> args = parser.parse_args(["train", "--input", "low.tif", "--target", "high.tif",
    ...                           "--output", "out", "--head", "gaussian"])
    >>> args.input, args.target, args.head
    ('low.tif', 'high.tif', 'gaussian')
    """
    from .._validation import int_flag  # a bad number exits 2 naming the flag

    parser = subparsers.add_parser(
        "train",
        help="train a model on your own pairs, or by one of the zoo recipes",
        description=(
            "Train (or fine-tune) a model on your own pairs (--input and --target: TIFF files, "
            ".npy files, zarr arrays, or two folders of them paired by sorted file name) or by "
            "a recipe (--recipe: the zoo models and a tiny synthetic demonstration); save the "
            "bundle (weights.safetensors, model.json, README.md) to --output and measure its "
            "quality next to a baseline on held-out data. Your pairs are split into train, "
            "validation and held-back regions recorded in the bundle: calibrate on the "
            "held-back ones. Real-data recipes read ../shared/data (or $NAPARI_IM2IM_UQ_DATA)."
        ),
    )
    parser.add_argument("--recipe", help="recipe name; --list shows them")
    parser.add_argument("--input", help="your pairs: the input image(s) (file or folder)")
    parser.add_argument(
        "--target", help="your pairs: the target image(s) or integer labels (0 = not annotated);"
        " leave out with --base-model to train its mask network on --input as the truth")
    parser.add_argument("--output", help="bundle folder to write")
    parser.add_argument("--head", choices=_HEADS, default=None,
                        help="your pairs: the regression head (default quantile; segmentation "
                             "and mask tasks have their own)")
    parser.add_argument("--task", choices=_TASKS, default=None,
                        help="your pairs: default inferred (labels: segmentation; no --target: "
                             "mask; else regression)")
    parser.add_argument("--base-model", default=None,
                        help="your pairs: a zoo name or bundle folder to fine-tune (or whose "
                             "mask network to train)")
    parser.add_argument("--scale-factor", type=int_flag(), default=None,
                        help="your pairs: target / input size (checked against the shapes)")
    parser.add_argument("--region-shape", type=int_flag(), nargs="+", default=None,
                        metavar="N", help="your pairs: split regions, rows [cols], in target "
                                          "pixels (default from the data size)")
    parser.add_argument("--batch-size", type=int_flag(), default=None, help="your pairs")
    parser.add_argument("--patch", type=int_flag(), default=None,
                        help="your pairs: patch side in input pixels")
    parser.add_argument("--lr", type=_lr_flag, default=None, help="your pairs: learning rate")
    parser.add_argument("--device", default=None, help="your pairs: auto (default), cpu, cuda")
    parser.add_argument("--patience", type=int_flag(), default=None,
                        help="your pairs: validations without improvement before stopping")
    parser.add_argument("--name", default=None, help="your pairs: the model's name")
    parser.add_argument("--description", default=None, help="your pairs: the card's text")
    parser.add_argument("--licence", default=None, help="your pairs: licence of the model")
    parser.add_argument("--citation", default=None, help="your pairs: how to cite it")
    parser.add_argument("--authors", default=None,
                        help="your pairs: authors, separated by ';'")
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
        "--checkpoint-every", type=int_flag(), default=None,
        help="recipes: steps between checkpoints (default 200; your pairs: every validation)"
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
    if args.recipe and args.input:
        print("train: give --recipe or --input, not both", file=sys.stderr)
        return 2
    if args.input:
        return _run_pairs(args)
    wrong = [flag for dest, flag in _PAIRS_ONLY.items() if getattr(args, dest) is not None]
    if wrong:
        print(f"train: {', '.join(wrong)} only with --input (your pairs), not --recipe",
              file=sys.stderr)
        return 2
    missing = [flag for flag, value in (("--recipe", args.recipe), ("--output", args.output))
               if not value]
    if missing:
        if not args.recipe:
            missing[0] = "--recipe (or --input and --target)"
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
        checkpoint_every=args.checkpoint_every or 200, root=args.data_root,
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
        elif phase == "validate":
            print(f"validate step {event['step']}/{event['total']}  val_loss "
                  f"{event['val_loss']:.5f}  best {event['best_val_loss']:.5f} at step "
                  f"{event['best_step']}", flush=True)
        elif phase == "stopped_early":
            print(f"stopped early at step {event['step']}: no lower validation loss since step "
                  f"{event['best_step']} (its weights are kept)", flush=True)
        elif phase == "saved":
            pass
        else:
            print(f"{phase}: {event['recipe']}" if "recipe" in event else f"{phase}...", flush=True)

    return show


def _run_pairs(args) -> int:
    """Train on the user's pairs (``--input``/``--target``) with ``training.train``."""
    from pathlib import Path

    from .._validation import in_flags

    wrong = [flag for dest, flag in _RECIPE_ONLY.items() if getattr(args, dest)]
    if wrong:
        print(f"train: {', '.join(wrong)} only with --recipe, not --input", file=sys.stderr)
        return 2
    if not args.output:
        print("train: --output required (see --help)", file=sys.stderr)
        return 2
    if args.target is None and args.base_model is None:
        print("train: --target required (or --base-model, to train its mask network on --input "
              "as the truth)", file=sys.stderr)
        return 2
    for flag, value in (("--input", args.input), ("--target", args.target)):
        if value is not None and not Path(value).expanduser().exists():
            print(f"train: {flag}: no such file or folder: {value}", file=sys.stderr)
            return 2
    if args.region_shape is not None and len(args.region_shape) > 2:
        print(f"train: --region-shape takes rows [cols]; got {args.region_shape}",
              file=sys.stderr)
        return 2
    import torch

    from .._jobs import run_to_end
    from ._pairs import train

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rs = args.region_shape
    options = {
        "head": args.head or "quantile", "task": args.task, "base_model": args.base_model,
        "output": args.output, "scale_factor": args.scale_factor,
        "region_shape": None if rs is None else (rs[0], rs[-1]), "steps": args.steps,
        "batch_size": args.batch_size, "patch": args.patch, "lr": args.lr,
        "device": args.device or "auto", "seed": args.seed, "patience": args.patience,
        "resume": args.resume, "overwrite": args.overwrite,
        "checkpoint_dir": args.checkpoint_dir, "name": args.name,
        "description": args.description, "licence": args.licence, "citation": args.citation,
        "authors": None if args.authors is None else [
            a.strip() for a in args.authors.split(";") if a.strip()],
    }
    try:
        if args.target is None:  # the mask network: --input is the truth of the base model
            from ..data import read_images

            images, _ = read_images(args.input, name="--input")
            job = train(images, None, **options)
        else:
            job = train(args.input, args.target, **options)
        result = run_to_end(job, callback=_printer())
    except (FileExistsError, FileNotFoundError, ValueError, TypeError) as err:
        print(f"train: {in_flags(str(err), _IN_FLAGS)}", file=sys.stderr)
        return 1
    print(f"saved {result.path}")
    for line in _quality_lines(result.quality):
        print(line)
    return 0


def _quality_lines(quality) -> list[str]:
    """Return the held-back figures of the model next to its baseline, as a small table."""
    if not quality.get("model"):
        return []
    lines = [f"held-back quality ({quality['n_regions']} regions, {quality['n_pixels']} pixels; "
             f"baseline: {quality['baseline_name']})",
             f"  {'figure':<24}{'model':>12}{'baseline':>12}"]
    for key, value in quality["model"].items():
        base = quality["baseline"].get(key)
        base = f"{base:>12.4g}" if isinstance(base, float | int) else f"{'-':>12}"
        lines.append(f"  {key:<24}{value:>12.4g}{base}")
    return lines
