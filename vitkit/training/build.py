"""The model a run trains: a fresh variant, or a checkpoint adapted for fine-tuning, and what its checkpoint will
record about preprocessing."""

from __future__ import annotations

from typing import Callable

from ..configs import TRAINING_FIELDS, Preprocessing
from ..errors import UsageError
from .config import ARCHITECTURE_FIELDS, TrainConfig, resnet_stem


def runtime_settings(config: TrainConfig) -> dict:
    """The model's training-time settings, which come from the training config, also for a loaded checkpoint."""
    return {k: getattr(config, k) for k in TRAINING_FIELDS}


def fresh_model_config(config: TrainConfig, num_classes: int):
    """The ViTConfig of a fresh model: the variant with the config's architecture fields over it."""
    from ..configs import variant_config

    overrides = {k: getattr(config, k) for k in ARCHITECTURE_FIELDS
                 if getattr(config, k) is not None and not k.startswith("resnet_")}
    if config.resnet_layers is not None or config.resnet_width_factor is not None:
        overrides["resnet"] = resnet_stem(config)
    model_config = variant_config(config.model, num_classes=num_classes, image_size=config.image_size,
                                  **overrides, **runtime_settings(config))
    return model_config.replace(name=None) if overrides else model_config  # no longer the named variant


def check_model_settings(config: TrainConfig) -> None:
    """What can be said of the model before the data are read: a fresh model's variant and shape are valid; with
    `init_from`, no architecture fields beside it and a source that exists (a file or folder, a pre-trained name
    or a URI)."""
    if config.init_from is None:
        try:
            fresh_model_config(config, num_classes=2)  # (the data decide the real count)
        except ValueError as e:
            raise UsageError(f"model {config.model!r}: {e}") from None
        return
    fixed = [k for k in ARCHITECTURE_FIELDS if getattr(config, k) is not None]
    if fixed:
        raise UsageError(f"--init-from {config.init_from}: the architecture comes from the checkpoint; drop "
                         f"{', '.join('--' + k.replace('_', '-') for k in fixed)}")
    from ..hub.catalog import suggest
    from ..hub.resolve import is_known_source

    if not is_known_source(config.init_from):
        raise UsageError(f"--init-from {config.init_from}: no such file or folder, nor a pre-trained name or URI"
                         f"{suggest(config.init_from)}")


def build_model(config: TrainConfig, num_classes: int, log: Callable[[str], None] = print):
    """A fresh model from the variant and overrides, or one loaded from `init_from` (fine-tuning adaptation:
    a new zero head when the class count changes or reset_head, the position grid resampled to image_size)."""
    from ..checkpoints import load
    from ..models import create_model

    runtime = runtime_settings(config)
    if config.init_from is None:
        try:
            model = create_model(fresh_model_config(config, num_classes))
        except ValueError as e:
            raise UsageError(f"model {config.model!r}: {e}") from None
        if config.attention_init == "mimetic":
            from ..models.mimetic import mimetic_init_
            mimetic_init_(model)
        return model
    check_model_settings(config)
    from ..hub.resolve import model_source

    path = model_source(config.init_from)  # a pre-trained name or URI is fetched (or found in the cache) by load
    reset = config.reset_head or (config.num_classes is not None)
    model = load(path, num_classes=num_classes if reset else None, resample_to=config.image_size,
                 resample_method=config.resample_method, **runtime)
    if not reset and model.num_classes != num_classes:
        raise UsageError(f"--init-from {config.init_from}: the checkpoint has {model.num_classes} classes but the "
                         f"data has {num_classes}; pass --num-classes {num_classes} to replace its head with a new "
                         "zero-initialised one (or use vitkit finetune)")
    return model


def describe(config) -> str:
    """"ViT-S/16 at 224 px", or the shape of a model that is not a named variant."""
    size = "x".join(str(s) for s in sorted(set(config.image_size)))
    if config.name:
        return f"{config.name} at {size} px"
    if config.resnet is not None:
        stages = ",".join(map(str, config.resnet.num_layers)) or "root only"
        return (f"a hybrid ViT of width {config.width}, depth {config.depth}, {config.num_heads} heads on the ResNet "
                f"stem ({stages}, width factor {config.resnet.width_factor:g}, stride {config.stem_stride}: "
                f"{config.patch_size[0] * config.stem_stride}-px patches) at {size} px")
    return (f"a ViT of width {config.width}, depth {config.depth}, {config.num_heads} heads, "
            f"{config.patch_size[0]}-px patches at {size} px")


def model_preprocessing(model, config: TrainConfig) -> Preprocessing:
    """What the checkpoint will record: the input size, and mean/std/interpolation/crop_pct from the config, else
    the initial checkpoint's (and its resize mode and crop rounding), else the paper's [-1, 1] scaling and no crop."""
    base = model.preprocessing if config.init_from else Preprocessing()
    return Preprocessing(
        image_size=model.config.image_size,
        mean=tuple(config.mean) if config.mean is not None else base.mean,
        std=tuple(config.std) if config.std is not None else base.std,
        interpolation=config.interpolation or (base.interpolation if config.init_from else "bilinear"),
        crop_pct=config.crop_pct if config.crop_pct is not None else base.crop_pct if config.init_from else 1.0,
        resize=base.resize, crop_offset=base.crop_offset,  # the source's way (its resize_size was for its own size)
    )
