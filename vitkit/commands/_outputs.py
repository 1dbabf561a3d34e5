"""Where `convert` and `export` write: the format read from the output's suffix, and the checks that keep them
from destroying anything (no overwrite without --force, no folder made but an HF folder itself, no files mixed
into a non-empty folder). Every check runs before the model is loaded, and again just before writing."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from ..errors import UsageError
from ..files import check_parent

CHECKPOINT_SUFFIXES = {  # suffix -> the formats `convert` may write under it (the first is the default)
    ".safetensors": ("vitkit", "timm", "torchvision"),
    ".npz": ("google",),
    ".pth": (None, "timm", "torchvision"),  # None first: no default, --to must choose
    ".pt": (None, "timm", "torchvision"),
    ".bin": (None, "timm", "torchvision"),
}
EXPORT_SUFFIXES = {".onnx": "onnx", ".pt2": "pt2"}
HF_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")  # what save(format="hf") writes


def convert_format(output: Path, to: str | None) -> str:
    """The checkpoint format `convert` writes to `output`: from its suffix, `--to` choosing where the suffix
    allows several and refused where it contradicts the suffix."""
    suffix = output.suffix.lower()
    if suffix in EXPORT_SUFFIXES:
        raise UsageError(f"{output}: convert writes checkpoints; for {EXPORT_SUFFIXES[suffix].upper()} use "
                         f"`vitkit export MODEL -o {output}`")
    if suffix not in CHECKPOINT_SUFFIXES and (not suffix or to == "hf" or output.is_dir()):
        if to not in (None, "hf"):
            raise UsageError(f"{output}: a path without a file suffix is a Hugging Face folder, which contradicts "
                             f"--to {to}; give a file name ({_suffixes_of(to)})")
        return "hf"
    allowed = CHECKPOINT_SUFFIXES.get(suffix)
    if allowed is None:
        raise UsageError(f"{output}: cannot tell the format from {suffix!r}; expected .safetensors (vitkit, or --to "
                         "timm/torchvision), .npz (google), .pth/.pt/.bin (--to timm or torchvision) or a folder "
                         "path without a suffix (hf)")
    if to is None:
        if allowed[0] is None:
            raise UsageError(f"{output}: a {suffix} file may hold a timm or a torchvision state dict; pass --to timm "
                             "or --to torchvision")
        return allowed[0]
    if to not in allowed:
        raise UsageError(f"{output}: --to {to} contradicts the suffix {suffix} ({to} writes {_suffixes_of(to)})")
    return to


def _suffixes_of(fmt: str) -> str:
    if fmt == "hf":
        return "a folder path without a suffix"
    return " or ".join(s for s, formats in CHECKPOINT_SUFFIXES.items() if fmt in formats)


def export_format(output: Path, fmt: str | None) -> str:
    """The export format for `-o output`: .onnx or .pt2, `--format` refused where it contradicts the suffix."""
    suffix = output.suffix.lower()
    found = EXPORT_SUFFIXES.get(suffix)
    if found is None:
        hint = "; checkpoints are written by `vitkit convert`" if suffix in CHECKPOINT_SUFFIXES else ""
        raise UsageError(f"{output}: cannot tell the export format from {suffix or 'a name without a suffix'!r}; "
                         f"expected .onnx or .pt2{hint}")
    if fmt is not None and fmt != found:
        raise UsageError(f"{output}: --format {fmt} contradicts the suffix {suffix}")
    return found


def check_source(source) -> None:
    """Refuse, before any work, a model that is neither an existing path, a catalog name nor a URI (with the
    loader's own message, close names included)."""
    from ..hub.resolve import is_known_source, resolve_source

    if not is_known_source(source):
        resolve_source(source)  # raises for what is none of these; touches nothing


def check_file_target(path: Path, force: bool) -> None:
    """A file may be written at `path`: its folder exists, and nothing is there unless --force replaces a file."""
    check_parent(path)
    if path.is_dir():
        raise UsageError(f"{path} is a folder; give a file name")
    if (path.exists() or path.is_symlink()) and not force:
        raise UsageError(f"{path} exists; pass --force to replace it")


def check_folder_target(path: Path, force: bool) -> None:
    """An HF folder may be written at `path`: its parent exists, and `path` is absent, empty, or (with --force)
    holds only the files of an HF model folder. A folder holding anything else is refused even with --force."""
    check_parent(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} is a file; a Hugging Face folder needs a new or empty folder path")
    if not path.is_dir():
        return
    entries = sorted(p.name for p in path.iterdir())
    others = [name for name in entries if name not in HF_FILES]
    if others:
        more = f" and {len(others) - 1} more" if len(others) > 1 else ""
        raise UsageError(f"{path} is not empty (it holds {others[0]}{more}); a Hugging Face folder is written only "
                         f"into a new or empty folder, or with --force over one holding only {', '.join(HF_FILES)}")
    if entries and not force:
        raise UsageError(f"{path} holds a Hugging Face model; pass --force to replace it")


def write_folder_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """`write(folder)` into a new hidden folder beside `path`, then rename it onto `path`, so that an error leaves
    `path` as it was. A forced replacement moves the old folder aside first and removes it after."""
    from ..checkpoints.io import fsync_dir

    parent = path.parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=parent))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700; give the folder the mode mkdir would
    old = None
    try:
        write(tmp)
        if path.is_dir() and any(path.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=parent))
            os.replace(path, old)  # onto an empty folder: allowed by rename(2)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:
                os.replace(old, path)
                old = None
            raise
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(old)


def check_output_file(path: Path) -> None:
    """A file a command writes (inspect's PNG and --arrays): its folder exists and it is not itself a folder. Such
    result files are replaced when they exist, as a plot is redrawn (unlike convert's and export's models)."""
    check_parent(path)
    if path.is_dir():
        raise UsageError(f"{path} is a folder; give a file name")
