"""Atomic writes, without torch: a temporary file beside the target, fsynced, then renamed over it (and the folder
fsynced), so a crash leaves either the old file or the new one, never half of one. Used by checkpoints, exports
and downloads. Also the checks of an output's place that the commands and the Python API share."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import UsageError


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (where the platform lets a folder be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not every platform opens folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256_of_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    import hashlib

    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def replace_folder(tmp: Path, final: Path) -> None:
    """Rename the finished folder `tmp` onto `final` (a sibling). An existing `final` is first moved into a hidden
    folder beside it and removed after the rename, so `final` names one whole folder, the old or the new."""
    import shutil

    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
        os.replace(final, old / final.name)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_dir(final.parent)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`.

    On any error the temporary file is removed and `path` is left exactly as it was. With `keep_suffix` the
    temporary name ends in `path`'s suffix, for writers that go by it (torch.export.save wants .pt2).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = f".partial{path.suffix}" if keep_suffix else ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_parent(path: Path) -> None:
    """An output's folder must exist already: vitkit creates no missing parent folders."""
    parent = path.parent
    if not parent.exists():
        raise UsageError(f"{path}: the folder {parent} does not exist (vitkit creates no folders for its output)")
    if not parent.is_dir():
        raise UsageError(f"{path}: {parent} is not a folder")


def check_output_folder(path: Path) -> None:
    """A folder results are written into (eval's -o, `vitkit.evaluate(output=...)`): made if absent, but its parent
    must exist."""
    check_parent(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} is a file; -o/--output names a folder here")
