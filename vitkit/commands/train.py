"""`vitkit train`: train a ViT from a recipe; with no arguments, the main job (a small ViT on scikit-learn's
digits, about a minute on two cores)."""

from __future__ import annotations

import sys
from pathlib import Path

from . import _args

ORDER = 30

EPILOG = """examples:
  vitkit train                                            the main job: digits, prints the test accuracy
  vitkit train --data DIR --recipe cifar10                an ImageFolder tree (DIR/<class>/<image>)
  vitkit train --recipe vit-b16-i21k --smoke --data digits  any recipe, shrunk to seconds
  vitkit train --resume runs/NAME                         continue a run from its newest checkpoint
  torchrun --standalone --nproc-per-node 2 -m vitkit train  the same on 2 processes (DDP)
"""


def add_common_arguments(p) -> None:
    from ..training.config import add_config_arguments

    p.add_argument("--recipe", metavar="NAME|FILE", help="a recipe in recipes/ (see --list-recipes) or a .toml/.json "
                   "file")
    p.add_argument("--resume", nargs="?", const=True, metavar="RUN",
                   help="continue a run: its folder (runs/NAME) or one of its checkpoint folders; bare, the run that "
                   "--name names. Options given again override the run's config")
    p.add_argument("--smoke", action="store_true", help="shrink the recipe to seconds: a tiny model, 4 steps, small "
                   "batches (a check that it runs)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="set any option (repeatable)")
    p.add_argument("--list-recipes", action="store_true", help="list the recipes and exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors and warnings: no progress bars, no "
                   "status lines (the run folder holds the results)")
    add_config_arguments(p)


def register(sub) -> None:
    import argparse

    p = sub.add_parser("train", help="train a ViT (default: the main job on the built-in digits)",
                       description="Train a Vision Transformer. Without arguments: the digits recipe (the main job). "
                       "Every run writes runs/<name>/ with config.json, metrics.jsonl, curves.png, checkpoints/ and "
                       "the final model.safetensors.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(p)
    p.set_defaults(func=run, default_recipe="digits", finetune=False)


def resolve(args, log=print):
    """The api's Resolved (config, the source of each value, resume) from the command line."""
    from ..api import resolve_training
    from ..training.config import overrides_from_args

    return resolve_training(args.recipe, overrides_from_args(args), finetune=args.finetune,
                            resume=args.resume or False, smoke=args.smoke, log=log)


def check_resume_folder(path: Path) -> None:
    """--resume takes a run folder (runs/NAME, with its config.json) or one of its checkpoint folders
    (runs/NAME/checkpoints/step_N); a file or any other folder is a one-line UsageError naming the folder to pass."""
    from ..training.run_folder import resolve_resume

    resolve_resume(path)


def run(args) -> int:
    from ..training.config import list_recipes

    if args.list_recipes:
        for name in list_recipes():
            print(name)
        return 0
    quiet = getattr(args, "quiet", False)
    notes: list[str] = []  # printed with the configuration once the run folder is ours (a refusal is one line)
    resolved = resolve(args, log=notes.append)
    config = resolved.config
    if args.print_config:
        print(config.to_json())
        return 0
    from ..training.trainer import TrainingError, TrainingInterrupted, train

    log = None
    if quiet:
        config = config.replace(progress=False)
        log = _args.warnings_only
    try:
        train(config, resume=resolved.resume, log=log, provenance=resolved.to_json(),
              announce="\n".join([*notes, resolved.describe()]))
    except TrainingError as e:
        print(f"vitkit: error: {e}", file=sys.stderr)
        return 1
    except TrainingInterrupted:  # the checkpoint is saved and the resume command printed
        return 130
    return 0
