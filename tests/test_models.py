"""The model itself: variants and parameter counts, options of the paper's appendix, resolution handling."""

from __future__ import annotations

import math

import pytest
import torch

import vitkit
from vitkit.configs import ViTConfig, variant_config

from conftest import randomize_, rel_err

# The original implementation's parameter counts at 224 px and 1,000 classes (vit_jax configs, no
# representation layer). ViT-B/16 and R50+ViT-B/16 as the issue quotes them; the plain ViTs also equal timm's.
ORIGINAL_PARAMS = {
    "ViT-Ti/16": 5_717_416,
    "ViT-S/16": 22_050_664,
    "ViT-S/32": 22_878_952,
    "ViT-B/8": 86_576_872,
    "ViT-B/16": 86_567_656,
    "ViT-B/32": 88_224_232,
    "ViT-L/16": 304_326_632,
    "ViT-L/32": 306_535_400,
    "ViT-H/14": 632_045_800,
    "R+ViT-Ti/16": 6_337_704,
    "R26+ViT-S/32": 36_431_912,
    "R26+ViT-B/32": 101_383_976,
    "R50+ViT-B/16": 98_659_112,
    "R50+ViT-L/32": 328_994_856,
}


def test_list_models_is_the_papers_set():
    assert vitkit.list_models() == list(ORIGINAL_PARAMS)


@pytest.mark.parametrize("name", list(ORIGINAL_PARAMS))
def test_parameter_counts_equal_the_original(name):
    with torch.device("meta"):
        model = vitkit.create_model(name)
    assert vitkit.count_parameters(model) == ORIGINAL_PARAMS[name]


def _vit_flops(width, depth, mlp, tokens, patch_in, classes=1000):
    """Hand count: 2 FLOPs per multiply-add over every matrix product of the forward."""
    per_block = tokens * width * 3 * width + 2 * tokens * tokens * width + tokens * width * width \
        + 2 * tokens * width * mlp
    patches = tokens - 1
    return 2 * (depth * per_block + patches * patch_in * width + width * classes)


def test_flop_count_matches_hand_count():
    assert vitkit.count_flops(variant_config("ViT-B/16")) == _vit_flops(768, 12, 3072, 197, 3 * 16 * 16)
    assert vitkit.count_flops(variant_config("ViT-S/32")) == _vit_flops(384, 12, 1536, 50, 3 * 32 * 32)


def test_inference_flop_count_leaves_out_the_last_blocks_patch_tokens():
    """At inference the last block computes the class token's output alone: the attention output projection, the
    MLP and the attention products of the other N - 1 queries are skipped (pooling by mean keeps them)."""
    n, d, mlp = 197, 768, 3072
    skipped = (n - 1) * (2 * d * d + 2 * 2 * d * mlp) + (n - 1) * 2 * (2 * n * d)
    config = variant_config("ViT-B/16")
    assert vitkit.count_flops(config) - vitkit.count_flops(config, inference=True) == skipped
    gap = variant_config("ViT-B/16", pool="gap")
    assert vitkit.count_flops(gap, inference=True) == vitkit.count_flops(gap)


def test_variant_names_and_overrides():
    c = variant_config("ViT-B_16", num_classes=10, image_size=384)  # the original file naming works too
    assert (c.width, c.depth, c.num_heads, c.mlp_dim, c.patch_size) == (768, 12, 12, 3072, (16, 16))
    assert c.grid_size == (24, 24) and c.num_classes == 10
    assert variant_config("ViT-S/8").patch_size == (8, 8)  # any size/patch pair decodes
    assert variant_config("R50+ViT-B/16").resnet.num_layers == (3, 4, 9)
    with pytest.raises(ValueError, match="unknown model 'ViT-X/16'"):
        variant_config("ViT-X/16")


TINY = dict(num_classes=5, image_size=32, patch_size=8, width=32, depth=2, num_heads=2, mlp_dim=64)


