"""torchvision's `VisionTransformer` (`vit_b_16`, ...): the arguments and the state dict for a vitkit model.

torchvision's ViT is the paper's plain ViT with exact GELU and LayerNorm epsilon 1e-6: a class token, learned 1D
position embeddings that cover it, token pooling, square images and patches, an optional representation layer
(`heads.pre_logits` + tanh). Attention is `nn.MultiheadAttention`, whose `in_proj_weight` is the (3D, D) stack of
the query, key and value kernels, the same order as vitkit's fused `attn.qkv`.
"""

from __future__ import annotations

import math

import torch

from ..configs import Preprocessing, ViTConfig
from ..errors import CheckpointError
from .common import Converted, Reader, Settings
from .timm import guess_heads


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
    if c.dist_token or c.num_reg_tokens or c.norm_pre or c.layer_scale is not None:
        problems.append("a distillation token, register tokens, norm_pre or LayerScale")
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


# ------------------------------------------------------------------------------------------------------ reading
CONV_STEM = "conv_proj.conv_"  # conv_proj.conv_bn_relu_{i}.* and conv_proj.conv_last.*: the ViTc stem
LAYER = "encoder.layers.encoder_layer_{}."
# the MLP's names since torchvision 0.13 (MLP as a Sequential) and before it (MLPBlock.linear_1/linear_2); the
# published vit_*-*.pth files predate the change, and torchvision renames them when loading
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MLP_NAMES = (("mlp.0", "mlp.3"), ("mlp.linear_1", "mlp.linear_2"))


def looks_like_torchvision(keys) -> bool:
    keys = set(keys)
    return ("conv_proj.weight" in keys or "encoder.pos_embedding" in keys
            or any(k.startswith(("encoder.layers.encoder_layer_", CONV_STEM)) for k in keys))


