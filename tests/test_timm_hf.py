"""timm and Hugging Face: their random-initialised models load with their own numerics, and vitkit's output of
each format loads back into its library with the same logits."""

from __future__ import annotations

import json
import warnings

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer as TimmViT

import vitkit
from vitkit.checkpoints import timm_kwargs

from conftest import randomize_, rel_err

transformers = pytest.importorskip("transformers")

TIMM_CASES = {
    "token": dict(),
    "avg_with_class_token": dict(global_pool="avg"),  # timm applies fc_norm after the mean
    "avg_no_class_token": dict(global_pool="avg", class_token=False),
    "token_no_embed_class": dict(no_embed_class=True),
    "no_qkv_bias": dict(qkv_bias=False),
}


def _timm_model(**kwargs):
    args = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, mlp_ratio=2.0, num_classes=5)
    args.update(kwargs)
    return randomize_(TimmViT(**args), seed=len(kwargs)).eval()


@pytest.mark.parametrize("case", sorted(TIMM_CASES))
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_timm_state_dict_loads_with_timm_logits(tmp_path, case, suffix):
    ref = _timm_model(**TIMM_CASES[case])
    path = tmp_path / f"timm{suffix}"
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    save_file(sd, path) if suffix == ".safetensors" else torch.save(sd, path)
    model = vitkit.load(path, num_heads=3)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        err = rel_err(model(x), ref(x))
    assert err <= 1e-5, f"{case}: {err:.2e}"
    assert model.config.gelu == "exact" and model.config.layer_norm_eps == 1e-6


def test_timm_heads_default_from_the_variant_table(tmp_path):
    ref = randomize_(TimmViT(img_size=32, patch_size=16, embed_dim=192, depth=1, num_heads=3, num_classes=4)).eval()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, tmp_path / "ti.safetensors")
    model = vitkit.load(tmp_path / "ti.safetensors")  # width 192 is ViT-Ti: 3 heads
    assert model.config.num_heads == 3
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert rel_err(model(x), ref(x)) <= 1e-5


def _hf_model(**kwargs):
    cfg = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96, image_size=32,
               patch_size=8, num_labels=6)
    cfg.update(kwargs)
    config = transformers.ViTConfig(**cfg)
    return randomize_(transformers.ViTForImageClassification(config), seed=7).eval()


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_pytorch_tanh"])
def test_hf_folder_loads_with_hf_logits(tmp_path, hidden_act):
    ref = _hf_model(hidden_act=hidden_act, id2label={i: f"class{i}" for i in range(6)},
                    label2id={f"class{i}": i for i in range(6)})
    ref.save_pretrained(tmp_path / "hf")
    model = vitkit.load(tmp_path / "hf")
    assert model.config.layer_norm_eps == 1e-12
    assert model.config.gelu == ("tanh" if "tanh" in hidden_act else "exact")
    assert model.class_names == [f"class{i}" for i in range(6)]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert rel_err(model(x), ref(pixel_values=x).logits) <= 1e-5


def test_hf_bare_weights_file_and_transformers4_names(tmp_path):
    """A weights file without config.json, in the published (transformers 4) naming."""
    ref = _hf_model()
    renames = [("vit.layers.", "vit.encoder.layer."), (".attention.q_proj.", ".attention.attention.query."),
               (".attention.k_proj.", ".attention.attention.key."), (".attention.v_proj.", ".attention.attention.value."),
               (".attention.o_proj.", ".attention.output.dense."), (".mlp.fc1.", ".intermediate.dense."),
               (".mlp.fc2.", ".output.dense.")]
    sd = {}
    for key, value in ref.state_dict().items():
        for old, new in renames:
            key = key.replace(old, new)
        sd[key] = value.contiguous()
    assert "vit.encoder.layer.0.attention.attention.query.weight" in sd
    save_file(sd, tmp_path / "model.safetensors")
    model = vitkit.load(tmp_path / "model.safetensors", num_heads=4)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert rel_err(model(x), ref(pixel_values=x).logits) <= 1e-5


