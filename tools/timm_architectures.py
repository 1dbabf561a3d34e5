"""Write vitkit/checkpoints/timm_architectures.json: what each timm ViT architecture is, beyond its tensors.

A timm state dict does not record the head count, the activation, the LayerNorm epsilon, the block type or the
pooling; a timm hub folder records the architecture's name. This reads each name's settings off a meta-device
instance of the installed timm's model (one block deep, so it is quick), and says, in vitkit's words, which parts
vitkit does not implement. vitkit's timm reader uses the table; tests/test_timm_architectures.py re-derives it from
the installed timm, so it cannot fall behind timm silently.

    python tools/timm_architectures.py            # rewrite the table
    python tools/timm_architectures.py --check    # exit 1 if the table differs from the installed timm
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "vitkit" / "checkpoints" / "timm_architectures.json"
sys.path.insert(0, str(REPO))
from vitkit.checkpoints.timm import unsupported_parts  # noqa: E402  (what vitkit implements is vitkit's to say)
BUILDER_MODULES = ("vision_transformer", "vision_transformer_hybrid", "vision_transformer_relpos", "deit", "eva")


def architecture_names() -> list[str]:
    import timm

    return sorted(set(timm.list_models("vit_*") + timm.list_models("deit*")))


@contextlib.contextmanager
def one_block_builds(captured: dict):
    """Build timm models one block deep, remembering the arguments (with the real depth) they were built with."""
    import importlib

    modules = [importlib.import_module(f"timm.models.{name}") for name in BUILDER_MODULES]
    originals = [module.build_model_with_cfg for module in modules]

    def build(model_cls, variant, pretrained, **kwargs):
        depth = kwargs.get("depth") or next(inspect.signature(c.__init__).parameters["depth"].default
                                            for c in model_cls.__mro__
                                            if "depth" in inspect.signature(c.__init__).parameters)
        captured.update(model_cls=model_cls.__name__, depth=depth, kwargs=kwargs)
        short = dict(kwargs, depth=1)
        for key, value in kwargs.items():  # per-block settings (lists as long as the depth) keep the first block's
            if isinstance(value, (list, tuple)) and len(value) == depth and depth > 1 and key.startswith("num_"):
                short[key] = value[:1]
        return originals[0](model_cls, variant, pretrained, **short)

    try:
        for module in modules:
            module.build_model_with_cfg = build
        yield
    finally:
        for module, original in zip(modules, originals):
            module.build_model_with_cfg = original


def _activation(module) -> str:
    import torch.nn as nn

    if isinstance(module, nn.GELU):
        return "gelu" if module.approximate == "none" else "gelu_tanh"
    name = type(module).__name__
    return {"QuickGELU": "quick_gelu", "SiLU": "silu", "GELUTanh": "gelu_tanh", "GELU": "gelu",
            "ReLU": "relu"}.get(name, name)


def _is(module, name: str | None = None) -> bool:
    """Whether a module is present (not None, not nn.Identity)."""
    return module is not None and type(module).__name__ != "Identity"


def describe(name: str) -> dict:
    """The settings of one architecture that vitkit needs, and the parts vitkit does not implement."""
    import timm
    import torch

    captured: dict = {}
    with one_block_builds(captured), torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    block = model.blocks[0]
    depth = captured["depth"]
    one_block = sum(p.numel() for p in block.parameters())
    attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
    norm1 = getattr(block, "norm1", None)
    act = getattr(mlp, "act", None)
    embed = model.patch_embed
    entry = {
        "class": type(model).__name__,
        "params": sum(p.numel() for p in model.parameters()) + (depth - 1) * one_block,
        "depth": depth,
        "width": model.embed_dim,
        "num_heads": getattr(attn, "num_heads", None),
        "mlp_dim": getattr(getattr(mlp, "fc1", None), "out_features", None),
        "img_size": list(embed.img_size) if getattr(embed, "img_size", None) else None,
        "patch_size": list(embed.patch_size),
        "grid_size": list(embed.grid_size) if getattr(embed, "grid_size", None) else None,
        "in_chans": model.in_chans if hasattr(model, "in_chans") else 3,
        "num_classes": model.num_classes,
        "embed": type(embed).__name__,
        "backbone": type(embed.backbone).__name__ if hasattr(embed, "backbone") else None,
        "global_pool": model.global_pool,
        "class_token": getattr(model, "cls_token", None) is not None,
        "dist_token": getattr(model, "dist_token", None) is not None,
        "num_reg_tokens": int(getattr(model, "num_reg_tokens", 0) or 0),
        "no_embed_class": bool(getattr(model, "no_embed_class", False)),
        "pos_embed": getattr(model, "pos_embed", None) is not None,
        "pre_norm": _is(getattr(model, "norm_pre", None)),
        "final_norm": _is(getattr(model, "norm", None)),
        "fc_norm": _is(getattr(model, "fc_norm", None)),
        "pool_include_prefix": bool(getattr(model, "pool_include_prefix", False)),
        "block": type(block).__name__,
        "attn": type(attn).__name__ if attn is not None else None,
        "mlp": type(mlp).__name__ if mlp is not None else None,
        "act": _activation(act) if act is not None else None,
        "norm": type(norm1).__name__ if norm1 is not None else None,
        "eps": float(norm1.eps) if hasattr(norm1, "eps") else None,
        "layer_scale": _is(getattr(block, "ls1", None)),
        "qk_norm": _is(getattr(attn, "q_norm", None)),
        "attn_norm": _is(getattr(attn, "norm", None)),
        "mlp_norm": _is(getattr(mlp, "norm", None)),
        "attn_pool": type(model.attn_pool).__name__ if _is(getattr(model, "attn_pool", None)) else None,
        "rope": _is(getattr(model, "rope", None)),
    }
    if entry["attn_pool"] == "AttentionPoolLatent":
        pool = model.attn_pool
        entry["attn_pool_latent_len"] = pool.latent_len
        entry["attn_pool_heads"] = pool.num_heads
        entry["attn_pool_mlp_dim"] = pool.mlp.fc1.out_features if pool.mlp is not None else None
    entry["unsupported"] = unsupported_parts(entry)
    return entry


def derive(names=None) -> dict[str, dict]:
    return {name: describe(name) for name in (names or architecture_names())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the table instead of writing it")
    args = parser.parse_args(argv)
    import timm

    table = {"timm_version": timm.__version__, "architectures": derive()}
    text = json.dumps(table, indent=1, sort_keys=True) + "\n"
    if args.check:
        same = TABLE.exists() and json.loads(TABLE.read_text())["architectures"] == table["architectures"]
        print("up to date" if same else f"{TABLE} differs from timm {timm.__version__}; rerun without --check")
        return 0 if same else 1
    TABLE.write_text(text)
    print(f"wrote {TABLE}: {len(table['architectures'])} architectures from timm {timm.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
