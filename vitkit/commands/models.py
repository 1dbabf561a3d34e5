"""`vitkit models`: the table of registered variants; `vitkit models --pretrained`: the catalog of published
checkpoints that `vitkit.load(NAME)` and every command taking a model accept by name."""

from __future__ import annotations

ORDER = 10


def register(sub) -> None:
    p = sub.add_parser("models", help="list the model variants with parameters and GFLOPs",
                       description="List every registered variant: parameters at 1,000 classes and GFLOPs of one "
                       "forward at its default resolution (a multiply-add counts as 2 FLOPs).")
    p.add_argument("--image-size", type=int, default=224, help="resolution for the counts (default 224)")
    p.add_argument("--num-classes", type=int, default=1000, help="head size for the counts (default 1000)")
    p.add_argument("--pretrained", nargs="?", const="", metavar="PATTERN",
                   help="list the published checkpoints instead (name, source, variant, resolution, classes, the "
                   "top-1 their authors report on ImageNet-1k val, data); PATTERN filters the names (\"tv-*\", b16)")
    p.set_defaults(func=run)


def model_table(image_size: int = 224, num_classes: int = 1000) -> list[dict]:
    import torch

    from ..configs import list_models, variant_config
    from ..models import count_flops, count_parameters
    from ..models.vit import VisionTransformer

    rows = []
    for name in list_models():
        config = variant_config(name, image_size=image_size, num_classes=num_classes)
        with torch.device("meta"):
            params = count_parameters(VisionTransformer(config))
        rows.append(dict(name=name, width=config.width, depth=config.depth, heads=config.num_heads,
                         mlp=config.mlp_dim, patch=config.patch_size[0] * config.stem_stride,
                         tokens=config.num_patches + config.num_prefix_tokens, params=params,
                         gflops=count_flops(config) / 1e9))
    return rows


def pretrained_table(pattern: str | None = None) -> list[str]:
    """The catalog as text lines: one row per entry, columns sized to their contents."""
    from ..hub.catalog import list_pretrained

    entries = list_pretrained(pattern)
    rows = [(e.name, e.source, e.variant, str(e.image_size), f"{e.num_classes:,}" if e.num_classes else "-",
             f"{e.top1:.2f}" if e.top1 is not None else "-", e.data + (", distilled" if e.distilled else ""))
            for e in entries]
    header = ("name", "source", "variant", "px", "classes", "top-1", "data")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    right = {3, 4, 5}
    fmt = lambda r: "  ".join(c.rjust(w) if i in right else c.ljust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    return [fmt(header), *[fmt(r) for r in rows]]


def run(args) -> int:
    if args.pretrained is not None:
        from ..errors import UsageError

        lines = pretrained_table(args.pretrained or None)
        if len(lines) == 1:
            raise UsageError(f"no pre-trained checkpoint matches {args.pretrained!r} (vitkit models --pretrained "
                             "lists them all)")
        print("\n".join(lines))
        print(f"({len(lines) - 1} checkpoints; top-1 in % on ImageNet-1k val as their authors report it, - where they "
              "state none; load one with vitkit.load(NAME), fetch ahead with vitkit download NAME)")
        return 0
    rows = model_table(args.image_size, args.num_classes)
    print(f"{'model':<14} {'width':>5} {'depth':>5} {'heads':>5} {'mlp':>5} {'patch':>5} {'tokens':>6} "
          f"{'params':>13} {'GFLOPs':>8}")
    for r in rows:
        print(f"{r['name']:<14} {r['width']:>5} {r['depth']:>5} {r['heads']:>5} {r['mlp']:>5} {r['patch']:>5} "
              f"{r['tokens']:>6} {r['params']:>13,} {r['gflops']:>8.1f}")
    print(f"(at {args.image_size}x{args.image_size} px and {args.num_classes} classes; patch is the effective "
          "patch size in pixels)")
    return 0
