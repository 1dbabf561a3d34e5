"""Hugging Face `transformers` ViTs, both ways: ViT, DeiT, ViT-MSN, ViT-MAE's encoder, DINOv2 (with registers), and the
vision towers of CLIP and SigLIP.

Read: a model directory (config.json + model.safetensors / pytorch_model.bin, sharded or not, and
preprocessor_config.json when present) or a bare weights file. Both key namings are taken: the one of the
published checkpoints and transformers 4 (`encoder.layer.N.attention.attention.query`) and transformers 5's
(`layers.N.attention.q_proj`). What vitkit does not implement is refused by name (relative position bias, SwiGLU,
quick GELU, pixel decoders, ...). Written: a directory in the published naming, which both versions load
(`ViTForImageClassification`, or DeiT's classes for a model with a distillation token).
Numerics are transformers': GELU and LayerNorm epsilon as config.json says (its defaults per model type).
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import torch

from ..configs import Preprocessing, ViTConfig, to_pair
from ..errors import CheckpointError, GuessWarning
from .common import Converted, Reader, Settings, grid_candidates
from .io import atomic_write_text, read_json, read_safetensors, read_torch, save_safetensors

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
TANH_ACTS = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast", "gelu_python_tanh")
EXACT_ACTS = ("gelu", "gelu_python")

# model_type -> (the classes vitkit reads, transformers' default hidden_act, its default layer_norm_eps)
MODEL_TYPES = {
    "vit": ("ViTModel, ViTForImageClassification", "gelu", 1e-12),
    "deit": ("DeiTModel, DeiTForImageClassification, DeiTForImageClassificationWithTeacher", "gelu", 1e-12),
    "vit_msn": ("ViTMSNModel, ViTMSNForImageClassification", "gelu", 1e-6),
    "vit_mae": ("ViTMAEModel (the encoder, without random masking)", "gelu", 1e-12),
    "dinov2": ("Dinov2Model", "gelu", 1e-6),
    "dinov2_with_registers": ("Dinov2WithRegistersModel", "gelu", 1e-6),
    "clip_vision_model": ("CLIPVisionModel, CLIPVisionModelWithProjection (with GELU, not quick GELU)", "quick_gelu",
                          1e-5),
    "siglip_vision_model": ("SiglipVisionModel, SiglipForImageClassification", "gelu_pytorch_tanh", 1e-6),
    "ijepa": ("IJepaModel, IJepaForImageClassification", "gelu", 1e-12),
}
# image-text pairs whose vision tower vitkit reads when the file holds it alone (...ForImageClassification)
PAIR_TYPES = {"clip": "clip_vision_model", "siglip": "siglip_vision_model"}
# model types that are ViT-like but use a part vitkit does not implement: refused by that part's name
REFUSED_TYPES = {
    "beit": "relative position bias (BEiT)",
    "data2vec-vision": "relative position bias (data2vec-vision is BEiT's architecture)",
    "vit_hybrid": "a BiT ResNet backbone in transformers' naming (transformers 5 no longer ships ViTHybrid; the same "
                  "weights load from timm's vit_base_r50_s16_384)",
    "dinov3_vit": "rotary position embeddings (DINOv3)",
    "siglip2_vision_model": "NaFlex variable-resolution patches (SigLIP 2)",
    "siglip2": "NaFlex variable-resolution patches (SigLIP 2)",
    "swin": "shifted-window attention (Swin)",
    "swinv2": "shifted-window attention (Swin V2)",
    "vitdet": "windowed attention with relative positions (ViTDet)",
    "levit": "convolutional stages and attention biases (LeViT)",
    "pvt": "spatial-reduction attention (PVT)",
    "pvt_v2": "spatial-reduction attention (PVT v2)",
    "mobilevit": "convolutional blocks (MobileViT)",
}
_BASE_PREFIXES = ("vit.", "deit.", "dinov2.", "ijepa.", "vision_model.")
# any naming of a block's parts -> one canonical naming (transformers 5's, with norm1/norm2)
_LAYER_RENAMES = [
    (re.compile(r"\.attention\.attention\.query\."), ".attention.q_proj."),
    (re.compile(r"\.attention\.attention\.key\."), ".attention.k_proj."),
    (re.compile(r"\.attention\.attention\.value\."), ".attention.v_proj."),
    (re.compile(r"\.attention\.output\.dense\."), ".attention.o_proj."),
    (re.compile(r"\.self_attn\.out_proj\."), ".attention.o_proj."),
    (re.compile(r"\.self_attn\."), ".attention."),
    (re.compile(r"\.intermediate\.dense\."), ".mlp.fc1."),
    (re.compile(r"\.output\.dense\."), ".mlp.fc2."),
    (re.compile(r"\.(layernorm_before|layer_norm1)\."), ".norm1."),
    (re.compile(r"\.(layernorm_after|layer_norm2)\."), ".norm2."),
]
_LAYER_PREFIX = re.compile(r"^(?:encoder\.)?layers?\.(\d+)\.")


def looks_like_hf(keys) -> bool:
    return any("embeddings.patch_embeddings.projection.weight" in k or "embeddings.patch_embedding.weight" in k
               for k in keys)


def _normalise(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Strip the base model's prefix (`vit.`, `deit.`, ...) and map every naming of the blocks to one
    (`layers.N.attention.q_proj`, `layers.N.norm1`, `layers.N.mlp.fc1`); remember the original names."""
    out, original = {}, {}
    for key, value in tensors.items():
        new = key
        for prefix in _BASE_PREFIXES:
            if new.startswith(prefix):
                new = new[len(prefix):]
                break
        match = _LAYER_PREFIX.match(new)
        if match:
            new = f"layers.{match.group(1)}." + new[match.end():]
            for pattern, repl in _LAYER_RENAMES:
                new = pattern.sub(repl, new)
        out[new] = value
        original[new] = key
    return out, original


