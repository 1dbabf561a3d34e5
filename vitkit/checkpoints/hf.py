"""Hugging Face `transformers` ViT (`ViTForImageClassification`, `ViTModel`), both ways.

Read: a model directory (config.json + model.safetensors / pytorch_model.bin, sharded or not, and
preprocessor_config.json when present) or a bare weights file. Both key namings are taken: the one of the
published checkpoints and transformers 4 (`encoder.layer.N.attention.attention.query`) and transformers 5's
(`layers.N.attention.q_proj`). Written: a directory in the published naming, which both versions load.
Numerics are transformers': GELU and LayerNorm epsilon as config.json says (its defaults: exact GELU, 1e-12).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..configs import Preprocessing, ViTConfig, to_pair
from ..errors import CheckpointError
from .common import Converted, Reader, Settings, grid_candidates
from .io import atomic_write_text, read_json, read_safetensors, read_torch, save_safetensors

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
TANH_ACTS = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast", "gelu_python_tanh")
EXACT_ACTS = ("gelu", "gelu_python")

# transformers 5 names -> the published (transformers 4) names
_V5_RENAMES = [
    (re.compile(r"^layers\.(\d+)\."), r"encoder.layer.\1."),
    (re.compile(r"\.attention\.q_proj\."), ".attention.attention.query."),
    (re.compile(r"\.attention\.k_proj\."), ".attention.attention.key."),
    (re.compile(r"\.attention\.v_proj\."), ".attention.attention.value."),
    (re.compile(r"\.attention\.o_proj\."), ".attention.output.dense."),
    (re.compile(r"\.mlp\.fc1\."), ".intermediate.dense."),
    (re.compile(r"\.mlp\.fc2\."), ".output.dense."),
]


def looks_like_hf(keys) -> bool:
    return any("embeddings.patch_embeddings.projection.weight" in k for k in keys)


def _normalise(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Strip the `vit.` prefix and map transformers-5 names to the published ones; remember the originals."""
    out, original = {}, {}
    for key, value in tensors.items():
        new = key.removeprefix("vit.")
        if new.startswith("layers."):
            for pattern, repl in _V5_RENAMES:
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
    path = folder / "preprocessor_config.json"
    if not path.exists():
        return Preprocessing(image_size=image_size)
    data = read_json(path)
    kwargs = {"image_size": image_size}
    if "image_mean" in data and "image_std" in data:
        kwargs["mean"], kwargs["std"] = tuple(data["image_mean"]), tuple(data["image_std"])
    if data.get("do_normalize") is False:
        kwargs["mean"], kwargs["std"] = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return Preprocessing(**kwargs)