@pytest.mark.parametrize("options", [
    dict(pool="token"), dict(pool="gap"), dict(pool="gap", class_token=True), dict(pool="gap", norm_after_pool=True),
    dict(posemb="learned_2d"), dict(posemb="sincos_2d"), dict(posemb="none"), dict(representation_size=16),
    dict(gelu="tanh"), dict(posemb_prefix=False), dict(qkv_bias=False),
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_options_forward_and_features(options):
    model = randomize_(vitkit.create_model("ViT-Ti/16", **TINY, **options)).eval()
    x = torch.randn(2, 3, 32, 32)
    tokens = model.forward_features(x)
    assert tokens.shape == (2, 16 + model.num_prefix_tokens, 32)
    features = model.forward_head(tokens, pre_logits=True)
    assert features.shape == (2, options.get("representation_size", 32))
    logits = model(x)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()


def test_gap_pools_patch_tokens_only():
    model = randomize_(vitkit.create_model("ViT-Ti/16", **TINY, pool="gap", class_token=True)).eval()
    x = torch.randn(2, 3, 32, 32)
    tokens = model.forward_features(x)
    expected = model.head(tokens[:, 1:].mean(1))
    assert torch.allclose(model(x), expected, atol=1e-6)


def test_learned_2d_is_row_plus_column():
    model = vitkit.create_model("ViT-Ti/16", **TINY, posemb="learned_2d")
    table = model.position_embeddings().reshape(4, 4, 32)
    assert torch.equal(table[2, 3, :16], model.pos_embed_row[2]) and torch.equal(table[2, 3, 16:], model.pos_embed_col[3])
    assert "pos_embed_row" in model.no_weight_decay()


def test_sincos_is_fixed_and_not_saved():
    model = vitkit.create_model("ViT-Ti/16", **TINY, posemb="sincos_2d")
    assert not any("pos_embed" in k for k in model.state_dict())
    table = model.position_embeddings()[0]
    assert table.shape == (16, 32)
    assert torch.allclose(table[:, :8] ** 2 + table[:, 8:16] ** 2, torch.ones(16, 8))  # sin^2 + cos^2 of x


def test_original_initialisation():
    model = vitkit.create_model("ViT-B/16", num_classes=10, depth=2)
    assert torch.count_nonzero(model.head.weight) == 0 and torch.count_nonzero(model.head.bias) == 0
    assert abs(model.pos_embed.std().item() - 0.02) < 0.002
    assert torch.count_nonzero(model.cls_token) == 0
    fc1 = model.blocks[0].mlp.fc1
    assert 0 < fc1.bias.abs().max().item() < 1e-5  # N(0, 1e-6)
    bound = math.sqrt(6 / (768 + 3072))
    assert fc1.weight.abs().max().item() <= bound and fc1.weight.abs().max().item() > 0.9 * bound
    qkv = model.blocks[0].attn.qkv.weight
    assert qkv.abs().max().item() <= math.sqrt(6 / (768 + 768))


def test_stochastic_depth_and_dropout_only_in_training():
    model = randomize_(vitkit.create_model("ViT-Ti/16", **TINY, drop_path=0.5, dropout=0.2))
    x = torch.randn(4, 3, 32, 32)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))
    assert [b.drop_path.rate for b in model.blocks] == [0.0, 0.5]


