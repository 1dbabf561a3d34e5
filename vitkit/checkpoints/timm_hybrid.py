"""timm's hybrid ViTs (`vision_transformer_hybrid.py`): the BiT ResNet backbone under `patch_embed.backbone.*`.

timm builds the paper's hybrids (vit_tiny_r_s16_p8, vit_small_r26_s32, vit_base_r26_s32, vit_base_r50_s16,
vit_large_r50_s32) from a non-pre-activation ResNetV2 with TensorFlow-SAME padding, which is vitkit's stem layer
for layer; only its numerics differ: kernels standardised as (w - mean) / sqrt(var + 1e-8) and GroupNorm epsilon
1e-5, against vit_jax's (w - mean) / (std + 1e-5) and 1e-6. Those are `ResNetConfig(weight_std="timm",
group_norm_eps=1e-5)`. timm's other hybrids (ResNet-D backbones with BatchNorm, MobileCLIP's stem) are refused.

Names, timm -> vitkit (prefix `patch_embed.backbone.`; the root-only model has no `stem.` in timm's names):
`stem.conv` -> `stem.conv_root`, `stem.norm` -> `stem.gn_root`, `stages.i.blocks.j.convK / normK` ->
`stem.stages.i.j.convK / gnK`, `stages.i.blocks.0.downsample.conv / .norm` -> `stem.stages.i.0.conv_proj / gn_proj`.
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

import torch

from ..configs import ResNetConfig
from ..errors import CheckpointError
from .common import Reader

PREFIX = "patch_embed.backbone."
TIMM_NUMERICS = {"weight_std": "timm", "group_norm_eps": 1e-5}  # StdConv2dSame(eps=1e-8), GroupNormAct's default
# the standardisation epsilon of each convention, and where it goes: (w - mean) / (std + eps) or / sqrt(var + eps)
_STD_EPS = {"jax": 1e-5, "timm": 1e-8}
MAX_STAGES = 4  # timm's ResNetV2 has four channel widths; with more stages it would dilate instead of striding

# Backbones timm's hybrids use that vitkit's BiT stem cannot express: a key marker (after the prefix) -> what it is.
UNSUPPORTED = (
    (re.compile(r"^(conv1|bn1|layer\d+)\."), "a timm ResNet-D backbone with BatchNorm and a deep 3x3 stem "
     "(vit_small_resnet26d_224, vit_base_resnet26d_224, vit_small_resnet50d_s16_224, vit_base_resnet50d_224)"),
    (re.compile(r"^\d+\."), "MobileCLIP's convolutional stem with BatchNorm (vit_base_mci_224)"),
    (re.compile(r"^stem\.conv\d\."), "a deep 3x3 ResNetV2 stem (stem_type 'deep')"),
)


class Backbone(NamedTuple):
    """What `read_timm_backbone` found: the stem's config, its tensors under vitkit's names, their sources."""

    resnet: ResNetConfig
    state_dict: dict[str, torch.Tensor]  # vitkit names: stem.conv_root.weight, stem.stages.0.0.conv1.weight, ...
    sources: dict[str, str]  # vitkit key -> the file's key
    in_channels: int  # image channels the root convolution takes

    @property
    def stride(self) -> int:
        """Pixels per feature-map cell: the ViT's patch size in pixels is patch_embed.proj's kernel times this."""
        return self.resnet.stride

    @property
    def out_channels(self) -> int:
        """Channels of the feature map, the in-channels of patch_embed.proj."""
        return self.resnet.out_channels


def is_timm_hybrid(keys) -> bool:
    return any(k.startswith(PREFIX) for k in keys)


def read_timm_backbone(tensors: Reader | dict[str, Any], path, prefix: str = PREFIX) -> Backbone:
    """Map timm's `patch_embed.backbone.*` to vitkit's `stem.*`, every key and shape checked.

    `tensors`: the whole state dict, or the caller's `Reader` over it (the keys taken here are marked taken). Any
    key under `prefix` that is not read is a CheckpointError naming it; so is a missing one. The projection
    `patch_embed.proj.weight`, if present, is checked against the backbone's channels but left to the caller.
    """
    r = tensors if isinstance(tensors, Reader) else Reader(tensors, path)
    if r.prefix:
        raise ValueError("read_timm_backbone takes a Reader over the whole state dict (prefix '')")
    path = r.path
    names = sorted(k[len(prefix):] for k in r.tensors if k.startswith(prefix))
    if not names:
        raise CheckpointError(path, f"no hybrid backbone: no tensor under '{prefix}'", key=prefix)
    for pattern, what in UNSUPPORTED:
        found = [n for n in names if pattern.search(n)]
        if found:
            raise CheckpointError(path, f"unsupported timm hybrid: {what}", key=prefix + found[0])

    sd: dict[str, torch.Tensor] = {}
    src: dict[str, str] = {}

    def take(ours: str, theirs: str, shape):
        sd[ours] = r.get(prefix + theirs, shape)
        src[ours] = prefix + theirs

    if prefix + "stem.conv.weight" in r.tensors:
        root = "stem."  # ResNetV2 with stages
    elif prefix + "conv.weight" in r.tensors:
        root = ""  # create_resnetv2_stem alone (vit_tiny_r_s16_p8)
    else:
        raise CheckpointError(path, "unknown hybrid backbone layout: neither 'stem.conv.weight' (timm's ResNetV2) nor "
                              "'conv.weight' (its root alone)", key=prefix + names[0])
    conv_shape = r.shape(prefix + root + "conv.weight")
    if len(conv_shape) != 4 or conv_shape[2:] != (7, 7):
        raise CheckpointError(path, f"expected shape (width, in_channels, 7, 7), found {conv_shape}",
                              key=prefix + root + "conv.weight")
    width, in_channels = conv_shape[0], conv_shape[1]
    if prefix + root + "norm.weight" not in r.tensors:
        if root and prefix + "norm.weight" in r.tensors:
            raise CheckpointError(path, "unsupported timm hybrid: a pre-activation ResNetV2 backbone (preact=True; "
                                  "the hybrids' is not)", key=prefix + "norm.weight")
        raise CheckpointError(path, "missing tensor", key=prefix + root + "norm.weight")

    stages = []
    while any(n.startswith(f"stages.{len(stages)}.") for n in names):
        i = len(stages)
        units = 0
        while any(n.startswith(f"stages.{i}.blocks.{units}.") for n in names):
            units += 1
        if units == 0:
            raise CheckpointError(path, "expected 'blocks.0' in the stage", key=f"{prefix}stages.{i}.")
        stages.append(units)
    if root == "" and stages:
        raise CheckpointError(path, "ResNet stages next to a root without 'stem.'", key=f"{prefix}stages.0.")
    if len(stages) > MAX_STAGES:
        raise CheckpointError(path, f"{len(stages)} ResNet stages: timm's ResNetV2 has at most {MAX_STAGES} "
                              "(it would dilate, not stride, past output stride 32)", key=f"{prefix}stages.{MAX_STAGES}.")
    try:
        resnet = ResNetConfig(num_layers=tuple(stages), width_factor=width / 64, **TIMM_NUMERICS)
    except ValueError as e:
        raise CheckpointError(path, f"root width {width} cannot be expressed: {e}", key=prefix + root + "conv.weight")

    take("stem.conv_root.weight", root + "conv.weight", (width, in_channels, 7, 7))
    take("stem.gn_root.weight", root + "norm.weight", (width,))
    take("stem.gn_root.bias", root + "norm.bias", (width,))
    channels = width
    for i, units in enumerate(stages):
        mid = width * 2**i
        for u in range(units):
            theirs, ours = f"stages.{i}.blocks.{u}.", f"stem.stages.{i}.{u}."
            if u == 0:  # timm gives the first unit of every stage a projection, as vitkit (channels or stride change)
                take(ours + "conv_proj.weight", theirs + "downsample.conv.weight", (4 * mid, channels, 1, 1))
                take(ours + "gn_proj.weight", theirs + "downsample.norm.weight", (4 * mid,))
                take(ours + "gn_proj.bias", theirs + "downsample.norm.bias", (4 * mid,))
            for k, (c_in, c_out, kernel) in enumerate(((channels, mid, 1), (mid, mid, 3), (mid, 4 * mid, 1)), 1):
                take(ours + f"conv{k}.weight", theirs + f"conv{k}.weight", (c_out, c_in, kernel, kernel))
                take(ours + f"gn{k}.weight", theirs + f"norm{k}.weight", (c_out,))
                take(ours + f"gn{k}.bias", theirs + f"norm{k}.bias", (c_out,))
            channels = 4 * mid
    left = [prefix + n for n in names if prefix + n not in r.taken]
    if left:
        more = f" (and {len(left) - 5} more)" if len(left) > 5 else ""
        raise CheckpointError(path, f"unexpected tensor(s) in the hybrid backbone: {', '.join(left[:5])}{more}",
                              key=left[0])
    proj = "patch_embed.proj.weight"
    if proj in r.tensors:
        shape = tuple(r.tensors[proj].shape)
        if len(shape) != 4 or shape[1] != resnet.out_channels:
            raise CheckpointError(path, f"expected shape (width, {resnet.out_channels}, ph, pw) after the ResNet stem, "
                                  f"found {shape}", key=proj)
    return Backbone(resnet, sd, src, in_channels)


# -------------------------------------------------------------------------------------------------- writing
def write_timm_backbone(model, *, adapt_numerics: bool = False) -> dict[str, torch.Tensor]:
    """The hybrid's stem under timm's `patch_embed.backbone.*` names, plus `patch_embed.proj.weight` and `.bias`.

    The caller drops vitkit's `stem.*` keys and updates its state dict with this. A model with vit_jax's numerics
    is refused unless `adapt_numerics=True`, which rescales the tensors so timm computes the same function
    (see `convert_numerics`; the root GroupNorm's epsilon is the one difference left).
    """
    c = model.config
    if c.resnet is None:
        raise ValueError("not a hybrid model: there is no ResNet stem to write")
    if len(c.resnet.num_layers) > MAX_STAGES:
        raise ValueError(f"{len(c.resnet.num_layers)} ResNet stages cannot be written for timm: its ResNetV2 has at "
                         f"most {MAX_STAGES}")
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items() if k.startswith(("stem.", "patch_embed."))}
    resnet = c.resnet
    if (resnet.weight_std, resnet.group_norm_eps) != (TIMM_NUMERICS["weight_std"], TIMM_NUMERICS["group_norm_eps"]):
        if not adapt_numerics:
            raise ValueError(
                f"this hybrid standardises its kernels as weight_std={resnet.weight_std!r} with GroupNorm epsilon "
                f"{resnet.group_norm_eps:g}; timm's hybrids use weight_std='timm' and 1e-5, so the same tensors "
                "would compute another function: pass adapt_numerics=True to write tensors rescaled for timm's "
                "numerics")
        sd = convert_numerics(sd, resnet, **TIMM_NUMERICS)
    out: dict[str, torch.Tensor] = {}
    root = "stem." if resnet.num_layers else ""
    out[PREFIX + root + "conv.weight"] = sd["stem.conv_root.weight"]
    out[PREFIX + root + "norm.weight"] = sd["stem.gn_root.weight"]
    out[PREFIX + root + "norm.bias"] = sd["stem.gn_root.bias"]
    for i, units in enumerate(resnet.num_layers):
        for u in range(units):
            theirs, ours = f"{PREFIX}stages.{i}.blocks.{u}.", f"stem.stages.{i}.{u}."
            if ours + "conv_proj.weight" in sd:
                out[theirs + "downsample.conv.weight"] = sd[ours + "conv_proj.weight"]
                out[theirs + "downsample.norm.weight"] = sd[ours + "gn_proj.weight"]
                out[theirs + "downsample.norm.bias"] = sd[ours + "gn_proj.bias"]
            for k in (1, 2, 3):
                out[theirs + f"conv{k}.weight"] = sd[ours + f"conv{k}.weight"]
                out[theirs + f"norm{k}.weight"] = sd[ours + f"gn{k}.weight"]
                out[theirs + f"norm{k}.bias"] = sd[ours + f"gn{k}.bias"]
    out["patch_embed.proj.weight"] = sd["patch_embed.proj.weight"]
    out["patch_embed.proj.bias"] = sd["patch_embed.proj.bias"]
    return {k: v.contiguous() for k, v in out.items()}


@torch.no_grad()
def convert_numerics(state_dict: dict[str, torch.Tensor], resnet: ResNetConfig, weight_std: str,
                     group_norm_eps: float) -> dict[str, torch.Tensor]:
    """Tensors for the same function under other stem numerics (vit_jax's <-> timm's); a new dict.

    Each kernel is scaled per output channel so the new standardisation gives the same standardised kernel. The
    GroupNorm epsilon is matched by running the ResNet's activations k = sqrt(new_eps / old_eps) times larger:
    every GroupNorm's scale and bias times k (ReLU, max-pool and the residual sums keep the factor), the
    projection's kernel divided by k. The root GroupNorm sees the image's convolution, which cannot be scaled, so
    its epsilon alone changes (a relative change of about (new_eps - old_eps) / (2 * variance) there).
    """
    out = dict(state_dict)
    k = math.sqrt(group_norm_eps / resnet.group_norm_eps)
    for key, value in state_dict.items():
        if not key.startswith("stem."):
            continue
        if value.dim() == 4:  # a standardised convolution kernel
            out[key] = _rescale_kernel(value, resnet.weight_std, weight_std)
        elif k != 1.0 and ".gn" in key:  # GroupNorm scale or bias
            out[key] = value * k
    if k != 1.0:
        out["patch_embed.proj.weight"] = state_dict["patch_embed.proj.weight"] / k
    return out


def _rescale_kernel(w: torch.Tensor, old: str, new: str) -> torch.Tensor:
    """a * w per output channel, with standardise_new(a * w) = standardise_old(w)."""
    if old == new:
        return w
    w64 = w.double()
    s = w64.flatten(1).var(dim=1, unbiased=False).sqrt().view(-1, 1, 1, 1)
    e_old, e_new = _STD_EPS[old], _STD_EPS[new]
    if (old, new) == ("jax", "timm"):  # a / sqrt(a^2 s^2 + e_new) = 1 / (s + e_old)
        a = torch.sqrt(e_new / (e_old * (2 * s + e_old)))
    else:  # ("timm", "jax"): a / (a s + e_new) = 1 / sqrt(s^2 + e_old); the difference sqrt(s^2 + e) - s without cancelling
        a = e_new * (torch.sqrt(s * s + e_old) + s) / e_old
    return (w64 * a).to(w.dtype)
