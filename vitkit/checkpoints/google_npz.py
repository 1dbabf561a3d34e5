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
    arrays = _params_subtree(_strip_prefix(arrays))
    if is_big_vision(arrays):
        return from_big_vision(arrays, path, settings)
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
    depth, heads, mlp_dim = _take_blocks(r, put, arrays, width, path)
    settings.recorded("num_heads", heads, key="Transformer/encoderblock_0")
    _take_norm(r, put, "norm", "Transformer/encoder_norm", width)

    # ------------------------------------------------------------------------------------------------- head
    representation_size, num_classes = _take_head(r, put, width)

    config = ViTConfig(
        image_size=image_size, patch_size=(ph, pw), in_channels=in_channels, width=width, depth=depth,
        num_heads=heads, mlp_dim=mlp_dim, num_classes=num_classes, pool=pool, class_token=class_token,
        posemb=posemb, representation_size=representation_size, gelu="tanh", layer_norm_eps=1e-6, resnet=resnet,
    )
    return Converted(config, sd, src, Preprocessing(image_size=image_size), default_resample="bilinear",
                     guessed=settings.guessed)


def _take_blocks(r: Reader, put, arrays: dict, width: int, path) -> tuple[int, int, int]:
    """The encoder blocks `Transformer/encoderblock_{i}` in either naming; returns depth, heads and MLP width (the
    head count is the attention kernels' middle axis)."""
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
    mlp_dim = _dense_out(r, f"{first}{mlp}/Dense_0/kernel")
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
    return depth, heads, mlp_dim


def _dense_out(r: Reader, key: str) -> int:
    """The output width of a Dense kernel (in, out), or CheckpointError when the tensor is not one."""
    shape = r.shape(key)
    if len(shape) != 2:
        raise CheckpointError(r.path, f"expected a Dense kernel of shape (in, out), found {shape}", key=key)
    return shape[1]


def _take_head(r: Reader, put, width: int) -> tuple[int | None, int]:
    """The optional representation layer (`pre_logits`, Dense + tanh) and head; then nothing may be left over.
    Returns (representation_size or None, num_classes)."""
    features, representation_size = width, None
    if r.has("pre_logits/kernel"):
        representation_size = _dense_out(r, "pre_logits/kernel")
        _take_dense(r, put, "pre_logits.fc", "pre_logits", width, representation_size)
        features = representation_size
    num_classes = 0
    if r.has("head/kernel"):
        num_classes = _dense_out(r, "head/kernel")
        _take_dense(r, put, "head", "head", features, num_classes)
    r.check_all_taken()
    return representation_size, num_classes


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


# ------------------------------------------------------------------------------------------------ big_vision
BV_POSEMB = ("pos_embedding", "Transformer/pos_embedding")  # current big_vision; before 2022 (inside the encoder)
BV_STACKED = "Transformer/encoderblock/"  # `scan=True`: one block whose parameters have a leading depth axis
BV_MAP = "MAPHead_0/"
BV_MAP_PARTS = ("probe", "MultiHeadDotProductAttention_0", "LayerNorm_0", "MlpBlock_0")
BV_TOWERS = ("img/", "txt/")


def _params_subtree(arrays: dict) -> dict:
    """A big_vision training checkpoint holds `params/...` beside the optimizer's state: the parameters alone."""
    params = {k[len("params/"):]: v for k, v in arrays.items() if k.startswith("params/")}
    return params if params and len(params) < len(arrays) else arrays


def is_big_vision(keys) -> bool:
    """big_vision's `vit.py` layout: position embeddings outside `posembed_input` (or none: sin-cos computed on the
    fly), blocks stacked by `scan`, a MAP head, or a two-tower file; never the original's hybrid stem."""
    keys = set(keys)
    if "Transformer/posembed_input/pos_embedding" in keys or "conv_root/kernel" in keys:
        return False
    if any(k in keys for k in BV_POSEMB) or "probe" in keys:
        return True
    if any(k.startswith((BV_STACKED, BV_MAP, *BV_TOWERS)) for k in keys):
        return True
    # no position embeddings at all, and Flax linen block names (the published files name the attention `_1`)
    return any(k.startswith("Transformer/encoderblock_0/" + FLAX_LINEN[1]) for k in keys)


def _unstack(arrays: dict, path) -> tuple[dict, dict]:
    """`scan` checkpoints as the per-block naming big_vision's `scan_to_pyloop` gives, and each new key's origin."""
    stacked = sorted(k for k in arrays if k.startswith(BV_STACKED))
    if not stacked:
        return arrays, {}
    loose = [k for k in arrays if k.startswith("Transformer/encoderblock_")]
    if loose:
        raise CheckpointError(path, "both stacked (scan) and per-block encoder parameters", key=loose[0])
    depth = arrays[stacked[0]].shape[0] if arrays[stacked[0]].ndim else 0
    for key in stacked:
        found = tuple(arrays[key].shape)
        if not found or found[0] != depth or depth == 0:
            raise CheckpointError(path, f"expected a leading depth axis of {depth or 'at least 1'} (scan), found shape "
                                  f"{found}", key=key)
    out = {k: v for k, v in arrays.items() if not k.startswith(BV_STACKED)}
    origin = {}
    for key in stacked:
        rest = key[len(BV_STACKED):]
        for i in range(depth):
            out[f"Transformer/encoderblock_{i}/{rest}"] = arrays[key][i]
            origin[f"Transformer/encoderblock_{i}/{rest}"] = f"{key}[{i}]"
    return out, origin


