"""`vitkit predict MODEL IMAGE...`: the top-k classes of each image, with probabilities, also as JSON."""

from __future__ import annotations

import json
import sys

from ..configs import POOLS
from . import _args

ORDER = 33


def register(sub) -> None:
    p = sub.add_parser("predict", help="classify images with a checkpoint: top-k class names and probabilities",
                       description="Classify images with any checkpoint vitkit reads; the class names and the "
                       "preprocessing come from the checkpoint (indices where it has no names).")
    _args.add_model(p, extra="; or a file `vitkit export` wrote (.onnx: run with onnxruntime; .pt2: with torch; CPU)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, or folders (every image file inside); "
                   "unreadable files are skipped with one warning (and an error record with --json)")
    _args.add_max_bad(p, 1.0)
    p.add_argument("--top-k", type=_args.positive_int, default=5, help="classes to show per image (default 5)")
    _args.add_json(p, "print JSON on stdout: one object per image")
    p.add_argument("--batch-size", type=_args.positive_int, default=32)
    p.add_argument("--num-heads", type=_args.positive_int,
                   help="heads, for files that do not record them (timm, bare HF)")
    p.add_argument("--pool", choices=POOLS, help="pooling, for files that do not record it")
    _args.add_runtime(p, progress=False)
    p.set_defaults(func=run)


def _warn(message: str) -> None:
    print(f"vitkit: warning: {message}", file=sys.stderr)


def run(args) -> int:
    from .. import load
    from ..data import eval_transform, gather_image_files, read_images
    from ..errors import UsageError
    from ..eval.evaluate import classify
    from ..hub.resolve import model_source
    from ..training.distributed import pick_device

    if str(args.model).lower().endswith((".onnx", ".pt2")):  # an exported file: names and preprocessing inside
        from ..export import load_exported

        if args.num_heads or args.pool:
            raise UsageError(f"{args.model}: an exported file records its model; --num-heads and --pool "
                             "are for checkpoints")
        if args.device not in ("auto", "cpu"):
            raise UsageError(f"{args.model}: exported files run on the CPU here, not --device {args.device}")
        model, device = load_exported(args.model), "cpu"
    else:
        model = load(model_source(args.model), num_heads=args.num_heads, pool=args.pool)
        device = pick_device(args.device)
        model.to(device)
    if model.num_classes == 0:
        raise UsageError(f"{args.model}: the model has no classifier head")
    names = model.class_names or [str(i) for i in range(model.num_classes)]
    transform = eval_transform(model.preprocessing)

    paths = gather_image_files(args.images, log=_warn)  # folders: their image files, other files ignored
    # skipped and counted in one warning; an error above --max-bad-fraction, or when none is left
    readable, unreadable = read_images(paths, log=_warn, max_bad_fraction=args.max_bad_fraction)
    records = {path: {"image": path, "error": reason} for path, reason in unreadable}
    good = [path for path, _ in readable]
    images = [image for _, image in readable]
    for path, top in zip(good, classify(model, images, transform, args.top_k, args.batch_size, device)):
        records[path] = {"image": path, "predictions": [
            {"class": names[i], "index": i, "probability": p} for i, p in top]}

    if args.json:
        print(json.dumps([records[p] for p in paths], indent=2))
    else:
        for path in paths:
            record = records[path]
            if "error" in record:
                continue
            print(path)
            for pred in record["predictions"]:
                print(f"  {100 * pred['probability']:6.2f}%  {pred['class']}")
    return 0
