"""`vitkit export MODEL -o model.onnx`: an ONNX file (checked with onnxruntime) or a torch.export program."""

from __future__ import annotations

from . import _args

ORDER = 55
TOLERANCE = 1e-4  # relative error the onnxruntime check accepts


def register(sub) -> None:
    p = sub.add_parser(
        "export", help="export a checkpoint to ONNX or torch.export",
        description="Export a model, any checkpoint format vitkit reads, with dynamic batch size and (learned or "
        "no position embeddings) dynamic image size. ONNX files are run with onnxruntime at several batch and "
        f"image sizes and compared with PyTorch; a relative error above {TOLERANCE:g} fails the command and "
        "writes nothing. The format is the output's suffix (.onnx or .pt2); an existing file is replaced only with "
        "--force, and missing parent folders are not created.")
    _args.add_model(p)
    _args.add_output(p, "the file to write, .onnx or .pt2 (default: beside the model, its name with the format's "
                     "suffix; in the current folder for a pre-trained name)")
    p.add_argument("--format", choices=("onnx", "pt2"),
                   help="onnx (default) or pt2 (a torch.export program: torch.export.load(path).module()); "
                   "with -o, the suffix decides and a contradicting --format is refused")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.add_argument("--static-batch", action="store_true", help="fix the batch size to 2 instead of dynamic")
    p.add_argument("--static-size", action="store_true", help="fix the image size to the model's")
    p.add_argument("--opset", type=_opset, metavar="N", help=f"ONNX opset, {OPSETS.text()} (default: the exporter's)")
    p.add_argument("--no-check", dest="check", action="store_false", help="skip the onnxruntime check")
    p.add_argument("--int8", choices=("static", "dynamic"),
                   help="ONNX only: quantise the checked float32 file with onnxruntime: static (QDQ, activations "
                   "calibrated on --calibration images; OpenVINO runs it as int8) or dynamic (int8 weights, activations "
                   "measured per call). Which is faster depends on the CPU and the batch: "
                   "README, Speed")
    p.add_argument("--calibration", metavar="DATA", help="with --int8 static: images to calibrate on (any data "
                   "`vitkit train --data` takes; drawn from its training split)")
    p.add_argument("--calibration-images", type=_args.positive_int, default=256, metavar="N",
                   help="with --int8 static: images drawn, seeded (default 256)")
    _args.add_checkpoint_hints(p)
    _args.add_json(p, "print what was written (and the onnxruntime checks) as JSON on stdout")
    _args.add_runtime(p, device=False, progress=False)
    p.set_defaults(func=run)


OPSETS = _args.Range(18, 23, integer=True)  # torch.onnx's dynamo exporter: 18 and up (torch 2.14 writes up to 23)
_opset = _args.number(int, OPSETS)


