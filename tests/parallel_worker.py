"""A small training loop over `vitkit.training.parallel`, run by tests/test_parallel.py under torchrun (or alone).

    python parallel_worker.py OUT.json --mode fsdp --steps 4 [--save-at 2 --run-folder DIR] [--resume DIR/checkpoints/...]

Each step draws a global batch of random images seeded by the step; rank r takes its slice. The global mean loss
of every step is written to OUT.json by rank 0 (with the final full state dict's checksum).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vitkit.models import create_model  # noqa: E402
from vitkit.training import distributed  # noqa: E402
from vitkit.training.parallel import (ParallelConfig, full_state_dict, load_sharded_checkpoint,  # noqa: E402
                                      read_sharded_state, write_sharded_checkpoint, wrap_model)

TINY = dict(num_classes=5, image_size=8, patch_size=4, width=32, depth=2, num_heads=2, mlp_dim=64)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--mode", default="ddp")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--save-at", type=int, default=0)
    p.add_argument("--run-folder", default=None)
    p.add_argument("--resume", default=None)
    p.add_argument("--checkpoint-blocks", action="store_true")
    args = p.parse_args()

    torch.set_num_threads(1)
    info = distributed.setup("cpu")
    torch.manual_seed(0)
    model = create_model("ViT-Ti/4", **TINY)
    train_model = wrap_model(model, ParallelConfig(args.mode, checkpoint_blocks=args.checkpoint_blocks), info)
    # SGD with momentum: its update is linear in the gradient, so weights compare tightly (Adam turns the rounding
    # noise of near-zero gradients, such as the key bias, into whole steps); the momentum is state to restore
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    start = 0
    if args.resume:
        load_sharded_checkpoint(args.resume, model, optimizer)
        start = int(read_sharded_state(args.resume)["step"])
    losses = []
    share = args.batch // info.world_size
    for step in range(start, args.steps):
        generator = torch.Generator().manual_seed(1000 + step)
        images = torch.randn(args.batch, 3, 8, 8, generator=generator)
        labels = torch.randint(0, 5, (args.batch,), generator=generator)
        mine = slice(info.rank * share, (info.rank + 1) * share)
        loss = F.cross_entropy(train_model(images[mine]), labels[mine])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        total = loss.detach().clone()
        distributed.all_reduce_sum([total], info)
        losses.append(float(total) / info.world_size)
        if args.save_at and step + 1 == args.save_at:
            write_sharded_checkpoint(args.run_folder, step + 1, model, optimizer, {"note": "test"}, info)
    state = full_state_dict(model, info)
    if info.is_main:
        Path(args.out).write_text(json.dumps({
            "losses": losses, "world_size": info.world_size,
            "weights": {k: v.double().sum().item() for k, v in state.items()}}))
    distributed.teardown(info)


if __name__ == "__main__":
    main()
