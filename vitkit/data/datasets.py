"""Labelled image sets: scikit-learn's digits, ImageFolder trees, CIFAR-10/100 in their python-pickle layout.

Every source becomes an `ImageSet`: class names, integer labels, and per image either a file path (decoded on
demand) or a decoded uint8 array (held in memory). Image folders are checked when they are opened: files whose
names do not end in an image extension (notes.txt, labels.csv) are ignored and listed once; every image file is
decoded once (a truncated JPEG opens fine and fails only when decoded), unreadable ones are skipped, logged and
counted, and the run stops when more than `max_bad_fraction` of them are bad. Commands given image files or
folders (predict, inspect) gather and read them with the same rules (`gather_image_files`, `read_images`).
"""

from __future__ import annotations

import functools
import io
import os
import pickle
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from ..errors import UsageError

# The one list of file name endings read as images, everywhere in vitkit (training folders, eval, predict, inspect);
# all opened by Pillow. Other files in a folder are ignored (listed once), not counted as broken images.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm",
                    ".pbm", ".pnm")
VAL_FOLDER_NAMES = ("val", "validation", "valid", "test")
CACHE_BUDGET_BYTES = 2 * 1024**3
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # Pillow's single-channel integer modes

# read_image refuses every image over Pillow's pixel limit itself (Pillow only warns up to twice the limit, and
# would then decode it); the warning would only repeat, once per process, what the skip message says.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


@dataclass
class ImageSet:
    """Images with labels: `load(i)` gives an RGB PIL image; `labels[i]` its class index into `classes`."""

    classes: list[str]
    labels: np.ndarray  # (N,) int64
    paths: list[str] | None = None  # the file of each image, when read from files
    arrays: list[np.ndarray] | None = None  # decoded (H, W, 3) uint8 images, when held in memory
    name: str = "images"  # for messages: "digits", a folder, ...
    bad_files: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of skipped files
    ignored_files: list[str] = field(default_factory=list)  # files without an image extension, never read

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.paths is None and self.arrays is None:
            raise ValueError("an ImageSet needs paths or arrays")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def in_memory(self) -> bool:
        return self.arrays is not None

    def load(self, index: int) -> Image.Image:
        if self.arrays is not None:
            return Image.fromarray(self.arrays[index])
        return read_image(self.paths[index])

    def source(self, index: int) -> str:
        return self.paths[index] if self.paths is not None else f"{self.name}[{index}]"

    def subset(self, indices: Sequence[int], name: str | None = None) -> "ImageSet":
        indices = [int(i) for i in indices]
        return ImageSet(
            classes=self.classes, labels=self.labels[indices] if indices else np.zeros(0, np.int64),
            paths=[self.paths[i] for i in indices] if self.paths is not None else None,
            arrays=[self.arrays[i] for i in indices] if self.arrays is not None else None,
            name=name or self.name, bad_files=self.bad_files, ignored_files=self.ignored_files,
        )

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.classes))


def read_image(path: str | os.PathLike) -> Image.Image:
    """An image file fully decoded to RGB; raises OSError/ValueError for anything that is not a whole image.

    Grey, palette, CMYK and alpha images are converted (alpha is dropped); 16-bit grey is scaled to 8 bits rather
    than clipped. An image whose header declares more pixels than Pillow's `Image.MAX_IMAGE_PIXELS` (a
    decompression bomb: a small file that would decode to gigabytes) is refused before it is decoded.
    """
    try:
        with Image.open(path) as img:
            limit = Image.MAX_IMAGE_PIXELS
            if limit and img.width * img.height > limit:
                raise ValueError(f"{img.width}x{img.height} pixels, over the decompression-bomb limit of "
                                 f"{limit:,} pixels (PIL.Image.MAX_IMAGE_PIXELS)")
            img.load()  # decodes every byte: a truncated file fails here, not at open
            return to_rgb(img)
    except Image.DecompressionBombError as e:  # over twice the limit: Pillow refuses it when opening
        raise ValueError(f"over the decompression-bomb limit of {Image.MAX_IMAGE_PIXELS:,} pixels ({e})") from None
    except (OSError, ValueError):
        raise
    except Exception as e:  # SyntaxError, struct.error, ... from decoders of damaged files
        raise ValueError(f"{type(e).__name__}: {e}") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of a decoded image of any mode."""
    if img.mode in SIXTEEN_BIT_MODES:  # Pillow would clip 16-bit values at 255, not scale them
        values = np.asarray(img).astype(np.float64)
        grey = np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)  # 65535 -> 255
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=-1))
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # (a direct conversion warns about the transparency)
    return img.convert("RGB")


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether the file's name ends in one of `IMAGE_EXTENSIONS` (any case)."""
    return os.path.splitext(str(path))[1].lower() in IMAGE_EXTENSIONS


