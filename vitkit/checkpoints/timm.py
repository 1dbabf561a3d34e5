"""timm's ViTs, both ways: state dicts of `VisionTransformer` / `VisionTransformerDistilled` (DeiT), the hybrids'
BiT backbone (via `timm_hybrid`), and timm hub folders (`config.json` + `model.safetensors`).

vitkit's own names follow timm's, so the mapping is small: timm's `fc_norm` (the final norm applied after pooling)
is vitkit's `norm` with `norm_after_pool=True`; timm's register-token position slots (no_embed_class=False) are
folded into the register tokens, which is the same function. What a bare state dict does not store is guessed and
announced by `load`: the head count from the variant table, the grid as square, the pooling from `fc_norm` and the
class token, the numerics as timm's defaults (exact GELU, LayerNorm epsilon 1e-6), the blocks as pre-norm blocks
without rotary encodings. A hub folder's `architecture` settles all of these through a table generated from timm
(`timm_architectures.json`, by tools/timm_architectures.py), and names what vitkit does not implement.
"""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import torch

from ..configs import Preprocessing, ViTConfig, table_heads
from ..errors import CheckpointError, GuessWarning
from .common import Converted, Reader, Settings, grid_candidates
from .timm_hybrid import is_timm_hybrid, read_timm_backbone

ARCHITECTURES = Path(__file__).with_name("timm_architectures.json")

# Parts of timm ViTs that vitkit does not implement, recognised by a key fragment: fragment -> what it is.
UNSUPPORTED = {
    "rel_pos.": "relative position embeddings",
    "rope.": "rotary position embeddings",
    ".gamma_1": "timm's Eva blocks (rotary position embeddings)",
    ".attn.q_proj.weight": "timm's Eva blocks (rotary position embeddings)",
    ".attn.q_bias": "timm's Eva blocks (rotary position embeddings)",
    ".in_proj.weight": "parallel blocks",
    ".attns.0.": "parallel blocks",
    ".attn.lambda_q1": "differential attention",
    ".mlp.fc1_g.": "SwiGLU MLP",
    ".attn.q_norm.weight": "QK normalisation",
    ".attn.norm.weight": "a norm inside attention (scale_attn_norm)",
    ".mlp.norm.weight": "a norm inside the MLP (scale_mlp_norm)",
}
ACTIVATIONS = {"gelu": "exact", "gelu_tanh": "tanh"}  # timm's act name -> vitkit's gelu
POOLS = {"token": "token", "avg": "gap", "map": "map"}  # timm's global_pool -> vitkit's pool
# model_args keys that change training only, or nothing at the file's own size
FREE_MODEL_ARGS = {"drop_rate", "pos_drop_rate", "patch_drop_rate", "proj_drop_rate", "attn_drop_rate",
                   "drop_path_rate", "weight_init", "fix_init", "dynamic_img_size", "dynamic_img_pad",
                   "pretrained_cfg", "pretrained_cfg_overlay", "features_only", "out_indices"}


def looks_like_timm(keys) -> bool:
    keys = set(keys)
    return "patch_embed.proj.weight" in keys or any(k.startswith("blocks.0.") for k in keys)


