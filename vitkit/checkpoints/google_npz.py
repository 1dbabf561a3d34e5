"""The original code's `.npz` checkpoints (google-research/vision_transformer, Flax), both ways.

Keys are Flax paths joined by "/": `embedding/kernel`, `cls`, `Transformer/posembed_input/pos_embedding`,
`Transformer/encoderblock_{i}/...`, `Transformer/encoder_norm`, optional `pre_logits`, `head`, and for hybrids
`conv_root`, `gn_root`, `block{s}/unit{u}/...`. Blocks come in two namings: the published checkpoints'
`LayerNorm_0 / MultiHeadDotProductAttention_1 / LayerNorm_2 / MlpBlock_3` and current Flax's
`LayerNorm_0 / MultiHeadDotProductAttention_0 / LayerNorm_1 / MlpBlock_0`.

Flax layouts: Dense kernels (in, out); conv kernels HWIO; attention query/key/value kernels (D, heads, head_dim)
with (heads, head_dim) biases, the output kernel (heads, head_dim, D). A model loaded from here computes what the
JAX model computes: tanh GELU, LayerNorm and GroupNorm epsilon 1e-6.
"""

from __future__ import annotations

import numpy as np
import torch

from ..configs import Preprocessing, ResNetConfig, ViTConfig
from ..errors import CheckpointError
from .common import Converted, Reader, Settings, grid_candidates

PREFIXES = ("opt/target/", "params/")
PUBLISHED = ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3")
FLAX_LINEN = ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0")


def _strip_prefix(arrays: dict) -> dict:
    for prefix in PREFIXES:
        if arrays and all(k.startswith(prefix) for k in arrays):
            return {k[len(prefix):]: v for k, v in arrays.items()}
    return arrays


def looks_like_google(keys) -> bool:
    keys = list(keys)
    return any(k.split("/")[-2:] == ["embedding", "kernel"] or k.endswith("embedding/kernel") for k in keys)


