"""Evaluating a model on a data set, the whole of `vitkit eval` and `vitkit.evaluate`: which images (the run's own
evaluation split, the data's val/test split, every image or a fresh hold-out), int8 quantization, top-1/top-5 and
per-class accuracy, the confusion matrix, optionally few-shot linear evaluation, and the results folder
(results.json and confusion.png). The command only parses its flags and prints what this returns."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import UsageError

RESULTS = "results.json"
CONFUSION = "confusion.png"


@dataclass
class Evaluation:
    """What one evaluation found. `results` is the record: results.json, `vitkit eval --json` and the return value of
    `vitkit.evaluate` are this dict. The rest is for a printed report."""
    results: dict[str, Any]
    few_shot: dict | None = None  # fewshot_evaluate's results (FewShotResult objects, num_train, num_test)
    folder: Path | None = None  # where results.json and confusion.png were written, None when nothing was


def default_folder(source: str | None, run_dir: Path | None, split_name: str) -> Path:
    """Where `vitkit eval` writes without -o: RUN/eval-<split> for a run's model, else eval-<model name> here."""
    if run_dir is not None:
        return run_dir / f"eval-{split_name}"
    return Path(f"eval-{Path(source).stem if source else 'model'}")


def evaluate_model(model, source: str | None = None, data: str | os.PathLike | None = None, *, split: str = "auto",
                   val_fraction: float | None = None, val_per_class: int | None = None, split_seed: int | None = None,
                   limit_per_class: int | None = None, max_bad_fraction: float = 0.01,
                   few_shot: Sequence[int] | None = None, few_shot_draws: int = 5, batch_size: int = 64,
                   num_workers: int = 0, precision: str = "fp32", flip: bool | None = None, device: str = "auto",
                   output: str | os.PathLike | None = None, log: Callable[[str], None] | None = None,
                   progress: bool = False) -> Evaluation:
    """Evaluate `model` (loaded from `source`, a path or name, when it was; a run's model brings the run's data and
    evaluation split). output: None writes nothing, "auto" the default folder (`default_folder`), else that folder
    (made if absent). flip: test-time flip averaging; None: as the run evaluated (its `eval_flip`), else off.
    `log` receives the status lines (a note on what the images are, "wrote ..."); default silent.
    The errors are one-line UsageErrors named by the command's flags."""
    from .evaluate import eval_batches, evaluate, match_classes, plot_confusion, restrict_confusion
    from ..training.distributed import pick_device
    from ..training.holdout import open_eval_set
    from ..training.run_folder import run_dir_of

    say = log or (lambda message: None)
    if output is not None and str(output) != "auto":  # before the work, not after it
        from ..files import check_output_folder

        check_output_folder(Path(output))
    if precision not in ("fp32", "bf16", "fp16", "int8"):
        raise UsageError(f"--precision {precision}: expected fp32, bf16, fp16 or int8")
    shots = None if few_shot is None else [int(k) for k in few_shot]
    if shots is not None and (not shots or min(shots) < 1):
        raise UsageError(f"--few-shot expects positive numbers such as 1,5,10,25, got {few_shot!r}")
    run_dir = run_dir_of(source) if source is not None and Path(source).exists() else None
    run_config = None
    if run_dir is not None:
        from ..training.trainer import load_run_config

        try:
            run_config = load_run_config(run_dir)
        except (UsageError, ValueError):
            run_config = None
    if flip is None:
        flip = bool(getattr(run_config, "eval_flip", False))
        if flip:
            say("note: flip-averaged, as the run evaluated (eval_flip in its config); --no-flip for one view")
    chosen = open_eval_set(None if data is None else str(data), run_dir=run_dir, run_config=run_config, split=split,
                           want_train=shots is not None, val_fraction=val_fraction, val_per_class=val_per_class,
                           split_seed=split_seed, limit_per_class=limit_per_class,
                           max_bad_fraction=max_bad_fraction, log=say, progress=progress)
    splits, data = chosen.splits, chosen.data
    if chosen.note:
        say(f"note: {chosen.note}")
    images = splits.val
    if images is None or len(images) == 0:
        raise UsageError(f"--data {data}: no images to evaluate")
    label_map = match_classes(model.class_names, model.num_classes, splits.classes, where=f"--data {data}")
    device = pick_device(device)
    model.to(device)
    batches = eval_batches(model, images, batch_size, num_workers, label_map=label_map)
    autocast = precision
    if precision == "int8":
        from ..models.fast import quantize_int8

        if device.type != "cpu":
            raise UsageError(f"--precision int8 runs on the CPU only, not on --device {device}")
        try:
            model = quantize_int8(model)
        except ValueError as e:
            raise UsageError(str(e)) from None
        autocast = "fp32"  # activations stay float32 between the quantized layers
    result = evaluate(model, batches, model.num_classes, device, autocast, progress=progress,
                      desc=f"eval {splits.val_name}", total=len(batches), flip=flip).result()

    confusion, has_other = restrict_confusion(result.confusion, label_map)
    totals = confusion.sum(axis=1)
    hits = np.diag(confusion[:, :len(label_map)])
    names = list(splits.classes)
    columns = names + (["other"] if has_other else [])
    results = {
        "checkpoint": source, "data": str(data), "split": splits.val_name, "images": result.count,
        "precision": precision, "flip": flip, "top1": result.top1, "top5": result.top5, "loss": result.loss,
        "per_class": {name: (float(hit / total) if total > 0 else None)
                      for name, hit, total in zip(names, hits, totals)},
        "confusion": {"classes": columns, "matrix": confusion.tolist()},
        "skipped_files": [path for path, _ in splits.bad_files],
        **({"note": chosen.note} if chosen.note else {}),
    }
    folder = None
    if output is not None:
        folder = default_folder(source, run_dir, splits.val_name) if str(output) == "auto" else Path(output)
        folder.mkdir(exist_ok=True)
        title = f"{Path(source).name if source else 'model'} on {splits.val_name} ({result.count:,} images)"
        results["confusion_png"] = str(plot_confusion(confusion, columns, folder / CONFUSION, title=title))
    few = None
    if shots is not None:
        from .fewshot import fewshot_evaluate

        if splits.train is None or len(splits.train) == 0:
            raise UsageError(f"--few-shot needs a training split of --data {data} to draw the shots from")
        few = fewshot_evaluate(model, eval_batches(model, splits.train, batch_size, num_workers),
                               eval_batches(model, images, batch_size, num_workers), shots=shots,
                               num_draws=few_shot_draws, device=device)
        results["few_shot"] = {str(k): {"mean": r.mean, "std": r.std, "draws": r.accuracies}
                               for k, r in few["fewshot"].items()}
        results["linear_probe"] = few["linear_probe"]
    if folder is not None:
        from ..checkpoints.io import atomic_write_text

        _note_replaced(folder / RESULTS, results, say)
        atomic_write_text(folder / RESULTS, json.dumps(results, indent=2) + "\n")
    return Evaluation(results, few, folder)


def _note_replaced(path: Path, results: dict, say: Callable[[str], None]) -> None:
    """An earlier results.json of another model, data or split is replaced aloud (the same evaluation, quietly)."""
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    keys = ("checkpoint", "data", "split")
    if isinstance(earlier, dict) and any(earlier.get(k) != results.get(k) for k in keys):
        what = ", ".join(f"{k} {earlier.get(k)}" for k in keys)
        say(f"note: replacing {path}, an evaluation of {what} (give -o to keep both)")
