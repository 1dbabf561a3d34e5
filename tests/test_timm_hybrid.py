"""timm's hybrid ViTs: its BiT backbone read into vitkit's stem and written back, checked against timm's own model."""

from __future__ import annotations

import re
from functools import partial

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from timm.layers import HybridEmbed, StdConv2dSame
from timm.models.resnetv2 import ResNetV2
from timm.models.vision_transformer import VisionTransformer as TimmViT
from timm.models.vision_transformer_hybrid import _resnetv2

from conftest import randomize_, rel_err
from vitkit.checkpoints.timm_hybrid import PREFIX, convert_numerics, read_timm_backbone, write_timm_backbone
from vitkit.configs import ResNetConfig, ViTConfig, variant_config
from vitkit.errors import CheckpointError
from vitkit.models.vit import VisionTransformer

# timm's hybrids on its BiT ResNetV2 (vitkit's stem) and the ones refused, with the words the refusal names.
BIT = re.compile(r"^vit_(tiny|small|base|large)_r\d*_s\d+(_p\d+)?_\d+$")
REFUSED = {
    "vit_small_resnet26d_224": "ResNet-D", "vit_base_resnet26d_224": "ResNet-D",
    "vit_small_resnet50d_s16_224": "ResNet-D", "vit_base_resnet50d_224": "ResNet-D",
    "vit_base_mci_224": "MobileCLIP",
}
HYBRIDS = timm.list_models(module="vision_transformer_hybrid")
IMAGE = 64  # a multiple of every hybrid's stride (32 at most)
# In float64 vitkit and timm agree to rounding (measured 2e-14 .. 7e-14 relative on the logits). In float32, rounding
# alone grows through up to 16 bottleneck units with random parameters: timm's own float32 logits are 7e-7 (root
# only) to 7e-5 (R50, 4 stages) from its float64 ones, and vitkit's float32 logits are as far (8e-7 .. 8e-5). So
# exactness is checked in float64, and float32 against timm's own float32 error (1e-5 where that is smaller).
F64 = 1e-10


def _close_in_float32(ours: torch.Tensor, theirs32: torch.Tensor, theirs64: torch.Tensor) -> bool:
    return rel_err(ours, theirs64) <= max(1e-5, 2 * rel_err(theirs32, theirs64))


def test_every_timm_hybrid_is_either_read_or_refused_by_name():
    """A hybrid timm adds later fails here until someone decides which it is."""
    assert {"vit_base_r50_s16_224", "vit_large_r50_s32_384", "vit_tiny_r_s16_p8_384"} <= set(HYBRIDS)
    assert sorted(n for n in HYBRIDS if not BIT.match(n)) == sorted(REFUSED)


def _timm_hybrid(name: str, seed: int = 0) -> TimmViT:
    model = timm.create_model(name, pretrained=False, depth=1, img_size=IMAGE, num_classes=5)
    return randomize_(model, seed=seed).eval()


def _vitkit_from_timm(sd: dict, timm_model: TimmViT, path="timm.safetensors") -> VisionTransformer:
    """The backbone through read_timm_backbone; the ViT part, whose names vitkit shares with timm, copied."""
    backbone = read_timm_backbone(sd, path)
    rest = {k: v for k, v in sd.items() if not k.startswith(PREFIX)}
    config = ViTConfig(
        image_size=IMAGE, patch_size=tuple(timm_model.patch_embed.patch_size), in_channels=backbone.in_channels,
        width=timm_model.embed_dim, depth=len(timm_model.blocks), num_heads=timm_model.blocks[0].attn.num_heads,
        mlp_dim=timm_model.blocks[0].mlp.fc1.out_features, num_classes=timm_model.num_classes, pool="token",
        gelu="exact", layer_norm_eps=1e-6, resnet=backbone.resnet,
    )
    model = VisionTransformer(config).eval()
    model.load_state_dict({**rest, **backbone.state_dict}, strict=True)
    return model


