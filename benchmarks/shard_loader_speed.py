"""Images per second of the training loaders on one image set: the ImageFolder path (files decoded in the loader
processes) against the WebDataset shard stream (tar shards read and decoded in the loader processes).

    python benchmarks/shard_loader_speed.py CIFAR_TREE SHARDS --workers 2 --batches 200

CIFAR_TREE is an ImageFolder tree (e.g. the CIFAR-10 JPEG tree, train/<class>/<image>); SHARDS the same tree
packed by `vitkit data pack`. Both use the same augmentation (Inception crop and flip to the size given) and global
batch; the time to open the set (scanning a folder decodes every file once) is reported apart from the loop.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vitkit.configs import Preprocessing  # noqa: E402
from vitkit.data import StepBatchSampler, TransformedImages, open_data, train_loader, train_transform  # noqa: E402
from vitkit.data.shards import ShardBatches, ShardStream, open_shards  # noqa: E402


def timed(batches, count: int, batch: int) -> float:
    iterator = iter(batches)
    next(iterator)  # the loader processes started and their queues filled once
    started = time.perf_counter()
    for _ in range(count):
        next(iterator)
    return count * batch / (time.perf_counter() - started)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("tree")
    p.add_argument("shards")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--shuffle-buffer", type=int, default=1000)
    args = p.parse_args()
    transform = train_transform(Preprocessing(image_size=(args.image_size, args.image_size)), crop_min_area=0.5)
    results = {"workers": args.workers, "batch": args.batch, "batches": args.batches, "image_size": args.image_size}

    started = time.perf_counter()
    splits = open_data(args.tree, val_split="none", cache="no", log=lambda m: None, progress=False)
    results["folder_open_s"] = round(time.perf_counter() - started, 1)
    sampler = StepBatchSampler(len(splits.train), args.batch, 1, 1, 0, 0, 0, args.batches + 1)
    loader = train_loader(TransformedImages(splits.train, transform), sampler, args.workers)
    results["folder_images_per_s"] = round(timed(loader, args.batches, args.batch))

    started = time.perf_counter()
    shards = open_shards(args.shards, log=lambda m: None)
    results["shards_open_s"] = round(time.perf_counter() - started, 1)
    stream = ShardStream(shards, transform, streams=args.streams, buffer=args.shuffle_buffer, seed=0)
    results["shards_images_per_s"] = round(timed(ShardBatches(stream, args.batch, args.workers), args.batches,
                                                 args.batch))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
