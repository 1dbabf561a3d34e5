"""Configuration dataclasses and the table of the paper's variants.

One small table decodes every name ("ViT-B/16", "R50+ViT-B/16", ...) into a `ViTConfig`, in the manner of
big_vision's `decode_variant`. Every option of the model lives in the config, not in constructor keywords.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from typing import Any

POOLS = ("token", "gap", "map")
# Fields that change how a model trains, not the function it computes: free to set on a loaded checkpoint.
TRAINING_FIELDS = ("dropout", "attention_dropout", "drop_path", "patch_dropout")
# What a checkpoint file may leave open (the fields a loader guesses and announces) and which of a training
# checkpoint's weights to take: `load`'s keywords that every command reading a checkpoint offers as flags.
CHECKPOINT_HINTS = ("num_heads", "pool", "image_size", "gelu", "layer_norm_eps", "ema")
POSEMBS = ("learned", "learned_2d", "sincos_2d", "none")
GELUS = ("exact", "tanh")
WEIGHT_STDS = ("jax", "timm")


def to_pair(value) -> tuple[int, int]:
    """7 -> (7, 7); [7, 9] -> (7, 9)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"expected an int or a pair of ints, got {value!r}")
    pair = tuple(value)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise ValueError(f"expected an int or a pair of ints, got {value!r}")
    if len(pair) != 2:
        raise ValueError(f"expected an int or a pair of ints, got {value!r}")
    return pair  # type: ignore[return-value]


@dataclass
class ResNetConfig:
    """The BiT-style ResNet stem of the hybrid models (Section 3.1, "Hybrid Architecture")."""

    num_layers: tuple[int, ...] = (3, 4, 9)  # bottleneck units per stage; () keeps only the root (conv, norm, pool)
    width_factor: float = 1.0  # root width is 64 * width_factor; stage i has bottleneck width root * 2**i
    # Numerics, which differ between the two published implementations of the same architecture:
    weight_std: str = "jax"  # "jax": (w - mean) / (std + 1e-5) (vit_jax); "timm": (w - mean) / sqrt(var + 1e-8)
    group_norm_eps: float = 1e-6  # 1e-6 in vit_jax (Flax's default); 1e-5 in timm's hybrids

    def __post_init__(self):
        if isinstance(self.num_layers, (str, bytes)) or not hasattr(self.num_layers, "__iter__") or not all(
                isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 64 for n in self.num_layers):
            raise ValueError(f"invalid ResNetConfig: num_layers={self.num_layers!r}, expected unit counts")
        self.num_layers = tuple(self.num_layers)
        if len(self.num_layers) > 8:
            raise ValueError(f"invalid ResNetConfig: {len(self.num_layers)} stages")
        if not isinstance(self.width_factor, (int, float)) or not 0 < self.width_factor <= 64 or \
                int(64 * self.width_factor) % 32:
            raise ValueError(f"invalid ResNetConfig: width_factor={self.width_factor!r} (64 * it must be a positive "
                             "multiple of 32, the GroupNorm groups)")
        if self.weight_std not in WEIGHT_STDS:
            raise ValueError(f"invalid ResNetConfig: weight_std={self.weight_std!r}, expected one of {WEIGHT_STDS}")
        if isinstance(self.group_norm_eps, bool) or not isinstance(self.group_norm_eps, (int, float)) or \
                not self.group_norm_eps > 0:
            raise ValueError(f"invalid ResNetConfig: group_norm_eps={self.group_norm_eps!r}, expected a positive number")

    @property
    def width(self) -> int:
        return int(64 * self.width_factor)

    @property
    def out_channels(self) -> int:
        if not self.num_layers:
            return self.width
        return self.width * 2 ** (len(self.num_layers) - 1) * 4

    @property
    def stride(self) -> int:
        """Downsampling of the stem: 4 for the root, times 2 for every stage after the first."""
        return 4 * 2 ** max(len(self.num_layers) - 1, 0)


