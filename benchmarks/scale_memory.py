"""Peak memory per rank of a training step with DDP against FSDP2 (`vitkit.training.parallel`), on the CPU.

    torchrun --standalone --nproc-per-node 2 benchmarks/scale_memory.py --model ViT-L/16 --parallel fsdp

Each rank builds the model, wraps it, builds AdamW and runs a few steps on random 224-px images. A thread samples
the process's resident set (VmRSS) every 5 ms from just before the optimizer is built; rank 0 prints one JSON line
with every rank's baseline (the model wrapped, before the optimizer) and peak over the steps, in MiB.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vitkit.models import create_model  # noqa: E402
from vitkit.training import distributed  # noqa: E402
from vitkit.training.parallel import ParallelConfig, wrap_model  # noqa: E402


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class PeakRSS(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.running = rss_mib(), True

    def run(self):
        while self.running:
            self.peak = max(self.peak, rss_mib())
            time.sleep(0.005)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="ViT-L/16")
    p.add_argument("--parallel", default="fsdp", choices=["ddp", "fsdp"])
    p.add_argument("--batch", type=int, default=2, help="images per rank per step")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--checkpoint-blocks", action="store_true")
    args = p.parse_args()
    info = distributed.setup("cpu")
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=1000)
    parameters = sum(p.numel() for p in model.parameters())
    train_model = wrap_model(model, ParallelConfig(args.parallel, checkpoint_blocks=args.checkpoint_blocks), info)
    import gc

    gc.collect()
    baseline = rss_mib()
    sampler = PeakRSS()
    sampler.start()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    started = time.time()
    for step in range(args.steps):
        images = torch.randn(args.batch, 3, 224, 224)
        labels = torch.randint(0, 1000, (args.batch,))
        F.cross_entropy(train_model(images), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.time() - started
    sampler.running = False
    sampler.join()
    found = torch.tensor([baseline, sampler.peak], dtype=torch.float64)
    gathered = [torch.zeros_like(found) for _ in range(info.world_size)]
    if info.enabled:
        torch.distributed.all_gather(gathered, found)
    else:
        gathered = [found]
    if info.is_main:
        print(json.dumps({"model": args.model, "parameters": parameters, "parallel": args.parallel,
                          "ranks": info.world_size, "batch_per_rank": args.batch, "steps": args.steps,
                          "checkpoint_blocks": args.checkpoint_blocks, "seconds": round(seconds, 1),
                          "baseline_mib": [round(float(g[0])) for g in gathered],
                          "peak_mib": [round(float(g[1])) for g in gathered]}))
    distributed.teardown(info)


if __name__ == "__main__":
    main()
