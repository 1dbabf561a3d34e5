"""What every adapter shares: a reader that checks each tensor it takes, and the result of a conversion."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from ..configs import Preprocessing, ViTConfig
from ..errors import CheckpointError


@dataclass
class Converted:
    """A foreign checkpoint turned into vitkit's terms."""

    config: ViTConfig
    state_dict: dict[str, torch.Tensor]
    sources: dict[str, str] = field(default_factory=dict)  # vitkit key -> the key it came from in the file
    preprocessing: Preprocessing | None = None
    class_names: list[str] | None = None
    default_resample: str = "bicubic"  # how fine-tuning resamples this family's position embeddings
    dynamic_resample: str = "bicubic"  # how its library resamples them for another input size (dynamic_image_size)
    guessed: dict[str, tuple[Any, str]] = field(default_factory=dict)  # field -> (assumed value, why)
    notes: list[str] = field(default_factory=list)  # assumptions outside ViTConfig, announced with the guesses


def contradiction(name: str, recorded, given) -> str:
    """The message for a keyword that contradicts the file (with the way to a new size, the usual intent)."""
    hint = "; to resample to a new size pass resample_to=" if name == "image_size" else ""
    return f"the file records {name}={recorded!r}; {name}={given!r} contradicts it{hint}"


class Settings:
    """The loading rule, as a reader sees it: what the caller said about the model (`given`, ViTConfig fields), and
    what the reader had to assume because the file does not record it (`guessed`, announced by `load`)."""

    def __init__(self, path, given: dict[str, Any] | None = None):
        self.path = Path(path)
        self.given = dict(given or {})
        self.guessed: dict[str, tuple[Any, str]] = {}
        self.notes: list[str] = []

    def get(self, name: str, default=None):
        """The caller's value for a field, to settle what the file leaves open."""
        return self.given.get(name, default)

    def recorded(self, name: str, value, key: str | None = None):
        """A value the file records: a caller's different value is refused, never applied."""
        if name in self.given and self.given[name] != value:
            raise CheckpointError(self.path, contradiction(name, value, self.given[name]), key=key)
        return value

    def assumed(self, name: str, default, why: str):
        """A value the file does not record: the caller's, else `default`, which `load` announces as a guess."""
        if name in self.given:
            return self.given[name]
        self.guessed[name] = (default, why)
        return default

    def note(self, text: str) -> None:
        """An assumption no keyword can change (announced only together with guesses)."""
        self.notes.append(text)


class Reader:
    """Hands out a file's tensors one key at a time, checking shapes, and reports what was left over.

    Every problem is a `CheckpointError` that names the file, the key, and the expected and found shapes.
    """

    def __init__(self, tensors: dict[str, Any], path: str | Path, prefix: str = ""):
        self.tensors = tensors
        self.path = Path(path)
        self.prefix = prefix
        self.taken: set[str] = set()

    def key(self, name: str) -> str:
        return self.prefix + name

    def has(self, name: str) -> bool:
        return self.key(name) in self.tensors

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._raw(name).shape)

    def _raw(self, name: str):
        key = self.key(name)
        if key not in self.tensors:
            raise CheckpointError(self.path, "missing tensor", key=key)
        return self.tensors[key]

    def get(self, name: str, shape: Iterable[int | None] | None = None) -> torch.Tensor:
        """The tensor under `name`, as a float torch tensor, checked against `shape` (None matches any size)."""
        key = self.key(name)
        value = self._raw(name)
        found = tuple(value.shape)
        if shape is not None:
            expected = tuple(shape)
            if len(found) != len(expected) or any(e is not None and e != f for e, f in zip(expected, found)):
                shown = tuple("*" if e is None else e for e in expected)
                raise CheckpointError(self.path, f"expected shape {shown}, found {found}", key=key)
        tensor = torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value
        if not torch.is_floating_point(tensor):
            raise CheckpointError(self.path, f"expected a floating-point tensor, found {tensor.dtype}", key=key)
        self.taken.add(key)
        return tensor

    def count(self, pattern: str) -> int:
        """How many consecutive indices i have `pattern.format(i)` as a key prefix, from 0 (or 1 if 0 is absent)."""
        start = 0 if any(k.startswith(self.key(pattern.format(0))) for k in self.tensors) else 1
        i = start
        while any(k.startswith(self.key(pattern.format(i))) for k in self.tensors):
            i += 1
        return i - start

    def check_all_taken(self, ignore: Iterable[str] = ()) -> None:
        ignored = set(ignore)
        left = sorted(k for k in self.tensors if k not in self.taken and k not in ignored)
        if left:
            more = f" (and {len(left) - 5} more)" if len(left) > 5 else ""
            raise CheckpointError(
                self.path, f"unexpected tensor(s) this layout does not use: {', '.join(left[:5])}{more}", key=left[0]
            )


