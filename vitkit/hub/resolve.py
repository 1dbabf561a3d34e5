"""What `vitkit.load(source)` and every command taking a model make of `source`: a local path, a catalog name, or
a URI, in that order; anything else is a one-line error naming the closest catalog names."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..errors import CheckpointError, DownloadError
from .catalog import PretrainedCheckpoint, class_ids, class_names, closest_names, find_pretrained
from .uri import is_uri, resolve_uri

FILES_WITHOUT_PREPROCESSING = ("google-npz", "torchvision-pth")  # timm's config.json and Hugging Face folders have it


def fetch(entry: PretrainedCheckpoint, sha256: str | None = None) -> Path:
    """The local copy of a catalog entry's file (downloaded into the cache, or found there), its hash checked: the
    full SHA-256 where the source publishes one, else the prefix torchvision puts in its file names."""
    from .download import file_sha256

    local = Path(resolve_uri(entry.uri, sha256=sha256 or entry.sha256))
    if entry.sha256_prefix and not (sha256 or entry.sha256) and local.is_file():
        digest = file_sha256(local)  # recorded next to the cached file, so this reads the file once
        if not digest.startswith(entry.sha256_prefix):
            for path in (local, local.with_name(local.name + ".sha256")):
                with contextlib.suppress(OSError):
                    path.unlink()
            raise DownloadError(entry.uri, f"SHA-256 {digest} does not start with {entry.sha256_prefix}, the prefix "
                                "the source publishes in the file name; the file was discarded")
    return local


def resolve_source(source: str | os.PathLike, *, sha256: str | None = None) -> tuple[Path, PretrainedCheckpoint | None]:
    """(local path, catalog entry or None) for a path, a catalog name (or an entry's Hugging Face / timm id) or a URI.

    An existing local path wins, then a catalog name, then a URI (`hf-hub:ORG/REPO[@REV]`, `https://...`,
    `gs://BUCKET/PATH`). `sha256` checks the downloaded file (a catalog entry's own hash is checked anyway).
    """
    path = Path(source)
    if path.exists():
        if sha256 is not None:
            check_local_sha256(path, sha256)
        return path, None
    text = str(source).strip()
    entry = find_pretrained(text)
    if entry is not None:
        return fetch(entry, sha256), entry
    if is_uri(text):
        return resolve_uri(text, sha256=sha256), None
    close = closest_names(text)
    if close:
        raise CheckpointError(text, f"no such file, and not a pre-trained name; did you mean {', '.join(close)}? "
                              "(vitkit models --pretrained lists them)")
    raise CheckpointError(text, "no such file or directory (nor a pre-trained name or URI: vitkit models --pretrained "
                          "lists the names; URIs are hf-hub:ORG/REPO, https://... or gs://...)")


def check_local_sha256(path: Path, sha256: str) -> None:
    """A hash the caller gives is checked on a local file too (read here, nothing written beside the file)."""
    from ..files import sha256_of_file

    expected = str(sha256).strip().lower()
    if path.is_dir():
        raise CheckpointError(path, "sha256= checks a single file, and this is a folder")
    found = sha256_of_file(path)
    if found != expected:
        raise CheckpointError(path, f"SHA-256 mismatch: expected {expected}, got {found}")


def model_source(source: str | os.PathLike) -> Path | str:
    """What a command hands to `vitkit.load`: a local run or checkpoint folder resolved to its weights file, else the
    text as given (a catalog name or a URI, which `load` resolves; `Path` would fold the // of a URL)."""
    from ..training.checkpoint import resolve_model_path

    if Path(source).exists():
        return resolve_model_path(source)
    return str(source)


def load_source(source: str | os.PathLike, hints: dict) -> tuple[Path | str, dict]:
    """`model_source` with `load`'s keywords: for a run folder, `ema` chooses its file (True: the run's moving
    average, model_ema.safetensors; False: model.safetensors) and is then spent; elsewhere it goes to `load`."""
    from ..training.run_folder import EMA_WEIGHTS, WEIGHTS, is_run_dir

    ema = hints.get("ema")
    if ema is None or not Path(source).is_dir() or not is_run_dir(Path(source)):
        return model_source(source), hints
    folder, rest = Path(source), {k: v for k, v in hints.items() if k != "ema"}
    chosen = folder / (EMA_WEIGHTS if ema else WEIGHTS)
    if not chosen.is_file():
        why = "kept no moving average (--ema-decay)" if ema and (folder / WEIGHTS).is_file() else \
            "has not finished (its checkpoints keep the average inside their training state)"
        raise CheckpointError(folder, f"--ema / ema=True: the run {why}; no {chosen.name}" if ema else
                              f"no {chosen.name}: the run has not finished")
    return chosen, rest


def is_known_source(source: str | os.PathLike) -> bool:
    """Whether `load` can take `source` at all: an existing path, a catalog name or a URI (not yet fetched)."""
    return Path(source).exists() or find_pretrained(str(source)) is not None or is_uri(str(source))


def entry_hints(entry: PretrainedCheckpoint | None) -> dict:
    """What the catalog knows of the model, given to the reader as ViTConfig fields the caller did not give: the
    file's own resolution, and the heads of the variant for the formats that do not show them (torchvision's fused
    in_proj, timm's qkv). Readers check these against what the file records, like any given field."""
    if entry is None:
        return {}
    hints = {"image_size": entry.image_size}
    if entry.format in ("torchvision-pth", "timm-hub"):
        from ..configs import variant_config

        try:
            hints["num_heads"] = variant_config(entry.variant).num_heads
        except ValueError:
            pass
        # every such entry is a plain (or hybrid) ViT of timm's and torchvision's defaults, which these state dicts
        # cannot show: class-token pooling, exact GELU, LayerNorm eps 1e-6
        hints.update(pool="token", gelu="exact", layer_norm_eps=1e-6)
    return hints


def apply_entry(converted, entry: PretrainedCheckpoint | None):
    """Give a converted checkpoint the entry's class names and preprocessing where the file has none of its own
    (.npz, torchvision and timm files carry neither), so that predictions are named and inputs prepared as the
    source prepared them."""
    if entry is None:
        return converted
    from ..configs import variant_config

    config, variant = converted.config, variant_config(entry.variant)
    patch = tuple(p * config.stem_stride for p in config.patch_size)  # in pixels, hybrids included
    found = (tuple(config.image_size), config.num_classes, patch)
    listed = ((entry.image_size,) * 2, entry.num_classes, tuple(p * variant.stem_stride for p in variant.patch_size))
    if found != listed:
        raise CheckpointError(entry.uri, f"the catalog lists {entry.name} at {entry.image_size} px with "
                              f"{entry.num_classes} classes and {listed[2][0]}-px patches, but the file has "
                              f"{found[0][0]}x{found[0][1]} px, {found[1]} classes and {found[2][0]}x{found[2][1]}-px "
                              "patches (a wrong mirror or cache entry?)")
    if entry.format in FILES_WITHOUT_PREPROCESSING:
        from ..configs import Preprocessing

        converted.preprocessing = Preprocessing(image_size=converted.config.image_size, mean=entry.mean,
                                                std=entry.std, interpolation=entry.interpolation,
                                                crop_pct=entry.crop_pct,  # torchvision: Resize(shorter side), crop
                                                resize="shorter" if entry.format == "torchvision-pth" else None)
    if entry.class_names and converted.config.num_classes == entry.num_classes and converted.class_names in (
            None, class_ids(entry.class_names)):  # timm's label_names are WordNet ids: the same classes, readable
        converted.class_names = class_names(entry.class_names)  # (eval still matches folders named n01440764)
    return converted


__all__ = ["resolve_source", "apply_entry", "entry_hints", "fetch", "model_source", "load_source", "is_known_source"]
