"""How close can a training step come to the machine's matrix-product ceiling? Every matrix product of one bf16
training step (vitkit's fast path, eager), timed where it runs and again alone, against the step itself.

    python benchmarks/train_step_products.py --model ViT-Ti/4 --image-size 32 --num-classes 10 \\
        --set width=128 --set depth=6 --set num_heads=4 --set mlp_dim=384 --set pool=gap --batch-size 256 \\
        -o benchmarks/results/bench/cifar10-vit-train-products-epyc.json

The products (mm, addmm, bmm, baddbmm, convolutions and their backward) are recorded with a dispatch mode over one
step, with their operands' shapes, strides and dtypes: the backward's products included, as autograd calls them.
Each distinct product is then replayed alone on random operands of the same layout. `--repeats` rounds each time
the step, the ceiling's product and every distinct product once (medians over the rounds). The step's FLOPs are
counted as `vitkit bench` counts them (3 forwards of `vitkit.count_flops`); the ceiling is its 2048^3 bf16
product (the faster backend).

  - products alone: the step's time if everything else took none; its fraction of the ceiling is the most the
    step can reach with these products as PyTorch runs them (fusing the rest away, at best).
  - products in the step: their time where they run (caches cold from the elementwise work between them).
  - budget at a target: what is left for everything else (norms, GELU, softmax, residuals, casts, the optimizer)
    if the step is to reach the target fraction with the products at their stand-alone speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from vitkit.bench import _train_step, ceiling_products, matmul_ceiling
from vitkit.models import count_flops, create_model

aten = torch.ops.aten
PRODUCTS = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default,
            aten.convolution.default, aten.convolution_backward.default}


class _Layout(tuple):
    """A tensor operand's (shape, stride, dtype)."""


def _layout(x):
    return _Layout((tuple(x.shape), tuple(x.stride()), x.dtype)) if isinstance(x, torch.Tensor) else x


def _operand(x):
    if not isinstance(x, _Layout):
        return x
    shape, stride, dtype = x
    size = 1 + sum((n - 1) * s for n, s in zip(shape, stride)) if all(shape) else 0
    return torch.randn(size, dtype=torch.float32).to(dtype).as_strided(shape, stride)


def _product_flops(func, args) -> int:
    """2 x multiply-adds of the mm family (0 for convolutions: their time is counted, their FLOPs are in the
    step's total)."""
    def dims(i):
        return args[i][0]
    if func is aten.mm.default:
        (m, k), (_, n) = dims(0), dims(1)
        return 2 * m * k * n
    if func is aten.addmm.default:
        (m, k), (_, n) = dims(1), dims(2)
        return 2 * m * k * n
    if func is aten.bmm.default:
        (b, m, k), (_, _, n) = dims(0), dims(1)
        return 2 * b * m * k * n
    if func is aten.baddbmm.default:
        (b, m, k), (_, _, n) = dims(1), dims(2)
        return 2 * b * m * k * n
    return 0


