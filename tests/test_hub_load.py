"""Loading published checkpoints by catalog name, through a real HTTP server on 127.0.0.1 that serves small real
checkpoints under the catalog entries' own paths (the bucket's layout), with the source's base URL pointed at it:
vitkit.load(NAME), vitkit download NAME then loading offline with the server stopped, the commands that take a
model by name (predict, eval, convert, inspect, finetune --from), and the one-line error for an unknown name."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vitkit
from vitkit.cli import main
from vitkit.errors import CheckpointError, DownloadError
from vitkit.hub.catalog import class_names, find_pretrained

from conftest import randomize_
from hub_servers import HubServer, StaticServer, isolate_hub_env

NAME = "vit-b16-in21k"  # served as gs://vit_models/imagenet21k/ViT-B_16.npz
TINY = dict(image_size=224, patch_size=16, width=32, depth=1, num_heads=2, mlp_dim=64, gelu="tanh")


def tiny_google_file(path: Path, num_classes: int, seed: int = 0) -> torch.nn.Module:
    """A real original-release .npz (vitkit writes the published names and layouts), tiny but at the entry's
    resolution and class count."""
    model = randomize_(vitkit.create_model(vitkit.ViTConfig(num_classes=num_classes, **TINY)), seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    vitkit.save(model, path, format="google")
    return model.eval()


@pytest.fixture(autouse=True)
def hub_env(tmp_path, monkeypatch):
    isolate_hub_env(tmp_path, monkeypatch, cache="cache")


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """A static host laid out like the bucket, serving the original release's ViT-B_16.npz (tiny, real)."""
    root = tmp_path / "www"
    file = root / "vit_models" / "imagenet21k" / "ViT-B_16.npz"
    model = tiny_google_file(file, 21843)
    server = StaticServer().start()
    server.add("/vit_models/imagenet21k/ViT-B_16.npz", file.read_bytes())
    monkeypatch.setenv("VITKIT_GCS_URL", server.url)
    monkeypatch.setenv("VITKIT_TORCHVISION_URL", server.url)
    yield server, model, root
    server.stop()


def test_load_by_catalog_name(bucket):
    server, reference, _ = bucket
    model = vitkit.load(NAME)
    assert server.count("/vit_models/imagenet21k/ViT-B_16.npz") == 1
    assert model.num_classes == 21843 and model.class_names == class_names("imagenet-21k")
    assert model.class_names[0] == "organism, being"
    entry = find_pretrained(NAME)
    assert model.preprocessing.mean == entry.mean and model.preprocessing.crop_pct == entry.crop_pct
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-5)
    again = vitkit.load(NAME)  # from the cache: no second request
    assert server.count("/vit_models/imagenet21k/ViT-B_16.npz") == 1
    assert torch.equal(again.head.weight, model.head.weight)


def test_fine_tuning_adaptation_keeps_the_names_apart(bucket):
    model = vitkit.load(NAME, num_classes=5)
    assert model.num_classes == 5 and not model.class_names  # the catalog's 21,843 names belong to the old head


def test_sha256_given_by_the_caller_is_checked(bucket):
    _, _, root = bucket
    digest = hashlib.sha256((root / "vit_models/imagenet21k/ViT-B_16.npz").read_bytes()).hexdigest()
    assert vitkit.load("gs://vit_models/imagenet21k/ViT-B_16.npz", sha256=digest).num_classes == 21843
    with pytest.raises(DownloadError, match=digest):
        vitkit.load(NAME, sha256="0" * 64)
    local = root / "vit_models/imagenet21k/ViT-B_16.npz"  # a local file is checked too
    assert vitkit.load(local, sha256=digest.upper()).num_classes == 21843
    with pytest.raises(CheckpointError, match=f"expected {'0' * 64}, got {digest}"):
        vitkit.load(local, sha256="0" * 64)