def from_google(arrays: dict[str, np.ndarray], path, settings: Settings | None = None) -> Converted:
    """Everything is recorded by the file or by the format: the head count in the attention kernels' shapes, the
    pooling by the class token's presence, a square grid and the JAX model's numerics (the original code assumes
    both); `settings.given` may only agree, except image_size, which gives a non-square file its grid."""
    settings = settings or Settings(path)
    arrays = _strip_prefix(arrays)
    r = Reader(arrays, path)
    if not r.has("embedding/kernel"):
        raise CheckpointError(path, "unknown layout: no 'embedding/kernel', so not an original ViT checkpoint",
                              key="embedding/kernel")
    ph, pw, embed_in, width = r.shape("embedding/kernel") if len(r.shape("embedding/kernel")) == 4 else (0, 0, 0, 0)
    if not width:
        raise CheckpointError(path, f"expected a 4-d conv kernel (h, w, in, out), found {r.shape('embedding/kernel')}",
                              key="embedding/kernel")
    sd: dict[str, torch.Tensor] = {}
    src: dict[str, str] = {}

    def put(name: str, key: str, tensor: torch.Tensor):
        sd[name] = tensor
        src[name] = key

    # ---------------------------------------------------------------------------------------- hybrid stem
    resnet = None
    if r.has("conv_root/kernel"):
        root_shape = r.shape("conv_root/kernel")
        if len(root_shape) != 4 or root_shape[:2] != (7, 7):
            raise CheckpointError(path, f"expected shape (7, 7, in, width), found {root_shape}", key="conv_root/kernel")
        in_channels, root_width = root_shape[2], root_shape[3]
        stages = []
        s = 1
        while any(k.startswith(f"block{s}/") for k in arrays):
            units = 0
            while any(k.startswith(f"block{s}/unit{units + 1}/") for k in arrays):
                units += 1
            stages.append(units)
            s += 1
        resnet = ResNetConfig(num_layers=tuple(stages), width_factor=root_width / 64)
        if resnet.width != root_width:
            raise CheckpointError(path, f"root width {root_width} is not 64 * a width factor", key="conv_root/kernel")
        _take_conv(r, put, "stem.conv_root", "conv_root", (7, 7, in_channels, root_width))
        _take_gn(r, put, "stem.gn_root", "gn_root", root_width)
        channels = root_width
        for i, units in enumerate(stages):
            w = root_width * 2**i
            for u in range(units):
                unit, name = f"block{i + 1}/unit{u + 1}", f"stem.stages.{i}.{u}"
                stride = 2 if (i > 0 and u == 0) else 1
                _take_conv(r, put, f"{name}.conv1", f"{unit}/conv1", (1, 1, channels, w))
                _take_gn(r, put, f"{name}.gn1", f"{unit}/gn1", w)
                _take_conv(r, put, f"{name}.conv2", f"{unit}/conv2", (3, 3, w, w))
                _take_gn(r, put, f"{name}.gn2", f"{unit}/gn2", w)
                _take_conv(r, put, f"{name}.conv3", f"{unit}/conv3", (1, 1, w, 4 * w))
                _take_gn(r, put, f"{name}.gn3", f"{unit}/gn3", 4 * w)
                if channels != 4 * w or stride != 1:
                    _take_conv(r, put, f"{name}.conv_proj", f"{unit}/conv_proj", (1, 1, channels, 4 * w))
                    _take_gn(r, put, f"{name}.gn_proj", f"{unit}/gn_proj", 4 * w)
                channels = 4 * w
        if channels != embed_in:
            raise CheckpointError(path, f"expected shape ({ph}, {pw}, {channels}, {width}) after the ResNet stem, "
                                  f"found {r.shape('embedding/kernel')}", key="embedding/kernel")
    else:
        in_channels = embed_in

    _take_conv(r, put, "patch_embed.proj", "embedding", (ph, pw, embed_in, width), bias=True)

    # ------------------------------------------------------------------------------------- tokens, positions
    class_token = r.has("cls")
    if class_token:
        put("cls_token", "cls", r.get("cls", (1, 1, width)))
    pool = settings.recorded("pool", "token" if class_token else "gap", key="cls")
    posemb_key = "Transformer/posembed_input/pos_embedding"
    stride = resnet.stride if resnet else 1
    if r.has(posemb_key):
        pos = r.get(posemb_key, (1, None, width))
        grids = grid_candidates(pos.shape[1] - int(class_token), (ph, pw), settings, stride)
        if not grids:
            given = settings.get("image_size")
            raise CheckpointError(path, f"{pos.shape[1]} position embeddings " + (
                f"do not fit image_size={tuple(given)}" if given is not None else
                "form no square grid, so the image size cannot be read; pass image_size=(H, W)"), key=posemb_key)
        grid = grids[0]
        put("pos_embed", posemb_key, pos)
        posemb = "learned"
    else:
        raise CheckpointError(path, "missing tensor: the image size cannot be read without position embeddings",
                              key=posemb_key)
    image_size = (grid[0] * ph * stride, grid[1] * pw * stride)

    # ----------------------------------------------------------------------------------------------- encoder
    depth = 0
    while any(k.startswith(f"Transformer/encoderblock_{depth}/") for k in arrays):
        depth += 1
    if depth == 0:
        raise CheckpointError(path, "missing tensor: no encoder blocks", key="Transformer/encoderblock_0")
    first = "Transformer/encoderblock_0/"
    if any(k.startswith(first + PUBLISHED[1]) for k in arrays):
        names = PUBLISHED
    elif any(k.startswith(first + FLAX_LINEN[1]) for k in arrays):
        names = FLAX_LINEN
    else:
        raise CheckpointError(path, "unknown block layout: neither MultiHeadDotProductAttention_1 (published) nor "
                              "MultiHeadDotProductAttention_0 (Flax linen)", key=first)
    ln1, attn, ln2, mlp = names
    q_shape = r.shape(f"{first}{attn}/query/kernel")
    if len(q_shape) != 3 or q_shape[0] != width:
        raise CheckpointError(path, f"expected shape ({width}, heads, head_dim), found {q_shape}",
                              key=f"{first}{attn}/query/kernel")
    heads, head_dim = q_shape[1], q_shape[2]
    if heads * head_dim != width:
        raise CheckpointError(path, f"heads * head_dim = {heads * head_dim} differs from width {width}",
                              key=f"{first}{attn}/query/kernel")
    settings.recorded("num_heads", heads, key=f"{first}{attn}/query/kernel")
    mlp_dim = r.shape(f"{first}{mlp}/Dense_0/kernel")[-1]
    for i in range(depth):
        b, n = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        _take_norm(r, put, n + "norm1", b + ln1, width)
        qkv_w, qkv_b = [], []
        for part in ("query", "key", "value"):
            qkv_w.append(r.get(f"{b}{attn}/{part}/kernel", (width, heads, head_dim)).reshape(width, width).t())
            qkv_b.append(r.get(f"{b}{attn}/{part}/bias", (heads, head_dim)).reshape(width))
        put(n + "attn.qkv.weight", f"{b}{attn}/query/kernel", torch.cat(qkv_w, 0))
        put(n + "attn.qkv.bias", f"{b}{attn}/query/bias", torch.cat(qkv_b, 0))
        put(n + "attn.proj.weight", f"{b}{attn}/out/kernel",
            r.get(f"{b}{attn}/out/kernel", (heads, head_dim, width)).reshape(width, width).t())
        put(n + "attn.proj.bias", f"{b}{attn}/out/bias", r.get(f"{b}{attn}/out/bias", (width,)))
        _take_norm(r, put, n + "norm2", b + ln2, width)
        _take_dense(r, put, n + "mlp.fc1", f"{b}{mlp}/Dense_0", width, mlp_dim)
        _take_dense(r, put, n + "mlp.fc2", f"{b}{mlp}/Dense_1", mlp_dim, width)
    _take_norm(r, put, "norm", "Transformer/encoder_norm", width)

    # ------------------------------------------------------------------------------------------------- head
    features = width
    representation_size = None
    if r.has("pre_logits/kernel"):
        representation_size = r.shape("pre_logits/kernel")[-1]
        _take_dense(r, put, "pre_logits.fc", "pre_logits", width, representation_size)
        features = representation_size
    num_classes = 0
    if r.has("head/kernel"):
        num_classes = r.shape("head/kernel")[-1]
        _take_dense(r, put, "head", "head", features, num_classes)
    r.check_all_taken()

    config = ViTConfig(
        image_size=image_size, patch_size=(ph, pw), in_channels=in_channels, width=width, depth=depth,
        num_heads=heads, mlp_dim=mlp_dim, num_classes=num_classes, pool=pool, class_token=class_token,
        posemb=posemb, representation_size=representation_size, gelu="tanh", layer_norm_eps=1e-6, resnet=resnet,
    )
    return Converted(config, sd, src, Preprocessing(image_size=image_size), default_resample="bilinear",
                     guessed=settings.guessed)


