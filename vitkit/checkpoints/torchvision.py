"""torchvision's `VisionTransformer` (`vit_b_16`, ...): the arguments and the state dict for a vitkit model.

torchvision's ViT is the paper's plain ViT with exact GELU and LayerNorm epsilon 1e-6: a class token, learned 1D
position embeddings that cover it, token pooling, square images and patches, an optional representation layer
(`heads.pre_logits` + tanh). Attention is `nn.MultiheadAttention`, whose `in_proj_weight` is the (3D, D) stack of
the query, key and value kernels, the same order as vitkit's fused `attn.qkv`.
"""

from __future__ import annotations

import torch

from ..configs import ViTConfig


def torchvision_problems(config: ViTConfig) -> list[str]:
    """What torchvision's ViT cannot express about a config (empty when it can)."""
    c = config
    problems = []
    if c.resnet is not None:
        problems.append("a hybrid ResNet stem")
    if c.pool != "token" or not c.class_token:
        problems.append(f"pool={c.pool!r} (torchvision classifies from the class token)")
    if c.posemb != "learned" or not c.posemb_prefix:
        problems.append(f"posemb={c.posemb!r} with posemb_prefix={c.posemb_prefix}")
    if c.image_size[0] != c.image_size[1] or c.patch_size[0] != c.patch_size[1]:
        problems.append("non-square images or patches")
    if c.gelu != "exact" or c.layer_norm_eps != 1e-6:
        problems.append(f"gelu={c.gelu!r}, layer_norm_eps={c.layer_norm_eps} (torchvision: exact, 1e-6)")
    if c.norm_after_pool or not c.qkv_bias or c.num_classes == 0:
        problems.append("norm_after_pool, no qkv bias, or no classifier head")
    return problems


def torchvision_kwargs(config: ViTConfig) -> dict:
    """The `torchvision.models.VisionTransformer(...)` arguments for a config; ValueError if it cannot be expressed."""
    problems = torchvision_problems(config)
    if problems:
        raise ValueError("this model cannot be expressed as a torchvision ViT: " + "; ".join(problems))
    c = config
    return dict(image_size=c.image_size[0], patch_size=c.patch_size[0], num_layers=c.depth, num_heads=c.num_heads,
                hidden_dim=c.width, mlp_dim=c.mlp_dim, num_classes=c.num_classes,
                representation_size=c.representation_size, dropout=c.dropout, attention_dropout=c.attention_dropout)


def to_torchvision(model) -> dict[str, torch.Tensor]:
    """A state dict that `torchvision.models.VisionTransformer(**torchvision_kwargs(config))` loads strictly."""
    torchvision_kwargs(model.config)  # raises if the model cannot be expressed
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    out = {
        "class_token": sd["cls_token"],
        "conv_proj.weight": sd["patch_embed.proj.weight"],
        "conv_proj.bias": sd["patch_embed.proj.bias"],
        "encoder.pos_embedding": sd["pos_embed"],
        "encoder.ln.weight": sd["norm.weight"],
        "encoder.ln.bias": sd["norm.bias"],
        "heads.head.weight": sd["head.weight"],
        "heads.head.bias": sd["head.bias"],
    }
    if model.config.representation_size:
        out["heads.pre_logits.weight"] = sd["pre_logits.fc.weight"]
        out["heads.pre_logits.bias"] = sd["pre_logits.fc.bias"]
    renames = {
        "norm1": "ln_1", "attn.qkv.weight": "self_attention.in_proj_weight", "attn.qkv.bias": "self_attention.in_proj_bias",
        "attn.proj": "self_attention.out_proj", "norm2": "ln_2", "mlp.fc1": "mlp.0", "mlp.fc2": "mlp.3",
    }
    for i in range(model.config.depth):
        prefix = f"blocks.{i}."
        for key, value in sd.items():
            if not key.startswith(prefix):
                continue
            rest = key[len(prefix):]
            for old, new in renames.items():
                if rest.startswith(old):
                    rest = new + rest[len(old):]
                    break
            out[f"encoder.layers.encoder_layer_{i}.{rest}"] = value
    return out


__all__ = ["to_torchvision", "torchvision_kwargs", "torchvision_problems"]