def from_big_vision(arrays: dict[str, np.ndarray], path, settings: Settings | None = None) -> Converted:
    """big_vision's ViT (`big_vision/models/vit.py`): the file records the widths, the head count (attention kernel
    shapes), the class token (`pool_type='tok'`), a MAP head (`'map'`) and learned position embeddings; the format
    fixes tanh GELU (flax's `nn.gelu` default) and LayerNorm eps 1e-6 (flax's default).

    What the file does not record, and why each is handled as it is:
      - learned positions cover the patches only (added before the class token is prepended), except in files from
        before 2022 (`Transformer/pos_embedding`, or one extra row), which cover the class token too: big_vision's
        own `fix_old_checkpoints` tells them apart the same way; grids are read as square (big_vision's
        `resample_posemb` does too) unless `image_size=` gives the file's own size.
      - without `pos_embedding` the model used `posemb='sincos2d'` (big_vision's `get_posemb` knows only 'learn'
        and 'sincos2d'), computed for whatever grid the input has: the function is the same at every size, so the
        image size is only the input size the model expects. It is guessed (224 px, big_vision's usual size) and
        announced, not an error: no guess can make a different function, and `image_size=` says it.
      - with neither a class token nor a MAP head the pooling is `pool_type='gap'` (the default), `'0'` or
        `'none'`, which leave the same tensors: 'gap' is assumed and announced ('0' and 'none' are not vitkit
        pools).
    """
    settings = settings or Settings(path)
    towers = sorted({k.split("/", 1)[0] for k in arrays if k.startswith(BV_TOWERS)})
    if towers:
        raise CheckpointError(path, f"unsupported big_vision model: a two-tower (image-text) checkpoint with towers "
                              f"{', '.join(towers)}; extract the image tower's parameters first", key=towers[0] + "/")
    if "probe" in arrays:  # MAP heads inlined at the top level during ViT-G's development (fix_old_checkpoints)
        arrays = {(BV_MAP + k if k.split("/", 1)[0] in BV_MAP_PARTS else k): v for k, v in arrays.items()}
    arrays, origin = _unstack(arrays, path)
    try:
        return _read_big_vision(arrays, path, settings, origin)
    except CheckpointError as e:
        if e.key not in origin:
            raise
        message = str(e)[len(f"{e.path}, key {e.key!r}: "):]
        raise CheckpointError(path, message, key=origin[e.key]) from None


