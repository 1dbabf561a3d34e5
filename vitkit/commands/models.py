"""`vitkit models`: the table of registered variants; `vitkit models --pretrained`: the catalog of published
checkpoints that `vitkit.load(NAME)` and every command taking a model accept by name."""

from __future__ import annotations

ORDER = 10


def register(sub) -> None:
    from . import _args

    p = sub.add_parser("models", help="list the model variants with parameters and GFLOPs",
                       description="List every registered variant: parameters at 1,000 classes and GFLOPs of one "
                       "forward at its default resolution (a multiply-add counts as 2 FLOPs).")
    p.add_argument("--image-size", type=_args.positive_int, default=224, help="resolution for the counts (default 224)")
    p.add_argument("--num-classes", type=_args.count, default=1000, help="head size for the counts (default 1000)")
    p.add_argument("names", nargs="*", metavar="MODEL", help="only these variants (any case; any ViT-<size>/<patch> "
                   "too, e.g. ViT-Ti/4); default: all registered")
    p.add_argument("--pretrained", nargs="?", const="", metavar="PATTERN",
                   help="list the published checkpoints instead (name, source, variant, resolution, classes, the "
                   "top-1 their authors report on ImageNet-1k val, data); PATTERN filters the names (\"tv-*\", b16)")
    _args.add_json(p, "print the table as JSON on stdout: one object per variant (or per checkpoint)")
    _args.add_runtime(p, device=False, threads=False, progress=False)
    p.set_defaults(func=run)


def model_table(image_size: int = 224, num_classes: int = 1000, names: list[str] | None = None,
                skipped: list[str] | None = None) -> list[dict]:
    """One row per variant (`names`, default all registered). A variant that cannot take `image_size` (not a
    multiple of its patch) is left out, and why is appended to `skipped` when given, else raised."""
    import torch

    from ..configs import list_models, variant_config
    from ..models import count_flops, count_parameters
    from ..models.vit import VisionTransformer

    rows = []
    for name in names or list_models():
        try:
            config = variant_config(name, image_size=image_size, num_classes=num_classes)
        except ValueError as e:
            if skipped is None or str(e).startswith("unknown model"):
                raise
            skipped.append(f"{name}: {e}")
            continue
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
    import json

    if args.pretrained is not None:
        from ..errors import UsageError

        lines = pretrained_table(args.pretrained or None)
        if len(lines) == 1:
            raise UsageError(f"no pre-trained checkpoint matches {args.pretrained!r} (vitkit models --pretrained "
                             "lists them all)")
        if args.json:
            import dataclasses

            from ..hub.catalog import list_pretrained

            print(json.dumps([dataclasses.asdict(e) for e in list_pretrained(args.pretrained or None)], indent=2,
                             default=str))
            return 0
        print("\n".join(lines))
        print(f"({len(lines) - 1} checkpoints; top-1 in % on ImageNet-1k val as their authors report it, - where they "
              "state none; load one with vitkit.load(NAME), fetch ahead with vitkit download NAME)")
        return 0
    from ..configs import variant_config

    names = [variant_config(n).name for n in args.names]  # the registered spelling; an unknown name fails here
    skipped: list[str] = []
    rows = model_table(args.image_size, args.num_classes, names, skipped)
    if not rows:
        from ..errors import UsageError

        raise UsageError(f"--image-size {args.image_size}: no variant asked for fits it ({'; '.join(skipped)})")
    if args.json:
        print(json.dumps({"image_size": args.image_size, "num_classes": args.num_classes, "models": rows,
                          "skipped": skipped}, indent=2))
        return 0
    print(f"{'model':<14} {'width':>5} {'depth':>5} {'heads':>5} {'mlp':>5} {'patch':>5} {'tokens':>6} "
          f"{'params':>13} {'GFLOPs':>8}")
    for r in rows:
        print(f"{r['name']:<14} {r['width']:>5} {r['depth']:>5} {r['heads']:>5} {r['mlp']:>5} {r['patch']:>5} "
              f"{r['tokens']:>6} {r['params']:>13,} {r['gflops']:>8.1f}")
    print(f"(at {args.image_size}x{args.image_size} px and {args.num_classes} classes; patch is the effective "
          "patch size in pixels)")
    for line in skipped:
        print(f"not at {args.image_size} px: {line}")
    if not args.names:
        print("(any ViT-<Ti|S|B|L|H>/<patch> is accepted as well, e.g. ViT-Ti/4 in the digits recipe: vitkit models "
              "ViT-Ti/4 shows it; names in any case)")
    return 0