def from_timm(tensors: dict[str, torch.Tensor], path, settings: Settings | None = None,
              hints: dict | None = None) -> Converted:
    """A timm ViT state dict. `hints`: what the file's surroundings record (a vitkit-written file's metadata, a
    hub folder's config.json): num_heads, pool, gelu, layer_norm_eps, image_size, no_embed_class, blocks_known."""
    settings = settings or Settings(path)
    hints = dict(hints or {})
    source = hints.pop("source", "vitkit.config")  # where hints come from, named in contradiction errors
    for marker, what in UNSUPPORTED.items():
        found = [k for k in tensors if (k.startswith(marker) or marker in k)]
        if found:
            raise CheckpointError(path, f"unsupported timm model: {what}", key=found[0])
    r = Reader(tensors, path)
    sd, src = {}, {}
    resnet = None
    if is_timm_hybrid(tensors):  # the paper's hybrids: a BiT ResNet under patch_embed.backbone.*
        backbone = read_timm_backbone(r, path)
        sd.update(backbone.state_dict)
        src.update(backbone.sources)
        resnet = backbone.resnet
    w_shape = r.shape("patch_embed.proj.weight")
    if len(w_shape) != 4:
        raise CheckpointError(path, f"expected shape (width, channels, ph, pw), found {w_shape}",
                              key="patch_embed.proj.weight")
    width, in_channels, ph, pw = w_shape
    if resnet is not None:
        in_channels = backbone.in_channels

    def take(name, shape, source=None):
        source = source or name
        sd[name] = r.get(source, shape)
        src[name] = source

    def hinted(name, default, why):
        """Recorded beside the tensors, else assumed (and announced)."""
        if name in hints:
            return settings.recorded(name, hints[name], key=source)
        return settings.assumed(name, default, why)

    stride = resnet.stride if resnet is not None else 1
    take("patch_embed.proj.weight", w_shape)
    norm_pre = r.has("norm_pre.weight")
    if norm_pre:
        take("norm_pre.weight", (width,))
        take("norm_pre.bias", (width,))
    if r.has("patch_embed.proj.bias") == norm_pre:  # timm's pre_norm=True drops the bias, and only it does
        raise CheckpointError(path, "unsupported timm model: " + ("a patch projection with bias before norm_pre"
                              if norm_pre else "a patch projection without bias"), key="patch_embed.proj.weight")
    if not norm_pre:
        take("patch_embed.proj.bias", (width,))
    class_token = r.has("cls_token")
    if class_token:
        take("cls_token", (1, 1, width))
    dist_token = r.has("dist_token")
    if dist_token:
        if not class_token:
            raise CheckpointError(path, "a distillation token without a class token", key="dist_token")
        take("dist_token", (1, 1, width))
    num_reg_tokens = 0
    if r.has("reg_token"):
        num_reg_tokens = r.shape("reg_token")[1] if len(r.shape("reg_token")) == 3 else 0
        take("reg_token", (1, num_reg_tokens, width))
    if "image_size" in hints:
        settings.recorded("image_size", tuple(hints["image_size"]), key=source)
        settings.given.setdefault("image_size", tuple(hints["image_size"]))
    lead = int(class_token) + int(dist_token)  # the prefix tokens vitkit's position embeddings may cover
    posemb, posemb_prefix = "none", True
    if r.has("pos_embed"):
        length = r.shape("pos_embed")[1] if len(r.shape("pos_embed")) == 3 else 0
        pos = r.get("pos_embed", (1, None, width))
        src["pos_embed"] = "pos_embed"
        grid, covers = _read_grid(length, lead + num_reg_tokens, (ph * stride, pw * stride), settings, hints)
        if covers and num_reg_tokens:  # timm's slots for the registers: a constant per register, folded into it
            sd["reg_token"] = sd["reg_token"] + pos[:, lead:lead + num_reg_tokens]
            pos = torch.cat([pos[:, :lead], pos[:, lead + num_reg_tokens:]], dim=1)
        sd["pos_embed"] = pos
        posemb, posemb_prefix = "learned", covers
    elif settings.get("image_size") is not None:
        size = settings.get("image_size")
        grid = (size[0] // (ph * stride), size[1] // (pw * stride))
    else:
        raise CheckpointError(path, "the file has no position embeddings, so its image size cannot be read: pass "
                              "image_size=(H, W)", key="pos_embed")

    depth = r.count("blocks.{}.")
    if depth == 0 or not r.has("blocks.0.norm1.weight"):
        raise CheckpointError(path, "missing tensor: no encoder blocks", key="blocks.0.norm1.weight")
    if not r.has("blocks.0.norm1.bias"):
        raise CheckpointError(path, "unsupported timm model: RMSNorm (norms without bias)", key="blocks.0.norm1.weight")
    if not r.has("blocks.0.attn.proj.bias"):
        raise CheckpointError(path, "unsupported timm model: projections without bias (proj_bias=False)",
                              key="blocks.0.attn.proj.weight")
    mlp_dim = r.shape("blocks.0.mlp.fc1.weight")[0]
    fc2 = r.shape("blocks.0.mlp.fc2.weight")
    if len(fc2) == 2 and fc2[1] * 2 == mlp_dim:
        raise CheckpointError(path, "unsupported timm model: SwiGLU MLP (fc1 twice as wide as fc2's input)",
                              key="blocks.0.mlp.fc1.weight")
    qkv_bias = r.has("blocks.0.attn.qkv.bias")
    layer_scale = r.has("blocks.0.ls1.gamma")
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
        if layer_scale:
            take(n + "ls1.gamma", (width,))
            take(n + "ls2.gamma", (width,))
    if not hints.get("blocks_known"):  # a bare timm file's tensors fit other blocks too
        settings.note("the blocks are read as timm's pre-norm Block without rotary position embeddings (residual "
                      "post-norm blocks, timm's ResPostBlock in vit_*_rpn_*, and some of timm's rotary Eva ViTs have "
                      "the same tensors and are not supported)")
    norm_after_pool = r.has("fc_norm.weight")
    if norm_after_pool and r.has("norm.weight"):
        raise CheckpointError(path, "both 'norm' and 'fc_norm' present; timm uses one or the other",
                              key="fc_norm.weight")
    if not norm_after_pool and not r.has("norm.weight"):
        raise CheckpointError(path, "unsupported timm model: no final norm (timm's final_norm=False)",
                              key="norm.weight")
    final = "fc_norm" if norm_after_pool else "norm"
    take("norm.weight", (width,), f"{final}.weight")
    take("norm.bias", (width,), f"{final}.bias")
    attention_pool = r.has("attn_pool.latent")
    if attention_pool:
        _take_attention_pool(r, take, width, mlp_dim)
    num_classes = 0
    if r.has("head.weight"):
        num_classes = r.shape("head.weight")[0]
        take("head.weight", (num_classes, width))
        take("head.bias", (num_classes,))
    dist_head = r.has("head_dist.weight") or (dist_token and num_classes == 0)
    if r.has("head_dist.weight"):
        if not dist_token:
            raise CheckpointError(path, "a distillation head without a distillation token", key="head_dist.weight")
        take("head_dist.weight", (num_classes, width))
        take("head_dist.bias", (num_classes,))
    r.check_all_taken()

    if attention_pool:
        pool = settings.recorded("pool", "map", key="attn_pool.latent")
    elif dist_head:
        pool = settings.recorded("pool", "token", key="head_dist.weight")  # timm's distilled model reads two tokens
    elif not class_token:
        pool = settings.recorded("pool", "gap", key="cls_token")  # without a class token timm averages
    elif norm_after_pool:
        pool = hinted("pool", "gap", "timm applies fc_norm after average pooling")
    else:
        pool = hinted("pool", "token", "timm's default with a class token and no fc_norm")
    heads = hints.get("num_heads") and settings.recorded("num_heads", hints["num_heads"], key=source)
    heads = heads or guess_heads(width, settings, "patch_embed.proj.weight")
    if layer_scale:
        layer_scale = settings.get("layer_scale") or 1e-5  # only the initial value: the file holds the scales
    else:
        layer_scale = settings.recorded("layer_scale", None, key="blocks.0.ls1.gamma")
    try:
        config = ViTConfig(
            image_size=(grid[0] * ph * stride, grid[1] * pw * stride), patch_size=(ph, pw), in_channels=in_channels,
            width=width, depth=depth, num_heads=heads, mlp_dim=mlp_dim, num_classes=num_classes, pool=pool,
            class_token=class_token, dist_token=dist_token, dist_head=dist_head, num_reg_tokens=num_reg_tokens,
            posemb=posemb, posemb_prefix=posemb_prefix, norm_pre=norm_pre, layer_scale=layer_scale,
            gelu=hinted("gelu", "exact", "timm's default"),
            layer_norm_eps=hinted("layer_norm_eps", 1e-6, "timm's default"), qkv_bias=qkv_bias,
            norm_after_pool=norm_after_pool, resnet=resnet,
        )
    except ValueError as e:
        raise CheckpointError(path, f"the tensors describe no model vitkit can build ({e})") from None
    return Converted(config, sd, src, Preprocessing(image_size=config.image_size), guessed=settings.guessed,
                     notes=settings.notes, default_resample="bicubic-antialias", dynamic_resample="bicubic-antialias")


def _take_attention_pool(r: Reader, take, width: int, mlp_dim: int) -> None:
    """timm's AttentionPoolLatent, as VisionTransformer builds it: one latent query, the blocks' MLP width."""
    latent = r.shape("attn_pool.latent")
    if len(latent) != 3 or latent[1] != 1:
        raise CheckpointError(r.path, f"unsupported timm model: attention pooling with several latent queries "
                              f"(expected shape (1, 1, {width}), found {latent})", key="attn_pool.latent")
    if r.has("attn_pool.pos_embed") or r.has("attn_pool.q_norm.weight"):
        raise CheckpointError(r.path, "unsupported timm model: attention pooling with its own position embeddings "
                              "or QK normalisation", key="attn_pool.pos_embed")
    pool_mlp = r.shape("attn_pool.mlp.fc1.weight") if r.has("attn_pool.mlp.fc1.weight") else None
    if pool_mlp is not None and pool_mlp[0] != mlp_dim:
        raise CheckpointError(r.path, f"unsupported timm model: attention pooling whose MLP width {pool_mlp[0]} "
                              f"differs from the blocks' {mlp_dim}", key="attn_pool.mlp.fc1.weight")
    take("attn_pool.latent", (1, 1, width))
    for name, shape in (("q", (width, width)), ("kv", (2 * width, width)), ("proj", (width, width))):
        take(f"attn_pool.{name}.weight", shape)
        take(f"attn_pool.{name}.bias", shape[:1])
    take("attn_pool.norm.weight", (width,))
    take("attn_pool.norm.bias", (width,))
    take("attn_pool.mlp.fc1.weight", (mlp_dim, width))
    take("attn_pool.mlp.fc1.bias", (mlp_dim,))
    take("attn_pool.mlp.fc2.weight", (width, mlp_dim))
    take("attn_pool.mlp.fc2.bias", (width,))


def _read_grid(length: int, prefix: int, patch: tuple[int, int], settings: Settings, hints: dict):
    """The patch grid and whether the position embeddings cover the prefix tokens, from their count.

    With `prefix` tokens before the patches, `length` positions fit two models: a grid of length - prefix patches
    whose embeddings also cover the prefix (timm's default), or a grid of `length` patches that leaves it out
    (no_embed_class). A hub config's no_embed_class or the caller's image_size settles it; else a square grid is
    taken, and announced as a guess (timm state dicts do not record the grid)."""
    path = settings.path
    readings = [(length - prefix, True), (length, False)] if prefix else [(length, True)]
    if "no_embed_class" in hints and prefix:
        readings = [readings[1] if hints["no_embed_class"] else readings[0]]
    found = [(grid, covers) for n, covers in readings for grid in grid_candidates(n, patch, settings)]
    if settings.get("image_size") is not None:
        if not found:
            raise CheckpointError(path, f"{length} position embeddings do not fit image_size="
                                  f"{tuple(settings.get('image_size'))} with {patch} pixels per patch", key="pos_embed")
        return found[0]
    if len(found) > 1:
        options = ", ".join(f"{g[0]}x{g[1]} patches with {'' if c else 'no '}position embeddings for the "
                            f"{prefix} prefix token(s) (image_size={(g[0] * patch[0], g[1] * patch[1])})"
                            for g, c in found)
        raise CheckpointError(path, f"{length} position embeddings fit several models: {options}; pass "
                              "image_size=(H, W) to choose", key="pos_embed")
    if not found:
        fits = " or ".join(f"{n}" for n, _ in readings)
        raise CheckpointError(path, f"{length} position embeddings: {fits} patches form no square grid, so the "
                              "image size cannot be read from the file; pass image_size=(H, W), the size it was "
                              "trained at", key="pos_embed")
    grid, covers = found[0]
    why = f"a square {grid[0]}x{grid[1]} grid of the {length} position embeddings"
    if prefix:
        why += ", which " + ("cover" if covers else "leave out") + " the prefix token(s)"
    settings.assumed("image_size", (grid[0] * patch[0], grid[1] * patch[1]), why)
    return grid, covers


# --------------------------------------------------------------------------------------------- hub folders
@functools.lru_cache(maxsize=1)
def timm_architectures() -> dict[str, dict]:
    """name -> settings of every timm ViT architecture (tools/timm_architectures.py writes the table)."""
    return json.loads(ARCHITECTURES.read_text())["architectures"]


def unsupported_parts(e: dict) -> list[str]:
    """What vitkit does not implement about a timm architecture, named as its errors name it (empty: it loads)."""
    parts = []
    if e["class"] == "VisionTransformerRelPos":
        parts.append("relative position embeddings")
    if e["rope"] or e["class"] == "Eva" and not parts:
        parts.append("rotary position embeddings" if e["rope"] else "timm's Eva blocks")
    if e["block"] in ("ResPostBlock", "ResPostRelPosBlock"):
        parts.append("residual post-norm blocks")
    if e["block"] in ("ParallelScalingBlock", "ParallelThingsBlock", "DiffParallelScalingBlock"):
        parts.append("parallel blocks")
    if e["block"] not in ("Block", "ResPostBlock", "ParallelScalingBlock", "ParallelThingsBlock",
                          "DiffParallelScalingBlock", "RelPosBlock", "ResPostRelPosBlock", "EvaBlock",
                          "EvaBlockPostNorm"):
        parts.append(f"{e['block']} blocks")
    if e["mlp"] in ("SwiGLU", "SwiGLUPacked", "GluMlp"):
        parts.append("SwiGLU MLP")
    elif e["act"] not in (None, "gelu", "gelu_tanh"):
        parts.append({"quick_gelu": "QuickGELU activation"}.get(e["act"], f"{e['act']} activation"))
    if e["attn"] not in (None, "Attention", "EvaAttention", "RelPosAttention"):
        parts.append({"DiffAttention": "differential attention", "AttentionRope": "rotary position embeddings"}
                     .get(e["attn"], f"{e['attn']} attention"))
    if e["norm"] not in (None, "LayerNorm"):
        parts.append({"RmsNorm": "RMSNorm"}.get(e["norm"], e["norm"]))
    if e["qk_norm"]:
        parts.append("QK normalisation")
    if e["attn_norm"] or e["mlp_norm"]:
        parts.append("norms inside attention or MLP (scale_attn_norm / scale_mlp_norm)")
    if e["global_pool"] not in POOLS:
        parts.append(f"global_pool={e['global_pool']!r}")
    if e["attn_pool"] not in (None, "AttentionPoolLatent"):
        parts.append(f"{e['attn_pool']} pooling")
    if e.get("attn_pool_latent_len", 1) != 1:
        parts.append("attention pooling with several latent queries")
    if e["pool_include_prefix"]:
        parts.append("pooling over the prefix tokens")
    if not e["final_norm"] and not e["fc_norm"]:
        parts.append("no final norm")
    if e["backbone"] not in (None, "ResNetV2", "Sequential"):  # timm's BiT ResNet, or its root alone
        parts.append({"FeatureListNet": "a timm ResNet-D backbone with BatchNorm",
                      "ConvStem": "MobileCLIP's convolutional stem"}.get(e["backbone"], f"a {e['backbone']} backbone"))
    if e["embed"] not in ("PatchEmbed", "HybridEmbed"):
        parts.append(f"{e['embed']} patch embedding")
    if e["dist_token"] and e["num_reg_tokens"]:
        parts.append("a distillation token with register tokens")
    return list(dict.fromkeys(parts))


def is_timm_hub(folder) -> bool:
    """A timm hub folder: config.json names a timm `architecture` (Hugging Face folders have `model_type`)."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "architecture" in config and "model_type" not in config


def _with_model_args(entry: dict, model_args: dict, path: Path) -> dict:
    """The architecture's settings as `timm.create_model(architecture, **model_args)` changes them."""
    e = dict(entry)
    simple = {"num_heads": "num_heads", "global_pool": "global_pool", "class_token": "class_token",
              "no_embed_class": "no_embed_class", "reg_tokens": "num_reg_tokens", "pre_norm": "pre_norm",
              "final_norm": "final_norm", "pool_include_prefix": "pool_include_prefix", "qk_norm": "qk_norm",
              "img_size": "img_size", "patch_size": "patch_size", "in_chans": "in_chans", "depth": "depth",
              "embed_dim": "width", "num_classes": "num_classes"}
    for key, value in model_args.items():
        if key in FREE_MODEL_ARGS or key in ("qkv_bias", "mlp_ratio"):  # free, or read from the tensors
            continue
        if key in simple:
            e[simple[key]] = value
        elif key == "fc_norm":
            if value is not None:
                e["fc_norm"] = bool(value)
        elif key == "init_values":
            e["layer_scale"] = bool(value)
        elif key == "pos_embed":
            e["pos_embed"] = value not in ("", "none", None)
        elif key == "act_layer" and isinstance(value, str):
            e["act"] = {"gelu_tanh": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu",
                        "quick_gelu": "quick_gelu"}.get(value, value)
        else:
            raise CheckpointError(path, f"unsupported timm model: model_args[{key!r}]={value!r} is not understood by "
                                  "vitkit", key=f"model_args.{key}")
    if "global_pool" in model_args and "fc_norm" not in model_args and e["class"] != "Eva":
        e["fc_norm"] = e["global_pool"] in ("avg", "avgmax", "max")  # timm's default placement of the final norm
        e["final_norm"] = True
    e["unsupported"] = unsupported_parts(e)
    return e


def read_timm_hub(folder, settings: Settings | None = None) -> Converted:
    """A timm hub folder: config.json (`architecture`, `num_classes`, `pretrained_cfg`, optional `model_args`) and
    model.safetensors or pytorch_model.bin. The architecture's table entry settles what the tensors cannot
    (heads, activation, LayerNorm epsilon, block type, pooling, the grid); what vitkit lacks is refused by name."""
    from .io import read_safetensors, read_torch

    folder = Path(folder)
    settings = settings or Settings(folder)
    config_path = folder / "config.json"
    try:
        cfg = json.loads(config_path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(config_path, f"unreadable config ({e})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(config_path, f"expected a mapping, found {type(cfg).__name__}")
    arch = cfg.get("architecture")
    entry = timm_architectures().get(arch) if isinstance(arch, str) else None
    if entry is None:
        raise CheckpointError(config_path, f"unknown timm architecture {arch!r}: not a ViT in vitkit's table of timm's "
                              "vit_* and deit* models", key="architecture")
    model_args = cfg.get("model_args") or {}
    if not isinstance(model_args, dict):
        raise CheckpointError(config_path, f"expected a mapping, found {type(model_args).__name__}", key="model_args")
    entry = _with_model_args(entry, model_args, config_path)
    if entry["unsupported"]:
        raise CheckpointError(config_path, f"unsupported timm model {arch}: {', '.join(entry['unsupported'])}",
                              key="architecture")
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).exists():
            weights = folder / name
            break
    else:
        raise CheckpointError(folder, "no weights: expected model.safetensors or pytorch_model.bin")
    tensors = read_safetensors(weights)[0] if weights.suffix == ".safetensors" else read_torch(weights)
    pretrained = _pretrained_cfg(cfg, config_path)
    input_size = pretrained.get("input_size")
    size = entry["img_size"]
    if "img_size" not in model_args and isinstance(input_size, list) and len(input_size) == 3:
        size = input_size[1:]  # timm builds at the pretrained config's input size
    hints = {"source": "config.json", "num_heads": entry["num_heads"], "gelu": ACTIVATIONS[entry["act"]],
             "layer_norm_eps": entry["eps"], "pool": POOLS[entry["global_pool"]], "blocks_known": True,
             "no_embed_class": entry["no_embed_class"] or not entry["pos_embed"]}
    if size is not None:
        hints["image_size"] = tuple(size) if not isinstance(size, int) else (size, size)
    converted = from_timm(tensors, weights, settings, hints)
    c = converted.config
    records = {"width": entry["width"], "depth": entry["depth"], "class_token": entry["class_token"],
               "dist_token": entry["dist_token"], "num_reg_tokens": entry["num_reg_tokens"],
               "norm_pre": entry["pre_norm"], "norm_after_pool": entry["fc_norm"],
               "layer_scale": entry["layer_scale"], "num_classes": cfg.get("num_classes", entry["num_classes"]),
               "pool": POOLS[entry["global_pool"]]}
    for name, expected in records.items():
        found = getattr(c, name)
        found = found is not None if name == "layer_scale" else found
        if found != expected:
            raise CheckpointError(weights, f"config.json's {arch} has {name}={expected!r}; the tensors have "
                                  f"{name}={found!r}", key=name)
    converted.preprocessing = _preprocessing(pretrained, c.image_size, config_path)
    converted.class_names = _label_names(pretrained, c.num_classes, config_path)
    return converted


def _pretrained_cfg(cfg: dict, path: Path) -> dict:
    """The pretrained config as timm's `load_model_config_from_hf` reads it: older `push_to_hf_hub` wrote one flat
    dict (input_size, mean, std, crop_pct, labels, ... beside architecture); top-level label_names override."""
    if "pretrained_cfg" in cfg:
        pretrained = cfg["pretrained_cfg"]
        if not isinstance(pretrained, dict):
            raise CheckpointError(path, f"expected a mapping, found {type(pretrained).__name__}", key="pretrained_cfg")
        pretrained = dict(pretrained)
    else:
        pretrained = {k: v for k, v in cfg.items() if k not in ("architecture", "num_features")}
        if "labels" in pretrained:
            pretrained["label_names"] = pretrained.pop("labels")
    if "label_names" in cfg:
        pretrained["label_names"] = cfg["label_names"]
    return pretrained


# timm's PretrainedCfg defaults, which `resolve_data_config` falls back to for a missing (or empty) entry
TIMM_DATA_DEFAULTS = {"interpolation": "bicubic", "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
                      "crop_pct": 0.875, "crop_mode": "center"}


def _preprocessing(pretrained: dict, image_size, path: Path) -> Preprocessing:
    """timm's eval transform, `create_transform(**resolve_data_config(pretrained_cfg=...))`, in vitkit's terms."""
    data = {k: pretrained.get(k) or default for k, default in TIMM_DATA_DEFAULTS.items()}  # timm's, not guesses
    for key, allowed in (("crop_mode", ("center", "squash")), ("interpolation", ("bilinear", "bicubic", "nearest"))):
        if data[key] not in allowed:  # the weights are still the model: load them, and say how inputs differ
            warnings.warn(GuessWarning(f"{path}: pretrained_cfg.{key}={data[key]!r} is not reproduced by vitkit's "
                                       f"preprocessing (it has {', '.join(allowed)}); {TIMM_DATA_DEFAULTS[key]!r} "
                                       "is used for eval and predict, so their inputs differ slightly from timm's"),
                          stacklevel=2)
            data[key] = TIMM_DATA_DEFAULTS[key]
    try:
        return Preprocessing(image_size=image_size, mean=tuple(data["mean"]), std=tuple(data["std"]),
                             interpolation=data["interpolation"], crop_pct=float(data["crop_pct"]),
                             resize={"center": "shorter", "squash": "squash"}[data["crop_mode"]])
    except (TypeError, ValueError) as e:
        raise CheckpointError(path, f"invalid preprocessing ({e})", key="pretrained_cfg") from None


def _label_names(pretrained: dict, num_classes: int, path: Path) -> list[str] | None:
    """timm's label_names (a list, or a dict index -> name) as the model's class names."""
    names = pretrained.get("label_names")
    if not names:
        return None
    if isinstance(names, dict):
        names = [names.get(str(i), names.get(i)) for i in range(len(names))]
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(path, "expected a list of class names, or a mapping index -> name, without gaps",
                              key="label_names")
    if len(names) != num_classes:
        raise CheckpointError(path, f"{len(names)} names for the model's {num_classes} classes", key="label_names")
    return list(names)


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


def timm_problems(config: ViTConfig) -> list[str]:
    """What timm's VisionTransformer (or VisionTransformerDistilled) cannot express about a config."""
    c = config
    problems = []
    if c.resnet is not None and len(c.resnet.num_layers) > 4:
        problems.append(f"{len(c.resnet.num_layers)} ResNet stages (timm's ResNetV2 has at most 4)")
    if c.resnet is not None and not c.resnet.num_layers and c.resnet.width_factor != 1.0:
        problems.append("a root-only ResNet stem narrower than 64 channels (timm's has 64)")
    if c.representation_size:
        problems.append("a representation (pre_logits) layer (use format='google')")
    if c.dist_token and not c.dist_head:
        problems.append("a distillation token without its head (timm's VisionTransformerDistilled has both)")
    if c.dist_token and c.num_reg_tokens:
        problems.append("a distillation token with register tokens")
    if int(c.width * (c.mlp_dim / c.width)) != c.mlp_dim:
        problems.append(f"mlp_dim={c.mlp_dim} (timm's mlp_ratio cannot give it exactly at width {c.width})")
    return problems


def to_timm(model) -> dict[str, torch.Tensor]:
    """A state dict that timm's `VisionTransformer` (`VisionTransformerDistilled` with a distillation token) with
    the arguments `timm_kwargs` gives loads with strict=True.

    Fixed or factorised position embeddings are written as the full table timm would learn. Where timm's table
    covers prefix tokens that vitkit's does not (register tokens under no_embed_class=False; DeiT's two tokens,
    which timm's VisionTransformerDistilled always covers), their slots are zero: the function is the same.
    """
    c = model.config
    problems = timm_problems(c)
    if problems:
        raise ValueError("this model cannot be written as a timm ViT state dict: " + "; ".join(problems))
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    for key in ("pos_embed_row", "pos_embed_col"):
        sd.pop(key, None)
    pos = model.position_embeddings()
    if pos is None and c.dist_token:  # timm's distilled model always adds a table
        pos = torch.zeros(1, c.num_patches, c.width)
    if pos is not None:
        pos, covered = pos.detach().cpu().clone(), c.num_posemb_prefix_tokens
        if not timm_kwargs(c)["no_embed_class"]:
            zeros = pos.new_zeros(1, c.num_prefix_tokens - covered, c.width)
            pos = torch.cat([pos[:, :covered], zeros, pos[:, covered:]], dim=1)
        sd["pos_embed"] = pos
    if c.norm_after_pool:
        sd["fc_norm.weight"] = sd.pop("norm.weight")
        sd["fc_norm.bias"] = sd.pop("norm.bias")
    if c.resnet is not None:
        from .timm_hybrid import TIMM_NUMERICS, write_timm_backbone

        if (c.resnet.weight_std, c.resnet.group_norm_eps) != tuple(TIMM_NUMERICS.values()):
            import warnings

            warnings.warn("timm's BiT stem standardises kernels and normalises groups with other epsilons than this "
                          "hybrid's (the original code's); the stem's tensors are rescaled so that timm computes the "
                          "same function, except for the root GroupNorm's epsilon (about 1e-7 relative on the "
                          "logits)", stacklevel=3)
        sd = {k: v for k, v in sd.items() if not k.startswith(("stem.", "patch_embed."))}
        sd.update(write_timm_backbone(model, adapt_numerics=True))
    return sd


def timm_class(config: ViTConfig):
    """The timm model class for a config: `VisionTransformerDistilled` with DeiT's distillation token, else
    `VisionTransformer`."""
    if config.dist_token:
        from timm.models.deit import VisionTransformerDistilled

        return VisionTransformerDistilled
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer


def timm_kwargs(config: ViTConfig) -> dict:
    """The `timm_class(config)(...)` arguments for a config, as far as timm can express it (see `timm_problems`)."""
    import torch.nn as nn

    kwargs = dict(
        img_size=tuple(config.image_size), patch_size=tuple(config.patch_size), in_chans=config.in_channels,
        num_classes=config.num_classes, embed_dim=config.width, depth=config.depth, num_heads=config.num_heads,
        mlp_ratio=config.mlp_dim / config.width, qkv_bias=config.qkv_bias, class_token=config.class_token,
        global_pool={"token": "token", "gap": "avg", "map": "map"}[config.pool], fc_norm=config.norm_after_pool,
        no_embed_class=not (config.posemb_prefix and config.posemb == "learned") and not config.dist_token,
        pos_embed="none" if config.posemb == "none" and not config.dist_token else "learn",
        reg_tokens=config.num_reg_tokens, pre_norm=config.norm_pre, init_values=config.layer_scale,
    )
    if config.resnet is not None:
        kwargs["embed_layer"] = _timm_hybrid_embed(config)
    if config.gelu == "tanh":
        kwargs["act_layer"] = lambda: nn.GELU(approximate="tanh")
    if config.layer_norm_eps != 1e-6:
        from functools import partial

        kwargs["norm_layer"] = partial(nn.LayerNorm, eps=config.layer_norm_eps)
    return kwargs


def _timm_hybrid_embed(config: ViTConfig):
    """timm's `HybridEmbed` over its BiT ResNetV2 with the config's stages and width (as timm's hybrids build it)."""
    from functools import partial

    from timm.layers import HybridEmbed, StdConv2dSame
    from timm.models.resnetv2 import ResNetV2
    from timm.models.vision_transformer_hybrid import _resnetv2

    r = config.resnet
    if r.num_layers and r.width_factor != 1.0:
        backbone = ResNetV2(layers=r.num_layers, channels=tuple(r.width * 4 * 2**i for i in range(4)),
                            stem_chs=r.width, num_classes=0, global_pool="", in_chans=config.in_channels,
                            preact=False, stem_type="same", conv_layer=partial(StdConv2dSame, eps=1e-8))
    else:
        backbone = _resnetv2(layers=r.num_layers, in_chans=config.in_channels)
    return partial(HybridEmbed, backbone=backbone)
