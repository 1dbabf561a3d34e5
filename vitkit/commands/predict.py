"""`vitkit predict MODEL IMAGE...`: the top-k classes of each image, with probabilities, also as JSON."""

from __future__ import annotations

import json

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
    _args.add_checkpoint_hints(p)
    _args.add_runtime(p, progress=False)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..api import predictions

    # unreadable files: skipped and counted in one warning; an error above --max-bad-fraction, or when none is left
    records = predictions(args.model, args.images, args.top_k, batch_size=args.batch_size, device=args.device,
                          **_args.checkpoint_hints(args), max_bad_fraction=args.max_bad_fraction,
                          log=_args.warn)
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        for record in records:
            if "error" in record:
                continue
            print(record["image"])
            for pred in record["predictions"]:
                print(f"  {100 * pred['probability']:6.2f}%  {pred['class']}")
    return 0
