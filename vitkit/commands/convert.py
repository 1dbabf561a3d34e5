"""`vitkit convert IN OUT --to FORMAT`: between vitkit, Google .npz, timm, torchvision and Hugging Face files."""

from __future__ import annotations

from ..configs import POOLS

ORDER = 20


def register(sub) -> None:
    p = sub.add_parser("convert", help="convert a checkpoint between formats",
                       description="Read any supported checkpoint (the format is detected) and write it in another.")
    p.add_argument("input", help="checkpoint file or Hugging Face folder")
    p.add_argument("output", help="file to write (a folder for --to hf)")
    p.add_argument("--to", dest="format", choices=("vitkit", "google", "timm", "hf", "torchvision"), default="vitkit",
                   help="output format (default vitkit)")
    p.add_argument("--num-heads", type=int, help="heads, for timm files and bare HF weights that do not record them")
    p.add_argument("--pool", choices=POOLS, help="pooling, for files that do not record it")
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import load, save

    model = load(args.input, num_heads=args.num_heads, pool=args.pool)
    path = save(model, args.output, format=args.format)
    c = model.config
    print(f"wrote {path} ({args.format}): {c.depth} blocks, width {c.width}, {c.num_heads} heads, "
          f"{c.num_classes} classes, image size {tuple(c.image_size)}")
    return 0
