"""Static int8 calibrated on real image files: PT2E for vitkit, quantize_static for the ONNX file; both stay close
to the float model, carry the file's metadata, and calibration never draws from the hold-out."""

from __future__ import annotations

import pytest
import torch

import vitkit
from vitkit.export import export_onnx, load_exported
from vitkit.quantize import calibration_batches, quantize_onnx_dynamic, quantize_onnx_static, quantize_pt2e

from conftest import randomize_
from test_data import write_image_folder

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quantize")
    data = write_image_folder(tmp / "data", classes=("cat", "dog", "fish"), per_class=8, size=16)
    model = randomize_(vitkit.create_model("ViT-Ti/16", image_size=16, patch_size=4, depth=2, width=32,
                                           num_heads=2, mlp_dim=64, num_classes=3)).eval()
    model.class_names = ["cat", "dog", "fish"]
    return tmp, data, model


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_calibration_draws_from_the_training_split_only(setup):
    _, data, model = setup
    batches = calibration_batches(data, model.preprocessing, count=10, batch_size=4, val_per_class=2, log=lambda m: 0)
    assert [b.shape for b in batches] == [(4, 3, 16, 16), (4, 3, 16, 16), (2, 3, 16, 16)]
    everything = calibration_batches(data, model.preprocessing, count=100, batch_size=32, val_per_class=2,
                                     log=lambda m: 0)
    assert sum(len(b) for b in everything) == 18  # 24 images, 6 of them held out


def test_pt2e_static_int8_is_close_to_float(setup):
    _, data, model = setup
    batches = calibration_batches(data, model.preprocessing, count=16, batch_size=8, log=lambda m: 0)
    quantized = quantize_pt2e(model, batches)
    images = torch.cat(batches)
    with torch.no_grad():
        want, got = model(images), quantized(images)
    assert 0 < relative_error(got, want) < 0.1  # int8 arithmetic: different, but close
    assert quantized.class_names == model.class_names


def test_pt2e_refuses_a_compile_mode_it_cannot_honour(setup):
    _, _, model = setup
    with pytest.raises(ValueError, match="compile_mode=max-autotune needs compile"):
        quantize_pt2e(model, [], compile_mode="max-autotune")
    with pytest.raises(ValueError, match="reduce-overhead is CUDA graphs, which cpu has not"):
        quantize_pt2e(model, [], compile=True, compile_mode="reduce-overhead")


def test_onnx_static_and_dynamic_int8_keep_the_metadata(setup):
    tmp, data, model = setup
    export_onnx(model, tmp / "model.onnx", check=False, source_sha256="ab" * 32)
    batches = calibration_batches(data, model.preprocessing, count=16, batch_size=8, log=lambda m: 0)
    quantize_onnx_static(tmp / "model.onnx", tmp / "static.onnx", batches)
    quantize_onnx_dynamic(tmp / "model.onnx", tmp / "dynamic.onnx")
    images = torch.cat(batches)
    with torch.no_grad():
        want = model(images)
    for name in ("static", "dynamic"):
        exported = load_exported(tmp / f"{name}.onnx")
        assert exported.precision.startswith(f"int8 {name}")
        assert exported.class_names == model.class_names and exported.source_sha256 == "ab" * 32
        assert 0 < relative_error(exported(images), want) < 0.15


def test_export_cli_writes_int8_onnx_files(setup, capsys):
    from vitkit.cli import main

    tmp, data, model = setup
    vitkit.save(model, tmp / "tiny.safetensors")
    assert main(["export", str(tmp / "tiny.safetensors"), "-o", str(tmp / "cli-static.onnx"), "--int8", "static",
                 "--calibration", str(data), "--calibration-images", "16"]) == 0
    out = capsys.readouterr().out
    assert "int8 static" in out and "calibration images" in out
    exported = load_exported(tmp / "cli-static.onnx")
    assert exported.precision.startswith("int8 static") and "over 16 images" in exported.precision
    assert exported.class_names == model.class_names
    assert main(["export", str(tmp / "tiny.safetensors"), "-o", str(tmp / "cli-dynamic.onnx"), "--int8", "dynamic"]) == 0
    assert load_exported(tmp / "cli-dynamic.onnx").precision.startswith("int8 dynamic")
    capsys.readouterr()
    assert main(["export", str(tmp / "tiny.safetensors"), "-o", str(tmp / "x.onnx"), "--int8", "static"]) == 2
    assert "--calibration" in capsys.readouterr().err
    assert main(["export", str(tmp / "tiny.safetensors"), "-o", str(tmp / "x.pt2"), "--int8", "dynamic"]) == 2
    assert not (tmp / "x.onnx").exists() and not (tmp / "x.pt2").exists()