def _take_dense(r: Reader, put, name, key, d_in, d_out):
    put(f"{name}.weight", f"{key}/kernel", r.get(f"{key}/kernel", (d_in, d_out)).t())
    put(f"{name}.bias", f"{key}/bias", r.get(f"{key}/bias", (d_out,)))


def _take_norm(r: Reader, put, name, key, width):
    put(f"{name}.weight", f"{key}/scale", r.get(f"{key}/scale", (width,)))
    put(f"{name}.bias", f"{key}/bias", r.get(f"{key}/bias", (width,)))


def _take_gn(r: Reader, put, name, key, channels):
    # GroupNorm parameters come as (C,) or, in some published hybrids, as (1, 1, 1, C)
    for part, ours in (("scale", "weight"), ("bias", "bias")):
        shape = r.shape(f"{key}/{part}")
        expected = (1, 1, 1, channels) if len(shape) == 4 else (channels,)
        put(f"{name}.{ours}", f"{key}/{part}", r.get(f"{key}/{part}", expected).reshape(channels))


def _take_conv(r: Reader, put, name, key, shape, bias=False):
    put(f"{name}.weight", f"{key}/kernel", r.get(f"{key}/kernel", shape).permute(3, 2, 0, 1))  # HWIO -> OIHW
    if bias:
        put(f"{name}.bias", f"{key}/bias", r.get(f"{key}/bias", (shape[-1],)))


