"""The evaluation transform of a loaded checkpoint is its library's own: timm's `create_transform(**resolve_data_config(
pretrained_cfg=...))` for timm hub folders (new and legacy config.json), transformers' image processor for Hugging
Face folders. Both resample with PIL on PIL images, as vitkit does, so the tensors agree to the last bit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.data import create_transform, resolve_data_config
from timm.models._hub import load_model_config_from_path, save_for_hf

import vitkit
from vitkit.configs import Preprocessing
from vitkit.data import eval_transform, read_image
from vitkit.errors import CheckpointError, GuessWarning

transformers = pytest.importorskip("transformers")

SIZES = [(400, 300), (300, 400), (64, 50)]  # (width, height): landscape, portrait, small
BOUND = 1e-6  # measured: 0.0 for every case here


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for w, h in SIZES:  # noise: a one-pixel shift or another resampling shows at once
        path = folder / f"{w}x{h}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def max_diff(reference, model, image_files) -> float:
    """Largest difference between a reference transform and the one `vitkit predict`/`eval` build for `model`."""
    ours = eval_transform(model.preprocessing)
    diffs = []
    for path in image_files:
        with Image.open(path) as image:
            expected = reference(image.convert("RGB"))
        found = ours(read_image(path))
        assert found.shape == expected.shape, path.name
        diffs.append((found - expected).abs().max().item())
    return max(diffs)


def timm_reference(folder):
    """What timm builds from the folder: its config.json parsing, then its eval transform."""
    pretrained_cfg, _, _ = load_model_config_from_path(folder)
    return create_transform(**resolve_data_config(pretrained_cfg=pretrained_cfg))


def timm_folder(folder, img_size=32, depth=1, **data_config):
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=img_size, depth=depth, num_classes=3)
    save_for_hf(model, folder, safe_serialization=True, data_config=data_config,
                model_config={"label_names": ["cat", "dog", "bird"]})
    return folder


@pytest.mark.parametrize("crop_mode", ["center", "squash"])
@pytest.mark.parametrize("crop_pct", [0.875, 0.9, 1.0])
def test_timm_hub_folder_transform_is_timms(tmp_path, image_files, crop_pct, crop_mode):
    folder = timm_folder(tmp_path / "m", crop_pct=crop_pct, crop_mode=crop_mode, interpolation="bicubic")
    assert max_diff(timm_reference(folder), vitkit.load(folder), image_files) <= BOUND


def test_timm_non_square_input_keeps_the_aspect_ratio_as_timm(tmp_path, image_files):
    folder = timm_folder(tmp_path / "m", img_size=(32, 48), crop_pct=0.9, crop_mode="center",
                         interpolation="bilinear")
    model = vitkit.load(folder)
    assert model.preprocessing.image_size == (32, 48)
    assert max_diff(timm_reference(folder), model, image_files) <= BOUND


def test_timm_preprocessing_survives_a_vitkit_checkpoint(tmp_path, image_files):
    """The new fields are written with the model: the saved file still means timm's shorter-side resize."""
    model = vitkit.load(timm_folder(tmp_path / "m", crop_pct=1.0, crop_mode="center"))
    vitkit.save(model, tmp_path / "copy.safetensors")
    again = vitkit.load(tmp_path / "copy.safetensors")
    assert again.preprocessing == model.preprocessing and again.class_names == ["cat", "dog", "bird"]
    assert max_diff(timm_reference(tmp_path / "m"), again, image_files) <= BOUND


def test_timm_border_crop_mode_loads_the_weights_and_says_the_inputs_differ(tmp_path):
    folder = timm_folder(tmp_path / "m", crop_mode="border")
    with pytest.warns(GuessWarning, match=r"pretrained_cfg\.crop_mode='border' is not reproduced .* 'center' is used"):
        model = vitkit.load(folder)
    assert model.preprocessing.resize_mode == "shorter"


def test_timm_label_names_become_class_names_and_must_match_the_head(tmp_path):
    folder = timm_folder(tmp_path / "m")
    assert vitkit.load(folder).class_names == ["cat", "dog", "bird"]
    config = json.loads((folder / "config.json").read_text())
    config["label_names"] = ["cat", "dog"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="key 'label_names': 2 names for the model's 3 classes"):
        vitkit.load(folder)


def test_legacy_timm_hub_config_is_read_as_timm_reads_it(tmp_path, image_files):
    """Older `push_to_hf_hub` wrote one flat dict: input_size, mean, std, crop_pct, label_names beside architecture."""
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=3).eval()
    folder = tmp_path / "legacy"
    folder.mkdir()
    save_file(model.state_dict(), folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({
        "architecture": "vit_tiny_patch16_224", "num_classes": 3, "num_features": 192, "input_size": [3, 32, 32],
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "crop_pct": 0.9, "interpolation": "bilinear",
        "label_names": ["cat", "dog", "bird"]}))
    loaded = vitkit.load(folder, image_size=32)
    assert loaded.config.image_size == (32, 32) and loaded.class_names == ["cat", "dog", "bird"]
    assert loaded.preprocessing.mean == (0.485, 0.456, 0.406) and loaded.preprocessing.interpolation == "bilinear"
    assert max_diff(timm_reference(folder), loaded, image_files) <= BOUND
    x = eval_transform(loaded.preprocessing)(read_image(image_files[0]))[None]
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-4)


