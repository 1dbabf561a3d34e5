"""Classifying images, the whole of `vitkit predict` and `vitkit.predict`: files and folders (every image file
inside) and PIL images, unreadable files as error records within `max_bad_fraction`, the top-k class names and
probabilities of each. The command only parses its flags and prints these records."""

from __future__ import annotations

import os
from typing import Callable, Sequence


def predict_records(model, images, top_k: int = 5, *, batch_size: int = 32, device=None,
                    max_bad_fraction: float | None = 1.0, log: Callable[[str], None] | None = None,
                    where: str | None = None) -> list[dict]:
    """One record per image, in order, as `vitkit predict --json` prints them: {"image": path, "predictions":
    [{"class", "index", "probability"}, ...]} best first, or {"image": path, "error": reason} for a file that cannot
    be read. images: a path (a file or a folder), a PIL image ("image": None in its record), or a sequence of them.
    `model`: a VisionTransformer or an exported model (`vitkit.export.load_exported`), already on `device`.
    An unreadable share above `max_bad_fraction` (None: any, while one image is readable), or no image at all, is a
    one-line UsageError; `log` receives the warnings (files ignored in folders, files skipped). `where`: the model's
    name in error messages."""
    from PIL import Image

    from ..data import eval_transform, gather_image_files, read_images
    from ..errors import UsageError
    from .evaluate import classify

    say = log or (lambda message: None)
    if model.num_classes == 0:
        raise UsageError(f"{where + ': ' if where else ''}the model has no classifier head")
    items: Sequence = [images] if isinstance(images, (str, os.PathLike, Image.Image)) else list(images)
    entries: list = []  # file paths (str) and PIL images, in the order given, folders expanded
    run: list = []  # consecutive paths, gathered together (one warning for the files a folder ignores)
    end = object()
    for item in [*items, end]:
        if isinstance(item, (str, os.PathLike)):
            run.append(item)
            continue
        if run:
            entries.extend(gather_image_files(run, log=say))
            run = []
        if item is not end:
            if not isinstance(item, Image.Image):
                raise UsageError(f"images: expected file or folder paths and PIL images, got {type(item).__name__}")
            entries.append(item)
    if not entries:
        raise UsageError("no images to classify")
    paths = [entry for entry in entries if isinstance(entry, str)]
    readable, unreadable = read_images(paths, log=say, max_bad_fraction=max_bad_fraction) if paths else ([], [])
    decoded = dict(readable)
    errors = dict(unreadable)
    good = [entry for entry in entries if not isinstance(entry, str) or entry in decoded]
    pictures = [decoded[entry] if isinstance(entry, str) else entry.convert("RGB") for entry in good]
    names = model.class_names or [str(i) for i in range(model.num_classes)]
    tops = iter(classify(model, pictures, eval_transform(model.preprocessing), top_k, batch_size, device))
    records = []
    for entry in entries:
        image = entry if isinstance(entry, str) else None
        if image is not None and image in errors:
            records.append({"image": image, "error": errors[image]})
        else:
            records.append({"image": image, "predictions": [{"class": names[i], "index": i, "probability": p}
                                                            for i, p in next(tops)]})
    return records
