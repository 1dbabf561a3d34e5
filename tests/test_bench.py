"""`vitkit bench` produces its table and JSON with finite ratios; the peers get the same function. Tiny models, one
round: these tests check the plumbing, never the speed."""

from __future__ import annotations

import json
import math

import pytest
import torch

import vitkit
from vitkit.bench import BenchSettings, format_report, matmul_ceiling, peak_memory, run_benchmark
from vitkit.cli import main

from conftest import randomize_

TINY = {"depth": 1, "width": 32, "num_heads": 2, "mlp_dim": 64}


def tiny_settings(**changes) -> BenchSettings:
    base = dict(model="ViT-Ti/16", image_size=32, num_classes=5, overrides={**TINY, "patch_size": 8}, batch_size=2,
                precisions=("fp32",), tasks=("infer",), peers=("timm", "torchvision"), repeats=1, warmup=0,
                loss_steps=0, ceiling_size=256)
    return BenchSettings(**{**base, **changes})


def test_inference_rows_ratios_and_same_function():
    report = run_benchmark(tiny_settings())
    rows = report["results"]
    assert [(r["implementation"], r["regime"]) for r in rows] == [
        ("vitkit", "fp32, fast path"), ("vitkit", "fp32, plain path"), ("timm", "fp32"), ("torchvision", "fp32")]
    assert rows[0]["vitkit_speedup"] == 1.0
    for r in rows:
        assert math.isfinite(r["vitkit_speedup"]) and r["vitkit_speedup"] > 0
        assert r["images_per_s"] > 0 and 0 < r["fraction_of_ceiling"] < math.inf
        assert r["rel_err"] < 1e-5 and r["top1_agreement"] == 1.0  # same weights, same function
    assert report["ceilings"]["fp32"]["gflops"] > 0
    table = format_report(report)
    assert "inference throughput, fp32" in table and "torchvision" in table and "x pair" in table
    for r in rows:
        assert math.isfinite(r["vitkit_speedup_paired"]) and math.isfinite(r["vitkit_speedup_best"])


