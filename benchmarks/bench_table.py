"""A `vitkit bench --json` report as a Markdown table (for the README): images/s, vitkit's speed-up over each row
(median over rounds of the row's time / vitkit's in the same round), GFLOP/s as a share of the matrix-product
ceiling of its precision, and the largest deviation of the logits from vitkit's float32 plain path.

    python benchmarks/bench_table.py bench.json [more.json ...]
"""

from __future__ import annotations

import json
import sys

TASKS = {"infer": "inference", "latency": "batch-1 latency", "train": "training step"}


def rows(report: dict) -> list[str]:
    s = report["settings"]
    c = report["config"]
    model = f"{s['model']} (width {c['width']}, depth {c['depth']}, {c['num_heads']} heads) at {c['image_size'][0]} px"
    out = []
    for r in report["results"]:
        batch = 1 if r["task"] == "latency" else s["batch_size"]
        ceiling = f"{100 * r['fraction_of_ceiling']:.0f}%" if r.get("fraction_of_ceiling") else "-"
        err = f"{r['rel_err']:.0e}" if r.get("rel_err") is not None else "-"
        out.append(f"| {TASKS[r['task']]}, {model}, batch {batch} | {r['implementation']} | "
                   f"{r['regime']} | {r['images_per_s']:.1f} | {r['vitkit_speedup_paired']:.2f}x | {ceiling} | "
                   f"{err} |")
    return out


def main(paths: list[str]) -> None:
    print("| task | implementation | regime | img/s | vitkit faster by | % of ceiling | rel. err. |")
    print("|---|---|---|---:|---:|---:|---:|")
    for path in paths:
        with open(path, encoding="utf-8") as f:
            print("\n".join(rows(json.load(f))))


if __name__ == "__main__":
    main(sys.argv[1:])
