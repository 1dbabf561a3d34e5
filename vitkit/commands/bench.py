"""`vitkit bench`: vitkit against timm, torchvision and transformers, same weights, same run; table and JSON."""

from __future__ import annotations

import json

ORDER = 60


def _parse_override(text: str):
    if "=" not in text:
        from ..errors import UsageError

        raise UsageError(f"--set expects KEY=VALUE (a ViTConfig field), got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def register(sub) -> None:
    from ..bench import ALL_PEERS, COMPILE_MODES, OPTIMIZERS, PEERS, PRECISIONS, TASKS
    from . import _args

    p = sub.add_parser(
        "bench", help="speed against timm, torchvision and transformers",
        description="Inference throughput, batch-1 latency and training-step throughput of vitkit and its peers "
        "with the same architecture and weights, alternating between them after warm-up; medians, ratios to "
        "vitkit, GFLOP/s against the machine's measured matrix-product ceilings, peak memory. Prints a table, "
        "writes JSON with --json.")
    p.add_argument("--model", default="ViT-B/16", help="variant (default ViT-B/16)")
    p.add_argument("--image-size", type=_args.positive_int, help="resolution (default: the variant's, 224)")
    p.add_argument("--num-classes", type=_args.count, help="head size (default 1000)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="any ViTConfig field, e.g. --set depth=9 (repeatable)")
    p.add_argument("--checkpoint", metavar="MODEL", help="load these weights instead of a seeded random "
                   "initialisation: " + _args.MODEL_HELP)
    p.add_argument("--batch-size", type=_args.positive_int, default=8, help="inference and training batch (default 8)")
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=PRECISIONS,
                   help="fp32, bf16 (vitkit: weights cast once; peers: autocast and bf16 weights), int8 (torchao)")
    p.add_argument("--tasks", nargs="+", default=["infer", "latency"], choices=TASKS,
                   help="infer (throughput), latency (batch 1), train (a step with AdamW); default infer latency")
    p.add_argument("--peers", nargs="*", default=list(PEERS), choices=ALL_PEERS,
                   help="default: timm torchvision hf, those installed; ort (ONNX Runtime) and openvino run "
                   "vitkit's ONNX export in fp32, bf16 where the CPU has it, int8 dynamic and static")
    p.add_argument("--repeats", type=_args.positive_int, default=5, help="timed rounds (default 5)")
    p.add_argument("--warmup", type=_args.count, default=2, help="warm-up calls per implementation (default 2)")
    p.add_argument("--compile", action="store_true", help="also time vitkit under torch.compile (and, for int8, "
                   "vitkit's static int8 by PT2E, which needs inductor)")
    p.add_argument("--compile-mode", choices=COMPILE_MODES, help="torch.compile's mode for those rows (default: "
                   "its default); max-autotune on the CPU also tries inductor's C++ matrix-product kernels")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw",
                   help="the training rows' optimizer: adamw (default), or muon: vitkit's Muon on the blocks' weight "
                   "matrices and AdamW on the rest, for every implementation (as the CIFAR recipes train)")
    p.add_argument("--no-plain", dest="plain", action="store_false", help="leave out vitkit's plain-path rows")
    p.add_argument("--loss-steps", type=_args.count, default=20,
                   help="training: compare loss trajectories over this many steps (0 skips; default 20)")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory measurement")
    p.add_argument("--ceiling-size", type=_args.positive_int,
                   help="side of the ceiling's square matrix product (default 2048 on "
                   "the CPU, 4096 on a GPU)")
    _args.add_output(p, "write the full report (every timing) to this JSON file")
    p.add_argument("--json", nargs="?", const=True, metavar="FILE", help="print the full report as JSON on stdout "
                   "instead of the table (--json FILE, the older spelling of -o FILE, writes it there)")
    _args.add_runtime(p, progress=False)
    p.set_defaults(func=run)


def run(args) -> int:
    from . import _args

    import sys

    from pathlib import Path

    from ..bench import BenchSettings, format_report, run_benchmark, write_report
    from ..errors import UsageError
    from ..hub.resolve import model_source
    from ..training.distributed import pick_device
    from ._outputs import check_output_file

    if isinstance(args.json, str):  # --json FILE: the older spelling of -o FILE
        if args.output:
            raise UsageError(f"the report file is given twice (--json {args.json} and -o {args.output}); use -o")
        args.output, args.json = args.json, False
    if args.output:
        check_output_file(Path(args.output))  # before minutes of timing, not after
    checkpoint = None
    if args.checkpoint:
        from ._outputs import check_source

        check_source(args.checkpoint)
        checkpoint = model_source(args.checkpoint)  # a run folder: its final model
    settings = BenchSettings(
        model=args.model, image_size=args.image_size, num_classes=args.num_classes,
        overrides=dict(_parse_override(o) for o in args.overrides), checkpoint=checkpoint,
        batch_size=args.batch_size, precisions=tuple(args.precision), tasks=tuple(args.tasks),
        peers=tuple(args.peers), repeats=args.repeats, warmup=args.warmup, threads=args.threads or None,
        device=str(pick_device(args.device)), compile=args.compile, compile_mode=args.compile_mode,
        optimizer=args.optimizer, plain=args.plain, loss_steps=args.loss_steps, memory=args.memory,
        ceiling_size=args.ceiling_size)
    quiet = args.quiet
    report = run_benchmark(settings, log=lambda m: quiet or print(f"[bench] {m}", file=sys.stderr, flush=True))
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(format_report(report))
    if args.output:
        write_report(report, args.output)
        _args.status(args)(f"wrote {args.output}")
    return 0