def run(args) -> int:
    from pathlib import Path

    from .. import load
    from ..export import export_onnx, save_program, source_sha256
    from ..hub.resolve import load_source, resolve_source
    from ..errors import UsageError
    from ._outputs import check_file_target, check_source, export_format

    check_source(args.model)
    if args.int8 and (args.format == "pt2" or (args.output and str(args.output).lower().endswith(".pt2"))):
        raise UsageError("--int8 quantises ONNX files; a .pt2 program is float32")
    if (args.int8 == "static") != (args.calibration is not None):
        raise UsageError("--int8 static needs --calibration DATA (images to calibrate on), and --calibration "
                         "belongs to --int8 static")
    if args.output:
        output = Path(args.output)
        fmt = export_format(output, args.format)
    else:
        fmt = args.format or "onnx"
        output = default_output(args.model, fmt)
    check_file_target(output, args.force)
    source, hints = load_source(args.model, _args.checkpoint_hints(args))
    model = load(source, **hints)
    check_file_target(output, args.force)  # again: loading (a download, say) takes time
    dynamic = dict(dynamic_batch=not args.static_batch, dynamic_image_size=not args.static_size,
                   source_sha256=source_sha256(resolve_source(source)[0]))  # a name or URI: its cached file
    if fmt == "onnx" and args.int8:
        result = _export_int8(model, output, args, dynamic)
    elif fmt == "onnx":
        result = export_onnx(model, output, opset=args.opset, check=args.check, tolerance=TOLERANCE, **dynamic)
    else:
        result = save_program(model, output, **dynamic)
    c = model.config
    if args.json:
        import json

        print(json.dumps({"model": str(args.model), **result}, indent=2))
    say = _args.status(args)
    sizes = "dynamic" if dynamic["dynamic_image_size"] else "x".join(map(str, c.image_size))
    say(f"wrote {result['path']} ({fmt}, {result['metadata']['vitkit.precision']}): input images (batch: "
        f"{'dynamic' if dynamic['dynamic_batch'] else 2}, {c.in_channels}, size: {sizes}), output logits")
    say(f"  metadata: {len(model.class_names or [])} class names, preprocessing, config, vitkit "
        f"{result['metadata']['vitkit.version']}, source SHA-256 {result['metadata']['vitkit.source_sha256'][:16]}...")
    for check in result["checks"]:  # all within TOLERANCE: export_onnx writes nothing otherwise
        say(f"  onnxruntime vs PyTorch at {tuple(check['shape'])}: relative error {check['rel_err']:.1e}, "
            f"max |diff| {check['max_abs_diff']:.1e}")
    if "int8_check" in result:
        check = result["int8_check"]
        say(f"  int8 file vs PyTorch float32 on {check['images']}: relative error {check['rel_err']:.1e}, top-1 "
            f"agreement {100 * check['top1_agreement']:.0f}%")
    return 0


def _export_int8(model, output, args, dynamic: dict) -> dict:
    """The float32 ONNX file (checked as usual), then quantised onto `output`; the int8 file's own agreement with
    PyTorch is reported, not enforced (int8 differs by design)."""
    import tempfile
    from pathlib import Path

    from ..export import export_onnx
    from ..quantize import calibration_batches, quantize_onnx_dynamic, quantize_onnx_static

    calibration = None
    if args.int8 == "static":
        calibration = calibration_batches(args.calibration, model.preprocessing, args.calibration_images,
                                          log=lambda m: None)
    with tempfile.TemporaryDirectory(prefix="vitkit-export-") as folder:
        fp32 = Path(folder) / "fp32.onnx"
        result = export_onnx(model, fp32, opset=args.opset, check=args.check, tolerance=TOLERANCE, **dynamic)
        if calibration is not None:
            quantize_onnx_static(fp32, output, calibration)
        else:
            quantize_onnx_dynamic(fp32, output)
    from ..export import load_exported
    from ..models.fast import plain_path

    exported = load_exported(output)
    result.update(path=str(output), metadata=exported.metadata)
    if args.check:
        import torch

        c = model.config
        images = calibration[0] if calibration else torch.randn(
            2, c.in_channels, *c.image_size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad(), plain_path():
            want = model.float()(images)
        got = exported(images)
        result["int8_check"] = {"images": f"{len(images)} {'calibration' if calibration else 'random'} images",
                                "rel_err": float((got - want).norm() / want.norm()),
                                "top1_agreement": float((got.argmax(1) == want.argmax(1)).float().mean())}
    return result


def default_output(source: str, fmt: str):
    """Beside a local checkpoint (file or folder), its name with the format's suffix; for a pre-trained name or a
    URI, its last part in the current folder."""
    from pathlib import Path

    path = Path(source)
    if path.exists():
        if path.name in ("", ".", ".."):
            path = path.resolve()
        return path.with_name(path.stem + "." + fmt)
    name = str(source).rstrip("/").replace(":", "/").split("/")[-1].split("@")[0] or "model"
    if Path(name).suffix.lower() in (".npz", ".safetensors", ".pth", ".pt", ".bin"):  # a URI's file name
        name = Path(name).stem
    return Path(name + "." + fmt)
