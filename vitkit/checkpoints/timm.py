"""timm's `VisionTransformer` state dicts, both ways.

vitkit's own names follow timm's, so the mapping is small: timm's `fc_norm` (the final norm applied after
average pooling) is vitkit's `norm` with `norm_after_pool=True`. What a state dict does not store is inferred:
the head count from the variant table (for other widths the caller must say num_heads=), the grid as square, the
pooling from `fc_norm` and the class token, the numerics as timm's defaults (exact GELU, LayerNorm epsilon 1e-6);
every such guess is announced by `load`, and any of them can be given to it.
"""

from __future__ import annotations

import torch

from ..configs import Preprocessing, ViTConfig, table_heads
from ..errors import CheckpointError
from .common import Converted, Reader, Settings, grid_candidates

UNSUPPORTED = {
    "reg_token": "register tokens",
    "norm_pre.weight": "a pre-norm before the encoder (CLIP-style)",
    "attn_pool.latent": "attention pooling",
    "patch_embed.backbone.": "a hybrid backbone in timm's layout (load the original .npz instead)",
    ".ls1.gamma": "LayerScale",
    ".attn.q_norm.weight": "QK normalisation",
}


def looks_like_timm(keys) -> bool:
    keys = set(keys)
    return "patch_embed.proj.weight" in keys or any(k.startswith("blocks.0.") for k in keys)


