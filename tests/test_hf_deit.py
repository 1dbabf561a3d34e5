"""DeiT, ViT-MSN and ViT-MAE in Hugging Face's layout: written back for transformers' DeiT classes, the loading rule
for their bare files and folders, and refusals by name."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import transformers as T
from safetensors.torch import save_file

import vitkit
from vitkit import CheckpointError, GuessWarning

from conftest import randomize_, rel_err

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))


def _deit(cls=T.DeiTForImageClassificationWithTeacher, **kwargs):
    args = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96, image_size=32,
                patch_size=8, num_labels=4)
    args.update(kwargs)
    return randomize_(cls(T.DeiTConfig(**args)), seed=21).eval()


def _from_pretrained(cls, folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls.from_pretrained(folder).eval()


@pytest.mark.parametrize("dist_head, cls", [(True, T.DeiTForImageClassificationWithTeacher),
                                            (False, T.DeiTForImageClassification)],
                         ids=["with_teacher", "class_token_head"])
@pytest.mark.parametrize("posemb_prefix", [True, False], ids=["prefix_posemb", "no_prefix_posemb"])
def test_save_hf_with_a_distillation_token_loads_into_deit(tmp_path, dist_head, cls, posemb_prefix):
    model = vitkit.create_model("ViT-Ti/16", num_classes=5, image_size=32, patch_size=8, width=48, depth=2,
                                num_heads=3, mlp_dim=96, dist_token=True, dist_head=dist_head,
                                posemb_prefix=posemb_prefix)
    model = randomize_(model, seed=4).eval()
    vitkit.save(model, tmp_path / "hf", format="hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["model_type"] == "deit" and config["architectures"] == [cls.__name__]
    ref = _from_pretrained(cls, tmp_path / "hf")
    with torch.no_grad():
        assert rel_err(ref(pixel_values=X).logits, model(X)) <= 1e-5
        again = vitkit.load(tmp_path / "hf")
        assert again.config.dist_token and again.config.dist_head == dist_head
        assert rel_err(again(X), model(X)) <= 1e-5


def test_save_hf_refuses_what_transformers_cannot_express(tmp_path):
    model = vitkit.create_model("ViT-Ti/16", num_classes=5, image_size=32, patch_size=8, width=48, depth=1,
                                num_heads=3, mlp_dim=96, layer_scale=1e-5, num_reg_tokens=2)
    with pytest.raises(ValueError, match="register tokens; LayerScale"):
        vitkit.save(model, tmp_path / "hf", format="hf")


def test_a_bare_deit_file_is_recognised_by_its_distillation_token_and_announces_its_guesses(tmp_path):
    ref = _deit()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, tmp_path / "deit.safetensors")
    with pytest.raises(CheckpointError, match="does not record the number of attention heads"):
        vitkit.load(tmp_path / "deit.safetensors")  # width 64 is no variant's
    with pytest.warns(GuessWarning) as caught:
        model = vitkit.load(tmp_path / "deit.safetensors", num_heads=2)
    message = str(caught[0].message)
    for guess in ("gelu='exact'", "layer_norm_eps=1e-12", "image_size=(32, 32)"):
        assert guess in message
    assert model.config.dist_token and model.config.dist_head
    with torch.no_grad():
        assert rel_err(model(X), ref(pixel_values=X).logits) <= 1e-5


def test_a_deit_folder_records_heads_and_refuses_a_contradiction(tmp_path):
    _deit(T.DeiTForImageClassification).save_pretrained(tmp_path / "deit")
    with warnings.catch_warnings():
        warnings.simplefilter("error", GuessWarning)  # a folder's config.json records everything
        model = vitkit.load(tmp_path / "deit")
    assert model.config.dist_token and not model.config.dist_head and model.config.num_heads == 2
    with pytest.raises(CheckpointError, match="records num_heads=2; num_heads=4 contradicts it"):
        vitkit.load(tmp_path / "deit", num_heads=4)


def test_a_bare_msn_file_announces_the_eps_it_cannot_read(tmp_path):
    """ViT-MSN's tensors are ViT's: transformers' ViT eps (1e-12) is assumed and announced, MSN's 1e-6 is given."""
    ref = randomize_(T.ViTMSNModel(T.ViTMSNConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                                                  intermediate_size=96, image_size=32, patch_size=8)), seed=2).eval()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, tmp_path / "msn.safetensors")
    with pytest.warns(GuessWarning, match=r"layer_norm_eps=1e-12"):
        vitkit.load(tmp_path / "msn.safetensors", num_heads=2)
    model = vitkit.load(tmp_path / "msn.safetensors", num_heads=2, layer_norm_eps=1e-6, gelu="exact")
    with torch.no_grad():
        assert rel_err(model.forward_features(X), ref(pixel_values=X).last_hidden_state) <= 1e-5


def test_mae_random_masking_is_announced_as_not_applied(tmp_path):
    config = T.ViTMAEConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=96,
                            image_size=32, patch_size=8, mask_ratio=0.75)
    randomize_(T.ViTMAEModel(config)).save_pretrained(tmp_path / "mae")
    with pytest.warns(GuessWarning, match=r"random masking \(mask_ratio=0.75.*not applied"):
        vitkit.load(tmp_path / "mae")


def test_an_unknown_model_type_is_named_with_what_vitkit_reads(tmp_path):
    _deit().save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["model_type"] = "levit"
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"model_type 'levit': convolutional stages"):
        vitkit.load(tmp_path / "m")
    config["model_type"] = "my_vit"
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"model_type 'my_vit' is not one vitkit reads; it reads 'vit' .*"
                                              r"'deit' \(DeiTModel, .*'vit_msn'"):
        vitkit.load(tmp_path / "m")
