"""torchvision's ViT state dicts: every builder's architecture loads exactly (logits against torchvision's own model),
the head count is announced as a guess, what the format fixes is refused when contradicted, bad files name the key."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torchvision.models import VisionTransformer as TorchvisionViT
from torchvision.models.vision_transformer import ConvStemConfig

import vitkit
from vitkit import CheckpointError, GuessWarning
from vitkit.checkpoints.torchvision import torchvision_kwargs

from conftest import randomize_, rel_err

BUILDERS = ["vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14"]


def _builder_hyperparameters(name: str) -> dict:
    """The builder's real architecture, read from the model torchvision builds (on the meta device: no memory)."""
    with torch.device("meta"):
        model = getattr(torchvision.models, name)()
    return dict(patch_size=model.patch_size, num_layers=len(model.encoder.layers),
                num_heads=model.encoder.layers[0].num_heads, hidden_dim=model.hidden_dim, mlp_dim=model.mlp_dim)


def _logits_err(model, ref, size, seed=0):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return rel_err(model(x), ref(x))


def _reference(seed=1, **kwargs):
    args = dict(image_size=32, patch_size=8, num_layers=2, num_heads=12, hidden_dim=768, mlp_dim=96, num_classes=5)
    args.update(kwargs)
    return randomize_(TorchvisionViT(**args), seed=seed).eval()


