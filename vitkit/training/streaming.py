"""Training from WebDataset tar shards (`--data 'OUT/shard-{000000..000009}.tar'`, a folder of shards, or an
http(s):// or pipe: pattern): what the trainer needs from them, in the shape the in-memory and folder paths give.

Step s of a run takes the global positions s x batch_size ... (s + 1) x batch_size - 1 of the stream
(`vitkit.data.shards`), so a resumed run starts its stream at start_step x batch_size and draws what the
uninterrupted run would have drawn, on any number of ranks.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..data.shards import ShardBatches, ShardSet, ShardStream, is_shard_spec, open_shards, shard_eval_loader
from . import distributed

__all__ = ["is_shard_spec", "ShardData", "EvalBatches", "lockstep"]


class EvalBatches:
    """An evaluation loader over shards with a length (an estimate, for progress bars: the rank's samples over
    the batch size)."""

    def __init__(self, loader, length: int):
        self.loader, self.length = loader, length

    def __iter__(self):
        return iter(self.loader)

    def __len__(self) -> int:
        return self.length


class ShardData:
    """The shards of a run: classes, counts, the training batches of one rank and the evaluation batches."""

    def __init__(self, config, info: distributed.DistInfo, log: Callable[[str], None]):
        self.config, self.info, self.log = config, info, log
        self.shards: ShardSet = open_shards(config.data, log=log if info.is_main else (lambda m: None))
        self.classes = self.shards.classes
        self.train = self.shards
        self.val = self.shards.val if config.val_split != "none" else None
        self.bad_files: list[tuple[str, str]] = []  # broken samples met so far (this rank's, until gathered)
        self.val_name = self.shards.val_name
        self.description = self.shards.description
        self.batches: ShardBatches | None = None

    @property
    def train_size(self) -> int:
        return self.shards.samples

    @property
    def val_size(self) -> int:
        return self.val.samples if self.val is not None else 0

    def gather_bad_files(self, path) -> None:
        """Every rank's broken samples in `bad_files` on every rank; rank 0 lists them in `path`."""
        if self.info.enabled:
            import torch.distributed as dist

            found: list = [None] * self.info.world_size
            dist.all_gather_object(found, list(self.bad_files))
            self.bad_files[:] = [tuple(item) for part in found for item in part]
        if self.bad_files and self.info.is_main:
            from ..checkpoints.io import atomic_write_text

            atomic_write_text(path, "".join(f"{p}\t{r}\n" for p, r in self.bad_files))

    def train_batches(self, transform, start_step: int, workers: int, pin_memory: bool) -> ShardBatches:
        c, info = self.config, self.info
        lanes_per_reader = c.shard_streams % (info.world_size * max(workers, 1))
        if lanes_per_reader and info.is_main:
            self.log(f"note: shard_streams {c.shard_streams} is not a multiple of {info.world_size} process(es) x "
                     f"{max(workers, 1)} loader worker(s): some lanes are read by more than one worker (each "
                     "decodes only its own samples)")
        if len(self.shards.urls) < c.shard_streams and info.is_main:
            self.log(f"note: {len(self.shards.urls)} shard(s) for {c.shard_streams} lanes: some lanes hold no shard "
                     "in an epoch (pack smaller shards, or lower --shard-streams)")
        stream = ShardStream(self.shards, transform, streams=c.shard_streams, buffer=c.shuffle_buffer, seed=c.seed,
                             rank=info.rank, world_size=info.world_size, start=start_step * c.batch_size)
        per_rank = c.batch_size // c.accum_steps // info.world_size
        self.batches = ShardBatches(stream, per_rank, workers, pin_memory, c.max_bad_fraction, log=self.log)
        self.batches.broken = self.bad_files
        return self.batches

    def eval_batches(self, transform, batch_size: int, workers: int, pin_memory: bool) -> EvalBatches | None:
        if self.val is None:
            return None
        info = self.info
        mine = sum(self.val.counts[info.rank::info.world_size])
        loader = shard_eval_loader(self.val, transform, batch_size, workers, info.rank, info.world_size, pin_memory)
        return EvalBatches(loader, max(1, math.ceil(mine / batch_size)))


def lockstep(batches, model: torch.nn.Module, info: distributed.DistInfo, example: torch.Tensor):
    """`batches`, and after the last one, forward passes of `example` (results dropped) until every rank is out of
    batches: a sharded model gathers its parameters from all ranks in each forward, so every rank must run as
    many as the others."""
    if not info.enabled:
        yield from batches
        return
    import torch.distributed as dist

    iterator = iter(batches)
    while True:
        batch = next(iterator, None)
        more = torch.tensor([0.0 if batch is None else 1.0], device=info.device)
        dist.all_reduce(more, op=dist.ReduceOp.MAX)
        if more.item() == 0:
            return
        if batch is not None:
            yield batch
        else:
            with torch.no_grad():
                model(example.to(info.device))
