"""Checkpoints during training: it decides when to save (every N steps, at the last step, when stopping early)
and remembers the last good one, which error messages name."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from . import distributed


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (a full disk, a file size limit, ...); the message says what was kept."""


class Checkpointer:
    def __init__(self, run_dir: Path, model, state: Callable[[], dict[str, Any]], *, every: int, keep: int,
                 info: distributed.DistInfo, write: Callable, sharded: bool = False, resumed_step: int | None = None,
                 resumed_path: Path | None = None):
        self.run_dir, self.model, self.state = run_dir, model, state
        self.every, self.keep, self.info = every, keep, info
        self.write = write  # vitkit.training.checkpoint.write_checkpoint, or parallel.write_sharded_checkpoint
        self.sharded = sharded  # every rank writes its shard (write(run_dir, step, state, keep))
        self.saved_step, self.saved_path = resumed_step, resumed_path

    def due(self, step: int) -> bool:
        """A periodic checkpoint after `step`."""
        return self.every > 0 and step % self.every == 0

    def maybe_save(self, step: int, last: bool = False) -> bool:
        """Save after `step` when a periodic checkpoint is due, or when it is the last step of this invocation and
        not saved yet. True when it saved."""
        if (last and self.saved_step != step) or (not last and self.due(step)):
            self.save(step)
            return True
        return False

    def last_good(self) -> str:
        return (f"the last good checkpoint, {self.saved_path} (step {self.saved_step}), is untouched"
                if self.saved_path is not None else "no checkpoint had been written")

    def save(self, step: int) -> None:
        if self.sharded or self.info.is_main:
            self.model.eval()
            try:
                path = self.write(self.run_dir, step, self.state(), keep=self.keep)
            except (OSError, RuntimeError) as e:  # a full disk, a file size limit, a folder gone read-only
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise CheckpointWriteError(f"could not write the checkpoint of step {step} ({reason}); training "
                                           f"stopped and {self.last_good()}. Make room and continue with: vitkit "
                                           f"train --resume {self.run_dir}") from None
            self.model.train()
            self.saved_step, self.saved_path = step, path
        else:
            self.saved_step = step
        if not self.sharded:
            distributed.barrier(self.info)