def _some(names: Sequence[str], shown: int = 3, sep: str = ", ") -> str:
    """'a, b, c and 4 more'."""
    names = list(names)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return sep.join(names[:shown]) + more


def ignored_message(ignored: Sequence[str], where: str) -> str:
    """The one log line listing files left out for their extension."""
    return (f"ignored {len(ignored)} file(s) in {where} that are not images by their extension: {_some(ignored)} "
            f"(images end in {', '.join(IMAGE_EXTENSIONS)})")


def _failure(error: Exception) -> str:
    """Why a file could not be read, in one line."""
    if isinstance(error, FileNotFoundError):
        return "no such file"
    if isinstance(error, IsADirectoryError):
        return "a folder, not a file"
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"not a readable image ({type(error).__name__}: {reason})"


def gather_image_files(items: Sequence[str | os.PathLike], *, log: Callable[[str], None] = print) -> list[str]:
    """The files named, and every image file under the folders named (recursively, as a training tree is read).

    Files under a folder whose names do not end in an image extension are ignored and listed in one `log` line; a
    file named explicitly is always kept (reading it says whether it is an image). A `UsageError` when nothing is
    left.
    """
    files: list[str] = []
    ignored: list[str] = []
    folders = []
    for item in items:
        if os.path.isdir(item):
            folders.append(str(item))
            for path in _files_under(Path(item)):
                (files if is_image_file(path) else ignored).append(path)
        else:
            files.append(str(item))
    if not files:  # one line, with the count of the files left out
        raise UsageError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {', '.join(folders)}"
                         + (f" ({len(ignored)} other file(s) ignored, e.g. {Path(ignored[0]).name})"
                            if ignored else ""))
    if ignored:
        log(ignored_message(ignored, ", ".join(folders)))
    return files


def read_images(paths: Sequence[str | os.PathLike], *, log: Callable[[str], None] = print,
                max_bad_fraction: float | None = None) -> tuple[list[tuple[str, Image.Image]], list[tuple[str, str]]]:
    """Each file decoded to RGB, for commands given files: ([(path, image)] of the readable ones, [(path, reason)]
    of the others).

    The same policy as training folders: an unreadable file (missing, truncated, not an image) is skipped, counted
    and reported in one `log` line; a `UsageError` when none is readable, or when more than `max_bad_fraction` of
    them are not (None: any share, as long as one image is left).
    """
    good: list[tuple[str, Image.Image]] = []
    bad: list[tuple[str, str]] = []
    for path in paths:
        try:
            good.append((str(path), read_image(path)))
        except Exception as e:  # OSError, ValueError, DecompressionBombError, ... as read_image raises them
            bad.append((str(path), _failure(e)))
    if not bad:
        return good, bad
    if not good:
        first, reason = bad[0]
        if len(bad) == 1:
            raise UsageError(f"{first}: {reason}")
        raise UsageError(f"none of the {len(bad)} files is a readable image (first: {first}: {reason})")
    if max_bad_fraction is not None and len(bad) / len(paths) > max_bad_fraction:
        first, reason = bad[0]
        raise UsageError(f"{len(bad)} of {len(paths)} files ({100 * len(bad) / len(paths):.1f}%) are not readable "
                         f"images, more than the limit of {100 * max_bad_fraction:g}% (first: {first}: {reason})")
    log(f"skipped {len(bad)} of {len(paths)} file(s): " + _some([f"{p}: {r}" for p, r in bad], sep="; "))
    return good, bad