def from_timm(tensors: dict[str, torch.Tensor], path, settings: Settings | None = None,
              hints: dict | None = None) -> Converted:
    """`hints`: fields a vitkit-written file recorded in its metadata (heads, pooling, numerics, size)."""
    settings = settings or Settings(path)
    hints = dict(hints or {})
    for marker, what in UNSUPPORTED.items():
        found = [k for k in tensors if (k.startswith(marker) or marker in k)]
        if found:
            raise CheckpointError(path, f"unsupported timm model: {what}", key=found[0])
    r = Reader(tensors, path)
    w_shape = r.shape("patch_embed.proj.weight")
    if len(w_shape) != 4:
        raise CheckpointError(path, f"expected shape (width, channels, ph, pw), found {w_shape}",
                              key="patch_embed.proj.weight")
    width, in_channels, ph, pw = w_shape
    sd, src = {}, {}

    def take(name, shape, source=None):
        source = source or name
        sd[name] = r.get(source, shape)
        src[name] = source

    def hinted(name, default, why):
        """Recorded in a vitkit-written file's metadata, else assumed (and announced)."""
        if name in hints:
            return settings.recorded(name, hints[name], key="vitkit.config")
        return settings.assumed(name, default, why)

    take("patch_embed.proj.weight", w_shape)
    take("patch_embed.proj.bias", (width,))
    class_token = r.has("cls_token")
    if class_token:
        take("cls_token", (1, 1, width))
    if "image_size" in hints:
        settings.recorded("image_size", tuple(hints["image_size"]), key="vitkit.config")
        settings.given.setdefault("image_size", tuple(hints["image_size"]))
    posemb, posemb_prefix = "none", True
    if r.has("pos_embed"):
        length = r.shape("pos_embed")[1] if len(r.shape("pos_embed")) == 3 else 0
        take("pos_embed", (1, None, width))
        grid, posemb_prefix = _read_grid(length, class_token, (ph, pw), settings, hints)
        posemb = "learned"
    elif settings.get("image_size") is not None:
        size = settings.get("image_size")
        grid = (size[0] // ph, size[1] // pw)
    else:
        raise CheckpointError(path, "the file has no position embeddings, so its image size cannot be read: pass "
                              "image_size=(H, W)", key="pos_embed")

    depth = r.count("blocks.{}.")
    if depth == 0 or not r.has("blocks.0.norm1.weight"):
        raise CheckpointError(path, "missing tensor: no encoder blocks", key="blocks.0.norm1.weight")
    mlp_dim = r.shape("blocks.0.mlp.fc1.weight")[0]
    qkv_bias = r.has("blocks.0.attn.qkv.bias")
    for i in range(depth):
        n = f"blocks.{i}."
        take(n + "norm1.weight", (width,))
        take(n + "norm1.bias", (width,))
        take(n + "attn.qkv.weight", (3 * width, width))
        if qkv_bias:
            take(n + "attn.qkv.bias", (3 * width,))
        take(n + "attn.proj.weight", (width, width))
        take(n + "attn.proj.bias", (width,))
        take(n + "norm2.weight", (width,))
        take(n + "norm2.bias", (width,))
        take(n + "mlp.fc1.weight", (mlp_dim, width))
        take(n + "mlp.fc1.bias", (mlp_dim,))
        take(n + "mlp.fc2.weight", (width, mlp_dim))
        take(n + "mlp.fc2.bias", (width,))
    if not hints:  # a vitkit-written file knows its blocks; a bare timm file's tensors fit post-norm ones too
        settings.note("the blocks are read as timm's pre-norm Block (residual post-norm blocks, timm's "
                      "ResPostBlock in vit_*_rpn_*, have the same tensors and are not supported)")
    norm_after_pool = r.has("fc_norm.weight")
    if norm_after_pool and r.has("norm.weight"):
        raise CheckpointError(path, "both 'norm' and 'fc_norm' present; timm uses one or the other", key="fc_norm.weight")
    final = "fc_norm" if norm_after_pool else "norm"
    take("norm.weight", (width,), f"{final}.weight")
    take("norm.bias", (width,), f"{final}.bias")
    num_classes = 0
    if r.has("head.weight"):
        num_classes = r.shape("head.weight")[0]
        take("head.weight", (num_classes, width))
        take("head.bias", (num_classes,))
    r.check_all_taken()

    if not class_token:
        pool = settings.recorded("pool", "gap", key="cls_token")  # without a class token timm averages
    elif norm_after_pool:
        pool = hinted("pool", "gap", "timm applies fc_norm after average pooling")
    else:
        pool = hinted("pool", "token", "timm's default with a class token and no fc_norm")
    heads = hints.get("num_heads") and settings.recorded("num_heads", hints["num_heads"], key="vitkit.config")
    heads = heads or guess_heads(width, settings, "patch_embed.proj.weight")
    config = ViTConfig(
        image_size=(grid[0] * ph, grid[1] * pw), patch_size=(ph, pw), in_channels=in_channels, width=width,
        depth=depth, num_heads=heads, mlp_dim=mlp_dim, num_classes=num_classes, pool=pool, class_token=class_token,
        posemb=posemb, posemb_prefix=posemb_prefix, gelu=hinted("gelu", "exact", "timm's default"),
        layer_norm_eps=hinted("layer_norm_eps", 1e-6, "timm's default"), qkv_bias=qkv_bias,
        norm_after_pool=norm_after_pool,
    )
    return Converted(config, sd, src, Preprocessing(image_size=config.image_size), guessed=settings.guessed, notes=settings.notes)


def _read_grid(length: int, class_token: bool, patch: tuple[int, int], settings: Settings, hints: dict):
    """The patch grid and whether the position embeddings cover the class token, from their count.

    With a class token, `length` positions fit two models: a grid of length - 1 patches whose embeddings also cover
    the class token (timm's default), or a grid of `length` patches that leaves it out (no_embed_class). The caller's
    image_size settles it; without it a square grid is taken, and announced as a guess (timm files do not record
    the grid)."""
    path = settings.path
    readings = [(length - 1, True), (length, False)] if class_token else [(length, True)]
    found = [(grid, covers) for n, covers in readings for grid in grid_candidates(n, patch, settings)]
    if settings.get("image_size") is not None:
        if not found:
            raise CheckpointError(path, f"{length} position embeddings do not fit image_size="
                                  f"{tuple(settings.get('image_size'))} with {patch} patches", key="pos_embed")
        return found[0]
    if len(found) != 1:
        fits = " or ".join(f"{n}" for n, _ in readings)
        raise CheckpointError(path, f"{length} position embeddings: {fits} patches form no square grid, so the "
                              "image size cannot be read from the file; pass image_size=(H, W), the size it was "
                              "trained at", key="pos_embed")
    grid, covers = found[0]
    why = f"a square {grid[0]}x{grid[1]} grid of the {length} position embeddings"
    if class_token:
        why += ", which " + ("cover" if covers else "leave out") + " the class token"
    settings.assumed("image_size", (grid[0] * patch[0], grid[1] * patch[1]), why)
    return grid, covers


def guess_heads(width: int, settings: Settings, key: str) -> int:
    """The head count of a file that does not record it: the caller's; else the variant table's for a ViT width
    (announced); else every divisor is as likely, so the caller must choose."""
    heads = settings.get("num_heads")
    if heads is None:
        table = table_heads(width)
        if table is None:
            choices = [h for h in range(1, width + 1) if width % h == 0 and 16 <= width // h <= 128]
            raise CheckpointError(settings.path, f"the file does not record the number of attention heads and width "
                                  f"{width} is not a width of the variant table; pass num_heads= (for example "
                                  f"{', '.join(map(str, choices)) or 1})", key=key)
        heads = settings.assumed("num_heads", table, f"the variant table's for width {width}")
    if width % heads:
        raise CheckpointError(settings.path, f"width {width} is not divisible by num_heads={heads}", key=key)
    return heads


def _is_square(n: int) -> bool:
    return n >= 0 and int(n**0.5) ** 2 == n


def to_timm(model) -> dict[str, torch.Tensor]:
    """A state dict that `timm.models.VisionTransformer` with the matching arguments loads with strict=True.

    See `timm_kwargs` for those arguments. Fixed or factorised position embeddings are written as the full
    table timm would learn, so the function computed is the same.
    """
    c = model.config
    if c.resnet is not None:
        raise ValueError("hybrid models cannot be written as a timm ViT state dict; use format='google' or 'vitkit'")
    if c.representation_size:
        raise ValueError("timm's VisionTransformer has no representation (pre_logits) layer; use format='google'")
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    for key in ("pos_embed_row", "pos_embed_col"):
        sd.pop(key, None)
    if c.posemb in ("learned_2d", "sincos_2d"):
        sd["pos_embed"] = model.position_embeddings().detach().cpu().clone()
    if c.norm_after_pool:
        sd["fc_norm.weight"] = sd.pop("norm.weight")
        sd["fc_norm.bias"] = sd.pop("norm.bias")
    return sd


def timm_kwargs(config: ViTConfig) -> dict:
    """The `timm.models.VisionTransformer(...)` arguments for a config, as far as timm can express it."""
    import torch.nn as nn

    kwargs = dict(
        img_size=tuple(config.image_size), patch_size=tuple(config.patch_size), in_chans=config.in_channels,
        num_classes=config.num_classes, embed_dim=config.width, depth=config.depth, num_heads=config.num_heads,
        mlp_ratio=config.mlp_dim / config.width, qkv_bias=config.qkv_bias, class_token=config.class_token,
        global_pool="token" if config.pool == "token" else "avg", fc_norm=config.norm_after_pool,
        no_embed_class=not (config.posemb_prefix and config.posemb == "learned"),
        pos_embed="none" if config.posemb == "none" else "learn",
    )
    if config.gelu == "tanh":
        kwargs["act_layer"] = lambda: nn.GELU(approximate="tanh")
    if config.layer_norm_eps != 1e-6:
        from functools import partial

        kwargs["norm_layer"] = partial(nn.LayerNorm, eps=config.layer_norm_eps)
    return kwargs
