"""Model definitions: the ViT, its hybrid ResNet stem, and position embeddings."""

from __future__ import annotations

import torch

from ..configs import ViTConfig, list_models, variant_config
from .posemb import resample_pos_embed, sincos_2d
from .vit import Attention, Block, VisionTransformer


def create_model(name: str | ViTConfig, num_classes: int | None = None, image_size=None, **overrides) -> VisionTransformer:
    """A freshly initialised model: `create_model("ViT-B/16", num_classes=10, image_size=384)`.

    `overrides` set any `ViTConfig` field (pool="gap", posemb="sincos_2d", drop_path=0.1, ...).
    """
    if isinstance(name, ViTConfig):
        changes = dict(overrides)
        if num_classes is not None:
            changes["num_classes"] = num_classes
        if image_size is not None:
            changes["image_size"] = image_size
        config = name.replace(**changes) if changes else name
    else:
        config = variant_config(name, num_classes=num_classes, image_size=image_size, **overrides)
    return VisionTransformer(config)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(config: ViTConfig, batch_size: int = 1, inference: bool = False) -> int:
    """Floating-point operations of one forward at the config's image size (a multiply-add counts 2).

    Counted by PyTorch's FlopCounterMode on the meta device (no memory spent on weights), for one and two blocks;
    the blocks being identical, the count for `depth` blocks follows exactly. `inference=True` counts what an
    inference forward executes: with the class token's head, the last block computes the class token alone.
    """
    one, two = (_counted_flops(config.replace(depth=d, drop_path=0.0), batch_size, inference) for d in (1, 2))
    return one + (config.depth - 1) * (two - one)


def _counted_flops(config: ViTConfig, batch_size: int, inference: bool = False) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = VisionTransformer(config).train(not inference)
        images = torch.empty(batch_size, config.in_channels, *config.image_size)
    with torch.no_grad():
        # decided before counting: the counter's own module hooks would turn the shortcut off
        forward = model._forward_class_token_only if model._class_token_shortcut() else model
        counter = FlopCounterMode(display=False)
        with counter:
            forward(images)
    return counter.get_total_flops()


__all__ = [
    "VisionTransformer",
    "Attention",
    "Block",
    "create_model",
    "list_models",
    "count_parameters",
    "count_flops",
    "resample_pos_embed",
    "sincos_2d",
]
