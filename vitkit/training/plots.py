"""The run's figure: training loss and evaluation accuracy against the step, from metrics.jsonl."""

from __future__ import annotations

import json
import os
from pathlib import Path


def read_metrics(path: str | os.PathLike) -> list[dict]:
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
    return records


def plot_curves(metrics_path: str | os.PathLike, png_path: str | os.PathLike, title: str = "") -> Path:
    """Two panels: loss (training, and evaluation where there is one) and accuracy (training batches, and the
    evaluation split's top-1, also for the EMA weights), against the optimizer step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..checkpoints.io import atomic_path

    records = read_metrics(metrics_path)
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="train", lw=1)
        if all("accuracy" in r for r in train):
            ax_acc.plot([r["step"] for r in train], [r["accuracy"] for r in train], label="train batches", lw=1,
                        alpha=0.6)
    for weights, style in (("model", "o-"), ("ema", "s--")):
        points = [r for r in evals if r.get("weights", "model") == weights]
        if points:
            split = points[-1].get("split", "eval")
            suffix = "" if weights == "model" else " (EMA)"
            ax_loss.plot([r["step"] for r in points], [r["loss"] for r in points], style, ms=3,
                         label=f"{split}{suffix}")
            ax_acc.plot([r["step"] for r in points], [r["top1"] for r in points], style, ms=3,
                        label=f"{split} top-1{suffix}")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.set_yscale("log")
    ax_acc.set_xlabel("step")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0, 1)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    png_path = Path(png_path)
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return png_path