@pytest.mark.parametrize("pool", ["token", "gap"])
def test_patch_dropout_keeps_a_random_subset_of_the_embedded_patches_in_training_only(pool):
    options = {**TINY, "patch_size": 4, "pool": pool}  # 64 patches, 48 of them kept
    model = randomize_(vitkit.create_model("ViT-Ti/16", **options, patch_dropout=0.25))
    prefix = model.num_prefix_tokens
    x = torch.randn(3, 3, 32, 32)
    full = model.eval().embed(x)
    assert full.shape == (3, prefix + 64, 32)
    torch.manual_seed(0)
    dropped = model.train().embed(x)
    assert dropped.shape == (3, prefix + 48, 32)
    assert torch.equal(dropped[:, :prefix], full[:, :prefix])  # the class token always stays
    kept = []
    for i in range(3):
        rows = {tuple(r.tolist()): j for j, r in enumerate(full[i, prefix:])}
        indices = [rows.get(tuple(r.tolist())) for r in dropped[i, prefix:]]
        assert None not in indices and len(set(indices)) == 48  # distinct patches, each with its position embedding
        kept.append(frozenset(indices))
    assert len(set(kept)) == 3  # a different subset for each image
    model(x).sum().backward()  # trains through the gather
    assert model.patch_embed.proj.weight.grad.abs().sum() > 0
    # evaluation sees every patch: the same function as the model without patch dropout
    plain = vitkit.create_model("ViT-Ti/16", **options).eval()
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(model.eval()(x), plain(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="patch_dropout"):
        vitkit.create_model("ViT-Ti/16", **options, patch_dropout=1.0)


def test_wrong_input_size_names_both_sizes():
    model = vitkit.create_model("ViT-Ti/16", **TINY)
    with pytest.raises(ValueError, match=r"\(48, 32\).*\(32, 32\)"):
        model(torch.randn(1, 3, 48, 32))


def test_dynamic_image_size_resamples_on_the_fly():
    model = randomize_(vitkit.create_model("ViT-Ti/16", **TINY, dynamic_image_size=True)).eval()
    x = torch.randn(2, 3, 48, 64)  # non-square, 6x8 grid
    assert model(x).shape == (2, 5)
    with pytest.raises(ValueError, match="multiple of the effective patch size"):
        model(torch.randn(1, 3, 36, 32))
    # at the native size nothing is resampled
    fixed = vitkit.create_model("ViT-Ti/16", **TINY)
    fixed.load_state_dict(model.state_dict())
    y = torch.randn(2, 3, 32, 32)
    assert torch.equal(fixed.eval()(y), model(y))
    # on the fly equals resampling in place first
    fixed.set_image_size((48, 64))
    assert torch.allclose(fixed(x), model(x), atol=1e-6)


def test_set_image_size_non_square_and_back():
    model = randomize_(vitkit.create_model("ViT-Ti/16", **TINY)).eval()
    model.set_image_size((32, 64), method="bilinear")
    assert model.grid_size == (4, 8) and model.pos_embed.shape == (1, 1 + 32, 32)
    assert model(torch.randn(1, 3, 32, 64)).shape == (1, 5)
    assert model.preprocessing.image_size == (32, 64)
    with pytest.raises(ValueError, match="multiple of the effective patch size"):
        model.set_image_size((30, 64))


def test_resample_pos_embed_shapes_and_identity():
    pos = torch.randn(1, 1 + 6 * 4, 8)
    out = vitkit.resample_pos_embed(pos, (3, 5), num_prefix_tokens=1, old_grid=(6, 4))
    assert out.shape == (1, 1 + 15, 8) and torch.equal(out[:, :1], pos[:, :1])
    assert torch.equal(vitkit.resample_pos_embed(pos, (6, 4), 1, old_grid=(6, 4)), pos)
    with pytest.raises(ValueError, match="not a square"):
        vitkit.resample_pos_embed(pos, (3, 3), 1)
    # bilinear (align_corners) keeps the corner embeddings exactly
    grid = vitkit.resample_pos_embed(pos, (11, 7), 1, old_grid=(6, 4), method="bilinear")[0, 1:].reshape(11, 7, 8)
    src = pos[0, 1:].reshape(6, 4, 8)
    assert torch.allclose(grid[0, 0], src[0, 0]) and torch.allclose(grid[-1, -1], src[-1, -1])


def test_hybrid_forward_and_grid():
    model = randomize_(vitkit.create_model("R26+ViT-S/32", num_classes=3, image_size=64, depth=1)).eval()
    assert model.grid_size == (2, 2)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_finetune_adaptation_of_vit_b16(tmp_path):
    """The paper's fine-tuning: a ViT-B/16 file loaded at 384 px for 10 classes."""
    model = vitkit.create_model("ViT-B/16")
    torch.nn.init.normal_(model.head.weight)
    vitkit.save(model, tmp_path / "b16.safetensors")
    tuned = vitkit.load(tmp_path / "b16.safetensors", resample_to=384, num_classes=10)
    assert tuned.head.weight.shape == (10, 768) and torch.count_nonzero(tuned.head.weight) == 0
    assert torch.count_nonzero(tuned.head.bias) == 0
    assert tuned.grid_size == (24, 24) and tuned.pos_embed.shape == (1, 1 + 24 * 24, 768)
    assert torch.equal(tuned.pos_embed[:, 0], model.pos_embed[:, 0])  # class-token slot kept
    with torch.no_grad():
        assert tuned(torch.randn(1, 3, 384, 384)).shape == (1, 10)


def test_finetune_drops_representation_layer(jax_fixtures):
    model = vitkit.load(jax_fixtures / "vit_gap_rep.npz", num_classes=3)
    assert model.config.representation_size is None and isinstance(model.pre_logits, torch.nn.Identity)
    assert model.head.weight.shape == (3, 64)


def test_config_validation_messages():
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        ViTConfig(width=30, num_heads=4)
    with pytest.raises(ValueError, match="pool='token' needs class_token"):
        ViTConfig(pool="token", class_token=False)
    with pytest.raises(ValueError, match="multiple of the effective patch size"):
        ViTConfig(image_size=100, patch_size=16)


def test_bicubic_resample_matches_timm():
    timm_pos = pytest.importorskip("timm.layers").resample_abs_pos_embed
    pos = torch.randn(1, 1 + 49, 16)
    ours = vitkit.resample_pos_embed(pos, (10, 12), num_prefix_tokens=1, method="bicubic")
    theirs = timm_pos(pos, new_size=(10, 12), num_prefix_tokens=1, interpolation="bicubic", antialias=False)
    assert rel_err(ours, theirs) <= 1e-6
