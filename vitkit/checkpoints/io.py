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
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
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


def read_torch(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a `.pth`/`.bin` file, without ever running code from it (weights_only=True).

    Common wrappers are unpacked: {"state_dict": ...}, {"model": ...}, {"model_ema"/"state_dict_ema": ...}.
    """
    path = Path(path)
    _check_exists(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        text = _first_line(e)
        if "weights_only" in str(e) or "Unsupported global" in str(e) or "UnpicklingError" in type(e).__name__:
            raise CheckpointError(
                path, "refused: the file's pickle holds more than tensors (it could run code), so it is not loaded "
                f"({type(e).__name__})"
            ) from None
        raise CheckpointError(path, f"not a readable PyTorch file ({type(e).__name__}: {text})") from None
    for wrapper in ("state_dict", "model", "state_dict_ema", "model_ema", "module"):
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"expected a dict of tensors, found {type(obj).__name__}")
    state = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(path, f"expected a dict of tensors, found {type(value).__name__}", key=str(key))
        state[key.removeprefix("module.")] = value
    return state


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