class ProductRecorder(TorchDispatchMode):
    """Records each matrix product's operator, operand layouts and its time where it runs."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in PRODUCTS:
            return func(*args, **kwargs)
        start = time.perf_counter()
        out = func(*args, **kwargs)
        self.calls.append((func, tree_map(_layout, args), tree_map(_layout, kwargs), time.perf_counter() - start))
        return out


def _key(func, args, kwargs) -> str:
    return repr((str(func), args, sorted(kwargs.items())))


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(model: torch.nn.Module, batch_size: int, repeats: int, targets=(0.7,)) -> dict:
    """Record the step's products, then `repeats` rounds, each timing the step, the ceiling's product and every
    distinct product alone once (in alternating order); medians over the rounds, so that a slow spell of the
    machine slows the step, the products and the ceiling alike."""
    image_size = model.config.image_size
    images = torch.randn(batch_size, 3, *image_size)
    labels = torch.randint(0, model.config.num_classes, (batch_size,))
    step = _train_step(model, lambda m, x: m(x), images, labels, "bf16", torch.device("cpu"), fused=True)
    flops = 3 * count_flops(model.config, batch_size)
    ceiling = matmul_ceiling(torch.bfloat16, torch.device("cpu"), 3)  # which backend is the ceiling's
    products, ceiling_flops = ceiling_products(torch.bfloat16, torch.device("cpu"))

    step()
    in_step = []
    for _ in range(3):
        with ProductRecorder() as recorder:
            step()
        in_step.append(recorder.calls)
    calls = in_step[-1]
    counts = Counter(_key(f, a, k) for f, a, k, _ in calls)
    groups: dict[str, dict] = {}
    runs = {"step": step, "ceiling": products[ceiling["backend"]]}
    for func, args, kwargs, _ in calls:
        key = _key(func, args, kwargs)
        if key not in groups:
            operands, kw = tree_map(_operand, args), tree_map(_operand, kwargs)
            runs[key] = (lambda f, a, k: lambda: f(*a, **k))(func, operands, kw)
            groups[key] = {"op": str(func).replace("aten.", "").replace(".default", ""),
                           "operands": [list(a[0]) for a in args if isinstance(a, _Layout)],
                           "dtype": str(next(a[2] for a in args if isinstance(a, _Layout))).replace("torch.", ""),
                           "calls": counts[key], "flops": _product_flops(func, args), "in_step_runs": []}
    for record in in_step:
        for group in groups.values():
            group["in_step_runs"].append(0.0)
        for func, args, kwargs, seconds in record:
            groups[_key(func, args, kwargs)]["in_step_runs"][-1] += seconds

    times = {name: [] for name in runs}
    for name, fn in runs.items():  # warm-up
        with torch.set_grad_enabled(name == "step"):
            fn()
    for r in range(repeats):
        for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            if name == "step":
                times[name].append(_timed(runs[name]))
            else:
                with torch.no_grad():
                    times[name].append(_timed(runs[name]))
    step_seconds = statistics.median(times["step"])
    ceiling_gflops = ceiling_flops / statistics.median(times["ceiling"]) / 1e9
    rows = []
    for key, g in groups.items():
        g["in_step_s"] = statistics.median(g.pop("in_step_runs"))
        g["alone_s"] = statistics.median(times[key])
        g["alone_total_s"] = g["alone_s"] * g["calls"]
        g["alone_gflops"] = g["flops"] / g["alone_s"] / 1e9 if g["flops"] else None
        rows.append(g)
    rows.sort(key=lambda g: -g["alone_total_s"])
    alone = sum(g["alone_total_s"] for g in rows)
    where_run = sum(g["in_step_s"] for g in rows)

    def fraction(seconds):
        return flops / seconds / (ceiling_gflops * 1e9)

    return {
        "flops_per_step": flops, "ceiling": {**ceiling, "gflops_in_the_rounds": ceiling_gflops},
        "step_s": step_seconds, "step_fraction": fraction(step_seconds),
        "products_alone_s": alone, "products_alone_fraction": fraction(alone),
        "products_in_step_s": where_run, "products_in_step_fraction": fraction(where_run),
        "products_share_of_step": where_run / step_seconds,
        "budget_for_the_rest_s": {f"{t:.0%}": flops / (t * ceiling_gflops * 1e9) - alone for t in targets},
        "rest_now_s": step_seconds - where_run, "products": rows, "repeats": repeats,
    }


def format_report(r: dict) -> str:
    ms = 1e3
    lines = [f"one bf16 training step: {r['step_s'] * ms:.0f} ms, {r['flops_per_step'] / 1e9:.1f} GFLOP, "
             f"{r['step_fraction']:.0%} of the ceiling ({r['ceiling']['gflops_in_the_rounds']:.0f} GFLOP/s, 2048^3 bf16, "
             "in the same rounds)",
             f"its matrix products where they run: {r['products_in_step_s'] * ms:.0f} ms "
             f"({r['products_share_of_step']:.0%} of the step); the rest: {r['rest_now_s'] * ms:.0f} ms",
             f"the same products alone: {r['products_alone_s'] * ms:.0f} ms, so at most "
             f"{r['products_alone_fraction']:.0%} of the ceiling if everything else took no time"]
    for target, budget in r["budget_for_the_rest_s"].items():
        lines.append(f"to reach {target}: {budget * ms:.0f} ms left for everything else (now {r['rest_now_s'] * ms:.0f}"
                     " ms)" if budget > 0 else f"{target} is out of reach: the products alone take longer")
    lines.append(f"\n{'op':10} {'calls':>5} {'alone ms':>9} {'in step':>8} {'GFLOP/s':>8}  operands")
    for g in r["products"]:
        gf = f"{g['alone_gflops']:.0f}" if g["alone_gflops"] else "-"
        lines.append(f"{g['op']:10} {g['calls']:5d} {g['alone_total_s'] * ms:9.1f} {g['in_step_s'] * ms:8.1f} "
                     f"{gf:>8}  {' x '.join(str(s) for s in g['operands'])} {g['dtype']}")
    return "\n".join(lines)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="ViT-Ti/4")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a ViTConfig field (a JSON value or text)")
    p.add_argument("--batch-size", type=_positive, default=256)
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: PyTorch's default)")
    p.add_argument("--repeats", type=_positive, default=9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", type=Path, help="write the report as JSON here")
    args = p.parse_args(argv)
    if args.output and not args.output.resolve().parent.is_dir():  # found out before the minutes of measuring
        p.error(f"-o {args.output}: no folder {args.output.parent}")
    overrides = {}
    for text in args.overrides:
        if "=" not in text:
            p.error(f"--set expects KEY=VALUE, got {text!r}")
        key, value = text.split("=", 1)
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    try:
        model = create_model(args.model, image_size=args.image_size, num_classes=args.num_classes, **overrides)
    except (TypeError, ValueError) as e:  # an unknown variant or field, a shape that does not fit
        p.error(f"--model {args.model} with {overrides or 'no overrides'}: {e}")
    for p_ in model.parameters():  # non-zero weights everywhere (the head starts at zero)
        if not p_.any():
            torch.nn.init.normal_(p_, std=0.02)
    load_before = os.getloadavg()
    report = measure(model, args.batch_size, args.repeats)
    report["load_average_before_after"] = [load_before, os.getloadavg()]  # (1, 5, 15 minutes): was the machine quiet?
    report["settings"] = {**vars(args), "output": str(args.output) if args.output else None,
                          "threads_used": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
                          "torch": torch.__version__, "overrides": overrides}
    print(format_report(report))
    if args.output:
        args.output.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
