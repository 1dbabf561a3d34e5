"""A training run's folder: its layout, how `--resume` finds it, and the lock that gives it one writer.

    runs/<name>/config.json          the resolved TrainConfig (reads back as a recipe)
                provenance.json      where each value of config.json came from (recipe, file, flag, default)
                run.json             facts of the run: classes, image counts, steps, device, model, command
                holdout.json         the evaluation split as a fact: the rule, its inputs and the exact file list
                metrics.jsonl        one JSON record per line (train, eval, clock, skipped, stopped, summary)
                metrics.csv          the train and eval records as one table
                curves.png           loss and accuracy against the step
                tensorboard/         event files, with --log tensorboard
                bad_files.txt        files that could not be read as images, with the reason
                checkpoints/step_N/  see vitkit.training.checkpoint
                model.safetensors    the final weights (model_ema.safetensors: the EMA's)
                run.lock             held (flock) by the process that writes the run, for the run's life

Every module names these files through the constants below, never by literal.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from ..errors import UsageError

CONFIG = "config.json"
PROVENANCE = "provenance.json"
RUN_INFO = "run.json"
HOLDOUT = "holdout.json"
METRICS = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
CURVES = "curves.png"
TENSORBOARD = "tensorboard"
BAD_FILES = "bad_files.txt"
CHECKPOINTS = "checkpoints"
WEIGHTS = "model.safetensors"
EMA_WEIGHTS = "model_ema.safetensors"
LOCK = "run.lock"

RESUME_TAKES = "--resume takes a run folder (runs/NAME) or one of its checkpoint folders (runs/NAME/checkpoints/step_N)"


def is_checkpoint_dir(path: Path) -> bool:
    return path.name.startswith("step_") and path.parent.name == CHECKPOINTS


def is_run_dir(path: Path) -> bool:
    """A folder a training run wrote (its config.json beside checkpoints/ or metrics.jsonl)."""
    return (path / CONFIG).is_file() and ((path / CHECKPOINTS).is_dir() or (path / METRICS).is_file())


def run_dir_of(path: str | os.PathLike) -> Path | None:
    """The run folder a path belongs to (the folder itself, a checkpoint folder, a file in either), or None."""
    path = Path(path).resolve()
    for candidate in [path, *path.parents][:4]:
        if is_run_dir(candidate):
            return candidate
    return None


def resolve_resume(target: str | os.PathLike) -> tuple[Path, Path | None]:
    """(run folder, checkpoint folder or None) of what `--resume` was given; a one-line UsageError otherwise."""
    path = Path(target)
    if not path.exists():
        raise UsageError(f"--resume {path}: no such run or checkpoint folder")
    if not path.is_dir():
        owner = run_dir_of(path)
        hint = f"; pass the run folder: --resume {owner}" if owner is not None else ""
        raise UsageError(f"{RESUME_TAKES}; {path} is a file{hint}")
    if is_checkpoint_dir(path):
        run_dir, checkpoint = path.parent.parent, path
    else:
        run_dir, checkpoint = path, None
    if not (run_dir / CONFIG).is_file():
        owner = run_dir_of(path)
        hint = f"; pass the run folder: --resume {owner}" if owner is not None and owner != run_dir else ""
        raise UsageError(f"{RESUME_TAKES}; {path} is a folder without the run's {CONFIG}{hint}")
    return run_dir, checkpoint


# ------------------------------------------------------------------------------------------------ the lock
_HELD: dict[int, Path] = {}  # file descriptors of the locks this process holds


def _close_in_child() -> None:
    """A forked child (a data loader process) drops its copies of the lock descriptors, so that the lock ends with
    the process that took it, not with the last of its children."""
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


class RunLock:
    """An advisory lock on run.lock (flock, exclusive, not waiting): one writer per run folder. The operating
    system releases it when the process ends, also on a crash or SIGKILL; the file itself stays, naming the pid
    of its last holder."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        if self.fd is not None:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UsageError(f"{self.run_dir} is being written by another process (pid {holder}, holding "
                                 f"{self.path}); wait for it to end, or choose another --name") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        _HELD[fd] = self.path
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        _HELD.pop(fd, None)
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)  # explicitly: a descriptor some child still has would otherwise keep it
        finally:
            os.close(fd)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
