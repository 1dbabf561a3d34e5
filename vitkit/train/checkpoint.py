"""Training checkpoints: one folder per step, written atomically, the newest readable one wins.

    runs/<name>/checkpoints/step_00000500/model.safetensors   weights, config, preprocessing, class names
                                          state.pt            optimizer, scaler, EMA, step, random states
                                                              (tensors and plain containers only, read back
                                                              with torch.load(weights_only=True))

A checkpoint is written into a hidden temporary folder beside the others, every file flushed and fsynced, then
the folder is renamed to its final name: a crash leaves either no checkpoint for that step or a whole one. The
latest checkpoint is found by scanning the step folders from the newest down and taking the first that reads
back whole, so a damaged newest folder falls back to the one before it.
"""

from __future__ import annotations

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

STATE_FORMAT = "vitkit-train-state"
STATE_VERSION = 1
STEP_DIR = re.compile(r"^step_(\d{8,})$")
WEIGHTS = "model.safetensors"
STATE = "state.pt"


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def checkpoints_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, folder) of every complete-looking checkpoint, oldest first."""
    folder = checkpoints_dir(run_dir)
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = STEP_DIR.match(entry.name)
        if match and entry.is_dir() and (entry / WEIGHTS).is_file() and (entry / STATE).is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def write_checkpoint(run_dir: str | os.PathLike, step: int, model, state: dict[str, Any], keep: int = 0) -> Path:
    """Write `model` (a VisionTransformer) and `state` as the checkpoint of `step`; keep the newest `keep`."""
    from ..checkpoints import save

    folder = checkpoints_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / step_dir_name(step)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=folder))
    try:
        save(model, tmp / WEIGHTS)
        with atomic_path(tmp / STATE) as path:
            torch.save({"format": STATE_FORMAT, "version": STATE_VERSION, "step": int(step), **state}, path)
        fsync_dir(tmp)
        if final.exists():  # the same step written again (a resumed run that ends where it started)
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=folder))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_dir(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
    weights, metadata = read_safetensors(path / WEIGHTS)
    state_path = path / STATE
    if not state_path.is_file():
        raise CheckpointError(state_path, "missing training state")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(state_path, f"not a readable training state ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(state_path, "not a vitkit training state")
    if state.get("version") != STATE_VERSION:
        raise CheckpointError(state_path, f"training state version {state.get('version')}, expected {STATE_VERSION}")
    step = state.get("step")
    if not isinstance(step, int) or (match and int(match.group(1)) != step):
        raise CheckpointError(state_path, f"step {step!r} does not match the folder name {path.name}")
    return Checkpoint(step, path, weights, metadata, state)


def latest_checkpoint(run_dir: str | os.PathLike, log: Callable[[str], None] = print) -> Checkpoint | None:
    """The newest checkpoint of a run that reads back whole, or None when there is none."""
    for step, path in reversed(list_checkpoints(run_dir)):
        try:
            return read_checkpoint_dir(path)
        except CheckpointError as e:
            log(f"skipping damaged checkpoint {path}: {e}")
    return None


def resolve_model_path(path: str | os.PathLike) -> Path:
    """A weights file from what a user may pass: a file, a checkpoint folder, or a run folder (its final weights,
    else its newest checkpoint). Hugging Face folders are returned as they are."""
    path = Path(path)
    if not path.is_dir():
        return path
    if (path / "config.json").is_file() and not (path / "checkpoints").is_dir() \
            and not (path / "metrics.jsonl").is_file():
        return path  # a Hugging Face model folder
    if (path / WEIGHTS).is_file():
        return path / WEIGHTS
    steps = list_checkpoints(path)
    if steps:
        return steps[-1][1] / WEIGHTS
    raise CheckpointError(path, f"a folder without {WEIGHTS} or checkpoints/step_* (expected a run folder, a "
                          "checkpoint folder or a Hugging Face model folder)")


def run_dir_of(path: str | os.PathLike) -> Path | None:
    """The run folder a checkpoint path belongs to (it holds config.json and checkpoints/), or None."""
    path = Path(path).resolve()
    for candidate in [path, *path.parents][:4]:
        if (candidate / "config.json").is_file() and ((candidate / "checkpoints").is_dir()
                                                       or (candidate / "metrics.jsonl").is_file()):
            return candidate
    return None
