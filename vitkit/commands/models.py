"""`vitkit models`: the table of registered variants."""

from __future__ import annotations

ORDER = 10


def register(sub) -> None:
    p = sub.add_parser("models", help="list the model variants with parameters and GFLOPs",
                       description="List every registered variant: parameters at 1,000 classes and GFLOPs of one "
                       "forward at its default resolution (a multiply-add counts as 2 FLOPs).")
    p.add_argument("--image-size", type=int, default=224, help="resolution for the counts (default 224)")
    p.add_argument("--num-classes", type=int, default=1000, help="head size for the counts (default 1000)")
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


def run(args) -> int:
    rows = model_table(args.image_size, args.num_classes)
    print(f"{'model':<14} {'width':>5} {'depth':>5} {'heads':>5} {'mlp':>5} {'patch':>5} {'tokens':>6} "
          f"{'params':>13} {'GFLOPs':>8}")
    for r in rows:
        print(f"{r['name']:<14} {r['width']:>5} {r['depth']:>5} {r['heads']:>5} {r['mlp']:>5} {r['patch']:>5} "
              f"{r['tokens']:>6} {r['params']:>13,} {r['gflops']:>8.1f}")
    print(f"(at {args.image_size}x{args.image_size} px and {args.num_classes} classes; patch is the effective "
          "patch size in pixels)")
    return 0
