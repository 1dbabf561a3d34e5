"""ONNX and torch.export: dynamic batch and image size, checked against PyTorch (onnxruntime within 1e-4)."""

from __future__ import annotations

import hashlib
import json

import onnx
import pytest
import torch

import vitkit
from vitkit.cli import main
from vitkit.export import check_onnx, export_onnx, save_program

from conftest import randomize_

TINY = dict(image_size=32, patch_size=8, depth=2, width=32, num_heads=2, mlp_dim=64, num_classes=5)


def tiny(**overrides):
    return randomize_(vitkit.create_model("ViT-Ti/16", **{**TINY, **overrides})).eval()


@pytest.mark.parametrize("overrides", [{}, {"pool": "gap", "posemb": "none", "class_token": False},
                                       {"posemb_prefix": False, "gelu": "tanh"},
                                       {"dist_token": True, "dist_head": True, "num_reg_tokens": 2, "layer_scale": 0.1,
                                        "norm_pre": True},
                                       {"pool": "map", "num_reg_tokens": 1}])
def test_onnx_dynamic_batch_and_size_match_pytorch(tmp_path, overrides):
    result = export_onnx(tiny(**overrides), tmp_path / "model.onnx")
    shapes = {tuple(c["shape"]) for c in result["checks"]}
    assert {(1, 3, 32, 32), (3, 3, 32, 32), (2, 3, 48, 48), (1, 3, 24, 56)} <= shapes
    assert all(c["rel_err"] < 1e-4 for c in result["checks"]), result["checks"]
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param != "" for d in dims] == [True, False, True, True]  # batch, C, H, W
    assert graph.output[0].name == "logits"


def test_static_size_export_for_fixed_position_embeddings(tmp_path):
    model = tiny(posemb="sincos_2d", pool="gap")
    with pytest.raises(ValueError, match="fixed image size"):
        export_onnx(model, tmp_path / "dynamic.onnx")
    result = export_onnx(model, tmp_path / "model.onnx", dynamic_image_size=False)
    assert all(c["shape"][2:] == [32, 32] for c in result["checks"])
    assert max(c["rel_err"] for c in result["checks"]) < 1e-4


def test_pt2_program_runs_at_other_sizes(tmp_path):
    model = tiny()
    save_program(model, tmp_path / "model.pt2")
    program = torch.export.load(str(tmp_path / "model.pt2")).module()
    images = torch.randn(3, 3, 40, 24)
    model.config = model.config.replace(dynamic_image_size=True)
    with torch.no_grad():
        assert torch.allclose(program(images), model(images), atol=1e-5, rtol=1e-4)


def test_export_cli(tmp_path, capsys):
    vitkit.save(tiny(), tmp_path / "tiny.safetensors")
    assert main(["export", str(tmp_path / "tiny.safetensors"), "--static-batch"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "tiny.onnx").exists() and "onnxruntime vs PyTorch at (2, 3, 48, 48)" in out
    assert main(["export", str(tmp_path / "missing.safetensors")]) == 2
    assert "missing.safetensors" in capsys.readouterr().err


def test_check_flags_a_wrong_file(tmp_path):
    model = tiny()
    export_onnx(model, tmp_path / "model.onnx", check=False)
    other = tiny(gelu="tanh")  # a different function: the check must see it
    with torch.no_grad():
        other.head.weight.mul_(2)
    checks = check_onnx(tmp_path / "model.onnx", other, [(2, 3, 32, 32)])
    assert checks[0]["rel_err"] > 1e-2


# ------------------------------------------------------------------------------------------------ standalone files
def labelled_tiny():
    """A tiny model whose file must carry its names and an unusual preprocessing (timm-style crop, ImageNet
    statistics, bicubic), so that a lost or default value shows in the predictions."""
    model = tiny(num_classes=7)
    model.class_names = ["apple", "bee", "cat", "dune", "elm", "fig", "gnu"]
    model.preprocessing = vitkit.Preprocessing(image_size=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                                               interpolation="bicubic", crop_pct=0.875)
    return model


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_metadata_round_trips(tmp_path, capsys, fmt):
    from vitkit.export import load_exported, read_exported_metadata, source_sha256

    source = tmp_path / "labelled.safetensors"
    vitkit.save(labelled_tiny(), source)
    output = tmp_path / f"model.{fmt}"
    assert main(["export", str(source), "-o", str(output)]) == 0
    assert "7 class names" in capsys.readouterr().out
    exported = load_exported(output)
    model = vitkit.load(source)
    assert exported.format == fmt and exported.precision == "fp32"
    assert exported.class_names == model.class_names
    assert exported.preprocessing == model.preprocessing
    assert exported.config == model.config
    assert exported.version == vitkit.__version__
    assert exported.source_sha256 == source_sha256(source) == hashlib.sha256(source.read_bytes()).hexdigest()
    assert read_exported_metadata(output) == exported.metadata
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(exported(images), model(images), atol=1e-5, rtol=1e-4)


def test_an_onnx_file_without_metadata_is_refused(tmp_path):
    from vitkit.errors import CheckpointError
    from vitkit.export import load_exported

    path = tmp_path / "bare.onnx"
    export_onnx(tiny(), path, check=False)
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.save(proto, str(path))
    with pytest.raises(CheckpointError, match="bare.onnx.*no vitkit metadata"):
        load_exported(path)


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_predict_on_an_exported_file_equals_pytorch(tmp_path, capsys, fmt):
    from test_data import class_image

    source = tmp_path / "labelled.safetensors"
    vitkit.save(labelled_tiny(), source)
    images = []
    for i, size in enumerate((40, 57, 32)):  # other sizes: resized and cropped as the file's metadata says
        images.append(str(tmp_path / f"image{i}.jpg"))
        class_image(i, 7, size).save(images[-1])
    assert main(["export", str(source), "-o", str(tmp_path / f"model.{fmt}")]) == 0
    capsys.readouterr()
    assert main(["predict", str(source), *images, "--json"]) == 0
    want = json.loads(capsys.readouterr().out)
    assert main(["predict", str(tmp_path / f"model.{fmt}"), *images, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    for a, b in zip(got, want, strict=True):
        assert [p["class"] for p in a["predictions"]] == [p["class"] for p in b["predictions"]]
        assert len(a["predictions"]) == 5
        assert [p["probability"] for p in a["predictions"]] == pytest.approx(
            [p["probability"] for p in b["predictions"]], rel=1e-4, abs=1e-6)
    assert main(["predict", str(tmp_path / f"model.{fmt}"), images[0]]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[-1] == want[0]["predictions"][0]["class"]
