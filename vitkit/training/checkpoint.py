"""Training checkpoints: one folder per step, written atomically, the newest readable one wins.

    runs/<name>/checkpoints/step_00000500/model.safetensors   weights, config, preprocessing, class names
                                          state.pt            optimizer, scaler, EMA, step, random states
                                                              (tensors and plain containers only, read back
                                                              with torch.load(weights_only=True))
                                          manifest.json       the step, and each file's size and SHA-256

A checkpoint is written into a hidden temporary folder beside the others, every file flushed and fsynced, the
manifest last, then the folder is renamed to its final name and the parent folder fsynced: a crash leaves either
no checkpoint for that step or a whole one. Reading checks every file against the manifest before parsing it
(a flipped bit or a cut-off file is caught even where the format would not notice), and the latest checkpoint is
the newest step folder that passes, so a damaged newest folder falls back to the one before it, with a warning.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..checkpoints.io import atomic_path, fsync_dir, read_safetensors
from ..errors import CheckpointError
from ..files import replace_folder, sha256_of_file
from . import faults
from .run_folder import CHECKPOINTS, WEIGHTS, is_run_dir
from .run_folder import run_dir_of as run_dir_of  # (re-exported: its old home)

STATE_FORMAT = "vitkit-train-state"
STATE_VERSION = 1
STEP_DIR = re.compile(r"^step_(\d{8,})$")
STATE = "state.pt"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "vitkit-checkpoint"


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def checkpoints_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / CHECKPOINTS


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, folder) of every checkpoint folder, oldest first (a folder only ever gets its step_* name whole;
    one damaged later is reported when read)."""
    folder = checkpoints_dir(run_dir)
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = STEP_DIR.match(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def write_manifest(folder: Path, step: int, names: tuple[str, ...] = (WEIGHTS, STATE)) -> None:
    """manifest.json: the step and the size and SHA-256 of each file, as they are on disk now."""
    from ..checkpoints.io import atomic_write_text

    files = {name: {"bytes": (folder / name).stat().st_size, "sha256": sha256_of_file(folder / name)}
             for name in names}
    atomic_write_text(folder / MANIFEST, json.dumps({"format": MANIFEST_FORMAT, "step": int(step), "files": files},
                                                    indent=1) + "\n")


def verify_manifest(folder: Path) -> None:
    """Check each file of a checkpoint folder against its manifest; `CheckpointError` naming the first mismatch.
    A folder without a manifest (written before manifests existed) is left to the parsers."""
    path = folder / MANIFEST
    if not path.is_file():
        return
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            raise ValueError("not a vitkit checkpoint manifest")
        files = manifest["files"]
        step = manifest["step"]
        if not isinstance(files, dict) or not files or not isinstance(step, int):
            raise ValueError("no files or no step")
        entries = [(str(name), int(entry["bytes"]), str(entry["sha256"])) for name, entry in files.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(path, f"unreadable manifest ({type(e).__name__}: {e})") from None
    match = STEP_DIR.match(folder.name)
    if match and int(match.group(1)) != step:
        raise CheckpointError(path, f"the manifest is for step {step}, not {folder.name}")
    for name, size, sha in entries:
        file = folder / Path(name).name
        if not file.is_file():
            raise CheckpointError(file, "missing (listed in the manifest)")
        found = file.stat().st_size
        if found != size:
            raise CheckpointError(file, f"{found} bytes, the manifest says {size} (cut short or overwritten)")
        if sha256_of_file(file) != sha:
            raise CheckpointError(file, f"SHA-256 differs from the manifest's (the file changed after it was "
                                  "written)")


def write_checkpoint(run_dir: str | os.PathLike, step: int, model, state: dict[str, Any], keep: int = 0) -> Path:
    """Write `model` (a VisionTransformer) and `state` as the checkpoint of `step`; keep the newest `keep`.

    On any failure (a full disk, ...) the temporary folder is removed and the earlier checkpoints are untouched.
    """
    from ..checkpoints import save

    folder = checkpoints_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / step_dir_name(step)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=folder))
    try:
        save(model, tmp / WEIGHTS)
        faults.hit("checkpoint.weights", step)
        with atomic_path(tmp / STATE) as path:
            torch.save({"format": STATE_FORMAT, "version": STATE_VERSION, "step": int(step), **state}, path)
        faults.hit("checkpoint.state", step)
        write_manifest(tmp, step)
        fsync_dir(tmp)
        faults.hit("checkpoint.before_rename", step)
        replace_folder(tmp, final)  # the same step may be written again (a resumed run that ends where it started)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    faults.hit("checkpoint.renamed", step)
    prune(run_dir, keep)
    return final


