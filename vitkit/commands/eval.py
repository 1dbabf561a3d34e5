"""`vitkit eval MODEL --data DIR`: top-1 and top-5 accuracy, per-class accuracy and a confusion-matrix
PNG, for any checkpoint vitkit reads: the class names and preprocessing come from the checkpoint itself."""

from __future__ import annotations

import json
from pathlib import Path

from . import _args

ORDER = 32


def register(sub) -> None:
    import argparse

    p = sub.add_parser("eval", help="evaluate a checkpoint: top-1/top-5, per-class accuracy, confusion matrix",
                       description="Evaluate a checkpoint (a vitkit run or checkpoint folder, a .safetensors file, a "
                       "Google .npz, a timm file or a Hugging Face folder) on a data set. The data's classes are "
                       "matched to the checkpoint's by name.",
                       epilog="examples:\n  vitkit eval runs/NAME                     the run's own evaluation split\n"
                       "  vitkit eval model.safetensors --data DIR\n(--checkpoint MODEL, the older spelling, works "
                       "too)",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _args.add_model(p, alias="--checkpoint")
    p.add_argument("--data", metavar="DIR", help="'digits', an ImageFolder tree or a CIFAR folder; default: the run's "
                   "data when MODEL belongs to a run")
    p.add_argument("--split", choices=("auto", "holdout", "all"), default="auto",
                   help="auto: the data's val/test split, or every image of a plain class folder (the hold-out when "
                   "it is the run's own data); holdout: the hold-out a training run takes; all: every image")
    p.add_argument("--val-per-class", type=_args.positive_int,
                   help="hold-out size per class (default: the run's, else --val-fraction)")
    p.add_argument("--val-fraction", type=_args.open_share,
                   help="hold-out share per class (default: the run's, else 0.1)")
    p.add_argument("--split-seed", type=_args.count, help="hold-out seed (default: the run's, else 0)")
    p.add_argument("--limit-per-class", type=_args.positive_int, help="evaluate at most this many images per class")
    _args.add_max_bad(p, 0.01)
    p.add_argument("--batch-size", type=_args.positive_int, default=64)
    p.add_argument("--num-workers", type=_args.int_range(-1), default=-1, help="loader processes (-1 chooses)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16", "int8"), default="fp32",
                   help="fp32; bf16 or fp16 autocast; int8: the dense layers quantized by torchao (dynamic int8, "
                   "CPU only), to see what quantization costs in accuracy")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time flip averaging: each image's probabilities are the mean of the image's and its "
                   "mirror image's (twice the compute); default: as the run evaluated (its eval_flip), else off")
    _args.add_output(p, "the folder to write results.json and confusion.png into (made if absent, its parent must "
                     "exist; default: RUN/eval-<split> for a run's model, else eval-<model name>)", "--out")
    _args.add_json(p, "print the results as JSON on stdout")
    _args.add_checkpoint_hints(p)
    p.add_argument("--few-shot", metavar="K,K,...", help="also the paper's few-shot linear evaluation (e.g. 1,5,10,25: "
                   "least squares from frozen features to {-1,1} on K training images per class, averaged over "
                   "draws) and a linear probe, on the data's training split")
    p.add_argument("--few-shot-draws", type=_args.positive_int, default=5,
                   help="random draws of the K shots to average (default 5)")
    _args.add_runtime(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..api import evaluation

    shots = None
    if args.few_shot:
        from ..eval.fewshot import parse_shots

        shots = parse_shots(args.few_shot)
    say = _args.status(args)
    found = evaluation(args.model, args.data, **_args.checkpoint_hints(args), split=args.split,
                       val_fraction=args.val_fraction, val_per_class=args.val_per_class, split_seed=args.split_seed,
                       limit_per_class=args.limit_per_class, max_bad_fraction=args.max_bad_fraction,
                       few_shot=shots, few_shot_draws=args.few_shot_draws, batch_size=args.batch_size,
                       num_workers=args.num_workers, precision=args.precision, flip=args.flip, device=args.device,
                       output=args.output or "auto", log=say, progress=args.progress)
    report = found.results
    wrote = f"{found.folder / 'results.json'} and {report['confusion_png']}"
    if args.json:
        print(json.dumps(report, indent=2))
        say(f"wrote {wrote}")
        return 0
    shown_precision = "" if args.precision == "fp32" else f", {args.precision}"
    shown_precision += ", flip-averaged" if report["flip"] else ""
    print(f"{Path(args.model)} on {report['data']} ({report['split']}, {report['images']:,} images{shown_precision}):")
    print(f"  top-1 {100 * report['top1']:.2f}%   top-5 {100 * report['top5']:.2f}%   loss {report['loss']:.4f}")
    names = list(report["per_class"])
    width = max(len(n) for n in names)
    print("  per class:")
    for name, row in zip(names, report["confusion"]["matrix"]):
        accuracy = report["per_class"][name]
        shown = "   n/a" if accuracy is None else f"{100 * accuracy:6.2f}%"
        print(f"    {name:<{width}}  {shown}  ({sum(row)} images)")
    if report["skipped_files"]:
        print(f"  skipped {len(report['skipped_files'])} unreadable file(s)")
    if found.few_shot is not None:
        from ..eval.fewshot import format_results

        print("  few-shot (frozen features, training split -> " + report["split"] + "):")
        print("\n".join("    " + line for line in format_results(found.few_shot).splitlines()))
    say(f"  wrote {wrote}")
    return 0
