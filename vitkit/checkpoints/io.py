"""Reading tensor files safely and writing them atomically.

Reading never executes code from a file: `.pth` goes through `torch.load(weights_only=True)`, `.npz` through
`numpy.load(allow_pickle=False)`, and safetensors has no code path at all. Every failure becomes a
`CheckpointError` naming the file. Writing goes to a temporary file in the same folder, is flushed and fsynced,
then renamed over the target, so a crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from ..files import atomic_path, fsync_dir  # noqa: F401 (also imported from here)

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")  # .pth.tar: timm's train.py
NPZ_SUFFIXES = (".npz",)


# ------------------------------------------------------------------------------------------------ atomic writes
def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_safetensors(path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().cpu().clone() if _shares_storage(v, tensors) else v.detach().contiguous().cpu()
               for k, v in tensors.items()}
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def _shares_storage(tensor: torch.Tensor, tensors: dict[str, torch.Tensor]) -> bool:
    ptr = tensor.untyped_storage().data_ptr()
    return sum(1 for t in tensors.values() if t.untyped_storage().data_ptr() == ptr) > 1


# --------------------------------------------------------------------------------------------------- reading
def _check_exists(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(path, "no such file or directory")


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file."""
    from safetensors import safe_open

    path = Path(path)
    _check_exists(path)
    try:
        tensors = {}
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    except CheckpointError:
        raise
    except Exception as e:  # SafetensorError, OSError, ...: truncated, corrupt, not safetensors
        raise CheckpointError(path, f"not a readable safetensors file ({type(e).__name__}: {_first_line(e)})") from None
    return tensors, metadata


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:
        raise CheckpointError(path, f"not a readable safetensors file ({type(e).__name__}: {_first_line(e)})") from None


# Where training code keeps a model's weights inside a checkpoint, and where it keeps their moving average (EMA).
MODEL_KEYS = ("state_dict", "model", "module")  # timm and DeiT/torchvision reference scripts, Lightning, DDP
EMA_KEYS = ("state_dict_ema", "model_ema", "ema", "ema_state_dict")
# Prefixes that wrap one model without changing it: DataParallel/DDP and torch.compile (any order, any depth).
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def read_torch(path: str | os.PathLike, ema: bool | None = None) -> dict[str, torch.Tensor]:
    """A state dict from a `.pth`/`.bin`/`.pth.tar` file, without ever running code from it (weights_only=True;
    an `argparse.Namespace` of training arguments, as timm's train.py stores, is let through as plain data).

    Training checkpoints are unpacked: {"state_dict": ...}, {"model": ...}, {"state_dict_ema"/"model_ema": ...}.
    A file with both the weights and their moving average is ambiguous: `ema` True takes the average, False the
    weights, None refuses and lists them. DDP's `module.` and torch.compile's `_orig_mod.` prefixes are removed, as
    is the `n_averaged` count of torch's AveragedModel.
    """
    import argparse

    path = Path(path)
    _check_exists(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        text = _first_line(e)
        if "weights_only" in str(e) or "Unsupported global" in str(e) or "UnpicklingError" in type(e).__name__:
            raise CheckpointError(
                path, "refused: the file's pickle holds more than tensors (it could run code), so it is not loaded "
                f"({type(e).__name__})"
            ) from None
        raise CheckpointError(path, f"not a readable PyTorch file ({type(e).__name__}: {text})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"expected a dict of tensors, found {type(obj).__name__}")
    obj = _choose_weights(path, obj, ema)
    state = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(path, f"expected a dict of tensors, found {type(value).__name__}", key=str(key))
        state[unwrapped(key)] = value
    if "n_averaged" in state and state["n_averaged"].ndim == 0 and any(k.startswith("module.") for k in obj):
        del state["n_averaged"]  # torch.optim.swa_utils.AveragedModel's count of averaged steps, not a weight
    return state


def _choose_weights(path: Path, obj: dict, ema: bool | None) -> dict:
    """The one set of weights in a training checkpoint: its model's, or, with `ema`, their moving average."""
    found = {key: obj[key] for key in (*MODEL_KEYS, *EMA_KEYS) if isinstance(obj.get(key), dict)}
    models = [k for k in found if k in MODEL_KEYS]
    averages = [k for k in found if k in EMA_KEYS]
    if not found:
        if ema:
            raise CheckpointError(path, "ema=True (--ema), but the file holds one set of weights and no moving "
                                  f"average (none of {', '.join(EMA_KEYS)})")
        return obj
    wanted = averages if ema else models if ema is False else list(found)
    if len(wanted) == 1:
        return found[wanted[0]]
    if not wanted:
        kind = "moving average" if ema else "model weights"
        raise CheckpointError(path, f"ema={ema} asks for the {kind}, but the file holds only "
                              f"{', '.join(repr(k) for k in found)}", key=next(iter(found)))
    choices = ", ".join(repr(k) for k in wanted)
    hint = ("ema=False (--no-ema) for the model's weights or ema=True (--ema) for their moving average"
            if models and averages else "the file is ambiguous")
    raise CheckpointError(path, f"holds several sets of weights ({choices}); choose one: {hint}", key=wanted[0])


def unwrapped(key: str) -> str:
    while key.startswith(WRAPPER_PREFIXES):
        key = key.removeprefix("module.").removeprefix("_orig_mod.")
    return key


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of an `.npz` file, refusing pickled objects (allow_pickle=False).

    Each member's .npy header is checked against the member's size before any array is allocated, so a file
    that declares a huge shape is refused instead of exhausting memory.
    """
    path = Path(path)
    _check_exists(path)
    arrays = {}
    key = None
    try:
        _check_npy_sizes(path)
        with np.load(path, allow_pickle=False) as data:
            for key in data.files:
                arrays[key] = data[key]
    except CheckpointError:
        raise
    except Exception as e:  # BadZipFile, ValueError (pickled objects), OSError, zlib errors...
        if isinstance(e, ValueError) and "pickle" in str(e):
            raise CheckpointError(path, "refused: array stored as pickled objects", key=key) from None
        kind = "not a readable .npz file" if isinstance(e, (zipfile.BadZipFile, OSError, EOFError)) or key is None \
            else "corrupt array"
        raise CheckpointError(path, f"{kind} ({type(e).__name__}: {_first_line(e)})", key=key) from None
    for key, value in list(arrays.items()):
        if value.dtype.kind not in "fiu":
            raise CheckpointError(path, f"expected a numeric array, found dtype {value.dtype}", key=key)
        if not value.dtype.isnative:
            arrays[key] = value.astype(value.dtype.newbyteorder("="))
    return arrays


def _check_npy_sizes(path: Path) -> None:
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            key = info.filename.removesuffix(".npy")
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                header_bytes = member.tell()
            if dtype.hasobject:
                raise CheckpointError(path, "refused: array stored as pickled objects", key=key)
            declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
            if declared != info.file_size - header_bytes:
                raise CheckpointError(path, f"array declares shape {tuple(shape)} ({declared} bytes) but holds "
                                      f"{info.file_size - header_bytes} bytes", key=key)


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(path, "no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(path, f"not valid JSON ({_first_line(e)})") from None
    if not isinstance(data, dict):
        raise CheckpointError(path, f"expected a JSON object, found {type(data).__name__}")
    return data


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__