@dataclass
class Preprocessing:
    """How images must be prepared for a model: carried in every checkpoint vitkit writes."""

    image_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # (0.5, 0.5) scaling maps [0, 1] to [-1, 1], as the paper's code
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    interpolation: str = "bilinear"
    crop_pct: float = 1.0  # resize to floor(image_size / crop_pct) (timm's rule), then centre-crop image_size
    resize: str | None = None  # "squash": each side to its target (aspect ratio lost); "shorter": keep the aspect
    #                            ratio, the image just covering the target (timm's crop_mode "center", Hugging Face's
    #                            shortest_edge); None (every file before this field): squash at crop_pct 1, else shorter
    resize_size: tuple[int, int] | None = None  # the target before the crop where crop_pct cannot state it exactly
    #                                             (Hugging Face's `size`); None: floor(image_size / crop_pct)
    crop_offset: str = "round"  # an odd margin's split: "round" (torchvision's CenterCrop, timm's), "floor" (Hugging
    #                             Face's processors)

    def __post_init__(self):
        self.image_size = to_pair(self.image_size)
        self.mean = tuple(float(m) for m in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(s) for s in self.std)  # type: ignore[assignment]
        if len(self.mean) != len(self.std) or not self.mean or not all(s > 0 for s in self.std):
            raise ValueError(f"invalid preprocessing: mean {self.mean}, std {self.std}")
        if self.resize_size is not None:
            self.resize_size = to_pair(self.resize_size)
        if not 0 < self.crop_pct <= 1 or self.resize not in (None, "squash", "shorter") or self.crop_offset not in (
                "round", "floor") or any(r < s for r, s in zip(self.resize_target(), self.image_size)):
            raise ValueError(f"invalid preprocessing: crop_pct={self.crop_pct}, resize={self.resize!r}, resize_size="
                             f"{self.resize_size}, crop_offset={self.crop_offset!r} for image_size {self.image_size}")

    @property
    def resize_mode(self) -> str:
        """"squash" or "shorter"; an unset `resize` keeps the meaning files had before the field existed."""
        return self.resize or ("squash" if self.crop_pct >= 1.0 else "shorter")

    def resize_target(self) -> tuple[int, int]:
        """The (height, width) resized to before the centre crop: floor, as timm's `transforms_imagenet_eval`."""
        if self.resize_size is not None:
            return self.resize_size
        return tuple(math.floor(s / self.crop_pct) for s in self.image_size)  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Preprocessing":
        if not isinstance(data, dict):
            raise ValueError(f"expected a mapping of Preprocessing fields, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class ViTConfig:
    """Everything that fixes a Vision Transformer's architecture and numerics."""

    image_size: tuple[int, int] = (224, 224)  # (height, width) the position embeddings are laid out for
    patch_size: tuple[int, int] = (16, 16)  # patch side in pixels, or in feature-map cells for hybrids
    in_channels: int = 3
    width: int = 768  # D, the token width (hidden_size)
    depth: int = 12  # number of encoder blocks
    num_heads: int = 12
    mlp_dim: int = 3072  # hidden width of each block's MLP
    num_classes: int = 1000  # 0 gives a model without a head (features only)
    pool: str = "token"  # "token": class token's final state; "gap": mean of the patch tokens; "map": attention
    #                      pooling of the patch tokens by a learned query (big_vision's MAP head, timm's attn_pool)
    class_token: bool | None = None  # prepend a [class] token; None means "only when pool is token"
    dist_token: bool = False  # DeiT's distillation token, right after the class token
    dist_head: bool = False  # a second head on the distillation token; the logits are the mean of both heads
    num_reg_tokens: int = 0  # register tokens (Darcet et al. 2023) after the class and distillation tokens
    posemb: str = "learned"  # "learned" (1D), "learned_2d" (row + column), "sincos_2d" (fixed), "none"
    posemb_prefix: bool = True  # learned position embeddings also cover the class and distillation tokens (timm's
    #                             no_embed_class=False); register tokens never have position embeddings
    norm_pre: bool = False  # LayerNorm over the embedded tokens before the encoder (CLIP); the patch projection then
    #                         has no bias, as in CLIP and timm's pre_norm
    layer_scale: float | None = None  # LayerScale (CaiT, DeiT III): per-channel scales on each residual branch,
    #                                   initialised to this value; None: no scales
    representation_size: int | None = None  # Dense + tanh before the head ("pre_logits" of the original)
    gelu: str = "exact"  # "exact" (erf; timm, Hugging Face) or "tanh" (the original JAX code)
    layer_norm_eps: float = 1e-6
    qkv_bias: bool = True
    norm_after_pool: bool = False  # apply the final LayerNorm after pooling (timm's fc_norm) instead of before
    dropout: float = 0.0  # after the position embeddings, the attention output and each MLP layer
    attention_dropout: float = 0.0
    drop_path: float = 0.0  # stochastic depth, rising linearly to this rate over the blocks
    patch_dropout: float = 0.0  # in training, drop this share of the patch tokens (random per image) after Eq. 1
    dynamic_image_size: bool = False  # resample the position embeddings on the fly for other input sizes
    resnet: ResNetConfig | None = None  # a ResNet stem whose feature map is cut into patches (hybrid)
    name: str | None = None  # the variant this came from, for display only

    def __post_init__(self):
        self.image_size = to_pair(self.image_size)
        self.patch_size = to_pair(self.patch_size)
        if isinstance(self.resnet, dict):
            self.resnet = ResNetConfig(**self.resnet)
        elif self.resnet is not None and not isinstance(self.resnet, ResNetConfig):
            raise ValueError(f"invalid ViTConfig: resnet={self.resnet!r}")
        if self.class_token is None:
            self.class_token = self.pool == "token"
        self.validate()

    def validate(self) -> None:
        def fail(msg):
            raise ValueError(f"invalid ViTConfig: {msg}")

        for name in ("width", "depth", "num_heads", "mlp_dim", "in_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                fail(f"{name}={value!r}, expected a positive integer")
        if not isinstance(self.num_classes, int) or isinstance(self.num_classes, bool) or self.num_classes < 0:
            fail(f"num_classes={self.num_classes!r}, expected an integer >= 0")
        if self.representation_size is not None and (not isinstance(self.representation_size, int)
                                                     or self.representation_size < 1):
            fail(f"representation_size={self.representation_size!r}, expected a positive integer or None")
        for name in TRAINING_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                fail(f"{name}={value!r}, expected a rate in [0, 1)")
        if not isinstance(self.layer_norm_eps, (int, float)) or not self.layer_norm_eps > 0:
            fail(f"layer_norm_eps={self.layer_norm_eps!r}, expected a positive number")
        if min(self.image_size) < 1 or min(self.patch_size) < 1:
            fail(f"image_size {self.image_size} and patch_size {self.patch_size} must be positive")
        if self.pool not in POOLS:
            fail(f"pool={self.pool!r}, expected one of {POOLS}")
        if self.posemb not in POSEMBS:
            fail(f"posemb={self.posemb!r}, expected one of {POSEMBS}")
        if self.gelu not in GELUS:
            fail(f"gelu={self.gelu!r}, expected one of {GELUS}")
        if self.pool == "token" and not self.class_token:
            fail("pool='token' needs class_token=True")
        if not isinstance(self.num_reg_tokens, int) or isinstance(self.num_reg_tokens, bool) or \
                not 0 <= self.num_reg_tokens <= 1024:
            fail(f"num_reg_tokens={self.num_reg_tokens!r}, expected an integer in [0, 1024]")
        if self.layer_scale is not None and (isinstance(self.layer_scale, bool) or
                                             not isinstance(self.layer_scale, (int, float)) or
                                             not self.layer_scale > 0):
            fail(f"layer_scale={self.layer_scale!r}, expected a positive initial value or None")
        if self.dist_token and not self.class_token:
            fail("dist_token=True needs class_token=True (the distillation token follows the class token)")
        if self.dist_head:
            if not self.dist_token:
                fail("dist_head=True needs dist_token=True")
            if self.pool != "token" or self.norm_after_pool or self.representation_size:
                fail(f"dist_head=True reads the class and distillation tokens directly: it needs pool='token', "
                     f"norm_after_pool=False and no representation_size (got pool={self.pool!r}, "
                     f"norm_after_pool={self.norm_after_pool}, representation_size={self.representation_size})")
        if self.width % self.num_heads:
            fail(f"width {self.width} is not divisible by num_heads {self.num_heads}")
        if self.posemb == "learned_2d" and self.width % 2:
            fail(f"posemb='learned_2d' needs an even width, got {self.width}")
        if self.posemb == "sincos_2d" and self.width % 4:
            fail(f"posemb='sincos_2d' needs a width divisible by 4, got {self.width}")
        if any(side < patch * self.stem_stride for side, patch in zip(self.image_size, self.patch_size)):
            fail(f"image_size {self.image_size} is smaller than one patch")
        for side, patch in zip(self.image_size, self.patch_size):
            if side % (patch * self.stem_stride):
                fail(
                    f"image_size {self.image_size} is not a multiple of the effective patch size "
                    f"{tuple(p * self.stem_stride for p in self.patch_size)}"
                )

    @property
    def stem_stride(self) -> int:
        return self.resnet.stride if self.resnet is not None else 1

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: [class], [distillation], registers, in that order."""
        return int(bool(self.class_token)) + int(self.dist_token) + self.num_reg_tokens

    @property
    def num_posemb_prefix_tokens(self) -> int:
        """Prefix tokens that have a learned position embedding (the first slots of `pos_embed`)."""
        if self.posemb != "learned" or not self.posemb_prefix:
            return 0
        return int(bool(self.class_token)) + int(self.dist_token)

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patches per column and per row at `image_size`."""
        s = self.stem_stride
        return (self.image_size[0] // (s * self.patch_size[0]), self.image_size[1] // (s * self.patch_size[1]))

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    def replace(self, **changes) -> "ViTConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["image_size"] = list(self.image_size)
        data["patch_size"] = list(self.patch_size)
        if self.resnet is not None:
            data["resnet"] = {"num_layers": list(self.resnet.num_layers), "width_factor": self.resnet.width_factor}
            if (self.resnet.weight_std, self.resnet.group_norm_eps) != ("jax", 1e-6):  # files stay as before if unused
                data["resnet"].update(weight_std=self.resnet.weight_std, group_norm_eps=self.resnet.group_norm_eps)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ViTConfig":
        if not isinstance(data, dict):
            raise ValueError(f"expected a mapping of ViTConfig fields, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ViTConfig field(s): {', '.join(unknown)}")
        return cls(**data)


# The paper's Table 1 plus Ti and S (DeiT / AugReg): name -> (width, depth, mlp_dim, heads).
WIDTHS: dict[str, tuple[int, int, int, int]] = {
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "H": (1280, 32, 5120, 16),
}

# Hybrids of the original code (vit_jax/configs/models.py): name -> (resnet stages, ViT size, patch on feature map).
HYBRIDS: dict[str, tuple[tuple[int, ...], str, int]] = {
    "R+ViT-Ti/16": ((), "Ti", 8),  # root only (stride 4), 8x8 patches on its map (the original's naming)
    "R26+ViT-S/32": ((2, 2, 2, 2), "S", 1),
    "R26+ViT-B/32": ((2, 2, 2, 2), "B", 1),
    "R50+ViT-B/16": ((3, 4, 9), "B", 1),
    "R50+ViT-L/32": ((3, 4, 6, 3), "L", 1),
}

PLAIN = ["ViT-Ti/16", "ViT-S/16", "ViT-S/32", "ViT-B/8", "ViT-B/16", "ViT-B/32", "ViT-L/16", "ViT-L/32", "ViT-H/14"]

_PLAIN_NAME = re.compile(r"^ViT-(Ti|S|B|L|H)/(\d+)$")


def list_models() -> list[str]:
    """The registered variants, plain ViTs first, then the hybrids."""
    return PLAIN + list(HYBRIDS)


def _canonical(name: str) -> str:
    """The registered spelling of a variant name, in any case: "vit-b/16" -> "ViT-B/16"; also the original checkpoint
    file names ("ViT-B_16", "R50+ViT-B_16"). A name it does not know comes back as given (with "/" for "_")."""
    text = re.sub(r"_(\d+)$", r"/\1", str(name).strip())
    for known in list_models():
        if text.lower() == known.lower():
            return known
    match = re.match(r"^vit-(ti|s|b|l|h)/(\d+)$", text, re.IGNORECASE)
    if match:
        size = {k.lower(): k for k in WIDTHS}[match.group(1).lower()]
        return f"ViT-{size}/{match.group(2)}"
    return text


def unknown_model_message(name: str) -> str:
    """"unknown model 'ViT-X/16'", with the closest registered names when there are any, and the known ones."""
    import difflib

    models = list_models()
    close = difflib.get_close_matches(str(name).lower(), [m.lower() for m in models], n=3, cutoff=0.6)
    close = [next(m for m in models if m.lower() == c) for c in close]
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return (f"unknown model {name!r}{hint} (known: {', '.join(models)}; any ViT-<Ti|S|B|L|H>/<patch> is accepted "
            "too, e.g. ViT-Ti/4)")


def variant_config(name: str, **overrides) -> ViTConfig:
    """Decode a variant name into a config; `overrides` set any other field.

    Any "ViT-<size>/<patch>" is accepted (for example "ViT-S/8"); `list_models()` lists the paper's.
    """
    canonical = _canonical(name)
    if canonical in HYBRIDS:
        stages, size, patch = HYBRIDS[canonical]
        width, depth, mlp_dim, heads = WIDTHS[size]
        base = dict(
            patch_size=patch, width=width, depth=depth, mlp_dim=mlp_dim, num_heads=heads,
            resnet=ResNetConfig(num_layers=stages, width_factor=1.0),
        )
    else:
        match = _PLAIN_NAME.match(canonical)
        if not match:
            raise ValueError(unknown_model_message(name))
        width, depth, mlp_dim, heads = WIDTHS[match.group(1)]
        base = dict(patch_size=int(match.group(2)), width=width, depth=depth, mlp_dim=mlp_dim, num_heads=heads)
    base["name"] = canonical
    base.update({k: v for k, v in overrides.items() if v is not None})
    if isinstance(base.get("resnet"), dict):
        base["resnet"] = ResNetConfig(**base["resnet"])
    return ViTConfig(**base)


def later_options(config: ViTConfig) -> list[str]:
    """The options of later ViTs a config uses, by name: for writers of formats that have none of them."""
    c = config
    found = []
    if c.dist_token:
        found.append("a distillation token" + (" and head" if c.dist_head else ""))
    if c.num_reg_tokens:
        found.append(f"{c.num_reg_tokens} register token(s)")
    if c.norm_pre:
        found.append("a norm before the encoder (norm_pre)")
    if c.layer_scale is not None:
        found.append("LayerScale")
    if c.pool == "map":
        found.append("attention pooling (pool='map')")
    return found


def table_heads(width: int) -> int | None:
    """The variant table's head count for a width (None for widths not in the table)."""
    for w, _, _, heads in WIDTHS.values():
        if w == width:
            return heads
    return None


__all__ = [
    "ViTConfig",
    "TRAINING_FIELDS",
    "ResNetConfig",
    "Preprocessing",
    "list_models",
    "variant_config",
    "table_heads",
    "later_options",
    "WIDTHS",
    "HYBRIDS",
    "to_pair",
]