def _check_file(path: str, keep: bool) -> tuple[np.ndarray | None, str | None, int]:
    """(array if keep, error reason, decoded bytes) for one file."""
    try:
        img = read_image(path)
    except Exception as e:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return None, f"{type(e).__name__}: {reason}", 0
    size = img.width * img.height * 3
    return (np.asarray(img, dtype=np.uint8) if keep else None), None, size


# ---------------------------------------------------------------------------------------------- digits
@functools.lru_cache(maxsize=1)
def load_digits_set() -> ImageSet:
    """scikit-learn's bundled handwritten digits: 1,797 grey 8x8 images (values 0-16), 10 classes."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = np.round(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # (N, 8, 8)
    rgb = np.repeat(grey[..., None], 3, axis=-1)  # (N, 8, 8, 3)
    return ImageSet(classes=[str(c) for c in range(10)], labels=digits.target, arrays=list(rgb), name="digits")


# ------------------------------------------------------------------------------------------- ImageFolder
def _visible(name: str) -> bool:
    return not name.startswith(".") and not name.startswith("__")


def _class_folders(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir() and _visible(p.name)), key=lambda p: p.name)


def _files_under(folder: Path) -> list[str]:
    """Every visible file below `folder`, following symlinked folders but never one that loops back to a folder
    already walked or up to one holding `folder` (which would list the files again, or other classes' files)."""
    files = []
    root = os.path.realpath(folder)
    seen = {root}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        keep = []
        for d in sorted(d for d in dirnames if _visible(d)):
            real = os.path.realpath(os.path.join(dirpath, d))
            if real in seen or root == real or root.startswith(real.rstrip(os.sep) + os.sep):
                continue
            seen.add(real)
            keep.append(d)
        dirnames[:] = keep
        files.extend(os.path.join(dirpath, f) for f in sorted(filenames) if _visible(f))
    return files


def scan_image_folder(root: str | os.PathLike, *, max_bad_fraction: float = 0.01, cache: str = "auto",
                      limit_per_class: int | None = None, seed: int = 0, log: Callable[[str], None] = print,
                      progress: bool = True) -> ImageSet:
    """An ImageFolder tree (root/<class>/<image>), every file checked by decoding it.

    Files whose names do not end in an image extension are ignored and listed in one log line. Image files that
    cannot be decoded (unreadable, truncated, another kind of file named .jpg) are skipped and logged; the scan
    stops with a `UsageError` when their share exceeds `max_bad_fraction`, when the folder has no class folders, or
    when a class has no readable image. With `limit_per_class`, a seeded choice of that many files
    per class is checked and kept.
    """
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root}: no such folder")
    classes = _class_folders(root)
    if not classes:
        raise UsageError(f"{root}: no class folders (expected {root}/<class>/<image> files)")
    paths: list[str] = []
    labels: list[int] = []
    ignored: list[str] = []
    for index, folder in enumerate(classes):
        found = _files_under(folder)
        files = [p for p in found if is_image_file(p)]
        ignored.extend(p for p in found if not is_image_file(p))
        if not files:
            raise UsageError(f"{folder}: class {folder.name!r} has no images"
                             + (f" (only {len(found)} file(s) without an image extension, e.g. "
                                f"{Path(found[0]).name})" if found else ""))
        if limit_per_class is not None and len(files) > limit_per_class:
            pick = np.random.default_rng([seed, index]).permutation(len(files))[:limit_per_class]
            files = [files[i] for i in sorted(pick)]
        paths.extend(files)
        labels.extend([index] * len(files))

    if ignored:
        log(ignored_message([os.path.relpath(p, root) for p in ignored], str(root)))

    keep = cache in ("auto", "yes")
    arrays: list[np.ndarray | None] = []
    readable: list[bool] = []
    bad: list[tuple[str, str]] = []
    total_bytes = 0
    bar = _progress_bar(len(paths), f"checking {root.name or root}", progress and len(paths) >= 2000)
    workers = min(8, max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL decodes without holding the GIL
        for path, (array, error, size) in zip(paths, pool.map(lambda p: _check_file(p, keep), paths,
                                                                chunksize=64)):
            bar.update(1)
            if error is not None:
                bad.append((path, error))
                log(f"skipped {path}: not a readable image ({error})")
                arrays.append(None)
                readable.append(False)
                continue
            readable.append(True)
            total_bytes += size
            if keep and cache == "auto" and total_bytes > CACHE_BUDGET_BYTES:
                keep = False
                arrays = [None] * len(arrays)
            arrays.append(array if keep else None)
    bar.close()

    if bad and len(bad) / len(paths) > max_bad_fraction:
        first_path, first_reason = bad[0]
        raise UsageError(
            f"{root}: {len(bad)} of {len(paths)} files ({100 * len(bad) / len(paths):.1f}%) are not readable images, "
            f"more than the limit of {100 * max_bad_fraction:g}% (first: {first_path}: {first_reason}); fix or "
            "remove them, or raise --max-bad-fraction")
    good = [i for i, ok in enumerate(readable) if ok]
    good_labels = np.asarray([labels[i] for i in good], dtype=np.int64)
    counts = np.bincount(good_labels, minlength=len(classes))
    for index, count in enumerate(counts):
        if count == 0:
            raise UsageError(f"{classes[index]}: class {classes[index].name!r} has no readable images")
    return ImageSet(
        classes=[c.name for c in classes], labels=good_labels,
        paths=[paths[i] for i in good], arrays=[arrays[i] for i in good] if keep else None,
        name=str(root), bad_files=bad, ignored_files=ignored,
    )


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, leave=False, dynamic_ncols=True)


