"""Options of later ViTs (register tokens, LayerScale, norm_pre, MAP pooling, DeiT's distillation token): each alone
and combined, vitkit's logits against timm's own modules with the same random non-zero weights, and the model API
(shortcut, resolution change, classifier reset, init, weight decay, attention capture) around them."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import vitkit
from vitkit.checkpoints.timm import timm_class, timm_kwargs, timm_problems, to_timm
from vitkit.configs import ViTConfig, later_options
from vitkit.inspect import attention_rollout, class_token_attention
from vitkit.models.fast import plain_path

from conftest import randomize_, rel_err

TINY = dict(image_size=(32, 24), patch_size=8, width=48, depth=2, num_heads=3, mlp_dim=96, num_classes=5)

CASES = {
    "reg": dict(num_reg_tokens=3),
    "reg_no_embed_class": dict(num_reg_tokens=2, posemb_prefix=False),
    "reg_gap_no_class": dict(num_reg_tokens=1, pool="gap", class_token=False),  # timm's pos covers the register
    "layer_scale": dict(layer_scale=1e-5),
    "norm_pre": dict(norm_pre=True),
    "map": dict(pool="map"),
    "map_class_token": dict(pool="map", class_token=True),
    "map_fc_norm": dict(pool="map", norm_after_pool=True),
    "dist": dict(dist_token=True, dist_head=True),
    "dist_no_embed_class": dict(dist_token=True, dist_head=True, posemb_prefix=False),
    "reg_ls_pre_map": dict(num_reg_tokens=4, layer_scale=0.1, norm_pre=True, pool="map", posemb_prefix=False),
    "reg_ls_gap_fc_norm": dict(num_reg_tokens=2, layer_scale=1e-5, pool="gap", norm_after_pool=True,
                               class_token=False),
    "dist_ls_pre": dict(dist_token=True, dist_head=True, layer_scale=1e-5, norm_pre=True),
    "map_tanh_eps": dict(pool="map", num_reg_tokens=1, gelu="tanh", layer_norm_eps=1e-5, qkv_bias=False),
    "sincos_reg": dict(posemb="sincos_2d", num_reg_tokens=2, pool="map"),
}


def model_for(seed=0, **options) -> vitkit.VisionTransformer:
    return randomize_(vitkit.create_model(ViTConfig(**{**TINY, **options})), seed=seed).eval()


def timm_twin(model):
    ref = timm_class(model.config)(**timm_kwargs(model.config)).eval()
    ref.load_state_dict(to_timm(model), strict=True)
    return ref


@pytest.mark.parametrize("case", list(CASES))
def test_logits_equal_timms(case):
    model = model_for(**CASES[case])
    ref = timm_twin(model)
    x = torch.randn(3, 3, 32, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = ref(x)
        assert rel_err(model(x), theirs) <= 1e-5  # the fast path (and the class-token shortcut where it applies)
        with plain_path():
            assert rel_err(model(x), theirs) <= 1e-5
        assert rel_err(model.forward_head(model.forward_features(x), pre_logits=True),
                       ref.forward_head(ref.forward_features(x), pre_logits=True)) <= 1e-5
    model.train()
    ref.train()
    assert rel_err(model(x), ref(x)) <= 1e-5  # training mode too (no dropout): DeiT's heads are averaged there too


def test_timm_loads_what_vitkit_writes(tmp_path):
    model = model_for(**CASES["reg_ls_pre_map"])
    vitkit.save(model, tmp_path / "m.safetensors", format="timm")
    ref = timm_class(model.config)(**timm_kwargs(model.config)).eval()
    ref.load_state_dict(load_file(tmp_path / "m.safetensors"), strict=True)
    x = torch.randn(2, 3, 32, 24)
    with torch.no_grad():
        assert rel_err(model(x), ref(x)) <= 1e-5
        again = vitkit.load(tmp_path / "m.safetensors")  # and back: the metadata records heads, size and numerics
        assert rel_err(again(x), model(x)) <= 1e-6
    assert (again.config.num_reg_tokens, again.config.pool, again.config.norm_pre) == (4, "map", True)
    dist = model_for(dist_token=True, dist_head=True)
    vitkit.save(dist, tmp_path / "d.pth", format="timm")
    ref = timm_class(dist.config)(**timm_kwargs(dist.config)).eval()
    ref.load_state_dict(torch.load(tmp_path / "d.pth"), strict=True)
    assert type(ref).__name__ == "VisionTransformerDistilled"
    with torch.no_grad():
        assert rel_err(dist(x), ref(x)) <= 1e-5


def test_state_dict_names_are_timms():
    keys = set(model_for(**CASES["reg_ls_pre_map"]).state_dict())
    assert {"reg_token", "norm_pre.weight", "blocks.0.ls1.gamma", "blocks.1.ls2.gamma", "attn_pool.latent",
            "attn_pool.q.weight", "attn_pool.kv.bias", "attn_pool.proj.weight", "attn_pool.norm.weight",
            "attn_pool.mlp.fc1.weight", "attn_pool.mlp.fc2.bias"} <= keys
    assert "patch_embed.proj.bias" not in keys  # CLIP-style: the patch projection has no bias before norm_pre
    assert "cls_token" not in keys
    keys = set(model_for(dist_token=True, dist_head=True).state_dict())
    assert {"cls_token", "dist_token", "head_dist.weight", "head_dist.bias"} <= keys


def test_what_timm_cannot_express_is_refused():
    assert timm_problems(ViTConfig(**TINY, dist_token=True)) == [
        "a distillation token without its head (timm's VisionTransformerDistilled has both)"]
    with pytest.raises(ValueError, match="distillation token with register tokens"):
        to_timm(model_for(dist_token=True, dist_head=True, num_reg_tokens=1))


def test_prefix_layout_and_position_embeddings():
    c = ViTConfig(**TINY, dist_token=True, num_reg_tokens=3)
    assert (c.num_prefix_tokens, c.num_posemb_prefix_tokens) == (5, 2)  # registers never have positions
    assert vitkit.create_model(c).pos_embed.shape == (1, 2 + 12, 48)
    assert ViTConfig(**TINY, dist_token=True, posemb_prefix=False).num_posemb_prefix_tokens == 0
    assert ViTConfig(**TINY, num_reg_tokens=2, posemb="sincos_2d").num_posemb_prefix_tokens == 0
    model = model_for(dist_token=True, num_reg_tokens=3)
    with torch.no_grad():
        tokens = model.embed(torch.zeros(1, 3, 32, 24))  # zero images: the patch tokens are bias + positions
    assert tokens.shape == (1, 5 + 12, 48)
    pos = model.pos_embed[0]
    torch.testing.assert_close(tokens[0, 0], model.cls_token[0, 0] + pos[0])
    torch.testing.assert_close(tokens[0, 1], model.dist_token[0, 0] + pos[1])
    torch.testing.assert_close(tokens[0, 2:5], model.reg_token[0])
    torch.testing.assert_close(tokens[0, 5:], model.patch_embed.proj.bias + pos[2:])


@pytest.mark.parametrize("case", ["dist", "reg", "reg_no_embed_class", "dist_no_embed_class", "reg_gap_no_class"])
def test_set_image_size_resamples_as_timm(case):
    """timm's resampler (without antialiasing, vitkit's bicubic) on timm's table gives the resized model's table."""
    from timm.layers import resample_abs_pos_embed

    model = model_for(**CASES[case])
    ref = timm_twin(model)
    model.set_image_size((40, 48))
    prefix = 0 if ref.no_embed_class else ref.num_prefix_tokens
    theirs = resample_abs_pos_embed(ref.pos_embed.detach(), new_size=(5, 6), old_size=(4, 3),
                                    num_prefix_tokens=prefix, antialias=False)
    assert rel_err(to_timm(model)["pos_embed"], theirs) <= 1e-6
    resized = timm_twin(model)
    x = torch.randn(2, 3, 40, 48)
    with torch.no_grad():
        assert rel_err(model(x), resized(x)) <= 1e-5


def test_class_token_shortcut_is_exact_for_the_distillation_head_and_off_for_map():
    x = torch.randn(2, 3, 32, 24)
    for case, shortcut in (("dist_ls_pre", True), ("reg", True), ("map_class_token", False), ("map", False)):
        model = model_for(**CASES[case])
        with torch.no_grad():
            assert model._class_token_shortcut() is shortcut, case
            with plain_path():
                full = model.forward_head(model.forward_features(x))
            assert rel_err(model(x), full) <= 1e-6, case
    dist = vitkit.create_model(ViTConfig(**TINY, dist_token=True, dist_head=True))
    plain = vitkit.create_model(ViTConfig(**TINY))
    # the shortcut computes the class and distillation tokens' outputs in the last block: 2 queries instead of 1
    assert vitkit.count_flops(dist.config, inference=True) < vitkit.count_flops(dist.config)
    assert vitkit.count_flops(dist.config, inference=True) > vitkit.count_flops(plain.config, inference=True)


def test_distillation_logits_are_the_mean_of_both_heads_and_reset_replaces_both():
    model = model_for(dist_token=True, dist_head=True)
    x = torch.randn(2, 3, 32, 24)
    with torch.no_grad():
        tokens = model.forward_features(x)
        expected = (model.head(tokens[:, 0]) + model.head_dist(tokens[:, 1])) / 2
        assert rel_err(model(x), expected) <= 1e-6
    model.reset_classifier(7)
    assert model.head.weight.shape == model.head_dist.weight.shape == (7, 48)
    assert not model.head.weight.any() and not model.head_dist.weight.any()
    assert model(x).shape == (2, 7) and model.config.num_classes == 7
    model.reset_classifier(0)
    with torch.no_grad():
        features = model.forward_features(x)
        assert rel_err(model(x), (features[:, 0] + features[:, 1]) / 2) <= 1e-6


def test_init_weights_of_the_options():
    torch.manual_seed(0)
    model = vitkit.create_model(ViTConfig(**TINY, num_reg_tokens=4, layer_scale=1e-4, pool="map", norm_pre=True))
    regs = model.reg_token[0]
    assert regs.any() and not torch.equal(regs[0], regs[1])  # identical registers would stay identical
    assert regs.abs().max() < 1e-4
    assert torch.equal(model.blocks[1].ls2.gamma, torch.full((48,), 1e-4))
    assert model.attn_pool.latent.std() > 0.05
    assert torch.equal(model.norm_pre.weight, torch.ones(48))
    dist = vitkit.create_model(ViTConfig(**TINY, dist_token=True, dist_head=True))
    assert dist.dist_token.any() and not dist.head_dist.weight.any()
    with torch.no_grad():
        model.blocks[0].ls1.gamma.fill_(3.0)
    model.init_weights()
    assert torch.equal(model.blocks[0].ls1.gamma, torch.full((48,), 1e-4))


def test_no_weight_decay_names_the_new_tokens():
    model = vitkit.create_model(ViTConfig(**TINY, dist_token=True, num_reg_tokens=2))
    assert {"cls_token", "dist_token", "reg_token", "pos_embed"} == model.no_weight_decay()


def test_patch_dropout_keeps_every_prefix_token():
    model = model_for(dist_token=True, num_reg_tokens=2, patch_dropout=0.5).train()
    eval_tokens = model.eval().embed(torch.zeros(1, 3, 32, 24))
    tokens = model.train().embed(torch.zeros(1, 3, 32, 24))
    assert tokens.shape == (1, 4 + 6, 48)
    torch.testing.assert_close(tokens[:, :4], eval_tokens[:, :4])


def test_attention_maps_skip_every_prefix_token():
    model = model_for(dist_token=True, dist_head=True, num_reg_tokens=2)
    x = torch.randn(2, 3, 32, 24)
    maps = class_token_attention(model, x)
    assert maps.shape == (2, 2, 3, 4, 3)  # (B, layers, heads, gh, gw)
    from vitkit.inspect import capture_attention

    with capture_attention(model) as captured, torch.no_grad():
        model(x)
    weights = captured[0][0]  # (B, heads, N, N)
    assert weights.shape == (2, 3, 4 + 12, 4 + 12)
    torch.testing.assert_close(torch.as_tensor(maps[:, 0]).flatten(2), weights[:, :, 0, 4:])
    assert attention_rollout(model, x).shape == (2, 4, 3)
    # without a class token the image's row is the mean of the patch tokens' rows, registers left out
    gap = model_for(num_reg_tokens=2, pool="gap", class_token=False)
    with capture_attention(gap) as captured, torch.no_grad():
        gap(x)
    expected = captured[1][0][:, :, 2:, 2:].mean(dim=2)
    torch.testing.assert_close(torch.as_tensor(class_token_attention(gap, x)[:, 1]).flatten(2), expected)


@pytest.mark.parametrize("options, message", [
    (dict(dist_head=True), "dist_head=True needs dist_token=True"),
    (dict(dist_token=True, pool="gap"), "dist_token=True needs class_token=True"),
    (dict(dist_token=True, dist_head=True, pool="gap", class_token=True), "dist_head=True reads"),
    (dict(dist_token=True, dist_head=True, norm_after_pool=True), "dist_head=True reads"),
    (dict(num_reg_tokens=-1), "num_reg_tokens=-1"),
    (dict(num_reg_tokens=True), "num_reg_tokens=True"),
    (dict(layer_scale=0.0), "layer_scale=0.0"),
    (dict(pool="attention"), "pool='attention', expected one of"),
])
def test_impossible_combinations_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        ViTConfig(**{**TINY, **options})


def test_later_options_are_named_and_the_config_round_trips():
    c = ViTConfig(**TINY, dist_token=True, dist_head=True, layer_scale=1e-5, norm_pre=True)
    assert later_options(c) == ["a distillation token and head", "a norm before the encoder (norm_pre)",
                                "LayerScale"]
    assert later_options(ViTConfig(**TINY)) == []
    assert ViTConfig.from_dict(c.to_dict()) == c


def test_vitkit_format_round_trip(tmp_path):
    model = model_for(**CASES["reg_ls_pre_map"])
    vitkit.save(model, tmp_path / "m.safetensors")
    again = vitkit.load(tmp_path / "m.safetensors")
    x = torch.randn(2, 3, 32, 24)
    with torch.no_grad():
        assert rel_err(again(x), model(x)) == 0.0


@pytest.mark.parametrize("case", [c for c in CASES if CASES[c].get("posemb") != "sincos_2d"])
def test_timm_state_dicts_with_the_options_load_exactly(tmp_path, case):
    """timm's own module (random non-zero weights) -> its state dict -> vitkit.load: the options are read from the
    tensors (registers, LayerScale, norm_pre, attn_pool, dist_token / head_dist); the rest is said by keyword."""
    config = ViTConfig(**{**TINY, **CASES[case]})
    ref = randomize_(timm_class(config)(**timm_kwargs(config)), seed=5).eval()
    path = tmp_path / "timm.pth"
    torch.save(ref.state_dict(), path)
    model = vitkit.load(path, num_heads=3, image_size=(32, 24), gelu=config.gelu,
                        layer_norm_eps=config.layer_norm_eps, pool=config.pool)
    for name in ("num_reg_tokens", "dist_token", "dist_head", "norm_pre", "pool", "norm_after_pool", "class_token"):
        assert getattr(model.config, name) == getattr(config, name), name
    assert (model.config.layer_scale is None) == (config.layer_scale is None)
    x = torch.randn(2, 3, 32, 24)
    with torch.no_grad():
        assert rel_err(model(x), ref(x)) <= 1e-5