def test_hf_vitmodel_pooler_is_the_representation_layer(tmp_path):
    config = transformers.ViTConfig(hidden_size=48, num_hidden_layers=1, num_attention_heads=4,
                                    intermediate_size=96, image_size=32, patch_size=8)
    ref = randomize_(transformers.ViTModel(config), seed=3).eval()
    ref.save_pretrained(tmp_path / "base")
    model = vitkit.load(tmp_path / "base")
    assert model.config.representation_size == 48 and model.config.num_classes == 0
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours = model.forward_head(model.forward_features(x), pre_logits=True)
        assert rel_err(ours, ref(pixel_values=x).pooler_output) <= 1e-5


def _vitkit_model(**overrides):
    args = dict(num_classes=5, image_size=32, patch_size=8, width=48, depth=2, num_heads=3, mlp_dim=96)
    args.update(overrides)
    model = vitkit.create_model("ViT-Ti/16", **args)
    return randomize_(model, seed=11).eval()


@pytest.mark.parametrize("overrides", [
    dict(), dict(pool="gap", norm_after_pool=True), dict(pool="gap", class_token=False), dict(gelu="tanh"),
    dict(posemb="sincos_2d"), dict(posemb="learned_2d"), dict(layer_norm_eps=1e-5),
], ids=["token", "avg_fc_norm", "gap", "tanh", "sincos", "learned_2d", "eps"])
def test_save_timm_loads_into_timm(tmp_path, overrides):
    model = _vitkit_model(**overrides)
    vitkit.save(model, tmp_path / "t.safetensors", format="timm")
    from safetensors.torch import load_file

    ref = TimmViT(**timm_kwargs(model.config)).eval()
    ref.load_state_dict(load_file(tmp_path / "t.safetensors"), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert rel_err(ref(x), model(x)) <= 1e-5
        again = vitkit.load(tmp_path / "t.safetensors")  # heads and numerics recorded in the metadata
        assert rel_err(again(x), model(x)) <= 1e-5


@pytest.mark.parametrize("overrides", [dict(), dict(gelu="tanh", layer_norm_eps=1e-6), dict(posemb="sincos_2d")],
                         ids=["exact", "tanh", "sincos"])
def test_save_hf_loads_into_transformers(tmp_path, overrides):
    model = _vitkit_model(**overrides)
    model.class_names = ["a", "b", "c", "d", "e"]
    vitkit.save(model, tmp_path / "hf", format="hf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = transformers.ViTForImageClassification.from_pretrained(tmp_path / "hf").eval()
    assert ref.config.id2label[2] == "c"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert rel_err(ref(pixel_values=x).logits, model(x)) <= 1e-5
        again = vitkit.load(tmp_path / "hf")
        assert rel_err(again(x), model(x)) <= 1e-5
    assert again.class_names == model.class_names
    assert json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())["image_mean"] == [0.5, 0.5, 0.5]


def test_save_google_from_timm_weights(tmp_path):
    """A timm model converted to the original naming and back computes the same (with exact GELU kept)."""
    ref = _timm_model()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, tmp_path / "t.safetensors")
    model = vitkit.load(tmp_path / "t.safetensors", num_heads=3)
    with pytest.warns(UserWarning, match="tanh GELU"):
        vitkit.save(model, tmp_path / "g.npz", format="google")
    again = vitkit.load(tmp_path / "g.npz")
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def test_vitkit_format_keeps_config_preprocessing_and_class_names(tmp_path):
    model = _vitkit_model(posemb="learned_2d", pool="gap", drop_path=0.1)
    model.class_names = list("vwxyz")
    model.preprocessing.mean = (0.1, 0.2, 0.3)
    vitkit.save(model, tmp_path / "m.safetensors")
    again = vitkit.load(tmp_path / "m.safetensors")
    assert again.config == model.config
    assert again.class_names == list("vwxyz") and again.preprocessing.mean == (0.1, 0.2, 0.3)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


def test_timm_create_model_names_match_vitkit_counts():
    """timm's registered variants agree with vitkit's table for the plain ViTs (same architecture)."""
    with torch.device("meta"):
        ours = vitkit.create_model("ViT-S/16")
        theirs = timm.create_model("vit_small_patch16_224", num_classes=1000)
    assert vitkit.count_parameters(ours) == sum(p.numel() for p in theirs.parameters())