# --------------------------------------------------------------------------------------- CIFAR pickles
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a data file can never run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}")


def _read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            data = _ArrayUnpickler(io.BufferedReader(f), encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as e:
        raise UsageError(f"{path}: not a readable CIFAR batch ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: not a CIFAR batch (expected a dict)")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in data.items()}


def cifar_pickle_root(path: Path) -> Path | None:
    """The folder holding CIFAR-10/100 python batches at or directly under `path`, or None."""
    for candidate in (path, path / "cifar-10-batches-py", path / "cifar-100-python"):
        if (candidate / "batches.meta").is_file() or ((candidate / "meta").is_file()
                                                       and (candidate / "train").is_file()):
            return candidate
    return None


def load_cifar_pickle(root: Path, split: str) -> ImageSet:
    """CIFAR-10 (data_batch_1..5, test_batch, batches.meta) or CIFAR-100 (train, test, meta), split 'train'
    or 'test'."""
    if (root / "batches.meta").is_file():  # CIFAR-10
        meta = _read_pickle(root / "batches.meta")
        names = meta.get("label_names")
        files = sorted(root.glob("data_batch_*")) if split == "train" else [root / "test_batch"]
        label_key = "labels"
    else:  # CIFAR-100
        meta = _read_pickle(root / "meta")
        names = meta.get("fine_label_names")
        files = [root / ("train" if split == "train" else "test")]
        label_key = "fine_labels"
    if not names:
        raise UsageError(f"{root}: the meta file lists no class names")
    classes = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]
    images, labels = [], []
    for file in files:
        if not file.is_file():
            raise UsageError(f"{file}: missing CIFAR batch")
        batch = _read_pickle(file)
        data = np.asarray(batch.get("data"))
        if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
            raise UsageError(f"{file}: expected data of shape (N, 3072) uint8, found {data.shape} {data.dtype}")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # (N, 32, 32, 3)
        labels.extend(int(v) for v in batch.get(label_key, []))
    if not files:
        raise UsageError(f"{root}: no CIFAR batches found")
    array = np.concatenate(images)
    if len(array) != len(labels):
        raise UsageError(f"{root}: {len(array)} images but {len(labels)} labels")
    labels_arr = np.asarray(labels, dtype=np.int64)
    if labels_arr.min(initial=0) < 0 or labels_arr.max(initial=0) >= len(classes):
        raise UsageError(f"{root}: labels outside 0..{len(classes) - 1}")
    return ImageSet(classes=classes, labels=labels_arr, arrays=list(array), name=f"{root} ({split})")