def test_files_without_the_new_fields_keep_their_meaning(image_files):
    """crop_pct 1: squash to image_size (the original code's way); below 1: shorter side, centre crop."""
    image = read_image(image_files[0])  # 400x300
    squash = eval_transform(Preprocessing.from_dict({"image_size": [32, 32], "crop_pct": 1.0}))(image)
    expected = eval_transform(Preprocessing(image_size=32, resize="squash"))(image)
    assert torch.equal(squash, expected)
    pil = np.asarray(image.resize((32, 32), Image.BILINEAR), dtype=np.float32) / 255
    assert np.abs(squash.permute(1, 2, 0).numpy() - (pil - 0.5) / 0.5).max() < 1e-6
    old = Preprocessing.from_dict({"image_size": [32, 32], "crop_pct": 0.875})
    assert old.resize_mode == "shorter" and old.resize_target() == (36, 36)
    p = Preprocessing(image_size=32, crop_pct=1.0, resize="shorter", resize_size=(40, 40), crop_offset="floor")
    assert Preprocessing.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def hf_folder(folder, kind, **processor):
    """A tiny transformers model with its image processor, both saved as transformers saves them."""
    config_cls, model_cls, processor_cls = {
        "vit": (transformers.ViTConfig, transformers.ViTForImageClassification, transformers.ViTImageProcessor),
        "deit": (transformers.DeiTConfig, transformers.DeiTForImageClassification, transformers.DeiTImageProcessor),
    }[kind]
    config = config_cls(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                        image_size=32, patch_size=8, num_labels=3)
    model_cls(config).save_pretrained(folder)
    processor_cls(**processor).save_pretrained(folder)
    return folder


def hf_reference(folder):
    """transformers' PIL processor (transformers 5 names it ...Pil; transformers 4's default one is PIL already)."""
    kind = json.loads((folder / "preprocessor_config.json").read_text())["image_processor_type"]
    cls = getattr(transformers, f"{kind}Pil", None) or getattr(transformers, kind)
    processor = cls.from_pretrained(folder)
    return lambda image: torch.as_tensor(processor(image, return_tensors="pt")["pixel_values"][0])


HF_CASES = {
    "vit_squash": ("vit", dict(size={"height": 32, "width": 32})),
    "vit_bicubic_imagenet": ("vit", dict(size={"height": 32, "width": 32}, resample=3,
                                         image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])),
    # DeiT's way (256 -> 224) at 35 -> 32: an odd margin, which transformers splits down and torchvision up
    "deit_squash_then_crop": ("deit", dict(size={"height": 35, "width": 35}, crop_size={"height": 32, "width": 32})),
    "vit_shortest_edge_then_crop": ("vit", dict(size={"shortest_edge": 37}, do_center_crop=True,
                                                crop_size={"height": 32, "width": 32})),
}


@pytest.mark.parametrize("case", sorted(HF_CASES))
def test_hf_folder_transform_is_the_image_processors(tmp_path, image_files, case):
    kind, processor = HF_CASES[case]
    folder = hf_folder(tmp_path / "m", kind, **processor)
    assert max_diff(hf_reference(folder), vitkit.load(folder), image_files) <= BOUND


@pytest.mark.parametrize("change, key", [
    ({"resample": 1}, "resample"),  # Lanczos
    ({"size": {"shortest_edge": 40}, "do_center_crop": False}, "size"),  # each image keeps its own aspect
    ({"do_pad": True}, "do_pad"),
    ({"crop_size": {"height": 24, "width": 24}}, "crop_size"),  # not the model's 32x32
])
def test_hf_processor_settings_vitkit_cannot_reproduce_are_announced_by_key(tmp_path, change, key):
    """The weights load; the warning names the key, and inputs are resized to the model's size."""
    folder = hf_folder(tmp_path / "m", "deit", size={"height": 35, "width": 35},
                       crop_size={"height": 32, "width": 32})
    path = folder / "preprocessor_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.warns(GuessWarning, match=rf"preprocessor_config\.json, key '{key}'.* resize to the model's"):
        model = vitkit.load(folder)
    assert model.preprocessing.image_size == (32, 32) and model.preprocessing.resize_mode == "squash"


@pytest.mark.parametrize("crop_mode, crop_pct", [("center", 0.875), ("squash", 0.8), ("squash", 1.0)])
def test_an_hf_folder_vitkit_writes_prepares_inputs_as_the_model_did(tmp_path, image_files, crop_mode, crop_pct):
    """timm's preprocessing written as transformers' processor (even margins here: transformers and timm split an
    odd one differently, which the writer warns of): transformers' own processor gives vitkit's tensors."""
    model = vitkit.load(timm_folder(tmp_path / "timm", crop_pct=crop_pct, crop_mode=crop_mode,
                                    interpolation="bicubic"))
    vitkit.save(model, tmp_path / "hf", format="hf")
    assert max_diff(hf_reference(tmp_path / "hf"), model, image_files) <= BOUND
    assert vitkit.load(tmp_path / "hf").preprocessing.resize_mode == model.preprocessing.resize_mode