# -------------------------------------------------------------------------------------------------- writing
def to_google(model) -> dict[str, np.ndarray]:
    """The model's parameters under the published checkpoints' names, in Flax layouts."""
    c = model.config
    problems = []
    if c.posemb != "learned" or (c.class_token and not c.posemb_prefix):
        problems.append(f"posemb={c.posemb!r}, posemb_prefix={c.posemb_prefix} (the original has learned 1D "
                        "embeddings over all tokens)")
    if c.class_token != (c.pool == "token"):
        problems.append(f"pool={c.pool!r} with class_token={c.class_token}")
    if c.norm_after_pool:
        problems.append("norm_after_pool=True")
    if not c.qkv_bias:
        problems.append("qkv_bias=False")
    if problems:
        raise ValueError("this model cannot be written as an original ViT checkpoint: " + "; ".join(problems))

    sd = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    D, H, hd = c.width, c.num_heads, c.head_dim

    def conv(key, name, bias=False):
        out[f"{key}/kernel"] = sd[f"{name}.weight"].permute(2, 3, 1, 0)  # OIHW -> HWIO
        if bias:
            out[f"{key}/bias"] = sd[f"{name}.bias"]

    def dense(key, name):
        out[f"{key}/kernel"] = sd[f"{name}.weight"].t()
        out[f"{key}/bias"] = sd[f"{name}.bias"]

    def norm(key, name):
        out[f"{key}/scale"] = sd[f"{name}.weight"]
        out[f"{key}/bias"] = sd[f"{name}.bias"]

    if c.resnet is not None:
        conv("conv_root", "stem.conv_root")
        norm("gn_root", "stem.gn_root")
        for i, units in enumerate(c.resnet.num_layers):
            for u in range(units):
                unit, name = f"block{i + 1}/unit{u + 1}", f"stem.stages.{i}.{u}"
                for part in ("conv1", "conv2", "conv3", "conv_proj"):
                    if f"{name}.{part}.weight" in sd:
                        conv(f"{unit}/{part}", f"{name}.{part}")
                for part in ("gn1", "gn2", "gn3", "gn_proj"):
                    if f"{name}.{part}.weight" in sd:
                        norm(f"{unit}/{part}", f"{name}.{part}")
    conv("embedding", "patch_embed.proj", bias=True)
    if c.class_token:
        out["cls"] = sd["cls_token"]
    out["Transformer/posembed_input/pos_embedding"] = sd["pos_embed"]
    for i in range(c.depth):
        b, n = f"Transformer/encoderblock_{i}/", f"blocks.{i}."
        norm(b + "LayerNorm_0", n + "norm1")
        w, bias = sd[n + "attn.qkv.weight"], sd[n + "attn.qkv.bias"]
        for j, part in enumerate(("query", "key", "value")):
            out[f"{b}MultiHeadDotProductAttention_1/{part}/kernel"] = w[j * D:(j + 1) * D].t().reshape(D, H, hd)
            out[f"{b}MultiHeadDotProductAttention_1/{part}/bias"] = bias[j * D:(j + 1) * D].reshape(H, hd)
        out[f"{b}MultiHeadDotProductAttention_1/out/kernel"] = sd[n + "attn.proj.weight"].t().reshape(H, hd, D)
        out[f"{b}MultiHeadDotProductAttention_1/out/bias"] = sd[n + "attn.proj.bias"]
        norm(b + "LayerNorm_2", n + "norm2")
        dense(b + "MlpBlock_3/Dense_0", n + "mlp.fc1")
        dense(b + "MlpBlock_3/Dense_1", n + "mlp.fc2")
    norm("Transformer/encoder_norm", "norm")
    if c.representation_size:
        dense("pre_logits", "pre_logits.fc")
    if c.num_classes:
        dense("head", "head")
    return {k: np.ascontiguousarray(v.numpy()) for k, v in out.items()}
