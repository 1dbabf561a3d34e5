"""The run's records: metrics.jsonl (every record, one JSON object a line, flushed as written), metrics.csv (the
training and evaluation records as one table), optionally TensorBoard event files (`--log tensorboard`) and a
Weights & Biases run (`--log wandb`), and the curves PNG drawn when the run ends. Only rank 0 writes.

A resumed run first cuts metrics.jsonl back to its checkpoint's step, rewrites metrics.csv from it, and tells
TensorBoard to purge the later events, so that every step is recorded once.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Callable

from ..errors import UsageError
from .run_folder import CURVES, METRICS, METRICS_CSV, TENSORBOARD

LOGGERS = ("tensorboard", "wandb")  # what --log may name, beside the files that are always written
CSV_COLUMNS = ("kind", "step", "epoch", "split", "weights", "loss", "accuracy", "top1", "top5", "lr", "grad_norm",
               "images_per_sec", "image_size")
SCALARS = ("loss", "accuracy", "top1", "top5", "lr", "grad_norm", "images_per_sec", "image_size")


def parse_loggers(text: str | None) -> tuple[str, ...]:
    """`--log tensorboard,wandb` -> ("tensorboard", "wandb"); an unknown name is a one-line error."""
    names = tuple(n.strip() for n in (text or "").split(",") if n.strip() and n.strip() != "none")
    unknown = [n for n in names if n not in LOGGERS]
    if unknown:
        raise UsageError(f"invalid training config: log={text!r}: {', '.join(unknown)} is not one of "
                         f"{', '.join(LOGGERS)} (or none; metrics.jsonl and metrics.csv are always written)")
    return names


def _csv_line(record: dict) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(["" if record.get(k) is None else record.get(k)
                                                   for k in CSV_COLUMNS])
    return out.getvalue()


class MetricsLogger:
    def __init__(self, run_dir: Path, enabled: bool, loggers: tuple[str, ...] = (),
                 keep_through_step: int | None = None, redo_evals: bool = False, config: dict | None = None):
        self.run_dir = run_dir
        self.path = run_dir / METRICS
        self.csv_path = run_dir / METRICS_CSV
        self.enabled = enabled
        self.tensorboard = self.wandb = None
        if not enabled:
            return
        from ..checkpoints.io import atomic_write_text
        from .plots import read_metrics

        kept: list[dict] = []
        if keep_through_step is not None and self.path.exists():  # resumed: drop what came after the checkpoint
            redone = ("eval", "clock") if redo_evals else ()
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) < keep_through_step
                    or r.get("step", 0) == keep_through_step and r.get("kind") not in redone]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        elif keep_through_step is None and self.path.exists():
            self.path.unlink()
        atomic_write_text(self.csv_path, ",".join(CSV_COLUMNS) + "\n"
                          + "".join(_csv_line(r) for r in kept if r.get("kind") in ("train", "eval")))
        if "tensorboard" in loggers:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UsageError("--log tensorboard needs the tensorboard package (pip install tensorboard)") \
                    from None
            purge = None if keep_through_step is None else keep_through_step + (0 if redo_evals else 1)
            self.tensorboard = SummaryWriter(str(run_dir / TENSORBOARD), purge_step=purge)  # events past the cut
        if "wandb" in loggers:
            try:
                import wandb
            except ImportError:
                raise UsageError("--log wandb needs the wandb package (pip install wandb)") from None
            self.wandb = wandb.init(project="vitkit", name=run_dir.name, id=run_dir.name, resume="allow",
                                    dir=str(run_dir), config=config)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if record.get("kind") not in ("train", "eval"):
            return
        with open(self.csv_path, "a", encoding="utf-8") as f:
            f.write(_csv_line(record))
        prefix = "train" if record["kind"] == "train" else f"{record.get('split', 'eval')}" + (
            "_ema" if record.get("weights") == "ema" else "")
        scalars = {f"{prefix}/{k}": record[k] for k in SCALARS if isinstance(record.get(k), (int, float))}
        if self.tensorboard is not None:
            for key, value in scalars.items():
                self.tensorboard.add_scalar(key, value, record["step"])
            self.tensorboard.flush()
        if self.wandb is not None:
            self.wandb.log(scalars, step=record["step"])

    def close(self, title: str = "", say: Callable[[str], None] = print) -> None:
        """Draw curves.png from metrics.jsonl and close the optional loggers; a figure never costs a run."""
        if not self.enabled:
            return
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None
        if self.path.exists():
            from .plots import plot_curves

            try:
                plot_curves(self.path, self.run_dir / CURVES, title=title)
            except Exception as e:
                say(f"could not draw {CURVES}: {e}")