def from_hf(tensors: dict[str, torch.Tensor], path, hf_config: dict | None = None, settings: Settings | None = None,
            hints: dict | None = None) -> Converted:
    """`hf_config`: config.json (None for bare weights, whose unrecorded values are guessed and announced);
    `hints`: what a vitkit-written file recorded in its metadata."""
    settings = settings or Settings(path)
    hints = dict(hints or {})
    cfg = dict(hf_config or {})
    bare = hf_config is None

    def setting(name, hf_name, default, why, convert=lambda v: v):
        """config.json's value (transformers' default where it is silent), a vitkit file's, else a guess."""
        if not bare:
            return settings.recorded(name, convert(cfg.get(hf_name, default)), key=hf_name)
        if name in hints:
            return settings.recorded(name, hints[name], key="vitkit.config")
        return settings.assumed(name, default, why)

    model_type = cfg.get("model_type", "vit")
    if model_type != "vit":
        raise CheckpointError(path, f"model_type {model_type!r} is not a ViT; vitkit reads model_type 'vit'",
                              key="model_type")
    tensors, original = _normalise(tensors)
    tensors.pop("embeddings.mask_token", None)
    r = Reader(tensors, path)
    proj = "embeddings.patch_embeddings.projection"
    w_shape = r.shape(f"{proj}.weight")
    if len(w_shape) != 4:
        raise CheckpointError(path, f"expected shape (hidden_size, channels, ph, pw), found {w_shape}",
                              key=original.get(f"{proj}.weight"))
    width, in_channels, ph, pw = w_shape
    if "hidden_size" in cfg and cfg["hidden_size"] != width:
        raise CheckpointError(path, f"config.json says hidden_size {cfg['hidden_size']}, the weights have {width}",
                              key=original.get(f"{proj}.weight"))
    sd, src = {}, {}

    def take(ours, theirs, shape):
        sd[ours] = r.get(theirs, shape)
        src[ours] = original.get(theirs, theirs)

    take("patch_embed.proj.weight", f"{proj}.weight", w_shape)
    take("patch_embed.proj.bias", f"{proj}.bias", (width,))
    take("cls_token", "embeddings.cls_token", (1, 1, width))
    length = r.shape("embeddings.position_embeddings")[1] if len(r.shape("embeddings.position_embeddings")) == 3 else 0
    take("pos_embed", "embeddings.position_embeddings", (1, None, width))
    posemb_key = original.get("embeddings.position_embeddings")
    if not bare and "image_size" in cfg:
        settings.recorded("image_size", to_pair(cfg["image_size"]), key="image_size")
        settings.given["image_size"] = to_pair(cfg["image_size"])
    elif "image_size" in hints:
        settings.recorded("image_size", tuple(hints["image_size"]), key="vitkit.config")
        settings.given["image_size"] = tuple(hints["image_size"])
    grids = grid_candidates(length - 1, (ph, pw), settings)
    if not grids:
        if settings.get("image_size") is not None:
            raise CheckpointError(path, f"image_size {tuple(settings.get('image_size'))} with patch {(ph, pw)} needs "
                                  "a different number of position embeddings than the weights' "
                                  f"{length}", key=posemb_key)
        raise CheckpointError(path, f"{length - 1} position embeddings (and the class token's) form no square grid, "
                              "so the image size cannot be read from the file; pass image_size=(H, W)", key=posemb_key)
    grid = grids[0]
    if bare and "image_size" not in settings.given:
        settings.assumed("image_size", (grid[0] * ph, grid[1] * pw), f"a square {grid[0]}x{grid[1]} grid of "
                         f"{length} position embeddings")

    depth = r.count("encoder.layer.{}.")
    if depth == 0:
        raise CheckpointError(path, "missing tensor: no encoder layers", key="encoder.layer.0")
    if "num_hidden_layers" in cfg and cfg["num_hidden_layers"] != depth:
        raise CheckpointError(path, f"config.json says {cfg['num_hidden_layers']} layers, the weights have {depth}",
                              key="num_hidden_layers")
    mlp_dim = r.shape("encoder.layer.0.intermediate.dense.weight")[0]
    qkv_bias = r.has("encoder.layer.0.attention.attention.query.bias")
    for i in range(depth):
        L, n = f"encoder.layer.{i}.", f"blocks.{i}."
        take(n + "norm1.weight", L + "layernorm_before.weight", (width,))
        take(n + "norm1.bias", L + "layernorm_before.bias", (width,))
        qkv = [r.get(f"{L}attention.attention.{p}.weight", (width, width)) for p in ("query", "key", "value")]
        sd[n + "attn.qkv.weight"] = torch.cat(qkv, 0)
        src[n + "attn.qkv.weight"] = original.get(f"{L}attention.attention.query.weight")
        if qkv_bias:
            qkv_b = [r.get(f"{L}attention.attention.{p}.bias", (width,)) for p in ("query", "key", "value")]
            sd[n + "attn.qkv.bias"] = torch.cat(qkv_b, 0)
            src[n + "attn.qkv.bias"] = original.get(f"{L}attention.attention.query.bias")
        take(n + "attn.proj.weight", L + "attention.output.dense.weight", (width, width))
        take(n + "attn.proj.bias", L + "attention.output.dense.bias", (width,))
        take(n + "norm2.weight", L + "layernorm_after.weight", (width,))
        take(n + "norm2.bias", L + "layernorm_after.bias", (width,))
        take(n + "mlp.fc1.weight", L + "intermediate.dense.weight", (mlp_dim, width))
        take(n + "mlp.fc1.bias", L + "intermediate.dense.bias", (mlp_dim,))
        take(n + "mlp.fc2.weight", L + "output.dense.weight", (width, mlp_dim))
        take(n + "mlp.fc2.bias", L + "output.dense.bias", (width,))
    take("norm.weight", "layernorm.weight", (width,))
    take("norm.bias", "layernorm.bias", (width,))

    num_classes, representation_size = 0, None
    if r.has("classifier.weight"):
        num_classes = r.shape("classifier.weight")[0]
        take("head.weight", "classifier.weight", (num_classes, width))
        take("head.bias", "classifier.bias", (num_classes,))
        ignore = [k for k in tensors if k.startswith("pooler.")]  # ViTForImageClassification does not use it
    else:
        ignore = []
        if r.has("pooler.dense.weight"):  # ViTModel: the pooler is the original's pre_logits (Dense + tanh)
            if cfg.get("pooler_act", "tanh") != "tanh":
                raise CheckpointError(path, f"pooler_act {cfg['pooler_act']!r}: only tanh is supported",
                                      key="pooler_act")
            representation_size = r.shape("pooler.dense.weight")[0]
            take("pre_logits.fc.weight", "pooler.dense.weight", (representation_size, width))
            take("pre_logits.fc.bias", "pooler.dense.bias", (representation_size,))
    r.check_all_taken(ignore=ignore)

    if bare and "gelu" not in hints:
        gelu = settings.assumed("gelu", "exact", "transformers' default hidden_act 'gelu'")
    elif bare:
        gelu = settings.recorded("gelu", hints["gelu"], key="vitkit.config")
    else:
        act = cfg.get("hidden_act", "gelu")
        if act in TANH_ACTS:
            gelu = "tanh"
        elif act in EXACT_ACTS:
            gelu = "exact"
        else:
            raise CheckpointError(path, f"hidden_act {act!r} is not a GELU vitkit knows "
                                  f"({', '.join(EXACT_ACTS + TANH_ACTS)})", key="hidden_act")
        gelu = settings.recorded("gelu", gelu, key="hidden_act")
    eps = setting("layer_norm_eps", "layer_norm_eps", 1e-12, "transformers' default", float)
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
    config = ViTConfig(
        image_size=(grid[0] * ph, grid[1] * pw), patch_size=(ph, pw), in_channels=in_channels, width=width,
        depth=depth, num_heads=heads, mlp_dim=mlp_dim, num_classes=num_classes, pool="token", class_token=True,
        posemb="learned", representation_size=representation_size, gelu=gelu, layer_norm_eps=eps, qkv_bias=qkv_bias,
    )
    class_names = None
    id2label = cfg.get("id2label")
    if id2label and num_classes and len(id2label) == num_classes:
        names = [id2label.get(str(i), id2label.get(i)) for i in range(num_classes)]
        if all(isinstance(n, str) for n in names) and not all(n == f"LABEL_{i}" for i, n in enumerate(names)):
            class_names = names
    return Converted(config, sd, src, Preprocessing(image_size=config.image_size), class_names,
                     guessed=settings.guessed)