def read_hf_dir(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    config = read_json(folder / "config.json")
    for name in WEIGHT_FILES:
        if (folder / name).exists():
            return _read_weights(folder / name), config
    for name in INDEX_FILES:
        if (folder / name).exists():
            index = read_json(folder / name)
            files = sorted(set((index.get("weight_map") or {}).values()))
            if not files:
                raise CheckpointError(folder / name, "no 'weight_map' in the index", key="weight_map")
            tensors = {}
            for file in files:
                tensors.update(_read_weights(folder / file))
            return tensors, config
    raise CheckpointError(folder, f"no weights: expected one of {', '.join(WEIGHT_FILES + INDEX_FILES)}")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return read_safetensors(path)[0]
    return read_torch(path)


def read_preprocessing(folder: Path, image_size) -> Preprocessing:
    """preprocessor_config.json as transformers' image processor applies it (resize, centre crop, rescale, normalise;
    its class's defaults for missing keys). What vitkit cannot reproduce is announced, naming the key, and the
    inputs are then resized to the model's size with the file's mean and std: the weights still load."""
    path = folder / "preprocessor_config.json"
    if not path.exists():
        return Preprocessing(image_size=image_size)
    data = read_json(path)
    try:
        return _processor_preprocessing(path, data, image_size)
    except CheckpointError as e:
        warnings.warn(GuessWarning(f"{e}; vitkit's eval and predict resize to the model's {tuple(image_size)} "
                                   "instead, so their inputs differ from transformers'"), stacklevel=3)
        try:
            return Preprocessing(image_size=image_size, mean=tuple(data["image_mean"]), std=tuple(data["image_std"]))
        except (KeyError, TypeError, ValueError):
            return Preprocessing(image_size=image_size)


def _processor_preprocessing(path: Path, data: dict, image_size) -> Preprocessing:
    """read_preprocessing's work; a CheckpointError naming the key for what vitkit does not reproduce."""
    kind = str(data.get("image_processor_type") or data.get("feature_extractor_type") or "")
    kind = kind.replace("FeatureExtractor", "ImageProcessor").removesuffix("Fast").removesuffix("Pil")
    defaults = {"do_resize": True, "size": {"height": 224, "width": 224}, "resample": 2, "do_center_crop": False,
                "crop_size": {"height": 224, "width": 224}, "do_rescale": True, "rescale_factor": 1 / 255,
                "do_normalize": True, "image_mean": (0.5,) * 3, "image_std": (0.5,) * 3}  # ViTImageProcessor's
    if kind == "DeiTImageProcessor":
        defaults.update(size={"height": 256, "width": 256}, resample=3, do_center_crop=True)
    missing = [k for k in ("size", "resample", "image_mean", "image_std") if k not in data]
    if missing and kind not in ("ViTImageProcessor", "DeiTImageProcessor"):
        warnings.warn(GuessWarning(f"{path}: {kind or 'an unnamed image processor'} without "
                                   f"{', '.join(missing)}; assumed ViTImageProcessor's defaults"), stacklevel=3)
    d = {**defaults, **{k: v for k, v in data.items() if v is not None}}

    def fail(key, message):
        raise CheckpointError(path, message, key=key)

    for key, value in d.items():  # a step vitkit does not have changes the pixels: refused
        if key.startswith("do_") and value and key not in defaults and key != "do_convert_rgb":
            fail(key, f"{key} is not reproduced by vitkit")
    if not d["do_resize"]:
        fail("do_resize", "do_resize=false keeps each image's own size; vitkit's models take one size")
    if d["resample"] not in (0, 2, 3):
        fail("resample", f"resample={d['resample']!r} is not reproduced (vitkit has 0 nearest, 2 bilinear, 3 bicubic)")

    def size_of(key, int_means_shortest_edge=False):
        value = d[key]
        if isinstance(value, int):
            value = {"shortest_edge": value} if int_means_shortest_edge else {"height": value, "width": value}
        if isinstance(value, dict) and set(value) == {"shortest_edge"} and isinstance(value["shortest_edge"], int):
            return "shorter", (value["shortest_edge"],) * 2
        if isinstance(value, dict) and set(value) == {"height", "width"}:
            try:
                return "squash", to_pair((value["height"], value["width"]))
            except ValueError:
                pass
        fail(key, f"{key}={value!r} is not reproduced (vitkit takes height and width, or shortest_edge)")

    mode, resized = size_of("size", kind in ("CLIPImageProcessor", "BitImageProcessor"))
    crop = size_of("crop_size")[1] if d["do_center_crop"] else None
    if crop and "crop_size" not in data and (crop[0] > resized[0] or crop[1] > resized[1] or crop != image_size):
        warnings.warn(GuessWarning(f"{path}: {kind}'s default crop_size {crop} (the file does not write one, as "
                                   f"vitkit's DeiT folders) does not fit the model's {tuple(image_size)}; read "
                                   "without a centre crop"), stacklevel=3)
        crop = None
    if crop is None and mode == "shorter":
        fail("size", "shortest_edge without a centre crop gives each image its own size; vitkit's models take one")
    if crop is not None and (crop[0] > resized[0] or crop[1] > resized[1]):
        fail("crop_size", f"crop_size {crop} is larger than the resized image {resized} (padding is not reproduced)")
    if tuple(crop or resized) != tuple(image_size):
        fail("crop_size" if crop else "size", f"the processor gives {crop or resized} images; the model takes "
             f"{tuple(image_size)}")
    mean, std = (d["image_mean"], d["image_std"]) if d["do_normalize"] else (0.0, 1.0)
    mean, std = ((v,) * 3 if isinstance(v, (int, float)) else v for v in (mean, std))
    try:
        scale = 255 * float(d["rescale_factor"] if d["do_rescale"] else 1)  # x * r folded into vitkit's x / 255
        return Preprocessing(image_size=tuple(image_size), mean=tuple(m / scale for m in mean),
                             std=tuple(s / scale for s in std), interpolation={0: "nearest", 2: "bilinear",
                                                                               3: "bicubic"}[d["resample"]],
                             crop_pct=crop[0] / resized[0] if crop else 1.0, resize=mode,
                             resize_size=resized if crop else None, crop_offset="floor")
    except (TypeError, ValueError) as e:
        fail(None, f"invalid preprocessing ({e})")


def _bare_model_type(keys) -> str:
    """The model type of a weights file without config.json, from the parts only that type has."""
    if "embeddings.distillation_token" in keys:
        return "deit"
    if "embeddings.register_tokens" in keys:
        return "dinov2_with_registers"
    if any(".layer_scale1." in k for k in keys):
        return "dinov2"
    if "embeddings.class_embedding" in keys:
        return "clip_vision_model"
    if "embeddings.patch_embedding.weight" in keys:
        return "siglip_vision_model"
    if "embeddings.cls_token" not in keys:
        return "ijepa"
    return "vit"


def _refuse_parts(path, tensors: dict, original: dict, cfg: dict) -> None:
    """Parts of a file that vitkit cannot compute, refused by name before anything is read."""
    def first(test):
        return next((k for k in tensors if test(k)), None)

    text = first(lambda k: k.startswith("text_model.") or k == "logit_scale")
    if text is not None:
        raise CheckpointError(path, "a text tower (an image-text pair: CLIPModel, SiglipModel): vitkit reads the "
                              "vision tower alone (CLIPVisionModel, SiglipVisionModel)", key=original[text])
    decoder = first(lambda k: k.startswith("decoder."))
    if decoder is not None:
        raise CheckpointError(path, "a pixel decoder for masked-image pre-training (decoder.*: "
                              "ViTForMaskedImageModeling, DeiTForMaskedImageModeling, ViTMAEForPreTraining): vitkit "
                              "has no decoder; save the encoder alone (its ...Model class) to load it",
                              key=original[decoder])
    relpos = first(lambda k: "relative_position" in k)
    if relpos is not None:
        raise CheckpointError(path, "relative position bias (BEiT, data2vec-vision, Swin): vitkit has no relative "
                              "position encodings", key=original[relpos])
    beit = first(lambda k: k.endswith(".lambda_1") or k.endswith(".lambda_2") or k.startswith("pooler.layernorm."))
    if beit is not None:
        raise CheckpointError(path, "BEiT's blocks (lambda_1/lambda_2 layer scales, a key projection without bias, a "
                              "mean-pooling norm): vitkit reads BEiT and data2vec-vision neither with nor without "
                              "relative position bias", key=original[beit])
    detection = first(lambda k: "detection_tokens" in k or k.startswith(("class_labels_classifier.",
                                                                           "bbox_predictor.")))
    if detection is not None:
        raise CheckpointError(path, "detection tokens (YOLOS): vitkit's ViT has no object-detection tokens or box "
                              "heads", key=original[detection])
    swiglu = first(lambda k: ".mlp.weights_in." in k or ".mlp.gate_proj." in k or ".mlp.w12." in k)
    if swiglu is not None or cfg.get("use_swiglu_ffn"):
        raise CheckpointError(path, "a SwiGLU MLP (DINOv2 with use_swiglu_ffn): vitkit's blocks have a GELU MLP",
                              key=original.get(swiglu, "use_swiglu_ffn"))


def _gelu(path, act: str, key: str) -> str:
    if act in TANH_ACTS:
        return "tanh"
    if act in EXACT_ACTS:
        return "exact"
    if act == "quick_gelu":
        raise CheckpointError(path, "quick GELU (x * sigmoid(1.702 x), CLIP's activation): vitkit has exact and "
                              "tanh GELU only", key=key)
    raise CheckpointError(path, f"hidden_act {act!r} is not a GELU vitkit knows ({', '.join(EXACT_ACTS + TANH_ACTS)})",
                          key=key)


def from_hf(tensors: dict[str, torch.Tensor], path, hf_config: dict | None = None, settings: Settings | None = None,
            hints: dict | None = None) -> Converted:
    """`hf_config`: config.json (None for bare weights, whose unrecorded values are guessed and announced);
    `hints`: what a vitkit-written file recorded in its metadata."""
    settings = settings or Settings(path)
    hints = dict(hints or {})
    cfg = dict(hf_config or {})
    bare = hf_config is None
    tensors, original = _normalise(tensors)

    if bare:
        model_type = _bare_model_type(tensors)
    else:
        model_type = cfg.get("model_type", "vit")
        if model_type in PAIR_TYPES and isinstance(cfg.get("vision_config"), dict):
            _refuse_parts(path, tensors, original, {})  # a text tower, if any
            cfg = {**cfg["vision_config"], "id2label": cfg.get("id2label")}
            model_type = PAIR_TYPES[model_type]
        if model_type in REFUSED_TYPES:
            raise CheckpointError(path, f"model_type {model_type!r}: {REFUSED_TYPES[model_type]}; vitkit reads "
                                  f"model_type {', '.join(map(repr, MODEL_TYPES))}", key="model_type")
        if model_type not in MODEL_TYPES:
            raise CheckpointError(path, f"model_type {model_type!r} is not one vitkit reads; it reads "
                                  + "; ".join(f"{t!r} ({classes})" for t, (classes, _, _) in MODEL_TYPES.items()),
                                  key="model_type")
    _refuse_parts(path, tensors, original, cfg)
    _, default_act, default_eps = MODEL_TYPES[model_type]
    clip_like = model_type in ("clip_vision_model", "siglip_vision_model")
    r = Reader(tensors, path)
    sd, src = {}, {}

    def take(ours, theirs, shape, reshape=None):
        value = r.get(theirs, shape)
        sd[ours] = value.reshape(reshape) if reshape is not None else value
        src[ours] = original.get(theirs, theirs)

    # ------------------------------------------------------------------ embeddings
    proj = "embeddings.patch_embedding" if clip_like else "embeddings.patch_embeddings.projection"
    w_shape = r.shape(f"{proj}.weight")
    if len(w_shape) != 4:
        raise CheckpointError(path, f"expected shape (hidden_size, channels, ph, pw), found {w_shape}",
                              key=original.get(f"{proj}.weight"))
    width, in_channels, ph, pw = w_shape
    if "hidden_size" in cfg and cfg["hidden_size"] != width:
        raise CheckpointError(path, f"config.json says hidden_size {cfg['hidden_size']}, the weights have {width}",
                              key=original.get(f"{proj}.weight"))
    if "patch_size" in cfg and to_pair(cfg["patch_size"]) != (ph, pw):
        raise CheckpointError(path, f"config.json says patch_size {cfg['patch_size']}, the weights have {(ph, pw)}",
                              key=original.get(f"{proj}.weight"))
    take("patch_embed.proj.weight", f"{proj}.weight", w_shape)
    norm_pre = r.has("pre_layrnorm.weight")
    if r.has(f"{proj}.bias"):
        take("patch_embed.proj.bias", f"{proj}.bias", (width,))
    elif not norm_pre:
        raise CheckpointError(path, "missing tensor: a patch projection without bias needs a norm before the "
                              "encoder (CLIP's pre_layrnorm)", key=original.get(f"{proj}.weight"))
    class_token = True
    if r.has("embeddings.cls_token"):
        take("cls_token", "embeddings.cls_token", (1, 1, width))
    elif r.has("embeddings.class_embedding"):
        take("cls_token", "embeddings.class_embedding", (width,), reshape=(1, 1, width))
    elif model_type in ("siglip_vision_model", "ijepa"):
        class_token = False
    else:
        r.get("embeddings.cls_token")  # raises: missing tensor
    dist_token = r.has("embeddings.distillation_token")
    if model_type == "deit" and not dist_token:
        r.get("embeddings.distillation_token")
    if dist_token:
        take("dist_token", "embeddings.distillation_token", (1, 1, width))
    num_reg_tokens = 0
    if r.has("embeddings.register_tokens"):
        num_reg_tokens = r.shape("embeddings.register_tokens")[1]
        take("reg_token", "embeddings.register_tokens", (1, num_reg_tokens, width))
        if "num_register_tokens" in cfg and cfg["num_register_tokens"] != num_reg_tokens:
            raise CheckpointError(path, f"config.json says {cfg['num_register_tokens']} register tokens, the weights "
                                  f"have {num_reg_tokens}", key=original["embeddings.register_tokens"])
    if clip_like:
        pos_name = "embeddings.position_embedding.weight"
        pos_shape = r.shape(pos_name)
        length = pos_shape[0] if len(pos_shape) == 2 else 0
        take("pos_embed", pos_name, (None, width), reshape=(1, length, width))
    else:
        pos_name = "embeddings.position_embeddings"
        pos_shape = r.shape(pos_name)
        length = pos_shape[1] if len(pos_shape) == 3 else 0
        take("pos_embed", pos_name, (1, None, width))
    posemb_key = original.get(pos_name)
    if norm_pre:
        take("norm_pre.weight", "pre_layrnorm.weight", (width,))
        take("norm_pre.bias", "pre_layrnorm.bias", (width,))
    ignore = ["embeddings.mask_token", "embeddings.position_ids"]  # masking inputs only; a buffer of old files

    # ------------------------------------------------------------------ image size, from the grid of positions
    if not bare and "image_size" in cfg:
        settings.recorded("image_size", to_pair(cfg["image_size"]), key="image_size")
        settings.given["image_size"] = to_pair(cfg["image_size"])
    elif "image_size" in hints:
        settings.recorded("image_size", tuple(hints["image_size"]), key="vitkit.config")
        settings.given["image_size"] = tuple(hints["image_size"])
    covered = int(class_token) + int(dist_token)  # prefix tokens with a position embedding (never registers)
    grids = grid_candidates(length - covered, (ph, pw), settings)
    if not grids:
        if settings.get("image_size") is not None:
            raise CheckpointError(path, f"image_size {tuple(settings.get('image_size'))} with patch {(ph, pw)} needs "
                                  "a different number of position embeddings than the weights' "
                                  f"{length}", key=posemb_key)
        raise CheckpointError(path, f"{length - covered} position embeddings (besides the {covered} of the class and "
                              "distillation tokens) form no square grid, so the image size cannot be read from the "
                              "file; pass image_size=(H, W)", key=posemb_key)
    grid = grids[0]
    if bare and "image_size" not in settings.given:
        settings.assumed("image_size", (grid[0] * ph, grid[1] * pw), f"a square {grid[0]}x{grid[1]} grid of "
                         f"{length - covered} patch position embeddings")

    # ------------------------------------------------------------------ blocks
    depth = r.count("layers.{}.")
    if depth == 0:
        raise CheckpointError(path, "missing tensor: no encoder layers", key="encoder.layer.0")
    if "num_hidden_layers" in cfg and cfg["num_hidden_layers"] != depth:
        raise CheckpointError(path, f"config.json says {cfg['num_hidden_layers']} layers, the weights have {depth}",
                              key="num_hidden_layers")
    mlp_dim = r.shape("layers.0.mlp.fc1.weight")[0]
    qkv_bias = r.has("layers.0.attention.q_proj.bias")
    layer_scale = r.has("layers.0.layer_scale1.lambda1")
    for i in range(depth):
        L, n = f"layers.{i}.", f"blocks.{i}."
        take(n + "norm1.weight", L + "norm1.weight", (width,))
        take(n + "norm1.bias", L + "norm1.bias", (width,))
        sd[n + "attn.qkv.weight"] = torch.cat([r.get(f"{L}attention.{p}_proj.weight", (width, width))
                                               for p in "qkv"], 0)
        src[n + "attn.qkv.weight"] = original.get(f"{L}attention.q_proj.weight")
        if qkv_bias:
            sd[n + "attn.qkv.bias"] = torch.cat([r.get(f"{L}attention.{p}_proj.bias", (width,)) for p in "qkv"], 0)
            src[n + "attn.qkv.bias"] = original.get(f"{L}attention.q_proj.bias")
        take(n + "attn.proj.weight", L + "attention.o_proj.weight", (width, width))
        take(n + "attn.proj.bias", L + "attention.o_proj.bias", (width,))
        take(n + "norm2.weight", L + "norm2.weight", (width,))
        take(n + "norm2.bias", L + "norm2.bias", (width,))
        take(n + "mlp.fc1.weight", L + "mlp.fc1.weight", (mlp_dim, width))
        take(n + "mlp.fc1.bias", L + "mlp.fc1.bias", (mlp_dim,))
        take(n + "mlp.fc2.weight", L + "mlp.fc2.weight", (width, mlp_dim))
        take(n + "mlp.fc2.bias", L + "mlp.fc2.bias", (width,))
        if layer_scale:
            take(n + "ls1.gamma", L + "layer_scale1.lambda1", (width,))
            take(n + "ls2.gamma", L + "layer_scale2.lambda1", (width,))
    final_norm = "post_layernorm" if clip_like else "layernorm"
    take("norm.weight", f"{final_norm}.weight", (width,))
    take("norm.bias", f"{final_norm}.bias", (width,))

    # ------------------------------------------------------------------ heads
    num_classes, representation_size, dist_head, pool = 0, None, False, "token" if class_token else "gap"
    if r.has("classifier.weight"):
        num_classes = r.shape("classifier.weight")[0]
        if model_type == "clip_vision_model":
            raise CheckpointError(path, "a classifier on the mean of the patch tokens before CLIP's final norm "
                                  "(CLIPForImageClassification): vitkit pools normalised tokens",
                                  key=original["classifier.weight"])
        if r.shape("classifier.weight")[1:] == (2 * width,) and model_type.startswith("dinov2"):
            raise CheckpointError(path, "a classifier on the class token and the mean patch token side by side "
                                  "(Dinov2ForImageClassification): vitkit's heads read one pooled vector; load the "
                                  "backbone (Dinov2Model)", key=original["classifier.weight"])
        take("head.weight", "classifier.weight", (num_classes, width))
        take("head.bias", "classifier.bias", (num_classes,))
        # ...ForImageClassification uses neither the pooler nor SigLIP's attention-pool head: it classifies the
        # class token, or without one the mean of the normalised tokens
        ignore += [k for k in tensors if k.startswith(("pooler.", "head."))]
    elif r.has("cls_classifier.weight"):  # DeiTForImageClassificationWithTeacher: the mean of two heads
        num_classes = r.shape("cls_classifier.weight")[0]
        take("head.weight", "cls_classifier.weight", (num_classes, width))
        take("head.bias", "cls_classifier.bias", (num_classes,))
        take("head_dist.weight", "distillation_classifier.weight", (num_classes, width))
        take("head_dist.bias", "distillation_classifier.bias", (num_classes,))
        dist_head = True
    elif r.has("visual_projection.weight"):  # CLIPVisionModelWithProjection: image_embeds, a head without bias
        num_classes = r.shape("visual_projection.weight")[0]
        take("head.weight", "visual_projection.weight", (num_classes, width))
        sd["head.bias"] = torch.zeros(num_classes, dtype=sd["head.weight"].dtype)
        src["head.bias"] = original["visual_projection.weight"]
    elif r.has("pooler.dense.weight"):  # ViTModel, DeiTModel: the pooler is the original's pre_logits (Dense + tanh)
        if cfg.get("pooler_act", "tanh") != "tanh":
            raise CheckpointError(path, f"pooler_act {cfg['pooler_act']!r}: only tanh is supported", key="pooler_act")
        representation_size = r.shape("pooler.dense.weight")[0]
        take("pre_logits.fc.weight", "pooler.dense.weight", (representation_size, width))
        take("pre_logits.fc.bias", "pooler.dense.bias", (representation_size,))
    if not class_token and r.has("pooler.dense.weight"):
        raise CheckpointError(path, "a pooler on the first patch token (IJepaModel with add_pooling_layer): vitkit's "
                              "representation layer reads a class token or pooled tokens",
                              key=original["pooler.dense.weight"])
    if r.has("head.probe") and not num_classes:  # SigLIP's attention-pool head: a probe attends over the tokens
        pool = "map"
        take("attn_pool.latent", "head.probe", (1, 1, width))
        in_w = r.get("head.attention.in_proj_weight", (3 * width, width))
        in_b = r.get("head.attention.in_proj_bias", (3 * width,))
        sd["attn_pool.q.weight"], sd["attn_pool.kv.weight"] = in_w[:width], in_w[width:]
        sd["attn_pool.q.bias"], sd["attn_pool.kv.bias"] = in_b[:width], in_b[width:]
        for part in ("q.weight", "kv.weight"):
            src[f"attn_pool.{part}"] = original["head.attention.in_proj_weight"]
        for part in ("q.bias", "kv.bias"):
            src[f"attn_pool.{part}"] = original["head.attention.in_proj_bias"]
        take("attn_pool.proj.weight", "head.attention.out_proj.weight", (width, width))
        take("attn_pool.proj.bias", "head.attention.out_proj.bias", (width,))
        take("attn_pool.norm.weight", "head.layernorm.weight", (width,))
        take("attn_pool.norm.bias", "head.layernorm.bias", (width,))
        take("attn_pool.mlp.fc1.weight", "head.mlp.fc1.weight", (mlp_dim, width))
        take("attn_pool.mlp.fc1.bias", "head.mlp.fc1.bias", (mlp_dim,))
        take("attn_pool.mlp.fc2.weight", "head.mlp.fc2.weight", (width, mlp_dim))
        take("attn_pool.mlp.fc2.bias", "head.mlp.fc2.bias", (width,))
    elif not class_token:  # SigLIP without its head, IJEPA: their classifiers average the normalised tokens
        pool = settings.recorded("pool", "gap", key=original.get(pos_name))
    r.check_all_taken(ignore=ignore)

    # ------------------------------------------------------------------ numerics and heads count
    if bare and "gelu" in hints:
        gelu = settings.recorded("gelu", hints["gelu"], key="vitkit.config")
    elif bare and default_act == "quick_gelu" and "gelu" in settings.given:
        gelu = settings.given["gelu"]
    elif bare and default_act == "quick_gelu":
        raise CheckpointError(path, "a bare CLIP vision file does not record its activation, and CLIP's default is "
                              "quick GELU, which vitkit lacks; pass gelu='exact' (hidden_act 'gelu') or gelu='tanh' "
                              "if the model used one of those", key=original.get(f"{proj}.weight"))
    elif bare:
        gelu = settings.assumed("gelu", _gelu(path, default_act, "hidden_act"),
                                f"transformers' default hidden_act {default_act!r} for {model_type}")
    else:
        gelu = settings.recorded("gelu", _gelu(path, cfg.get("hidden_act", default_act), "hidden_act"),
                                 key="hidden_act")
    if not bare:
        eps = settings.recorded("layer_norm_eps", float(cfg.get("layer_norm_eps", default_eps)), key="layer_norm_eps")
    elif "layer_norm_eps" in hints:
        eps = settings.recorded("layer_norm_eps", hints["layer_norm_eps"], key="vitkit.config")
    else:
        eps = settings.assumed("layer_norm_eps", default_eps, f"transformers' default for {model_type}")
    if not bare:
        heads = settings.recorded("num_heads", int(cfg.get("num_attention_heads", 12)), key="num_attention_heads")
        if width % heads:
            raise CheckpointError(path, f"hidden_size {width} is not divisible by {heads} heads",
                                  key="num_attention_heads")
    elif "num_heads" in hints:
        heads = settings.recorded("num_heads", hints["num_heads"], key="vitkit.config")
    else:
        from .timm import guess_heads

        heads = guess_heads(width, settings, original.get(f"{proj}.weight"))
    if model_type == "vit_mae" and float(cfg.get("mask_ratio", 0.0)) > 0:  # said always, not only beside guesses
        warnings.warn(f"{path}: MAE's random masking (mask_ratio={cfg['mask_ratio']}, a pre-training device) is not "
                      "applied: vitkit's encoder sees every patch in order, as MAE's fine-tuning and linear probing "
                      "do", GuessWarning, stacklevel=4)
    config = ViTConfig(
        image_size=(grid[0] * ph, grid[1] * pw), patch_size=(ph, pw), in_channels=in_channels, width=width,
        depth=depth, num_heads=heads, mlp_dim=mlp_dim, num_classes=num_classes, pool=pool, class_token=class_token,
        dist_token=dist_token, dist_head=dist_head, num_reg_tokens=num_reg_tokens, norm_pre=norm_pre,
        layer_scale=float(cfg.get("layerscale_value", 1.0)) if layer_scale else None,
        posemb="learned", representation_size=representation_size, gelu=gelu, layer_norm_eps=eps, qkv_bias=qkv_bias,
    )
    class_names = None
    id2label = cfg.get("id2label")
    classifier = next((k for k in ("classifier.weight", "cls_classifier.weight") if r.has(k)), None)
    if classifier and isinstance(id2label, dict) and len(id2label) != num_classes:  # transformers refuses it too
        raise CheckpointError(path, f"config.json's id2label names {len(id2label)} classes but the classifier "
                              f"({original[classifier]}) has {num_classes}", key="id2label")
    if id2label and num_classes and len(id2label) == num_classes:
        names = [id2label.get(str(i), id2label.get(i)) for i in range(num_classes)]
        if all(isinstance(n, str) for n in names) and not all(n == f"LABEL_{i}" for i, n in enumerate(names)):
            class_names = names
    return Converted(config, sd, src, Preprocessing(image_size=config.image_size), class_names,
                     guessed=settings.guessed)


def hf_config(model) -> dict:
    """config.json for a model that transformers' ViT (or, with a distillation token, DeiT) classes can express."""
    c = model.config
    problems = []
    if c.resnet is not None:
        problems.append("a hybrid ResNet stem")
    if not c.class_token or c.pool != "token":
        problems.append(f"pool={c.pool!r} (transformers' ViT classifies from the class token)")
    if c.norm_after_pool:
        problems.append("norm_after_pool=True")
    if c.representation_size:
        problems.append("a representation (pre_logits) layer")
    if c.posemb == "none":
        problems.append("posemb='none'")
    if c.num_reg_tokens:
        problems.append("register tokens")
    if c.layer_scale is not None:
        problems.append("LayerScale")
    if c.norm_pre:
        problems.append("a norm before the encoder (norm_pre)")
    if c.num_classes == 0:
        problems.append("num_classes=0 (no classifier)")
    if problems:
        kind = "DeiT" if c.dist_token else "ViT"
        raise ValueError(f"this model cannot be written as a transformers {kind}: " + "; ".join(problems))
    names = model.class_names or [f"LABEL_{i}" for i in range(c.num_classes)]
    if c.dist_token:
        model_type = "deit"
        architecture = "DeiTForImageClassificationWithTeacher" if c.dist_head else "DeiTForImageClassification"
    else:
        model_type, architecture = "vit", "ViTForImageClassification"
    return {
        "model_type": model_type,
        "architectures": [architecture],
        "hidden_size": c.width,
        "num_hidden_layers": c.depth,
        "num_attention_heads": c.num_heads,
        "intermediate_size": c.mlp_dim,
        "hidden_act": "gelu_pytorch_tanh" if c.gelu == "tanh" else "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": c.layer_norm_eps,
        "image_size": c.image_size[0] if c.image_size[0] == c.image_size[1] else list(c.image_size),
        "patch_size": c.patch_size[0] if c.patch_size[0] == c.patch_size[1] else list(c.patch_size),
        "num_channels": c.in_channels,
        "qkv_bias": c.qkv_bias,
        "encoder_stride": c.patch_size[0],
        "id2label": {str(i): n for i, n in enumerate(names)},
        "label2id": {n: i for i, n in enumerate(names)},
    }


def to_hf(model) -> dict[str, torch.Tensor]:
    """The model's tensors under transformers' published names: ViTForImageClassification's, or DeiT's classes'
    for a model with a distillation token."""
    c = model.config
    hf_config(model)  # raises if the model cannot be expressed
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    base = "deit." if c.dist_token else "vit."
    pos = model.position_embeddings().detach().cpu()
    covered = c.num_posemb_prefix_tokens
    prefix = 1 + int(c.dist_token)  # transformers adds positions to the class and distillation tokens
    if covered < prefix:  # vitkit's prefix tokens without positions get zeros, the same function
        pos = torch.cat([pos.new_zeros(1, prefix - covered, c.width), pos], dim=1)
    out = {
        base + "embeddings.cls_token": sd["cls_token"],
        base + "embeddings.position_embeddings": pos.clone(),
        base + "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
        base + "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
        base + "layernorm.weight": sd["norm.weight"],
        base + "layernorm.bias": sd["norm.bias"],
    }
    if c.dist_token:
        out[base + "embeddings.distillation_token"] = sd["dist_token"]
    if c.dist_head:
        out.update({"cls_classifier.weight": sd["head.weight"], "cls_classifier.bias": sd["head.bias"],
                    "distillation_classifier.weight": sd["head_dist.weight"],
                    "distillation_classifier.bias": sd["head_dist.bias"]})
    else:
        out.update({"classifier.weight": sd["head.weight"], "classifier.bias": sd["head.bias"]})
    D = c.width
    for i in range(c.depth):
        L, n = f"{base}encoder.layer.{i}.", f"blocks.{i}."
        for j, part in enumerate(("query", "key", "value")):
            out[f"{L}attention.attention.{part}.weight"] = sd[n + "attn.qkv.weight"][j * D:(j + 1) * D].clone()
            if c.qkv_bias:
                out[f"{L}attention.attention.{part}.bias"] = sd[n + "attn.qkv.bias"][j * D:(j + 1) * D].clone()
        out[f"{L}attention.output.dense.weight"] = sd[n + "attn.proj.weight"]
        out[f"{L}attention.output.dense.bias"] = sd[n + "attn.proj.bias"]
        out[f"{L}layernorm_before.weight"] = sd[n + "norm1.weight"]
        out[f"{L}layernorm_before.bias"] = sd[n + "norm1.bias"]
        out[f"{L}layernorm_after.weight"] = sd[n + "norm2.weight"]
        out[f"{L}layernorm_after.bias"] = sd[n + "norm2.bias"]
        out[f"{L}intermediate.dense.weight"] = sd[n + "mlp.fc1.weight"]
        out[f"{L}intermediate.dense.bias"] = sd[n + "mlp.fc1.bias"]
        out[f"{L}output.dense.weight"] = sd[n + "mlp.fc2.weight"]
        out[f"{L}output.dense.bias"] = sd[n + "mlp.fc2.bias"]
    return out


def _processor_config(p: Preprocessing, dist_token: bool, folder: Path) -> dict:
    """preprocessor_config.json for transformers that prepares inputs as `p` does: a squash resize (ViT's and DeiT's
    processors, with a centre crop when there is one), or the shorter side (BitImageProcessor's shortest_edge)."""
    target, size = p.resize_target(), p.image_size
    cropped = tuple(target) != tuple(size)
    if p.resize_mode == "squash":
        kind, resize = ("DeiTImageProcessor" if dist_token else "ViTImageProcessor"), {"height": target[0],
                                                                                       "width": target[1]}
    elif target[0] == target[1]:
        kind, resize = "BitImageProcessor", {"shortest_edge": target[0]}
    else:
        raise ValueError(f"preprocessing {p} resizes the shorter side to a non-square target, which transformers' "
                         "image processors cannot express")
    odd = any((t - s) % 2 for t, s in zip(target, size)) if p.resize_mode == "squash" else cropped
    if cropped and odd and p.crop_offset == "round":
        warnings.warn(f"{folder}: transformers' centre crop puts an odd margin's extra pixel on the other side than "
                      "this model's preprocessing (timm's rounding): inputs can be one pixel apart", stacklevel=3)
    return {"image_processor_type": kind, "do_resize": True, "size": resize,
            "resample": {"nearest": 0, "bilinear": 2, "bicubic": 3}[p.interpolation],
            "do_center_crop": cropped, **({"crop_size": {"height": size[0], "width": size[1]}} if cropped else {}),
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(p.mean),
            "image_std": list(p.std), **({"do_convert_rgb": True} if kind == "BitImageProcessor" else {})}


def write_hf_dir(model, folder: Path, metadata: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    config = hf_config(model)
    tensors = to_hf(model)
    preprocessor = _processor_config(model.preprocessing, model.config.dist_token, folder)
    save_safetensors(folder / "model.safetensors", tensors, metadata)
    atomic_write_text(folder / "preprocessor_config.json", json.dumps(preprocessor, indent=2) + "\n")
    atomic_write_text(folder / "config.json", json.dumps(config, indent=2) + "\n")