def prune(run_dir: str | os.PathLike, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (keep <= 0 keeps all) and leftovers of interrupted writes."""
    folder = checkpoints_dir(run_dir)
    for entry in folder.glob(".step_*"):  # temporary folders of writes that never finished
        shutil.rmtree(entry, ignore_errors=True)
    if keep > 0:
        for _, path in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(path, ignore_errors=True)


@dataclass
class Checkpoint:
    step: int
    path: Path
    weights: dict[str, torch.Tensor]
    metadata: dict[str, str]
    state: dict[str, Any]


def read_checkpoint_dir(path: str | os.PathLike) -> Checkpoint:
    """A checkpoint folder, read and checked whole; `CheckpointError` if any part is missing or damaged."""
    path = Path(path)
    match = STEP_DIR.match(path.name)
    verify_manifest(path)
    if (path / ".metadata").is_file():  # sharded (torch.distributed.checkpoint): the weights load after wrapping
        weights, metadata = {}, {}
    else:
        weights, metadata = read_safetensors(path / WEIGHTS)
    state_path = path / STATE
    if not state_path.is_file():
        raise CheckpointError(state_path, "missing training state")
    try:  # weights_only: tensors and plain containers; a pickle that would build anything else is refused
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if "weights_only" in str(e) or "Unsupported global" in str(e) or "UnpicklingError" in type(e).__name__:
            raise CheckpointError(state_path, "refused: the training state's pickle holds more than tensors and "
                                  f"plain containers (it could run code), so it is not loaded ({type(e).__name__})"
                                  ) from None
        raise CheckpointError(state_path, f"not a readable training state ({type(e).__name__}: {text})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(state_path, "not a vitkit training state")
    if state.get("version") != STATE_VERSION:
        raise CheckpointError(state_path, f"training state version {state.get('version')}, expected {STATE_VERSION}")
    step = state.get("step")
    if not isinstance(step, int) or (match and int(match.group(1)) != step):
        raise CheckpointError(state_path, f"step {step!r} does not match the folder name {path.name}")
    return Checkpoint(step, path, weights, metadata, state)


def latest_checkpoint(run_dir: str | os.PathLike, log: Callable[[str], None] = print) -> Checkpoint | None:
    """The newest checkpoint of a run that reads back whole, or None when there is none. Each damaged newer one
    is named in a warning together with the one used instead."""
    damaged: list[tuple[Path, CheckpointError]] = []
    for step, path in reversed(list_checkpoints(run_dir)):
        try:
            found = read_checkpoint_dir(path)
        except CheckpointError as e:
            damaged.append((path, e))
            continue
        for bad, error in damaged:
            log(f"warning: checkpoint {bad} is damaged ({error}); falling back to the previous good one, {path}")
        return found
    for bad, error in damaged:
        log(f"warning: checkpoint {bad} is damaged ({error}); no earlier checkpoint reads back whole")
    return None


def resolve_model_path(path: str | os.PathLike) -> Path:
    """A weights file from what a user may pass: a file, a checkpoint folder, or a run folder (its final weights,
    else its newest checkpoint). Hugging Face folders are returned as they are."""
    path = Path(path)
    if not path.is_dir():
        return path
    if (path / "config.json").is_file() and not is_run_dir(path):
        return path  # a Hugging Face model folder
    if (path / WEIGHTS).is_file():
        return path / WEIGHTS
    steps = list_checkpoints(path)
    folder = steps[-1][1] if steps else path
    if (folder / ".metadata").is_file():  # torch.distributed.checkpoint: the weights are spread over .distcp files
        raise CheckpointError(folder, f"a sharded (--parallel fsdp) checkpoint without {WEIGHTS}; continue the run "
                              f"with vitkit train --resume to its end, which writes the whole model as {WEIGHTS}")
    if steps:
        if is_run_dir(path):  # an unfinished run: which weights is a choice, said aloud
            import warnings

            from ..errors import GuessWarning

            warnings.warn(GuessWarning(f"{path}: the run has no final {WEIGHTS} (it has not finished); using its "
                                       f"newest checkpoint, step {steps[-1][0]} ({steps[-1][1]}); pass a checkpoint "
                                       "folder to choose another"), stacklevel=2)
        return steps[-1][1] / WEIGHTS
    raise CheckpointError(path, f"a folder without {WEIGHTS} or checkpoints/step_* (expected a run folder, a "
                          "checkpoint folder or a Hugging Face model folder)")