def hf_config(model) -> dict:
    """config.json for a model that `ViTForImageClassification` can express."""
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
    if c.num_classes == 0:
        problems.append("num_classes=0 (no classifier)")
    if problems:
        raise ValueError("this model cannot be written as a transformers ViT: " + "; ".join(problems))
    names = model.class_names or [f"LABEL_{i}" for i in range(c.num_classes)]
    return {
        "model_type": "vit",
        "architectures": ["ViTForImageClassification"],
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
    """The model's tensors under transformers' published ViTForImageClassification names."""
    c = model.config
    hf_config(model)  # raises if the model cannot be expressed
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    pos = model.position_embeddings().detach().cpu()
    if not model._posemb_covers_prefix():  # transformers adds positions to the class token too: give it zeros
        pos = torch.cat([pos.new_zeros(1, 1, c.width), pos], dim=1)
    out = {
        "vit.embeddings.cls_token": sd["cls_token"],
        "vit.embeddings.position_embeddings": pos.clone(),
        "vit.embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
        "vit.embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
        "vit.layernorm.weight": sd["norm.weight"],
        "vit.layernorm.bias": sd["norm.bias"],
        "classifier.weight": sd["head.weight"],
        "classifier.bias": sd["head.bias"],
    }
    D = c.width
    for i in range(c.depth):
        L, n = f"vit.encoder.layer.{i}.", f"blocks.{i}."
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


def write_hf_dir(model, folder: Path, metadata: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    config = hf_config(model)
    tensors = to_hf(model)
    p = model.preprocessing
    preprocessor = {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True,
        "size": {"height": p.image_size[0], "width": p.image_size[1]},
        "resample": 2,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(p.mean),
        "image_std": list(p.std),
    }
    save_safetensors(folder / "model.safetensors", tensors, metadata)
    atomic_write_text(folder / "preprocessor_config.json", json.dumps(preprocessor, indent=2) + "\n")
    atomic_write_text(folder / "config.json", json.dumps(config, indent=2) + "\n")