def test_a_file_other_than_the_catalog_says_is_refused(bucket):
    server, _, root = bucket
    file = root / "vit_models" / "imagenet21k" / "ViT-B_32.npz"
    tiny_google_file(file, 10)  # 10 classes, not 21,843
    server.add("/vit_models/imagenet21k/ViT-B_32.npz", file.read_bytes())
    with pytest.raises(CheckpointError, match=r"catalog lists vit-b32-in21k at 224 px with 21843 classes and 32-px "
                       r"patches, but the file has 224x224 px, 10 classes and 16x16-px patches"):
        vitkit.load("vit-b32-in21k")


def test_download_then_everything_offline_with_the_server_stopped(bucket, tmp_path, monkeypatch, capsys):
    server, reference, _ = bucket
    assert main(["download", NAME]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{NAME}: ") and out.strip().endswith("ViT-B_16.npz")
    server.stop()
    monkeypatch.setenv("VITKIT_OFFLINE", "1")
    # the stopped server's port now refuses connections: anything not served from the cache would fail

    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(image)
    assert main(["predict", NAME, str(image), "--top-k", "2"]) == 0
    printed = capsys.readouterr().out.splitlines()
    names = set(class_names("imagenet-21k"))
    assert printed[0] == str(image) and all(line.split("%", 1)[1].strip() in names for line in printed[1:3])

    data = tmp_path / "data"  # two of the 21k classes, one by name and one by WordNet id (ImageNet's folders)
    for name in (class_names("imagenet-21k")[0], "n00005787"):
        (data / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((30, 30, 3), 40 * i, np.uint8)).save(data / name / f"{i}.png")
    assert main(["eval", "--checkpoint", NAME, "--data", str(data), "--out", str(tmp_path / "ev"),
                 "--no-progress", "--num-workers", "0"]) == 0
    assert "4 images" in capsys.readouterr().out

    assert main(["convert", NAME, str(tmp_path / "b16.safetensors")]) == 0  # keeps the catalog's class names
    assert vitkit.load(tmp_path / "b16.safetensors").class_names == class_names("imagenet-21k")

    assert main(["inspect", "posemb", NAME, "--out", str(tmp_path / "posemb.png")]) == 0
    assert (tmp_path / "posemb.png").stat().st_size > 0 and "14x14 patches" in capsys.readouterr().out

    fine = tmp_path / "fine"
    for name in ("ant", "bee"):
        (fine / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((20, 20, 3), 30 * i, np.uint8)).save(fine / name / f"{i}.png")
    code = main(["finetune", "--from", NAME, "--data", str(fine), "--image-size", "32", "--steps", "1",
                 "--batch-size", "4", "--accum-steps", "1", "--val-per-class", "1", "--warmup-steps", "0", "--out-dir",
                 str(tmp_path / "runs"), "--name", "ft", "--progress", "false", "--num-workers", "0",
                 "--eval-every", "-1"])
    assert code == 0, capsys.readouterr().err
    tuned = vitkit.load(tmp_path / "runs" / "ft" / "model.safetensors")
    assert tuned.class_names == ["ant", "bee"] and tuple(tuned.config.image_size) == (32, 32)
    assert tuned.preprocessing.mean == find_pretrained(NAME).mean


def test_offline_without_the_file_cached_says_so(bucket, monkeypatch):
    monkeypatch.setenv("VITKIT_OFFLINE", "1")
    with pytest.raises(DownloadError):
        vitkit.load(NAME)


def test_unknown_names_get_the_closest_ones(bucket, capsys):
    with pytest.raises(CheckpointError, match=r"did you mean vit-b16-in21k"):
        vitkit.load("vit-b16-in21kk")
    for argv in (["predict", "vit-b16-in21kk", "x.png"], ["eval", "--checkpoint", "vit-b16-in21kk", "--data", "x"],
                 ["inspect", "posemb", "vit-b16-in21kk"], ["download", "vit-b16-in21kk"],
                 ["finetune", "--from", "vit-b16-in21kk", "--data", "digits"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "did you mean vit-b16-in21k" in err, (argv, err)


def test_torchvision_hash_prefix_is_checked(bucket, capsys):
    server, _, root = bucket
    target = root / "vit_b_16-c867db91.pth"
    torch.save({"class_token": torch.zeros(1, 1, 8)}, target)  # not the published file: its hash differs
    server.add("/models/vit_b_16-c867db91.pth", target.read_bytes())
    assert main(["download", "tv-vit-b16-in1k"]) == 2
    err = capsys.readouterr().err
    assert "does not start with c867db91" in err and len(err.strip().splitlines()) == 1
    cached = [p.name for p in Path(vitkit.hub.cache_dir()).rglob("vit_b_16-c867db91.pth*")]
    assert set(cached) <= {"vit_b_16-c867db91.pth.lock"}  # the wrong file is not left in the cache


def test_models_pretrained_table(capsys):
    assert main(["models", "--pretrained"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "source", "variant", "px", "classes", "top-1", "data"]
    assert len(lines) == len(vitkit.list_pretrained()) + 2
    row = next(line for line in lines if line.startswith("tv-vit-b16-in1k "))
    assert row.split()[1:6] == ["torchvision", "ViT-B/16", "224", "1,000", "81.07"]
    assert main(["models", "--pretrained", "augreg-*-384"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 9 + 2


# ------------------------------------------------------------------------------ Hugging Face and timm repositories
@pytest.fixture
def hub(monkeypatch):
    server = HubServer().start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    yield server
    server.stop()


def _repo_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_hugging_face_entry_by_name_and_by_repo_id(hub, tmp_path):
    model = randomize_(vitkit.create_model(vitkit.ViTConfig(num_classes=1000, **{**TINY, "gelu": "exact"})), seed=4)
    model.class_names = [f"class {i}" for i in range(1000)]
    vitkit.save(model, tmp_path / "hf", format="hf")
    hub.add_repo("google/vit-base-patch16-224", _repo_files(tmp_path / "hf"))
    loaded = vitkit.load("hf-google-vit-base-patch16-224")
    assert loaded.class_names == model.class_names  # the repository's own names win over the catalog's
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x), rtol=1e-4, atol=1e-5)
    hub.stop()  # the repo id is a name too, and the second load comes from huggingface_hub's cache
    assert torch.equal(vitkit.load("google/vit-base-patch16-224").head.weight, loaded.head.weight)


def test_timm_entry_by_name_gets_heads_class_names_and_preprocessing_from_the_catalog(hub, tmp_path):
    timm_name = "vit_base_patch16_224.augreg2_in21k_ft_in1k"
    config = vitkit.ViTConfig(num_classes=1000, **{**TINY, "width": 48, "num_heads": 12, "gelu": "exact"})
    model = randomize_(vitkit.create_model(config), seed=5).eval()
    vitkit.save(model, tmp_path / "t.safetensors", format="timm")
    from safetensors.torch import load_file, save_file

    save_file(load_file(tmp_path / "t.safetensors"), tmp_path / "t.safetensors")  # timm's files have no vitkit notes
    # timm's config.json, with the model_args of this narrow, one-block copy of the architecture, and its
    # pretrained_cfg (which the folder's preprocessing comes from) without label_names (the catalog names the classes)
    hub_config = (b'{"architecture": "vit_base_patch16_224", "num_classes": 1000, '
                  b'"model_args": {"embed_dim": 48, "depth": 1}, "pretrained_cfg": {"input_size": [3, 224, 224], '
                  b'"interpolation": "bicubic", "crop_pct": 0.9, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}')
    hub.add_repo(f"timm/{timm_name}", {"config.json": hub_config,
                                       "model.safetensors": (tmp_path / "t.safetensors").read_bytes()})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", vitkit.GuessWarning)  # the catalog says what the file does not
        loaded = vitkit.load(f"timm-{timm_name}")
    assert loaded.config.num_heads == 12 and loaded.class_names == class_names("imagenet-1k")
    entry = find_pretrained(timm_name)
    assert loaded.preprocessing.crop_pct == entry.crop_pct == 0.9 and loaded.preprocessing.interpolation == "bicubic"
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-4, atol=1e-5)


def test_hugging_face_in21k_entry_is_a_model_without_head(hub, tmp_path):
    """google/vit-*-in21k hold transformers' ViTModel (no classifier, a pooler): the catalog says 0 classes."""
    import transformers

    config = transformers.ViTConfig(hidden_size=48, num_hidden_layers=1, num_attention_heads=12, intermediate_size=96,
                                    image_size=224, patch_size=16)
    reference = transformers.ViTModel(config, add_pooling_layer=True)
    randomize_(reference, seed=6).eval()
    reference.save_pretrained(tmp_path / "in21k")
    hub.add_repo("google/vit-base-patch16-224-in21k", _repo_files(tmp_path / "in21k"))
    loaded = vitkit.load("hf-google-vit-base-patch16-224-in21k")
    assert loaded.num_classes == 0 and not loaded.class_names
    assert loaded.config.representation_size == 48  # the pooler, as the original's pre-logits layer
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), reference(pixel_values=x).pooler_output, rtol=1e-4, atol=1e-5)


def test_paths_with_a_plus_sign_are_fetched_as_published(bucket, capsys):
    """R50+ViT-B_16.npz and imagenet21k+imagenet2012/: the + stays a + on the wire and in the cache."""
    server, _, _ = bucket
    path = "/vit_models/imagenet21k+imagenet2012/R50+ViT-B_16.npz"
    server.add(path, b"not checked by download: " + bytes(range(256)))
    assert main(["download", "r50-vit-b16-in21k-ft-in1k-384"]) == 0
    assert server.count(path) == 1
    assert capsys.readouterr().out.strip().endswith("imagenet21k+imagenet2012/R50+ViT-B_16.npz")


def test_torchvision_entry_with_its_published_hash_prefix(bucket, monkeypatch, tmp_path, capsys):
    """The whole torchvision route with a real torchvision state dict: the file's name carries the start of its
    SHA-256, which is checked; the catalog's ImageNet names and transforms apply. (The entry is re-pointed at the
    test file's own prefix: the published file itself is 330 MB.)"""
    import dataclasses

    import torchvision

    from vitkit.hub import catalog as cat

    server, _, root = bucket
    reference = torchvision.models.VisionTransformer(image_size=224, patch_size=16, num_layers=1, num_heads=12,
                                                     hidden_dim=48, mlp_dim=96, num_classes=1000)
    randomize_(reference, seed=7).eval()
    file = root / "tv.pth"
    torch.save(reference.state_dict(), file)
    prefix = hashlib.sha256(file.read_bytes()).hexdigest()[:8]
    entry = dataclasses.replace(find_pretrained("tv-vit-b16-in1k"), sha256_prefix=prefix,
                                uri=f"https://download.pytorch.org/models/vit_b_16-{prefix}.pth")
    monkeypatch.setitem(cat._BY_NAME, entry.name, entry)
    server.add(f"/models/vit_b_16-{prefix}.pth", file.read_bytes())
    assert main(["download", entry.name]) == 0
    assert capsys.readouterr().out.strip().endswith(f"vit_b_16-{prefix}.pth")

    from vitkit.checkpoints import torchvision as tv_format

    if not any(name.startswith("from_") for name in dir(tv_format)):
        pytest.skip("no torchvision reader in this build (branch tv-bigvision)")
    loaded = vitkit.load(entry.name)
    assert loaded.class_names == class_names("imagenet-1k") and loaded.preprocessing.crop_pct == 0.875
    assert loaded.preprocessing.mean == (0.485, 0.456, 0.406)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), reference(x), rtol=1e-4, atol=1e-5)