@pytest.mark.parametrize("name", [n for n in HYBRIDS if BIT.match(n)])
def test_timm_hybrid_reads_with_timm_logits(name, tmp_path, images):
    ref = _timm_hybrid(name)
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    sd = load_file(str(path))
    model = _vitkit_from_timm(sd, ref, path)
    stride = model.config.resnet.stride
    assert stride == ref.patch_embed.feature_ratio[0]
    assert model.config.resnet.out_channels == ref.patch_embed.proj.in_channels
    x = images(2, IMAGE)
    with torch.no_grad():
        ours32, theirs32 = model(x), ref(x)
        theirs64 = ref.double()(x.double())
        assert _close_in_float32(ours32, theirs32, theirs64)
        assert rel_err(model.double()(x.double()), theirs64) <= F64
    model.float()

    # and back: the written state dict loads strictly into timm's model and gives its logits
    out = {k: v for k, v in model.state_dict().items() if not k.startswith("stem.")}
    out.update(write_timm_backbone(model))
    assert all(v.dtype == torch.float32 for v in out.values())
    again = timm.create_model(name, pretrained=False, depth=1, img_size=IMAGE, num_classes=5).eval()
    again.load_state_dict(out, strict=True)
    with torch.no_grad():
        assert rel_err(again.double()(x.double()), ref(x.double())) <= F64


def test_stages_units_and_root_width_read_from_the_file():
    ref = _timm_hybrid("vit_small_r26_s32_224")
    backbone = read_timm_backbone(ref.state_dict(), "f.pth")
    assert backbone.resnet == ResNetConfig(num_layers=(2, 2, 2, 2), width_factor=1.0, weight_std="timm",
                                           group_norm_eps=1e-5)
    assert (backbone.stride, backbone.out_channels, backbone.in_channels) == (32, 2048, 3)
    tiny = read_timm_backbone(_timm_hybrid("vit_tiny_r_s16_p8_224").state_dict(), "f.pth")
    assert tiny.resnet.num_layers == () and tiny.stride == 4 and tiny.out_channels == 64
    assert tiny.sources["stem.gn_root.weight"] == "patch_embed.backbone.norm.weight"


def _vitkit_hybrid(stages, weight_std="jax", group_norm_eps=1e-6, width_factor=0.5, in_channels=3, seed=1):
    config = variant_config(
        "R50+ViT-B/16", depth=1, width=64, num_heads=2, mlp_dim=96, num_classes=4, image_size=IMAGE,
        in_channels=in_channels, resnet=ResNetConfig(num_layers=stages, width_factor=width_factor,
                                                     weight_std=weight_std, group_norm_eps=group_norm_eps),
    )
    return randomize_(VisionTransformer(config), seed=seed).eval()


def _timm_for(model: VisionTransformer) -> TimmViT:
    """timm's hybrid with the vitkit model's shape: its own ResNetV2 helper, narrowed when width_factor < 1."""
    c = model.config
    r = c.resnet
    if r.width_factor == 1.0:
        backbone = _resnetv2(layers=r.num_layers, in_chans=c.in_channels)
    else:
        assert r.num_layers, "timm's root-only helper has a fixed width"
        backbone = ResNetV2(
            layers=r.num_layers, channels=tuple(r.width * 4 * 2**i for i in range(4)), stem_chs=r.width,
            num_classes=0, global_pool="", in_chans=c.in_channels, preact=False, stem_type="same",
            conv_layer=partial(StdConv2dSame, eps=1e-8),
        )
    return TimmViT(
        img_size=c.image_size, patch_size=c.patch_size, in_chans=c.in_channels, num_classes=c.num_classes,
        embed_dim=c.width, depth=c.depth, num_heads=c.num_heads, mlp_ratio=c.mlp_dim / c.width,
        embed_layer=partial(HybridEmbed, backbone=backbone),
    ).eval()


@pytest.mark.parametrize("stages", [(2, 1), (1, 1, 1, 1)])
def test_narrow_vitkit_hybrid_with_timm_numerics_writes_and_reads_exactly(stages, images):
    model = _vitkit_hybrid(stages, weight_std="timm", group_norm_eps=1e-5, in_channels=4)
    out = {k: v for k, v in model.state_dict().items() if not k.startswith("stem.")}
    out.update(write_timm_backbone(model))
    ref = _timm_for(model)
    ref.load_state_dict(out, strict=True)
    x = images(2, IMAGE, c=4)
    with torch.no_grad():
        assert rel_err(model(x), ref(x)) <= 1e-5
    back = read_timm_backbone(out, "w.pth")
    assert back.resnet == model.config.resnet and back.in_channels == 4
    for key, value in model.state_dict().items():
        if key.startswith("stem."):
            assert torch.equal(back.state_dict[key], value), key