def grid_candidates(num_patches: int, patch_size: tuple[int, int], settings: Settings, stride: int = 1,
                    ) -> list[tuple[int, int]]:
    """Patch grids with `num_patches` cells: the one the caller's image_size gives, else the square one (if any)."""
    size = settings.get("image_size")
    if size is not None:
        step = (patch_size[0] * stride, patch_size[1] * stride)
        if size[0] % step[0] or size[1] % step[1]:
            raise CheckpointError(settings.path, f"image_size={tuple(size)} is not a multiple of the effective patch "
                                  f"size {step}", key="image_size")
        grid = (size[0] // step[0], size[1] // step[1])
        return [grid] if grid[0] * grid[1] == num_patches else []
    side = math.isqrt(num_patches) if num_patches >= 0 else 0
    return [(side, side)] if side and side * side == num_patches else []


def square_grid(num_patches: int, path, key: str) -> tuple[int, int]:
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise CheckpointError(
            path, f"{num_patches} position embeddings do not form a square grid; the patch grid cannot be read "
            "from the file", key=key
        )
    return side, side


def check_block_counts(config: ViTConfig, converted: Converted, path) -> None:
    """The config's depth and ResNet stages agree with the tensors present: checked before any model is built."""
    keys = converted.state_dict.keys()

    def count(prefix: str) -> int:
        indices = {k[len(prefix):].split(".", 1)[0] for k in keys if k.startswith(prefix)}
        return len(indices)

    if count("blocks.") != config.depth:
        raise CheckpointError(path, f"the config says {config.depth} blocks, the file has {count('blocks.')}",
                              key="blocks")
    stages = config.resnet.num_layers if config.resnet is not None else ()
    if count("stem.stages.") > len(stages):
        raise CheckpointError(path, f"the config says {len(stages)} ResNet stages, the file has more", key="stem")
    for i, units in enumerate(stages):
        if count(f"stem.stages.{i}.") != units:
            raise CheckpointError(path, f"the config says {units} units in ResNet stage {i}, the file has "
                                  f"{count(f'stem.stages.{i}.')}", key=f"stem.stages.{i}")


def check_against_model(model: torch.nn.Module, converted: Converted, path) -> None:
    """Every key the model has is in the converted dict with its shape and a floating dtype, and nothing else:
    else CheckpointError."""
    expected = model.state_dict()
    for key, tensor in expected.items():
        source = converted.sources.get(key, key)
        if key not in converted.state_dict:
            raise CheckpointError(path, f"missing tensor (needed for {key})", key=source)
        value = converted.state_dict[key]
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(path, f"expected a tensor, found {type(value).__name__}", key=source)
        found = tuple(value.shape)
        if found != tuple(tensor.shape):
            raise CheckpointError(path, f"expected shape {tuple(tensor.shape)}, found {found}", key=source)
        if not torch.is_floating_point(value):
            raise CheckpointError(path, f"expected a floating-point tensor, found {value.dtype}", key=source)
    extra = sorted(set(converted.state_dict) - set(expected))
    if extra:
        raise CheckpointError(path, "unexpected tensor", key=converted.sources.get(extra[0], extra[0]))