def test_cli_writes_json_with_training_and_loss_trajectories(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--model", "ViT-Ti/16", "--image-size", "32", "--num-classes", "5", "--set", "depth=1",
                 "--set", "width=32", "--set", "num_heads=2", "--set", "mlp_dim=64", "--set", "patch_size=8",
                 "--batch-size", "4", "--precision", "bf16", "--tasks", "train", "latency", "--peers", "timm",
                 "--repeats", "1", "--warmup", "0", "--loss-steps", "3", "--no-memory", "--ceiling-size", "256", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "training step, bf16" in printed and "batch-1 latency, bf16" in printed and "loss trajectories" in printed
    report = json.loads(out.read_text())
    tasks = {(r["task"], r["implementation"], r["regime"]) for r in report["results"]}
    assert ("train", "timm", "autocast bf16, AdamW(default)") in tasks
    assert ("latency", "timm", "bf16 weights") in tasks and ("latency", "timm", "autocast bf16") in tasks
    assert all(math.isfinite(r["vitkit_speedup"]) for r in report["results"])
    (trajectory,) = report["loss_trajectories"]
    assert len(trajectory["losses"]["vitkit"]) == 3
    assert max(trajectory["max_deviation_relative_to_first_loss"].values()) < 5e-2


def test_bench_rejects_bad_settings():
    with pytest.raises(ValueError, match="precision"):
        run_benchmark(tiny_settings(precisions=("fp64",)))
    assert main(["bench", "--set", "depth"]) == 2
    with pytest.raises(ValueError, match="needs compile"):
        run_benchmark(tiny_settings(compile_mode="max-autotune"))
    with pytest.raises(ValueError, match="compile_mode='fast', expected one of default"):
        run_benchmark(tiny_settings(compile=True, compile_mode="fast"))
    with pytest.raises(ValueError, match="int8 is measured for inference only"):
        run_benchmark(tiny_settings(tasks=("train",), precisions=("int8",)))
    with pytest.raises(ValueError, match="CUDA graphs, which cpu has not"):
        run_benchmark(tiny_settings(compile=True, compile_mode="reduce-overhead"))


def test_peak_memory_sees_an_allocation():
    size = 64 * 2**20
    measured = peak_memory(lambda: torch.ones(size // 4), torch.device("cpu"))
    if measured is None:
        pytest.skip("no /proc/self/clear_refs here")
    assert measured >= 0.9 * size


def test_matmul_ceiling_reports_the_best_backend():
    ceiling = matmul_ceiling(torch.float32, torch.device("cpu"), repeats=1, size=128)
    assert ceiling["gflops"] == max(ceiling["per_backend"].values()) > 0


def test_torchvision_adapter_gives_the_same_logits():
    import torchvision

    from vitkit.checkpoints.torchvision import to_torchvision, torchvision_kwargs

    for representation_size in (None, 24):
        model = randomize_(vitkit.create_model("ViT-Ti/16", image_size=32, depth=2, num_classes=7,
                                               representation_size=representation_size)).eval()
        peer = torchvision.models.VisionTransformer(**torchvision_kwargs(model.config)).eval()
        peer.load_state_dict(to_torchvision(model), strict=True)
        images = torch.randn(3, 3, 32, 32)
        with torch.no_grad():
            assert torch.allclose(peer(images), model(images), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="pool='gap'"):
        torchvision_kwargs(vitkit.create_model("ViT-Ti/16", pool="gap").config)


def test_checkpoint_weights_are_the_ones_measured(tmp_path):
    model = randomize_(vitkit.create_model("ViT-Ti/16", image_size=32, num_classes=5, patch_size=8, **TINY))
    vitkit.save(model, tmp_path / "tiny.safetensors")
    report = run_benchmark(tiny_settings(checkpoint=str(tmp_path / "tiny.safetensors"), num_classes=None,
                                         overrides={}, peers=("timm",), plain=False, memory=False))
    assert report["config"]["width"] == 32 and report["config"]["num_classes"] == 5
    assert [r["implementation"] for r in report["results"]] == ["vitkit", "timm"]
    assert all(r["rel_err"] < 1e-5 for r in report["results"])
    assert "tiny.safetensors" in format_report(report)


def test_readme_table_script_renders_a_saved_report():
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("bench_table", root / "benchmarks" / "bench_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = json.loads((root / "benchmarks" / "results" / "bench" / "vit-b16-cpu.json").read_text())
    rows = module.rows(report)
    assert len(rows) == len(report["results"])
    timm_bf16 = next(r for r in report["results"] if r["implementation"] == "timm" and r["task"] == "infer"
                     and r["regime"] == "autocast bf16")
    line = next(row for row in rows if "| timm | autocast bf16 |" in row and row.startswith("| inference"))
    assert f"{timm_bf16['vitkit_speedup_paired']:.2f}x" in line and "width 768, depth 12" in line


def test_train_step_products_finds_every_product_of_a_step(tmp_path, capsys):
    """benchmarks/train_step_products.py: per block 4 dense forwards, 2 attention products, 8 dense and 4 attention
    products backward; the head's 3 and the patch embedding's 2 (convolution and its backward). 4 images of 16
    patches and a class token: 68 token rows."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("train_step_products", root / "benchmarks" / "train_step_products.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "products.json"
    args = ["--model", "ViT-Ti/16", "--image-size", "32", "--set", "depth=2", "--set", "width=32", "--set",
            "num_heads=2", "--set", "mlp_dim=64", "--set", "patch_size=8", "--batch-size", "4", "--repeats", "1",
            "-o", str(out)]
    assert module.main(args) == 0
    report = json.loads(out.read_text())
    ops = {}
    for g in report["products"]:
        ops[g["op"]] = ops.get(g["op"], 0) + g["calls"]
    assert ops == {"addmm": 4 * 2 + 1, "mm": 8 * 2 + 2, "baddbmm": 2, "bmm": 5 * 2,
                   "convolution": 1, "convolution_backward": 1}
    dense = next(g for g in report["products"] if g["op"] == "addmm" and g["operands"][1] == [68, 32])
    assert dense["flops"] == 2 * 68 * 32 * dense["operands"][2][1] and dense["dtype"] == "bfloat16"
    assert report["products_alone_s"] > 0 and 0 < report["step_fraction"] < report["products_alone_fraction"]
    assert "of the ceiling if everything else took no time" in capsys.readouterr().out


def test_training_rows_with_muon_give_every_implementation_the_recipes_optimizer():
    settings = dict(tasks=("train",), precisions=("bf16",), peers=("timm",), loss_steps=3, memory=False)
    muon = run_benchmark(tiny_settings(optimizer="muon", **settings))
    assert [r["regime"] for r in muon["results"]] == ["autocast bf16, fast path, Muon + AdamW(fused)",
                                                      "autocast bf16, plain path, Muon + AdamW(fused)",
                                                      "autocast bf16, Muon + AdamW(fused)"]
    (trajectory,) = muon["loss_trajectories"]
    assert max(trajectory["max_deviation_relative_to_first_loss"].values()) < 5e-2  # timm's too: the same optimizer
    (adamw,) = run_benchmark(tiny_settings(**settings))["loss_trajectories"]
    assert adamw["losses"]["vitkit"][0] == trajectory["losses"]["vitkit"][0]  # the same first loss, other updates
    assert adamw["losses"]["vitkit"][1:] != trajectory["losses"]["vitkit"][1:]
    with pytest.raises(ValueError, match="is for the training rows"):
        run_benchmark(tiny_settings(optimizer="muon"))
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        run_benchmark(tiny_settings(optimizer="lion", tasks=("train",)))