def _read_big_vision(arrays: dict, path, settings: Settings, origin: dict) -> Converted:
    r = Reader(arrays, path)
    kernel = r.shape("embedding/kernel")
    if len(kernel) != 4:
        raise CheckpointError(path, f"expected a 4-d conv kernel (h, w, in, out), found {kernel}",
                              key="embedding/kernel")
    ph, pw, in_channels, width = kernel
    sd: dict[str, torch.Tensor] = {}
    src: dict[str, str] = {}

    def put(name: str, key: str, tensor: torch.Tensor):
        sd[name] = tensor
        src[name] = origin.get(key, key)

    _take_conv(r, put, "patch_embed.proj", "embedding", kernel, bias=True)
    class_token = r.has("cls")
    if class_token:
        put("cls_token", "cls", r.get("cls", (1, 1, width)))
    map_head = any(k.startswith(BV_MAP) for k in arrays)
    if class_token and map_head:
        raise CheckpointError(path, "both a class token and a MAP head; big_vision's ViT has one or the other",
                              key=BV_MAP + "probe")

    # ------------------------------------------------------------------------------------------- positions
    posemb_key = next((k for k in BV_POSEMB if r.has(k)), None)
    posemb_prefix = True
    if posemb_key is not None:
        pos = r.get(posemb_key, (1, None, width))
        length = pos.shape[1]
        # (patches, whether the embeddings cover the class token): the old layout adds them after prepending it
        if not class_token:
            readings = [(length, True)]
        elif posemb_key == "pos_embedding":
            readings = [(length, False), (length - 1, True)]
        else:
            readings = [(length - 1, True)]
        found = [(grid, covers) for n, covers in readings for grid in grid_candidates(n, (ph, pw), settings)]
        if not found:
            given = settings.get("image_size")
            raise CheckpointError(path, f"{length} position embeddings " + (
                f"do not fit image_size={tuple(given)} with {(ph, pw)} patches" if given is not None else
                "form no square grid, so the image size cannot be read; pass image_size=(H, W)"), key=posemb_key)
        grid, posemb_prefix = found[0]
        put("pos_embed", posemb_key, pos)
        posemb = settings.recorded("posemb", "learned", key=posemb_key)
        image_size = (grid[0] * ph, grid[1] * pw)
    else:
        posemb = settings.recorded("posemb", "sincos_2d", key="pos_embedding")
        default = (224 // ph * ph or ph, 224 // pw * pw or pw)
        image_size = settings.assumed("image_size", default, "big_vision's usual size; the file has sin-cos position "
                                      "embeddings, computed for any grid, so only the input size expected is guessed")
        if image_size[0] % ph or image_size[1] % pw:
            raise CheckpointError(path, f"image_size={tuple(image_size)} is not a multiple of the patch size "
                                  f"{(ph, pw)}", key="image_size")
        if width % 4:
            raise CheckpointError(path, f"sin-cos position embeddings need a width divisible by 4, found {width}",
                                  key="embedding/kernel")

    # --------------------------------------------------------------------------------------------- encoder
    depth, heads, mlp_dim = _take_blocks(r, put, arrays, width, path)
    settings.recorded("num_heads", heads, key=origin.get(f"Transformer/encoderblock_0/{FLAX_LINEN[1]}/query/kernel",
                                                         "Transformer/encoderblock_0"))
    _take_norm(r, put, "norm", "Transformer/encoder_norm", width)

    # ------------------------------------------------------------------------------------------------ head
    if class_token:
        pool = settings.recorded("pool", "token", key="cls")
    elif map_head:
        pool = settings.recorded("pool", "map", key=BV_MAP + "probe")
        _take_map_head(r, put, width, heads, mlp_dim)
    else:
        pool = settings.assumed("pool", "gap", "big_vision's default pool_type; its '0' and 'none' leave the same "
                                "tensors and are not vitkit pools")
        if pool != "gap":
            raise CheckpointError(path, f"pool={pool!r} needs a class token or a MAP head, and the file has neither; "
                                  "it fits pool='gap'", key="cls")
    representation_size, num_classes = _take_head(r, put, width)

    config = ViTConfig(
        image_size=image_size, patch_size=(ph, pw), in_channels=in_channels, width=width, depth=depth,
        num_heads=heads, mlp_dim=mlp_dim, num_classes=num_classes, pool=pool, class_token=class_token,
        posemb=posemb, posemb_prefix=posemb_prefix, representation_size=representation_size,
        gelu=settings.recorded("gelu", "tanh", key="flax nn.gelu"),
        layer_norm_eps=settings.recorded("layer_norm_eps", 1e-6, key="flax nn.LayerNorm"),
    )
    return Converted(config, sd, src, Preprocessing(image_size=config.image_size), default_resample="bilinear",
                     guessed=settings.guessed, notes=settings.notes)


def _take_map_head(r: Reader, put, width: int, heads: int, mlp_dim: int) -> None:
    """big_vision's MAPHead as vitkit's AttentionPool: the probe queries the encoded tokens, then a pre-norm MLP
    with a residual; the same head count and MLP width as the blocks (MAPHead is built with the model's)."""
    m = BV_MAP
    attn = m + "MultiHeadDotProductAttention_0/"
    hd = width // heads
    put("attn_pool.latent", m + "probe", r.get(m + "probe", (1, 1, width)))
    q_shape = r.shape(attn + "query/kernel")
    if q_shape != (width, heads, hd):
        raise CheckpointError(r.path, f"expected shape {(width, heads, hd)} (the blocks' {heads} heads), found "
                              f"{q_shape}", key=attn + "query/kernel")
    put("attn_pool.q.weight", attn + "query/kernel", r.get(attn + "query/kernel", (width, heads, hd))
        .reshape(width, width).t())
    put("attn_pool.q.bias", attn + "query/bias", r.get(attn + "query/bias", (heads, hd)).reshape(width))
    kv_w = [r.get(f"{attn}{p}/kernel", (width, heads, hd)).reshape(width, width).t() for p in ("key", "value")]
    kv_b = [r.get(f"{attn}{p}/bias", (heads, hd)).reshape(width) for p in ("key", "value")]
    put("attn_pool.kv.weight", attn + "key/kernel", torch.cat(kv_w, 0))
    put("attn_pool.kv.bias", attn + "key/bias", torch.cat(kv_b, 0))
    put("attn_pool.proj.weight", attn + "out/kernel",
        r.get(attn + "out/kernel", (heads, hd, width)).reshape(width, width).t())
    put("attn_pool.proj.bias", attn + "out/bias", r.get(attn + "out/bias", (width,)))
    _take_norm(r, put, "attn_pool.norm", m + "LayerNorm_0", width)
    _take_dense(r, put, "attn_pool.mlp.fc1", m + "MlpBlock_0/Dense_0", width, mlp_dim)
    _take_dense(r, put, "attn_pool.mlp.fc2", m + "MlpBlock_0/Dense_1", mlp_dim, width)


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
    if c.pool not in ("token", "gap"):
        problems.append(f"pool={c.pool!r} (the original has no attention-pooling head)")
    if c.dist_token or c.num_reg_tokens or c.norm_pre or c.layer_scale is not None:
        problems.append("a distillation token, register tokens, norm_pre or LayerScale")
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