def _classify(path, ref, size) -> str:
    """exact / refused (a CheckpointError naming the part) / silently different / crashed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GuessWarning)
            model = vitkit.load(path)
    except CheckpointError as e:
        return "refused" if "unsupported" in str(e) else "crashed"
    except Exception:  # noqa: BLE001 - anything else is a crash of the reader
        return "crashed"
    return "exact" if _logits_err(model, ref, size) <= 1e-5 else "silently different"


def test_the_five_builders_load_exactly(tmp_path):
    """The same check as timm's coverage: each builder's widths, heads and patch at depth 1 and two patches a side,
    saved as torch.save(model.state_dict()) (what a `vit_*(weights=...)` model gives), loaded and compared."""
    counts = {"exact": 0, "refused": 0, "silently different": 0, "crashed": 0}
    for i, name in enumerate(BUILDERS):
        hp = _builder_hyperparameters(name)
        assert hp["num_layers"] >= 12 and hp["hidden_dim"] in (768, 1024, 1280)
        size = 2 * hp["patch_size"]
        ref = _reference(seed=i, image_size=size, num_classes=10, **{**hp, "num_layers": 1})
        path = tmp_path / f"{name}.pth"
        torch.save(ref.state_dict(), path)
        outcome = _classify(path, ref, size)
        counts[outcome] += 1
        assert outcome == "exact", f"{name}: {outcome}"
        with pytest.warns(GuessWarning, match=rf"num_heads={hp['num_heads']} \(the variant table's for width "
                                              rf"{hp['hidden_dim']}\)"):
            model = vitkit.load(path)
        assert (model.config.num_heads, model.config.patch_size) == (hp["num_heads"], (hp["patch_size"],) * 2)
    assert counts == {"exact": 5, "refused": 0, "silently different": 0, "crashed": 0}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_representation_layer_and_file_types(tmp_path, suffix):
    ref = _reference(representation_size=24)
    path = tmp_path / f"tv{suffix}"
    tensors = {k: v.contiguous() for k, v in ref.state_dict().items()}
    torch.save(tensors, path) if suffix == ".pth" else save_file(tensors, path)
    model = vitkit.load(path, num_heads=12)
    assert model.config.representation_size == 24 and model.config.gelu == "exact"
    assert model.preprocessing.mean == (0.485, 0.456, 0.406)
    assert _logits_err(model, ref, 32) <= 1e-5
    # the paper's fine-tuning drops the representation layer with the head
    tuned = vitkit.load(path, num_heads=12, num_classes=3)
    assert tuned.config.representation_size is None and tuned.head.out_features == 3


def test_swag_resolutions(tmp_path):
    """The SWAG weights' grids: vit_h_14 at 518 px (37x37 patches of 14 px), vit_b_16 at 384 px (24x24); narrow
    widths keep the test fast, so the head count is given."""
    for size, patch in ((518, 14), (384, 16)):
        ref = _reference(image_size=size, patch_size=patch, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64)
        path = tmp_path / f"swag_{size}.pth"
        torch.save(ref.state_dict(), path)
        model = vitkit.load(path, num_heads=2)
        assert model.config.image_size == (size, size) and model.config.grid_size == (size // patch,) * 2
        assert _logits_err(model, ref, size) <= 1e-5


def test_round_trip_vitkit_torchvision_vitkit(tmp_path):
    model = randomize_(vitkit.create_model("ViT-B/16", image_size=32, patch_size=8, width=64, depth=2, num_heads=4,
                                           mlp_dim=128, num_classes=7, representation_size=16, gelu="exact"), seed=5)
    model.eval()
    path = vitkit.save(model, tmp_path / "model.pth", format="torchvision")
    ref = TorchvisionViT(**torchvision_kwargs(model.config))
    ref.load_state_dict(torch.load(path, weights_only=True), strict=True)
    ref.eval()
    assert _logits_err(model, ref, 32) <= 1e-5
    back = vitkit.load(path, num_heads=4)
    assert back.config.depth == 2 and back.config.representation_size == 16
    assert _logits_err(back, ref, 32) <= 1e-5
    # the safetensors flavour carries vitkit's metadata, so the head count is recorded, not guessed
    st = vitkit.save(model, tmp_path / "model.safetensors", format="torchvision")
    with warnings.catch_warnings():
        warnings.simplefilter("error", GuessWarning)
        again = vitkit.load(st)
    assert again.config.num_heads == 4 and _logits_err(again, ref, 32) <= 1e-5
    with pytest.raises(CheckpointError, match="records num_heads=4; num_heads=8 contradicts it"):
        vitkit.load(st, num_heads=8)
    gap = vitkit.create_model("ViT-Ti/16", image_size=32, patch_size=8, width=32, depth=1, num_heads=2, mlp_dim=64,
                              pool="gap")
    with pytest.raises(ValueError, match="cannot be expressed as a torchvision ViT"):
        vitkit.save(gap, tmp_path / "gap.pth", format="torchvision")


def test_published_files_mlp_names(tmp_path):
    """The published vit_*-*.pth files predate torchvision 0.13 and name the MLP `linear_1`/`linear_2`; torchvision
    still loads them, and so does vitkit."""
    ref = _reference()
    legacy = {k.replace("mlp.0.", "mlp.linear_1.").replace("mlp.3.", "mlp.linear_2."): v
              for k, v in ref.state_dict().items()}
    assert any("linear_1" in k for k in legacy)
    again = TorchvisionViT(image_size=32, patch_size=8, num_layers=2, num_heads=12, hidden_dim=768, mlp_dim=96,
                           num_classes=5)
    again.load_state_dict(legacy, strict=True)  # torchvision renames them itself
    path = tmp_path / "legacy.pth"
    torch.save(legacy, path)
    assert _logits_err(vitkit.load(path, num_heads=12), ref, 32) <= 1e-5


def test_head_count_outside_the_table_needs_num_heads(tmp_path):
    ref = _reference(hidden_dim=128, num_heads=4, mlp_dim=64)
    path = tmp_path / "w128.pth"
    torch.save(ref.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"does not record the number of attention heads.*num_heads="):
        vitkit.load(path)
    model = vitkit.load(path, num_heads=4)
    assert _logits_err(model, ref, 32) <= 1e-5
    wrong = vitkit.load(path, num_heads=2)  # a wrong head count is another function: the test can tell
    assert _logits_err(wrong, ref, 32) > 1e-3


def test_what_the_format_records_cannot_be_contradicted(tmp_path):
    path = tmp_path / "tv.pth"
    torch.save(_reference().state_dict(), path)
    for field, value in (("gelu", "tanh"), ("layer_norm_eps", 1e-5), ("pool", "gap"), ("image_size", (32, 48)),
                         ("posemb", "sincos_2d")):
        with pytest.raises(CheckpointError, match=f"records {field}="):
            vitkit.load(path, num_heads=12, **{field: value})


def test_bad_files_name_the_key(tmp_path):
    good = _reference().state_dict()

    def attempt(tensors, name):
        path = tmp_path / name
        torch.save(tensors, path)
        with pytest.raises(CheckpointError) as info:
            vitkit.load(path, num_heads=12)
        return info.value

    missing = {k: v for k, v in good.items() if k != "encoder.layers.encoder_layer_1.ln_2.bias"}
    e = attempt(missing, "missing.pth")
    assert e.key == "encoder.layers.encoder_layer_1.ln_2.bias" and "missing tensor" in str(e)
    e = attempt({**good, "heads.head.weight": torch.zeros(5, 700)}, "head.pth")
    assert e.key == "heads.head.weight" and "(5, 700)" in str(e)
    e = attempt({**good, "encoder.pos_embedding": torch.zeros(1, 20, 768)}, "grid.pth")
    assert e.key == "encoder.pos_embedding" and "square" in str(e)
    e = attempt({**good, "encoder.extra.weight": torch.zeros(3)}, "extra.pth")
    assert e.key == "encoder.extra.weight"
    e = attempt({k: v for k, v in good.items() if k != "class_token"}, "nocls.pth")
    assert e.key == "class_token"
    e = attempt({**good, "encoder.layers.encoder_layer_0.self_attention.in_proj_weight": torch.zeros(768, 768)},
                "qkv.pth")
    assert e.key == "encoder.layers.encoder_layer_0.self_attention.in_proj_weight"


def test_conv_stem_is_refused_by_name(tmp_path):
    ref = TorchvisionViT(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64,
                         conv_stem_configs=[ConvStemConfig(out_channels=16, kernel_size=3, stride=8)])
    path = tmp_path / "convstem.pth"
    torch.save(ref.state_dict(), path)
    with pytest.raises(CheckpointError, match="unsupported torchvision model: a convolutional stem") as info:
        vitkit.load(path, num_heads=2)
    assert info.value.key.startswith("conv_proj.conv_")


def test_every_tensor_of_a_wrong_rank_is_a_checkpoint_error(tmp_path):
    good = _reference(num_layers=1, hidden_dim=48, num_heads=3, representation_size=8).state_dict()
    path = tmp_path / "rank.pth"
    for key in good:
        for value in (torch.tensor(1.0), torch.zeros(2, 2, 2, 2, 2)):
            torch.save({**good, key: value}, path)
            with pytest.raises(CheckpointError) as info:
                vitkit.load(path, num_heads=3)
            assert info.value.key is not None, key


def test_convert_to_torchvision_on_the_command_line(tmp_path, capsys):
    from vitkit.cli import main

    model = randomize_(vitkit.create_model("ViT-Ti/16", image_size=16, patch_size=8, depth=1, num_classes=3), seed=2)
    vitkit.save(model, tmp_path / "m.safetensors")
    assert main(["convert", str(tmp_path / "m.safetensors"), str(tmp_path / "m.pth"), "--to", "torchvision"]) == 0
    assert "(torchvision)" in capsys.readouterr().out
    ref = TorchvisionViT(**torchvision_kwargs(model.config))
    ref.load_state_dict(torch.load(tmp_path / "m.pth", weights_only=True), strict=True)
    assert _logits_err(model.eval(), ref.eval(), 16) <= 1e-5