def from_torchvision(tensors: dict[str, torch.Tensor], path, settings: Settings | None = None,
                     hints: dict | None = None) -> Converted:
    """A torchvision `VisionTransformer` state dict (`vit_b_16` ... `vit_h_14`, the SWAG weights included).

    torchvision's model hard-codes what its state dict does not show, so the format records it: a class token
    whose embeddings are covered by the learned positions, token pooling, exact GELU, LayerNorm eps 1e-6, biased
    attention, square images. Only the head count is not recorded (nn.MultiheadAttention fuses the heads): it comes
    from `num_heads=`, a vitkit-written file's metadata (`hints`), or the variant table (announced).
    """
    settings = settings or Settings(path)
    hints = dict(hints or {})
    stem = sorted(k for k in tensors if k.startswith(CONV_STEM))
    if stem:
        raise CheckpointError(path, "unsupported torchvision model: a convolutional stem (conv_stem_configs, "
                              "Xiao et al. 2021) instead of the patch projection", key=stem[0])
    r = Reader(tensors, path)
    w_shape = r.shape("conv_proj.weight")
    if len(w_shape) != 4 or w_shape[2] != w_shape[3]:
        raise CheckpointError(path, f"expected shape (width, channels, patch, patch), found {w_shape}",
                              key="conv_proj.weight")
    width, in_channels, patch, _ = w_shape
    sd: dict[str, torch.Tensor] = {}
    src: dict[str, str] = {}

    def take(name, source, shape):
        sd[name] = r.get(source, shape)
        src[name] = source

    take("patch_embed.proj.weight", "conv_proj.weight", w_shape)
    take("patch_embed.proj.bias", "conv_proj.bias", (width,))
    take("cls_token", "class_token", (1, 1, width))
    pos_shape = r.shape("encoder.pos_embedding")
    if len(pos_shape) != 3 or pos_shape[0] != 1 or pos_shape[2] != width or pos_shape[1] < 2:
        raise CheckpointError(path, f"expected shape (1, 1 + patches, {width}), found {pos_shape}",
                              key="encoder.pos_embedding")
    take("pos_embed", "encoder.pos_embedding", pos_shape)
    side = math.isqrt(pos_shape[1] - 1)
    if side * side != pos_shape[1] - 1:
        raise CheckpointError(path, f"{pos_shape[1] - 1} patch position embeddings form no square grid; "
                              "torchvision's ViT has square images only", key="encoder.pos_embedding")
    image_size = settings.recorded("image_size", (side * patch, side * patch), key="encoder.pos_embedding")

    depth = r.count(LAYER)
    if depth == 0 or not r.has(LAYER.format(0) + "ln_1.weight"):
        raise CheckpointError(path, "missing tensor: no encoder layers", key=LAYER.format(0) + "ln_1.weight")
    first = LAYER.format(0)
    fc1, fc2 = next((names for names in MLP_NAMES if r.has(f"{first}{names[0]}.weight")), MLP_NAMES[0])
    fc1_shape = r.shape(f"{first}{fc1}.weight")
    if len(fc1_shape) != 2:
        raise CheckpointError(path, f"expected shape (mlp_dim, {width}), found {fc1_shape}", key=f"{first}{fc1}.weight")
    mlp_dim = fc1_shape[0]
    for i in range(depth):
        t, n = LAYER.format(i), f"blocks.{i}."
        take(n + "norm1.weight", t + "ln_1.weight", (width,))
        take(n + "norm1.bias", t + "ln_1.bias", (width,))
        take(n + "attn.qkv.weight", t + "self_attention.in_proj_weight", (3 * width, width))
        take(n + "attn.qkv.bias", t + "self_attention.in_proj_bias", (3 * width,))
        take(n + "attn.proj.weight", t + "self_attention.out_proj.weight", (width, width))
        take(n + "attn.proj.bias", t + "self_attention.out_proj.bias", (width,))
        take(n + "norm2.weight", t + "ln_2.weight", (width,))
        take(n + "norm2.bias", t + "ln_2.bias", (width,))
        take(n + "mlp.fc1.weight", f"{t}{fc1}.weight", (mlp_dim, width))
        take(n + "mlp.fc1.bias", f"{t}{fc1}.bias", (mlp_dim,))
        take(n + "mlp.fc2.weight", f"{t}{fc2}.weight", (width, mlp_dim))
        take(n + "mlp.fc2.bias", f"{t}{fc2}.bias", (width,))
    take("norm.weight", "encoder.ln.weight", (width,))
    take("norm.bias", "encoder.ln.bias", (width,))
    features, representation_size = width, None
    if r.has("heads.pre_logits.weight"):
        rep_shape = r.shape("heads.pre_logits.weight")
        if len(rep_shape) != 2:
            raise CheckpointError(path, f"expected shape (representation, {width}), found {rep_shape}",
                                  key="heads.pre_logits.weight")
        representation_size = rep_shape[0]
        take("pre_logits.fc.weight", "heads.pre_logits.weight", (representation_size, width))
        take("pre_logits.fc.bias", "heads.pre_logits.bias", (representation_size,))
        features = representation_size
    head_shape = r.shape("heads.head.weight")  # torchvision's ViT always has a head
    if len(head_shape) != 2 or head_shape[1] != features or head_shape[0] < 1:
        raise CheckpointError(path, f"expected shape (classes, {features}), found {head_shape}",
                              key="heads.head.weight")
    num_classes = head_shape[0]
    take("head.weight", "heads.head.weight", head_shape)
    take("head.bias", "heads.head.bias", (num_classes,))
    r.check_all_taken()

    if "num_heads" in hints:
        heads = settings.recorded("num_heads", hints["num_heads"], key="vitkit.config")
    else:
        heads = guess_heads(width, settings, LAYER.format(0) + "self_attention.in_proj_weight")
    if width % heads:
        raise CheckpointError(path, f"width {width} is not divisible by num_heads={heads}",
                              key=LAYER.format(0) + "self_attention.in_proj_weight")
    fixed = "torchvision's VisionTransformer"
    config = ViTConfig(
        image_size=image_size, patch_size=(patch, patch), in_channels=in_channels, width=width, depth=depth,
        num_heads=heads, mlp_dim=mlp_dim, num_classes=num_classes, representation_size=representation_size,
        pool=settings.recorded("pool", "token", key=fixed),
        class_token=settings.recorded("class_token", True, key=fixed),
        posemb=settings.recorded("posemb", "learned", key=fixed),
        posemb_prefix=settings.recorded("posemb_prefix", True, key=fixed),
        gelu=settings.recorded("gelu", "exact", key=fixed),
        layer_norm_eps=settings.recorded("layer_norm_eps", 1e-6, key=fixed),
        qkv_bias=settings.recorded("qkv_bias", True, key=fixed),
        norm_after_pool=settings.recorded("norm_after_pool", False, key=fixed),
    )
    # every torchvision ViT weight was trained on ImageNet-normalised inputs (the crop differs: see the catalog)
    preprocessing = Preprocessing(image_size=image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return Converted(config, sd, src, preprocessing, guessed=settings.guessed, notes=settings.notes)


__all__ = ["to_torchvision", "torchvision_kwargs", "torchvision_problems", "looks_like_torchvision", "from_torchvision"]
