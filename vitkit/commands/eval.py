"""`vitkit eval MODEL --data DIR`: top-1 and top-5 accuracy, per-class accuracy and a confusion-matrix
PNG, for any checkpoint vitkit reads: the class names and preprocessing come from the checkpoint itself."""

from __future__ import annotations

import json
from pathlib import Path

from ..configs import POOLS
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
    _args.add_output(p, "the folder to write results.json and confusion.png into (made if absent, its parent must "
                     "exist; default: RUN/eval-<split> for a run's model, else eval-<model name>)", "--out")
    _args.add_json(p, "print the results as JSON on stdout")
    p.add_argument("--num-heads", type=_args.positive_int,
                   help="heads, for files that do not record them (timm, bare HF)")
    p.add_argument("--pool", choices=POOLS, help="pooling, for files that do not record it")
    p.add_argument("--few-shot", metavar="K,K,...", help="also the paper's few-shot linear evaluation (e.g. 1,5,10,25: "
                   "least squares from frozen features to {-1,1} on K training images per class, averaged over "
                   "draws) and a linear probe, on the data's training split")
    p.add_argument("--few-shot-draws", type=_args.positive_int, default=5,
                   help="random draws of the K shots to average (default 5)")
    _args.add_runtime(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import numpy as np

    from .. import load
    from ..errors import UsageError
    from ..eval.evaluate import (eval_batches, evaluate, match_classes, plot_confusion, restrict_confusion)
    from ..hub.resolve import model_source
    from ..training.checkpoint import run_dir_of
    from ..training.distributed import pick_device

    if args.output:
        from ._outputs import check_output_folder

        check_output_folder(Path(args.output))
    model = load(model_source(args.model), num_heads=args.num_heads, pool=args.pool)
    run_dir = run_dir_of(args.model)
    run_config = None
    if run_dir is not None:
        from ..training.trainer import load_run_config

        try:
            run_config = load_run_config(run_dir)
        except (UsageError, ValueError):
            run_config = None
    say = _args.status(args)
    shots = None
    if args.few_shot:
        from ..eval.fewshot import parse_shots

        shots = parse_shots(args.few_shot)
    from ..training.holdout import open_eval_set

    chosen = open_eval_set(args.data, run_dir=run_dir, run_config=run_config, split=args.split,
                           want_train=shots is not None, val_fraction=args.val_fraction,
                           val_per_class=args.val_per_class, split_seed=args.split_seed,
                           limit_per_class=args.limit_per_class, max_bad_fraction=args.max_bad_fraction, log=say,
                           progress=args.progress)
    splits, data = chosen.splits, chosen.data
    if chosen.note:
        say(f"note: {chosen.note}")
    images = splits.val
    if images is None or len(images) == 0:
        raise UsageError(f"--data {data}: no images to evaluate")
    label_map = match_classes(model.class_names, model.num_classes, splits.classes, where=f"--data {data}")
    device = pick_device(args.device)
    model.to(device)
    batches = eval_batches(model, images, args.batch_size, args.num_workers, label_map=label_map)
    precision = args.precision
    if precision == "int8":
        from ..models.fast import quantize_int8

        if device.type != "cpu":
            raise UsageError(f"--precision int8 runs on the CPU only, not on --device {device}")
        try:
            model = quantize_int8(model)
        except ValueError as e:
            raise UsageError(str(e)) from None
        precision = "fp32"  # activations stay float32 between the quantized layers
    counts = evaluate(model, batches, model.num_classes, device, precision, progress=args.progress,
                      desc=f"eval {splits.val_name}", total=len(batches))
    result = counts.result()

    confusion, has_other = restrict_confusion(result.confusion, label_map)
    totals = confusion.sum(axis=1)
    hits = np.diag(confusion[:, :len(label_map)])
    per_class = np.where(totals > 0, hits / np.maximum(totals, 1), np.nan)
    names = list(splits.classes)
    out = Path(args.output) if args.output else (run_dir / f"eval-{splits.val_name}" if run_dir is not None
                                           else Path(f"eval-{Path(args.model).stem}"))
    out.mkdir(exist_ok=True)
    png = plot_confusion(confusion, names + (["other"] if has_other else []), out / "confusion.png",
                         title=f"{Path(args.model).name} on {splits.val_name} ({result.count:,} images)")
    report = {
        "checkpoint": str(args.model), "data": str(data), "split": splits.val_name, "images": result.count,
        "precision": args.precision, "top1": result.top1, "top5": result.top5, "loss": result.loss,
        "per_class": {name: (None if np.isnan(acc) else float(acc)) for name, acc in zip(names, per_class)},
        "confusion": {"classes": names + (["other"] if has_other else []), "matrix": confusion.tolist()},
        "skipped_files": [p for p, _ in splits.bad_files],
        **({"note": chosen.note} if chosen.note else {}),
        "confusion_png": str(png),
    }
    if shots is not None:
        from ..eval.fewshot import fewshot_evaluate, format_results

        if splits.train is None or len(splits.train) == 0:
            raise UsageError(f"--few-shot needs a training split of --data {data} to draw the shots from")
        few = fewshot_evaluate(model, eval_batches(model, splits.train, args.batch_size, args.num_workers),
                               eval_batches(model, images, args.batch_size, args.num_workers), shots=shots,
                               num_draws=args.few_shot_draws, device=device)
        report["few_shot"] = {str(k): {"mean": r.mean, "std": r.std, "draws": r.accuracies}
                              for k, r in few["fewshot"].items()}
        report["linear_probe"] = few["linear_probe"]
    from ..checkpoints.io import atomic_write_text

    atomic_write_text(out / "results.json", json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
        say(f"wrote {out / 'results.json'} and {png}")
        return 0
    shown_precision = "" if args.precision == "fp32" else f", {args.precision}"
    print(f"{Path(args.model)} on {data} ({splits.val_name}, {result.count:,} images{shown_precision}):")
    print(f"  top-1 {100 * result.top1:.2f}%   top-5 {100 * result.top5:.2f}%   loss {result.loss:.4f}")
    width = max(len(n) for n in names)
    print("  per class:")
    for name, acc, total in zip(names, per_class, totals):
        shown = "   n/a" if np.isnan(acc) else f"{100 * acc:6.2f}%"
        print(f"    {name:<{width}}  {shown}  ({int(total)} images)")
    if splits.bad_files:
        print(f"  skipped {len(splits.bad_files)} unreadable file(s)")
    if shots is not None:
        print("  few-shot (frozen features, training split -> " + splits.val_name + "):")
        print("\n".join("    " + line for line in format_results(few).splitlines()))
    say(f"  wrote {out / 'results.json'} and {png}")
    return 0