@pytest.mark.parametrize("stages", [(3, 4, 9), ()])
def test_jax_numerics_are_refused_unless_adapted_then_timm_computes_the_same(stages, images):
    """The paper's numerics differ from timm's (1e-3 relative on the R50's logits here); adapting rescales the
    tensors so timm computes the same function, but for the root GroupNorm's epsilon."""
    model = _vitkit_hybrid(stages, width_factor=1.0)
    with pytest.raises(ValueError, match="adapt_numerics=True"):
        write_timm_backbone(model)
    x = images(2, IMAGE)
    ref = _timm_for(model)
    with torch.no_grad():
        # float32, as saved: as close as vitkit's own float32 logits are to its float64 ones
        vit_part = {k: v for k, v in model.state_dict().items() if not k.startswith("stem.")}
        ref.load_state_dict({**vit_part, **write_timm_backbone(model, adapt_numerics=True)}, strict=True)
        ours32, theirs32 = model(x), ref(x)
        model64, ref64, x64 = model.double(), ref.double(), x.double()
        ours64 = model64(x64)
        assert _close_in_float32(theirs32, ours32, ours64)
        # float64: the conversion is exact, but for the root GroupNorm's epsilon (1e-6 -> 1e-5)
        out = {k: v for k, v in model64.state_dict().items() if not k.startswith("stem.")}
        out.update(write_timm_backbone(model64, adapt_numerics=True))
        ref64.load_state_dict(out, strict=True)
        assert rel_err(ref64(x64), ours64) <= 1e-6
        model64.stem.gn_root.eps = 1e-5
        assert rel_err(ref64(x64), model64(x64)) <= F64
        model64.stem.gn_root.eps = 1e-6
        # the tensors copied as they are compute another function in timm: the checks above can fail
        copied = write_timm_backbone(_with_resnet(model64, weight_std="timm", group_norm_eps=1e-5))
        ref64.load_state_dict({**out, **copied}, strict=True)
        assert rel_err(ref64(x64), ours64) > (1e-4 if stages else 1e-6)


def _with_resnet(model, **changes):
    import dataclasses

    config = model.config.replace(resnet=dataclasses.replace(model.config.resnet, **changes))
    other = VisionTransformer(config).eval()
    other.load_state_dict(model.state_dict())
    return other


def test_numerics_round_trip_keeps_the_function(images):
    model = _vitkit_hybrid((1, 2))
    r = model.config.resnet
    there = convert_numerics(model.state_dict(), r, "timm", 1e-5)
    back = convert_numerics(there, ResNetConfig(r.num_layers, r.width_factor, "timm", 1e-5), "jax", 1e-6)
    timm_numerics = _with_resnet(model, weight_std="timm", group_norm_eps=1e-5)
    timm_numerics.load_state_dict(there)
    restored = _with_resnet(model)
    restored.load_state_dict(back)
    x = images(2, IMAGE)
    with torch.no_grad():
        assert rel_err(timm_numerics(x), model(x)) <= 1e-5
        assert rel_err(restored(x), model(x)) <= 1e-5


# ------------------------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("name", sorted(REFUSED))
def test_other_timm_hybrids_are_refused_by_name(name):
    model = timm.create_model(name, pretrained=False, depth=1, img_size=IMAGE, num_classes=5)
    with pytest.raises(CheckpointError, match=f"unsupported timm hybrid: .*{REFUSED[name]}") as e:
        read_timm_backbone(model.state_dict(), "other.pth")
    assert "other.pth" in str(e.value) and PREFIX in str(e.value)


def test_preact_and_deep_stems_are_refused_by_name():
    for kwargs, words in ((dict(preact=True), "pre-activation"), (dict(preact=False, stem_type="deep"), "deep")):
        net = ResNetV2(layers=(1,), channels=(256,), num_classes=0, global_pool="", **kwargs)
        sd = {PREFIX + k: v for k, v in net.state_dict().items()}
        with pytest.raises(CheckpointError, match=words):
            read_timm_backbone(sd, "p.pth")


@pytest.fixture(scope="module")
def r26_state_dict():
    return _timm_hybrid("vit_small_r26_s32_224").state_dict()


