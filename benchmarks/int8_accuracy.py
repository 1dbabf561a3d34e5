"""Accuracy of int8 against float32 for one trained run: vitkit (dynamic torchao, static PT2E) and vitkit's ONNX
export run by ONNX Runtime (fp32, dynamic, static QDQ) and OpenVINO (fp32, the static QDQ file), on the run's own
evaluation split (its hold-out), with static quantisation calibrated on images of the run's training split.

    python benchmarks/int8_accuracy.py runs/cifar10-fast --calibration 256 --json int8.json

Prints one row per implementation: top-1, top-5, agreement of top-1 with vitkit float32, time over the split.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a vitkit run folder (its config.json gives the data and the split)")
    parser.add_argument("--calibration", type=int, default=256, help="calibration images (default 256)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch, onnxruntime and OpenVINO threads")
    parser.add_argument("--limit", type=int, help="evaluate only the first N images of the split (a smoke run)")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)

    import vitkit
    from vitkit.bench_runtimes import openvino_model, ort_session
    from vitkit.data.sources import open_data
    from vitkit.eval.evaluate import eval_batches
    from vitkit.export import export_onnx
    from vitkit.hub.resolve import model_source
    from vitkit.models.fast import quantize_int8
    from vitkit.quantize import draw_calibration, quantize_onnx_dynamic, quantize_onnx_static, quantize_pt2e
    from vitkit.training.trainer import load_run_config

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    run = Path(args.run)
    config = load_run_config(run)
    model = vitkit.load(model_source(run))  # the final model, or the newest checkpoint of an unfinished run
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    splits = open_data(str(config.data), want_train=True, want_val=True, val_split=config.val_split,
                       val_fraction=config.val_fraction, val_per_class=config.val_per_class,
                       split_seed=config.split_seed, log=say, progress=False)
    say(f"{run}: evaluating on {splits.val_name} ({len(splits.val)} images), calibrating on {args.calibration} "
        f"of {len(splits.train)} training images")
    calibration = draw_calibration(splits.train, model.preprocessing, args.calibration, 32, seed=0)
    batches = [(x, y) for x, y in eval_batches(model, splits.val, args.batch_size, 0)]
    if args.limit:
        kept, total = [], 0
        for x, y in batches:
            if total >= args.limit:
                break
            kept.append((x[:args.limit - total], y[:args.limit - total]))
            total += len(kept[-1][0])
        batches = kept

    with tempfile.TemporaryDirectory(prefix="vitkit-int8-") as folder:
        folder = Path(folder)
        export_onnx(model, folder / "fp32.onnx", dynamic_image_size=False, check=False)
        quantize_onnx_dynamic(folder / "fp32.onnx", folder / "dynamic.onnx")
        quantize_onnx_static(folder / "fp32.onnx", folder / "static.onnx", calibration)

        def torch_fn(module):
            def run(x):
                with torch.inference_mode():
                    return module(x).float()
            return run

        def ort_fn(path):
            session = ort_session(path, threads)
            return lambda x: torch.from_numpy(session.run(None, {"images": x.numpy()})[0])

        def openvino_fn(path):
            compiled = openvino_model(path, threads)
            return lambda x: torch.from_numpy(compiled({0: x.numpy()})[compiled.output(0)].copy())

        implementations = {
            "vitkit fp32": torch_fn(model),
            "vitkit int8 dynamic (torchao)": torch_fn(quantize_int8(model)),
            "vitkit int8 static (PT2E, x86 Inductor quantizer)": torch_fn(quantize_pt2e(model, calibration)),
            "onnxruntime fp32": ort_fn(folder / "fp32.onnx"),
            "onnxruntime int8 dynamic (quantize_dynamic)": ort_fn(folder / "dynamic.onnx"),
            "onnxruntime int8 static QDQ (quantize_static)": ort_fn(folder / "static.onnx"),
            "openvino fp32": openvino_fn(folder / "fp32.onnx"),
            "openvino int8 static (the QDQ file)": openvino_fn(folder / "static.onnx"),
        }
        reference = None
        rows = []
        for name, fn in implementations.items():
            say(f"evaluating {name}")
            top1 = top5 = agree = count = 0
            predictions = []
            start = time.perf_counter()
            for x, y in batches:
                logits = fn(x)
                top = logits.topk(5, dim=1).indices
                top1 += int((top[:, 0] == y).sum())
                top5 += int((top == y[:, None]).any(dim=1).sum())
                predictions.append(top[:, 0])
                count += len(y)
            seconds = time.perf_counter() - start
            predictions = torch.cat(predictions)
            if reference is None:
                reference = predictions
            agree = float((predictions == reference).float().mean())
            rows.append({"implementation": name, "images": count, "top1": top1 / count, "top5": top5 / count,
                         "top1_agreement_with_vitkit_fp32": agree, "seconds": seconds})
    print(f"{run} on {splits.val_name} ({rows[0]['images']} images), calibration {args.calibration} training "
          f"images, {threads} thread(s)")
    print(f"{'implementation':<52} {'top-1':>7} {'top-5':>7} {'agree':>7} {'seconds':>8}")
    for r in rows:
        print(f"{r['implementation']:<52} {100 * r['top1']:>6.2f}% {100 * r['top5']:>6.2f}% "
              f"{100 * r['top1_agreement_with_vitkit_fp32']:>6.2f}% {r['seconds']:>8.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"run": str(run), "split": splits.val_name, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
