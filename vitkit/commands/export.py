"""`vitkit export CKPT --format onnx`: an ONNX file (checked with onnxruntime) or a torch.export program."""

from __future__ import annotations

ORDER = 55
TOLERANCE = 1e-4  # relative error the onnxruntime check accepts


def register(sub) -> None:
    p = sub.add_parser(
        "export", help="export a checkpoint to ONNX or torch.export",
        description="Export a model, any checkpoint format vitkit reads, with dynamic batch size and (learned or "
        "no position embeddings) dynamic image size. ONNX files are run with onnxruntime at several batch and "
        f"image sizes and compared with PyTorch; a relative error above {TOLERANCE:g} fails the command.")
    p.add_argument("checkpoint", help="checkpoint file or Hugging Face folder")
    p.add_argument("-o", "--output", help="file to write (default: the checkpoint's name with .onnx or .pt2)")
    p.add_argument("--format", choices=("onnx", "pt2"), default="onnx",
                   help="onnx (default) or pt2 (a torch.export program: torch.export.load(path).module())")
    p.add_argument("--static-batch", action="store_true", help="fix the batch size to 2 instead of dynamic")
    p.add_argument("--static-size", action="store_true", help="fix the image size to the model's")
    p.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    p.add_argument("--no-check", dest="check", action="store_false", help="skip the onnxruntime check")
    p.add_argument("--num-heads", type=int, help="heads, for timm files and bare HF weights that do not record them")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from .. import load
    from ..export import export_onnx, save_program

    model = load(args.checkpoint, num_heads=args.num_heads)
    source = Path(args.checkpoint)
    output = Path(args.output) if args.output else source.with_name(source.stem + "." + args.format)
    dynamic = dict(dynamic_batch=not args.static_batch, dynamic_image_size=not args.static_size)
    if args.format == "onnx":
        result = export_onnx(model, output, opset=args.opset, check=args.check, **dynamic)
    else:
        result = save_program(model, output, **dynamic)
    c = model.config
    sizes = "dynamic" if dynamic["dynamic_image_size"] else "x".join(map(str, c.image_size))
    print(f"wrote {result['path']} ({args.format}): input images (batch: "
          f"{'dynamic' if dynamic['dynamic_batch'] else 2}, {c.in_channels}, size: {sizes}), output logits")
    worst = 0.0
    for check in result["checks"]:
        worst = max(worst, check["rel_err"])
        print(f"  onnxruntime vs PyTorch at {tuple(check['shape'])}: relative error {check['rel_err']:.1e}, "
              f"max |diff| {check['max_abs_diff']:.1e}")
    if worst > TOLERANCE:
        raise ValueError(f"the exported model disagrees with PyTorch: relative error {worst:.1e} > {TOLERANCE:g}")
    return 0
