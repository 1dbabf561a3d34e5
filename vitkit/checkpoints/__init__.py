"""Loading and saving models in vitkit's own format and in the ecosystem's (Google .npz, timm, Hugging Face).

`load(path, **adapt)` reads the architecture from the file itself, builds the model, checks every tensor's name
and shape, and applies the paper's fine-tuning adaptation when asked (new zero head, resampled position grid).
`save(model, path, format=...)` writes a file that the format's own library loads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..configs import Preprocessing, ViTConfig
from ..errors import CheckpointError
from ..models.vit import VisionTransformer
from .common import Converted, check_against_model, check_block_counts
from .google_npz import from_google, looks_like_google, to_google
from .hf import from_hf, looks_like_hf, read_hf_dir, read_preprocessing, write_hf_dir
from .io import (NPZ_SUFFIXES, SAFETENSORS_SUFFIXES, TORCH_SUFFIXES, atomic_path, read_npz, read_safetensors,
                 read_torch, save_safetensors)
from .timm import from_timm, looks_like_timm, timm_kwargs, to_timm

FORMATS = ("vitkit", "google", "timm", "hf")
FORMAT_KEY = "vitkit.format"  # metadata key of files vitkit writes: "vitkit", "timm" or "hf"


def _metadata(model: VisionTransformer, fmt: str) -> dict[str, str]:
    meta = {
        "format": "pt",  # what transformers and timm expect in safetensors metadata
        FORMAT_KEY: fmt,
        "vitkit.config": model.config.to_json(),
        "vitkit.preprocessing": json.dumps(model.preprocessing.to_dict()),
    }
    if model.class_names:
        meta["vitkit.class_names"] = json.dumps(list(model.class_names))
    return meta


def _vitkit_from_metadata(meta: dict[str, str], tensors: dict[str, torch.Tensor], path) -> Converted:
    try:
        config = ViTConfig.from_dict(json.loads(meta["vitkit.config"]))
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(path, f"invalid model config in the metadata ({e})", key="vitkit.config") from None
    preprocessing, class_names = _extras_from_metadata(meta, path)
    return Converted(config, dict(tensors), {}, preprocessing or Preprocessing(image_size=config.image_size),
                     class_names)


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
        "pool": lambda v: v in ("token", "gap"),
        "gelu": lambda v: v in ("exact", "tanh"),
        "layer_norm_eps": lambda v: isinstance(v, float) and v > 0,
        "image_size": lambda v: isinstance(v, list) and len(v) == 2 and all(isinstance(s, int) and s > 0 for s in v),
    }
    return {k: config[k] for k, ok in checks.items() if k in config and ok(config[k])}


def read_checkpoint(path: str | os.PathLike, num_heads: int | None = None, pool: str | None = None, *,
                    sha256: str | None = None) -> Converted:
    """Any supported file or folder, catalog name (`vitkit.list_pretrained()`) or URI, converted to vitkit's names
    and a config. See `load`."""
    from ..hub.resolve import apply_entry, entry_hints, resolve_source

    path, entry = resolve_source(path, sha256=sha256)  # a local path as it is; a name or URI from the cache
    if num_heads is None:
        num_heads = entry_hints(entry).get("num_heads")
    return apply_entry(_read_file(path, num_heads=num_heads, pool=pool), entry)


def _read_file(path: str | os.PathLike, num_heads: int | None = None, pool: str | None = None) -> Converted:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "no such file or directory")
    if path.is_dir():
        if not (path / "config.json").exists():
            raise CheckpointError(path, "a folder must be a Hugging Face model folder with config.json")
        tensors, hf_cfg = read_hf_dir(path)
        weights_meta = {}
        st = path / "model.safetensors"
        if st.exists():
            from .io import read_safetensors_metadata

            weights_meta = read_safetensors_metadata(st)
        converted = from_hf(tensors, path, hf_cfg, num_heads=num_heads, hints=_hints(weights_meta))
        converted.preprocessing = read_preprocessing(path, converted.config.image_size)
        return converted

    suffix = path.suffix.lower()
    meta: dict[str, str] = {}
    if suffix in NPZ_SUFFIXES:
        return from_google(read_npz(path), path, num_heads=num_heads, pool=pool)
    if suffix in SAFETENSORS_SUFFIXES:
        tensors, meta = read_safetensors(path)
    elif suffix in TORCH_SUFFIXES:
        tensors = read_torch(path)
    else:
        raise CheckpointError(path, f"unknown file type {suffix!r}: expected .safetensors, .npz, .pth/.pt/.bin, "
                              "or a Hugging Face folder")
    kind = meta.get(FORMAT_KEY)
    if kind == "vitkit":
        converted = _vitkit_from_metadata(meta, tensors, path)
        if num_heads is not None or pool is not None:
            converted.config = converted.config.replace(**{k: v for k, v in
                                                         (("num_heads", num_heads), ("pool", pool)) if v is not None})
        return converted
    keys = list(tensors)
    hints = _hints(meta)
    if looks_like_hf(keys):
        converted = from_hf(tensors, path, None, num_heads=num_heads, hints=hints)
    elif looks_like_timm(keys):
        converted = from_timm(tensors, path, num_heads=num_heads, pool=pool, hints=hints)
    elif looks_like_google(keys):
        converted = from_google({k: v.numpy() if v.dtype != torch.bfloat16 else v.float().numpy()
                                 for k, v in tensors.items()}, path, num_heads=num_heads, pool=pool)
    else:
        raise CheckpointError(path, "unknown layout: the keys match neither vitkit, timm, Hugging Face nor the "
                              f"original Google naming (first key: {keys[0] if keys else 'none, the file is empty'})",
                              key=keys[0] if keys else None)
    preprocessing, class_names = _extras_from_metadata(meta, path)
    if preprocessing is not None:
        converted.preprocessing = preprocessing
    if class_names is not None:
        converted.class_names = class_names
    return converted


def load(
    path: str | os.PathLike,
    *,
    num_classes: int | None = None,
    image_size=None,
    resample_method: str | None = None,
    num_heads: int | None = None,
    pool: str | None = None,
    dynamic_image_size: bool | None = None,
    sha256: str | None = None,
    **config_overrides,
) -> VisionTransformer:
    """A model from a checkpoint of any supported format, its architecture read from the file.

    Fine-tuning adaptation (the paper's Section 3.2):
      num_classes=K   drop the pre-trained head (and representation layer) and attach a zero-initialised K-way head
      image_size=S    resample the position embeddings to the new grid (bilinear for Google files, as the original
                      code; bicubic otherwise; or as resample_method says)
    Hints for files that do not record them: num_heads (timm and bare HF weights), pool (timm).
    config_overrides set training-time fields such as dropout, drop_path or patch_dropout.
    `path` may also be a catalog name (`vitkit.list_pretrained()`) or a URI (hf-hub:ORG/REPO[@REV], https://...,
    gs://BUCKET/PATH), downloaded into the cache; `sha256` checks the downloaded file.
    """
    converted = read_checkpoint(path, num_heads=num_heads, pool=pool, sha256=sha256)
    config = converted.config
    overrides = dict(config_overrides)
    if dynamic_image_size is not None:
        overrides["dynamic_image_size"] = dynamic_image_size
    runtime_only = {"dropout", "attention_dropout", "drop_path", "patch_dropout", "dynamic_image_size", "name"}
    bad = sorted(set(overrides) - runtime_only)
    if bad:
        raise TypeError(f"load() got unexpected argument(s): {', '.join(bad)}")
    try:
        if overrides:
            config = config.replace(**overrides)
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
    if num_classes is not None:
        if config.representation_size:  # the paper's fine-tuning drops the whole pre-trained head
            model.pre_logits = torch.nn.Identity()
            model.num_features = config.width
            model.config = model.config.replace(representation_size=None)
        model.reset_classifier(num_classes)
    if image_size is not None:
        model.set_image_size(image_size, method=resample_method or converted.default_resample)
    model.eval()
    return model


def save(model: VisionTransformer, path: str | os.PathLike, format: str = "vitkit") -> Path:
    """Write a model so that the format's own library loads it; returns the path written.

      vitkit  safetensors, with the config, preprocessing and class names in its metadata
      google  .npz with the published checkpoints' names and Flax layouts (the original code's `load`)
      timm    a state dict for `timm.models.VisionTransformer` (.safetensors, or .pth by the suffix)
      hf      a folder `ViTForImageClassification.from_pretrained` loads (config.json, model.safetensors,
              preprocessor_config.json)
    Files are written atomically: a crash leaves the previous file, never a partial one.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; expected one of {FORMATS}")
    path = Path(path)
    if format == "vitkit":
        save_safetensors(path, model.state_dict(), _metadata(model, "vitkit"))
    elif format == "google":
        import numpy as np

        arrays = to_google(model)
        if model.config.gelu != "tanh":
            import warnings

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
    return path


__all__ = ["load", "save", "read_checkpoint", "timm_kwargs", "FORMATS", "CheckpointError"]
