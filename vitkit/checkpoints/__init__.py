"""Loading and saving models in vitkit's own format and in the ecosystem's (Google .npz, timm, Hugging Face).

`load(path, **fields)` reads the architecture from the file itself (what the file does not record comes from the
caller or is announced as a guess), builds the model, checks every tensor's name and shape, and applies the paper's
fine-tuning adaptation when asked (new zero head, resampled position grid).
`save(model, path, format=...)` writes a file that the format's own library loads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path

import torch

from ..configs import POOLS, TRAINING_FIELDS, Preprocessing, ViTConfig, to_pair
from ..errors import CheckpointError, GuessWarning
from ..models.posemb import RESAMPLE_METHODS
from ..models.vit import VisionTransformer
from .common import Converted, Settings, check_against_model, check_block_counts, contradiction
from .google_npz import from_google, looks_like_google, to_google
from .hf import from_hf, looks_like_hf, read_hf_dir, read_preprocessing, write_hf_dir
from .io import (NPZ_SUFFIXES, SAFETENSORS_SUFFIXES, TORCH_SUFFIXES, atomic_path, read_npz, read_safetensors,
                 read_torch, save_safetensors, unwrapped)
from .torchvision import from_torchvision, looks_like_torchvision, to_torchvision
from .timm import from_timm, is_timm_hub, looks_like_timm, read_timm_hub, timm_kwargs, to_timm

FORMATS = ("vitkit", "google", "timm", "hf", "torchvision")
FORMAT_KEY = "vitkit.format"  # metadata key of files vitkit writes: "vitkit", "timm", "torchvision" or "hf"


def _metadata(model: VisionTransformer, fmt: str) -> dict[str, str]:
    meta = {
        "format": "pt",  # what transformers and timm expect in safetensors metadata
        FORMAT_KEY: fmt,
        "vitkit.config": model.config.to_json(),
        "vitkit.preprocessing": json.dumps(model.preprocessing.to_dict()),
    }
    if model.class_names:
        meta["vitkit.class_names"] = json.dumps(list(model.class_names))
    if model.resample_method != "bicubic":  # how the model resamples for other input sizes (its source's way)
        meta["vitkit.resample_method"] = model.resample_method
    return meta


def _vitkit_from_metadata(meta: dict[str, str], tensors: dict[str, torch.Tensor], path) -> Converted:
    try:
        config = ViTConfig.from_dict(json.loads(meta["vitkit.config"]))
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(path, f"invalid model config in the metadata ({e})", key="vitkit.config") from None
    preprocessing, class_names = _extras_from_metadata(meta, path)
    resample = meta.get("vitkit.resample_method", "bicubic")
    if resample not in RESAMPLE_METHODS:
        raise CheckpointError(path, f"unknown resampling method {resample!r}; expected one of "
                              f"{', '.join(RESAMPLE_METHODS)}", key="vitkit.resample_method")
    return Converted(config, dict(tensors), {}, preprocessing or Preprocessing(image_size=config.image_size),
                     class_names, dynamic_resample=resample)


def _extras_from_metadata(meta: dict[str, str], path):
    preprocessing = class_names = None
    try:
        if "vitkit.preprocessing" in meta:
            preprocessing = Preprocessing.from_dict(json.loads(meta["vitkit.preprocessing"]))
        if "vitkit.class_names" in meta:
            class_names = json.loads(meta["vitkit.class_names"])
            if not isinstance(class_names, list) or not all(isinstance(n, str) for n in class_names):
                raise ValueError("expected a list of strings")
    except (ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(path, f"invalid metadata ({e})", key="vitkit.preprocessing/class_names") from None
    return preprocessing, class_names


def _hints(meta: dict[str, str]) -> dict:
    """What a vitkit-written timm or HF file recorded that its tensors cannot show."""
    try:
        config = json.loads(meta["vitkit.config"])
    except (KeyError, ValueError):
        return {}
    if not isinstance(config, dict):
        return {}
    checks = {
        "num_heads": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
        "pool": lambda v: v in POOLS,
        "gelu": lambda v: v in ("exact", "tanh"),
        "layer_norm_eps": lambda v: isinstance(v, float) and v > 0,
        "image_size": lambda v: isinstance(v, list) and len(v) == 2 and all(isinstance(s, int) and s > 0 for s in v),
    }
    return {k: config[k] for k, ok in checks.items() if k in config and ok(config[k])}


def _given(path, fields: dict) -> dict:
    """The caller's ViTConfig fields, normalised so that readers can compare them with what a file records."""
    known = {f.name for f in dataclasses.fields(ViTConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise TypeError(f"load() got unexpected argument(s): {', '.join(unknown)}; it takes num_classes, "
                        "resample_to, resample_method and ViTConfig fields")
    given = {k: v for k, v in fields.items() if v is not None}
    try:
        for name in ("image_size", "patch_size"):
            if name in given:
                given[name] = to_pair(given[name])
    except ValueError as e:
        raise CheckpointError(path, f"invalid {name} ({e})", key=name) from None
    if isinstance(given.get("layer_norm_eps"), int):
        given["layer_norm_eps"] = float(given["layer_norm_eps"])
    return given


def read_checkpoint(path: str | os.PathLike, *, sha256: str | None = None, ema: bool | None = None,
                    **fields) -> Converted:
    """Any supported file or folder, catalog name (`vitkit.list_pretrained()`) or URI, converted to vitkit's names
    and a config; `fields` are what the caller knows of the model (ViTConfig fields), which settle what the file
    leaves open. See `load`."""
    from ..hub.resolve import apply_entry, entry_hints, resolve_source

    path, entry = resolve_source(path, sha256=sha256)  # a local path as it is; a name or URI from the cache
    fields = {**entry_hints(entry), **{k: v for k, v in fields.items() if v is not None}}
    return apply_entry(_read_file(path, ema=ema, **fields), entry)


def _read_file(path: str | os.PathLike, ema: bool | None = None, **fields) -> Converted:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "no such file or directory")
    if ema and (path.is_dir() or path.suffix.lower() not in TORCH_SUFFIXES):
        raise CheckpointError(path, "ema=True (--ema) picks the moving average inside a PyTorch training checkpoint "
                              "(.pth, .pth.tar, .ckpt, ...); this file holds one set of weights")
    settings = Settings(path, _given(path, fields))
    if path.is_dir():
        if is_timm_hub(path):  # config.json names a timm architecture
            return read_timm_hub(path, settings)
        if not (path / "config.json").exists():
            raise CheckpointError(path, "a folder must be a Hugging Face model folder with config.json")
        tensors, hf_cfg = read_hf_dir(path)
        weights_meta = {}
        st = path / "model.safetensors"
        if st.exists():
            from .io import read_safetensors_metadata

            weights_meta = read_safetensors_metadata(st)
        converted = from_hf(tensors, path, hf_cfg, settings, hints=_hints(weights_meta))
        converted.preprocessing = read_preprocessing(path, converted.config.image_size)
        return converted

    suffix = path.suffix.lower()
    meta: dict[str, str] = {}
    if suffix in NPZ_SUFFIXES:
        return from_google(read_npz(path), path, settings)
    if suffix in SAFETENSORS_SUFFIXES:
        tensors, meta = read_safetensors(path)
    elif suffix in TORCH_SUFFIXES:
        tensors = read_torch(path, ema=ema)
    else:
        raise CheckpointError(path, f"unknown file type {suffix!r}: expected .safetensors, .npz, "
                              f"{'/'.join(TORCH_SUFFIXES)} (PyTorch), or a Hugging Face folder")
    kind = meta.get(FORMAT_KEY)
    if kind == "vitkit":
        converted = _vitkit_from_metadata(meta, tensors, path)
        for name, value in settings.given.items():  # a vitkit file records every field
            settings.recorded(name, _comparable(converted.config, name), key="vitkit.config")
        return converted
    keys = list(tensors)
    hints = _hints(meta)
    prefix = _common_prefix(keys)
    if prefix and not _known_layout(keys) and _known_layout([unwrapped(k.removeprefix(prefix)) for k in keys]):
        warnings.warn(f"{path}: every key starts with {prefix!r} (a training wrapper's attribute, as Lightning's "
                      "model.); read without it", GuessWarning, stacklevel=3)
        tensors = {unwrapped(k.removeprefix(prefix)): v for k, v in tensors.items()}
        keys = list(tensors)
    if looks_like_hf(keys):
        converted = from_hf(tensors, path, None, settings, hints=hints)
    elif looks_like_timm(keys):
        converted = from_timm(tensors, path, settings, hints=hints)
    elif looks_like_torchvision(keys):
        converted = from_torchvision(tensors, path, settings, hints=hints)
    elif looks_like_google(keys):
        converted = from_google({k: v.numpy() if v.dtype != torch.bfloat16 else v.float().numpy()
                                 for k, v in tensors.items()}, path, settings)
    else:
        raise CheckpointError(path, "unknown layout: the keys match neither vitkit, timm, torchvision, Hugging Face "
                              f"nor Google's naming (first key: {keys[0] if keys else 'none, the file is empty'})",
                              key=keys[0] if keys else None)
    preprocessing, class_names = _extras_from_metadata(meta, path)
    if preprocessing is not None:
        converted.preprocessing = preprocessing
    if class_names is not None:
        converted.class_names = class_names
    return converted


def _known_layout(keys: list[str]) -> bool:
    return any(looks(keys) for looks in (looks_like_hf, looks_like_timm, looks_like_torchvision, looks_like_google))


def _common_prefix(keys: list[str]) -> str | None:
    """The first name part every key shares ("model." in a Lightning module's state dict), if there is one."""
    firsts = {k.split(".", 1)[0] for k in keys if "." in k}
    if len(firsts) != 1 or not all("." in k for k in keys):
        return None
    return firsts.pop() + "."


def _comparable(config: ViTConfig, name: str):
    value = getattr(config, name)
    return tuple(value) if name in ("image_size", "patch_size") else value


def _announce(path, converted: Converted) -> None:
    """One warning naming every value a reader assumed and the keyword that would have said it."""
    guessed = converted.guessed
    if not guessed:
        return
    parts = [f"{name}={value!r} ({why})" for name, (value, why) in guessed.items()]
    keywords = ", ".join(f"{name}=" for name in guessed)
    notes = "".join(f"; {note}" for note in converted.notes)
    what = f"{path}: the file does not record everything that decides the model; assumed {'; '.join(parts)}{notes}"
    warning = GuessWarning(f"{what}. Pass {keywords} to load() to say")
    warning.what = what  # and the values assumed: a command names its own flags instead of load()'s keywords
    warning.guessed = {name: value for name, (value, _) in guessed.items()}
    warnings.warn(warning, stacklevel=3)


def load(
    path: str | os.PathLike,
    *,
    num_classes: int | None = None,
    resample_to=None,
    resample_method: str | None = None,
    sha256: str | None = None,
    ema: bool | None = None,
    **fields,
) -> VisionTransformer:
    """A model from a checkpoint of any supported format, its architecture read from the file.

    The loading rule: every value that decides the function is read from the file (or a config file beside it) or
    given here as a ViTConfig field (`num_heads=`, `image_size=` (the file's own size), `pool=`, `gelu=`,
    `layer_norm_eps=`, ...). A value the file does not record and the caller does not give is guessed and announced
    (a `GuessWarning` naming the keyword); where the file fits several models and nothing settles it, a
    `CheckpointError` lists them. A field that contradicts what the file records is refused, never applied.
    Training-time fields (dropout, attention_dropout, drop_path, patch_dropout) and dynamic_image_size are free.

    Fine-tuning adaptation (the paper's Section 3.2), after loading:
      num_classes=K    drop the pre-trained head (and representation layer) and attach a zero-initialised K-way head
      resample_to=S    resample the position embeddings to a new image size (bilinear for Google files, as the
                       original code; bicubic otherwise; or as resample_method says)
    `path` may also be a catalog name (`vitkit.list_pretrained()`) or a URI (hf-hub:ORG/REPO[@REV], https://...,
    gs://BUCKET/PATH), downloaded into the cache; `sha256` checks the downloaded file. A training checkpoint that
    holds both the weights and their moving average needs `ema` (True: the average, False: the weights).
    """
    free = {k: fields.pop(k) for k in (*TRAINING_FIELDS, "dynamic_image_size", "name") if k in fields}
    converted = read_checkpoint(path, sha256=sha256, ema=ema, **fields)
    config = converted.config
    given = _given(path, fields)
    for name, value in given.items():  # what a reader did not check itself
        if _comparable(config, name) != value:
            raise CheckpointError(path, contradiction(name, _comparable(config, name), value), key=name)
    _announce(path, converted)
    try:
        free = {k: v for k, v in free.items() if v is not None}
        if free:
            config = config.replace(**free)
        check_block_counts(config, converted, path)  # before building anything, so a huge depth cannot hang us
        with torch.device("meta"):  # shapes first, without memory for weights
            check_against_model(VisionTransformer(config), converted, path)
    except (ValueError, TypeError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(path, f"invalid model configuration ({e})") from None
    model = VisionTransformer(config)
    model.load_state_dict(converted.state_dict, strict=True)
    model.preprocessing = converted.preprocessing or Preprocessing(image_size=config.image_size)
    model.class_names = converted.class_names
    model.resample_method = converted.dynamic_resample
    if num_classes is not None:
        if config.representation_size:  # the paper's fine-tuning drops the whole pre-trained head
            model.pre_logits = torch.nn.Identity()
            model.num_features = config.width
            model.config = model.config.replace(representation_size=None)
        model.reset_classifier(num_classes)
    if resample_to is not None:
        model.set_image_size(resample_to, method=resample_method or converted.default_resample)
    model.eval()
    return model


def records_config(format: str, path: str | os.PathLike) -> bool:
    """Whether `save` in `format` to `path` records the model's config and class names (vitkit's metadata, an HF
    config.json), or writes tensors only (Google .npz, timm and torchvision .pth), which a reader reads afresh."""
    return not (format == "google" or (format in ("timm", "torchvision") and Path(path).suffix.lower() in
                                       TORCH_SUFFIXES))


def save(model: VisionTransformer, path: str | os.PathLike, format: str = "vitkit") -> Path:
    """Write a model so that the format's own library loads it; returns the path written.

      vitkit  safetensors, with the config, preprocessing and class names in its metadata
      google  .npz with the published checkpoints' names and Flax layouts (the original code's `load`)
      timm    a state dict for `timm.models.VisionTransformer` (.safetensors, or .pth by the suffix)
      hf      a folder `ViTForImageClassification.from_pretrained` loads (config.json, model.safetensors,
              preprocessor_config.json)
      torchvision  a state dict `torchvision.models.VisionTransformer(**torchvision_kwargs(config))` loads strictly
              (.pth by torch.save, or .safetensors with vitkit's metadata by the suffix)
    Files are written atomically: a crash leaves the previous file, never a partial one.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; expected one of {FORMATS}")
    path = Path(path)
    if not records_config(format, path) and model.class_names:
        warnings.warn(f"{path}: a {format} {path.suffix or 'file'} holds tensors only, so the model's "
                      f"{len(model.class_names)} class names are not written (a .safetensors file or a Hugging Face "
                      "folder keeps them)", stacklevel=2)
    if format == "vitkit":
        save_safetensors(path, model.state_dict(), _metadata(model, "vitkit"))
    elif format == "google":
        import numpy as np

        arrays = to_google(model)
        if model.config.gelu != "tanh":
            warnings.warn("the original JAX model uses tanh GELU; this model uses exact GELU, so the JAX model will "
                          "compute slightly different outputs (about 2.5e-4 relative)", stacklevel=2)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
    elif format == "timm":
        tensors = to_timm(model)
        if path.suffix.lower() in TORCH_SUFFIXES:
            with atomic_path(path) as tmp:
                torch.save({k: v.contiguous() for k, v in tensors.items()}, tmp)
        else:
            save_safetensors(path, tensors, _metadata(model, "timm"))
    elif format == "hf":
        write_hf_dir(model, path, _metadata(model, "hf"))
    elif format == "torchvision":
        tensors = to_torchvision(model)
        if path.suffix.lower() in SAFETENSORS_SUFFIXES:
            save_safetensors(path, tensors, _metadata(model, "torchvision"))
        else:
            with atomic_path(path) as tmp:
                torch.save({k: v.contiguous() for k, v in tensors.items()}, tmp)
    return path


__all__ = ["load", "save", "read_checkpoint", "timm_kwargs", "FORMATS", "CheckpointError", "GuessWarning"]
