"""Training checkpoints as training scripts write them, around a timm ViT's weights: the weights and their moving
average in one file (ambiguous unless `ema` says which), DDP / torch.compile / Lightning prefixes, torch's
AveragedModel, timm's `.pth.tar` with its `argparse.Namespace` of arguments. Each loads exactly or is refused."""

from __future__ import annotations

import argparse
import warnings

import pytest
import torch

import vitkit
from vitkit.cli import main
from vitkit.errors import CheckpointError, GuessWarning

from conftest import randomize_, rel_err

timm = pytest.importorskip("timm")

SAYS = dict(num_heads=4, pool="token", gelu="exact", layer_norm_eps=1e-6, image_size=32)  # what the files leave open
FLAGS = ["--num-heads", "4", "--pool", "token", "--gelu", "exact", "--layer-norm-eps", "1e-6", "--image-size", "32"]


def timm_vit(seed: int):
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, embed_dim=64, num_heads=4,
                              num_classes=5)
    return randomize_(model, seed=seed).eval()


@pytest.fixture(scope="module")
def models():
    return timm_vit(1), timm_vit(2), torch.randn(2, 3, 32, 32)


def test_weights_and_their_average_in_one_file_need_a_choice(tmp_path, models):
    live, ema, x = models
    path = tmp_path / "checkpoint-3.pth.tar"  # timm's train.py: .pth.tar, its arguments as a Namespace
    torch.save({"epoch": 3, "arch": "vit_tiny", "state_dict": live.state_dict(), "state_dict_ema": ema.state_dict(),
                "args": argparse.Namespace(lr=0.1, model="vit_tiny")}, path)
    with pytest.raises(CheckpointError, match=r"several sets of weights \('state_dict', 'state_dict_ema'\); choose"):
        vitkit.load(path, **SAYS)
    assert rel_err(vitkit.load(path, ema=False, **SAYS)(x), live(x)) < 1e-5
    assert rel_err(vitkit.load(path, ema=True, **SAYS)(x), ema(x)) < 1e-5


def test_the_command_line_chooses_with_ema_flags(tmp_path, models, capsys):
    live, ema, _ = models
    path = tmp_path / "deit.pth"
    torch.save({"model": live.state_dict(), "model_ema": ema.state_dict(), "epoch": 9}, path)
    assert main(["convert", str(path), "-o", str(tmp_path / "x.safetensors"), *FLAGS]) == 2
    assert "--no-ema" in capsys.readouterr().err and not (tmp_path / "x.safetensors").exists()
    for flag, source in (("--ema", ema), ("--no-ema", live)):
        out = tmp_path / f"{flag}.safetensors"
        assert main(["convert", str(path), "-o", str(out), flag, *FLAGS]) == 0
        converted = vitkit.load(out)
        x = torch.randn(1, 3, 32, 32)
        assert rel_err(converted(x), source(x)) < 1e-5


def test_only_an_average_or_only_weights_refuses_the_other(tmp_path, models):
    live, _, _ = models
    torch.save({"model": live.state_dict()}, tmp_path / "model.pth")
    with pytest.raises(CheckpointError, match="asks for the moving average, but the file holds only 'model'"):
        vitkit.load(tmp_path / "model.pth", ema=True, **SAYS)
    torch.save(live.state_dict(), tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match="holds one set of weights and no moving average"):
        vitkit.load(tmp_path / "bare.pth", ema=True, **SAYS)
    vitkit.save(vitkit.load(tmp_path / "bare.pth", **SAYS), tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="this file holds one set of weights"):
        vitkit.load(tmp_path / "m.safetensors", ema=True)


def test_torch_averaged_model_loads_without_its_step_count(tmp_path, models):
    live, _, x = models
    average = torch.optim.swa_utils.AveragedModel(live)  # torchvision's reference scripts keep this as model_ema
    torch.save({"model": timm_vit(3).state_dict(), "model_ema": average.state_dict()}, tmp_path / "tv.pth")
    assert "n_averaged" in average.state_dict()
    assert rel_err(vitkit.load(tmp_path / "tv.pth", ema=True, **SAYS)(x), live(x)) < 1e-5


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_ddp_and_compile_prefixes_are_unwrapped(tmp_path, models, prefix):
    live, _, x = models
    torch.save({"model": {prefix + k: v for k, v in live.state_dict().items()}}, tmp_path / "w.pth")
    assert rel_err(vitkit.load(tmp_path / "w.pth", **SAYS)(x), live(x)) < 1e-5


