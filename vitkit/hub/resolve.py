"""What `vitkit.load(source)` and every command taking a model make of `source`: a local path, a catalog name, or
a URI, in that order; anything else is a one-line error naming the closest catalog names."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import CheckpointError
from .catalog import PretrainedCheckpoint, class_names, closest_names, find_pretrained

URI_SCHEMES = ("hf-hub:", "https://", "http://", "gs://")
FILES_WITHOUT_PREPROCESSING = ("google-npz", "torchvision-pth", "timm-hub")  # Hugging Face folders have their own


def looks_like_uri(source: str) -> bool:
    return str(source).strip().lower().startswith(URI_SCHEMES)


def fetch(uri: str, sha256: str | None = None) -> Path:
    """The local copy of a URI (downloaded into the cache, or found there), by the downloader in `download.py`."""
    try:
        from .download import resolve_uri
    except ImportError:  # the downloader is a separate module; without it nothing remote can be read
        raise CheckpointError(uri, "downloading is not available in this build of vitkit (no vitkit.hub.download)") \
            from None
    return Path(resolve_uri(uri, sha256=sha256))


def resolve_source(source: str | os.PathLike, *, sha256: str | None = None) -> tuple[Path, PretrainedCheckpoint | None]:
    """(local path, catalog entry or None) for a path, a catalog name (or an entry's Hugging Face / timm id) or a URI.

    An existing local path wins, then a catalog name, then a URI (`hf-hub:ORG/REPO[@REV]`, `https://...`,
    `gs://BUCKET/PATH`). `sha256` checks the downloaded file (a catalog entry's own hash is checked anyway).
    """
    path = Path(source)
    if path.exists():
        return path, None
    text = str(source).strip()
    entry = find_pretrained(text)
    if entry is not None:
        local = fetch(entry.uri, sha256=sha256 or entry.sha256)
        return entry_file(local, entry), entry
    if looks_like_uri(text):
        return fetch(text, sha256=sha256), None
    close = closest_names(text)
    if close:
        raise CheckpointError(text, f"no such file, and not a pre-trained name; did you mean {', '.join(close)}? "
                              "(vitkit models --pretrained lists them)")
    raise CheckpointError(text, "no such file or directory (nor a pre-trained name or URI: vitkit models --pretrained "
                          "lists the names; URIs are hf-hub:ORG/REPO, https://... or gs://...)")


def entry_file(local: Path, entry: PretrainedCheckpoint) -> Path:
    """The file to read inside what the download gave: timm's hub folders hold model.safetensors (or
    pytorch_model.bin) next to a timm config.json that is not a Hugging Face one."""
    if entry.format == "timm-hub" and local.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (local / name).is_file():
                return local / name
    return local


def entry_hints(entry: PretrainedCheckpoint | None) -> dict:
    """What the catalog knows about the architecture that some files do not record: the heads of the variant."""
    if entry is None:
        return {}
    from ..configs import variant_config

    try:
        return {"num_heads": variant_config(entry.variant).num_heads}
    except ValueError:
        return {}


def apply_entry(converted, entry: PretrainedCheckpoint | None):
    """Give a converted checkpoint the entry's class names and preprocessing where the file has none of its own
    (.npz, torchvision and timm files carry neither), so that predictions are named and inputs prepared as the
    source prepared them."""
    if entry is None:
        return converted
    if entry.format in FILES_WITHOUT_PREPROCESSING:
        from ..configs import Preprocessing

        converted.preprocessing = Preprocessing(image_size=converted.config.image_size, mean=entry.mean,
                                                std=entry.std, interpolation=entry.interpolation,
                                                crop_pct=entry.crop_pct)
    if converted.class_names is None and entry.class_names and converted.config.num_classes == entry.num_classes:
        converted.class_names = class_names(entry.class_names)
    return converted


__all__ = ["resolve_source", "looks_like_uri", "apply_entry", "entry_hints", "entry_file", "fetch"]