def test_missing_key_is_named(r26_state_dict):
    for key in ("patch_embed.backbone.stages.1.blocks.0.downsample.norm.bias",
                "patch_embed.backbone.stages.3.blocks.1.conv2.weight", "patch_embed.backbone.stem.norm.weight"):
        sd = {k: v for k, v in r26_state_dict.items() if k != key}
        with pytest.raises(CheckpointError, match="missing tensor") as e:
            read_timm_backbone(sd, "m.pth")
        assert e.value.key == key and "m.pth" in str(e.value)


def test_unexpected_key_is_named(r26_state_dict):
    for key in ("patch_embed.backbone.stages.1.blocks.1.downsample.conv.weight", "patch_embed.backbone.norm.weight",
                "patch_embed.backbone.stem.conv.bias", "patch_embed.backbone.stages.0.blocks.5.conv1.weight"):
        sd = dict(r26_state_dict, **{key: torch.ones(8)})
        with pytest.raises(CheckpointError) as e:
            read_timm_backbone(sd, "u.pth")
        assert e.value.key == key
    sd = dict(r26_state_dict, **{"patch_embed.backbone.stages.4.blocks.0.conv1.weight": torch.ones(1, 1, 1, 1)})
    with pytest.raises(CheckpointError, match="at most 4"):
        read_timm_backbone(sd, "u.pth")


def test_wrong_shapes_are_named_with_both_shapes(r26_state_dict):
    key = "patch_embed.backbone.stages.2.blocks.1.conv3.weight"
    sd = dict(r26_state_dict, **{key: torch.ones(1024, 256, 3, 3)})
    with pytest.raises(CheckpointError, match=r"expected shape \(1024, 256, 1, 1\), found \(1024, 256, 3, 3\)") as e:
        read_timm_backbone(sd, "s.pth")
    assert key in str(e.value)
    sd = dict(r26_state_dict, **{"patch_embed.proj.weight": torch.ones(384, 1024, 1, 1)})
    with pytest.raises(CheckpointError, match="2048") as e:
        read_timm_backbone(sd, "s.pth")
    assert "patch_embed.proj.weight" in str(e.value)
    sd = dict(r26_state_dict, **{"patch_embed.backbone.stem.conv.weight": torch.ones(48, 3, 7, 7)})
    with pytest.raises(CheckpointError, match="root width 48"):
        read_timm_backbone(sd, "s.pth")


def test_not_a_hybrid_and_unknown_layouts():
    with pytest.raises(CheckpointError, match="no hybrid backbone"):
        read_timm_backbone({"patch_embed.proj.weight": torch.ones(8, 3, 4, 4)}, "n.pth")
    with pytest.raises(CheckpointError, match="unknown hybrid backbone layout"):
        read_timm_backbone({PREFIX + "body.conv.weight": torch.ones(8, 3, 4, 4)}, "n.pth")
    with pytest.raises(ValueError, match="not a hybrid"):
        write_timm_backbone(randomize_(VisionTransformer(variant_config("ViT-Ti/16", depth=1, image_size=32))))


@pytest.mark.parametrize("stages,width_factor", [((2, 1), 0.5), ((), 1.0)])
def test_save_format_timm_writes_hybrids_that_timm_loads(tmp_path, images, stages, width_factor):
    """vitkit.save(format="timm") of a hybrid with the original code's numerics: announced, rescaled for timm's,
    loaded strictly by timm's VisionTransformer with the arguments timm_kwargs gives, and read back by vitkit."""
    import warnings

    import vitkit
    from vitkit.checkpoints.timm import timm_class, timm_kwargs

    model = _vitkit_hybrid(stages, width_factor=width_factor)
    with pytest.warns(UserWarning, match="rescaled so that timm computes the same function"):
        vitkit.save(model, tmp_path / "h.safetensors", format="timm")
    ref = timm_class(model.config)(**timm_kwargs(model.config)).eval()
    ref.load_state_dict(load_file(tmp_path / "h.safetensors"), strict=True)
    x = images(2, IMAGE)
    with torch.no_grad():
        ours64 = model.double()(x.double())
        assert rel_err(ref.double()(x.double()), ours64) <= 1e-6  # the root GroupNorm's epsilon, as announced
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a vitkit-written timm file records what a bare one would not
            back = vitkit.load(tmp_path / "h.safetensors")
        assert back.config.resnet.weight_std == "timm"
        assert rel_err(back.double()(x.double()), ours64) <= 1e-6