def test_a_lightning_prefix_is_announced_and_removed(tmp_path, models):
    live, _, x = models
    torch.save({"state_dict": {"model._orig_mod." + k: v for k, v in live.state_dict().items()}, "epoch": 1},
               tmp_path / "last.ckpt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = vitkit.load(tmp_path / "last.ckpt", **SAYS)
    assert rel_err(model(x), live(x)) < 1e-5
    assert any(issubclass(w.category, GuessWarning) and "every key starts with 'model.'" in str(w.message)
               for w in caught)
    mixed = {"model." + k: v for k, v in live.state_dict().items()} | {"loss.weight": torch.ones(5)}
    torch.save(mixed, tmp_path / "mixed.ckpt")  # two prefixes: no guess
    with pytest.raises(CheckpointError, match="unknown layout"):
        vitkit.load(tmp_path / "mixed.ckpt", **SAYS)


def test_convert_never_writes_a_guess_as_a_fact_and_every_guess_has_a_flag(tmp_path, capsys):
    source = randomize_(timm.create_model("vit_tiny_patch16_224", img_size=(32, 48), patch_size=8, depth=1,
                                          embed_dim=64, num_heads=4, num_classes=5), seed=4).eval()
    torch.save(source.state_dict(), tmp_path / "rect.pth")
    out = tmp_path / "rect.safetensors"
    assert main(["convert", str(tmp_path / "rect.pth"), "-o", str(out), "--num-heads", "4"]) == 2
    err = capsys.readouterr().err
    assert "would record these as facts" in err and "--image-size 40 --pool token --gelu exact" in err
    assert not out.exists()
    flags = ["--num-heads", "4", "--image-size", "32x48", "--pool", "token", "--gelu", "exact",
             "--layer-norm-eps", "1e-6"]
    assert main(["convert", str(tmp_path / "rect.pth"), "-o", str(out), *flags]) == 0
    x = torch.randn(2, 3, 32, 48)
    assert rel_err(vitkit.load(out)(x), source(x)) < 1e-5
    # predict announces the same guesses in its own flags
    from PIL import Image

    Image.new("RGB", (48, 32), (200, 10, 10)).save(tmp_path / "red.png")
    assert main(["predict", str(tmp_path / "rect.pth"), str(tmp_path / "red.png"), "--num-heads", "4",
                 "--image-size", "32x48"]) == 0
    assert "to say them, give (correcting what is wrong): --pool token --gelu exact --layer-norm-eps 1e-06" in \
        capsys.readouterr().err


def test_load_hints_are_refused_for_a_model_already_built(models):
    live, _, _ = models
    model = vitkit.create_model("ViT-Ti/16", image_size=32, patch_size=8, depth=1, width=64, num_heads=4,
                                num_classes=5)
    with pytest.raises(vitkit.errors.UsageError, match="num_heads say what a checkpoint file leaves open"):
        vitkit.predict(model, [], num_heads=4)
    with pytest.raises(TypeError, match="unexpected argument"):
        vitkit.predict(model, [], heads=4)


def test_position_embeddings_resample_as_timm_does(tmp_path, models):
    """timm resamples with antialiased bicubic, for another input size and when loading at a new size."""
    live, _, _ = models
    dynamic = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, embed_dim=64, num_heads=4,
                                num_classes=5, dynamic_img_size=True).eval()
    dynamic.load_state_dict(live.state_dict())
    torch.save(live.state_dict(), tmp_path / "w.pth")
    x = torch.randn(2, 3, 64, 48)
    model = vitkit.load(tmp_path / "w.pth", dynamic_image_size=True, **SAYS)
    assert rel_err(model(x), dynamic(x)) < 1e-5
    vitkit.save(model, tmp_path / "w.safetensors")  # the way to resample travels with vitkit's own file
    assert rel_err(vitkit.load(tmp_path / "w.safetensors", dynamic_image_size=True)(x), dynamic(x)) < 1e-5
    from timm.models.vision_transformer import checkpoint_filter_fn

    larger = timm.create_model("vit_tiny_patch16_224", img_size=64, patch_size=8, depth=1, embed_dim=64, num_heads=4,
                               num_classes=5).eval()
    larger.load_state_dict(checkpoint_filter_fn(live.state_dict(), larger))
    x = torch.randn(2, 3, 64, 64)
    assert rel_err(vitkit.load(tmp_path / "w.pth", resample_to=64, **SAYS)(x), larger(x)) < 1e-5


def test_hf_labels_that_disagree_with_the_classifier_are_refused(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                    image_size=32, patch_size=8, num_labels=5)
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path / "hf")
    saved = (tmp_path / "hf" / "config.json")
    import json

    data = json.loads(saved.read_text())
    data["id2label"] = {str(i): f"class {i}" for i in range(10)}
    data["label2id"] = {f"class {i}": i for i in range(10)}
    saved.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="id2label names 10 classes but the classifier"):
        vitkit.load(tmp_path / "hf")


def test_saving_class_names_where_the_format_has_no_place_says_so(tmp_path):
    model = vitkit.create_model("ViT-Ti/16", image_size=32, patch_size=8, depth=1, width=64, num_heads=4,
                                num_classes=2)
    model.class_names = ["cat", "dog"]
    for name, fmt in (("m.npz", "google"), ("m.pth", "timm"), ("tv.pth", "torchvision")):
        with pytest.warns(UserWarning, match="2 class names are not written"):
            vitkit.save(model, tmp_path / name, format=fmt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vitkit.save(model, tmp_path / "m.safetensors", format="timm")
    assert vitkit.load(tmp_path / "m.safetensors").class_names == ["cat", "dog"]
