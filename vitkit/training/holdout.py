"""A run's evaluation split as a fact stored with the run (holdout.json), and its exact reproduction by evaluation.

Training writes the rule and its inputs (the data's canonical resolved path, val_split, val_fraction, val_per_class,
split_seed and the run's own limit_per_class, which is applied before the hold-out is drawn) together with a
fingerprint of the result: the relative file names and labels of the evaluation images (files), or a hash of their
pixels and labels (data held in memory: digits, CIFAR pickles). `vitkit eval --checkpoint RUN` draws the split again
from the stored rule, whatever spelling the data path has and whatever eval's own --limit-per-class says (that one
subsets the reproduced split afterwards), and refuses when the fingerprint differs: the data changed, and the
images drawn now could include images the run trained on. A run trained with --val-split none has no hold-out:
evaluating it on its own data is refused unless asked for every image (--split all), and then called that.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..data import DataSplits, open_data
from ..data.sources import DIGITS, detect_layout
from ..errors import UsageError
from .run_folder import HOLDOUT

FORMAT = "vitkit-holdout"
RULE_FIELDS = ("val_split", "val_fraction", "val_per_class", "split_seed", "limit_per_class")


def canonical_data(data: str) -> str:
    """The same data, however spelt: 'digits', or the resolved absolute path (trailing slashes, ./, ~, links)."""
    if data == DIGITS and not Path(data).exists():
        return DIGITS
    return str(Path(data).expanduser().resolve())


def fingerprint(images, root: Path | None) -> str:
    """SHA-256 over the images' identities and labels: relative file names for files, pixels for arrays."""
    digest = hashlib.sha256()
    digest.update(np.asarray(images.labels, dtype=np.int64).tobytes())
    if images.paths is not None:
        for path in images.paths:
            digest.update(os.path.relpath(path, root).encode() if root is not None else str(path).encode())
            digest.update(b"\0")
    else:
        for array in images.arrays:
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _root(data: str) -> Path | None:
    layout = detect_layout(data)
    return None if layout.kind == "digits" else Path(data).expanduser()


def describe_split(config, splits: DataSplits) -> dict[str, Any]:
    """holdout.json's content for a run of `config` whose data opened as `splits`."""
    record = {"format": FORMAT, "data": canonical_data(config.data), "split": splits.val_name,
              "rule": {k: getattr(config, k) for k in RULE_FIELDS}, "classes": list(splits.classes)}
    if splits.val is None:
        record.update(split="none", images=0, fingerprint=None)
    else:
        record.update(images=len(splits.val), fingerprint=fingerprint(splits.val, _root(config.data)))
    return record


def write_split(run_dir: Path, config, splits: DataSplits) -> None:
    from ..checkpoints.io import atomic_write_text

    atomic_write_text(run_dir / HOLDOUT, json.dumps(describe_split(config, splits), indent=1) + "\n")


def read_split(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / HOLDOUT
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("format") != FORMAT or not isinstance(record.get("rule"), dict):
            raise ValueError("not a vitkit hold-out record")
    except (OSError, ValueError, AttributeError) as e:
        raise UsageError(f"{path}: unreadable ({e})") from None
    return record


@dataclass
class EvalSet:
    splits: DataSplits  # .val is what to evaluate, .val_name what to call it
    data: str
    reproduced: bool  # the run's own evaluation split, drawn again and checked against its fingerprint
    note: str | None = None  # a line for the report: what the images are, when the split name does not say it


def open_eval_set(data: str | None, *, run_dir: Path | None, run_config=None, split: str = "auto",
                  want_train: bool = False, val_fraction: float | None = None, val_per_class: int | None = None,
                  split_seed: int | None = None, limit_per_class: int | None = None,
                  max_bad_fraction: float = 0.01, log: Callable[[str], None] = print,
                  progress: bool = True) -> EvalSet:
    """The images `vitkit eval` scores. On the run's own data (any spelling) with split auto or holdout: the run's
    evaluation split exactly, from holdout.json; `limit_per_class` then keeps a seeded subset of it. Elsewhere:
    the data's own val/test split, or every image of a plain folder (split auto/all), or a fresh hold-out."""
    if data is None:
        if run_config is None:
            raise UsageError("--data is needed (the checkpoint is not inside a vitkit run folder)")
        data = run_config.data
    record = read_split(run_dir) if run_dir is not None else None
    run_data = record["data"] if record else (canonical_data(run_config.data) if run_config is not None else None)
    same = run_data is not None and canonical_data(str(data)) == run_data
    common = dict(want_train=want_train, want_val=True, max_bad_fraction=max_bad_fraction, log=log,
                  progress=progress)
    if same and split in ("auto", "holdout"):
        rule = dict(record["rule"]) if record else {k: getattr(run_config, k) for k in RULE_FIELDS}
        given = {"val_fraction": val_fraction, "val_per_class": val_per_class, "split_seed": split_seed}
        changed = [f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None and v != rule[k]]
        if changed:
            raise UsageError(f"{', '.join(changed)}: {run_dir} holds out its own images (stored in {HOLDOUT}); "
                             "another hold-out of its data could hold images it trained on; drop "
                             f"{' and '.join(changed)}, or use --split all")
        if rule["val_split"] == "none":
            raise UsageError(f"{run_dir} trained on every image of {data} (--val-split none): it has no hold-out; "
                             "evaluate it on other data (--data), or on the images it trained on with --split all")
        if split == "holdout" and rule["val_split"] == "auto" and record and record["split"] != "hold-out":
            raise UsageError(f"{run_dir} evaluated on {data}'s own {record['split']} split, not on a hold-out; "
                             "use --split auto")
        splits = open_data(str(data), val_split=rule["val_split"], val_fraction=rule["val_fraction"],
                           val_per_class=rule["val_per_class"], split_seed=rule["split_seed"],
                           limit_per_class=rule["limit_per_class"], flat_eval="holdout", **common)
        if record and record["fingerprint"] != fingerprint(splits.val, _root(str(data))):
            raise UsageError(f"--data {data}: the images differ from those {run_dir} was trained on (its "
                             f"{record['split']} split, {record['images']} images, recorded in {HOLDOUT}, cannot be "
                             "drawn again); evaluate with --split all, or on other data")
        if limit_per_class is not None:
            splits.val = _subset(splits.val, limit_per_class, rule["split_seed"])
        return EvalSet(splits, str(data), reproduced=True)
    flat_eval = "all" if split in ("auto", "all") else "holdout"
    splits = open_data(str(data), val_split="holdout" if split == "holdout" else "auto",
                       val_fraction=val_fraction if val_fraction is not None else 0.1, val_per_class=val_per_class,
                       split_seed=split_seed or 0, limit_per_class=limit_per_class, flat_eval=flat_eval, **common)
    note = None
    if same and splits.val_name == "all":
        note = (f"every image of {data}, including the images {run_dir} trained on: this is not a hold-out "
                "accuracy")
    return EvalSet(splits, str(data), reproduced=False, note=note)


def _subset(images, limit: int, seed: int):
    keep = []
    for c in range(len(images.classes)):
        members = np.flatnonzero(images.labels == c)
        keep.extend(members[np.random.default_rng([seed, c, 1]).permutation(len(members))[:limit]])
    return images.subset(sorted(keep), name=images.name)
